"""The training job: data → split → pipeline → model → fit → run directory.

:func:`train` is what ``skinzoo train`` runs. Every step lives in its own module; this one only
puts them in order, prints what it is about to do, and leaves a complete run directory behind.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from skinzoo.config import TrainConfig, load_toml, resolve, to_toml
from skinzoo.data.balance import SMOTE_METHODS
from skinzoo.data.metadata import attach_columns, encoding_for_run, requested_fields
from skinzoo.data.mixing import Mix
from skinzoo.errors import TrainingError, UsageError
from skinzoo.fileio import write_json_atomic, write_text_atomic
from skinzoo.runtime import interruption
from skinzoo.train.run import RunDir, RunLock, naming_unreadable_images, new_run_dir

log = logging.getLogger(__name__)

class TrainingInterrupted(TrainingError):
    exit_code = 130


@dataclass
class Prepared:
    """Everything resolved before the first TensorFlow op: options, data, split, devices."""

    config: TrainConfig
    classes: list[str]
    table: pd.DataFrame
    split: pd.Series
    strategy: object  # StrategyChoice
    run: RunDir
    img_size: int
    batch_size: int  # per replica
    lr: float
    weights: str | None
    problems: list
    resumed_from: int = 0
    metadata: object = None  # skinzoo.data.metadata.MetadataEncoding when training with metadata
    metadata_rows: np.ndarray | None = None  # every table row encoded once, (len(table), width)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.strategy.replicas

    def subset(self, name: str) -> tuple[list[str], np.ndarray]:
        rows = self.table[self.split == name]
        return rows["path"].tolist(), np.array([self.classes.index(c) for c in rows["label"]], np.int64)

    def metadata_of(self, name: str):
        """Encoded metadata ``(N, width)`` of a split's rows (same order as ``subset``), or None."""
        if self.metadata_rows is None:
            return None
        return self.metadata_rows[(self.split == name).to_numpy()]


@dataclass
class TrainResult:
    run: RunDir
    best_epoch: int | None
    best_value: float | None
    monitor: str
    val_metrics: dict
    seconds: float
    stages: list[str]


# --- configuration --------------------------------------------------------------------------

def config_from_sources(config_file=None, cli_options=None, resume=None) -> tuple[TrainConfig, RunDir | None]:
    """Resolved options: a resumed run's own config.toml, or defaults < ``--config`` < flags."""
    if resume is not None:
        run = RunDir(resume)
        if not run.config.exists():
            raise UsageError(f"{run.path} has no config.toml: it is not a run directory skinzoo can resume",
                             "pass the folder printed by `skinzoo train` (runs/<date>-<model>-<id>)")
        if run.is_finished():  # resuming would start over and overwrite its best.keras
            raise UsageError(f"{run.path} has finished training: there is nothing to resume",
                             f"train more in a new run: skinzoo train --config {run.config} --epochs N")
        allowed = {"epochs", "gpus", "cpu_replicas", "precision", "worker_hosts", "worker_index",
                   "cluster", "cluster_port"}
        changes = {k: v for k, v in (cli_options or {}).items() if v is not None and k in allowed}
        return resolve(load_toml(run.config), changes).validate(), run
    file_options = load_toml(config_file) if config_file else {}
    return resolve(file_options, cli_options).validate(), None


def model_defaults(config: TrainConfig):
    """Fill img_size, batch size, learning rate and weights from the model registry."""
    from skinzoo.models.registry import get_model_info

    info = get_model_info(config.model)
    img_size = config.img_size or info.default_size
    batch = config.batch_size or info.default_batch
    lr = config.lr or info.default_lr
    weights = config.weights
    if weights is None:  # pretrained-capable models start from ImageNet unless told otherwise
        weights = "imagenet" if info.pretrained else "none"
    return info, img_size, batch, lr, (None if str(weights).lower() == "none" else weights)


# --- preparation ------------------------------------------------------------------------------

