"""Preemption of multi-worker training: SIGTERM from SLURM or Kubernetes on any worker.

TensorFlow's ``PreemptionCheckpointHandler`` coordinates it: the worker that receives the signal
tells the others through the coordination service and every worker stops after the same step.
The interrupted epoch is dropped (no history row, no checkpoint, no backup) and the job exits 143
with the resume command; a restarted job restores the last finished epoch on every worker from
the chief's backup (BackupAndRestore), so each epoch appears once in history.csv.
"""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
from pathlib import Path

import keras

from skinzoo.errors import TrainingError

log = logging.getLogger(__name__)


class TrainingPreempted(TrainingError):
    exit_code = 143  # 128 + SIGTERM, what schedulers expect from a job they terminated


class PreemptionGuard(keras.callbacks.Callback):
    """Stops every worker after the same step when any of them receives SIGTERM.

    TensorFlow's PreemptionCheckpointHandler watches SIGTERM on each worker and agrees on the
    step through the coordination service. Its own checkpoint would be mid-epoch, which Keras
    cannot resume from; skinzoo resumes whole epochs (BackupAndRestore), so the handler saves
    nothing (``save_fn``) and its exit marks the epoch aborted instead of calling sys.exit: the
    last finished epoch's backup, history and best model stay exactly as they were.
    The handler's coordination keys can be used once per process: one guarded fit() per run.
    """

    def __init__(self, strategy, abort):
        super().__init__()
        self.strategy = strategy
        self.abort = abort  # the job's AbortState (skinzoo.train.abort)
        self.handler = None
        self.epoch = 0
        self.batch = 0
        self._scratch = None
        self._previous_sigterm = None

    def on_train_begin(self, logs=None):
        from skinzoo.runtime import tf

        t = tf()
        # The handler restores from (and on non-chief workers deletes) its own checkpoint folder:
        # a private scratch folder, never the shared run directory.
        self._scratch = Path(tempfile.mkdtemp(prefix="skinzoo-preemption-"))
        self._previous_sigterm = signal.getsignal(signal.SIGTERM)
        config = t.distribute.experimental.TerminationConfig(
            exit_fn=self.stop, save_fn=lambda *args, **kwargs: None)
        # Made here, in the main thread, because it installs its SIGTERM handler.
        self.handler = t.distribute.experimental.PreemptionCheckpointHandler(
            self.strategy.cluster_resolver, t.train.Checkpoint(), str(self._scratch / "checkpoint"),
            termination_config=config)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.batch = batch
        if self.handler is not None and not self.abort.aborted:
            self.handler.save_checkpoint_if_preempted()

    def stop(self):
        log.warning("preemption signal in the cluster: every worker stops after this step")
        self.abort.set("preempted", self.epoch, self.batch)
        self.model.stop_training = True

    def on_train_end(self, logs=None):
        # Stop the handler's peer watcher while every worker is still up: left running, it
        # dies with a traceback when the chief (the coordination service) exits first. TF 2.21
        # has no public call for this (its __del__ does it, but the thread keeps it alive).
        stop_watching = getattr(self.handler, "_stop_cluster_wise_termination_watcher_thread", None)
        if stop_watching is not None:
            stop_watching()
        self.handler = None
        if self._previous_sigterm is not None:  # skinzoo's own SIGTERM handling outside training
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def preempted_error(epoch: int, run_path, is_chief: bool) -> TrainingPreempted:
    """The error a worker stopped by a preemption signal exits with (143, resume hint)."""
    where = str(run_path) if is_chief else "<the chief's run directory>"
    return TrainingPreempted(f"preempted (SIGTERM) during epoch {epoch + 1}: every worker stopped after the same step; "
            "the last finished epoch's backup, history.csv and best.keras are kept",
            f"restart every worker with: skinzoo train --resume {where} "
            "(examples/slurm/job.sbatch does this on requeue)")
