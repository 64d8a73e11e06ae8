"""`skinzoo train` over messy data: good images are trained on, bad ones skipped and counted,
datasets that cannot be trained on are refused with one clear line, and nothing is left behind."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pytest
from badinputs import (
    write_16bit_png,
    write_cmyk_jpeg,
    write_good_jpeg,
    write_palette_png,
    write_random_bytes,
    write_zero_byte,
)

from .conftest import TINY, error_lines


def split_ids(run: Path) -> set[str]:
    return set(pd.read_csv(run / "split.csv", dtype=str)["image_id"])


def only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1, runs
    return runs[0]


# --- a folder with a few bad files trains on the good ones -------------------------------------

@pytest.mark.slow
def test_messy_folder_trains_on_the_good_images(messy_run):
    messy, run, output = messy_run
    meta = pd.read_csv(messy.root / "HAM10000_metadata.csv", dtype=str)
    good = set(meta["image_id"]) - set(messy.bad) - set(messy.missing_rows)
    assert split_ids(run) == good and len(good) == messy.n_good
    assert set(messy.converted) <= good  # grayscale / RGBA are converted, not dropped
    skipped = len(messy.bad) + len(messy.converted) + len(messy.missing_rows)
    assert f"{skipped} file(s) skipped or converted" in output
    assert f"({messy.n_good} images," in output
    for name in ("best.keras", "metrics.json", "history.csv", "classes.json"):
        assert (run / name).is_file(), name
    assert len(pd.read_csv(run / "history.csv")) == 1


@pytest.mark.slow
def test_training_names_the_skipped_files(messy_run):
    messy, run, output = messy_run
    for image_id in [*messy.bad, *messy.missing_rows]:
        assert image_id in output, image_id
    problems = pd.read_csv(run / "problems.csv", dtype=str)
    assert {"kind", "where", "message", "action"} <= set(problems.columns)
    listed = " ".join(problems["where"].fillna("") + " " + problems["message"].fillna(""))
    for image_id in [*messy.bad, *messy.missing_rows]:
        assert image_id in listed, image_id


@pytest.mark.slow
def test_class_folders_with_odd_names_and_colour_modes(skinzoo, tmp_path):
    """Space/non-ASCII folder and file names, CMYK / 16-bit / palette images (converted), an empty
    class folder (skipped, no class made) and a random-bytes file (skipped) in one dataset."""
    root = tmp_path / "hautbilder ü" / "data set"
    lesion = root / "benigne läsion"
    for i in range(6):
        write_good_jpeg(lesion, f"bild {i} 皮膚.jpg", seed=i)
        write_good_jpeg(root / "malignant", f"m{i}.jpg", seed=50 + i)
    write_cmyk_jpeg(lesion, "cmyk.jpg")
    write_16bit_png(root / "malignant", "sixteen.png")
    write_palette_png(root / "malignant", "palette.png")
    write_random_bytes(lesion, "random.jpg")
    (root / "empty class").mkdir()
    out = tmp_path / "runs"
    result = skinzoo("train", "--data", root, *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    run = only_run(out)
    info = json.loads((run / "classes.json").read_text(encoding="utf-8"))
    assert info["classes"] == ["benigne läsion", "malignant"]
    ids = split_ids(run)
    assert len(ids) == 15 and "benigne läsion/random.jpg" not in ids
    assert {"benigne läsion/cmyk.jpg", "malignant/sixteen.png", "malignant/palette.png"} <= ids
    assert "5 file(s) skipped or converted" in result.output  # empty folder, random, 3 converted


@pytest.mark.slow
def test_messy_csv_trains_on_the_good_rows(skinzoo, tmp_path):
    """BOM, `;` separator, CRLF, blank and empty rows, a duplicated id, NaN/empty ages, a row
    without image, a placeholder label and a path that escapes the dataset folder."""
    root = tmp_path / "data"
    rows = []
    for cls, offset in (("benign", 0), ("malignant", 100)):
        for i in range(6):
            write_good_jpeg(root / "img", f"{cls}{i}.jpg", seed=offset + i)
            rows.append(f"img/{cls}{i}.jpg;{cls};P{cls}{i};{['', 'NaN', '41'][i % 3]}")
    write_good_jpeg(root / "img", "unlabelled.jpg", seed=7)
    write_good_jpeg(tmp_path / "elsewhere", "outside.jpg", seed=8)
    rows += ["", ";;;", rows[0], "img/missing.jpg;benign;Px;30", "img/unlabelled.jpg;?;Pu;30",
             "../elsewhere/outside.jpg;malignant;Po;30"]
    text = "\r\n".join(["image;label;patient_id;age", *rows]) + "\r\n"
    (root / "labels.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    out = tmp_path / "runs"
    result = skinzoo("train", "--data", root / "labels.csv", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    ids = split_ids(only_run(out))
    assert ids == {f"img/{c}{i}.jpg" for c in ("benign", "malignant") for i in range(6)}
    # empty rows, duplicate, missing image, placeholder label, outside root
    assert "5 file(s) skipped or converted" in result.output


# --- datasets that cannot be trained on: one error line, exit code, nothing written ----------

def _class_of_only_bad_files(d):
    for cls in ("a", "b"):
        for i in range(4):
            write_good_jpeg(d / cls, f"{cls}{i}.jpg", seed=i + 10 * (cls == "b"))
    write_zero_byte(d / "c", "z1.jpg")
    write_random_bytes(d / "c", "z2.jpg")
    return d


def _all_outside_root(d):
    write_good_jpeg(d / "outside", "x.jpg")
    write_good_jpeg(d / "outside", "y.jpg", seed=1)
    (d / "data").mkdir()
    (d / "data" / "labels.csv").write_text("path,label\n../outside/x.jpg,a\n../outside/y.jpg,b\n")
    return d / "data" / "labels.csv"


def _csv(d, text):
    d.mkdir(parents=True, exist_ok=True)
    (d / "labels.csv").write_text(text, encoding="utf-8")
    return d / "labels.csv"


def _csv_rows(d, header, row, enc="utf-8"):
    """Four good images per class ``a``/``b`` and a CSV whose rows are ``row.format(path, label)``."""
    lines = [header]
    for cls in ("a", "b"):
        for i in range(4):
            write_good_jpeg(d / "img", f"{cls}{i}.jpg", seed=i + 10 * (cls == "b"))
            lines.append(row.format(f"img/{cls}{i}.jpg", cls))
    d.mkdir(parents=True, exist_ok=True)
    (d / "labels.csv").write_bytes(("\n".join(lines) + "\n").encode(enc))
    return d / "labels.csv"


REFUSED = {
    # name: (make the --data path, exit code, words the error line must contain)
    "missing_path": (lambda d: d / "no such folder", 3, ["does not exist"]),
    "empty_folder": (lambda d: d.mkdir() or d, 3, ["could not recognise a dataset", "it is empty"]),
    "one_class": (lambda d: [write_good_jpeg(d / "nevus", f"{i}.jpg", seed=i) for i in range(4)]
                  and d, 3, ["only one class", "'nevus'"]),
    "class_of_only_bad_files": (_class_of_only_bad_files, 3, ["class 'c' has no usable images"]),
    "csv_missing_columns": (lambda d: _csv(d, "a,b\n1,2\n"), 3, ["labels.csv has no image column",
                                                                 "found columns: a, b"]),
    "csv_header_only": (lambda d: _csv(d, "image,label\n"), 3, ["labels.csv has a header but no rows"]),
    "csv_binary_junk": (lambda d: _csv(d, "\x00\x01PK\x03\x04"), 3, ["not a text CSV"]),
    "all_outside_root": (_all_outside_root, 3, ["point outside the dataset folder"]),
    "csv_unclosed_quote": (lambda d: _csv(d, 'image,label\n"a0.jpg,a\nb0.jpg,b\n'), 3,
                           ["could not be parsed as CSV", "EOF inside string"]),
    "csv_more_fields_than_header": (lambda d: _csv_rows(d, "image,label", "{},{},extra,x"), 3,
                                    ["line 2 has 4 fields but the header names 2 columns"]),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_untrainable_dataset_is_refused_with_one_line(skinzoo, tmp_path, name):
    make, code, words = REFUSED[name]
    data = make(tmp_path / "d")
    out = tmp_path / "runs"
    result = skinzoo("train", "--data", data, *TINY, "--out", out)
    assert result.exit_code == code, result.output
    (line,) = error_lines(result.output)
    for word in words:
        assert word in line, line
    assert "  hint: " in result.output
    assert not out.exists() or not any(out.iterdir())  # no half run directory left behind


@pytest.mark.parametrize("name, header, row, enc, kind", [
    ("trailing_separators", "image,label", "{},{},", "utf-8", "extra_fields"),
    ("utf16_tabs", "image\tlabel", "{}\t{}", "utf-16", None),
    ("cp1252", "image;label;note", "{};{};r\xe9sum\xe9", "cp1252", "encoding"),
    ("utf16_cut_short", "image,label", "{},{}", "utf-16-cut", "encoding"),
])
def test_csv_shapes_that_are_read_not_refused(skinzoo, tmp_path, name, header, row, enc, kind):
    """Spreadsheet exports: trailing separators, UTF-16 with tabs, Windows-1252 text (checked
    with `data split`, which reads the CSV exactly as train does, without training)."""
    data = _csv_rows(tmp_path / "d", header, row, enc.replace("-cut", ""))
    if enc.endswith("-cut"):  # a copy that lost its last byte: half a UTF-16 code unit
        data.write_bytes(data.read_bytes()[:-1])
    result = skinzoo("data", "split", data, "--out", tmp_path / "split.csv", "--test", "0",
                     "--val", "0.3")
    assert result.exit_code == 0, result.output
    split = pd.read_csv(tmp_path / "split.csv", dtype=str)
    assert sorted(split["label"]) == ["a"] * 4 + ["b"] * 4
    if kind:
        from skinzoo.data.sources import load_dataset

        assert kind in {p.kind for p in load_dataset(data).problems}


def test_all_outside_root_is_accepted_with_the_flag(skinzoo, tmp_path):
    """--allow-outside-root lets the rows in (stopped right after by the split, not the paths)."""
    data = _all_outside_root(tmp_path)
    result = skinzoo("train", "--data", data, "--allow-outside-root", *TINY, "--out", tmp_path / "r")
    assert "outside the dataset folder" not in result.output
    assert result.exit_code == 3 and "group(s)" in result.output  # 1 image per class cannot split


def test_out_folder_that_cannot_be_created(skinzoo, tmp_path, synth_dir):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    result = skinzoo("train", "--data", synth_dir, *TINY, "--out", blocker / "runs")
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result.output)
    assert str(blocker / "runs") in line


# --- --config files ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("epochs = [1,\nmodel = 'x'\n", ["is not valid TOML", "line 2"]),
    ("\udcff", ["is not valid TOML"]),
    ("[train]\nepohcs = 3\n", ["unknown option(s) epohcs"]),
])
def test_broken_config_file_is_one_line(skinzoo, tmp_path, synth_dir, text, words):
    config = tmp_path / "my config.toml"
    config.write_bytes(text.encode("utf-8", "surrogateescape"))
    result = skinzoo("train", "--config", config, "--data", synth_dir, "--out", tmp_path / "r")
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result.output)
    assert str(config) in line and all(w in line for w in words), line
    assert not (tmp_path / "r").exists()


def test_missing_config_file(skinzoo, tmp_path, synth_dir):
    result = skinzoo("train", "--config", tmp_path / "nope.toml", "--data", synth_dir)
    assert result.exit_code == 2 and "nope.toml does not exist" in result.output


@pytest.mark.parametrize("line", ['epochs = "many"', 'batch_size = "8"', 'img_size = "64"'])
def test_config_value_of_the_wrong_type_is_a_usage_error(skinzoo, tmp_path, synth_dir, line):
    config = tmp_path / "c.toml"
    config.write_text(f"[train]\n{line}\n")
    result = skinzoo("train", "--config", config, "--data", synth_dir, "--out", tmp_path / "r")
    assert result.exit_code == 2, result.output
    assert line.split()[0] in error_lines(result.output)[0]


@pytest.mark.parametrize("payload", [
    '[train]\nmodel = "__import__(\'os\').system(\'touch {marker}\')"\ndata = "{data}"\n',
    '[train]\nmodel = "simple_cnn"\ndata = "$(touch {marker})"\n',
    '[train]\nmodel = "simple_cnn"\ndata = "{data}"\nout = "`touch {marker}`"\n'
    'worker_hosts = "; touch {marker}"\nworker_index = 0\n',
])
def test_resuming_a_run_with_odd_config_strings_executes_nothing(skinzoo, tmp_path, synth_dir,
                                                                   payload):
    marker = tmp_path / "executed"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(payload.format(marker=marker, data=synth_dir))
    result = skinzoo("train", "--resume", run)
    assert result.exit_code in (2, 3, 4), result.output
    assert len(error_lines(result.output)) == 1
    assert not marker.exists()


# --- a crash while writing best.keras -----------------------------------------------------------

def _half_written_save(self, path, *args, **kwargs):
    Path(path).write_bytes(b"PK\x03\x04 half a zip")
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def test_failed_checkpoint_write_keeps_the_previous_best_keras(tmp_path, monkeypatch):
    """BestCheckpoint writes through fileio.atomic_path: a save that dies half-way (disk full)
    leaves the previous best.keras byte-identical and loadable, and no temporary file."""
    from skinzoo.runtime import tf

    tf()
    import keras

    from skinzoo.errors import SkinzooError
    from skinzoo.models.files import load_model_file
    from skinzoo.train.callbacks import BestCheckpoint

    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="predictions")(
        keras.layers.GlobalAveragePooling2D()(inp)))
    best, state = tmp_path / "best.keras", tmp_path / "state.json"
    callback = BestCheckpoint(best, state, "val_balanced_accuracy", mode="max")
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_end(0, {"val_balanced_accuracy": 0.5})
    before = best.read_bytes()
    monkeypatch.setattr(keras.Model, "save", _half_written_save)
    with pytest.raises((OSError, SkinzooError)):
        callback.on_epoch_end(1, {"val_balanced_accuracy": 0.9})
    assert best.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras", "state.json"]
    assert json.loads(state.read_text())["best_epoch"] == 0  # state agrees with the file on disk
    monkeypatch.undo()
    assert load_model_file(best).count_params() == model.count_params()


@pytest.mark.slow
def test_disk_full_during_training_is_a_clear_error(skinzoo, tmp_path, monkeypatch):
    from skinzoo.runtime import tf

    tf()
    import keras

    root = tmp_path / "data"
    for cls in ("a", "b"):
        for i in range(6):
            write_good_jpeg(root / cls, f"{cls}{i}.jpg", seed=i + 10 * (cls == "b"))
    monkeypatch.setattr(keras.Model, "save", _half_written_save)
    out = tmp_path / "runs"
    result = skinzoo("train", "--data", root, *TINY, "--out", out)
    assert result.exit_code == 5, result.output
    (line,) = error_lines(result.output)
    assert "best.keras" in line and "No space left on device" in line
    assert not list(out.rglob("*best.keras*"))  # neither a half file nor a temporary one


# --- memory estimates before the allocation -----------------------------------------------------

def test_smote_on_pixels_refuses_a_too_big_image_size_with_the_estimate(skinzoo, tmp_path,
                                                                        synth_dir, monkeypatch):
    """`--balance smote --img-size 512`: the pixel SMOTE estimate (~4.6 GB for this set) is
    checked against the memory limit before a single image is loaded. The machine here has
    more memory than that, so the test pretends 2 GiB are available (limit: half of it)."""
    from skinzoo.data import balance

    monkeypatch.setattr(balance, "_available_bytes", lambda: 2 * 2**30)
    out = tmp_path / "runs"
    result = skinzoo("train", "--data", synth_dir, "--balance", "smote", "--img-size", "512",
                     "--model", "simple_cnn", "--epochs", "1", "--batch-size", "8",
                     "--no-tensorboard", "--out", out)
    assert result.exit_code == 6, result.output
    (line,) = error_lines(result.output)
    assert "SMOTE on pixels" in line and "at 512x512 needs ~" in line and "(limit 1.00 GB)" in line
    needed = float(line.split("needs ~")[1].split()[0])
    assert 3 < needed < 7  # the estimate for ~100 training images at 512 px, not a placeholder
    assert "hint: " in result.output and "--balance oversample" in result.output
    assert not list(out.rglob("*.keras")) if out.exists() else True  # nothing was trained


def test_a_job_that_fails_before_its_first_epoch_leaves_no_run(skinzoo, tmp_path, synth_dir,
                                                                 monkeypatch):
    from skinzoo.data import balance

    monkeypatch.setattr(balance, "_available_bytes", lambda: 2 * 2**30)
    out = tmp_path / "runs"
    result = skinzoo("train", "--data", synth_dir, "--balance", "smote", "--img-size", "512",
                     *TINY[:2], "--epochs", "1", "--out", out)
    assert result.exit_code == 6, result.output
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]


def test_memory_cache_refuses_what_would_not_fit(tmp_path, synth_dir):
    """`--cache memory` for more decoded images than memory holds: estimated before loading.
    (``--img-size`` is capped at 2048 px, so the set is made large by listing files many times.)"""
    from skinzoo.data.pipeline import make_dataset
    from skinzoo.errors import ResourceError

    try:
        with open("/proc/meminfo") as fh:
            avail = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("MemAvailable"))
    except (OSError, StopIteration):
        pytest.skip("no /proc/meminfo")
    side = 2048
    n = int(avail / (side * side * 3)) + 1  # uint8 cache > all available memory
    path = str(next((synth_dir / "images").glob("*.jpg")))
    with pytest.raises(ResourceError) as err:
        make_dataset([path] * n, [0] * n, 2, side, 8, training=False, cache="memory")
    assert f"of {side}x{side} in memory needs ~" in err.value.message
    assert "GB is available" in err.value.message
