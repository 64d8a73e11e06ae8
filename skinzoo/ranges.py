"""The allowed range of every numeric option, defined once.

The command line turns each :class:`Range` into a Click type (``skinzoo_cli.ranges``), so a bad
value stops at parse time with exit 2; :func:`check_config_ranges` applies the same ranges to
values read from a ``config.toml`` (or a resumed run's), so a file cannot smuggle in what the
command line refuses. Change a range here and both follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from skinzoo.errors import UsageError


@dataclass(frozen=True)
class Range:
    """``kind`` int or float; ``low``/``high`` inclusive unless ``low_open``/``high_open``."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind is int and not float(value).is_integer():
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def describe(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"{left}{_num(self.low)}, {_num(self.high)}{right}"


def _num(x) -> str:
    if x is None:
        return "inf"
    return f"{int(x)}" if float(x).is_integer() else f"{x:g}"


# numpy/TensorFlow seeds must fit in an unsigned 32-bit integer.
SEED = Range(int, 0, 2**32 - 1)
# Larger inputs ran for 40 s before dying in TensorFlow; 2048 px is beyond every zoo model's use.
IMG_SIZE = Range(int, 16, 2048)
BATCH_SIZE = Range(int, 1, 8192)
FRACTION = Range(float, 0, 1, high_open=True)  # --val / --test shares
TTA_VIEWS = Range(int, 1, 8)
BOOTSTRAP = Range(int, 1, 100_000)
TOP_K = Range(int, 1, 1000)
FOLDS = Range(int, 2, 100)

TRAIN_RANGES: dict[str, Range] = {
    "val": FRACTION,
    "test": FRACTION,
    "img_size": IMG_SIZE,
    "batch_size": BATCH_SIZE,
    "epochs": Range(int, 1, 100_000),
    "lr": Range(float, 0, 10, low_open=True),
    "weight_decay": Range(float, 0, 1),
    "clipnorm": Range(float, 0, 1e6, low_open=True),
    "label_smoothing": Range(float, 0, 1, high_open=True),
    "warmup_epochs": Range(float, 0, 100_000),
    "early_stopping": Range(int, 0, 100_000),  # 0 = off
    "finetune_blocks": Range(int, 0, 1000),
    "finetune_epochs": Range(int, 1, 100_000),
    "finetune_lr": Range(float, 0, 10, low_open=True),
    "embed_views": Range(int, 1, 64),
    "snapshots": Range(int, 0, 100),  # 0 = off; each snapshot is a full .keras file on disk
    "cpu_replicas": Range(int, 0, 64),  # 0 = off (no logical CPU devices)
    "worker_index": Range(int, 0, 4095),
    "seed": SEED,
    "dropout": Range(float, 0, 1, high_open=True),
    "drop_path": Range(float, 0, 1, high_open=True),
}

# What the training callbacks log (skinzoo.train.metrics), each also as val_<name>;
# sensitivity and specificity exist for two-class tasks only.
LOGGED_METRICS = ("loss", "accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity")


def check_config_ranges(values: dict) -> None:
    """UsageError (exit 2) for the first out-of-range or inconsistent training option.

    ``values``: option name -> value (a TrainConfig's fields); None means "not set"."""
    for name, allowed in TRAIN_RANGES.items():
        value = values.get(name)
        if value is not None and not allowed.contains(value):
            raise UsageError(f"{name} = {value!r} is out of range: allowed {allowed.describe()}",
                             f"set --{name.replace('_', '-')} (or {name} in the config file) "
                             "within that range")
    _check_workers(values.get("worker_hosts"), values.get("worker_index"))
    _check_monitor(values.get("monitor"))


def _check_workers(hosts, index) -> None:
    if index is None:
        return
    listed = [h for h in str(hosts or "").split(",") if h.strip()]
    if not listed:
        raise UsageError(f"worker_index = {index} was given without worker hosts",
                         "pass --worker-hosts host:port,host:port too, or drop --worker-index")
    if index >= len(listed):
        raise UsageError(f"worker_index = {index} but --worker-hosts lists {len(listed)} host(s) "
                         f"(indexes 0..{len(listed) - 1})", "use this host's position in the list")


def _check_monitor(monitor) -> None:
    if monitor is None:
        return
    name = str(monitor)
    base = name[4:] if name.startswith("val_") else name
    if base not in LOGGED_METRICS:
        choices = ", ".join(f"val_{m}" for m in LOGGED_METRICS)
        raise UsageError(f"monitor = {name!r} is not a metric training logs",
                         f"use one of {choices} (or the same without val_)")
