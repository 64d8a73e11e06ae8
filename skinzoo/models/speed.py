"""Measured training and inference speed of zoo models on the machine at hand.

``skinzoo models --speed`` prints these figures so a model can be chosen by its measured cost here,
not by its parameter count. Each model is built with random weights at its default size (or the
size asked for) and default batch size, compiled as ``skinzoo train`` compiles it (Adam,
cross-entropy), and fed one synthetic in-memory batch: the figures are the models' step limits,
with no input pipeline in the way. One step of each kind is a warm-up (graph tracing, kernel
selection) and is not timed; then a few timed steps each. CPU use while training is the process's
CPU time (all threads) over the wall time of the timed steps, x100: on 2 cores, 200% means both
are busy, and a figure near 100% says the model's ops are too small to keep more than one core
busy at this size and batch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from skinzoo.errors import SkinzooError, UsageError
from skinzoo.models.registry import build_model, get_model_info
from skinzoo.runtime import usable_cores

NUM_CLASSES = 7  # HAM10000's; the head's size barely changes the step cost
DEFAULT_STEPS = 3


@dataclass(frozen=True)
class Speed:
    """One model's measured speed; ``error`` is set (and the figures are None) when it failed."""

    name: str
    size: int
    batch: int
    train_ips: float | None = None  # images/s of optimizer steps (forward + backward + update)
    predict_ips: float | None = None  # images/s of inference (forward only, training=False)
    train_cpu_percent: float | None = None  # process CPU time / wall x100 while training
    params: int | None = None
    error: str | None = None


def measure_speed(name: str, size: int | None = None, batch: int | None = None,
                  steps: int = DEFAULT_STEPS, seed: int = 0) -> Speed:
    """Train and inference images/s of ``name`` after one untimed warm-up step of each.

    A model that cannot be built at ``size`` (too small for its layers) is returned with
    ``error`` set instead of raising, so a table over many models still completes.
    """
    from skinzoo.runtime import tf

    tf()
    import keras

    info = get_model_info(name)
    size = size or info.default_size
    batch = batch or info.default_batch
    if steps < 1 or batch < 1:
        raise UsageError(f"steps ({steps}) and batch ({batch}) must be at least 1")
    keras.utils.set_random_seed(seed)
    try:
        model = build_model(info.name, NUM_CLASSES, input_shape=size)
    except SkinzooError as err:
        return Speed(info.name, size, batch, error=err.message)
    try:
        images, targets = synthetic_batch(batch, size, seed)
        model.compile(optimizer=keras.optimizers.Adam(1e-4),
                      loss=keras.losses.CategoricalCrossentropy())
        train_s, train_cpu = _seconds_per_step(lambda: model.train_on_batch(images, targets), steps)
        predict_s, _ = _seconds_per_step(lambda: model.predict_on_batch(images), steps)
        return Speed(info.name, size, batch, train_ips=round(batch / train_s, 1),
                     predict_ips=round(batch / predict_s, 1),
                     train_cpu_percent=round(100 * train_cpu, 1), params=model.count_params())
    finally:
        keras.backend.clear_session()  # the next model starts from an empty graph and memory


def synthetic_batch(batch: int, size: int, seed: int = 0):
    """float32 images in [0, 255] (what the pipeline feeds) and one-hot targets."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8).astype(np.float32)
    targets = np.eye(NUM_CLASSES, dtype=np.float32)[rng.integers(0, NUM_CLASSES, batch)]
    return images, targets


def _seconds_per_step(step, steps: int) -> tuple[float, float]:
    """(wall seconds per step, CPU seconds of this process per wall second) over ``steps``."""
    step()  # warm-up: traces the step function; not timed
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    wall = time.perf_counter() - t0
    return wall / steps, (time.process_time() - cpu0) / wall


def machine_is_shared() -> str | None:
    """A one-line note when other processes load the CPU (figures are then lower), else None."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = usable_cores()
    if load > cores:
        return (f"note: load average {load:.1f} on {cores} cores: other processes share the CPU, "
                "so these figures are lower than on an idle machine; compare models measured "
                "in the same run")
    return None