def prepare(config: TrainConfig, run: RunDir | None = None, echo=print) -> Prepared:
    from skinzoo.data.check import validate_for_training
    from skinzoo.data.sources import load_dataset
    from skinzoo.data.splits import make_split, read_split_file, write_split_file
    from skinzoo.runtime import set_seed
    from skinzoo.train.strategy import select_strategy

    if not config.data:
        raise UsageError("no dataset given", "pass --data PATH (try `skinzoo data synth demo/` first)")
    # The strategy may split the CPU into logical devices: that must happen before any TF op.
    choice = select_strategy(config.gpus, config.cpu_replicas, config.worker_hosts, config.worker_index,
                             config.cluster, config.cluster_port)
    set_seed(config.seed, config.deterministic)
    info, img_size, batch, lr, weights = model_defaults(config)

    dataset = load_dataset(config.data, format=config.format, task=config.task,
                           image_col=config.image_col, label_col=config.label_col,
                           allow_outside_root=config.allow_outside_root)
    dataset, report = validate_for_training(dataset, val=config.val, test=config.test)
    table = dataset.table.reset_index(drop=True)
    meta_fields = requested_fields(config.metadata, config.metadata_cols)
    if meta_fields:  # a generic CSV's own columns are not in the table yet
        table = attach_columns(table, dataset.source, [column for _, column in meta_fields])

    resumed_from = 0
    if run is not None:  # resuming: the run's own split, never a new one
        split = read_split_file(run.split, table)
        from skinzoo.train.run import prepare_resume

        # Falls back to the previous backup generation when the latest is damaged.
        resumed_from = prepare_resume(run, config.monitor, echo)
    else:
        split = read_split_file(config.split_file, table) if config.split_file else \
            make_split(table, val=config.val, test=config.test, seed=config.seed)
        if choice.is_chief:
            run = new_run_dir(config.out, config.model)
        else:  # non-chief workers write nothing the user keeps
            run = RunDir(tempfile.mkdtemp(prefix=f"skinzoo-worker{choice.worker_index}-"))
        write_split_file(table, split, run.split)
        write_problems(report.problems, run.path / "problems.csv")
        resolved = dataclasses.replace(config, img_size=img_size, batch_size=batch, lr=lr,
                                       weights=weights or "none", split_file=None)
        write_text_atomic(run.config, to_toml(resolved))
        run.write_info({"classes": list(dataset.classes), "task": config.task, "model": config.model,
                        "img_size": img_size, "resize": config.resize,
                        "hair_removal": config.hair_removal, "format": dataset.format})
    split = split.reindex(table.index)
    if (split == "val").sum() == 0:
        raise UsageError("the split has no validation images", "use --val 0.15 or a split file with val rows")
    encoding = encoding_for_run(run.path, table, split, meta_fields) if meta_fields else None
    rows = encoding.encode_table(table, "the dataset") if encoding is not None else None
    return Prepared(config, list(dataset.classes), table, split, choice, run, img_size, batch, lr,
                    weights, list(getattr(report, "problems", [])), resumed_from, encoding, rows)


def write_problems(problems, path) -> None:
    """problems.csv: every file skipped, converted or reported while reading the dataset."""
    rows = [{"kind": q.kind, "where": q.where, "message": q.message, "action": q.action} for q in problems]
    write_text_atomic(path, pd.DataFrame(rows, columns=["kind", "where", "message", "action"]).to_csv(index=False))


def problem_lines(problems, per_kind: int = 5) -> list[str]:
    """Skipped/converted files named, a few per kind, so a user sees what was left out."""
    handled = [q for q in problems if getattr(q, "action", "") in ("skipped", "converted")]
    if not handled:
        return []
    lines = [f"  {len(handled)} file(s) skipped or converted (all in problems.csv of the run):"]
    by_kind: dict[str, list] = {}
    for q in handled:
        by_kind.setdefault(f"{q.action}: {q.kind}", []).append(q)
    for kind, items in by_kind.items():
        # a file is named by its path; a CSV row ("x.csv line 12") by its message, which names the image
        names = ", ".join(str(q.message if " line " in str(q.where) else q.where) for q in items[:per_kind])
        more = f" and {len(items) - per_kind} more" if len(items) > per_kind else ""
        lines.append(f"    {kind} ({len(items)}): {names}{more}")
    return lines


