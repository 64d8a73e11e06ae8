"""`skinzoo data explore`: numbers checked against counts computed here, plots decode, page is
self-contained, sections follow the metadata that exists."""

from __future__ import annotations

import base64
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinzoo.data.explore import (
    PLOTS,
    age_groups,
    class_distribution,
    default_out_dir,
    explore_table,
    group_summary,
    imbalance_ratio,
    read_image_headers,
    split_class_counts,
)
from skinzoo.errors import DataError, UsageError

EXT = {"JPEG": "jpg", "PNG": "png"}
META_PLOTS = {"age_hist", "age_by_dx", "sex_counts", "site_counts", "dx_by_sex",
              "dx_by_age_group", "site_dx_heatmap"}
FOLDER_CLASSES = {"alpha": (6, (40, 30), "JPEG", "RGB"), "beta": (4, (32, 32), "PNG", "L"),
                  "gamma": (2, (48, 24), "PNG", "RGBA")}


def ham_table(root: Path) -> pd.DataFrame:
    """A minimal HAM10000-CSV reader (independent of skinzoo.data.sources)."""
    meta = pd.read_csv(root / "HAM10000_metadata.csv")
    return pd.DataFrame({
        "path": [str(root / "images" / f"{i}.jpg") for i in meta["image_id"]],
        "label": meta["dx"], "group": meta["lesion_id"], "image_id": meta["image_id"],
        "age": meta["age"].astype(float), "sex": meta["sex"], "site": meta["localization"],
    })


@pytest.fixture(scope="module")
def meta_table(synth_dir):
    table = ham_table(synth_dir)
    # Missing values the summary must count: synth data has none of its own.
    table.loc[table.index[:5], "age"] = np.nan
    table.loc[table.index[3:7], "sex"] = "unknown"
    return table


@pytest.fixture(scope="module")
def meta_split(meta_table):
    sides = np.array(["train", "val", "test"])[np.arange(len(meta_table)) % 3]
    return pd.Series(sides, index=meta_table.index)


@pytest.fixture(scope="module")
def meta_report(meta_table, meta_split, tmp_path_factory):
    problems = [{"kind": "missing_file", "where": "HAM10000_metadata.csv row 9",
                 "message": "images/ISIC_x.jpg does not exist", "action": "skipped"},
                {"kind": "duplicate", "where": "images/ISIC_y.jpg",
                 "message": "same bytes as images/ISIC_z.jpg", "action": "error"}]
    classes = sorted(meta_table["label"].unique())
    return explore_table(meta_table, classes, tmp_path_factory.mktemp("explore-meta"),
                         name="synth", problems=problems, split=meta_split)


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """Class folders without metadata: mixed sizes, formats, modes and one corrupt file."""
    root = tmp_path_factory.mktemp("folderset")
    rng = np.random.default_rng(0)
    for name, (n, (w, h), fmt, mode) in FOLDER_CLASSES.items():
        (root / name).mkdir()
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        for i in range(n):
            pixels = rng.integers(0, 255, (h, w, channels), dtype=np.uint8).squeeze()
            Image.fromarray(pixels, mode).save(root / name / f"{name}_{i}.{EXT[fmt]}",
                                               format=fmt)
    (root / "beta" / "broken.png").write_bytes(b"not a png at all")
    return root


def folder_table(root: Path) -> pd.DataFrame:
    rows = [{"path": str(p), "label": p.parent.name, "group": p.stem, "image_id": p.stem}
            for p in sorted(root.glob("*/*")) if p.suffix in {".jpg", ".png"}]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def folder_report(class_folder, tmp_path_factory):
    table = folder_table(class_folder)
    return explore_table(table, sorted(FOLDER_CLASSES), tmp_path_factory.mktemp("explore-folder"),
                         name="folderset")


def embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


# --- numbers ---------------------------------------------------------------------------------

