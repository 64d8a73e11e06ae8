"""Live training progress and the end-of-training timing summary (a Keras callback).

On a terminal: one live line per epoch, ``epoch 3/10  120/219 (55%)  312 img/s  loss 1.234
balanced_accuracy 0.456  ETA epoch 0:31, run 4:12``, then ``validating 12/40`` while the
validation pass runs; the line is wiped before the epoch's own line is printed. Outside a
terminal nothing is drawn (the one line per epoch stays as it was). At the end of ``fit``:
total time, images per second and the time per epoch (train + validation), so a user can size
the next run; with ``-v`` also one timing line per epoch.

Keras reports running (epoch-so-far) means of the loss and metrics in ``on_train_batch_end``,
so the live values are the running loss and metric.
"""

from __future__ import annotations

import os
import time

import keras

from skinzoo.progress import (
    LiveLine,
    format_clock,
    format_duration,
    format_rate,
    level,
    note,
)
from skinzoo.train.abort import AbortState

# Shown on the live line (short names: it must fit an 80-column terminal); first present wins.
LIVE_METRICS = (("balanced_accuracy", "bal_acc"), ("accuracy", "acc"))


class TrainProgress(keras.callbacks.Callback):
    """``epochs``: this fit's epochs; ``batch_size``: the global batch (images per step);
    ``offset``: epochs of earlier stages (two-stage runs count on); ``stage``: a name for the
    summary; ``enabled=False`` on non-chief workers; ``abort``: the job's
    :class:`~skinzoo.train.abort.AbortState` (a cut-short epoch is not timed)."""

    def __init__(self, epochs: int, batch_size: int, offset: int = 0, echo=print,
                 stage: str | None = None, enabled: bool = True, abort: AbortState | None = None):
        super().__init__()
        self.abort = abort if abort is not None else AbortState()
        self.epochs = epochs
        self.batch_size = batch_size
        self.offset = offset
        self.echo = echo
        self.stage = stage
        self.enabled = enabled
        # (train s, validation s, images, CPU s of this process's threads while training)
        self.epoch_times: list[tuple[float, float, int, float]] = []
        self.val_steps: int | None = None  # Keras does not say; known after the first validation
        self.fit_started = time.monotonic()
        self._reset_epoch(0)
        self._live = LiveLine(self.line)

    # state --------------------------------------------------------------------------------------
    def _reset_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.step = 0
        self.values: dict[str, float] = {}
        self.phase = "train"
        self.val_step = 0
        self.epoch_started = self.val_started = self.train_ended = time.monotonic()
        self.first_step_at = self.epoch_started
        # CPU time of all threads: with the wall time it shows whether every core is busy
        self.cpu_started = self.cpu_train_ended = time.process_time()

    @property
    def steps(self) -> int | None:
        return (self.params or {}).get("steps")

    @property
    def total_epochs(self) -> int:
        return (self.params or {}).get("epochs", self.epochs)

    def epoch_eta(self, now: float | None = None) -> float | None:
        """Seconds left in this epoch: the rest of the training steps at this epoch's pace,
        plus a validation pass as long as the last one."""
        now = now or time.monotonic()
        last_val = self.epoch_times[-1][1] if self.epoch_times else 0.0
        if self.phase == "val":
            if self.val_steps and self.val_step:
                return (now - self.val_started) / self.val_step * (self.val_steps - self.val_step)
            return max(last_val - (now - self.val_started), 0.0)
        if not self.steps or not self.step:
            return None
        return self.seconds_per_step(now) * (self.steps - self.step) + last_val

    def seconds_per_step(self, now: float) -> float:
        """From the second step on, the pace after the first step (which traces the graph)."""
        if self.step >= 2:
            return (now - self.first_step_at) / (self.step - 1)
        return (now - self.epoch_started) / max(self.step, 1)

    def run_eta(self, now: float | None = None) -> float | None:
        """Seconds left in this fit: this epoch, then the remaining epochs at the mean pace."""
        left_in_epoch = self.epoch_eta(now)
        if left_in_epoch is None:
            return None
        remaining = max(self.total_epochs - (self.epoch + 1), 0)
        if self.epoch_times:
            per_epoch = sum(t + v for t, v, *_ in self.epoch_times) / len(self.epoch_times)
        else:
            per_epoch = (time.monotonic() if now is None else now) - self.epoch_started + left_in_epoch
        return left_in_epoch + remaining * per_epoch

    def line(self) -> str:
        now = time.monotonic()
        head = f"epoch {self.offset + self.epoch + 1}/{self.offset + self.total_epochs}"
        if self.stage:
            head = f"{self.stage} {head}"
        elapsed = now - self.epoch_started
        if self.phase == "val":
            count = f"{self.val_step}/{self.val_steps}" if self.val_steps else f"{self.val_step}"
            body = f"validating {count} batches"
        elif self.phase == "done":
            return f"{head}  validated; saving history and checkpoints  {format_clock(elapsed)}"
        elif not self.step:  # the first step traces the graph (and the first epoch fills caches)
            return f"{head}  0/{self.steps or '?'}  preparing the first step  {format_clock(elapsed)}"
        else:
            pct = f" ({100 * self.step / self.steps:.0f}%)" if self.steps else ""
            rate = format_rate(self.batch_size, self.seconds_per_step(now), "img")
            body = f"{self.step}/{self.steps or '?'}{pct}  {rate}"
            body += "".join(f"  {k} {v:.3f}" for k, v in self.values.items())
        return f"{head}  {body}  ETA {format_clock(self.epoch_eta(now))}  run {format_clock(self.run_eta(now))}"

    # Keras hooks ------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self.epoch_times = []
        self.fit_started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_epoch(epoch)
        if self.enabled:
            self._live.start()

    def on_train_batch_end(self, batch, logs=None):
        self.step = batch + 1
        if self.step == 1:
            self.first_step_at = time.monotonic()
        logs = logs or {}
        shown = {"loss": logs.get("loss")}
        for name, short in LIVE_METRICS:
            if name in logs:
                shown[short] = logs[name]
                break
        self.values = {k: float(v) for k, v in shown.items() if v is not None}

    def on_test_begin(self, logs=None):
        if self.phase == "train":  # validation inside fit (evaluate() alone never calls us)
            self.train_ended = time.monotonic()
            self.cpu_train_ended = time.process_time()
            self.phase = "val"
            self.val_started = self.train_ended
            self.val_step = 0

    def on_test_batch_end(self, batch, logs=None):
        self.val_step = batch + 1

    def on_test_end(self, logs=None):
        if self.phase == "val":
            self.val_steps = max(self.val_steps or 0, self.val_step)
            self.phase = "done"

    def on_epoch_end(self, epoch, logs=None):
        self._live.stop()  # wiped before the epoch's own line is printed
        now = time.monotonic()
        if self.abort.aborted:
            return  # an aborted epoch (NaN, Ctrl-C) is not a finished one
        train_end = self.train_ended if self.phase == "done" else now
        cpu_end = self.cpu_train_ended if self.phase == "done" else time.process_time()
        train_s, val_s = train_end - self.epoch_started, now - train_end
        images = self.step * self.batch_size
        self.epoch_times.append((train_s, val_s, images, cpu_end - self.cpu_started))
        if self.enabled and level() == "verbose":
            note(f"  epoch {self.offset + epoch + 1}: {format_duration(train_s + val_s)} (train "
                 f"{format_duration(train_s)} at {format_rate(images, train_s, 'img')}, validation "
                 f"{format_duration(val_s)})")

    def on_train_end(self, logs=None):
        self._live.stop()
        if self.enabled and self.epoch_times:
            self.echo(timing_summary(self.epoch_times, time.monotonic() - self.fit_started, self.stage))


