"""Issue #14 (robustness round 2), the parts that need no training: special files, links out of
the dataset, cut-short images, label and duplicate leaks, option ranges and output paths.

Each test names the issue item it pins down; each failed (hung, crashed or accepted silently)
before the fix. Commands that could hang run in a thread with a deadline, so a regression fails
the test instead of blocking the suite."""

from __future__ import annotations

import json
import os
import shutil
import threading

import pandas as pd
import pytest
from badinputs import (
    SECRET,
    write_cut_idat_png,
    write_cut_scan_jpeg,
    write_device_link,
    write_fifo,
    write_good_jpeg,
    write_gray_letterbox_jpeg,
    write_outside_link,
    write_strip_png,
    write_text_secret,
)

from skinzoo.data.check import check_dataset, validate_for_training
from skinzoo.data.sources import load_dataset
from skinzoo.errors import DataError

from .conftest import error_lines, invoke


def invoke_within(seconds, *args):
    """``invoke`` in a thread; fails (instead of hanging the suite) when it does not return."""
    box = {}

    def target():
        try:
            box["result"] = invoke(*args)
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"`skinzoo {' '.join(map(str, args))}` hung for {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["result"]


def folders(root, n=4, classes=("benign", "malignant"), size=16):
    for c, cls in enumerate(classes):
        for i in range(n):
            write_good_jpeg(root / cls, f"{cls}{i}.jpg", size=size, seed=i + 50 * c)
    return root


# --- item 1: FIFOs and devices are never read ---------------------------------------------------

def test_fifo_in_class_folder_is_skipped_not_read(tmp_path):
    root = folders(tmp_path / "data")
    write_fifo(root / "benign", "x.jpg")
    result = invoke_within(30, "data", "check", root)
    assert result.exit_code == 0, result.output
    assert "not_regular" in result.output and "FIFO" in result.output


def test_device_link_in_class_folder(tmp_path):
    root = folders(tmp_path / "data")
    write_device_link(root / "benign", "zeros.jpg")
    result = invoke_within(30, "data", "check", root)
    assert result.exit_code == 0 and "outside_root" in result.output, result.output
    # Allowed out of the root, it is still never read: a device is not a regular file.
    result = invoke_within(30, "data", "check", root, "--allow-outside-root")
    assert result.exit_code == 0 and "character device" in result.output, result.output


@pytest.mark.parametrize("what", ["dataset", "config", "model"])
def test_fifo_as_csv_config_or_model_path(tmp_path, what):
    fifo = write_fifo(tmp_path, {"dataset": "labels.csv", "config": "c.toml",
                                 "model": "m.keras"}[what])
    args = {"dataset": ("data", "check", fifo), "config": ("train", "--config", fifo),
            "model": ("predict", write_good_jpeg(tmp_path, "x.jpg"), "--model", fifo)}[what]
    result = invoke_within(60, *args)
    assert result.exit_code == {"dataset": 3, "config": 2, "model": 4}[what], result.output
    (line,) = error_lines(result.output)
    assert "FIFO" in line and str(fifo) in line


def test_fifo_as_csv_inside_a_dataset_folder(tmp_path):
    write_fifo(tmp_path, "HAM10000_metadata.csv")
    result = invoke_within(30, "data", "check", tmp_path)
    assert result.exit_code == 3 and "FIFO" in result.output, result.output


# --- item 5: cut-short images the header check cannot see ---------------------------------------

@pytest.mark.parametrize("writer", [write_cut_idat_png, write_cut_scan_jpeg])
def test_cut_short_images_fail_the_check_and_are_dropped(tmp_path, writer):
    root = folders(tmp_path / "data")
    bad = writer(root / "benign")
    clean, report = validate_for_training(load_dataset(root))
    assert str(bad) not in set(clean.table["path"])
    (problem,) = [p for p in report.problems if p.where == str(bad)]
    assert problem.kind == "truncated" and problem.action == "skipped"


def test_gray_letterboxed_jpeg_is_not_taken_for_a_cut_one(tmp_path):
    root = folders(tmp_path / "data")
    good = write_gray_letterbox_jpeg(root / "benign")
    clean, _ = validate_for_training(load_dataset(root))
    assert str(good) in set(clean.table["path"])


