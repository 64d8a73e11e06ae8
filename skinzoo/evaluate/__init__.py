"""Evaluation, calibration, comparison and explanation of trained models.

The pieces (pure metric functions, Grad-CAM, plots) live in their own modules; this module
wires them to run directories:

- ``evaluate_model``: metrics (+ CIs, collapse check, binary threshold) on a split; for a run,
  writes them to ``RUN/eval/<split>/metrics.json`` (``RUN/eval/<split>-<data>/`` for other data),
  which is what ``compare_runs`` reads.
- ``fit_run_threshold``: the binary decision threshold, fitted on the VALIDATION split only and
  stored in ``RUN/threshold.json``.
- ``calibrate_run``: temperature scaling on the validation split, stored in ``calibration.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skinzoo.errors import UsageError

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    metrics: dict
    y_true: np.ndarray
    probs: np.ndarray  # calibrated (when the run has calibration.json)
    probs_uncalibrated: np.ndarray
    paths: list[str]
    classes: list[str]
    out_dir: Path | None = None


def _predict_set(loaded, eval_set, tta, batch_size):
    from skinzoo.evaluate.predict import predict_paths

    views, ok, errors = predict_paths(loaded, eval_set.paths, batch_size, tta)
    keep = np.isin(np.asarray(eval_set.paths), ok)
    for path, message in errors.items():
        log.warning("warning: skipped %s: %s", path, message)
    if not ok:
        raise UsageError(f"none of the {len(eval_set.paths)} images of the {eval_set.split} split "
                         "could be read", "run `skinzoo data check` on the dataset")
    return views, eval_set.labels[keep], ok, errors


def fit_run_threshold(loaded, table, source, tta: int = 1, batch_size: int = 32,
                      target_sensitivity: float | None = None) -> dict:
    """Fit the binary threshold on the VALIDATION rows of ``table`` (never test) and store it.

    Only the validation rows are selected, predicted and read; the result goes to the run's
    ``threshold.json`` together with what it depends on (temperature, TTA views).
    """
    from skinzoo.evaluate.calibration import apply_temperature
    from skinzoo.evaluate.metrics import fit_threshold
    from skinzoo.evaluate.predict import select_split
    from skinzoo.fileio import write_json_atomic

    val = select_split(table, source, loaded.classes, "val")
    views, y_val, _, _ = _predict_set(loaded, val, tta, batch_size)
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


def evaluate_model(loaded, data=None, split=None, tta: int = 1, threshold="auto",
                   target_sensitivity: float | None = None, batch_size: int = 32,
                   n_bootstrap: int = 1000, seed: int = 0, write: bool = True) -> Evaluation:
    """Metrics of ``loaded`` (see :func:`skinzoo.evaluate.predict.resolve_model`) on one split."""
    from skinzoo.evaluate.calibration import apply_temperature
    from skinzoo.evaluate.metrics import (
        binary_metrics,
        bootstrap_ci,
        classification_metrics,
        collapse_check,
        expected_calibration_error,
        predicted_classes,
    )
    from skinzoo.evaluate.predict import dataset_name, eval_table, select_split
    from skinzoo.fileio import write_json_atomic

    if target_sensitivity is not None and not 0 < target_sensitivity <= 1:
        raise UsageError(f"--target-sensitivity {target_sensitivity} is outside (0, 1]", "use e.g. 0.95")
    table, source = eval_table(loaded, data)
    eval_set = select_split(table, source, loaded.classes, split)
    views, y, paths, errors = _predict_set(loaded, eval_set, tta, batch_size)
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
        metrics["tta"] = {"views": tta,
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
    import pandas as pd

    try:
        table = pd.read_csv(run.split, dtype=str)
        rows = sorted(zip(table["image_id"], table["split"], strict=True))
    except (OSError, ValueError, KeyError):
        return hashlib.sha1(run.split.read_bytes()).hexdigest()[:12]
    return hashlib.sha1(json.dumps(rows).encode()).hexdigest()[:12]


# --- report with gallery -------------------------------------------------------------------------


def build_gallery(loaded, evaluation: Evaluation, per_class: int = 3, alpha: float = 0.4,
                  threshold: float | None = None) -> dict:
    """``{class: [items]}``: up to ``per_class`` correct and ``per_class`` wrong images of each true
    class (most confident first), each with its Grad-CAM overlay for the predicted class."""
    from skinzoo.data.pipeline import load_images
    from skinzoo.evaluate.gradcam import GradCam, overlay, upsample
    from skinzoo.evaluate.metrics import predicted_classes
    from skinzoo.evaluate.predict import model_inputs

    y, probs = evaluation.y_true, evaluation.probs
    pred = predicted_classes(probs, threshold)
    conf = probs[np.arange(len(pred)), pred]
    chosen = []
    for c in range(len(evaluation.classes)):
        for correct in (True, False):
            idx = np.flatnonzero((y == c) & ((pred == y) == correct))
            chosen.extend(idx[np.argsort(-conf[idx], kind="stable")][:per_class].tolist())
    if not chosen:
        return {}
    images = load_images([evaluation.paths[i] for i in chosen], loaded.img_size, resize=loaded.resize)
    try:
        cam = GradCam(loaded.model)
        result = cam.explain(model_inputs(loaded.model, images, warn=False), pred[chosen])
        overlays = [overlay(img, upsample(h, img.shape[:2]), alpha)
                    for img, h in zip(images, result.heatmaps, strict=True)]
    except Exception as err:  # noqa: BLE001 - a model Grad-CAM cannot trace still gets its report
        log.warning("warning: no Grad-CAM overlays in the gallery: %s", getattr(err, "message", err))
        overlays = [None] * len(chosen)
    gallery = {}
    for i, img, ov in zip(chosen, images, overlays, strict=True):
        gallery.setdefault(evaluation.classes[y[i]], []).append(
            {"image": img, "overlay": ov, "true": int(y[i]), "pred": int(pred[i]),
             "prob": float(conf[i]), "name": Path(evaluation.paths[i]).name})
    return gallery


def write_evaluation_report(loaded, evaluation: Evaluation, out_dir, gallery_per_class: int = 3) -> Path:
    from skinzoo.evaluate.report import write_report

    thr = (evaluation.metrics.get("binary") or {}).get("threshold")
    gallery = build_gallery(loaded, evaluation, gallery_per_class, threshold=thr) \
        if gallery_per_class > 0 else None
    history = loaded.run.history if loaded.run is not None else None
    uncal = evaluation.probs_uncalibrated if loaded.temperature != 1.0 else None
    return write_report(out_dir, evaluation.metrics, evaluation.y_true, evaluation.probs,
                        evaluation.classes, history_csv=history, gallery=gallery,
                        probs_uncalibrated=uncal,
                        title=f"{loaded.name}: {evaluation.metrics['split']} split")


# --- calibration -------------------------------------------------------------------------------


def calibrate_run(loaded, data=None, tta: int = 1, batch_size: int = 32) -> dict:
    """Fit temperature scaling on the run's validation split and store ``calibration.json``."""
    from skinzoo.evaluate.calibration import fit_temperature
    from skinzoo.evaluate.predict import eval_table, select_split
    from skinzoo.fileio import write_json_atomic

    if loaded.run is None:
        raise UsageError("calibration needs a run directory (its validation split and a place to "
                         "store calibration.json)", "pass the run directory, not the model file")
    table, source = eval_table(loaded, data)
    val = select_split(table, source, loaded.classes, "val")
    views, y_val, _, _ = _predict_set(loaded, val, tta, batch_size)
    fitted = fit_temperature(y_val, views.mean(axis=0)) | {"tta": tta, "fitted_on": "val"}
    write_json_atomic(loaded.run.calibration, fitted)
    loaded.temperature = fitted["temperature"]
    return fitted