def timing_summary(epoch_times, total_seconds: float, stage: str | None = None) -> str:
    """``training took 4 min 12 s: 10 epochs, 24.0 s per epoch (train 21.5 s + validation
    2.5 s), 325 img/s at 186% CPU (2 cores) while training`` from ``[(train s, validation s,
    images, train CPU s), ...]``.

    With two epochs or more the figures are those of the epochs after the first: the first
    one also traces the graph and fills the caches, which a longer run does not repeat, so
    they are what a user can scale to size the next run."""
    n = len(epoch_times)
    steady = epoch_times[1:] if n >= 2 else epoch_times
    m = len(steady)
    train = sum(t for t, _, _, _ in steady)
    val = sum(v for _, v, _, _ in steady)
    images = sum(i for _, _, i, _ in steady)
    cpu = sum(c for _, _, _, c in steady)
    what = f"{stage} training" if stage else "training"
    first = (f"; epoch 1 took {format_duration(sum(epoch_times[0][:2]))} (graph tracing, cache filling)"
             if n >= 2 else " (includes graph tracing)")
    return (f"{what} took {format_duration(total_seconds)}: {n} epoch{'s' if n != 1 else ''}, "
            f"{format_duration((train + val) / m)} per epoch (train {format_duration(train / m)} + "
            f"validation {format_duration(val / m)}), {format_rate(images, train, 'img')} at "
            f"{100 * cpu / max(train, 1e-9):.0f}% CPU ({os.cpu_count()} cores) while training{first}")