def summary_lines(p: Prepared, model=None, steps_per_epoch=None) -> list[str]:
    """What is about to happen, before the first (slow) training step."""
    counts = pd.crosstab(p.table["label"], p.split).reindex(index=p.classes, fill_value=0)
    counts = counts[[c for c in ("train", "val", "test") if c in counts.columns]]
    lines = [f"run directory: {p.run.path}"]
    if p.resumed_from:
        lines.append(f"resuming after epoch {p.resumed_from}")
    lines.append(f"data: {p.config.data} ({len(p.table)} images, {p.table['group'].nunique()} groups, "
                 f"{len(p.classes)} classes)")
    lines += problem_lines(p.problems)
    lines += ["  " + line for line in counts.to_string().splitlines()]
    if model is not None:
        lines.append(f"model: {p.config.model}, {model.count_params():,} parameters, input "
                     f"{p.img_size}x{p.img_size}, weights: {p.weights or 'random init'}")
    if p.metadata is not None:
        lines.append(f"metadata: {', '.join(p.metadata.names)} ({p.metadata.width} values, fields "
                     f"hidden at random with p={p.config.metadata_dropout:g} while training)")
    lines.append(f"devices: {p.strategy.describe()}")
    if p.strategy.kind != "multi-worker" and p.strategy.cluster is not None:
        lines.append(f"cluster: {p.strategy.cluster.describe()}")
    lines.append(f"batch: {p.batch_size} per replica x {p.strategy.replicas} = {p.global_batch} global"
                 + (f", {steps_per_epoch} steps per epoch" if steps_per_epoch else ""))
    c = p.config
    lines.append(f"optimiser: {c.optimizer}, lr {p.lr:g}, schedule {c.schedule}, {c.epochs} epochs, "
                 f"balance {c.balance}, augment {c.augment}, monitor {c.monitor}")
    extras = regulariser_summary(c)
    if extras:
        lines.append("regularisers: " + ", ".join(extras))
    lines += bfloat16_hint(p)
    return lines


def bfloat16_hint(p: Prepared) -> list[str]:
    """One line when training in float32 on a CPU that computes bfloat16 natively: measured here
    (AVX512_BF16), mixed_bfloat16 trained compact_resnet and the ResNets 1.2-1.6x faster."""
    from skinzoo.info import cpu_info

    on_cpu = not any("GPU" in d.upper() for d in p.strategy.devices)
    if p.config.precision not in ("auto", "float32") or not on_cpu:
        return []
    if not cpu_info().get("bfloat16"):
        return []
    return ["note: this CPU has native bfloat16; `--precision mixed_bfloat16` trains the CNNs and "
            "ResNets ~1.2-1.6x faster here (EfficientNet slower); results differ slightly"]


def regulariser_summary(c: TrainConfig) -> list[str]:
    """The accuracy options in effect, for the start-up lines (only those switched on)."""
    parts = []
    if c.balance == "class-weight" and c.class_weight_power != 1.0:
        parts.append(f"class weights ^{c.class_weight_power:g}")
    if c.loss != "crossentropy":
        parts.append(f"loss {c.loss}")
    if c.color_constancy != "none":
        parts.append(f"colour constancy {c.color_constancy} (p={c.color_constancy_power:g})")
    if c.mixup:
        parts.append(f"mixup {c.mixup:g}")
    if c.cutmix:
        parts.append(f"cutmix {c.cutmix:g}")
    if c.ema:
        parts.append(f"EMA {c.ema:g} (validated and saved)")
    if c.monitor_window > 1:
        parts.append(f"best epoch on a {c.monitor_window}-epoch mean")
    if c.label_smoothing:
        parts.append(f"label smoothing {c.label_smoothing:g}")
    return parts


