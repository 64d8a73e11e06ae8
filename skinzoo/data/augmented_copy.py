"""A physically balanced augmented copy of a dataset on disk (`skinzoo data augment`).

An application of the data layer, so it sits above it: new images are made by the training
pipeline's own read + decode + resize (:func:`skinzoo.data.pipeline.image_loader`) followed by
:func:`skinzoo.data.augment.augment_image`, so a variant on disk is exactly what training would
have seen. Nothing below imports this module.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from skinzoo import runtime
from skinzoo.data.augment import Augment, augment_image, resolve_augment
from skinzoo.data.pipeline import image_hw, image_loader
from skinzoo.errors import DataError, UsageError
from skinzoo.fileio import write_text_atomic
from skinzoo.progress import Progress

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
    default = Augment()
    return ",".join(f"{f.name}={getattr(aug, f.name)}" for f in fields(aug)
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
    if not jobs:
        return
    tf = runtime.tf()
    load = image_loader(hw, resize, False)
    paths, indices, names = (list(v) for v in zip(*jobs, strict=True))

    def make(path, index):
        s = tf.stack([tf.constant(seed, tf.int64), index])
        image = augment_image(tf.cast(load(path), tf.float32), s, aug)
        return tf.cast(tf.round(image), tf.uint8)

    ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(indices, np.int64)))
    ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)
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
