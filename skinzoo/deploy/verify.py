"""Verification of an export against the Keras model it came from.

The written file is loaded back with the same loaders ``skinzoo predict`` uses
(:mod:`skinzoo.evaluate.exported`) and run on the check images; its probabilities are compared with
the Keras model's on the same pixels (for the SavedModel's bytes signature: the same files, decoded
in the graph versus by the training pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skinzoo.data.metadata import METADATA_VALUES_FILE
from skinzoo.errors import DataError
from skinzoo.evaluate.meta_inputs import chunk_inputs, rows_by_path


@dataclass(frozen=True)
class Tolerance:
    """What an export must meet: a largest absolute probability difference and/or a smallest
    share of images with the same top-1 class as the Keras model."""

    max_abs_diff: float | None = None
    min_top1_agreement: float | None = None
    reason: str = ""

    def text(self) -> str:
        parts = []
        if self.max_abs_diff is not None:
            parts.append(f"max |dp| <= {self.max_abs_diff:g}")
        if self.min_top1_agreement is not None:
            parts.append(f"top-1 agreement >= {self.min_top1_agreement:g}")
        return ", ".join(parts)


TOLERANCES = {
    # Same float32 graph on other kernels (XNNPACK, MLAS, oneDNN): only the order of sums
    # changes, which moves probabilities by ~1e-7; a wrong op, layout or preprocessing moves them
    # by 1e-2 or more. 1e-4 separates the two with room for deep models' accumulated rounding.
    "float32": Tolerance(1e-4, None, "float32 kernels differ only in summation order (~1e-7)"),
    # float16 weights keep ~3 significant digits; through a network that is ~1e-3 on the
    # probabilities, so 1e-2 passes an honest conversion and still catches a broken one.
    "float16": Tolerance(1e-2, None, "float16 weights keep about 3 significant digits"),
    # int8 moves probabilities by several percent by design: the decision is what must survive.
    # 0.9 allows the near-ties of a small check set to flip while a broken quantization (which
    # agrees at chance level) fails.
    "int8": Tolerance(None, 0.9, "int8 changes probabilities by design; the top-1 class must survive"),
}


def compare(reference, candidate, tolerance: Tolerance) -> dict:
    """Max absolute probability difference and top-1 agreement, judged against ``tolerance``."""
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        return {"max_abs_diff": None, "top1_agreement": None, "passed": False,
                "summary": f"output shape {candidate.shape} instead of {reference.shape}"}
    diff = float(np.abs(reference - candidate).max()) if reference.size else 0.0
    agree = float((reference.argmax(1) == candidate.argmax(1)).mean()) if len(reference) else 1.0
    passed = bool(np.isfinite(candidate).all())
    if tolerance.max_abs_diff is not None:
        passed = passed and diff <= tolerance.max_abs_diff
    if tolerance.min_top1_agreement is not None:
        passed = passed and agree >= tolerance.min_top1_agreement
    return {"max_abs_diff": diff, "top1_agreement": agree, "passed": passed,
            "summary": f"max |dp| {diff:.2e}, top-1 agreement {agree:.3f}"}


def meta_values_for_check(meta_specs, n: int, seed: int) -> dict[str, np.ndarray]:
    """Values for extra inputs whose meaning is unknown, during checks and calibration: seeded
    uniform [0, 1), the range of skinzoo's metadata encoding (scaled numbers, one-hot categories,
    missing flags), so the metadata path of the graph is exercised rather than fed zeros."""
    rng = np.random.default_rng(seed)
    return {s.name: rng.random((n, *s.shape), dtype=np.float32) for s in meta_specs}


def meta_values(loaded, inputs, paths, seed: int) -> tuple[dict[str, np.ndarray], str | None]:
    """``(values of the extra inputs for these images, where they came from)``: each image's own
    encoded metadata from the run's metadata.csv where the run has it (so int8 calibration sees
    real value ranges), seeded uniform values for any other input. ``inputs``: the export's
    ``ExportInputs``."""
    if not inputs.meta:
        return {}, None
    values = meta_values_for_check(inputs.meta, len(paths), seed)
    if loaded.metadata and loaded.run is not None and (loaded.run.path / METADATA_VALUES_FILE).exists():
        rows = rows_by_path(loaded.metadata, paths, run=loaded.run)
        values.update(chunk_inputs(None, rows, loaded.metadata, paths))
        return values, f"each image's own values from {METADATA_VALUES_FILE}" + (
            "; seeded uniform [0, 1) for the other inputs" if set(values) - set(rows) else "")
    return values, "seeded uniform [0, 1) values"


def keras_probabilities(model, image_index: int, images, meta: dict, meta_order) -> np.ndarray:
    """``(N, K)`` probabilities of the Keras model on ``images`` + named extra inputs."""
    from skinzoo.metrics import as_class_probs

    arrays = [meta[name] for name in meta_order]
    arrays.insert(image_index, np.asarray(images, np.float32))
    out = model.predict(arrays if len(arrays) > 1 else arrays[0], batch_size=32, verbose=0)
    return as_class_probs(out[0] if isinstance(out, (list, tuple)) else out)


def verify_export(loaded, path, fmt: str, precision: str, inputs, check_paths, check_from: str,
                  seed: int, info: dict) -> dict:
    """Run the export at ``path`` and the Keras model on the check images; the JSON-ready result."""
    from skinzoo.evaluate.exported import open_export
    from skinzoo.evaluate.predict import load_images_tolerant

    images, ok, bad = load_images_tolerant(check_paths, loaded.img_size, loaded.resize)
    if not ok:
        raise DataError(f"none of the {len(check_paths)} check images could be read",
                        "pass --check-images with readable JPEG/PNG files")
    meta, meta_from = meta_values(loaded, inputs, ok, seed + 2)
    order = [m.name for m in inputs.meta]
    reference = keras_probabilities(loaded.model, inputs.image_index, images, meta, order)
    tolerance = TOLERANCES[precision]
    exported = open_export(path, info)
    checks = [_check(f"{fmt} {precision} on pixels", reference,
                     exported.predict_arrays(images, meta, warn=False), tolerance)]
    if fmt == "savedmodel":
        outputs = _bytes_outputs(exported.runner, ok, meta)
        check = _check("serving_default on encoded image bytes", reference,
                       outputs["probabilities"], tolerance)
        names = [n.decode() for n in outputs["predicted_class"]]
        expected = [loaded.classes[i] for i in outputs["probabilities"].argmax(1)]
        if names != expected:
            check.update(passed=False, summary=check["summary"] + "; predicted_class does not match "
                         "the probabilities")
        checks.append(check)
    return {"images": len(ok), "images_from": check_from, "unreadable": sorted(bad),
            "metadata_inputs": meta_from,
            "tolerance_reason": tolerance.reason, "checks": checks,
            "passed": all(c["passed"] for c in checks)}


def _check(what, reference, candidate, tolerance: Tolerance) -> dict:
    return {"what": what, **compare(reference, candidate, tolerance),
            "tolerance": {"max_abs_diff": tolerance.max_abs_diff,
                          "min_top1_agreement": tolerance.min_top1_agreement},
            "tolerance_text": tolerance.text()}


def _bytes_outputs(runner, paths, meta, batch_size: int = 32) -> dict:
    chunks = []
    for start in range(0, len(paths), batch_size):
        contents = [Path(p).read_bytes() for p in paths[start:start + batch_size]]
        chunks.append(runner.predict_bytes(contents, {k: v[start:start + batch_size]
                                                      for k, v in meta.items()}))
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
