"""Inference speed of one model in every export format, side by side, plus the file sizes.

Baseline: the Keras model's ``predict`` (what users run without exporting). Compared: the
SavedModel ``serving_pixels`` signature, the SavedModel ``serving_default`` signature (encoded
JPEG bytes: decode + resize in the graph, so it does more work than the pixel paths), TFLite
float32 and int8 (LiteRT / tf.lite interpreter, all cores) and ONNX Runtime (CPU). Every path
runs through the loaders ``skinzoo predict --model EXPORT`` uses, on the same images, in batches
of ``batch`` after one warm-up batch, all paths timed in alternating rounds (each ratio is the
median per-round ratio, with its range). The model is briefly trained on the synthetic demo images
so the int8 agreement with Keras means something (a random model's outputs are near-ties).
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
from pathlib import Path

from bench.rounds import alternating_rounds, ratio_summary


def _over_batches(fn, batches):
    """A side of the comparison: ``fn`` over every batch, after one warm-up call (graph tracing,
    interpreter allocation, session set-up are not what is compared)."""
    fn(batches[0])

    def one_pass():
        for b in batches:
            fn(b)
    return one_pass


def run(quick: bool = False, data: str | None = None) -> dict:
    from skinzoo.runtime import set_seed, tf

    tf()
    size, n_train, n_images, epochs, batch = (64, 300, 256, 2, 32) if quick else (128, 1000, 1024, 4, 32)
    set_seed(0, deterministic=False)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        return _measure(Path(tmp), size, n_train, n_images, epochs, batch, rounds=3 if quick else 5)


def _measure(work: Path, size: int, n_train: int, n_images: int, epochs: int, batch: int,
             rounds: int) -> dict:
    import numpy as np

    from skinzoo.data.pipeline import load_images
    from skinzoo.data.synth import make_synthetic_dataset
    from skinzoo.deploy.export import (
        export_inputs,
        path_size,
        write_onnx,
        write_savedmodel,
        write_tflite,
    )
    from skinzoo.evaluate.exported import OnnxRunner, SavedModelRunner, TFLiteRunner
    from skinzoo.models import build_model

    make_synthetic_dataset(work / "data", n_images=n_train, size=size, seed=0)
    paths = sorted(str(p) for p in (work / "data" / "images").glob("*.jpg"))
    x = load_images(paths, size)
    labels = np.arange(len(paths)) % 7  # the timing does not depend on what was learned
    model = build_model("compact_resnet", 7, input_shape=(size, size, 3))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, labels, epochs=epochs, batch_size=32, verbose=0)
    images = np.concatenate([x] * (n_images // len(x) + 1))[:n_images]
    files = (paths * (n_images // len(paths) + 1))[:n_images]
    batches = [images[i:i + batch] for i in range(0, n_images, batch)]
    encoded = [[Path(p).read_bytes() for p in files[i:i + batch]] for i in range(0, n_images, batch)]
    inputs = export_inputs(model, (size, size))
    classes = [f"c{i}" for i in range(7)]

    keras_probs = model.predict(images, batch_size=batch, verbose=0)
    sizes, agreement = {}, {}
    model.save(work / "model.keras")
    sizes["keras"] = path_size(work / "model.keras")
    sides = {"keras": _over_batches(lambda b: model.predict(b, verbose=0), batches)}

    write_savedmodel(model, inputs, classes, "crop", work / "savedmodel")
    sm = SavedModelRunner(work / "savedmodel")
    sizes["savedmodel"] = path_size(work / "savedmodel")
    sides["savedmodel_pixels"] = _over_batches(lambda b: sm({"image": b}), batches)
    sides["savedmodel_bytes"] = _over_batches(sm.predict_bytes, encoded)

    calibration = (x[:200], {})
    runners = {}
    for precision in ("float32", "int8"):
        path = work / f"model-{precision}.tflite"
        write_tflite(model, inputs, precision, path, calibration if precision == "int8" else None)
        runners[f"tflite_{precision}"] = TFLiteRunner(path)
        sizes[f"tflite_{precision}"] = path_size(path)
    notes = ""
    if all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnxruntime")):
        write_onnx(model, inputs, work / "model.onnx")
        runners["onnx"] = OnnxRunner(work / "model.onnx")
        sizes["onnx"] = path_size(work / "model.onnx")
    else:
        notes = "; ONNX left out: pip install '.[export]'"
    for name, runner in runners.items():
        sides[name] = _over_batches(lambda b, r=runner: r({"image": b}), batches)
        probs = np.concatenate([runner({"image": b}) for b in batches])
        agreement[name] = {"max_abs_diff": float(np.abs(probs - keras_probs).max()),
                           "top1_agreement": float((probs.argmax(1) == keras_probs.argmax(1)).mean())}
    seconds = alternating_rounds(sides, rounds)
    figures = {f"images_per_s_{name}": n_images / statistics.median(t) for name, t in seconds.items()}
    ratios, ranges = {}, {}
    for name in sides:
        if name != "keras":  # a speed-up is keras seconds / this side's seconds, per round
            ratios[f"speedup_{name}_vs_keras"], ranges[f"speedup_{name}_vs_keras"] = \
                ratio_summary(seconds["keras"], seconds[name])
    return {
        "name": "export",
        "baseline": "Keras model.predict",
        "figures": {**{k: round(v, 1) for k, v in figures.items()},
                    **{f"bytes_{k}": v for k, v in sizes.items()},
                    **{f"{k}_{m}": round(v, 6) for k, a in agreement.items() for m, v in a.items()},
                    "image_size": size, "images": n_images, "batch_size": batch},
        "ratios": ratios,
        "ratio_ranges": ranges,
        "notes": f"compact_resnet at {size} px, {epochs} epochs on synthetic images, CPU, batches of "
                 f"{batch} after warm-up, median of {rounds} alternating rounds; savedmodel_bytes includes JPEG "
                 "decode + resize" + notes,
    }


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.data), indent=2))
