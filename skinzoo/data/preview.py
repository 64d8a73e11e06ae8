"""Before/after pictures of augmentation and hair removal (`skinzoo data preview`).

An application of the data layer, so it sits above it: images are read with the pipeline's own
decode + resize (what the model sees), then put through :func:`skinzoo.data.augment.augment_image`
and :mod:`skinzoo.data.hair`. Nothing below imports this module.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from skinzoo import runtime
from skinzoo.data.augment import augment_image, resolve_augment
from skinzoo.data.hair import hair_mask, remove_hair
from skinzoo.data.pipeline import image_hw, load_images
from skinzoo.errors import UsageError
from skinzoo.fileio import atomic_path


def write_preview(paths, labels, out_dir, img_size=224, augment="light", hair_removal=False,
                  seed: int = 0, n_variants: int = 4, resize: str = "crop") -> list:
    """Write PNG grids showing what augmentation / hair removal does; return their paths.

    ``augment.png``: one row per image — the un-augmented input (as the model would see it
    without augmentation), then ``n_variants`` augmented versions (seeds ``[seed, row*100+k]``).
    ``hair_removal.png``: original | hair removed | detected hair mask in red.
    Each row is captioned with its label.
    """
    aug = resolve_augment(augment)
    if not aug.active and not hair_removal:
        raise UsageError("nothing to preview: augmentation is 'none' and hair removal is off",
                         "pass --augment light/heavy and/or --hair-removal")
    hw = image_hw(img_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = load_images(paths, hw, resize=resize)
    written = []
    if aug.active:
        tf = runtime.tf()
        rows = []
        for i, img in enumerate(plain):
            variants = [augment_image(tf.constant(img), tf.constant([seed, i * 100 + k], tf.int64),
                                      aug).numpy() for k in range(n_variants)]
            rows.append([img, *variants])
        header = ["input", *[f"augmented {k + 1}" for k in range(n_variants)]]
        written.append(_save_grid(out_dir / "augment.png", rows, labels, header))
    if hair_removal:
        rows = []
        for img in plain.astype(np.uint8):
            mask = hair_mask(img)
            marked = img.copy()
            marked[mask] = (255, 0, 0)
            rows.append([img, remove_hair(img), marked])
        written.append(_save_grid(out_dir / "hair_removal.png", rows, labels,
                                  ["input", "hair removed", "hair mask"]))
    return written


def _save_grid(target, rows, labels, header):
    """One PNG: a header line, then rows of equal-size tiles with a caption strip on the left."""
    zoom = max(1, -(-96 // rows[0][0].shape[0]))  # tiny images are enlarged so one can see them
    if zoom > 1:
        rows = [[np.repeat(np.repeat(t, zoom, 0), zoom, 1) for t in tiles] for tiles in rows]
    h, w = rows[0][0].shape[:2]
    gap, caption_w, header_h = 4, 110, 22
    cols = len(rows[0])
    canvas = np.full((header_h + len(rows) * (h + gap), caption_w + cols * (w + gap), 3), 255,
                     np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    for j, text in enumerate(header):
        cv2.putText(canvas, text, (caption_w + j * (w + gap), 15), font, scale, (0, 0, 0), 1)
    for i, (tiles, label) in enumerate(zip(rows, labels, strict=True)):
        y = header_h + i * (h + gap)
        cv2.putText(canvas, str(label)[:16], (4, y + h // 2), font, scale, (0, 0, 0), 1)
        for j, tile in enumerate(tiles):
            x = caption_w + j * (w + gap)
            canvas[y:y + h, x:x + w] = np.clip(np.rint(tile), 0, 255).astype(np.uint8)
    with atomic_path(target) as tmp:
        cv2.imwrite(str(tmp), canvas[..., ::-1])
    return target
