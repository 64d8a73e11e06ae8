"""Class rebalancing: ``--balance none | class-weight | oversample | smote | smote-tomek | smote-enn``.

- ``class-weight``: per-sample weights in the tf.data stream (:func:`sample_weights_for`). Keras
  ignores ``fit(class_weight=...)`` silently for some dataset shapes, per-sample weights never.
- ``oversample``: ``make_dataset(..., oversample=True)`` draws every class equally often from its
  own stream (``tf.data.Dataset.sample_from_datasets``); no copies are written. The stream is
  infinite: train with ``steps_per_epoch=oversample_steps(n, batch_size)``.
- ``smote`` / ``smote-tomek`` / ``smote-enn`` (imbalanced-learn) interpolate between neighbours in
  a numeric feature space: :func:`resample_features` on backbone embeddings (two-stage training),
  or :func:`smote_pixels` on flattened pixels for small sets. Only ever the TRAINING split: these
  functions take one (X, y) and return new arrays; validation and test data are never passed in.

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


def smote_pixels(images, y, img_size, method: str = "smote", seed: int = 0,
                 memory_limit_bytes: int | None = None, resize: str = "crop", k_neighbors: int = 5):
    """SMOTE on flattened pixels of the TRAINING split: (uint8 (N', H, W, 3), int labels (N',)).

    ``images``: a uint8/float array (N, H, W, 3) already at ``img_size``, or a list of paths
    (loaded with the pipeline's decode + resize). The memory need is estimated BEFORE anything
    is loaded; above ``memory_limit_bytes`` (default: half the available memory) a ResourceError
    states the estimate. Only sensible for small images and sets; otherwise use embeddings.
    """
    from skinzoo.data.pipeline import image_hw

    h, w = image_hw(img_size)
    y = _int_labels(y)
    n_features = h * w * 3
    need = smote_bytes_estimate(len(y), np.bincount(y), n_features)
    if memory_limit_bytes is None:
        avail = _available_bytes()
        memory_limit_bytes = avail // 2 if avail else 4 * 2**30
    if need > memory_limit_bytes:
        raise ResourceError(
            f"SMOTE on pixels of {len(y)} images at {h}x{w} needs ~{need / 2**30:.2f} GB "
            f"(limit {memory_limit_bytes / 2**30:.2f} GB)",
            "use SMOTE on backbone embeddings (two-stage training: --balance smote with a "
            "pretrained model), --balance oversample, or a smaller --img-size")
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.shape[1:] != (h, w, 3):
            raise UsageError(f"images have shape {images.shape[1:]}, expected {(h, w, 3)} for img_size")
        pixels = images
    else:
        from skinzoo.data.pipeline import load_images

        pixels = load_images(list(images), (h, w), resize=resize)
    if len(pixels) != len(y):
        raise UsageError(f"{len(pixels)} images but {len(y)} labels")
    flat = np.asarray(pixels, np.float32).reshape(len(pixels), -1)
    X_res, y_res = resample_features(flat, y, method=method, seed=seed, k_neighbors=k_neighbors)
    out = np.clip(np.rint(X_res), 0, 255).astype(np.uint8).reshape(-1, h, w, 3)
    return out, y_res


# --- a physically balanced augmented copy (`skinzoo data augment`) -----------------------------

MANIFEST_NAME = "manifest.csv"
LABELS_NAME = "labels.csv"


@dataclass
class AugmentedCopy:
    out_dir: object  # Path
    labels_csv: object  # Path of the generic-CSV dataset file
    manifest_csv: object  # Path
    before: dict  # class -> images in the source
    after: dict  # class -> images in the copy


def write_augmented_copy(table, classes, out_dir, to_count: int, img_size=224, augment="heavy",
                         seed: int = 0, resize: str = "crop", progress: bool = True,
                         batch_size: int = 32) -> AugmentedCopy:
    """Copy the images of ``table`` to ``out_dir`` and top every class up to ``to_count`` images
    with augmented variants of that class's own images.

    ``table``: the dataset table (docs/CONTRACTS.md "Dataset table") of TRAINING images only —
    augmenting validation/test images would leak them into training. Originals are copied
    byte-for-byte; new images are JPEG (quality 95) at ``img_size`` (``resize`` mode), made by
    :func:`skinzoo.data.augment.augment_image` with stateless seed ``[seed, index]``. Classes that
    already have ``to_count`` or more images are copied unchanged (never cut down). Writes
    ``images/``, ``labels.csv`` (generic CSV: image, label, group, age, sex, site; variants keep
    their source's group so a grouped split keeps them with it) and ``images/manifest.csv`` (new
    file, source file, class, augmentation seed) — inside ``images/`` so the output folder holds
    exactly one CSV and ``--format auto`` reads it.
    """
    import shutil
    from pathlib import Path

    import pandas as pd

    from skinzoo.data.augment import resolve_augment
    from skinzoo.data.pipeline import image_hw
    from skinzoo.fileio import write_text_atomic

    aug = resolve_augment(augment)
    if not aug.active:
        raise UsageError("--augment none would make exact copies, not new images",
                         "use --augment light or heavy")
    if to_count < 1:
        raise UsageError(f"--to-count {to_count} must be at least 1")
    hw = image_hw(img_size)
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    if (out_dir / LABELS_NAME).exists() or (images_dir.exists() and any(images_dir.iterdir())):
        raise UsageError(f"{out_dir} already holds an augmented dataset",
                         "choose a new output folder or delete the old one")
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    extra_cols = [c for c in ("age", "sex", "site") if c in table]
    rows, manifest, jobs = [], [], []
    used_names: set[str] = set()
    for _, r in table.iterrows():
        name = _unique_name(Path(r["path"]).name, used_names)
        shutil.copy2(r["path"], images_dir / name)
        rows.append(dict(image=f"images/{name}", label=r["label"], group=r["group"],
                         **{c: r[c] for c in extra_cols}))
        manifest.append(dict(file=f"images/{name}", source_file=r["path"], label=r["label"],
                             augmentation_seed="", augment="none"))
    before = {c: int((table["label"] == c).sum()) for c in classes}
    index = 0
    for c in classes:
        members = table[table["label"] == c]
        missing = to_count - len(members)
        if missing <= 0 or len(members) == 0:
            continue
        # Spread variants evenly over the class's images, in a seeded order.
        order = rng.permutation(len(members))
        picks = np.resize(order, missing)
        for pick in picks:
            src = members.iloc[int(pick)]
            name = _unique_name(f"aug_{c}_{index:06d}.jpg", used_names)
            jobs.append((src["path"], index, name))
            rows.append(dict(image=f"images/{name}", label=c, group=src["group"],
                             **{col: src[col] for col in extra_cols}))
            manifest.append(dict(file=f"images/{name}", source_file=src["path"], label=c,
                                 augmentation_seed=f"{seed}:{index}", augment=_aug_text(aug)))
            index += 1
    _render_variants(jobs, images_dir, hw, resize, aug, seed, progress, batch_size)
    labels_csv = write_text_atomic(out_dir / LABELS_NAME, pd.DataFrame(rows).to_csv(index=False))
    manifest_csv = write_text_atomic(images_dir / MANIFEST_NAME,
                                     pd.DataFrame(manifest).to_csv(index=False))
    after = pd.DataFrame(rows)["label"].value_counts().to_dict()
    return AugmentedCopy(out_dir, labels_csv, manifest_csv, before,
                         {c: int(after.get(c, 0)) for c in classes})


def _aug_text(aug) -> str:
    from dataclasses import fields as dc_fields

    from skinzoo.data.augment import Augment

    default = Augment()
    return ",".join(f"{f.name}={getattr(aug, f.name)}" for f in dc_fields(aug)
                    if getattr(aug, f.name) != getattr(default, f.name))


def _unique_name(name: str, used: set) -> str:
    stem, dot, ext = name.rpartition(".")
    candidate, k = name, 1
    while candidate.lower() in used:
        candidate = f"{stem}_{k}{dot}{ext}"
        k += 1
    used.add(candidate.lower())
    return candidate


def _render_variants(jobs, images_dir, hw, resize, aug, seed, progress, batch_size):
    """Decode + resize (the training pipeline's graph) + augment with seed [seed, index]; write."""
    import contextlib

    import cv2

    from skinzoo.data.augment import augment_image
    from skinzoo.data.pipeline import _load_fn
    from skinzoo.runtime import tf

    if not jobs:
        return
    tf = tf()
    load = _load_fn(hw, resize, False)
    paths, indices, names = (list(v) for v in zip(*jobs, strict=True))

    def make(path, index):
        s = tf.stack([tf.constant(seed, tf.int64), index])
        image = augment_image(tf.cast(load(path), tf.float32), s, aug)
        return tf.cast(tf.round(image), tf.uint8)

    ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(indices, np.int64)))
    ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)
    from skinzoo.progress import Progress

    bar = Progress("writing augmented images", total=len(jobs)) if progress else contextlib.nullcontext()
    done = 0
    with bar:
        for batch in ds:
            for img in batch.numpy():
                target = images_dir / names[done]
                if not cv2.imwrite(str(target), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]):
                    raise DataError(f"cannot write {target}", "check free disk space and permissions")
                done += 1
            if progress:
                bar.update(len(batch))