# --- compare -----------------------------------------------------------------------------------

COMPARE_COLUMNS = ("run", "model", "n", "accuracy", "balanced_accuracy", "bal_acc_ci", "macro_f1",
                   "macro_auc", "ece")


def compare_runs(run_dirs, split: str = "test") -> tuple[list[dict], list[str]]:
    """Leaderboard rows (best balanced accuracy first) from each run's ``eval/<split>/metrics.json``,
    plus warnings (missing evaluations, runs whose split.csv differ)."""
    from skinzoo.train.run import RunDir

    rows, warnings, digests = [], [], {}
    for d in run_dirs:
        run = RunDir(d)
        path = run.eval_dir / split / "metrics.json"
        if not path.is_file():
            warnings.append(f"{run.path}: no {path.relative_to(run.path)}; run `skinzoo evaluate "
                            f"{run.path} --split {split}` first (skipped)")
            continue
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            warnings.append(f"{path} is not valid JSON (skipped)")
            continue
        if not isinstance(m, dict):
            warnings.append(f"{path} does not hold a metrics object (skipped)")
            continue
        digests[str(run.path)] = split_digest(run)
        ci = (m.get("ci") if isinstance(m.get("ci"), dict) else {}).get("balanced_accuracy")
        ci = ci if isinstance(ci, list) and len(ci) == 2 and all(_number(v) is not None for v in ci) \
            else None
        rows.append({"run": run.path.name, "model": _model_of(run),
                     "n": m.get("n") if isinstance(m.get("n"), int) else None,
                     "accuracy": _number(m.get("accuracy")),
                     "balanced_accuracy": _number(m.get("balanced_accuracy")),
                     "bal_acc_ci": f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "",
                     "macro_f1": _number(m.get("macro_f1")), "macro_auc": _number(m.get("macro_auc")),
                     "ece": _number(m.get("ece")), "collapsed": bool(m.get("collapse_warnings"))})
    if not rows:
        raise UsageError(f"none of the runs has a {split} evaluation to compare",
                         f"run `skinzoo evaluate RUN --split {split}` for each run first")
    if len(set(digests.values())) > 1:
        groups = {}
        for run, dg in digests.items():
            groups.setdefault(dg, []).append(Path(run).name)
        warnings.append("the runs were evaluated on DIFFERENT splits (their split.csv differ), so the "
                        "numbers are not directly comparable: "
                        + "; ".join(", ".join(v) for v in groups.values()))
    rows.sort(key=lambda r: -(r["balanced_accuracy"] or 0))
    return rows, warnings


def _number(value) -> float | None:
    # metrics.json is data a user may have edited: only real numbers reach the leaderboard.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _model_of(run) -> str:
    try:
        return str(run.read_info().get("model", ""))
    except UsageError:  # a damaged classes.json only costs the leaderboard its model name
        return ""