# --- item 6: leaks and wrong classes --------------------------------------------------------------

def _csv_dataset(root, rows, header="image,label,lesion_id"):
    root.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        write_good_jpeg(root, row[0], size=16, seed=i)
    lines = [header] + [",".join(r) for r in rows]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_labels_differing_by_case_are_merged_with_a_note(tmp_path):
    rows = [(f"{i}.jpg", name, f"L{i}") for i, name in enumerate(
        ["mel", "mel", "MEL", "Mel", "nv", "nv", "nv", "NV"])]
    ds = load_dataset(_csv_dataset(tmp_path / "d", rows))
    assert ds.classes == ["mel", "nv"]
    notes = sorted(p.message for p in ds.problems if p.kind == "merged_labels")
    assert notes == ["labels differing only by case merged into 'mel': 'MEL', 'Mel', 'mel' "
                     "(2 row(s) renamed)",
                     "labels differing only by case merged into 'nv': 'NV', 'nv' (1 row(s) renamed)"]
    assert ds.class_counts.tolist() == [4, 4]


def test_ham_labels_in_capitals_map_to_the_vocabulary(synth_copy):
    meta = pd.read_csv(synth_copy / "HAM10000_metadata.csv")
    meta.loc[meta.dx == "mel", "dx"] = "MEL"
    meta.to_csv(synth_copy / "HAM10000_metadata.csv", index=False)
    ds = load_dataset(synth_copy)
    assert "mel" in ds.classes and "MEL" not in ds.classes
    assert not [p for p in ds.problems if p.kind == "unknown_label"]


def test_blank_lesion_ids_are_counted_and_identical_images_grouped(synth_copy, caplog):
    meta = pd.read_csv(synth_copy / "HAM10000_metadata.csv")
    nv = meta.index[meta.dx == "nv"][:6]
    meta.loc[nv, "lesion_id"] = ""
    meta.to_csv(synth_copy / "HAM10000_metadata.csv", index=False)
    a, b = meta.loc[nv[0], "image_id"], meta.loc[nv[1], "image_id"]
    shutil.copyfile(synth_copy / "images" / f"{a}.jpg", synth_copy / "images" / f"{b}.jpg")
    ds = load_dataset(synth_copy)
    (note,) = [p for p in ds.problems if p.kind == "missing_group"]
    assert note.message.startswith("6 of ") and "train and test" in note.message
    with caplog.at_level("WARNING"):
        clean, _ = validate_for_training(ds)
    assert "have no lesion_id" in caplog.text  # loud: logged when training, not only in the report
    # The identical copy was one lesion's picture twice: one is kept, never on both sides.
    assert (a in set(clean.table.image_id)) != (b in set(clean.table.image_id))


def test_same_image_under_two_labels_is_left_out_everywhere(tmp_path, caplog):
    rows = [(f"{i}.jpg", lab, f"L{i}") for i, lab in enumerate(["a"] * 5 + ["b"] * 5)]
    root = _csv_dataset(tmp_path / "d", rows)
    shutil.copyfile(root / "0.jpg", root / "7.jpg")  # 0 says a, 7 says b
    ds = load_dataset(root)
    report = check_dataset(ds)
    (conflict,) = [p for p in report.problems if p.kind == "conflicting_duplicate"]
    assert "0.jpg (a)" in conflict.message and "7.jpg (b)" in conflict.message
    assert conflict.action == "skipped"
    with caplog.at_level("WARNING"):
        clean, _ = validate_for_training(ds)
    assert {"0.jpg", "7.jpg"}.isdisjoint(clean.table.image_id) and len(clean) == 8
    assert "carry different labels" in caplog.text


def test_same_image_twice_under_one_label_is_kept_once(tmp_path):
    rows = [(f"{i}.jpg", lab, f"L{i}") for i, lab in enumerate(["a"] * 5 + ["b"] * 5)]
    root = _csv_dataset(tmp_path / "d", rows)
    shutil.copyfile(root / "1.jpg", root / "2.jpg")
    clean, report = validate_for_training(load_dataset(root))
    assert "1.jpg" in set(clean.table.image_id) and "2.jpg" not in set(clean.table.image_id)
    assert report.summary["left_out_copies"] == 1


