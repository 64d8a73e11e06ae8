"""The run directory: everything one training run leaves behind, in one place.

``runs/<YYYYmmdd-HHMMSS>-<model>-<id>/`` holds the resolved config, the split, the class names,
the history, the best model, the resume state, TensorBoard logs, plots and metrics. Opening a run
directory only reads JSON/CSV/TOML and ``.keras`` files (loaded with ``safe_mode=True``); nothing
in it is executed and nothing is pickled.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path

from skinzoo.errors import TrainingError, UsageError
from skinzoo.fileio import atomic_path, read_json, write_json_atomic

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


# --- one training per run directory -----------------------------------------------------------

class RunLock:
    """``RUN/run.lock``: JSON with the PID and host name of the process training in ``RUN``.

    Created with O_EXCL, so of two processes starting at once exactly one gets it. A lock left by
    a process that died (same host, PID gone) is taken over with a note; a lock from another host
    cannot be checked and is respected. Released (deleted, if still ours) by :meth:`release`.
    """

    def __init__(self, run: RunDir):
        self.run = run
        self.path = run.lock
        self.held = False

    def acquire(self, echo=print) -> RunLock:
        for _ in range(3):
            if self._create():
                return self
            owner = self._owner()
            if owner is None:
                continue  # released or unreadable in between: try again
            if owner.get("host") == socket.gethostname() and not pid_alive(owner.get("pid")):
                echo(f"note: taking over the stale lock {self.path} (PID {owner.get('pid')} on "
                     "this host has ended)")
                self._remove_if(owner)
                continue
            raise UsageError(
                f"{self.run.path} is in use by another training (PID {owner.get('pid')} on "
                f"{owner.get('host')}, since {owner.get('started', '?')}); two trainings in one run "
                "directory would overwrite each other's files",
                "wait for it to finish; if that process is gone (another machine crashed), delete "
                f"{self.path} and resume again")
        raise UsageError(f"could not lock {self.path}", "try again")

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as err:
            raise UsageError(f"cannot create {self.path}: {err.strerror or err}",
                             "check that the run directory is writable") from None
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": _dt.datetime.now().isoformat(timespec="seconds")}, fh)
        self.held = True
        return True

    def _owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # Half-written by a process killed between create and write: old enough = stale.
            owner = {"pid": None, "host": socket.gethostname()}
        return owner if isinstance(owner, dict) else {"pid": None, "host": socket.gethostname()}

    def _remove_if(self, owner: dict) -> None:
        if self._owner() == owner or owner.get("pid") is None:
            self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False


def pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


# --- resuming -----------------------------------------------------------------------------------

BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_META = "training_metadata.json"
PREVIOUS = ".bkp"  # Keras' BackupAndRestore(double_checkpoint=True) suffix for the older generation


def prepare_resume(run: RunDir, monitor: str | None = None, echo=print) -> int:
    """Check every file resuming depends on and return the epoch to resume after.

    The backup keeps two generations (``latest.*`` and ``latest.*.bkp``). A kill while the
    latest is written leaves it damaged but the previous one intact: then the previous generation
    is put back in place and the run resumes from there, saying so. ``state.json`` (early stopping
    and best value) is rebuilt from ``history.csv`` when damaged. Only when nothing intact is left
    is this a TrainingError, and its hint never suggests deleting a good file.
    """
    _check_history(run)
    epoch = _restore_backup(run, echo)
    _check_best_model(run)
    _check_state(run, monitor, epoch, echo)
    return epoch


def _restore_backup(run: RunDir, echo) -> int:
    weights, meta = run.backup / BACKUP_WEIGHTS, run.backup / BACKUP_META
    if not weights.exists() and not meta.exists():
        return 0
    latest = _generation(weights, meta)
    if isinstance(latest, int):
        return latest
    previous = _generation(Path(f"{weights}{PREVIOUS}"), Path(f"{meta}{PREVIOUS}"))
    if isinstance(previous, int):
        for name in (BACKUP_WEIGHTS, BACKUP_META):
            source = run.backup / f"{name}{PREVIOUS}"
            with atomic_path(run.backup / name) as tmp:
                shutil.copyfile(source, tmp)
        echo(f"note: {latest}; resuming from the previous backup generation, after epoch "
             f"{previous} (the epoch after it is trained again)")
        return previous
    raise TrainingError(
        f"cannot resume: {latest}, and there is no intact earlier backup generation",
        f"{run.best_model.name} and history.csv are kept: evaluate the best model with "
        f"`skinzoo evaluate {run.path}`, or train again with `skinzoo train --config {run.config}`")


def _generation(weights: Path, meta: Path) -> int | str:
    """The epoch a backup generation holds, or why it cannot be used (a phrase)."""
    if not weights.exists():
        return f"{weights} is missing"
    problem = weights_file_problem(weights)
    if problem:
        return f"{weights} is damaged ({problem})"
    try:
        epoch = json.loads(meta.read_text(encoding="utf-8"))["epoch"]
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError("epoch is not a count")
    except FileNotFoundError:
        return f"{meta} is missing"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{meta} is damaged ({str(err).splitlines()[0][:100] if str(err) else 'unreadable'})"
    return epoch


def weights_file_problem(path: Path) -> str | None:
    """Why an HDF5 weights file cannot be loaded (a phrase), or None. Every dataset is read, so
    a full-size file with corrupt contents is caught here, not by an h5py traceback in Keras."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            found = []

            def read(name, obj):
                if isinstance(obj, h5py.Dataset):
                    obj[()]
                    found.append(name)

            f.visititems(read)
    except Exception as err:  # noqa: BLE001 - h5py raises OSError/KeyError/RuntimeError/ValueError
        text = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        return f"not a readable HDF5 file: {text}"
    return None if found else "it holds no weights"


