"""The run directory: everything one training run leaves behind, in one place.

``runs/<YYYYmmdd-HHMMSS>-<model>-<id>/`` holds the resolved config, the split, the class names,
the history, the best model, the resume state, TensorBoard logs, plots and metrics. Opening a run
directory only reads JSON/CSV/TOML and ``.keras`` files (loaded with ``safe_mode=True``); nothing
in it is executed and nothing is pickled.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from pathlib import Path

from skinzoo.errors import UsageError
from skinzoo.fileio import read_json, write_json_atomic

RUN_MARKER = "classes.json"  # a folder is a run once it has its class list


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
    state = property(lambda self: self.path / "state.json")
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


def new_run_dir(root: str | Path, model: str, now: _dt.datetime | None = None) -> RunDir:
    """Create ``root/<date>-<model>-<id>`` (the short id keeps parallel runs apart)."""
    now = now or _dt.datetime.now()
    name = f"{now:%Y%m%d-%H%M%S}-{model}-{secrets.token_hex(3)}"
    path = Path(root) / name
    try:
        path.mkdir(parents=True, exist_ok=False)
    except OSError as err:
        raise UsageError(f"cannot create the run directory {path}: {err.strerror or err}",
                         "choose another --out folder that you can write to") from None
    return RunDir(path)


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
