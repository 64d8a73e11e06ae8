"""Training options: one dataclass, loaded from TOML, overridden by the command line, saved resolved.

Precedence (highest first): command-line options, the ``--config`` TOML file, the model's defaults
from the registry (input size, batch size, learning rate), the defaults below. The run directory
gets the fully resolved config, so ``skinzoo train --config runs/X/config.toml`` repeats a run.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from skinzoo.errors import UsageError

SCHEDULES = ("constant", "cosine", "warmup-cosine", "onecycle", "step", "plateau")
BALANCES = ("none", "class-weight", "oversample", "smote", "smote-tomek", "smote-enn")
OPTIMIZERS = ("adam", "adamw", "sgd")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STAGES = ("auto", "end-to-end", "head", "finetune", "both")


@dataclass
class TrainConfig:
    # data
    data: str | None = None
    format: str = "auto"
    task: str = "multiclass"
    image_col: str | None = None
    label_col: str | None = None
    allow_outside_root: bool = False
    split_file: str | None = None
    val: float = 0.15
    test: float = 0.15
    resize: str = "crop"
    augment: str = "light"
    hair_removal: bool = False
    cache: str = "auto"  # auto | memory | disk | none
    balance: str = "class-weight"
    # model
    model: str = "compact_resnet"
    weights: str | None = None  # imagenet | none | PATH; None = the model's default
    img_size: int | None = None
    dense: list | None = None  # transfer head widths; None = the model's default (256, 128)
    dropout: float | None = None  # None = the model's default
    # optimisation
    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str = "adam"
    weight_decay: float = 0.0
    clipnorm: float | None = None
    label_smoothing: float = 0.0
    schedule: str = "warmup-cosine"
    warmup_epochs: float = 1.0
    early_stopping: int = 0  # patience in epochs; 0 = off
    monitor: str = "val_balanced_accuracy"
    # transfer learning
    stages: str = "auto"
    finetune_blocks: int = 2
    finetune_epochs: int | None = None
    finetune_lr: float | None = None
    embed_views: int = 1
    # devices
    gpus: str = "all"
    precision: str = "auto"
    cpu_replicas: int = 0  # testing: mirror over N logical CPU devices
    worker_hosts: str | None = None
    worker_index: int | None = None
    # run
    seed: int = 0
    deterministic: bool = True
    out: str = "runs"
    tensorboard: bool = True
    overfit_batch: bool = False

    def validate(self) -> TrainConfig:
        checks = [
            ("schedule", SCHEDULES), ("balance", BALANCES), ("optimizer", OPTIMIZERS),
            ("precision", PRECISIONS), ("stages", STAGES), ("task", ("multiclass", "binary")),
            ("resize", ("crop", "pad", "squash")), ("cache", ("auto", "memory", "disk", "none")),
            ("augment", ("none", "light", "heavy")),
        ]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise UsageError(f"{name} = {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.epochs < 1:
            raise UsageError(f"epochs = {self.epochs}: train for at least 1 epoch")
        if not (0 <= self.val < 1 and 0 <= self.test < 1 and self.val + self.test < 1):
            raise UsageError(f"val = {self.val}, test = {self.test}: shares must be in [0, 1) and sum below 1")
        if self.val == 0 and self.split_file is None:
            raise UsageError("val = 0 leaves nothing to choose the best epoch on",
                             "keep a validation split (e.g. --val 0.15)")
        for name in ("lr", "finetune_lr", "clipnorm"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise UsageError(f"{name} = {value}: must be a positive number")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"batch_size = {self.batch_size}: must be at least 1")
        if self.img_size is not None and self.img_size < 16:
            raise UsageError(f"img_size = {self.img_size}: use at least 16 pixels")
        return self


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def load_toml(path: str | Path) -> dict:
    """Options from a TOML file (flat, or under a ``[train]`` table); unknown keys are errors."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"config file {path} is not valid TOML: {err}") from None
    raw = raw.get("train", raw)
    known = set(field_names())
    unknown = sorted(k.replace("-", "_") for k in raw if k.replace("-", "_") not in known)
    if unknown:
        import difflib

        guesses = [difflib.get_close_matches(u, known, 1) for u in unknown]
        hint = ", ".join(f"{u} -> {g[0]}" for u, g in zip(unknown, guesses, strict=True) if g)
        raise UsageError(f"config file {path}: unknown option(s) {', '.join(unknown)}",
                         f"did you mean {hint}?" if hint else "see `skinzoo train --help`")
    return {k.replace("-", "_"): v for k, v in raw.items()}


def resolve(file_options: dict | None = None, cli_options: dict | None = None) -> TrainConfig:
    """Merge defaults < file < command line (``None`` on the command line means "not given")."""
    merged = dict(file_options or {})
    merged.update({k: v for k, v in (cli_options or {}).items() if v is not None})
    for key, value in merged.items():
        check_type(key, value)
    try:
        return TrainConfig(**merged)
    except TypeError as err:
        raise UsageError(f"bad training options: {err}") from None


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               list: "a list"}


def check_type(key: str, value) -> None:
    """TOML gives typed values; refuse ``epochs = "many"`` or ``lr = true`` with one line."""
    import typing

    hints = typing.get_type_hints(TrainConfig)
    if key not in hints or value is None:
        return
    allowed = [t for t in typing.get_args(hints[key]) if t is not type(None)] or [hints[key]]
    allowed = [typing.get_origin(t) or t for t in allowed]

    def fits(kind):
        if kind is bool:
            return isinstance(value, bool)
        if kind is int:
            return isinstance(value, int) and not isinstance(value, bool)
        if kind is float:
            return isinstance(value, int | float) and not isinstance(value, bool)
        return isinstance(value, kind)

    if not any(fits(kind) for kind in allowed):
        wanted = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in allowed)
        raise UsageError(f"config: {key} = {value!r} must be {wanted}",
                         f"write e.g. {key} = {_example(allowed[0])} (no quotes around numbers)")


def _example(kind) -> str:
    return {int: "10", float: "0.001", bool: "true", list: "[256, 128]"}.get(kind, '"text"')


def to_toml(config: TrainConfig) -> str:
    """A flat ``[train]`` table; ``None`` values are left out (TOML has no null)."""
    lines = ["# Resolved skinzoo training config: skinzoo train --config <this file>", "[train]"]
    for key, value in dataclasses.asdict(config).items():
        if value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
