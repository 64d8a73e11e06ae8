"""Class rebalancing: ``--balance none | class-weight | oversample | smote | smote-tomek | smote-enn``.

- ``class-weight``: per-sample weights in the tf.data stream (:func:`sample_weights_for`). Keras
  ignores ``fit(class_weight=...)`` silently for some dataset shapes, per-sample weights never.
- ``oversample``: ``make_dataset(..., oversample=True)`` draws every class equally often from its
  own stream (``tf.data.Dataset.sample_from_datasets``); no copies are written. The stream is
  infinite: train with ``steps_per_epoch=oversample_steps(n, batch_size)``.
- ``smote`` / ``smote-tomek`` / ``smote-enn`` (imbalanced-learn) interpolate between neighbours in
  a numeric feature space: :func:`resample_features` on backbone embeddings (two-stage training),
  or :func:`skinzoo.data.pixel_smote.smote_pixels` on flattened pixels for small sets (after
  :func:`check_pixel_smote_memory`). Only ever the TRAINING split: these functions take one
  (X, y) and return new arrays; validation and test data are never passed in.

This module imports nothing from the rest of the data layer: the tools that read images and
apply it (pixel SMOTE, the augmented copy) sit above the pipeline.

SMOTE on a table of image paths would only duplicate random rows; that is refused with a hint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from skinzoo.errors import DataError, ResourceError, UsageError

log = logging.getLogger(__name__)

BALANCE_METHODS = ("none", "class-weight", "oversample", "smote", "smote-tomek", "smote-enn")
SMOTE_METHODS = ("smote", "smote-tomek", "smote-enn")


def check_method(method: str) -> str:
    if method not in BALANCE_METHODS:
        raise UsageError(f"unknown balance method {method!r}", f"use one of {', '.join(BALANCE_METHODS)}")
    return method


def _int_labels(labels, num_classes: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UsageError("labels must be a 1-D array of int class indices")
    if y.size and y.min() < 0:
        raise DataError(f"label index {y.min()} is negative")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise DataError(f"label index {y.max()} is outside 0..{num_classes - 1}")
    return y.astype(np.int64)


def class_weights(labels, num_classes: int, power: float = 1.0) -> np.ndarray:
    """Weight per class, scikit-learn's "balanced" formula: n_samples / (n_classes * count),
    raised to ``power`` and rescaled so the mean sample weight stays 1.

    ``power`` 1 is full inverse frequency; 0.5 (its square root) is the tempered middle ground:
    full weights over-correct when the deployment prior is itself skewed (naevi are most of what
    a clinic sees), 0 is no weighting. ``n_classes`` counts the classes present in ``labels``; a
    class absent from ``labels`` gets weight 0 (it has no samples to weigh) and a warning.
    """
    y = _int_labels(labels, num_classes)
    if y.size == 0:
        raise DataError("no labels to compute class weights from")
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes, np.float64)
    weights[present] = (y.size / (present.sum() * counts[present])) ** float(power)
    weights *= y.size / float((weights * counts).sum())  # mean sample weight 1 at any power
    if not present.all():
        log.warning("classes %s have no training samples", np.flatnonzero(~present).tolist())
    return weights


def sample_weights_for(labels, num_classes: int, weights=None, power: float = 1.0) -> np.ndarray:
    """float32 weight per sample: its class's weight (``weights`` or :func:`class_weights` at
    ``power``)."""
    y = _int_labels(labels, num_classes)
    weights = class_weights(y, num_classes, power) if weights is None else np.asarray(weights, np.float64)
    if weights.shape != (num_classes,):
        raise UsageError(f"class weights have shape {weights.shape}, expected ({num_classes},)")
    return weights[y].astype(np.float32)


def oversample_steps(n_samples: int, batch_size: int) -> int:
    """Steps per epoch of an oversampled (infinite) stream: as many samples as one plain epoch."""
    return max(1, int(n_samples) // int(batch_size))


@dataclass(frozen=True)
class BalancePlan:
    """What training does for a ``--balance`` choice."""

    method: str
    sample_weights: np.ndarray | None  # per training sample, for make_dataset(sample_weights=)
    oversample: bool  # make_dataset(oversample=True) + steps_per_epoch
    feature_resampling: str | None  # a SMOTE method to run on embeddings (two-stage training)


def balance_plan(method: str, labels, num_classes: int) -> BalancePlan:
    """The :class:`BalancePlan` for ``method`` on the training labels."""
    check_method(method)
    weights = sample_weights_for(labels, num_classes) if method == "class-weight" else None
    return BalancePlan(method=method, sample_weights=weights, oversample=method == "oversample",
                       feature_resampling=method if method in SMOTE_METHODS else None)


# --- SMOTE family -----------------------------------------------------------------------------------

def _sampler(method: str, k_neighbors: int, seed: int):
    from imblearn.combine import SMOTEENN, SMOTETomek
    from imblearn.over_sampling import SMOTE

    smote = SMOTE(k_neighbors=k_neighbors, random_state=seed)
    if method == "smote":
        return smote
    if method == "smote-tomek":
        return SMOTETomek(smote=smote, random_state=seed)
    return SMOTEENN(smote=smote, random_state=seed)


def _safe_k(y: np.ndarray, k_neighbors: int) -> int:
    """SMOTE needs k_neighbors < size of every class it oversamples; reduce k, or say why not."""
    counts = np.bincount(y)
    counts = counts[counts > 0]
    if len(counts) < 2:
        raise DataError("SMOTE needs at least 2 classes in the training data")
    smallest = int(counts.min())
    if smallest < 2:
        raise DataError("a class has a single training sample; SMOTE needs at least 2 per class",
                        "use --balance class-weight or oversample, or collect more images")
    if k_neighbors >= smallest:
        log.warning("SMOTE: reducing k_neighbors from %d to %d (smallest class has %d samples)",
                    k_neighbors, smallest - 1, smallest)
        return smallest - 1
    return k_neighbors


def resample_features(X, y, method: str = "smote", seed: int = 0, k_neighbors: int = 5):
    """(X_res, y_res): ``X`` (N, D) numeric features of the TRAINING split rebalanced by ``method``.

    New arrays are returned; ``X`` and ``y`` are not modified. Run it on backbone embeddings
    (two-stage training) or flattened pixels, never on validation/test data.
    """
    if method not in SMOTE_METHODS:
        raise UsageError(f"{method!r} is not a SMOTE method", f"use one of {', '.join(SMOTE_METHODS)}")
    X = np.asarray(X)
    if X.dtype.kind in "OUS":
        raise UsageError("SMOTE interpolates numeric features and cannot resample image paths",
                         "use --balance oversample for images, or SMOTE on embeddings")
    if X.ndim != 2:
        raise UsageError(f"SMOTE needs a 2-D (samples, features) array, got shape {X.shape}")
    y = _int_labels(y)
    if len(X) != len(y):
        raise UsageError(f"{len(X)} feature rows but {len(y)} labels")
    k = _safe_k(y, k_neighbors)
    X_res, y_res = _sampler(method, k, seed).fit_resample(X, y)
    return np.asarray(X_res), np.asarray(y_res, dtype=np.int64)


def smote_bytes_estimate(n_samples: int, counts, n_features: int) -> int:
    """Peak bytes of SMOTE on (n_samples, n_features): float32 input, the float64 new samples and
    the float64 stacked result that imbalanced-learn builds."""
    counts = np.asarray(counts)
    n_res = int(counts.max()) * int((counts > 0).sum())
    n_new = n_res - int(n_samples)
    return int(n_features) * (4 * int(n_samples) + 8 * n_new + 8 * n_res)


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration, ValueError):
        return None


def check_pixel_smote_memory(labels, hw, memory_limit_bytes: int | None = None) -> None:
    """ResourceError, stating the estimate, when SMOTE on the pixels of ``labels``' images at
    ``hw`` (height, width) would need more than ``memory_limit_bytes`` (default: half the
    available memory). Called BEFORE any image is loaded (:func:`skinzoo.data.pixel_smote.smote_pixels`)."""
    y = _int_labels(labels)
    h, w = hw
    need = smote_bytes_estimate(len(y), np.bincount(y), h * w * 3)
    if memory_limit_bytes is None:
        avail = _available_bytes()
        memory_limit_bytes = avail // 2 if avail else 4 * 2**30
    if need > memory_limit_bytes:
        raise ResourceError(
            f"SMOTE on pixels of {len(y)} images at {h}x{w} needs ~{need / 2**30:.2f} GB "
            f"(limit {memory_limit_bytes / 2**30:.2f} GB)",
            "use SMOTE on backbone embeddings (two-stage training: --balance smote with a "
            "pretrained model), --balance oversample, or a smaller --img-size")