def test_csv_with_a_duplicated_label_column_is_refused(tmp_path):
    root = _csv_dataset(tmp_path / "d", [("0.jpg", "a", "b"), ("1.jpg", "b", "a")],
                        header="image,label,label")
    with pytest.raises(DataError, match="names the column 'label' twice"):
        load_dataset(root)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "latin-1"])
def test_csv_encodings_with_nan_labels(tmp_path, encoding):
    root = tmp_path / "d"
    names = ["naïve_0.jpg", "naïve_1.jpg", "b0.jpg", "b1.jpg", "c.jpg", "d.jpg"]
    for i, n in enumerate(names):
        write_good_jpeg(root, n, size=16, seed=i)
    text = "image,label\n" + "\n".join(f"{n},{lab}" for n, lab in zip(
        names, ["nävus", "nävus", "mel", "mel", "NaN", ""], strict=True)) + "\n"
    (root / "labels.csv").write_bytes(text.encode(encoding))
    ds = load_dataset(root)
    assert ds.classes == ["mel", "nävus"] and len(ds) == 4
    assert sorted(p.kind for p in ds.problems if p.kind == "missing_label") == ["missing_label"] * 2


# --- item 7: links out of the dataset, and file contents never printed -------------------------

def test_link_to_a_private_file_is_refused_and_never_echoed(tmp_path):
    root = folders(tmp_path / "data")
    write_outside_link(root / "benign", "passwd.jpg", secret_dir=tmp_path / "private")
    write_text_secret(root / "malignant", "notes.jpg")
    report_json = tmp_path / "r.json"
    result = invoke_within(30, "data", "check", root, "--json", report_json)
    assert result.exit_code == 0, result.output
    assert "outside_root" in result.output and "through a symlink" in result.output
    assert "it is a text file" in result.output  # the in-root text file: kind named, not quoted
    allowed = invoke_within(30, "data", "check", root, "--allow-outside-root")
    for text in (result.output, report_json.read_text(), allowed.output):
        assert "SKINZOO-SECRET-MARKER" not in text and "root:x" not in text
    assert "SKINZOO-SECRET-MARKER" in SECRET


def test_all_images_out_of_the_root_is_refused_with_the_option_named(tmp_path):
    outside = folders(tmp_path / "elsewhere")
    root = tmp_path / "data"
    root.mkdir()
    for cls in ("benign", "malignant"):
        os.symlink(outside / cls, root / cls)
    result = invoke_within(30, "data", "check", root)
    assert result.exit_code == 3 and "--allow-outside-root" in result.output, result.output
    assert invoke_within(30, "data", "check", root, "--allow-outside-root").exit_code == 0


# --- Also: extreme aspect ratio, unsupported-format folders --------------------------------------

def test_thin_strip_is_refused_before_decoding(tmp_path):
    root = folders(tmp_path / "data")
    strip = write_strip_png(root / "benign")
    clean, report = validate_for_training(load_dataset(root))
    assert str(strip) not in set(clean.table["path"])
    assert any(p.kind == "extreme_aspect" for p in report.problems)


def test_folder_of_tiff_files_says_the_format_is_unsupported(tmp_path):
    from PIL import Image

    (tmp_path / "scans").mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16)).save(tmp_path / "scans" / f"{i}.tif")
    result = invoke("data", "check", tmp_path)
    assert result.exit_code == 3
    (line,) = error_lines(result.output)
    assert "3 .tif file(s)" in line and "does not read" in line


# --- item 8: every numeric option has a range at parse time --------------------------------------