# --- building blocks --------------------------------------------------------------------------

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
    steps = getattr(train_ds, "steps_per_epoch", None) or n_train // p.global_batch
    return train_ds, val_ds, steps


def smote_pixel_dataset(p: Prepared, paths, labels):
    """SMOTE on flattened training pixels (small inputs only; memory checked up front)."""
    from skinzoo.data import balance
    from skinzoo.data.pipeline import make_array_dataset

    images, new_labels = balance.smote_pixels(paths, labels, p.img_size, p.config.balance,
                                              seed=p.config.seed, resize=p.config.resize)
    dataset = make_array_dataset(images, new_labels, len(p.classes), batch_size=p.global_batch,
                                 training=True, augment=p.config.augment, seed=p.config.seed)
    return dataset, len(new_labels)


# --- the job ------------------------------------------------------------------------------

def train(config: TrainConfig, run: RunDir | None = None, echo=print) -> TrainResult:
    """Run a full training job and return where everything is."""
    started = time.time()
    p = prepare(config, run, echo)
    # One training per run directory: a second `--resume` of a running run is refused.
    lock = RunLock(p.run).acquire(echo) if p.strategy.is_chief else None
    try:
        return _run_stages(p, started, echo)
    except BaseException:
        if run is None and p.strategy.is_chief and not p.run.history.exists():
            shutil.rmtree(p.run.path, ignore_errors=True)  # failed before any epoch: nothing to keep
        raise
    finally:
        if lock is not None:
            lock.release()
        if run is None and not p.strategy.is_chief:  # a non-chief's own scratch run, never a resumed one
            shutil.rmtree(p.run.path, ignore_errors=True)


def _run_stages(p: Prepared, started: float, echo) -> TrainResult:
    import keras

    from skinzoo.train.strategy import precision_policy

    c = p.config
    policy = precision_policy(c.precision, p.strategy)
    keras.mixed_precision.set_global_policy(policy)
    try:
        stages = resolve_stages(p)
        if c.overfit_batch:
            return overfit_one_batch(p, echo)
        model = None
        # A resumed two-stage run was interrupted while fine-tuning: the head is already in it.
        if "head" in stages and not (p.resumed_from and "finetune" in stages):
            from skinzoo.train.two_stage import train_head

            model = train_head(p, echo)
        if "end-to-end" in stages or "finetune" in stages:
            model = fit_end_to_end(p, echo, model=model, finetune="finetune" in stages)
        return finish(p, model, stages, started, echo)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def resolve_stages(p: Prepared) -> list[str]:
    """``auto``: from pretrained weights, head on cached embeddings, then fine-tune the top
    (the standard recipe: a random head's gradients would wreck the pretrained features);
    from random weights, train end to end. Explicit stages need a model with an ``embedding``."""
    stages = p.config.stages
    if stages == "auto":
        return ["head", "finetune"] if p.weights else ["end-to-end"]
    return {"head": ["head"], "finetune": ["finetune"], "both": ["head", "finetune"],
            "end-to-end": ["end-to-end"]}[stages]


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


