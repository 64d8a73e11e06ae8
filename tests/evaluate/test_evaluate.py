"""Evaluation on run directories: threshold on validation only, calibration, reports, compare."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from skinzoo.errors import ModelError, UsageError


def _copy(run, tmp_path, name=None):
    dst = tmp_path / (name or run.name)
    shutil.copytree(run, dst)
    return dst


def test_threshold_is_fitted_on_validation_only(binary_run, tmp_path):
    from skinzoo.evaluate.fitted import fit_run_threshold
    from skinzoo.evaluate.predict import eval_table, resolve_model

    loaded = resolve_model(_copy(binary_run, tmp_path))
    table, source = eval_table(loaded)
    base = fit_run_threshold(loaded, table, source)["threshold"]
    stored = json.loads(loaded.run.threshold.read_text())
    assert stored["fitted_on"] == "val" and stored["threshold"] == base

    # test rows scrambled beyond use: labels swapped, image files that do not exist
    poisoned = table.copy()
    test = poisoned["split"] == "test"
    poisoned.loc[test, "label"] = poisoned.loc[test, "label"].map({"benign": "malignant", "malignant": "benign"})
    poisoned.loc[test, "path"] = "/nonexistent/never-read.jpg"
    assert fit_run_threshold(loaded, poisoned, source)["threshold"] == base

    # different validation labels -> a different threshold
    flipped = table.copy()
    val = flipped["split"] == "val"
    flipped.loc[val, "label"] = flipped.loc[val, "label"].map({"benign": "malignant", "malignant": "benign"})
    assert fit_run_threshold(loaded, flipped, source)["threshold"] != base


def test_evaluate_reuses_stored_threshold_and_target_sensitivity(binary_run, tmp_path):
    from skinzoo.evaluate.evaluation import evaluate_model
    from skinzoo.evaluate.predict import resolve_model

    run = _copy(binary_run, tmp_path)
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.123, "method": "youden"}))
    ev = evaluate_model(resolve_model(run), n_bootstrap=100)
    assert ev.metrics["binary"]["threshold"] == 0.123
    assert "threshold.json" in ev.metrics["binary"]["threshold_method"]
    ev = evaluate_model(resolve_model(run), target_sensitivity=1.0, n_bootstrap=100)
    assert ev.metrics["binary"]["threshold_method"].startswith("sensitivity>=1")
    assert json.loads((run / "threshold.json").read_text())["method"] == "sensitivity>=1"
    assert (run / "eval" / "test" / "metrics.json").is_file()


def test_calibration_is_stored_and_applied(multiclass_run, tmp_path):
    from skinzoo.evaluate.evaluation import evaluate_model
    from skinzoo.evaluate.fitted import calibrate_run
    from skinzoo.evaluate.predict import resolve_model

    run = _copy(multiclass_run, tmp_path)
    fitted = calibrate_run(resolve_model(run, calibrated=False))
    assert fitted["nll_after"] <= fitted["nll_before"] + 1e-9
    assert json.loads((run / "calibration.json").read_text())["temperature"] == fitted["temperature"]
    ev = evaluate_model(resolve_model(run), n_bootstrap=100)
    assert ev.metrics["calibration"]["temperature"] == pytest.approx(fitted["temperature"])
    assert not np.allclose(ev.probs, ev.probs_uncalibrated)
    assert np.array_equal(ev.probs.argmax(1), ev.probs_uncalibrated.argmax(1))


def test_report_files_decode_and_html_is_self_contained(multiclass_run, tmp_path):
    import matplotlib.image as mpimg

    from skinzoo.evaluate.evaluation import evaluate_model
    from skinzoo.evaluate.gallery import write_evaluation_report
    from skinzoo.evaluate.predict import resolve_model

    loaded = resolve_model(_copy(multiclass_run, tmp_path))
    ev = evaluate_model(loaded, tta=2, n_bootstrap=200)
    page = write_evaluation_report(loaded, ev, tmp_path / "report", gallery_per_class=1)
    out = page.parent
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == ev.metrics["n"] and "ci" in metrics and "tta" in metrics
    assert "precision" in (out / "classification_report.txt").read_text()
    pngs = ["confusion_counts.png", "confusion_normalised.png", "roc.png", "reliability.png",
            "training_curves.png"]
    galleries = sorted(p.name for p in out.glob("gallery_*.png"))
    assert galleries
    for name in pngs + galleries:
        img = mpimg.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 50
    text = page.read_text()
    assert text.count("data:image/png;base64,") == len(pngs) + len(galleries)
    assert not re.search(r"(src|href)\s*=\s*['\"](?!data:)", text, re.I)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert ev.metrics["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"])
    if ev.metrics["collapse_warnings"]:
        assert "class='banner'" in text


def test_model_file_with_data_and_classes(multiclass_run, synth_dir, tmp_path):
    from skinzoo.evaluate.evaluation import evaluate_model
    from skinzoo.evaluate.predict import resolve_model

    model = tmp_path / "mine.keras"
    shutil.copy(multiclass_run / "best.keras", model)
    classes = json.loads((multiclass_run / "classes.json").read_text())["classes"]
    loaded = resolve_model(model, classes=",".join(classes))
    ev = evaluate_model(loaded, data=synth_dir, n_bootstrap=50)
    assert ev.metrics["split"] == "all" and ev.metrics["n"] == 140 and ev.out_dir is None
    with pytest.raises(UsageError, match="3 class names"):
        resolve_model(model, classes="a,b,c")


def test_bad_model_files_are_model_errors(tmp_path):
    from skinzoo.models.files import load_model_file
    from skinzoo.runtime import tf

    tf()
    import keras

    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(ModelError, match="cannot load"):
        load_model_file(junk)
    inp = keras.Input((8, 8, 3))
    lam = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(inp))
    lam.save(tmp_path / "lam.keras")
    with pytest.raises(ModelError, match="Lambda") as err:
        load_model_file(tmp_path / "lam.keras")
    assert "--unsafe" in err.value.hint
    assert load_model_file(tmp_path / "lam.keras", unsafe=True) is not None


def test_compare_sorts_and_warns_on_different_splits(multiclass_run, run_factory, tmp_path):
    from skinzoo.evaluate.compare import compare_runs
    from skinzoo.evaluate.evaluation import evaluate_model
    from skinzoo.evaluate.predict import resolve_model

    a = _copy(multiclass_run, tmp_path, "run-a")
    b = run_factory(tmp_path, "multiclass", epochs=1, seed=1, name="run-b")
    for run in (a, b):
        evaluate_model(resolve_model(run), n_bootstrap=50)
    rows, warnings = compare_runs([a, b])
    assert [r["balanced_accuracy"] for r in rows] == sorted((r["balanced_accuracy"] for r in rows), reverse=True)
    assert any("DIFFERENT splits" in w for w in warnings)
    rows, warnings = compare_runs([a, _copy(a, tmp_path, "run-c"), tmp_path / "missing"])
    assert len(rows) == 2 and not any("DIFFERENT" in w for w in warnings)
    assert any("skipped" in w for w in warnings)


# --- test-time augmentation chosen on validation (RUN/tta.json) ---------------------------------

def test_tta_auto_is_chosen_on_validation_and_stored(multiclass_run, tmp_path):
    from skinzoo.evaluate.evaluation import evaluate_model
    from skinzoo.evaluate.predict import eval_table, predict_split, resolve_model, select_split
    from skinzoo.metrics import classification_metrics

    run = _copy(multiclass_run, tmp_path)
    (run / "tta.json").unlink(missing_ok=True)  # the shared run may have been evaluated already
    loaded = resolve_model(run)
    assert loaded.tta is None  # nothing fitted yet
    ev = evaluate_model(loaded, n_bootstrap=50)  # tta=None: the run's choice, fitted now
    stored = json.loads(loaded.run.tta.read_text())
    assert stored["fitted_on"] == "val" and stored["candidates"] == [1, 8]
    # the stored scores are the validation split's, and the choice follows them
    table, source = eval_table(loaded)
    val = select_split(table, source, loaded.classes, "val")
    views, y, _, _ = predict_split(loaded, val, 8, 32)
    for n in (1, 8):
        expected = classification_metrics(y, views[:n].mean(axis=0), loaded.classes)["balanced_accuracy"]
        assert stored["val_balanced_accuracy"][str(n)] == pytest.approx(expected, abs=1e-9)
    scores = stored["val_balanced_accuracy"]
    assert stored["tta"] == (8 if scores["8"] > scores["1"] else 1)
    # evaluation used the chosen views: same numbers as asking for them explicitly
    explicit = evaluate_model(resolve_model(loaded.run.path), tta=stored["tta"], n_bootstrap=50, write=False)
    assert ev.probs == pytest.approx(explicit.probs, abs=1e-6)
    # a later load reads the stored choice instead of fitting again
    assert resolve_model(loaded.run.path).tta == stored["tta"]


def test_tta_explicit_value_wins_and_bare_models_use_one_view(multiclass_run, tmp_path):
    from skinzoo.evaluate.fitted import resolve_tta
    from skinzoo.evaluate.predict import resolve_model

    run = _copy(multiclass_run, tmp_path)
    (run / "tta.json").unlink(missing_ok=True)
    loaded = resolve_model(run)
    assert resolve_tta(loaded, 2) == 2 and not loaded.run.tta.exists()
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "best.keras", bare / "model.keras")
    loaded = resolve_model(bare / "model.keras", classes=resolve_model(run).classes)
    assert resolve_tta(loaded) == 1


def test_tta_choice_skipped_when_too_slow(multiclass_run, tmp_path):
    from skinzoo.evaluate.fitted import fit_run_tta
    from skinzoo.evaluate.predict import resolve_model

    loaded = resolve_model(_copy(multiclass_run, tmp_path))
    fitted = fit_run_tta(loaded, budget_cpu_s=0.0)
    assert fitted["tta"] == 1 and "would cost" in fitted["reason"]
    assert "val_balanced_accuracy" not in fitted
    assert any("1 view" in note for note in loaded.notes)


@pytest.mark.parametrize("content", ["{", '{"tta": 9}', '{"tta": "8"}', "[8]"])
def test_damaged_tta_file_is_named(multiclass_run, tmp_path, content):
    from skinzoo.evaluate.predict import resolve_model

    run = _copy(multiclass_run, tmp_path)
    (run / "tta.json").write_text(content)
    with pytest.raises(UsageError) as err:
        resolve_model(run)
    assert "tta.json" in str(err.value) and "delete" in err.value.hint
