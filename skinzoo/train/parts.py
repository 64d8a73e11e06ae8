"""The parts both training stages are built from: optimizer, loss, model, head options, datasets,
callbacks, and what an aborted ``fit`` means.

The end-to-end / fine-tune stage (:mod:`skinzoo.train.fit`) and the head stage
(:mod:`skinzoo.train.two_stage`) import these; neither stage imports the other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skinzoo.config import TrainConfig
from skinzoo.data.balance import SMOTE_METHODS
from skinzoo.data.mixing import Mix
from skinzoo.errors import TrainingError, UsageError
from skinzoo.runtime import interruption
from skinzoo.train.abort import AbortState
from skinzoo.train.prepare import Prepared


class TrainingInterrupted(TrainingError):
    exit_code = 130


# --- model, optimizer, loss ---------------------------------------------------------------------

def make_optimizer(config: TrainConfig, schedule):
    import keras

    kwargs = {"learning_rate": schedule}
    if config.clipnorm:
        kwargs["clipnorm"] = config.clipnorm
    if config.optimizer == "adam":
        return keras.optimizers.Adam(**kwargs)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=config.weight_decay or 1e-4, **kwargs)
    return keras.optimizers.SGD(momentum=0.9, nesterov=True, **kwargs)


def make_loss(num_classes: int, label_smoothing: float = 0.0, kind: str = "crossentropy",
              prior=None):
    """The training loss; ``kind="logit-adjusted"`` needs the training split's class ``prior``."""
    import keras

    if kind == "logit-adjusted":
        from skinzoo.train.losses import LogitAdjustedCrossentropy

        return LogitAdjustedCrossentropy(prior, label_smoothing=label_smoothing)
    if num_classes == 2:
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)


def training_loss(p: Prepared):
    """The configured loss; the logit-adjusted one gets the training split's class frequencies."""
    c = p.config
    prior = None
    if c.loss == "logit-adjusted":
        _, labels = p.subset("train")
        prior = np.bincount(labels, minlength=len(p.classes)) + 1.0  # +1: no log(0) for an empty class
    return make_loss(len(p.classes), c.label_smoothing, c.loss, prior)


def build_for_training(p: Prepared, num_classes: int):
    from skinzoo.models.registry import build_model, builder_defaults

    accepted = builder_defaults(p.config.model)
    options = {k: v for k, v in head_options(p.config, defaults=False).items() if k in accepted}
    if p.config.color_constancy_power is not None:
        options["color_constancy"] = p.config.color_constancy_power
    if p.config.drop_path is not None:  # prepare() checked that the model takes it
        options["drop_path"] = p.config.drop_path
    model = build_model(p.config.model, num_classes, input_shape=(p.img_size, p.img_size, 3),
                        weights=p.weights, **options)
    if p.metadata is not None:
        from skinzoo.models.fusion import with_metadata

        model = with_metadata(model, p.metadata, num_classes, p.config.metadata_dropout)
    return model


def head_options(config: TrainConfig, defaults: bool = True) -> dict:
    """The options the user set for the transfer head; with ``defaults``, the model's own values
    filled in (two-stage training builds the same head on its own)."""
    from skinzoo.models.registry import builder_defaults

    chosen = {"dense": None if config.dense is None else tuple(config.dense), "dropout": config.dropout}
    if defaults:
        model_defaults = builder_defaults(config.model)
        chosen = {k: model_defaults.get(k) if v is None else v for k, v in chosen.items()}
    return {k: v for k, v in chosen.items() if v is not None}


