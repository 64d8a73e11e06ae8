"""Snapshot checkpoints: the weights of K epochs of one run, for a snapshot ensemble.

``skinzoo train --snapshots K`` keeps K full models in ``RUN/snapshots/epoch_NNN.keras`` (NNN =
the 1-based epoch number the progress lines print); ``skinzoo ensemble RUN --snapshots`` averages
them (:mod:`skinzoo.evaluate.ensemble_run`).

Which epochs: K evenly spaced over the second half of the planned epochs, always ending with the
last one (:func:`snapshot_epochs`). Why not simply the last K: with the default warmup-cosine
schedule the learning rate is near zero over the last epochs, so their weights barely differ and
averaging them adds almost nothing; epochs spread over the second half (when the model is already
good but the rate still moves it) disagree more, which is what an ensemble needs. When K is at
least half the epochs this is the same as the last K.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import keras
import numpy as np

from skinzoo.models.files import save_model_atomic
from skinzoo.rundir import snapshot_dir, snapshot_name

# An epoch cut short (NaNGuard, InterruptHandler) is recorded in the job's AbortState, which the
# job hands to this callback too (``abort=``), so a bad epoch is never saved.
from skinzoo.train.abort import AbortState


def snapshot_epochs(epochs: int, k: int) -> list[int]:
    """0-based epoch indices (within a fit of ``epochs`` epochs) whose weights are kept: ``k``
    evenly spaced over the second half, the last epoch included; ``[]`` for ``k = 0``; all
    epochs when ``k >= epochs``."""
    if k <= 0 or epochs <= 0:
        return []
    k = min(k, epochs)
    span = max(k, math.ceil(epochs / 2))  # epochs the snapshots are spread over, ending at the last
    back = np.rint(np.linspace(0, span - 1, k)).astype(int)  # epochs before the last; k = 1 -> [0]
    return sorted({epochs - 1 - int(b) for b in back})


class SnapshotSaver(keras.callbacks.Callback):
    """Writes the model atomically to ``RUN/snapshots/epoch_NNN.keras`` at the end of each epoch
    in :func:`snapshot_epochs`. ``offset``: epochs of an earlier stage (two-stage training), so the
    file names count on like the progress lines. ``averaged``: a WeightAverage whose weights are
    the ones to keep (as ``best.keras`` does). ``abort``: the job's AbortState; an epoch cut short
    (NaN, Ctrl-C) writes nothing. A resumed run rewrites the snapshot of an epoch it trains again."""

    def __init__(self, run_path, epochs: int, k: int, offset: int = 0, averaged=None,
                 write: bool = True, abort: AbortState | None = None):
        super().__init__()
        self.abort = abort if abort is not None else AbortState()
        self.folder = snapshot_dir(run_path)
        self.epochs = set(snapshot_epochs(epochs, k))
        self.offset = int(offset)
        self.averaged = averaged
        self.write = write  # False on non-chief workers: the chief alone writes the run directory
        self.written: list[Path] = []

    def on_epoch_end(self, epoch, logs=None):
        if epoch not in self.epochs or not self.write or self.abort.aborted:
            return
        path = self.folder / snapshot_name(self.offset + epoch + 1)
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.averaged.in_model() if self.averaged is not None else contextlib.nullcontext():
            save_model_atomic(self.model, path)
        self.written.append(path)


def snapshot_callbacks(k: int, run_path, epochs: int, offset: int = 0, averaged=None,
                       write: bool = True, abort: AbortState | None = None) -> list:
    """``[SnapshotSaver]`` when ``k > 0`` (``skinzoo train --snapshots K``), else ``[]``."""
    return [SnapshotSaver(run_path, epochs, k, offset, averaged, write, abort)] if k > 0 else []