def test_class_and_group_numbers_match_independent_counts(meta_report, meta_table):
    expected = Counter(meta_table["label"])
    summary = meta_report.summary
    assert {c: v["count"] for c, v in summary["classes"].items()} == dict(expected)
    assert list(summary["classes"]) == sorted(expected, key=lambda c: -expected[c])  # largest first
    for c, v in summary["classes"].items():
        assert v["share"] == pytest.approx(expected[c] / len(meta_table))
    assert summary["imbalance_ratio"] == pytest.approx(max(expected.values()) / min(expected.values()))

    per_lesion = Counter(meta_table["group"])
    groups = summary["groups"]
    assert groups["has_groups"] is True
    assert groups["n_groups"] == len(per_lesion)
    assert groups["multi_image_groups"] == sum(1 for n in per_lesion.values() if n > 1)
    assert groups["max_images_per_group"] == max(per_lesion.values())
    assert sum(k * v for k, v in groups["images_per_group"].items()) == len(meta_table)


def test_metadata_numbers_match_independent_counts(meta_report, meta_table):
    summary = meta_report.summary
    assert summary["metadata"] == {"age": True, "sex": True, "site": True}
    assert summary["age"]["n_missing"] == 5
    assert summary["age"]["n_known"] == len(meta_table) - 5
    assert summary["age"]["mean"] == pytest.approx(meta_table["age"].dropna().mean())
    assert summary["sex"] == dict(Counter(meta_table["sex"]))
    assert summary["sex"]["unknown"] == 4
    assert summary["site"] == dict(Counter(meta_table["site"]))


def test_image_numbers_come_from_the_files(meta_report, meta_table):
    images = meta_report.summary["images"]
    assert images["n_read"] == len(meta_table) and not images["sampled"]
    assert images["sizes"] == {"32x32": len(meta_table)}
    assert images["formats"] == {"JPEG": len(meta_table)}
    assert images["modes"] == {"RGB": len(meta_table)}
    assert images["aspect"]["median"] == pytest.approx(1.0)
    assert images["n_unreadable"] == 0


def test_split_counts_per_side(meta_report, meta_table, meta_split):
    split = meta_report.summary["split"]
    assert list(split) == ["train", "val", "test"]
    for side in ("train", "val", "test"):
        assert split[side] == dict(Counter(meta_table["label"][meta_split == side]))


def test_problems_are_grouped_and_printed(meta_report):
    kinds = {p["kind"]: p for p in meta_report.summary["problems"]}
    assert kinds["missing_file"]["count"] == 1 and kinds["missing_file"]["actions"] == {"skipped": 1}
    assert kinds["duplicate"]["count"] == 1
    text = "\n".join(meta_report.lines)
    assert "missing_file 1 [skipped]" in text and "duplicate 1" in text
    page = meta_report.html.read_text()
    assert "images/ISIC_x.jpg does not exist" in page and "same bytes as images/ISIC_z.jpg" in page


def test_summary_lines_show_the_numbers(meta_report, meta_table):
    text = "\n".join(meta_report.lines)
    nv = int((meta_table["label"] == "nv").sum())
    assert f"nv {nv:,} ({nv / len(meta_table):.1%})" in text
    assert "5 missing" in text
    assert f"groups: {meta_table['group'].nunique():,};" in text


# --- files -----------------------------------------------------------------------------------

def test_every_plot_is_written_and_decodes(meta_report):
    assert set(meta_report.plots) == set(PLOTS)  # metadata + groups + split: every view applies
    for key, path in meta_report.plots.items():
        assert path == meta_report.out_dir / f"{key}.png"
        with Image.open(path) as im:
            assert im.format == "PNG"
            im.load()  # full decode, not only the header
            assert im.width >= 400 and im.height >= 200, key


def test_html_embeds_every_plot_and_references_nothing_external(meta_report):
    page = meta_report.html.read_text()
    embedded = embedded_images(page)
    assert sorted(embedded) == sorted(p.read_bytes() for p in meta_report.plots.values())
    # every src/href is an inline data: URI; no scripts, stylesheets, fonts or imports from outside
    for ref in re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]+)', page, flags=re.I):
        assert ref.startswith("data:"), ref
    assert not re.search(r"<script|<link|<iframe|@import|url\(|https?://", page, flags=re.I)


