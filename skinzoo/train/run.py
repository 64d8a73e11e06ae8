"""Training's side of the run directory: creating it, one training at a time in it (the lock),
checking and restoring what resuming needs, and naming an image that fails to decode mid-epoch.

The run directory's layout (:class:`skinzoo.rundir.RunDir`) is shared with evaluation and
export and lives in :mod:`skinzoo.rundir`.
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
from skinzoo.rundir import RunDir


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
    if not meta.exists():
        return f"{meta} is missing"
    try:
        saved = read_json(meta)
    except UsageError as err:  # names the file and what is wrong with it
        return err.message.splitlines()[0][:200]
    epoch = saved.get("epoch") if isinstance(saved, dict) else None
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        return f"{meta} is damaged (no epoch count in it)"
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
        if isinstance(read_json(run.state), dict):
            return
    except UsageError:
        pass  # unreadable or not JSON: rebuilt below
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
