"""Workarounds for Keras 3 under MultiWorkerMirroredStrategy, in one place, live only while a
multi-worker ``model.fit`` runs.

Keras 3's TensorFlow trainer still has two code paths that fail with TF's collective strategy
(checked on the versions in skinzoo/keras_version.py):

1. ``fit`` first averages one *distributed* input batch with ``strategy.reduce`` (eagerly) to
   build the metrics symbolically; the collective reduce of a PerReplica value raises
   "Attempt to convert a value (PerReplica...)". We build from one local batch instead.
2. The scalar logs a step returns are reduced with ``strategy.reduce("MEAN", v, axis=0)``, which
   fails for 0-d values ("Invalid reduction dimension 0 for input with 0 dimensions"). We reduce
   scalars across replicas with ``axis=None`` (the same mean; metric states are already synced).

:func:`multi_worker_fit` applies both for one ``with`` block around ``model.fit`` and puts Keras's
own functions back when the block ends, so single-machine training, evaluation and anything else
in the process never see them. On a Keras outside the checked range nothing is patched (one
warning says so). tests/train/test_keras_compat_multiworker.py reproduces each bug with the other
worked around and fails with "delete workaround ..." once a Keras release fixes it.
"""

from __future__ import annotations

import contextlib

from skinzoo.errors import TrainingError
from skinzoo.keras_version import (
    PRIVATE_USES,
    is_checked,
    range_text,
    version_text,
    warn_unchecked_once,
)

BUILD = "multi-worker symbolic build"
REDUCE = "multi-worker scalar reduce"


@contextlib.contextmanager
def multi_worker_fit(model, dataset, strategy):
    """Within the block, ``model.fit(dataset)`` works under the multi-worker ``strategy``."""
    with local_batch_build(model, dataset, strategy), scalar_safe_reduce():
        yield


@contextlib.contextmanager
def local_batch_build(model, dataset, strategy):
    """Workaround 1: build ``model`` (weights, loss, metrics) from one local batch of ``dataset``;
    while the block runs, Keras's distributed pre-build is skipped for this model only."""
    if not is_checked(BUILD):
        warn_unchecked_once(BUILD, "training runs without it")
        yield
        return
    from keras.src.backend.tensorflow import trainer

    _require(trainer.TensorFlowTrainer, "_maybe_symbolic_build", BUILD)
    _require(model, "_symbolic_build", BUILD)
    batch = next(iter(dataset))
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    original = trainer.TensorFlowTrainer._maybe_symbolic_build

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self is model:  # already built above; the distributed reduce here is what fails
            return None
        return original(self, iterator=iterator, data_batch=data_batch)

    with _replaced(trainer.TensorFlowTrainer, "_maybe_symbolic_build", maybe_symbolic_build):
        yield


@contextlib.contextmanager
def scalar_safe_reduce():
    """Workaround 2: cross-worker means of 0-d step logs use ``axis=None``. The train and test
    functions traced inside the block keep it; functions traced later get Keras's own."""
    if not is_checked(REDUCE):
        warn_unchecked_once(REDUCE, "training runs without it")
        yield
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    _require(trainer, "reduce_per_replica", REDUCE)
    _require(trainer, "_collective_all_reduce_multi_worker", REDUCE)
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            def reduce_one(v):
                rank = len(getattr(v, "shape", ()) or ())
                if rank == 0 or reduction == "auto":
                    return strategy.reduce("MEAN", v, axis=None)
                return strategy.reduce("MEAN", v, axis=0)

            return tree.map_structure(reduce_one, values)
        return original(values, strategy, reduction)

    with _replaced(trainer, "reduce_per_replica", reduce_per_replica):
        yield


@contextlib.contextmanager
def _replaced(owner, name: str, value):
    """``owner.name`` is ``value`` inside the block and what it was before, after it."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _require(owner, name: str, key: str) -> None:
    if not hasattr(owner, name):
        checked = range_text(PRIVATE_USES[key].checked)
        raise TrainingError(
            f"Keras {version_text()} has no {getattr(owner, '__name__', type(owner).__name__)}.{name}, "
            f"which the multi-worker workaround '{key}' needs (checked on keras{checked})",
            f"install keras{checked} (the version setup.cfg pins), or train on one machine")