def test_summary_json_has_the_numbers(meta_report):
    import json

    saved = json.loads(meta_report.summary_json.read_text())
    assert saved["name"] == "synth"
    assert saved["classes"] == meta_report.summary["classes"]
    assert saved["split"] == meta_report.summary["split"]


# --- a class-folder dataset without metadata -------------------------------------------------

def test_folder_dataset_gets_only_the_views_that_apply(folder_report):
    assert set(folder_report.plots) == {"class_counts", "image_sizes"}
    assert not any((folder_report.out_dir / f"{k}.png").exists() for k in META_PLOTS)
    summary = folder_report.summary
    assert summary["metadata"] == {"age": False, "sex": False, "site": False}
    assert summary["groups"]["has_groups"] is False
    assert "groups: none given" in "\n".join(folder_report.lines)
    page = folder_report.html.read_text()
    assert len(embedded_images(page)) == 2
    assert "No age, sex or body-site metadata" in page


def test_folder_dataset_numbers(folder_report, class_folder):
    summary = folder_report.summary
    on_disk = Counter(p.parent.name for p in class_folder.glob("*/*"))
    assert {c: v["count"] for c, v in summary["classes"].items()} == dict(on_disk)
    images = summary["images"]
    assert images["n_unreadable"] == 1
    assert images["unreadable"][0]["path"].endswith("broken.png")
    assert images["sizes"] == {f"{w}x{h}": n for n, (w, h), _, _ in FOLDER_CLASSES.values()}
    assert images["formats"] == {"JPEG": 6, "PNG": 6}
    assert images["modes"] == {"RGB": 6, "L": 4, "RGBA": 2}
    assert images["aspect"]["min"] == pytest.approx(1.0)
    assert images["aspect"]["max"] == pytest.approx(2.0)
    assert "1 unreadable" in "\n".join(folder_report.lines)
    assert "broken.png" in folder_report.html.read_text()


def test_rerun_in_the_same_folder_drops_plots_that_no_longer_apply(meta_table, class_folder,
                                                                   tmp_path):
    small = meta_table.iloc[:30]
    explore_table(small, sorted(small["label"].unique()), tmp_path, read_images=False)
    assert (tmp_path / "age_hist.png").exists()
    explore_table(folder_table(class_folder), None, tmp_path, read_images=False)
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == ["class_counts"]


# --- pieces ----------------------------------------------------------------------------------

def test_sample_reads_a_seeded_subset(meta_table):
    paths = list(meta_table["path"])
    first = read_image_headers(paths, sample=10, seed=3)
    again = read_image_headers(paths, sample=10, seed=3)
    assert len(first) == 10 and set(first["path"]) <= set(paths)
    assert list(first["path"]) == list(again["path"])
    assert len(read_image_headers(paths[:4], sample=100)) == 4
    with pytest.raises(UsageError, match="--sample"):
        read_image_headers(paths, sample=-1)


def test_small_functions():
    dist = class_distribution(pd.Series(["b", "a", "b", "b"]), classes=["a", "b", "c"])
    assert list(dist.index) == ["b", "a", "c"] and list(dist["count"]) == [3, 1, 0]
    assert imbalance_ratio(dist["count"]) == float("inf")  # an empty class is not hidden
    assert imbalance_ratio(pd.Series([6, 2])) == 3.0
    assert list(age_groups(pd.Series([0, 19, 20, 79.5, 80, np.nan]))) == \
        ["0-19", "0-19", "20-39", "60-79", "80+", "unknown"]
    no_groups = pd.DataFrame({"group": ["x", "y"], "image_id": ["x", "y"]})
    assert group_summary(no_groups)["has_groups"] is False


def test_user_mistakes_become_skinzoo_errors(meta_table, tmp_path):
    labels = meta_table["label"]
    with pytest.raises(DataError, match="no side for 1 image"):
        split_class_counts(labels, pd.Series("train", index=labels.index[1:]), ["nv"])
    with pytest.raises(DataError, match="no usable images"):
        explore_table(meta_table.iloc[:0], [], tmp_path)


