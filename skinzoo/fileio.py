"""Small file helpers shared by every writer: atomic writes so a kill never leaves half a file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``target``; rename it over ``target`` only on success.

    The temporary file lives in the same folder so the final ``os.replace`` is atomic; on any
    exception the old ``target`` (e.g. a previous ``best.keras``) is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix or "".join(target.suffixes) or ".tmp",
        dir=target.parent,
    )
    os.close(fd)
    os.unlink(tmp)  # writers such as keras' save() want to create the file themselves
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json(path, hint: str = "restore the file, or delete it and re-create it"):
    """JSON data only (never code); an unreadable or malformed file is a UsageError naming it."""
    from skinzoo.errors import UsageError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror or err}", hint) from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text (UTF-8 JSON) file", hint) from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise UsageError(f"{path} is not valid JSON ({err})", hint) from None


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json_atomic(target: str | os.PathLike, obj) -> Path:
    return write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value):
    # numpy scalars and arrays appear in metric dicts; JSON has no type for them.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