def fit_end_to_end(p: Prepared, echo, model=None, finetune: bool = False):
    """Train the whole model (or fine-tune the top of a transfer model) on the image pipeline."""
    from skinzoo.train.metrics import monitor_mode, training_metrics
    from skinzoo.train.schedules import make_schedule

    c = p.config
    k = len(p.classes)
    epochs = (c.finetune_epochs or c.epochs) if finetune else c.epochs
    lr = (c.finetune_lr or p.lr / 10) if finetune else p.lr
    offset = count_history_rows(p.run, stage="head") if finetune else 0
    # Fine-tuning after a head trained on SMOTE'd embeddings uses a class-weighted loss: SMOTE on
    # full-size pixels is neither meaningful nor affordable.
    smote_family = c.balance in SMOTE_METHODS
    train_ds, val_ds, steps = train_datasets(p, balance_mode="class-weight" if finetune and smote_family else None)
    with p.strategy.strategy.scope():
        if model is None:
            model = build_for_training(p, k)
            if finetune:
                require_shared_head(model, p)
                from skinzoo.models.transfer import freeze_backbone

                freeze_backbone(model)
        if finetune:
            from skinzoo.models.transfer import unfreeze_top

            unfreeze_top(model, n_blocks=c.finetune_blocks)
        schedule = make_schedule(c.schedule, lr, steps, epochs, c.warmup_epochs)
        model.compile(optimizer=make_optimizer(c, schedule), loss=training_loss(p),
                      metrics=training_metrics(k))
    for line in summary_lines(p, model, steps):
        echo(line)
    resumed = p.resumed_from  # read from the backup once, in prepare()
    if resumed >= epochs:
        echo(f"this run already finished its {epochs} epochs; nothing to resume")
        return model
    callbacks = standard_callbacks(p, epochs, monitor_mode(c.monitor), offset, resumed,
                                   stage="finetune" if finetune else None, echo=echo)
    if p.strategy.kind == "multi-worker":
        from skinzoo.train.keras_compat import prebuild_for_multi_worker

        prebuild_for_multi_worker(model, train_ds, p.strategy.strategy)
    # A file that fails to read mid-epoch (changed or removed since the check) is named.
    with naming_unreadable_images(p.subset("train")[0] + p.subset("val")[0], p.run):
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps,
                  callbacks=callbacks, verbose=0, shuffle=False)  # the dataset shuffles itself
    raise_if_aborted(model, p, lr)
    return model


def standard_callbacks(p: Prepared, epochs, mode, offset, resumed, stage=None, echo=print):
    import keras

    from skinzoo.train import callbacks as cb
    from skinzoo.train.schedules import schedule_callbacks

    c = p.config
    chief = p.strategy.is_chief
    averaged = cb.WeightAverage(c.ema) if c.ema else None
    result = [
        cb.NaNGuard(),
        cb.InterruptHandler(),
        cb.HistoryLogger(p.run.history, initial_epoch=resumed, offset=offset, stage=stage, write=chief),
        *([averaged] if averaged else []),  # before BestCheckpoint: its train-end restore wins
        cb.BestCheckpoint(p.run.best_model, p.run.state, c.monitor, mode=mode,
                          patience=c.early_stopping, write=chief, window=c.monitor_window,
                          averaged=averaged),
        *schedule_callbacks(c.schedule, c.monitor, mode),
    ]
    if c.tensorboard and chief:
        result.append(keras.callbacks.TensorBoard(str(p.run.tensorboard), write_graph=False,
                                                  profile_batch=0))
    from skinzoo.train.progress import TrainProgress

    result += [cb.SafeBackup(str(p.run.backup), write=chief),
               TrainProgress(epochs, p.global_batch, offset, echo, stage=stage, enabled=chief),
               cb.EpochPrinter(epochs, offset, echo)]
    if p.strategy.kind == "multi-worker":  # SIGTERM on any worker stops all after the same step
        from skinzoo.train.preemption import PreemptionGuard

        result.append(PreemptionGuard(p.strategy.strategy))
    return result


def raise_if_aborted(model, p: Prepared, lr: float):
    abort = getattr(model, "_skinzoo_abort", None)
    if abort is None:
        return
    kind, epoch, batch = abort
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


def count_history_rows(run: RunDir, stage: str | None = None) -> int:
    if not run.history.exists():
        return 0
    history = pd.read_csv(run.history)
    if stage and "stage" in history:
        return int((history["stage"] == stage).sum())
    return len(history)


