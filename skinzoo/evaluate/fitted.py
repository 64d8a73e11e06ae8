"""What evaluation fits on a run's VALIDATION split (never test) and stores in the run: the binary
decision threshold (``RUN/threshold.json``), the temperature of temperature scaling
(``RUN/calibration.json``) and the number of test-time augmentation views (``RUN/tta.json``).
"""

from __future__ import annotations

import time

from skinzoo.errors import DataError, UsageError
from skinzoo.evaluate.calibration import apply_temperature, fit_temperature
from skinzoo.evaluate.predict import TTA_VIEWS, eval_table, predict_split, select_split
from skinzoo.fileio import write_json_atomic
from skinzoo.metrics import classification_metrics, fit_threshold

# Choosing the views costs one single-view pass over validation, then all views: skipped (one
# view) when the extra passes would cost more than this many CPU-seconds (all threads; about
# two minutes of 2 idle cores), e.g. a ResNet-152 on a CPU. CPU time, not wall time, so that a
# busy machine does not change (and store) a different choice.
TTA_CHOICE_BUDGET_CPU_S = 240.0


def resolve_tta(loaded, tta: int | None = None, batch_size: int = 32) -> int:
    """The views to predict with: ``tta`` when given, else the run's choice (``tta.json``), fitted
    on the validation split on first use. A model without a run (no validation split) uses one."""
    if tta is not None:
        return int(tta)
    if loaded.tta is None:
        loaded.tta = fit_run_tta(loaded, batch_size)["tta"]
    return loaded.tta


def fit_run_tta(loaded, batch_size: int = 32, budget_cpu_s: float = TTA_CHOICE_BUDGET_CPU_S) -> dict:
    """One view or all dihedral views, whichever scores the higher validation balanced accuracy
    (a tie keeps one: it is cheaper); stored in ``RUN/tta.json`` with both scores.

    Why on validation and automatic: flips and 90° turns are label-preserving for dermoscopy and
    the average over them is usually steadier on images from other cameras (HAM10000 recipe:
    validation 0.646 -> 0.659, external melanoma recall 0.42 -> 0.46), but a model trained without
    rotations may lose; validation decides per run, never the test split.
    """
    run = loaded.run
    if run is None or not run.split.exists():
        return {"tta": 1, "reason": "no run validation split to choose on"}
    try:
        table, source = eval_table(loaded, None)
        val = select_split(table, source, loaded.classes, "val")
    except (UsageError, DataError) as err:  # e.g. the training images moved: predict one view
        loaded.notes.append(f"test-time augmentation: one view (could not read the validation split: {err})")
        return {"tta": 1, "reason": "validation split unreadable"}
    started = time.process_time()
    _, y_val, _, _ = predict_split(loaded, val, 1, batch_size)
    cpu_seconds = time.process_time() - started
    n_views = len(TTA_VIEWS) if loaded.img_size[0] == loaded.img_size[1] else 4
    fitted = {"fitted_on": "val", "n_val": int(len(y_val)), "candidates": [1, n_views]}
    if cpu_seconds * (n_views - 1) > budget_cpu_s:
        fitted.update(tta=1, reason=f"{n_views} views would cost ~{cpu_seconds * n_views / 60:.0f} "
                                    "CPU-minutes on validation; pass --tta N to use them")
    else:
        views, _, _, _ = predict_split(loaded, val, n_views, batch_size)
        scores = {n: classification_metrics(y_val, apply_temperature(views[:n].mean(axis=0), loaded.temperature),
                                            loaded.classes)["balanced_accuracy"] for n in (1, n_views)}
        fitted.update(tta=n_views if scores[n_views] > scores[1] else 1,
                      val_balanced_accuracy={str(n): v for n, v in scores.items()})
    write_json_atomic(run.tta, fitted)
    loaded.notes.append(tta_note(fitted, run.tta))
    return fitted