def require_shared_head(model, p: Prepared) -> None:
    """Two-stage training copies a separately trained head into the model by layer name: only
    models ending in the zoo's shared head (``embedding`` → ``head_*`` → ``predictions``) can."""
    from skinzoo.models.fusion import FUSION_LAYERS
    from skinzoo.models.registry import builder_defaults

    names = [layer.name for layer in model.layers if layer.name not in FUSION_LAYERS]
    after = names[names.index("embedding") + 1:] if "embedding" in names else []
    wanted = [f"head_dense{i}" for i in range(1, len(head_options(p.config).get("dense", ())) + 1)]
    if not after or not isinstance(builder_defaults(p.config.model).get("dense"), tuple | list) \
            or not all(n.startswith("head_") or n == "predictions" for n in after) \
            or not all(n in after for n in wanted):
        raise UsageError(f"--stages {p.config.stages} needs a model with the zoo's transfer head "
                         f"(embedding -> head -> predictions); {p.config.model} trains end to end",
                         "drop --stages, or use e.g. resnet18_small, resnet50, efficientnetb0, resnet50v2")



# --- datasets ------------------------------------------------------------------------------------

def cache_setting(config: TrainConfig, n_images: int, img_size: int):
    """``memory`` when the decoded set fits comfortably (< 2 GiB as uint8), else a disk cache."""
    if config.cache == "none":
        return None
    if config.cache == "memory":
        return "memory"
    disk = str(Path(config.out) / ".cache" / "pipeline")
    if config.cache == "disk":
        return disk
    return "memory" if n_images * img_size * img_size * 3 < 2 * 1024**3 else disk


