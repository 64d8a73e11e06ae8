"""Two-stage transfer learning: embed once, train the head on embeddings, assemble.

With a frozen backbone, recomputing it every epoch is pure waste (the notebooks' 15–30 min
epochs). Stage 1 computes each training/validation image's pooled backbone embedding once (K
augmented views per training image if asked), caches them on disk, optionally rebalances the
training embeddings with SMOTE / SMOTE-Tomek / SMOTE-ENN (the one place SMOTE is meaningful for
images), and trains the head alone (seconds per epoch). The head's weights are then copied by layer
name into the full model, which is an ordinary Keras model like any other in the zoo.

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
EMBEDDING_CACHE_VERSION = 1


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


def compute_embeddings(extractor, paths, img_size, batch_size, resize="crop", hair_removal=False,
                       view=0, augment="none", seed=0, cache_dir=None, model_name="model",
                       fingerprint=None, echo=print) -> np.ndarray:
    """Embeddings (N, D) for ``paths`` in order; view 0 is un-augmented, view v > 0 augmented."""
    from skinzoo.data.pipeline import load_images, make_array_dataset

    cache_file = None
    if cache_dir is not None:
        fingerprint = fingerprint or weights_fingerprint(extractor)
        key = embedding_cache_key(model_name, fingerprint, img_size, resize, hair_removal, view,
                                  augment if view else "none", paths)
        cache_file = Path(cache_dir) / f"{key}.npy"
        if cache_file.exists():
            return np.load(cache_file, allow_pickle=False)
    chunks = []
    chunk = 512  # bounded memory: decode, embed and drop images chunk by chunk
    for start in track(range(0, len(paths), chunk), f"embedding view {view}" if view else "embedding",
                       total=len(paths), step=chunk):
        images = load_images(paths[start:start + chunk], img_size, resize=resize, hair_removal=hair_removal)
        n = len(images)
        # Pad to whole batches: a partial last batch would make predict trace the graph again.
        pad = -n % batch_size
        if pad:
            images = np.concatenate([images, np.repeat(images[-1:], pad, axis=0)])
        if view:
            ds = make_array_dataset(images, None, None, batch_size=batch_size, training=False,
                                    augment=augment, seed=seed + 1000 * view, force_augment=True)
        else:
            ds = images
        chunks.append(extractor.predict(ds, batch_size=batch_size, verbose=0)[:n])
    embeddings = np.concatenate(chunks).astype(np.float32)
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
    fingerprint = weights_fingerprint(extractor)
    common = dict(img_size=p.img_size, batch_size=p.global_batch, resize=c.resize,
                  hair_removal=c.hair_removal, cache_dir=cache_dir, model_name=c.model,
                  fingerprint=fingerprint, seed=c.seed)
    train_paths, train_labels = p.subset("train")
    val_paths, val_labels = p.subset("val")
    echo(f"stage 1: embedding {len(train_paths)} train x {c.embed_views} view(s) + {len(val_paths)} "
         f"val images once (cache: {cache_dir})")
    x_train = np.concatenate([
        compute_embeddings(extractor, train_paths, view=v, augment=c.augment, **common)
        for v in range(c.embed_views)])
    y_train = np.tile(train_labels, c.embed_views)
    x_val = compute_embeddings(extractor, val_paths, **common)

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
                     metrics=training_metrics(k))
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