def tta_note(fitted: dict, path) -> str:
    scores = fitted.get("val_balanced_accuracy")
    if not scores:
        return f"test-time augmentation: 1 view ({fitted.get('reason', '')}); stored in {path}"
    one, many = scores.values()
    return (f"test-time augmentation: {fitted['tta']} view(s), chosen on validation (balanced accuracy "
            f"{one:.3f} with 1 view, {many:.3f} with {fitted['candidates'][-1]}); stored in {path}, "
            "used by evaluate and predict unless --tta N")


def fit_run_threshold(loaded, table, source, tta: int = 1, batch_size: int = 32,
                      target_sensitivity: float | None = None) -> dict:
    """Fit the binary threshold on the VALIDATION rows of ``table`` (never test) and store it.

    Only the validation rows are selected, predicted and read; the result goes to the run's
    ``threshold.json`` together with what it depends on (temperature, TTA views).
    """
    val = select_split(table, source, loaded.classes, "val")
    views, y_val, _, _ = predict_split(loaded, val, tta, batch_size)
    probs = apply_temperature(views.mean(axis=0), loaded.temperature)
    try:
        fitted = fit_threshold(y_val, probs[:, 1], target_sensitivity)
    except ValueError:
        raise UsageError("the validation split has only one class: a threshold cannot be fitted",
                         "pass --threshold VALUE, or re-split so validation holds both classes") from None
    fitted.update(temperature=loaded.temperature, tta=tta, fitted_on="val")
    if loaded.run is not None:
        write_json_atomic(loaded.run.threshold, fitted)
    loaded.threshold = fitted
    return fitted


def _stored_threshold_usable(stored, loaded, tta, target_sensitivity) -> bool:
    if not stored or "threshold" not in stored:
        return False
    want = "youden" if target_sensitivity is None else f"sensitivity>={target_sensitivity:g}"
    return (stored.get("method") == want and abs(stored.get("temperature", 1.0) - loaded.temperature) < 1e-9
            and stored.get("tta", 1) == tta)


def resolve_threshold(loaded, table, source, threshold="auto", tta=1, batch_size=32,
                      target_sensitivity=None) -> tuple[float, str]:
    """``(threshold, how it was chosen)`` for a binary model."""
    if threshold not in (None, "auto"):
        try:
            value = float(threshold)
        except ValueError:
            raise UsageError(f"--threshold {threshold!r} is not a number", "use auto or e.g. 0.3") from None
        if not 0 <= value <= 1:
            raise UsageError(f"--threshold {value} is outside 0..1", "use a probability")
        return value, "given"
    if _stored_threshold_usable(loaded.threshold, loaded, tta, target_sensitivity):
        return float(loaded.threshold["threshold"]), f"{loaded.threshold['method']} (threshold.json)"
    has_val = (table["split"].astype(str) == "val").any()
    if not has_val:
        return 0.5, "0.5 default (no validation split to fit one on)"
    fitted = fit_run_threshold(loaded, table, source, tta, batch_size, target_sensitivity)
    return fitted["threshold"], f"{fitted['method']} fitted on validation"


def calibrate_run(loaded, data=None, tta: int | None = None, batch_size: int = 32) -> dict:
    """Fit temperature scaling on the run's validation split and store ``calibration.json``."""
    if loaded.run is None:
        raise UsageError("calibration needs a run directory (its validation split and a place to "
                         "store calibration.json)", "pass the run directory, not the model file")
    tta = resolve_tta(loaded, tta, batch_size)
    table, source = eval_table(loaded, data)
    val = select_split(table, source, loaded.classes, "val")
    views, y_val, _, _ = predict_split(loaded, val, tta, batch_size)
    fitted = fit_temperature(y_val, views.mean(axis=0)) | {"tta": tta, "fitted_on": "val"}
    write_json_atomic(loaded.run.calibration, fitted)
    loaded.temperature = fitted["temperature"]
    return fitted
