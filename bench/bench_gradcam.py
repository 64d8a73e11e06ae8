"""Grad-CAM seconds per image: one image per gradient call vs batched, same model and images.

Baseline: one call per image (what a naive loop over files does). Figures are per-image times
after a warm-up call for each batch shape (tracing is paid once per shape, not per image); both
sides are timed in alternating rounds and the ratio is the median per-round ratio with its range.
Model: a MobileNetV2 backbone (weights=None) nested in a Sequential, the nested case Grad-CAM
must rebuild; with ``data`` (a folder of images), those images are used instead of noise.
"""

from __future__ import annotations

import statistics

from bench.rounds import alternating_rounds, ratio_summary


def _images(n, size, data):
    import numpy as np

    if data:
        from skinzoo.data.images import list_image_files
        from skinzoo.data.pipeline import load_images

        paths = list_image_files(data)[:n]
        if paths:
            x = load_images(paths, size)
            return np.concatenate([x] * (n // len(x) + 1))[:n]
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")


def run(quick: bool = False, data: str | None = None) -> dict:
    from skinzoo.runtime import tf

    tf()
    import keras

    from skinzoo.evaluate.gradcam import GradCam

    size, n, batch = (96, 32, 16) if quick else (160, 128, 32)
    model = keras.Sequential([
        keras.Input((size, size, 3)),
        keras.layers.Rescaling(1 / 127.5, offset=-1),
        keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(size, size, 3)),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(7, activation="softmax", name="predictions"),
    ])
    x = _images(n, size, data)
    cam = GradCam(model)

    rounds = 3 if quick else 5
    cam.explain([x[:1]], None, batch_size=1)  # warm-up: trace the batch-1 step
    cam.explain([x[:batch]], None, batch_size=batch)  # warm-up: trace the batch step

    def single_calls():
        for i in range(n):
            cam.explain([x[i:i + 1]], None, batch_size=1)

    seconds = alternating_rounds({"single": single_calls,
                                  "batched": lambda: cam.explain([x], None, batch_size=batch)}, rounds)
    speedup, spread = ratio_summary(seconds["single"], seconds["batched"])
    return {
        "name": "gradcam",
        "baseline": "one image per gradient call",
        "figures": {"image_size": size, "images": n, "batch_size": batch, "rounds": rounds,
                    "seconds_per_image_single": round(statistics.median(seconds["single"]) / n, 5),
                    "seconds_per_image_batched": round(statistics.median(seconds["batched"]) / n, 5)},
        "ratios": {"speedup_batched_vs_single": speedup},
        "ratio_ranges": {"speedup_batched_vs_single": spread},
        "notes": f"MobileNetV2 nested in Sequential, layer {'/'.join(cam.layer_path)}, "
                 f"{'image folder ' + data if data else 'random images'}; CPU, after warm-up; "
                 f"median of {rounds} alternating rounds",
    }


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.data), indent=2))
