"""The HTML evaluation report with its gallery: for each class, the most confident correct and
wrong images with the Grad-CAM overlay of the predicted class.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from skinzoo.evaluate.evaluation import Evaluation

log = logging.getLogger(__name__)


def build_gallery(loaded, evaluation: Evaluation, per_class: int = 3, alpha: float = 0.4,
                  threshold: float | None = None) -> dict:
    """``{class: [items]}``: up to ``per_class`` correct and ``per_class`` wrong images of each true
    class (most confident first), each with its Grad-CAM overlay for the predicted class."""
    from skinzoo.data.pipeline import load_images
    from skinzoo.evaluate.gradcam import GradCam, overlay, upsample
    from skinzoo.evaluate.meta_inputs import chunk_inputs
    from skinzoo.evaluate.predict import model_inputs
    from skinzoo.evaluate.report import metadata_captions
    from skinzoo.metrics import predicted_classes

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
    # each image's own metadata (or --meta), as evaluation fed it: for the Grad-CAM and the caption
    meta = chunk_inputs(loaded.meta, loaded.meta_rows, loaded.metadata, [evaluation.paths[i] for i in chosen])
    captions = metadata_captions(loaded.metadata, meta, len(chosen))
    try:
        cam = GradCam(loaded.model)
        result = cam.explain(model_inputs(loaded.model, images, meta, warn=False), pred[chosen])
        overlays = [overlay(img, upsample(h, img.shape[:2]), alpha)
                    for img, h in zip(images, result.heatmaps, strict=True)]
    except Exception as err:  # noqa: BLE001 - a model Grad-CAM cannot trace still gets its report
        log.warning("warning: no Grad-CAM overlays in the gallery: %s", getattr(err, "message", err))
        overlays = [None] * len(chosen)
    gallery = {}
    for i, img, ov, caption in zip(chosen, images, overlays, captions, strict=True):
        gallery.setdefault(evaluation.classes[y[i]], []).append(
            {"image": img, "overlay": ov, "true": int(y[i]), "pred": int(pred[i]),
             "prob": float(conf[i]), "name": Path(evaluation.paths[i]).name, "meta": caption})
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
