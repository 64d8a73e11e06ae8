"""The run directory: everything one training run leaves behind, in one place.

``runs/<YYYYmmdd-HHMMSS>-<model>-<id>/`` holds the resolved config, the split, the class names,
the history, the best model, the resume state, TensorBoard logs, plots and metrics. Training
writes it (skinzoo.train), evaluation and export read it (skinzoo.evaluate, skinzoo.deploy): this
module is what they share, so neither imports the other for it. Opening a run directory only
reads JSON/CSV/TOML and ``.keras`` files (loaded with ``safe_mode=True``); nothing in it is
executed and nothing is pickled.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from skinzoo.errors import UsageError
from skinzoo.fileio import read_json, write_json_atomic

RUN_MARKER = "classes.json"  # a folder is a run once it has its class list
# history.csv columns that describe the epoch, not the model (never plotted as training curves)
HISTORY_BOOKKEEPING = ("epoch", "stage", "lr", "learning_rate", "seconds", "cpu_percent")


class RunDir:
    """Paths of one run directory (the folder need not be complete: training fills it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # files -------------------------------------------------------------------------------
    config = property(lambda self: self.path / "config.toml")
    split = property(lambda self: self.path / "split.csv")
    classes_file = property(lambda self: self.path / "classes.json")
    history = property(lambda self: self.path / "history.csv")
    best_model = property(lambda self: self.path / "best.keras")
    last_model = property(lambda self: self.path / "last.keras")
    backup = property(lambda self: self.path / "backup")
    tensorboard = property(lambda self: self.path / "tensorboard")
    curves = property(lambda self: self.path / "curves.png")
    metrics = property(lambda self: self.path / "metrics.json")
    calibration = property(lambda self: self.path / "calibration.json")
    threshold = property(lambda self: self.path / "threshold.json")
    tta = property(lambda self: self.path / "tta.json")
    state = property(lambda self: self.path / "state.json")
    lock = property(lambda self: self.path / "run.lock")
    eval_dir = property(lambda self: self.path / "eval")

    # contents ----------------------------------------------------------------------------
    def read_info(self) -> dict:
        """classes.json, checked: ``{"classes": [...], "task": ..., "model": ..., "img_size": ...,
        "resize": ...}`` with distinct class names; a malformed file is a UsageError naming it."""
        if not self.classes_file.exists():
            raise UsageError(f"{self.path} is not a skinzoo run directory (no classes.json)",
                             "pass a folder made by `skinzoo train`, or a .keras model with --data and --classes")
        path = self.classes_file
        hint = (f"the run's class list is damaged: restore {path.name} from a backup, or pass the "
                "model file with --classes a,b,c in training order")
        info = read_json(path, hint)  # parsed as data only: nothing in a run is executed
        if not isinstance(info, dict):
            raise UsageError(f"{path} is not a JSON object with a \"classes\" list "
                             f"(it holds a {type(info).__name__})", hint)
        classes = info.get("classes")
        if not isinstance(classes, list) or not classes or \
                not all(isinstance(c, str) and c for c in classes):
            raise UsageError(f"{path}: \"classes\" must be a list of class names, found {classes!r:.80}",
                             hint)
        if len(set(classes)) != len(classes):
            raise UsageError(f"{path}: \"classes\" repeats a name ({', '.join(classes)})", hint)
        size = info.get("img_size")
        sizes = size if isinstance(size, list) else [size]
        if size is not None and not (0 < len(sizes) <= 2 and all(
                isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)):
            raise UsageError(f"{path}: \"img_size\" must be a positive integer, found {size!r:.40}", hint)
        for key in ("task", "resize"):
            if info.get(key) is not None and not isinstance(info[key], str):
                raise UsageError(f"{path}: \"{key}\" must be a string, found {info[key]!r:.40}", hint)
        return info

    @property
    def classes(self) -> list[str]:
        return list(self.read_info()["classes"])

    def write_info(self, info: dict) -> None:
        write_json_atomic(self.classes_file, info)

    def model_file(self) -> Path:
        """The model evaluation should use: ``best.keras``, else ``last.keras``."""
        for candidate in (self.best_model, self.last_model):
            if candidate.exists():
                return candidate
        raise UsageError(f"{self.path} has no trained model yet (no best.keras or last.keras)",
                         f"finish or resume the run: skinzoo train --resume {self.path}")

    def is_run(self) -> bool:
        return self.classes_file.exists()

    def is_finished(self) -> bool:
        """Training ended: metrics.json written and the resume state (state.json, backup/) gone."""
        return self.metrics.exists() and not self.state.exists() and not self.backup.exists()


def find_latest_run(root: str | Path = "runs") -> RunDir:
    """The most recently created run under ``root`` (by name, which starts with the date)."""
    root = Path(root)
    runs = sorted((p for p in root.glob("*") if (p / RUN_MARKER).exists()), key=lambda p: p.name) \
        if root.is_dir() else []
    if not runs:
        raise UsageError(f"no run found under {root}/",
                         "train one first (skinzoo train --data DATA) or pass a run directory")
    return RunDir(runs[-1])


def resolve_run(path: str | Path | None, root: str | Path = "runs") -> RunDir:
    """A run given by path, or the latest one under ``root`` when ``path`` is None."""
    if path is None:
        return find_latest_run(root)
    run = RunDir(path)
    if not run.path.exists():
        raise UsageError(f"{run.path} does not exist", "check the run directory path")
    run.read_info()  # raises the clear error when it is not a run
    return run


def read_run_config(run) -> dict:
    """The run's ``config.toml`` as a dict; {} without a run or without the file."""
    if run is None or not run.config.is_file():
        return {}
    try:
        with open(run.config, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise UsageError(f"cannot read {run.config}: {err}",
                         "restore the file, or pass the model file instead of the run") from None


# snapshots (skinzoo train --snapshots K; layout in docs/CONTRACTS.md) -------------------------

SNAPSHOT_DIR = "snapshots"
_NAME = re.compile(r"^epoch_(\d+)\.keras$")


def snapshot_name(epoch_number: int) -> str:
    """``epoch_NNN.keras`` for a 1-based epoch number."""
    return f"epoch_{epoch_number:03d}.keras"


def snapshot_dir(run_path) -> Path:
    return Path(run_path) / SNAPSHOT_DIR


def list_snapshots(run_path) -> list[Path]:
    """The run's snapshot files, by epoch (temporary files of an interrupted write are ignored)."""
    folder = snapshot_dir(run_path)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def require_snapshots(run_path) -> list[Path]:
    """The run's snapshots, or a UsageError saying how to get them (at least 2 are needed)."""
    found = list_snapshots(run_path)
    if len(found) < 2:
        have = "no snapshots" if not found else f"only 1 snapshot ({found[0].name})"
        raise UsageError(f"{run_path} has {have} in {SNAPSHOT_DIR}/: a snapshot ensemble needs at least 2",
                         "train with `skinzoo train ... --snapshots K` (K >= 2), or ensemble "
                         "separate runs without --snapshots")
    return found
