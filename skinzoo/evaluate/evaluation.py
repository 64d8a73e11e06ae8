"""Evaluating a model on one split: metrics, confidence intervals, the collapse check and the
binary threshold; for a run, written to ``RUN/eval/<split>/metrics.json``
(``RUN/eval/<split>-<data>/`` for other data), which is what :mod:`skinzoo.evaluate.compare` reads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skinzoo.errors import DataError, UsageError
from skinzoo.evaluate.calibration import apply_temperature
from skinzoo.evaluate.fitted import resolve_threshold, resolve_tta
from skinzoo.evaluate.predict import dataset_name, eval_table, predict_split, select_split
from skinzoo.fileio import write_json_atomic
from skinzoo.metrics import (
    binary_metrics,
    bootstrap_ci,
    classification_metrics,
    collapse_check,
    expected_calibration_error,
    predicted_classes,
)


@dataclass
class Evaluation:
    metrics: dict
    y_true: np.ndarray
    probs: np.ndarray  # calibrated (when the run has calibration.json)
    probs_uncalibrated: np.ndarray
    paths: list[str]
    classes: list[str]
    out_dir: Path | None = None


def evaluate_model(loaded, data=None, split=None, tta: int | None = None, threshold="auto",
                   target_sensitivity: float | None = None, batch_size: int = 32,
                   n_bootstrap: int = 1000, seed: int = 0, write: bool = True) -> Evaluation:
    """Metrics of ``loaded`` (see :func:`skinzoo.evaluate.predict.resolve_model`) on one split;
    ``tta=None`` predicts with the run's views (:func:`skinzoo.evaluate.fitted.resolve_tta`)."""
    if target_sensitivity is not None and not 0 < target_sensitivity <= 1:
        raise UsageError(f"--target-sensitivity {target_sensitivity} is outside (0, 1]", "use e.g. 0.95")
    chosen_on_val = tta is None and loaded.run is not None
    tta = resolve_tta(loaded, tta, batch_size)
    table, source = eval_table(loaded, data)
    eval_set = select_split(table, source, loaded.classes, split)
    views, y, paths, errors = predict_split(loaded, eval_set, tta, batch_size)
    raw = views.mean(axis=0)
    probs = apply_temperature(raw, loaded.temperature)
    k = loaded.num_classes
    thr, how = (None, None)
    if k == 2:
        thr, how = resolve_threshold(loaded, table, source, threshold, tta, batch_size, target_sensitivity)
    metrics = classification_metrics(y, probs, loaded.classes, thr)
    metrics.update(split=eval_set.split, source=source, model=loaded.name, model_file=str(loaded.source),
                   skipped_images=sorted(errors), notes=list(loaded.notes))
    metrics["ci"] = bootstrap_ci(y, probs, n_resamples=n_bootstrap, seed=seed, threshold=thr)
    metrics["collapse_warnings"] = collapse_check(y, predicted_classes(probs, thr), k, loaded.classes)
    if k == 2:
        metrics["binary"] = binary_metrics(y, probs[:, 1], thr) | {"threshold_method": how}
    if loaded.temperature != 1.0:
        metrics["calibration"] = {"temperature": loaded.temperature,
                                  "ece_before": expected_calibration_error(y, raw),
                                  "ece_after": expected_calibration_error(y, probs)}
    if tta > 1:
        single = apply_temperature(views[0], loaded.temperature)
        base = classification_metrics(y, single, loaded.classes, thr)
        metrics["tta"] = {"views": tta, "chosen_on_val": chosen_on_val,
                          "balanced_accuracy_without": base["balanced_accuracy"],
                          "balanced_accuracy_with": metrics["balanced_accuracy"],
                          "balanced_accuracy_gain": metrics["balanced_accuracy"] - base["balanced_accuracy"],
                          "accuracy_gain": metrics["accuracy"] - base["accuracy"]}
    out_dir = None
    if write and loaded.run is not None:
        name = eval_set.split if data is None else f"{eval_set.split}-{dataset_name(data)}"
        out_dir = loaded.run.eval_dir / name
        metrics["split_digest"] = split_digest(loaded.run)
        write_json_atomic(out_dir / "metrics.json", metrics)
    return Evaluation(metrics, y, probs, raw, paths, loaded.classes, out_dir)


def split_digest(run) -> str | None:
    """A short hash of the run's split.csv (image id + split), to tell whether runs are comparable."""
    if run is None or not run.split.exists():
        return None
    from skinzoo.data.splits import read_split_table

    try:
        table = read_split_table(run.split, ("image_id", "split"))
        rows = sorted(zip(table["image_id"], table["split"], strict=True))
    except (DataError, ValueError, TypeError):  # unreadable, or empty cells: hash the bytes
        return hashlib.sha1(run.split.read_bytes()).hexdigest()[:12]
    return hashlib.sha1(json.dumps(rows).encode()).hexdigest()[:12]
