"""Training callbacks that make a run resumable and lose nothing.

Order matters and is fixed by :func:`standard_callbacks`: at the end of an epoch the history row is
written first, then the best checkpoint, then the resume backup. A kill between two of them is
harmless: on resume, history rows at or after the backup's epoch are dropped (the epoch is
trained again), so every epoch appears exactly once.

An epoch cut short (NaN loss, Ctrl-C) is *aborted*: it writes no history row, no checkpoint and
no backup, so the last good state stays on disk. The callbacks share that through one
:class:`~skinzoo.train.abort.AbortState` the job hands to each (``abort=``): NaNGuard and
InterruptHandler set it, the writers read it. A callback given none never sees an abort.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from skinzoo.fileio import read_json, write_json_atomic, write_text_atomic
from skinzoo.models.files import save_model_atomic
from skinzoo.train.abort import AbortState

log = logging.getLogger(__name__)


def _no_swap():
    import contextlib

    return contextlib.nullcontext()


def _own(abort: AbortState | None) -> AbortState:
    return abort if abort is not None else AbortState()


class HistoryLogger(keras.callbacks.Callback):
    """history.csv, one row per finished epoch, rewritten atomically each epoch."""

    def __init__(self, path, initial_epoch: int = 0, offset: int = 0, stage: str | None = None,
                 write: bool = True, abort: AbortState | None = None):
        super().__init__()
        self.abort = _own(abort)
        self.path = Path(path)
        self.write = write  # False on non-chief workers: the chief alone writes the run directory
        self.initial_epoch = initial_epoch
        self.offset = offset  # epochs of earlier stages, so a two-stage history counts on
        self.stage = stage
        self.rows: list[dict] = []

    def on_train_begin(self, logs=None):
        self.rows = []
        if self.path.exists():
            old = pd.read_csv(self.path)
            keep = old["epoch"] < self.offset + self.initial_epoch if "epoch" in old else old.index < 0
            self.rows = old[keep].to_dict("records")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()
        self._cpu_started = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        if self.abort.aborted:
            return
        row = {"epoch": self.offset + epoch}
        if self.stage:
            row["stage"] = self.stage
        row["lr"] = _current_lr(self.model)
        # wall seconds of the epoch incl. validation: time-to-accuracy figures read this column
        seconds = time.perf_counter() - getattr(self, "_epoch_started", time.perf_counter())
        row["seconds"] = round(seconds, 2)
        # CPU seconds of all the process's threads per wall second, incl. validation (200 = 2 cores busy)
        cpu = time.process_time() - getattr(self, "_cpu_started", time.process_time())
        row["cpu_percent"] = round(100 * cpu / seconds, 1) if seconds > 0 else float("nan")
        row.update({k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0})
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        if self.write:
            write_text_atomic(self.path, pd.DataFrame(self.rows).to_csv(index=False))


def _current_lr(model) -> float:
    try:
        lr = model.optimizer.learning_rate
        return float(keras.ops.convert_to_numpy(lr))
    except Exception:  # an optimizer without a readable rate must not stop training
        return float("nan")


class BestCheckpoint(keras.callbacks.Callback):
    """Best model on the monitored metric (atomic ``best.keras``) + resumable early stopping.

    Early stopping restores the best weights at the end; its state (best value, patience used)
    lives in ``state.json`` so that a resumed run stops at the same point an uninterrupted one would.
    """

    def __init__(self, model_path, state_path, monitor, mode="max", patience=0,
                 restore_best=True, write=True, window: int = 1, averaged=None,
                 abort: AbortState | None = None):
        super().__init__()
        self.abort = _own(abort)
        # window > 1: compare the mean of the last ``window`` values, so one lucky epoch in a
        # noisy validation curve is not taken for the best (the weights saved are the window's
        # last epoch's). ``averaged``: a WeightAverage whose weights are the ones to save.
        self.window = int(window)
        self.averaged = averaged
        self.recent: list[float] = []
        self.model_path = Path(model_path)
        self.state_path = Path(state_path)
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.restore_best = restore_best
        self.write = write  # False on non-chief workers
        self.best = None
        self.best_epoch = None
        self.wait = 0
        self._best_weights = None

    def _better(self, value) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_train_begin(self, logs=None):
        if self.state_path.exists():
            state = read_json(self.state_path, f"resume rebuilds it: skinzoo train --resume {self.state_path.parent}")
            self.best, self.best_epoch, self.wait = state.get("best"), state.get("best_epoch"), state.get("wait", 0)
            self.recent = list(state.get("recent", []))

    def on_epoch_end(self, epoch, logs=None):
        if self.abort.aborted:
            return
        logs = logs or {}
        if self.monitor not in logs:
            from skinzoo.errors import UsageError

            raise UsageError(f"--monitor {self.monitor} is not a logged metric",
                             f"choose one of: {', '.join(sorted(logs))}")
        self.recent = (self.recent + [float(logs[self.monitor])])[-self.window:]
        value = float(np.mean(self.recent))
        if math.isfinite(value) and self._better(value):
            with self.averaged.in_model() if self.averaged is not None else _no_swap():
                if self.write:
                    save_model_atomic(self.model, self.model_path)
                self._best_weights = self.model.get_weights() if self.restore_best else None
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
            if self.patience and self.wait >= self.patience:
                log.info("early stopping: %s has not improved for %d epochs (best %.4f at epoch %d)",
                         self.monitor, self.wait, self.best, self.best_epoch + 1)
                self.model.stop_training = True
        if self.write:
            write_json_atomic(self.state_path, {"best": self.best, "best_epoch": self.best_epoch,
                                                "wait": self.wait, "monitor": self.monitor,
                                                "recent": self.recent,
                                                "epochs_done": epoch + 1})

    def on_train_end(self, logs=None):
        if not self.restore_best:
            return
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)
        elif self.model_path.exists() and self.best is not None:
            self.model.load_weights(self.model_path)  # resumed run: best epoch was before the crash


class WeightAverage(keras.callbacks.Callback):
    """Exponential moving average of every model weight, BatchNorm statistics included.

    After each training step ``avg = d * avg + (1 - d) * w`` with the decay warmed up as
    ``d = min(decay, (1 + step) / (10 + step))`` (so early epochs are not dominated by the random
    initial weights). Validation runs on the averaged weights (swapped in around ``evaluate``),
    :class:`BestCheckpoint` saves them (:meth:`in_model`), and at the end of training they stay in
    the model, so ``best.keras`` and the final metrics are the averaged model's.

    Why not ``optimizer(use_ema=True)``: Keras averages only trainable variables, so the BatchNorm
    moving statistics would belong to the raw weights, and swapping them in needs private
    optimizer attributes. On resume the average restarts from the restored weights.
    """

    def __init__(self, decay: float = 0.999):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow = None
        self._saved = None
        self._step = None
        self._update = None

    def on_train_begin(self, logs=None):
        from skinzoo.runtime import tf as tf_runtime

        tf = tf_runtime()
        # floating weights only (never integer RNG states); BN moving statistics are included
        weights = [w for w in self.model.weights if "float" in str(w.dtype)]
        self._weights = weights
        self.shadow = [tf.Variable(w, trainable=False) for w in weights]
        self._saved = [tf.Variable(w, trainable=False) for w in weights]
        self._step = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        decay = self.decay

        @tf.function
        def update():  # one graph call per step, not one eager op per variable
            self._step.assign_add(1.0)
            d = tf.minimum(decay, (1.0 + self._step) / (10.0 + self._step))
            for avg, w in zip(self.shadow, weights, strict=True):
                value = tf.cast(w, avg.dtype)
                avg.assign(d * avg + (1.0 - d) * value)

        self._update = update

    def on_train_batch_end(self, batch, logs=None):
        self._update()

    def _swap_in(self):
        for saved, avg, w in zip(self._saved, self.shadow, self._weights, strict=True):
            saved.assign(w)
            w.assign(avg)

    def _swap_out(self):
        for saved, w in zip(self._saved, self._weights, strict=True):
            w.assign(saved)

    def on_test_begin(self, logs=None):
        if self.shadow is not None:
            self._swap_in()

    def on_test_end(self, logs=None):
        if self.shadow is not None:
            self._swap_out()

    def in_model(self):
        """Context manager: the averaged weights in the model for the ``with`` block."""
        import contextlib

        @contextlib.contextmanager
        def swapped():
            self._swap_in()
            try:
                yield
            finally:
                self._swap_out()

        return swapped()

    def on_train_end(self, logs=None):
        if self.shadow is not None:
            for avg, w in zip(self.shadow, self._weights, strict=True):
                w.assign(avg)  # the model leaves fit() as the averaged model


class SafeBackup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore that keeps two generations and never backs up an aborted epoch."""

    def __init__(self, backup_dir, write: bool = True, abort: AbortState | None = None):
        super().__init__(backup_dir, save_freq="epoch", double_checkpoint=True, delete_checkpoint=False)
        # Every worker restores from the (shared) backup; only the chief writes it.
        self.write = write
        self.abort = _own(abort)

    def on_epoch_end(self, epoch, logs=None):
        if self.write and not self.abort.aborted:
            super().on_epoch_end(epoch, logs)


