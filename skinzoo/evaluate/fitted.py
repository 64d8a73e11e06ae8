"""What evaluation fits on a run's VALIDATION split (never test) and stores in the run: the binary
decision threshold (``RUN/threshold.json``) and the temperature of temperature scaling
(``RUN/calibration.json``).
"""

from __future__ import annotations

from skinzoo.errors import UsageError
from skinzoo.evaluate.calibration import apply_temperature, fit_temperature
from skinzoo.evaluate.predict import eval_table, predict_split, select_split
from skinzoo.fileio import write_json_atomic
from skinzoo.metrics import fit_threshold


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


def calibrate_run(loaded, data=None, tta: int = 1, batch_size: int = 32) -> dict:
    """Fit temperature scaling on the run's validation split and store ``calibration.json``."""
    if loaded.run is None:
        raise UsageError("calibration needs a run directory (its validation split and a place to "
                         "store calibration.json)", "pass the run directory, not the model file")
    table, source = eval_table(loaded, data)
    val = select_split(table, source, loaded.classes, "val")
    views, y_val, _, _ = predict_split(loaded, val, tta, batch_size)
    fitted = fit_temperature(y_val, views.mean(axis=0)) | {"tta": tta, "fitted_on": "val"}
    write_json_atomic(loaded.run.calibration, fitted)
    loaded.temperature = fitted["temperature"]
    return fitted
