"""Primitive ResNet-152 vs keras.applications.ResNet152, and inference speed of the whole zoo.

Figures:
- ``train_ips_primitive`` / ``train_ips_keras``: training images/s (Adam, one fixed batch,
  ``train_on_batch``) of the zoo's ResNet-152 (primitive layers, classic 1000-way head) and of
  keras.applications.ResNet152 with the same weights, batch and dtype. The two are timed in
  alternating rounds so load from other processes hits both alike; the ratio is the median of
  the per-round ratios (target >= 0.95).
- ``max_abs_diff``: largest difference of their outputs on the batch after the weight copy
  (must be ~0: same function).
- ``infer_ips_<model>``: inference images/s (``predict_on_batch``) of every registered model at
  its default input size and batch (quick: at most 64 px / batch 8, fewer calls).
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def _settings(quick: bool) -> dict:
    if quick:
        return {"side": 64, "batch": 8, "rounds": 3, "steps": 2, "infer_cap": 64,
                "infer_batch": 8, "infer_calls": 2}
    return {"side": 224, "batch": 16, "rounds": 5, "steps": 3, "infer_cap": None,
            "infer_batch": None, "infer_calls": 5}


def _time_steps(model, x, y, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * len(x) / (time.perf_counter() - start)


def compare_resnet152(side: int, batch: int, rounds: int, steps: int) -> dict:
    """Train-step speed of the primitive ResNet-152 relative to keras.applications'."""
    import keras

    from skinzoo.models import build_model
    from skinzoo.models.weights import copy_weights_by_name

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, side, side, 3)).astype("float32")
    x_caffe = keras.applications.resnet.preprocess_input(x.copy())  # keras model's input
    y = np.eye(1000, dtype="float32")[rng.integers(0, 1000, batch)]

    reference = keras.applications.ResNet152(weights=None, input_shape=(side, side, 3))
    ours = build_model("resnet152", 1000, input_shape=(side, side, 3), dense=(), dropout=0.0)
    copy_weights_by_name(reference, ours, required=[la.name for la in ours.layers if la.weights])
    diff = float(np.abs(ours.predict_on_batch(x) - reference.predict_on_batch(x_caffe)).max())

    for model in (ours, reference):
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
    build_s = {}
    for label, model, inputs in (("primitive", ours, x), ("keras", reference, x_caffe)):
        start = time.perf_counter()
        model.train_on_batch(inputs, y)  # traces the train step
        build_s[label] = time.perf_counter() - start

    ours_ips, keras_ips, ratios = [], [], []
    for r in range(rounds):
        # alternate which model goes first so a drift in machine load cancels out
        order = [("p", ours, x), ("k", reference, x_caffe)]
        if r % 2:
            order.reverse()
        got = {label: _time_steps(model, inputs, y, steps) for label, model, inputs in order}
        ours_ips.append(got["p"])
        keras_ips.append(got["k"])
        ratios.append(got["p"] / got["k"])
    return {
        "train_ips_primitive": round(statistics.median(ours_ips), 2),
        "train_ips_keras": round(statistics.median(keras_ips), 2),
        "ratio": round(statistics.median(ratios), 3),
        "max_abs_diff": diff,
        "first_step_s_primitive": round(build_s["primitive"], 1),
        "first_step_s_keras": round(build_s["keras"], 1),
    }


def zoo_inference(cap: int | None, batch: int | None, calls: int) -> dict:
    """Inference images/s for every registered model at its default size (or ``cap``)."""
    import keras

    from skinzoo.errors import ModelError
    from skinzoo.models import build_model, get_model_info, list_models

    figures = {}
    for name in list_models():
        info = get_model_info(name)
        side = info.default_size if cap is None else min(cap, info.default_size)
        n = batch or info.default_batch
        try:
            model = build_model(name, 7, input_shape=(side, side, 3))
        except ModelError:  # too small for this architecture (AlexNet): use its own size
            side = info.default_size
            model = build_model(name, 7, input_shape=(side, side, 3))
        x = np.random.default_rng(0).uniform(0, 255, (n, side, side, 3)).astype("float32")
        model.predict_on_batch(x)  # trace
        start = time.perf_counter()
        for _ in range(calls):
            model.predict_on_batch(x)
        figures[f"infer_ips_{name}@{side}"] = round(calls * n / (time.perf_counter() - start), 1)
        del model
        keras.backend.clear_session()
    return figures


def run(quick: bool = False, data: str | None = None) -> dict:
    """Benchmark contract (docs/CONTRACTS.md "Benchmarks"); ``data`` is not used."""
    from skinzoo.runtime import tf

    tf()
    s = _settings(quick)
    resnet = compare_resnet152(s["side"], s["batch"], s["rounds"], s["steps"])
    ratio = resnet.pop("ratio")
    figures = {**resnet, **zoo_inference(s["infer_cap"], s["infer_batch"], s["infer_calls"])}
    return {
        "name": "resnet",
        "baseline": "keras.applications.ResNet152 (same weights, batch, dtype float32)",
        "figures": figures,
        "ratios": {"resnet152_train_primitive_vs_keras": ratio},
        "targets": {"resnet152_train_primitive_vs_keras": ">= 0.95"},
        "notes": (
            f"train: {s['side']} px, batch {s['batch']}, {s['rounds']} alternating rounds x "
            f"{s['steps']} steps, median; inference at default sizes"
            + (" capped at 64 px, batch 8" if quick else "")
            + "; the CPU is shared with other processes, expect +-15-25% noise per figure."
        ),
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
