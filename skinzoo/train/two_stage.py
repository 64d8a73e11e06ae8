"""Two-stage transfer learning: embed once, train the head on embeddings, assemble.

With a frozen backbone, recomputing it every epoch is pure waste (the notebooks' 15–30 min
epochs). Stage 1 computes each training/validation image's pooled backbone embedding once (K
augmented views per training image if asked), caches them on disk, optionally rebalances the
training embeddings with SMOTE / SMOTE-Tomek / SMOTE-ENN (the one place SMOTE is meaningful for
images), and trains the head alone (seconds per epoch). The head's weights are then copied by layer
name into the full model, which is an ordinary Keras model like any other in the zoo.

The embedding pass is one tf.data stream (parallel decoding, prefetched, so it overlaps the
backbone) into one traced inference function with the frozen weights folded in (:class:`Embedder`);
memory holds a few batches of images and the (N, D) embeddings.

The cache key covers the model name, a fingerprint of the backbone's actual weights, the input
size, resize mode, hair removal, the view (augmentation seed) and every image file's path, size
and modification time, so a stale embedding is never reused.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from skinzoo import runtime
from skinzoo.data.pipeline import image_hw, make_image_dataset, undecodable_error
from skinzoo.fileio import atomic_path, write_json_atomic
from skinzoo.progress import track
from skinzoo.train.abort import AbortState
from skinzoo.train.parts import (
    build_for_training,
    head_options,
    make_loss,
    make_optimizer,
    raise_if_aborted,
    require_shared_head,
)
from skinzoo.train.prepare import Prepared, start_lines

log = logging.getLogger(__name__)
# 2: one seeded augmentation stream per view (1 restarted it every 512 images), frozen weights
EMBEDDING_CACHE_VERSION = 2
# The head's steps are tiny (a few dense layers on a batch of vectors), so Keras' per-step
# overhead dominates them: 64 steps per call of the training function cut the head's steady epoch
# CPU 1.35x (EfficientNetB0 embeddings, 2,398 x 1,280, batch 32; same losses). Per-batch callbacks
# (progress, NaN guard) then run every 64 steps; the head trains in seconds.
HEAD_STEPS_PER_EXECUTION = 64


def weights_fingerprint(model) -> str:
    """A short hash of every weight of ``model`` (cheap next to computing embeddings)."""
    digest = hashlib.sha1()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:16]


def embedding_cache_key(model_name, fingerprint, img_size, resize, hair_removal, view, augment, paths) -> str:
    digest = hashlib.sha1()
    digest.update(repr((EMBEDDING_CACHE_VERSION, model_name, fingerprint, img_size, resize,
                        hair_removal, view, augment)).encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


class Embedder:
    """The embedding pass of a feature extractor: one inference function for every batch, built
    on first use and shared by all the ``compute_embeddings`` calls of a run (train views, val).

    ``fingerprint`` (the cache key's weights hash) and the function are made when first needed,
    the function only on a cache miss. It is one trace over float32 ``(None, h, w, 3)`` batches
    (a shorter last batch does not trace again) with the weights folded in as constants, so
    TensorFlow's graph optimiser precomputes whatever depends on weights alone (BatchNorm's scale
    and shift) and fuses more of the graph into oneDNN kernels: measured 1.25x less CPU per image
    than the same ``tf.function`` over variables and 1.35x less than ``model.predict``
    (EfficientNetB0, 128 px; bench/README.md "two_stage"). Outputs are float32 whatever the
    model's dtype policy.
    """

    def __init__(self, extractor, img_size, fingerprint: str | None = None):
        self.extractor = extractor
        self.img_size = image_hw(img_size)
        self._fingerprint = fingerprint
        self._function = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.extractor)
        return self._fingerprint

    def prepare(self):
        """Build and trace the inference function now (otherwise on the first batch)."""
        if self._function is None:
            self._function = inference_function(self.extractor, self.img_size)
        return self._function

    def __call__(self, images) -> np.ndarray:
        return np.asarray(self.prepare()(images))


def inference_function(extractor, img_size):
    """``extractor(x, training=False)`` as one concrete TF function of float32 ``(None, h, w, 3)``
    batches returning float32, with variables folded into constants where TensorFlow allows."""
    tf = runtime.tf()
    h, w = image_hw(img_size)
    concrete = tf.function(lambda x: tf.cast(extractor(x, training=False), tf.float32)) \
        .get_concrete_function(tf.TensorSpec([None, h, w, 3], tf.float32))
    folded = _constants_folded(concrete)

    def run(images):
        return tf.nest.flatten(folded(images))[0]

    return run


def _constants_folded(concrete):
    """``concrete`` with its variables turned into constants, or ``concrete`` unchanged when this
    TensorFlow lacks the (private, TF >= 2.2) converter: the same outputs, ~20% more CPU.

    Constant weights let the graph optimiser precompute BatchNormalization's scale and shift and
    fuse them into the convolutions; variables could change between calls, so it cannot."""
    try:
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )
    except ImportError:  # private API: gated, never required
        log.info("TensorFlow has no convert_variables_to_constants_v2; embedding unfolded")
        return concrete
    return convert_variables_to_constants_v2(concrete)


def compute_embeddings(extractor, paths, img_size, batch_size, resize="crop", hair_removal=False,
                       view=0, augment="none", seed=0, cache_dir=None, model_name="model",
                       fingerprint=None, echo=print) -> np.ndarray:
    """Embeddings (N, D) float32 for ``paths`` in order; view 0 is un-augmented, view v > 0
    augmented (seed ``seed + 1000 * v``). ``extractor``: a feature-extractor model, or an
    :class:`Embedder` of one to share its traced function between calls.

    One pass over one tf.data stream: decoding runs in parallel threads ahead of the backbone and
    memory holds a few batches of images plus the (N, D) result. A file that does not decode
    is named in a DataError."""
    embedder = extractor if isinstance(extractor, Embedder) else \
        Embedder(extractor, img_size, fingerprint=fingerprint)
    cache_file = None
    if not paths:
        return np.zeros((0, embedder.extractor.output_shape[-1]), np.float32)
    if cache_dir is not None:
        key = embedding_cache_key(model_name, embedder.fingerprint, image_hw(img_size), resize,
                                  hair_removal, view, augment if view else "none", paths)
        cache_file = Path(cache_dir) / f"{key}.npy"
        if cache_file.exists():
            return np.load(cache_file, allow_pickle=False)
    ds = make_image_dataset(paths, img_size, batch_size, resize=resize, hair_removal=hair_removal,
                            augment=augment if view else None, seed=seed + 1000 * view)
    tf = runtime.tf()
    embeddings = None
    done = 0
    try:
        for images in track(ds, f"embedding view {view}" if view else "embedding",
                            total=len(paths), step=batch_size):
            batch = embedder(images)
            if embeddings is None:
                embeddings = np.empty((len(paths), batch.shape[-1]), np.float32)
            embeddings[done:done + len(batch)] = batch
            done += len(batch)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
        raise undecodable_error(paths[done:done + batch_size], img_size, resize) from None
    if cache_file is not None:
        with atomic_path(cache_file) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, embeddings, allow_pickle=False)
    return embeddings


def train_head(p: Prepared, abort: AbortState, echo=print):
    """Stage 1 for a run: returns the assembled full model. ``abort`` is the job's, set by the
    callbacks when the head's fit is cut short."""
    from skinzoo.data import balance
    from skinzoo.models.fusion import head_with_metadata, image_feature_extractor
    from skinzoo.models.transfer import (
        copy_head_weights,
        feature_extractor,
        freeze_backbone,
        head_model,
    )
    from skinzoo.train import callbacks as cb
    from skinzoo.train.metrics import monitor_mode, training_metrics
    from skinzoo.train.schedules import make_schedule

    c = p.config
    k = len(p.classes)
    with p.strategy.strategy.scope():
        full = build_for_training(p, k)
        require_shared_head(full, p)
        freeze_backbone(full)
    extractor = feature_extractor(full) if p.metadata is None else image_feature_extractor(full)
    for line in start_lines(p, full):
        echo(line)
    cache_dir = Path(c.out) / ".cache" / "embeddings"
    embedder = Embedder(extractor, p.img_size)  # one traced function for every view and val
    common = dict(img_size=p.img_size, batch_size=p.global_batch, resize=c.resize,
                  hair_removal=c.hair_removal, cache_dir=cache_dir, model_name=c.model, seed=c.seed)
    train_paths, train_labels = p.subset("train")
    val_paths, val_labels = p.subset("val")
    echo(f"stage 1: embedding {len(train_paths)} train x {c.embed_views} view(s) + {len(val_paths)} "
         f"val images once (cache: {cache_dir})")
    x_train = np.concatenate([
        compute_embeddings(embedder, train_paths, view=v, augment=c.augment, **common)
        for v in range(c.embed_views)])
    y_train = np.tile(train_labels, c.embed_views)
    x_val = compute_embeddings(embedder, val_paths, **common)

    weights = None
    if c.balance in balance.SMOTE_METHODS:
        before = np.bincount(y_train, minlength=k)
        x_train, y_train = balance.resample_features(x_train, y_train, method=c.balance, seed=c.seed)
        echo(f"{c.balance} on training embeddings: {before.tolist()} -> "
             f"{np.bincount(y_train, minlength=k).tolist()} (validation untouched)")
    elif c.balance in ("class-weight", "oversample"):
        weights = balance.sample_weights_for(y_train, k)  # oversampling == weighting for a head

    from skinzoo.data.pipeline import encode_targets

    with p.strategy.strategy.scope():
        head = head_model(x_train.shape[1], k, **head_options(c)) if p.metadata is None else \
            head_with_metadata(x_train.shape[1], p.metadata, k, meta_dropout=c.metadata_dropout,
                               **head_options(c))
        steps = max(1, len(x_train) // p.global_batch)
        schedule = make_schedule(c.schedule, p.lr, steps, c.epochs, c.warmup_epochs)
        head.compile(optimizer=make_optimizer(c, schedule), loss=make_loss(k, c.label_smoothing),
                     metrics=training_metrics(k), steps_per_execution=HEAD_STEPS_PER_EXECUTION)
    best = cb.BestCheckpoint(p.run.path / ".head_best.keras", p.run.path / ".head_state.json",
                             c.monitor, mode=monitor_mode(c.monitor), patience=c.early_stopping,
                             write=False, abort=abort)
    from skinzoo.train.progress import TrainProgress

    callbacks = [cb.NaNGuard(abort), cb.HistoryLogger(p.run.history, stage="head", abort=abort), best,
                 TrainProgress(c.epochs, p.global_batch, 0, echo, stage="head", enabled=p.strategy.is_chief,
                               abort=abort),
                 cb.EpochPrinter(c.epochs, 0, echo, abort=abort)]
    fit_args = (x_train, encode_targets(y_train, k))
    rng = np.random.default_rng(c.seed)
    order = rng.permutation(len(x_train))  # seeded order; Keras reshuffles from it each epoch
    x_fit, x_valid = fit_args[0][order], x_val
    if p.metadata is not None:  # the head's second input: each image's metadata (views tiled)
        x_fit = [x_fit, np.tile(p.metadata_of("train"), (c.embed_views, 1))[order]]
        x_valid = [x_val, p.metadata_of("val")]
    head.fit(x_fit, fit_args[1][order],
             sample_weight=None if weights is None else weights[order],
             validation_data=(x_valid, encode_targets(val_labels, k)), epochs=c.epochs,
             batch_size=p.global_batch, callbacks=callbacks, verbose=0, shuffle=True)
    raise_if_aborted(abort, p, p.lr)
    copy_head_weights(head, full)
    if p.strategy.is_chief:
        from skinzoo.models.files import save_model_atomic

        save_model_atomic(full, p.run.best_model)
        write_json_atomic(p.run.state, {"best": best.best, "best_epoch": best.best_epoch,
                                        "monitor": c.monitor, "stage": "head"})
    return full
