"""Every bad input through `skinzoo data check/split`: a message naming it, the right exit code,
never a traceback."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from badinputs import BAD_IMAGES, CONVERTED_IMAGES, write_good_jpeg
from click.testing import CliRunner
from skinzoo_cli.main import cli

from skinzoo.errors import DataError, UsageError


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def small_folders(root, per_class=4):
    for cls in ("benign", "malignant"):
        for i in range(per_class):
            write_good_jpeg(root / cls, f"{cls}{i}.jpg", size=16, seed=i + (cls == "benign") * 50)
    return root


@pytest.mark.parametrize("name", sorted({**BAD_IMAGES, **CONVERTED_IMAGES}))
def test_bad_image_is_listed_and_check_passes(tmp_path, name):
    writer, kind = {**BAD_IMAGES, **CONVERTED_IMAGES}[name]
    root = small_folders(tmp_path / "data")
    writer(root / "benign")
    result = run("data", "check", root)
    assert result.exit_code == 0, result.output
    # A link to /dev/zero leads out of the dataset folder: refused before it is even inspected.
    assert {"device_link": "outside_root"}.get(name, kind) in result.output
    assert "ok: the dataset can be used for training" in result.output


def test_messy_check_json(tmp_path):
    from badinputs import make_messy_dataset

    messy = make_messy_dataset(tmp_path / "messy")
    result = run("data", "check", messy.root, "--json", tmp_path / "r.json", "--max-per-kind", 2)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["usable"] == messy.n_good and report["blocking"] is False
    for kind in set(messy.bad.values()):
        assert f"{kind} (" in result.output


BLOCKING = {
    "no_such_path": lambda d: d / "nope",
    "empty_folder": lambda d: d,
    "one_class": lambda d: [write_good_jpeg(d / "x", f"{i}.jpg") for i in range(3)] and d,
    "empty_csv": lambda d: _csv(d, ""),
    "csv_missing_columns": lambda d: _csv(d, "a,b\n1,2\n"),
    "all_outside_root": lambda d: _outside(d),
    "too_few_groups": lambda d: _rare(d),
    "all_unreadable": lambda d: _all_broken(d),
}


def _csv(d, text):
    (d / "l.csv").write_text(text)
    return d / "l.csv"


def _outside(d):
    small_folders(d / "imgs")
    (d / "csv").mkdir()
    rows = [f"../imgs/benign/benign{i}.jpg,benign" for i in range(4)]
    (d / "csv" / "l.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return d / "csv" / "l.csv"


def _rare(d):
    small_folders(d)
    for i in range(2):
        write_good_jpeg(d / "df", f"{i}.jpg", size=16, seed=90 + i)
    return d


def _all_broken(d):
    for cls in ("a", "b"):
        (d / cls).mkdir()
        for i in range(3):
            (d / cls / f"{i}.jpg").write_bytes(b"")
    return d


EXPECTED = {
    "no_such_path": "does not exist", "empty_folder": "it is empty",
    "one_class": "found only one class 'x'", "empty_csv": "is empty",
    "csv_missing_columns": "found columns: a, b", "all_outside_root": "--allow-outside-root",
    "too_few_groups": "'df' has 2 group(s)", "all_unreadable": "none of the 6 images",
}


@pytest.mark.parametrize("name", sorted(BLOCKING))
def test_blocking_inputs_exit_with_data_error(tmp_path, name):
    path = BLOCKING[name](tmp_path)
    result = run("data", "check", path)
    assert result.exit_code == DataError.exit_code, result.output
    assert "error:" in result.output and "hint:" in result.output
    assert EXPECTED[name] in result.output


def test_check_options(tmp_path):
    root = _rare(tmp_path)
    assert run("data", "check", root, "--test", 0).exit_code == 0
    result = run("data", "check", root, "--task", "binary")  # df → benign: no rare class
    assert result.exit_code == 0 and "malignant" in result.output
    result = run("data", "check", root, "--format", "ham10000")
    assert result.exit_code == DataError.exit_code and "HAM10000_metadata.csv" in result.output
    result = run("data", "check", root, "--format", "dicom")
    assert result.exit_code == UsageError.exit_code
    result = run("data", "check", root, "--task", "binary", "--binary-map", "df")
    assert result.exit_code == UsageError.exit_code and "has no '='" in result.output


def test_csv_columns_through_cli(tmp_path):
    small_folders(tmp_path)
    rows = [(f"benign/benign{i}.jpg", "0") for i in range(4)] + \
        [(f"malignant/malignant{i}.jpg", "1") for i in range(4)]
    pd.DataFrame(rows, columns=["Bild", "Klasse"]).to_csv(tmp_path / "l.csv", sep=";", index=False)
    result = run("data", "check", tmp_path / "l.csv")
    assert result.exit_code == DataError.exit_code and "--image-col/--label-col" in result.output
    result = run("data", "check", tmp_path / "l.csv", "--image-col", "Bild", "--label-col", "Klasse",
                 "--test", 0)
    assert result.exit_code == 0, result.output


def test_split_command(tmp_path, synth_dir):
    out = tmp_path / "split.csv"
    result = run("data", "split", synth_dir, "--out", out, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "groups" in result.output and f"wrote {out}" in result.output
    split = pd.read_csv(out)
    assert set(split["split"]) == {"train", "val", "test"}
    assert (split.groupby("group")["split"].nunique() == 1).all()
    again = tmp_path / "again.csv"
    run("data", "split", synth_dir, "--out", again, "--seed", 3)
    assert again.read_text() == out.read_text()
    result = run("data", "split", synth_dir, "--out", tmp_path / "f.csv", "--folds", 3)
    assert result.exit_code == 0 and "fold2" in result.output
    result = run("data", "split", synth_dir, "--out", tmp_path / "x.csv", "--val", 0.7, "--test", 0.3)
    assert result.exit_code == UsageError.exit_code and "--val" in result.output


def test_split_leaves_out_bad_images(tmp_path):
    root = small_folders(tmp_path / "data")
    (root / "benign" / "broken.jpg").write_bytes(b"")
    out = tmp_path / "split.csv"
    result = run("data", "split", root, "--out", out, "--test", 0)
    assert result.exit_code == 0, result.output
    assert "left out 1 unusable" in result.output
    assert "benign/broken.jpg" not in set(pd.read_csv(out)["image_id"])
