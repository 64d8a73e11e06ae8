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

from skinzoo.data.augment import PRESETS as AUGMENT_PRESETS
from skinzoo.data.balance import BALANCE_METHODS, SMOTE_METHODS
from skinzoo.data.decode import RESIZE_MODES
from skinzoo.data.metadata import requested_fields
from skinzoo.data.sources import TASKS
from skinzoo.errors import UsageError
from skinzoo.fileio import read_regular_bytes
from skinzoo.ranges import check_config_ranges

SCHEDULES = ("constant", "cosine", "warmup-cosine", "onecycle", "step", "plateau")
BALANCES = BALANCE_METHODS
OPTIMIZERS = ("adam", "adamw", "sgd")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STAGES = ("auto", "end-to-end", "head", "finetune", "both")
LOSSES = ("crossentropy", "logit-adjusted")  # logit-adjusted: Menon et al. 2021, tau = 1
COLOR_CONSTANCY = ("none", "shades-of-gray", "gray-world")
CLUSTERS = ("auto", "slurm", "kubernetes", "tf-config", "none")  # auto: detected from the environment
CACHE_MODES = ("auto", "memory", "disk", "none")


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
    class_weight_power: float = 1.0  # 1 = inverse frequency, 0.5 = its square root (tempered)
    loss: str = "crossentropy"  # LOSSES
    mixup: float = 0.0  # Beta(a, a) mixing of image pairs; 0 = off
    cutmix: float = 0.0  # Beta(a, a) area of a pasted patch; 0 = off
    color_constancy: str = "none"  # COLOR_CONSTANCY: a layer inside the model
    color_power: float = 6.0  # Minkowski norm of shades-of-gray (1 = gray-world)
    metadata: str | None = None  # "age,sex,site" (any subset): fuse patient metadata
    metadata_cols: str | None = None  # a CSV's own columns: "NAME[=COLUMN],..."
    metadata_dropout: float = 0.3  # chance of hiding each field per sample while training
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
    monitor_window: int = 1  # choose the best epoch on the mean of the last N epochs' values
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 = off
    drop_path: float | None = None  # stochastic depth of the residual nets; None = the model's own
    snapshots: int = 0  # keep K epochs' models in RUN/snapshots/ (skinzoo.train.snapshots); 0 = off
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
    cluster: str = "auto"  # CLUSTERS; resolved by skinzoo.train.cluster
    cluster_port: int = 8888  # first port of the workers on each node (slurm, kubernetes)
    # run
    seed: int = 0
    deterministic: bool = True
    out: str = "runs"
    tensorboard: bool = True
    overfit_batch: bool = False

    def validate(self) -> TrainConfig:
        checks = [
            ("schedule", SCHEDULES), ("balance", BALANCES), ("optimizer", OPTIMIZERS),
            ("precision", PRECISIONS), ("stages", STAGES), ("task", TASKS),
            ("resize", RESIZE_MODES), ("cache", CACHE_MODES),
            ("augment", AUGMENT_PRESETS), ("loss", LOSSES), ("color_constancy", COLOR_CONSTANCY),
            ("cluster", CLUSTERS),
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
        self._validate_regularisers()
        if not 1024 <= self.cluster_port <= 65535:
            raise UsageError(f"cluster_port = {self.cluster_port}: use a port in 1024..65535")
        if not 0 <= self.metadata_dropout < 1:
            raise UsageError(f"metadata_dropout = {self.metadata_dropout}: must be in [0, 1)")
        if requested_fields(self.metadata, self.metadata_cols) and self.balance in SMOTE_METHODS:
            # SMOTE interpolates between samples: a one-hot site or a missing flag has no in-between.
            raise UsageError(f"--balance {self.balance} cannot be combined with metadata",
                             "use --balance class-weight or oversample with --metadata")
        check_config_ranges(dataclasses.asdict(self))  # the same ranges as the command line
        return self


    @property
    def color_constancy_power(self) -> float | None:
        """Minkowski power of the model's ColorConstancy layer; None = no layer."""
        return {"none": None, "gray-world": 1.0}.get(self.color_constancy, self.color_power)

    def _validate_regularisers(self) -> None:
        ranges = [("class_weight_power", 0.0, 2.0), ("mixup", 0.0, 10.0), ("cutmix", 0.0, 10.0),
                  ("color_power", 1.0, 20.0)]
        for name, low, high in ranges:
            value = getattr(self, name)
            if not (math.isfinite(value) and low <= value <= high):
                raise UsageError(f"{name} = {value}: must be in [{low:g}, {high:g}]")
        if not (self.ema == 0 or 0.5 <= self.ema < 1):
            raise UsageError(f"ema = {self.ema}: use a decay in [0.5, 1), e.g. 0.999, or 0 for off")
        if not 1 <= self.monitor_window <= 20:
            raise UsageError(f"monitor_window = {self.monitor_window}: use 1 to 20 epochs")
        if (self.mixup or self.cutmix) and self.balance in SMOTE_METHODS:
            raise UsageError("--mixup/--cutmix mix the image stream; SMOTE already synthesises "
                             "training pixels", "use one of the two")
        if self.loss == "logit-adjusted" and self.balance != "none":
            # The adjusted loss already corrects for the class prior; weighting or resampling on
            # top would correct twice and favour rare classes beyond balance.
            raise UsageError(f"--loss logit-adjusted with --balance {self.balance} corrects the "
                             "imbalance twice", "use --balance none with --loss logit-adjusted")


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def load_toml(path: str | Path) -> dict:
    """Options from a TOML file (flat, or under a ``[train]`` table); unknown keys are errors."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"config file {path} does not exist")
    try:  # a regular file only, size-capped: a FIFO named config.toml would block forever
        raw = tomllib.loads(read_regular_bytes(path, 16 * 2**20).decode("utf-8"))
    except OSError as err:
        raise UsageError(f"cannot read config file {path}: {err.strerror or err}") from None
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
