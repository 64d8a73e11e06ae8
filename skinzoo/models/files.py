"""Keras model files: load one safely, save one atomically.

Every ``.keras`` / ``.h5`` file skinzoo opens (a run's ``best.keras``, a model a user brings, a
``.keras`` file given as pretrained weights) goes through :func:`load_model_file`, and every model
training or ``skinzoo ensemble`` writes goes through :func:`save_model_atomic`.

Files are loaded with ``safe_mode=True``: a Lambda layer carrying Python code is refused unless
the caller says ``unsafe=True`` (``--unsafe``), because loading it would run that code. skinzoo's
own layers register themselves with Keras when their module is imported: ``skinzoo.models.layers``
is imported here; a caller that may meet fusion or ensemble models imports
``skinzoo.models.fusion`` / ``skinzoo.models.ensemble`` first (they sit above this module).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from skinzoo.errors import ModelError, TrainingError
from skinzoo.fileio import NotRegularFile, atomic_path, check_regular_file
from skinzoo.models.layers import keras

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_model_file(path, unsafe: bool = False):
    """``keras.models.load_model(path, safe_mode=not unsafe)`` with every failure a ModelError."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist", "check the path")
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not a model file",
                         "pass a run directory made by `skinzoo train`, or a .keras file")
    try:  # a FIFO named model.keras would block the reader forever, a device never end
        check_regular_file(path)
    except NotRegularFile as err:
        raise ModelError(f"model file {path} {err}", "pass a .keras file or a run directory") from None
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(f"{path} is not a Keras model file (expected .keras or .h5)",
                         "save models with model.save('model.keras')")
    check_container(path)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as err:  # noqa: BLE001 - keras raises ValueError/OSError/zip errors/...
        text = str(err)
        if "safe_mode" in text or "Lambda" in text or "unsafe" in text.lower():
            raise ModelError(f"{path} contains a Lambda layer with Python code, which is not "
                             "loaded by default (loading it runs that code)",
                             "pass --unsafe only if you trust where the file came from") from None
        first = text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__
        raise ModelError(f"cannot load {path} as a Keras model: {first}",
                         "the file is damaged, not a model, or needs custom layers this version "
                         "of skinzoo does not define; re-save it with model.save('x.keras')") from None


def check_container(path: Path) -> None:
    """Refuse a file whose bytes are not the container its suffix promises, before Keras reads
    it: Keras reports a text file named ``.keras`` as "File not found", which misleads."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as err:
        raise ModelError(f"cannot read model file {path}: {err.strerror or err}",
                         "check the file permissions") from None
    if path.suffix.lower() == ".keras":
        ok = zipfile.is_zipfile(path)
        expected = "a zip archive"
    else:
        ok = head == b"\x89HDF\r\n\x1a\n"
        expected = "an HDF5 file"
    if not ok:
        what = "an empty file" if not head else f"a file starting {head!r}"
        raise ModelError(f"cannot load {path} as a Keras model: a {path.suffix} model is "
                         f"{expected}, this is {what}",
                         "pass the best.keras of a run (or a file saved with model.save('x.keras'))")


def save_model_atomic(model, path) -> None:
    """Save through a temporary file; a failed write (disk full...) leaves the old file intact
    and becomes a TrainingError instead of a traceback."""
    try:
        with atomic_path(path) as tmp:
            model.save(tmp)
    except OSError as err:
        reason = err.strerror or str(err)
        kept = f"the previous {Path(path).name} is intact" if Path(path).exists() else \
            "no earlier model was saved"
        raise TrainingError(f"could not write {path}: {reason}; {kept}",
                            f"free some space, then continue with: skinzoo train --resume {Path(path).parent}") from None
