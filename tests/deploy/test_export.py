"""`skinzoo export`: every format verified against the Keras model, reloaded in a fresh process,
the bytes signature fed real JPEG and PNG files, and the refusals (test-split calibration,
foreign --out, an export that fails its check)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skinzoo.errors import ModelError, UsageError

from .conftest import HAVE_ONNX, tiny_model


def _split_paths(run, side):
    import pandas as pd

    table = pd.read_csv(run / "split.csv", dtype=str)
    return table.loc[table["split"] == side, "path"].tolist()


def test_every_export_passes_its_stated_tolerance(exports):
    from skinzoo.evaluate.exported import info_path

    expected = {("savedmodel", "float32"), ("tflite", "float32"), ("tflite", "float16"),
                ("tflite", "int8")} | ({("onnx", "float32")} if HAVE_ONNX else set())
    assert set(exports) == expected
    for (fmt, precision), result in exports.items():
        v = result.verification
        assert v["passed"] and v["images"] > 10 and v["images_from"].startswith("validation split")
        for check in v["checks"]:
            if precision == "float32":
                assert check["max_abs_diff"] <= 1e-4 and check["top1_agreement"] == 1.0, check
            elif precision == "float16":
                assert check["max_abs_diff"] <= 1e-2, check
            else:
                assert check["top1_agreement"] >= 0.9, check
        info = json.loads(info_path(result.path).read_text())
        assert info["format"] == fmt and info["precision"] == precision
        assert info["verification"]["passed"] and info["classes"][0] == "akiec"
        assert result.size_bytes > 1000
    # the SavedModel is checked on both signatures; int8 is smaller than float32
    assert len(exports[("savedmodel", "float32")].verification["checks"]) == 2
    assert exports[("tflite", "int8")].size_bytes < exports[("tflite", "float32")].size_bytes


@pytest.mark.slow
def test_exports_reloaded_in_a_fresh_process_match_keras(exports, deploy_run, tmp_path):
    from skinzoo.evaluate.predict import predict_files, resolve_model

    images = _split_paths(deploy_run, "test")[:12]
    keras_probs = np.stack([r.probs for r in predict_files(resolve_model(deploy_run), images)])
    script = ("import json, sys\n"
              "from skinzoo.evaluate.predict import predict_files, resolve_model\n"
              "paths, images = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
              "print(json.dumps({p: [r.probs.tolist() for r in predict_files(resolve_model(p), images)]"
              " for p in paths}))\n")
    paths = {str(r.path): key for key, r in exports.items()}
    out = subprocess.run([sys.executable, "-c", script, json.dumps(list(paths)), json.dumps(images)],
                         capture_output=True, text=True, timeout=240,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    for path, probs in got.items():
        fmt, precision = paths[path]
        probs = np.asarray(probs)
        assert probs.shape == keras_probs.shape
        diff = np.abs(probs - keras_probs).max()
        if precision == "int8":
            assert diff < 0.1, (fmt, diff)
        else:
            assert diff <= (1e-2 if precision == "float16" else 1e-4), (fmt, diff)
            assert (probs.argmax(1) == keras_probs.argmax(1)).all(), fmt


def test_bytes_signature_takes_jpeg_and_png_files(exports, deploy_run, tmp_path):
    from PIL import Image

    from skinzoo.evaluate.exported import SavedModelRunner
    from skinzoo.evaluate.predict import predict_files, resolve_model

    jpeg = Path(_split_paths(deploy_run, "val")[0])
    png = tmp_path / "lesion.png"
    Image.open(jpeg).convert("RGB").resize((45, 37)).save(png)  # another size and aspect ratio
    runner = SavedModelRunner(exports[("savedmodel", "float32")].path)
    out = runner.predict_bytes([jpeg.read_bytes(), png.read_bytes()])
    loaded = resolve_model(deploy_run)
    keras_probs = np.stack([r.probs for r in predict_files(loaded, [str(jpeg), str(png)])])
    assert np.abs(out["probabilities"] - keras_probs).max() <= 1e-4
    names = [c.decode() for c in out["predicted_class"]]
    assert names == [loaded.classes[i] for i in keras_probs.argmax(1)]
    assert [c.decode() for c in out["class_names"][1]] == loaded.classes


def test_int8_calibration_uses_training_images_and_refuses_test_ones(deploy_run):
    from skinzoo.deploy.export import calibration_image_paths
    from skinzoo.evaluate.predict import LoadedModel, resolve_model

    loaded = resolve_model(deploy_run)
    paths, where = calibration_image_paths(loaded, count=500)
    assert set(paths) == set(_split_paths(deploy_run, "train")) and where.startswith("training split")
    test_images = _split_paths(deploy_run, "test")[:2]
    with pytest.raises(UsageError, match="test split"):
        calibration_image_paths(loaded, given=[*_split_paths(deploy_run, "train")[:3], *test_images])
    bare = LoadedModel(loaded.model, loaded.classes, loaded.img_size)  # no run: no split known
    with pytest.raises(UsageError, match="no run split.csv"):
        calibration_image_paths(bare)


def test_failed_check_keeps_the_previous_export(exports, deploy_run, monkeypatch):
    from skinzoo.deploy import verify
    from skinzoo.deploy.export import export_model
    from skinzoo.evaluate.predict import resolve_model

    previous = exports[("tflite", "float16")].path
    before = previous.read_bytes()
    monkeypatch.setitem(verify.TOLERANCES, "float16", verify.Tolerance(-1.0, None, "impossible"))
    with pytest.raises(ModelError, match="disagrees with the Keras model") as err:
        export_model(resolve_model(deploy_run), "tflite", previous, "float16", check_count=4)
    assert "nothing was written" in err.value.message
    assert previous.read_bytes() == before
    assert not [p for p in previous.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_refuses_to_overwrite_a_file_that_is_not_an_export(deploy_run, tmp_path):
    from skinzoo.deploy.export import export_model
    from skinzoo.evaluate.predict import resolve_model

    precious = tmp_path / "notes.tflite"
    precious.write_text("my notes")
    with pytest.raises(UsageError, match="not an earlier skinzoo tflite export"):
        export_model(resolve_model(deploy_run), "tflite", precious)
    assert precious.read_text() == "my notes"
    with pytest.raises(UsageError, match="must end in .onnx"):
        export_model(resolve_model(deploy_run), "onnx", tmp_path / "model.bin")
    with pytest.raises(UsageError, match="applies to --format tflite only"):
        export_model(resolve_model(deploy_run), "onnx", tmp_path / "m.onnx", "int8")


@pytest.mark.slow
def test_two_input_model_exports_with_named_inputs(synth_dir, tmp_path):
    from skinzoo.runtime import tf

    tf()
    import keras

    from skinzoo.deploy.export import export_model
    from skinzoo.evaluate.exported import SavedModelRunner
    from skinzoo.evaluate.predict import predict_files, resolve_model

    model = tiny_model(keras, 3, meta_width=4)
    model.save(tmp_path / "meta.keras")
    loaded = resolve_model(tmp_path / "meta.keras", classes="a,b,c")
    images = sorted(str(p) for p in (synth_dir / "images").glob("*.jpg"))[:6]
    formats = ["savedmodel", "tflite"] + (["onnx"] if HAVE_ONNX else [])
    for fmt in formats:
        out = tmp_path / {"savedmodel": "meta-sm", "tflite": "meta.tflite", "onnx": "meta.onnx"}[fmt]
        result = export_model(loaded, fmt, out, check_images=images)
        assert result.verification["passed"] and result.info["inputs"]["meta"] == [
            {"name": "metadata", "shape": [4]}]
        meta = {"metadata": [0.2, 1.0, 0.0, 0.5]}
        exported = predict_files(resolve_model(result.path), images, meta=meta)
        reference = predict_files(loaded, images, meta=meta)
        assert np.abs(np.stack([r.probs for r in exported]) - np.stack([r.probs for r in reference])).max() < 1e-4
    sm = SavedModelRunner(tmp_path / "meta-sm")
    out = sm.predict_bytes([Path(images[0]).read_bytes()], {"metadata": np.ones((1, 4), np.float32)})
    assert out["probabilities"].shape == (1, 3)


def test_missing_optional_package_is_one_clear_line():
    from skinzoo.evaluate.exported import import_optional

    with pytest.raises(UsageError, match="not installed") as err:
        import_optional("skinzoo_no_such_package", "--format onnx")
    assert "skinzoo[export]" in err.value.hint


@pytest.mark.slow
def test_export_and_predict_commands(deploy_run, tmp_path):
    from click.testing import CliRunner
    from skinzoo_cli.main import cli

    out = tmp_path / "phone" / "model.tflite"
    result = CliRunner().invoke(cli, ["export", str(deploy_run), "--format", "tflite",
                                      "--precision", "float16", "--out", str(out), "--check-count", "8"])
    assert result.exit_code == 0, result.output
    assert "verified against the Keras model on 8 images" in result.output
    assert "max |dp|" in result.output and "[ok: max |dp| <= 0.01]" in result.output
    card = json.loads((out.parent / "model.tflite.model_card.json").read_text())
    assert "NOT a diagnostic device" in card["intended_use"]["out_of_scope"]
    assert card["export"]["verification"]["passed"]
    assert "Not a diagnostic device" in (out.parent / "model.tflite.MODEL_CARD.md").read_text()
    image = _split_paths(deploy_run, "test")[0]
    result = CliRunner().invoke(cli, ["predict", image, "--model", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert abs(sum(row["probs"].values()) - 1) < 1e-3 and row["prediction"] in row["probs"]
    result = CliRunner().invoke(cli, ["gradcam", image, "--model", str(out), "--out", str(tmp_path / "g")])
    assert result.exit_code == 2 and "needs the Keras model" in result.output
    result = CliRunner().invoke(cli, ["export", str(deploy_run), "--format", "tflite",
                                      "--check-count", "0"])
    assert result.exit_code == 2 and "--check-count" in result.output