BAD_OPTIONS = [
    ("train", "--label-smoothing", "2"), ("train", "--warmup-epochs", "-1"),
    ("train", "--early-stopping", "-1"), ("train", "--cpu-replicas", "-2"),
    ("train", "--img-size", "100000"), ("train", "--batch-size", "0"), ("train", "--seed", "-1"),
    ("train", "--seed", str(2**40)), ("train", "--epochs", "0"), ("train", "--lr", "0"),
    ("predict", "x.jpg", "--batch-size", "0"), ("predict", "x.jpg", "--top-k", "0"),
    ("evaluate", "--bootstrap", "0"), ("evaluate", "--batch-size", "-1"),
    ("gradcam", "x.jpg", "--batch-size", "0"), ("--seed", "-5", "models"),
    ("data", "check", ".", "--val", "1.5"), ("data", "split", ".", "--out", "s.csv", "--folds", "1"),
    ("data", "synth", "out", "--size", "0"),
]


@pytest.mark.parametrize("args", BAD_OPTIONS, ids=lambda a: " ".join(a))
def test_bad_numbers_stop_at_parse_time(args):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output


@pytest.mark.parametrize("toml, words", [
    ("label_smoothing = 2.0", "label_smoothing = 2.0 is out of range"),
    ("worker_index = 1", "without worker hosts"),
    ('worker_hosts = "a:1,b:2"\nworker_index = 5', "lists 2 host(s)"),
    ('monitor = "val_nosuch"', "not a metric training logs"),
    ("img_size = 100000", "img_size = 100000 is out of range"),
])
def test_config_file_values_get_the_same_ranges(tmp_path, toml, words):
    config = tmp_path / "c.toml"
    config.write_text(f"[train]\ndata = \"{tmp_path}\"\n{toml}\n")
    result = invoke("train", "--config", config)
    assert result.exit_code == 2 and words in result.output, result.output


def test_bad_monitor_and_lonely_worker_index_fail_before_training(tmp_path):
    for extra in (["--monitor", "val_nosuch"], ["--worker-index", "5"]):
        result = invoke("train", "--data", tmp_path, *extra)
        assert result.exit_code == 2 and "hint:" in result.output, result.output


# --- item 9: output paths --------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["check", "split", "explore", "gradcam"])
def test_impossible_output_paths_are_one_line(tmp_path, synth_dir, command):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    target = blocker / "sub" / "out.json"
    args = {"check": ("data", "check", synth_dir, "--json", target),
            "split": ("data", "split", synth_dir, "--out", target),
            "explore": ("data", "explore", synth_dir, "--out", blocker / "x"),
            "gradcam": ("gradcam", write_good_jpeg(tmp_path, "i.jpg"), "--out", blocker / "x")}[command]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result.output)
    assert str(blocker) in line


def test_output_names_never_collide_and_stay_short():
    from skinzoo.fileio import MAX_NAME_BYTES, safe_output_names

    long = "ä" * 200 + ".jpg"  # 400 bytes: longer than any file system allows
    paths = ["/a/x.jpg", "/b/x.jpg", "/c/x.png", "/d/y.jpg", f"/e/{long}", f"/f/{long}"]
    names = safe_output_names(paths, suffix_room=32)
    assert len(set(names)) == len(names) and names[3] == "y"
    assert all(len(n.encode()) + 32 <= MAX_NAME_BYTES for n in names)


@pytest.mark.parametrize("case", ["folder", "no_permission", "long_name"])
def test_atomic_writes_to_impossible_targets_are_usage_errors(tmp_path, case):
    from skinzoo.errors import UsageError
    from skinzoo.fileio import write_json_atomic

    if case == "no_permission":
        from badinputs import running_as_root

        if running_as_root():
            pytest.skip("root can write anywhere")
        (tmp_path / "locked").mkdir(mode=0o500)
    target = {"folder": tmp_path, "no_permission": tmp_path / "locked" / "r.json",
              "long_name": tmp_path / ("x" * 300 + ".json")}[case]
    with pytest.raises(UsageError, match="cannot write"):
        write_json_atomic(target, {"a": 1})


def test_file_vanishing_after_listing_is_reported_missing(tmp_path):
    root = folders(tmp_path / "data")
    ds = load_dataset(root)
    gone = ds.table["path"].iloc[0]
    os.unlink(gone)  # deleted between listing and reading
    report = check_dataset(ds)
    (problem,) = [p for p in report.problems if p.where == gone]
    assert problem.kind == "missing" and not report.blocking
    assert json.dumps(report.to_dict())  # the report stays serialisable
