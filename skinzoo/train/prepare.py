"""Preparing a training run: resolved options, the dataset and its split, devices, and the run
directory, all before the first TensorFlow op.

:func:`prepare` returns a :class:`Prepared` that both training stages (:mod:`skinzoo.train.fit`,
:mod:`skinzoo.train.two_stage`) read; :func:`start_lines` says what is about to happen.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd

from skinzoo.config import TrainConfig, load_toml, resolve, to_toml
from skinzoo.data.metadata import attach_columns, encoding_for_run, requested_fields
from skinzoo.errors import UsageError
from skinzoo.fileio import write_text_atomic
from skinzoo.rundir import RunDir
from skinzoo.train.run import new_run_dir, prepare_resume


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


def check_model_options(config: TrainConfig) -> None:
    """Model options the chosen model cannot take, refused before any data is read or any run
    directory is made."""
    from skinzoo.models.registry import builder_defaults, list_models

    if config.drop_path is not None and "drop_path" not in builder_defaults(config.model):
        able = [m for m in list_models() if "drop_path" in builder_defaults(m)]
        raise UsageError(f"--drop-path: {config.model} has no residual blocks to drop",
                         f"use a model with stochastic depth: {', '.join(able)}")


# --- preparation ----------------------------------------------------------------------------

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
    check_model_options(config)

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


def start_lines(p: Prepared, model=None, steps_per_epoch=None) -> list[str]:
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
    if c.drop_path:
        parts.append(f"stochastic depth up to {c.drop_path:g}")
    if c.monitor_window > 1:
        parts.append(f"best epoch on a {c.monitor_window}-epoch mean")
    if c.label_smoothing:
        parts.append(f"label smoothing {c.label_smoothing:g}")
    if c.snapshots:
        parts.append(f"{c.snapshots} snapshot(s) kept in snapshots/ for `skinzoo ensemble RUN --snapshots`")
    return parts
