"""Dataset check: bad images skipped and listed, duplicates, blocking class problems."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from badinputs import make_messy_dataset, write_good_jpeg

from skinzoo.data.check import check_dataset, report_text, validate_for_training
from skinzoo.data.sources import load_dataset
from skinzoo.errors import DataError


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    return make_messy_dataset(tmp_path_factory.mktemp("messy"))


def test_messy_dataset_report(messy):
    ds = load_dataset(messy.root)
    report = check_dataset(ds)
    assert not report.blocking
    s = report.summary
    assert s["rows"] == messy.n_rows - len(messy.missing_rows)
    assert s["usable"] == messy.n_good and s["unusable"] == len(messy.bad)
    by_path = {p.where: p.kind for p in report.problems}
    for image_id, kind in messy.bad.items():
        path = ds.table.loc[ds.table.image_id == image_id, "path"].iloc[0]
        assert by_path[path] == kind, image_id
    assert s["conversions"] == {"grayscale": 1, "rgba": 1}
    assert sum(c["images"] for c in s["classes"]) == messy.n_good
    assert [p.kind for p in report.problems].count("missing_image") == 1
    assert s["image_size"]["width"] == {"min": 32, "median": 32.0, "max": 32}
    json.dumps(report.to_dict())  # JSON-ready
    text = report_text(report, max_per_kind=1)
    assert "not_image (2, skipped)" in text and "... and 1 more" in text
    assert "hint:" in text


def test_validate_for_training_drops_bad_images(messy):
    ds = load_dataset(messy.root)
    clean, report = validate_for_training(ds)
    assert len(clean) == messy.n_good
    assert set(messy.bad).isdisjoint(clean.table["image_id"])
    assert set(messy.converted) <= set(clean.table["image_id"])
    assert clean.classes == ds.classes
    kinds = {p.kind for p in clean.problems}
    assert {"missing_image", "zero_byte", "truncated", "not_image"} <= kinds


def test_duplicates_are_reported_and_grouped(synth_copy):
    meta = pd.read_csv(synth_copy / "HAM10000_metadata.csv")
    a, b = meta[meta.dx == "nv"].drop_duplicates("lesion_id").image_id.iloc[:2]
    shutil.copyfile(synth_copy / "images" / f"{a}.jpg", synth_copy / "images" / f"{b}.jpg")
    ds = load_dataset(synth_copy)
    report = check_dataset(ds)
    dups = [p for p in report.problems if p.kind == "duplicate_image"]
    assert len(dups) == 1 and "2 byte-identical files" in dups[0].message
    # Same label: one copy kept, the other left out, their lesions joined into one group.
    assert "joined into one" in dups[0].message and dups[0].action == "skipped"
    assert f"{a} kept, {b} left out" in dups[0].message
    assert report.summary["duplicate_sets"] == 1 and report.summary["left_out_copies"] == 1
    clean, _ = validate_for_training(ds)
    ids = set(clean.table["image_id"])
    assert a in ids and b not in ids and len(clean) == len(ds) - 1
    lesion_b = meta.set_index("image_id").at[b, "lesion_id"]
    others_of_b = set(meta.loc[(meta.lesion_id == lesion_b) & (meta.image_id != b), "image_id"])
    groups = clean.table.set_index("image_id")["group"]
    assert all(groups[i] == groups[a] for i in others_of_b)


def test_class_with_too_few_groups_blocks(tmp_path):
    for cls, n in (("common", 6), ("rare", 2)):
        for i in range(n):
            write_good_jpeg(tmp_path / cls, f"{i}.jpg", size=16, seed=i + 10 * n)
    ds = load_dataset(tmp_path)
    report = check_dataset(ds)
    assert report.blocking
    (err,) = report.errors
    assert err.kind == "too_few_groups" and "'rare'" in err.message
    assert "train/val/test" in err.message
    assert not check_dataset(ds, test=0).blocking  # two sides need two groups
    assert check_dataset(ds, folds=3).blocking
    with pytest.raises(DataError, match="'rare' has 2 group"):
        validate_for_training(ds)


def test_class_losing_all_images_blocks(tmp_path):
    for i in range(4):
        write_good_jpeg(tmp_path / "good", f"{i}.jpg", size=16, seed=i)
        (tmp_path / "broken").mkdir(exist_ok=True)
        (tmp_path / "broken" / f"{i}.jpg").write_bytes(b"")
    ds = load_dataset(tmp_path)
    report = check_dataset(ds)
    kinds = {p.kind for p in report.errors}
    assert kinds == {"empty_class", "one_class"}
    assert report.summary["unusable"] == 4


def test_thread_pool_gives_same_result_as_serial(messy):
    ds = load_dataset(messy.root)
    a = check_dataset(ds, workers=1).images
    b = check_dataset(ds, workers=4).images
    assert a.equals(b)


def test_problem_table_lists_every_problem(messy):
    report = check_dataset(load_dataset(messy.root))
    table = report.problem_table()
    assert list(table.columns) == ["kind", "where", "message", "action"]
    assert len(table) == len(report.problems)
    assert set(table.loc[table.action == "skipped", "kind"]) >= set(messy.bad.values())