def train_datasets(p: Prepared, seed_offset: int = 0, balance_mode: str | None = None):
    """(train dataset, val dataset, steps per epoch) honouring the balance mode
    (``balance_mode`` overrides the config's)."""
    from skinzoo.data import balance
    from skinzoo.data.pipeline import make_dataset

    c = p.config
    k = len(p.classes)
    train_paths, train_labels = p.subset("train")
    val_paths, val_labels = p.subset("val")
    cache = cache_setting(c, len(train_paths) + len(val_paths), p.img_size)
    common = dict(num_classes=k, img_size=p.img_size, resize=c.resize, hair_removal=c.hair_removal,
                  cache=cache)
    present = np.bincount(train_labels, minlength=k)
    if (present == 0).any():
        missing = [p.classes[i] for i in np.flatnonzero(present == 0)]
        raise UsageError(f"the training split has no image of class(es) {', '.join(missing)}",
                         "use a split with every class in train (skinzoo data split) or fewer classes")
    weights = None
    mode = balance_mode or c.balance
    if mode == "class-weight":
        weights = balance.sample_weights_for(train_labels, k, power=c.class_weight_power)
    if mode in SMOTE_METHODS:
        if p.metadata is not None:
            raise UsageError(f"--balance {mode} on pixels cannot carry metadata",
                             "use --balance class-weight or oversample with --metadata")
        train_ds, n_train = smote_pixel_dataset(p, train_paths, train_labels)
    else:
        n_train = len(train_paths)
        train_ds = make_dataset(train_paths, train_labels, batch_size=p.global_batch, training=True,
                                augment=c.augment, seed=c.seed + seed_offset, sample_weights=weights,
                                oversample=mode == "oversample", metadata=p.metadata_of("train"),
                                mix=Mix(c.mixup, c.cutmix), **common)
    val_ds = make_dataset(val_paths, val_labels, batch_size=p.global_batch, training=False,
                          metadata=p.metadata_of("val"), **common)
    # An epoch is one pass over what the stream holds: after SMOTE that is the resampled set (a
    # pass over the original count would see a fraction of it, and size the schedule wrongly).
    steps = (balance.oversample_steps(n_train, p.global_batch) if mode == "oversample"
             else n_train // p.global_batch)
    return train_ds, val_ds, steps


def smote_pixel_dataset(p: Prepared, paths, labels):
    """SMOTE on flattened training pixels (small inputs only; memory checked up front)."""
    from skinzoo.data.pipeline import make_array_dataset
    from skinzoo.data.pixel_smote import smote_pixels

    images, new_labels = smote_pixels(paths, labels, p.img_size, p.config.balance,
                                      seed=p.config.seed, resize=p.config.resize)
    dataset = make_array_dataset(images, new_labels, len(p.classes), batch_size=p.global_batch,
                                 training=True, augment=p.config.augment, seed=p.config.seed)
    return dataset, len(new_labels)



# --- callbacks and aborts ------------------------------------------------------------------------

def standard_callbacks(p: Prepared, abort: AbortState, epochs, mode, offset, resumed, stage=None,
                       echo=print):
    """The callbacks of an image-pipeline stage, in the order :mod:`skinzoo.train.callbacks`
    explains; ``abort`` is set by those that stop training and read by those that write."""
    import keras

    from skinzoo.train import callbacks as cb
    from skinzoo.train.schedules import schedule_callbacks
    from skinzoo.train.snapshots import snapshot_callbacks

    c = p.config
    chief = p.strategy.is_chief
    averaged = cb.WeightAverage(c.ema) if c.ema else None
    result = [
        cb.NaNGuard(abort),
        cb.InterruptHandler(abort),
        cb.HistoryLogger(p.run.history, initial_epoch=resumed, offset=offset, stage=stage, write=chief,
                         abort=abort),
        *([averaged] if averaged else []),  # before BestCheckpoint: its train-end restore wins
        cb.BestCheckpoint(p.run.best_model, p.run.state, c.monitor, mode=mode,
                          patience=c.early_stopping, write=chief, window=c.monitor_window,
                          averaged=averaged, abort=abort),
        # before SafeBackup: a kill after the backup would skip the epoch's snapshot on resume
        *snapshot_callbacks(c.snapshots, p.run.path, epochs, offset, averaged, chief, abort),
        *schedule_callbacks(c.schedule, c.monitor, mode),
    ]
    if c.tensorboard and chief:
        result.append(keras.callbacks.TensorBoard(str(p.run.tensorboard), write_graph=False,
                                                  profile_batch=0))
    from skinzoo.train.progress import TrainProgress

    result += [cb.SafeBackup(str(p.run.backup), write=chief, abort=abort),
               TrainProgress(epochs, p.global_batch, offset, echo, stage=stage, enabled=chief,
                             abort=abort),
               cb.EpochPrinter(epochs, offset, echo, abort=abort)]
    if p.strategy.kind == "multi-worker":  # SIGTERM on any worker stops all after the same step
        from skinzoo.train.preemption import PreemptionGuard

        result.append(PreemptionGuard(p.strategy.strategy, abort))
    return result


def raise_if_aborted(abort: AbortState, p: Prepared, lr: float) -> None:
    """After a stage's ``fit``: the error that says why it was cut short, if it was."""
    if not abort.aborted:
        return
    kind, epoch, batch = abort.kind, abort.epoch, abort.batch
    if kind == "preempted":
        from skinzoo.train.preemption import preempted_error

        raise preempted_error(epoch, p.run.path, p.strategy.is_chief)
    kept = "best.keras (best so far) and the last epoch's backup are kept" if p.run.best_model.exists() \
        else "no epoch finished, so there is no checkpoint yet"
    if kind == "nan":
        raise TrainingError(
            f"training loss became NaN/inf at epoch {epoch + 1}, batch {batch + 1}; stopped. {kept}",
            f"the usual cause is a learning rate that is too high (lr={lr:g}): try --lr {lr / 10:g} "
            "or --clipnorm 1.0, then start a new run",
        )
    word, code = interruption()  # SIGTERM is handled like Ctrl-C but exits 143
    if not p.run.history.exists():
        err = TrainingInterrupted(f"{word} during epoch {epoch + 1}, before any epoch finished: "
                                  "nothing to keep", "run the same command again to start over")
    else:
        err = TrainingInterrupted(f"{word} during epoch {epoch + 1}; {kept}",
                                  f"resume with: skinzoo train --resume {p.run.path}")
    err.exit_code = code
    raise err