def _check_best_model(run: RunDir) -> None:
    import zipfile

    if run.best_model.exists() and not zipfile.is_zipfile(run.best_model):
        raise TrainingError(
            f"cannot resume: {run.best_model} is damaged (not a complete .keras archive)",
            f"restore it from a copy, or move it aside (mv {run.best_model} "
            f"{run.best_model}.damaged) to resume without it; the backup is intact")


def _check_history(run: RunDir) -> None:
    import pandas as pd

    if not run.history.exists():
        return
    try:
        pd.read_csv(run.history)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise TrainingError(
            f"cannot resume: {run.history} is damaged ({str(err).splitlines()[0][:100]})",
            f"restore it from a copy, or move it aside (mv {run.history} {run.history}.damaged): "
            "resuming then writes the epochs from the backup on") from None


def _check_state(run: RunDir, monitor: str | None, epoch: int, echo) -> None:
    if not run.state.exists():
        return
    try:
        state = json.loads(run.state.read_text(encoding="utf-8"))
        if isinstance(state, dict):
            return
    except (OSError, ValueError):
        pass
    rebuilt = state_from_history(run, monitor, epoch)
    write_json_atomic(run.state, rebuilt)
    echo(f"note: {run.state} was damaged; rebuilt from history.csv (best {monitor} "
         f"{rebuilt['best']} at epoch {None if rebuilt['best_epoch'] is None else rebuilt['best_epoch'] + 1})")


def state_from_history(run: RunDir, monitor: str | None, epochs_done: int) -> dict:
    """The early-stopping state (best value, its epoch, epochs waited) from history.csv rows of
    the first ``epochs_done`` epochs, as BestCheckpoint writes it."""
    import pandas as pd

    from skinzoo.train.metrics import monitor_mode

    empty = {"best": None, "best_epoch": None, "wait": 0, "monitor": monitor, "epochs_done": 0}
    if not run.history.exists() or monitor is None:
        return empty
    history = pd.read_csv(run.history)
    if monitor not in history or "epoch" not in history:
        return empty
    rows = history[history["epoch"] < epochs_done].dropna(subset=[monitor])
    if rows.empty:
        return empty
    values = rows[monitor].astype(float)
    pos = int(values.argmin() if monitor_mode(monitor) == "min" else values.argmax())
    best_epoch = int(rows["epoch"].iloc[pos])
    return {"best": float(values.iloc[pos]), "best_epoch": best_epoch,
            "wait": int(epochs_done - 1 - best_epoch), "monitor": monitor,
            "epochs_done": int(epochs_done)}


# --- a file that fails to decode during an epoch ----------------------------------------------

@contextlib.contextmanager
def naming_unreadable_images(paths, run: RunDir):
    """Around ``model.fit``: TensorFlow's read/decode errors become a TrainingError naming the
    file (see :func:`decode_failure`); other errors pass unchanged."""
    from skinzoo.runtime import tf

    errors = tf().errors
    try:
        yield
    except (errors.InvalidArgumentError, errors.NotFoundError, errors.DataLossError) as err:
        failure = decode_failure(err, paths, run)
        if failure is None:
            raise
        raise failure from err


_IMAGE_IO = re.compile(r"decode|jpeg|png|bmp|gif|image|no such file|not found|read", re.I)


def decode_failure(err: Exception, paths, run: RunDir) -> TrainingError | None:
    """A TrainingError naming the file(s) TensorFlow could not read or decode during an epoch,
    or None when the error is not about reading images (a bug: its traceback must show).

    TensorFlow's message names no file, so the listed images are inspected again with a full
    decode (the culprit may also have vanished or changed since the check)."""
    from skinzoo.data.check import inspect_images

    bad = [i for i in inspect_images(list(paths), decode="always") if not i.ok]
    reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    kept = ("best.keras and the last epoch's backup are kept" if run.best_model.exists()
            else "no epoch had finished")
    if bad:
        listed = "; ".join(f"{i.path} {i.message}" for i in bad[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        # Resuming keeps the run's split, which lists the file: replace it, or start a new run.
        return TrainingError(
            f"an image could not be read during training: {listed}{more}; {kept}",
            f"replace it with a good copy and resume (skinzoo train --resume {run.path}), or "
            "remove it and start a new run" if run.best_model.exists() else
            "replace or remove that file, then train again")
    if not _IMAGE_IO.search(reason):
        return None
    return TrainingError(f"TensorFlow could not read an image during training ({reason}); {kept}",
                         f"run `skinzoo data check` on the dataset with --full-decode; then "
                         f"skinzoo train --resume {run.path}")