class NaNGuard(keras.callbacks.Callback):
    """Stops at the first non-finite training loss and marks the epoch aborted in ``abort``."""

    def __init__(self, abort: AbortState):
        super().__init__()
        self.abort = abort
        self.epoch = 0

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.abort.set("nan", self.epoch, batch)
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


class InterruptHandler(keras.callbacks.Callback):
    """First Ctrl-C: finish the current batch, keep the last epoch's backup, stop. Second: abort."""

    def __init__(self, abort: AbortState):
        super().__init__()
        self.abort = abort
        self.requested = False
        self._previous = None

    def on_train_begin(self, logs=None):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("\ninterrupt: stopping after this batch (press Ctrl-C again to abort now)")

    def on_train_batch_end(self, batch, logs=None):
        if self.requested and not self.abort.aborted:
            self.abort.set("interrupt", getattr(self, "epoch", 0), batch)
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_end(self, logs=None):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class EpochPrinter(keras.callbacks.Callback):
    """One readable line per epoch (Keras' progress bar is noise in logs and CI)."""

    def __init__(self, epochs: int, offset: int = 0, echo=print, abort: AbortState | None = None):
        super().__init__()
        self.epochs, self.offset, self.echo = epochs, offset, echo
        self.abort = _own(abort)

    def on_epoch_end(self, epoch, logs=None):
        if self.abort.aborted:
            return
        logs = logs or {}
        keys = [k for k in ("loss", "accuracy", "balanced_accuracy", "auc", "val_loss", "val_accuracy",
                            "val_balanced_accuracy", "val_auc", "val_sensitivity", "val_specificity")
                if k in logs]
        parts = " ".join(f"{k}={float(logs[k]):.4f}" for k in keys)
        self.echo(f"epoch {self.offset + epoch + 1}/{self.offset + self.epochs}  {parts}")
