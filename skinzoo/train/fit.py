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
from skinzoo.errors import TrainingError, UsageError
from skinzoo.fileio import write_json_atomic, write_text_atomic
from skinzoo.train.run import RunDir, new_run_dir

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

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.strategy.replicas

    def subset(self, name: str) -> tuple[list[str], np.ndarray]:
        rows = self.table[self.split == name]
        return rows["path"].tolist(), np.array([self.classes.index(c) for c in rows["label"]], np.int64)


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
        allowed = {"epochs", "gpus", "cpu_replicas", "precision", "worker_hosts", "worker_index"}
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
    choice = select_strategy(config.gpus, config.cpu_replicas, config.worker_hosts, config.worker_index)
    set_seed(config.seed, config.deterministic)
    info, img_size, batch, lr, weights = model_defaults(config)

    dataset = load_dataset(config.data, format=config.format, task=config.task,
                           image_col=config.image_col, label_col=config.label_col,
                           allow_outside_root=config.allow_outside_root)
    dataset, report = validate_for_training(dataset, val=config.val, test=config.test)
    table = dataset.table.reset_index(drop=True)

    resumed_from = 0
    if run is not None:  # resuming: the run's own split, never a new one
        split = read_split_file(run.split, table)
        from skinzoo.train.callbacks import backup_epoch, check_resume_files

        check_resume_files(run)
        resumed_from = backup_epoch(run.backup)
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
    return Prepared(config, list(dataset.classes), table, split, choice, run, img_size, batch, lr,
                    weights, list(getattr(report, "problems", [])), resumed_from)


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
    lines.append(f"devices: {p.strategy.describe()}")
    lines.append(f"batch: {p.batch_size} per replica x {p.strategy.replicas} = {p.global_batch} global"
                 + (f", {steps_per_epoch} steps per epoch" if steps_per_epoch else ""))
    c = p.config
    lines.append(f"optimiser: {c.optimizer}, lr {p.lr:g}, schedule {c.schedule}, {c.epochs} epochs, "
                 f"balance {c.balance}, augment {c.augment}, monitor {c.monitor}")
    return lines


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


def make_loss(num_classes: int, label_smoothing: float = 0.0):
    import keras

    if num_classes == 2:
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)


def build_for_training(p: Prepared, num_classes: int):
    from skinzoo.models.registry import build_model, builder_defaults

    accepted = builder_defaults(p.config.model)
    options = {k: v for k, v in head_options(p.config, defaults=False).items() if k in accepted}
    return build_model(p.config.model, num_classes, input_shape=(p.img_size, p.img_size, 3),
                       weights=p.weights, **options)


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
        weights = balance.sample_weights_for(train_labels, k)
    if mode in ("smote", "smote-tomek", "smote-enn"):
        train_ds = smote_pixel_dataset(p, train_paths, train_labels)
    else:
        train_ds = make_dataset(train_paths, train_labels, batch_size=p.global_batch, training=True,
                                augment=c.augment, seed=c.seed + seed_offset, sample_weights=weights,
                                oversample=mode == "oversample", **common)
    val_ds = make_dataset(val_paths, val_labels, batch_size=p.global_batch, training=False, **common)
    steps = getattr(train_ds, "steps_per_epoch", None) or len(train_paths) // p.global_batch
    return train_ds, val_ds, steps


def smote_pixel_dataset(p: Prepared, paths, labels):
    """SMOTE on flattened training pixels (small inputs only; memory checked up front)."""
    from skinzoo.data import balance
    from skinzoo.data.pipeline import make_array_dataset

    images, new_labels = balance.smote_pixels(paths, labels, p.img_size, p.config.balance,
                                              seed=p.config.seed, resize=p.config.resize)
    return make_array_dataset(images, new_labels, len(p.classes), batch_size=p.global_batch,
                              training=True, augment=p.config.augment, seed=p.config.seed)


# --- the job ------------------------------------------------------------------------------

def train(config: TrainConfig, run: RunDir | None = None, echo=print) -> TrainResult:
    """Run a full training job and return where everything is."""
    started = time.time()
    p = prepare(config, run, echo)
    try:
        return _run_stages(p, started, echo)
    except BaseException:
        if run is None and p.strategy.is_chief and not p.run.history.exists():
            shutil.rmtree(p.run.path, ignore_errors=True)  # failed before any epoch: nothing to keep
        raise


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
        if not p.strategy.is_chief:
            shutil.rmtree(p.run.path, ignore_errors=True)


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
    from skinzoo.models.registry import builder_defaults

    names = [layer.name for layer in model.layers]
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
    smote_family = c.balance in ("smote", "smote-tomek", "smote-enn")
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
        model.compile(optimizer=make_optimizer(c, schedule), loss=make_loss(k, c.label_smoothing),
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
    result = [
        cb.NaNGuard(),
        cb.InterruptHandler(),
        cb.HistoryLogger(p.run.history, initial_epoch=resumed, offset=offset, stage=stage),
        cb.BestCheckpoint(p.run.best_model, p.run.state, c.monitor, mode=mode,
                          patience=c.early_stopping, write=chief),
        *schedule_callbacks(c.schedule, c.monitor, mode),
    ]
    if c.tensorboard and chief:
        result.append(keras.callbacks.TensorBoard(str(p.run.tensorboard), write_graph=False,
                                                  profile_batch=0))
    result += [cb.SafeBackup(str(p.run.backup)), cb.EpochPrinter(epochs, offset, echo)]
    return result


def raise_if_aborted(model, p: Prepared, lr: float):
    abort = getattr(model, "_skinzoo_abort", None)
    if abort is None:
        return
    kind, epoch, batch = abort
    kept = "best.keras (best so far) and the last epoch's backup are kept" if p.run.best_model.exists() \
        else "no epoch finished, so there is no checkpoint yet"
    if kind == "nan":
        raise TrainingError(
            f"training loss became NaN/inf at epoch {epoch + 1}, batch {batch + 1}; stopped. {kept}",
            f"the usual cause is a learning rate that is too high (lr={lr:g}): try --lr {lr / 10:g} "
            "or --clipnorm 1.0, then start a new run",
        )
    if not p.run.history.exists():
        raise TrainingInterrupted(f"interrupted during epoch {epoch + 1}, before any epoch finished: "
                                  "nothing to keep", "run the same command again to start over")
    raise TrainingInterrupted(f"interrupted during epoch {epoch + 1}; {kept}",
                              f"resume with: skinzoo train --resume {p.run.path}")


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
        write_json_atomic(run.state, {**state, "finished": True})
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
                      resize=p.config.resize, hair_removal=p.config.hair_removal)
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
    ds = make_dataset(paths[:batch], labels[:batch], k, p.img_size, batch, training=False,
                      resize=p.config.resize)
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
