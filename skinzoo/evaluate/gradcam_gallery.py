"""Grad-CAM pictures for people (`skinzoo gradcam`): overlays at a size one can look at, the raw
heatmaps, per-member maps of an ensemble, and one correct | misclassified pair per class.

The maps themselves come from :mod:`skinzoo.evaluate.gradcam`; this module decides what the
model predicted (calibrated, with the run's binary threshold), renders and writes the files, and
says what it wrote, so the command only prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from skinzoo.data.splits import read_split_table
from skinzoo.errors import DataError
from skinzoo.evaluate.calibration import apply_temperature
from skinzoo.evaluate.ensemble_run import ensemble_heatmaps, member_cam_paths
from skinzoo.evaluate.gradcam import output_names, overlay, upsample
from skinzoo.fileio import atomic_path, safe_output_names
from skinzoo.metrics import predicted_classes

DISPLAY_MIN_SIDE = 256  # overlays are enlarged to at least this side so a person can see them
PAIR_GAP = 4  # white pixels between the correct and the misclassified overlay of a pair


@dataclass(frozen=True)
class Explained:
    """One image's Grad-CAM outputs, as written."""

    path: str  # the input image
    predicted_index: int  # the model's class (calibrated probabilities, binary threshold applied)
    predicted: str  # its name
    probability: float  # of the predicted class
    explained: str  # the class the heatmap explains
    flat: bool  # the map is all zero: no positive evidence for the explained class
    overlay: np.ndarray  # uint8 RGB at display size (reused for the pairs)


def decision_threshold(loaded) -> float | None:
    """The run's fitted binary threshold (threshold.json), if any."""
    return (loaded.threshold or {}).get("threshold")


def output_stems(paths) -> list[str]:
    """One distinct file stem per input: same-named files in two folders never collide."""
    return safe_output_names(paths, suffix_room=len("_heatmap.npy") + 20)


def display_size(image, min_side: int = DISPLAY_MIN_SIDE):
    """What the model saw, enlarged (bicubic) so its shorter side is at least ``min_side``."""
    h, w = image.shape[:2]
    scale = max(1.0, min_side / min(h, w))
    if scale == 1.0:
        return image
    return cv2.resize(np.asarray(image, np.float32), (round(w * scale), round(h * scale)),
                      interpolation=cv2.INTER_CUBIC)


def write_png(path, rgb) -> None:
    """``rgb`` (uint8) as a PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def write_explanations(loaded, paths, imgs, result, stems, method: str, alpha: float, out_dir):
    """Per image, in order: write ``<stem>_gradcam.png`` (overlay) and the raw heatmap ``.npy``
    (feature-map resolution, ReLU'd, not normalised), then yield its :class:`Explained`.

    ``result``: the :class:`~skinzoo.evaluate.gradcam.CamResult` of ``imgs``. A generator, so a
    caller can report each image as soon as its files exist.
    """
    out = Path(out_dir)
    probs = apply_temperature(result.probs, loaded.temperature)
    threshold = decision_threshold(loaded)
    preds = predicted_classes(probs, threshold if probs.shape[1] == 2 else None)
    for i, path in enumerate(paths):
        view = display_size(imgs[i])
        heat = upsample(result.heatmaps[i], view.shape[:2])
        rendered = overlay(view, heat, alpha)
        png_name, npy_name = output_names(stems[i], method)
        write_png(out / png_name, rendered)
        np.save(out / npy_name, result.heatmaps[i])
        yield Explained(path=path, predicted_index=int(preds[i]), predicted=loaded.classes[preds[i]],
                        probability=float(probs[i, preds[i]]),
                        explained=loaded.classes[int(result.class_index[i])],
                        flat=bool(heat.max() == 0), overlay=rendered)


def write_ensemble_maps(model, inputs, class_index, imgs, stems, method: str, alpha: float,
                        batch_size: int, out_dir) -> list[str]:
    """An ensemble: one overlay per member (``<stem>_<member>_gradcam.png``) and one of their
    weighted average (``<stem>_ensemble_gradcam.png``) per image. Returns the member names
    written; ``[]`` (nothing written) for any other model."""
    member_paths = member_cam_paths(model)
    if not member_paths:
        return []
    out = Path(out_dir)
    views = [display_size(img) for img in imgs]
    per_member, averaged = ensemble_heatmaps(model, inputs, class_index, views[0].shape[:2],
                                             method, batch_size)
    for i, (stem, view) in enumerate(zip(stems, views, strict=True)):
        for path, maps in zip(member_paths, per_member, strict=True):
            write_png(out / f"{stem}_{path[0].split('_')[0]}_gradcam.png", overlay(view, maps[i], alpha))
        write_png(out / f"{stem}_ensemble_gradcam.png", overlay(view, averaged[i], alpha))
    return [p[0] for p in member_paths]


# --- correct | misclassified pairs -------------------------------------------------------------

def known_labels(loaded, paths) -> dict:
    """{path: class index or None} from the run's split.csv; ``{}`` without a readable one."""
    if loaded.run is None or not loaded.run.split.exists():
        return {}
    try:
        table = read_split_table(loaded.run.split, ("path", "label"))
    except (DataError, ValueError):
        return {}  # a damaged split.csv: the pairs say they need labels
    index = {c: i for i, c in enumerate(loaded.classes)}
    by_path = {str(Path(p).resolve()): index.get(lab)
               for p, lab in zip(table["path"], table["label"], strict=True)}
    return {p: by_path.get(str(Path(p).resolve())) for p in paths}


def pick_pairs(labels: dict, paths, preds, n_classes: int) -> dict:
    """{class index: (correct position, misclassified position)} for each true class that has
    both among ``paths``: the first correctly classified image and the first misclassified one."""
    pairs = {}
    for c in range(n_classes):
        right = [i for i, p in enumerate(paths) if labels.get(p) == c and preds[i] == c]
        wrong = [i for i, p in enumerate(paths) if labels.get(p) == c and preds[i] != c]
        if right and wrong:
            pairs[c] = (right[0], wrong[0])
    return pairs


def write_pairs(loaded, explained: list, out_dir) -> int | None:
    """``pair_<class>.png``: a correct overlay beside a misclassified one, per true class.

    Returns how many were written, or None when the run's split.csv gives no label for any of
    the images (nothing to pair)."""
    paths = [e.path for e in explained]
    labels = known_labels(loaded, paths)
    if not any(v is not None for v in labels.values()):
        return None
    preds = [e.predicted_index for e in explained]
    pairs = pick_pairs(labels, paths, preds, len(loaded.classes))
    for c, (right, wrong) in pairs.items():
        a, b = explained[right].overlay, explained[wrong].overlay
        gap = np.full((a.shape[0], PAIR_GAP, 3), 255, np.uint8)
        write_png(Path(out_dir) / f"pair_{loaded.classes[c]}.png", np.concatenate([a, gap, b], axis=1))
    return len(pairs)