def test_default_out_dir_is_in_the_working_directory_not_the_data(tmp_path, synth_dir):
    out = default_out_dir(synth_dir, cwd=tmp_path)
    assert out.parent == tmp_path and out.name == f"explore-{synth_dir.name}"
    csv = default_out_dir(synth_dir / "HAM10000_metadata.csv", cwd=tmp_path)
    assert csv.name == "explore-HAM10000_metadata"
    assert synth_dir.resolve() not in out.resolve().parents


# --- the command -----------------------------------------------------------------------------

def run_cli(*args):
    from click.testing import CliRunner
    from skinzoo_cli.main import cli

    return CliRunner().invoke(cli, ["data", "explore", *map(str, args)])


def test_command_on_ham_layout_with_split_file(synth_dir, tmp_path):
    from skinzoo.data.sources import load_dataset
    from skinzoo.data.splits import make_split, write_split_file

    table = load_dataset(synth_dir).table
    write_split_file(table, make_split(table, seed=1), tmp_path / "split.csv")
    result = run_cli(synth_dir, "--out", tmp_path / "out", "--split-file", tmp_path / "split.csv")
    assert result.exit_code == 0, result.output

    meta = pd.read_csv(synth_dir / "HAM10000_metadata.csv")
    counts = meta["dx"].value_counts()
    for dx, n in counts.items():
        assert f"{dx} {n:,} ({n / len(meta):.1%})" in result.output
    assert f"groups: {meta['lesion_id'].nunique():,};" in result.output
    # check_dataset reports a missing-metadata problem per column that has "unknown" values
    has_unknown_site = bool((meta["localization"] == "unknown").any())
    assert ("missing_metadata 1 [kept]" in result.output) == has_unknown_site
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == sorted(PLOTS)

    import json

    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    stored = pd.read_csv(tmp_path / "split.csv")
    for side in ("train", "val", "test"):
        assert saved["split"][side] == dict(Counter(stored.loc[stored["split"] == side, "label"]))


def test_command_on_class_folders_shows_check_problems_and_writes_to_cwd(class_folder, tmp_path,
                                                                         monkeypatch):
    before = sorted(p.name for p in class_folder.rglob("*"))
    monkeypatch.chdir(tmp_path)
    result = run_cli(class_folder)
    assert result.exit_code == 0, result.output
    out = tmp_path / f"explore-{class_folder.name}"
    assert sorted(p.stem for p in out.glob("*.png")) == ["class_counts", "image_sizes"]
    assert sorted(p.name for p in class_folder.rglob("*")) == before  # nothing written to the data
    assert "alpha 6 (46.2%), beta 5 (38.5%), gamma 2 (15.4%)" in result.output
    assert "not_image 1 [skipped]" in result.output  # from check_dataset: broken.png
    page = (out / "explore.html").read_text()
    assert "broken.png" in page and "not_image" in page


def test_command_uses_train_val_folders_as_the_split(tmp_path):
    root = tmp_path / "folders"
    sizes = {("train", "a"): 3, ("train", "b"): 2, ("val", "a"): 1, ("val", "b"): 2}
    for (side, label), n in sizes.items():
        (root / side / label).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (16, 12), (i * 40, 90, 20)).save(root / side / label / f"{i}.png")
    result = run_cli(root, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "split: train 5, val 3" in result.output
    assert (tmp_path / "out" / "split_counts.png").exists()


def test_command_errors_are_one_line_with_a_hint(tmp_path, synth_dir):
    missing = run_cli(tmp_path / "nope", "--out", tmp_path / "out")
    assert missing.exit_code == DataError.exit_code
    assert "error: dataset path" in missing.output and "hint:" in missing.output
    bad_split = tmp_path / "split.csv"
    bad_split.write_text("image_id,split\nISIC_0024306,train\n")
    result = run_cli(synth_dir, "--out", tmp_path / "out", "--split-file", bad_split)
    assert result.exit_code == DataError.exit_code, result.output
    assert "error:" in result.output and "Traceback" not in result.output
