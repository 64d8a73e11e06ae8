"""Workarounds for Keras 3 (checked on 3.15) under MultiWorkerMirroredStrategy, in one place.

Keras 3's TensorFlow trainer still has two code paths that fail with TF's collective strategy:

1. ``fit`` first averages one *distributed* input batch with ``strategy.reduce`` (eagerly) to
   build the metrics symbolically; the collective reduce of a PerReplica value raises
   "Attempt to convert a value (PerReplica...)". We build from one local batch instead.
2. The scalar logs a step returns are reduced with ``strategy.reduce("MEAN", v, axis=0)``, which
   fails for 0-d values ("Invalid reduction dimension 0 for input with 0 dimensions"). We reduce
   scalars across replicas with ``axis=None`` (the same mean; metric states are already synced).

Both are applied only when the strategy is multi-worker; single-machine training never sees them.
Delete this module once Keras fixes these paths (tests/train/test_processes.py will tell).
"""

from __future__ import annotations

_PATCHED = False


def prebuild_for_multi_worker(model, dataset, strategy) -> None:
    patch_reduce_per_replica()
    batch = next(iter(dataset))
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def patch_reduce_per_replica() -> None:
    global _PATCHED
    if _PATCHED:
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

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

    trainer.reduce_per_replica = reduce_per_replica
    _PATCHED = True
