"""Learning-rate schedules by name. Step-based, so they resume exactly with the optimizer's step.

``plateau`` is not a schedule but a callback (ReduceLROnPlateau); :func:`make_schedule` returns a
constant rate for it and :func:`schedule_callbacks` the callback.
"""

from __future__ import annotations

import math

import keras


@keras.saving.register_keras_serializable(package="skinzoo")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle policy: cosine rise from max_lr/div to max_lr over ``pct_start`` of the steps,
    then cosine fall to max_lr/final_div."""

    def __init__(self, max_lr, total_steps, pct_start=0.3, div=25.0, final_div=1e4):
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div = float(div)
        self.final_div = float(final_div)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        up_steps = max(1.0, self.pct_start * self.total_steps)
        down_steps = max(1.0, self.total_steps - up_steps)
        start, peak, end = self.max_lr / self.div, self.max_lr, self.max_lr / self.final_div
        up = ops.clip(step / up_steps, 0.0, 1.0)
        down = ops.clip((step - up_steps) / down_steps, 0.0, 1.0)
        rising = start + (peak - start) * (1 - ops.cos(math.pi * up)) / 2
        falling = end + (peak - end) * (1 + ops.cos(math.pi * down)) / 2
        return ops.where(step < up_steps, rising, falling)

    def get_config(self):
        return dict(max_lr=self.max_lr, total_steps=self.total_steps, pct_start=self.pct_start,
                    div=self.div, final_div=self.final_div)


def make_schedule(name: str, lr: float, steps_per_epoch: int, epochs: int, warmup_epochs: float = 1.0):
    """A learning rate (float) or a LearningRateSchedule for ``name``."""
    total = max(1, steps_per_epoch * epochs)
    if name in ("constant", "plateau"):
        return lr
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total, alpha=0.01)
    if name == "warmup-cosine":
        warmup = min(total - 1, max(0, int(round(warmup_epochs * steps_per_epoch))))
        return keras.optimizers.schedules.CosineDecay(
            lr * 0.01, decay_steps=max(1, total - warmup), alpha=0.01,
            warmup_target=lr, warmup_steps=warmup)
    if name == "onecycle":
        return OneCycle(lr, total)
    if name == "step":  # x0.1 at 50% and 75% of training, the classic ImageNet recipe shape
        bounds = sorted({max(1, total // 2), max(2, (3 * total) // 4)})
        values = [lr * 0.1**i for i in range(len(bounds) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)
    raise ValueError(f"unknown schedule {name!r}")


def schedule_callbacks(name: str, monitor: str, mode: str) -> list:
    if name == "plateau":
        return [keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=0.3,
                                                  patience=2, min_lr=1e-7, verbose=1)]
    return []


def lr_at(schedule, step: int) -> float:
    """The learning rate a schedule (or constant) gives at ``step``: for summaries and tests."""
    if isinstance(schedule, int | float):
        return float(schedule)
    return float(keras.ops.convert_to_numpy(schedule(step)))