def finish(p: Prepared, model, stages, started, echo) -> TrainResult:
    """Best model in place, validation metrics, curves, summary; backups removed."""
    from skinzoo.train.callbacks import save_model_atomic

    run = p.run
    state = {}
    if run.state.exists():
        import json

        state = json.loads(run.state.read_text())
    if p.strategy.is_chief and not run.best_model.exists():
        save_model_atomic(model, run.best_model)
    val_metrics = validation_metrics(p, model)
    if p.strategy.is_chief:
        write_json_atomic(run.metrics, val_metrics)
        if run.history.exists():
            from skinzoo.train.curves import plot_history

            plot_history(pd.read_csv(run.history), run.curves)
        shutil.rmtree(run.backup, ignore_errors=True)
        run.state.unlink(missing_ok=True)  # resume state: gone once the run has finished
    seconds = time.time() - started
    best_epoch = state.get("best_epoch")
    result = TrainResult(run, best_epoch, state.get("best"), p.config.monitor, val_metrics, seconds, stages)
    if not p.strategy.is_chief:
        echo(f"worker {p.strategy.worker_index} done in {seconds / 60:.1f} min; the chief (worker 0) "
             "wrote the run directory")
        return result
    for line in final_lines(result):
        echo(line)
    return result


def validation_metrics(p: Prepared, model) -> dict:
    from skinzoo.data.pipeline import make_dataset
    from skinzoo.evaluate.metrics import as_class_probs, classification_metrics, collapse_check

    paths, labels = p.subset("val")
    ds = make_dataset(paths, None, len(p.classes), p.img_size, p.global_batch, training=False,
                      resize=p.config.resize, hair_removal=p.config.hair_removal,
                      metadata=p.metadata_of("val"))
    probs = as_class_probs(model.predict(ds, verbose=0))
    metrics = classification_metrics(labels, probs, p.classes)
    metrics["collapse_warnings"] = collapse_check(labels, probs.argmax(1), len(p.classes), p.classes)
    metrics["split"] = "val"
    return metrics


def final_lines(r: TrainResult) -> list[str]:
    m = r.val_metrics
    lines = [f"done in {r.seconds / 60:.1f} min"]
    if r.best_epoch is not None:
        lines.append(f"best epoch: {r.best_epoch + 1} ({r.monitor} = {r.best_value:.4f})")
    headline = [f"{k} {m[k]:.3f}" for k in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
                if isinstance(m.get(k), int | float) and not math.isnan(m[k])]
    lines.append("validation: " + ", ".join(headline))
    for warning in m.get("collapse_warnings", []):
        lines.append(f"WARNING: {warning}")
    lines.append(f"run directory: {r.run.path}  (best.keras, history.csv, curves.png, metrics.json)")
    lines.append(f"next: skinzoo evaluate {r.run.path} --report")
    return lines


def overfit_one_batch(p: Prepared, echo, steps: int = 150) -> TrainResult:
    """Capacity check: can the model drive the loss on a single batch to near zero?"""
    import keras

    from skinzoo.data.pipeline import make_dataset
    from skinzoo.train.metrics import training_metrics

    paths, labels = p.subset("train")
    k = len(p.classes)
    batch = min(p.batch_size, len(paths))
    meta = p.metadata_of("train")
    ds = make_dataset(paths[:batch], labels[:batch], k, p.img_size, batch, training=False,
                      resize=p.config.resize, metadata=None if meta is None else meta[:batch])
    x, y = next(iter(ds))
    model = build_for_training(p, k)
    model.compile(optimizer=keras.optimizers.Adam(max(p.lr, 1e-3)), loss=make_loss(k),
                  metrics=training_metrics(k)[:1])
    history = model.fit(x, y, epochs=steps, batch_size=batch, verbose=0, shuffle=False)
    first, last = history.history["loss"][0], history.history["loss"][-1]
    accuracy = history.history["accuracy"][-1]
    ok = last < 0.05 or accuracy == 1.0
    echo(f"overfit check on one batch of {batch}: loss {first:.3f} -> {last:.4f}, accuracy {accuracy:.2f} "
         f"after {steps} steps: {'PASSED (the model can fit)' if ok else 'FAILED (check labels, lr, model)'}")
    shutil.rmtree(p.run.path, ignore_errors=True)
    return TrainResult(p.run, None, last, "loss", {"overfit_passed": ok, "final_loss": last}, 0.0,
                       ["overfit-batch"])
