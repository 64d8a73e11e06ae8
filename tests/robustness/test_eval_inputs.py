"""evaluate / predict / gradcam / calibrate / compare on bad images, files that are not models,
folders that are not runs and runs with damaged files: one error line each, the rest still done.

The run is a real `skinzoo train` run over a messy dataset (see conftest.messy_run)."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from badinputs import (
    BAD_IMAGES,
    CONVERTED_IMAGES,
    write_good_jpeg,
    write_good_png,
    write_nonascii_name,
)

from .conftest import error_lines

pytestmark = pytest.mark.slow  # every test here uses the trained messy run

# What the per-file error line says for each kind of unusable image.
KIND_WORDS = {
    "zero_byte": "empty file", "truncated": "truncated", "not_image": "is not an image",
    "too_small": "1x1 pixels", "too_large": "megapixels", "symlink_loop": "symlink loop",
    "missing": "broken symlink", "unsupported": ("pipeline cannot decode", "decodes as gray"),
    "unreadable": "permission denied", "not_regular": "not a regular file",
    "extreme_aspect": "more than 10:1",
}


def _suffix(writer) -> str:
    return Path(inspect.signature(writer).parameters["name"].default).suffix


def image_corpus(folder: Path):
    """Every bad and convertible image kind plus plain good ones: ``(good paths, {bad path: kind})``."""
    good = [write_good_jpeg(folder, "good.jpg"), write_good_png(folder, "good png.png", seed=3),
            write_nonascii_name(folder)]
    good += [writer(folder, name=f"conv_{name}{_suffix(writer)}")
             for name, (writer, _) in CONVERTED_IMAGES.items()]
    bad = {writer(folder, name=f"bad_{name}{_suffix(writer)}"): kind
           for name, (writer, kind) in BAD_IMAGES.items()}
    return [str(p) for p in good], {str(p): k for p, k in bad.items()}


def check_error_lines(output: str, bad: dict):
    lines = error_lines(output)
    assert len(lines) == len(bad), lines
    for path, kind in bad.items():
        (line,) = [ln for ln in lines if ln.startswith(f"error: {path}: ")]
        words = KIND_WORDS[kind]
        assert any(w in line for w in ((words,) if isinstance(words, str) else words)), line


@pytest.fixture
def run_copy(messy_run, tmp_path):
    """A private copy of the trained run that a test may damage."""
    dst = tmp_path / "run"
    shutil.copytree(messy_run[1], dst)
    return dst


# --- bad images -------------------------------------------------------------------------------

def test_predict_lists_each_bad_image_and_predicts_the_rest(skinzoo, messy_run, tmp_path):
    good, bad = image_corpus(tmp_path / "imgs")
    result = skinzoo("predict", *good, *bad, "--model", messy_run[1], "--format", "json")
    assert result.exit_code == 0, result.output
    check_error_lines(result.output, bad)
    rows = json.loads(result.stdout)
    predicted = {r["path"]: r for r in rows if "probs" in r}
    assert sorted(predicted) == sorted(good)
    for r in predicted.values():
        assert abs(sum(r["probs"].values()) - 1) < 1e-4 and r["prediction"] in r["probs"]
    assert {r["path"] for r in rows if "error" in r} == set(bad)
    assert f"{len(good)} predicted, {len(bad)} failed" in result.output


def test_gradcam_on_a_folder_with_every_bad_kind(skinzoo, messy_run, tmp_path):
    good, bad = image_corpus(tmp_path / "imgs")
    out = tmp_path / "cams"
    result = skinzoo("gradcam", tmp_path / "imgs", "--model", messy_run[1], "--out", out)
    assert result.exit_code == 0, result.output
    check_error_lines(result.output, bad)
    overlays = sorted(out.glob("*_gradcam.png"))
    heatmaps = sorted(out.glob("*_heatmap.npy"))
    assert len(overlays) == len(heatmaps) == len(good)
    for h in heatmaps:
        assert np.isfinite(np.load(h, allow_pickle=False)).all()
    assert f"wrote {len(good)} overlay(s)" in result.output


@pytest.mark.parametrize("command", ["predict", "gradcam"])
def test_nothing_readable_is_exit_3(skinzoo, messy_run, tmp_path, command):
    _, bad = image_corpus(tmp_path / "imgs")
    extra = ["--out", tmp_path / "cams"] if command == "gradcam" else []
    result = skinzoo(command, *bad, tmp_path / "no such.jpg", "--model", messy_run[1], *extra)
    assert result.exit_code == 3, result.output
    assert "no such file" in result.output
    assert error_lines(result.output)[-1].startswith("error: no image could be")
    assert not (tmp_path / "cams").exists() or not any((tmp_path / "cams").iterdir())


def test_evaluate_skips_test_images_that_went_bad_since_training(skinzoo, run_copy, tmp_path):
    split = pd.read_csv(run_copy / "split.csv", dtype=str)
    test_rows = split.index[split["split"] == "test"][:2]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 cut")
    split.loc[test_rows[0], "path"] = str(broken)
    split.loc[test_rows[1], "path"] = str(tmp_path / "gone.jpg")
    split.to_csv(run_copy / "split.csv", index=False)
    result = skinzoo("evaluate", run_copy, "--bootstrap", "20")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run_copy / "eval" / "test" / "metrics.json").read_text())
    assert metrics["n"] == (split["split"] == "test").sum() - 2
    assert sorted(metrics["skipped_images"]) == sorted([str(broken), str(tmp_path / "gone.jpg")])


# --- files that are not models, folders that are not runs --------------------------------------

def _zip_with_junk_config(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", "{not json")
    return path


NOT_MODELS = {
    "text.keras": lambda p: p.write_text("my model, see attached") and p,
    "empty.keras": lambda p: p.write_bytes(b"") or p,
    "junk-config.keras": _zip_with_junk_config,
    "photo.keras": lambda p: write_good_jpeg(p.parent, p.name),
    "weights.h5": lambda p: p.write_text("not hdf5") and p,
    "model.pkl": lambda p: p.write_bytes(b"\x80\x04\x95") and p,
}


@pytest.mark.parametrize("command", ["predict", "gradcam", "evaluate"])
@pytest.mark.parametrize("name", sorted(NOT_MODELS))
def test_a_file_that_is_not_a_model(skinzoo, messy_run, tmp_path, command, name):
    model = NOT_MODELS[name](tmp_path / name)
    image = messy_run[0].root / "images" / f"{sorted(messy_run[0].converted)[0]}.jpg"
    args = {"predict": ["predict", image, "--model", model],
            "gradcam": ["gradcam", image, "--model", model, "--out", tmp_path / "cams"],
            "evaluate": ["evaluate", model, "--data", messy_run[0].root, "--classes", "a,b"]}[command]
    result = skinzoo(*args)
    assert result.exit_code == 4, result.output
    (line,) = error_lines(result.output)
    assert str(model) in line and ("cannot load" in line or "not a Keras model file" in line), line
    assert "  hint: " in result.output


def run_command_args(command, run, tmp_path):
    """Arguments that make ``command`` open ``run`` as a run directory (on one good image)."""
    image = write_good_jpeg(tmp_path, "x.jpg")
    return {"evaluate": ["evaluate", run], "calibrate": ["calibrate", run],
            "predict": ["predict", image, "--model", run],
            "gradcam": ["gradcam", image, "--model", run, "--out", tmp_path / "c"]}[command]


@pytest.mark.parametrize("folder", ["images", "empty", "named.keras"])
@pytest.mark.parametrize("command", ["evaluate", "predict", "gradcam", "calibrate"])
def test_a_folder_that_is_not_a_run(skinzoo, messy_run, tmp_path, command, folder):
    target = messy_run[0].root / "images" if folder == "images" else tmp_path / folder
    target.mkdir(exist_ok=True)
    result = skinzoo(*run_command_args(command, target, tmp_path))
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result.output)
    assert f"{target} is not a skinzoo run directory" in line


@pytest.mark.parametrize("command", ["evaluate", "predict", "gradcam", "calibrate"])
def test_a_run_whose_best_keras_was_deleted(skinzoo, run_copy, tmp_path, command):
    (run_copy / "best.keras").unlink()
    result = skinzoo(*run_command_args(command, run_copy, tmp_path))
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result.output)
    assert "has no trained model yet" in line
    assert f"skinzoo train --resume {run_copy}" in result.output


def test_a_run_whose_best_keras_is_damaged(skinzoo, run_copy, tmp_path):
    data = (run_copy / "best.keras").read_bytes()
    (run_copy / "best.keras").write_bytes(data[: len(data) // 2])  # a copy cut short
    result = skinzoo("predict", write_good_jpeg(tmp_path, "x.jpg"), "--model", run_copy)
    assert result.exit_code == 4, result.output
    assert f"cannot load {run_copy / 'best.keras'}" in error_lines(result.output)[0]


DAMAGED = {
    # name: (file, content, words in the error line)
    "classes_not_json": ("classes.json", "{'classes': ['a']", "is not valid JSON"),
    "classes_binary": ("classes.json", b"\xff\xfe\x00\x80", "is not a text"),
    "classes_a_list": ("classes.json", '["akiec", "bcc"]', "is not a JSON object"),
    "classes_a_string": ("classes.json", '{"classes": "akiec"}', '"classes" must be a list'),
    "classes_numbers": ("classes.json", '{"classes": [1, 2, 3, 4, 5, 6, 7]}',
                        '"classes" must be a list'),
    "classes_too_few": ("classes.json", '{"classes": ["a", "b"]}', "2 class names (a, b) for a "
                        "model with 7 classes"),
    "img_size_text": ("classes.json", '{"classes": ["a","b","c","d","e","f","g"], "img_size": '
                      '"big"}', '"img_size" must be a positive integer'),
    "classes_a_folder": ("classes.json", None, "cannot read"),
    "temperature_text": ("calibration.json", '{"temperature": "hot"}', '"temperature" must be a '
                         "positive number"),
    "temperature_negative": ("calibration.json", '{"temperature": -1.5}', '"temperature" must be'),
    "calibration_truncated": ("calibration.json", '{"temperature": 1.', "is not valid JSON"),
    "threshold_a_list": ("threshold.json", "[0.5]", '"threshold" must be a number in 0..1'),
    "threshold_too_big": ("threshold.json", '{"threshold": 7}', '"threshold" must be a number'),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_run_files_are_named_in_one_line(skinzoo, run_copy, tmp_path, name):
    filename, content, words = DAMAGED[name]
    target = run_copy / filename
    target.unlink(missing_ok=True)
    if content is None:
        target.mkdir()
    elif isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)
    image = write_good_jpeg(tmp_path, "x.jpg")
    for args in (["predict", image, "--model", run_copy], ["evaluate", run_copy]):
        result = skinzoo(*args)
        assert result.exit_code == 2, result.output
        (line,) = error_lines(result.output)
        assert words in line and (filename in line or "class names" in line), line
        assert "  hint: " in result.output


def test_evaluate_a_path_that_does_not_exist(skinzoo, messy_run, tmp_path):
    result = skinzoo("evaluate", tmp_path / "runs" / "nope")
    assert result.exit_code == 2 and f"{tmp_path / 'runs' / 'nope'} does not exist" in result.output
    result = skinzoo("evaluate", messy_run[1], "--data", tmp_path / "no data")
    assert result.exit_code == 3 and "does not exist" in error_lines(result.output)[0]
    result = skinzoo("predict", write_good_jpeg(tmp_path, "x.jpg"), "--model", tmp_path / "m.keras")
    assert result.exit_code == 2 and "m.keras does not exist" in result.output


def test_compare_skips_damaged_evaluations(skinzoo, run_copy, tmp_path):
    ok = tmp_path / "ok"
    shutil.copytree(run_copy, ok)
    (ok / "eval" / "test").mkdir(parents=True)
    (ok / "eval" / "test" / "metrics.json").write_text(json.dumps(
        {"n": 20, "accuracy": 0.5, "balanced_accuracy": 0.4, "ci": {"balanced_accuracy": [0.3, 0.5]}}))
    bad_json, bad_shape, bad_values = (tmp_path / n for n in ("bad_json", "bad_shape", "bad_values"))
    for run, text in ((bad_json, "{"), (bad_shape, "[1, 2]"),
                      (bad_values, '{"balanced_accuracy": "high", "ci": {"balanced_accuracy": 3}}')):
        shutil.copytree(run_copy, run)
        (run / "eval" / "test").mkdir(parents=True)
        (run / "eval" / "test" / "metrics.json").write_text(text)
    (bad_values / "classes.json").write_text("{")
    result = skinzoo("compare", ok, bad_json, bad_shape, bad_values, "--markdown")
    assert result.exit_code == 0, result.output
    assert "bad_json/eval/test/metrics.json is not valid JSON (skipped)" in result.output
    assert "does not hold a metrics object (skipped)" in result.output
    table = [ln for ln in result.stdout.splitlines() if ln.startswith("| ")]
    assert len(table) == 3 and table[1].startswith("| ok | simple_cnn | 20 |")
    assert table[2].startswith("| bad_values |  |  |")  # unreadable values left blank
    result = skinzoo("compare", bad_json, bad_shape)
    assert result.exit_code == 2 and "none of the runs has a test evaluation" in result.output


def test_report_folder_that_cannot_be_created(skinzoo, run_copy, tmp_path):
    in_the_way = tmp_path / "report"
    in_the_way.write_text("an existing file")
    result = skinzoo("evaluate", run_copy, "--report", in_the_way, "--bootstrap", "10")
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result.output)
    assert f"cannot create the report folder {in_the_way}" in line
    assert (run_copy / "eval" / "test" / "metrics.json").is_file()  # the metrics were kept
