"""Small file helpers shared by every reader and writer.

Writers: atomic writes so a kill never leaves half a file, and an output path that cannot be
written is one ``UsageError`` naming it (never an OSError traceback). Readers: only regular files
are read, with a size cap checked before the first byte, because a FIFO named ``x.jpg`` blocks
``open()`` forever and a link to ``/dev/zero`` never ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from skinzoo.errors import UsageError

# File name bytes most file systems allow (ext4, APFS, NTFS: 255); output names stay below it.
MAX_NAME_BYTES = 255


class NotRegularFile(OSError):
    """``path`` is not a regular file (FIFO, socket, device, folder) or is larger than allowed;
    ``str(err)`` is the reason as a phrase ("is a FIFO (named pipe), not a regular file")."""

    def __init__(self, reason: str, too_large: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.too_large = too_large

    def __str__(self) -> str:
        return self.reason


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISDIR, "a folder"))


def special_file_reason(mode: int) -> str | None:
    """Why a file of ``st_mode`` cannot be read as data, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS:
        if test(mode):
            return f"is {name}, not a regular file"
    return "is not a regular file"


def check_regular_file(path, max_bytes: int | None = None) -> os.stat_result:
    """``os.stat`` of ``path`` (links followed) when it is a regular file of at most
    ``max_bytes``; else ``NotRegularFile``. Other OSErrors (missing, loop, permission) pass."""
    st = os.stat(path)
    reason = special_file_reason(st.st_mode)
    if reason:
        raise NotRegularFile(reason)
    if max_bytes is not None and st.st_size > max_bytes:
        raise NotRegularFile(f"is {_size(st.st_size)}, more than the {_size(max_bytes)} "
                             "skinzoo reads from one file", too_large=True)
    return st


def read_regular_bytes(path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (``NotRegularFile`` otherwise).

    Checked twice: by path before opening (a device is never opened; opening some has side
    effects) and on the open descriptor (the path may have been swapped in between). The open is
    non-blocking, so even a FIFO that appears in that window cannot block, and at most
    ``max_bytes + 1`` bytes are read, so a file that grows while read cannot exhaust memory.
    """
    check_regular_file(path, max_bytes)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        reason = special_file_reason(os.fstat(fd).st_mode)
        if reason:
            raise NotRegularFile(reason)
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise NotRegularFile(f"is larger than the {_size(max_bytes)} skinzoo reads from one file",
                             too_large=True)
    return data


def _size(n: int) -> str:
    for unit, div in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= div:
            return f"{n / div:.0f} {unit}" if n % div == 0 else f"{n / div:.1f} {unit}"
    return f"{n} bytes"


def ensure_output_dir(path, option: str = "--out") -> Path:
    """Create the output folder ``path`` (and parents) or raise one UsageError saying why not.

    Called before any slow work, so an impossible ``--out`` fails at once."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"cannot use {option} {path}: it exists and is not a folder",
                         f"choose another {option} folder") from None
    except OSError as err:
        raise UsageError(f"cannot create {option} folder {path}: {err.strerror or err}",
                         f"choose another {option} folder that you can write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {option} folder {path}: permission denied",
                         f"choose another {option} folder that you can write to")
    return path


def safe_output_names(paths, suffix_room: int = 32) -> list[str]:
    """One distinct output stem per input path, each short enough for any file system.

    The stem is the file's own stem when it is unique among ``paths``; files sharing a stem (the
    same name in two folders) get their parent folder's name and a short hash of the full path, so
    two inputs never write the same output. Stems too long for a file name (with ``suffix_room``
    bytes left for "_gradcam.png" and the like) are cut and given the hash too.
    """
    stems = [Path(p).stem or "image" for p in paths]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    limit = MAX_NAME_BYTES - suffix_room
    out, used = [], set()
    for p, stem in zip(paths, stems, strict=True):
        tag = hashlib.blake2b(os.path.abspath(str(p)).encode("utf-8", "surrogateescape"),
                              digest_size=4).hexdigest()
        name = stem
        if counts[stem] > 1:
            name = f"{Path(p).parent.name}_{stem}_{tag}" if Path(p).parent.name else f"{stem}_{tag}"
        if len(name.encode("utf-8", "surrogateescape")) > limit:
            name = _cut_utf8(name, limit - len(tag) - 1) + "_" + tag
        while name in used:  # same stem, folder and hash: cannot happen for distinct paths
            name += "_"
        used.add(name)
        out.append(name)
    return out


def _cut_utf8(text: str, max_bytes: int) -> str:
    return text.encode("utf-8", "surrogateescape")[:max_bytes].decode("utf-8", "ignore")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``target``; rename it over ``target`` only on success.

    The temporary file lives in the same folder so the final ``os.replace`` is atomic; on any
    exception the old ``target`` (e.g. a previous ``best.keras``) is left untouched.
    """
    target = Path(target)
    try:
        if os.path.isdir(target):
            raise UsageError(f"cannot write {target}: it is a folder", "give a file name, not a folder")
        if len(target.name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise OSError(36, "File name too long")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{_cut_utf8(target.name, 100)}.",
            suffix=suffix or "".join(target.suffixes)[-20:] or ".tmp", dir=target.parent,
        )
    except OSError as err:
        # An output path that cannot be written (a file where a folder should be, no permission,
        # a read-only disk, a name too long) is the user's to fix: one line, no traceback.
        raise UsageError(f"cannot write {target}: {err.strerror or err}",
                         "choose an output path in a folder you can write to") from None
    os.close(fd)
    os.unlink(tmp)  # writers such as keras' save() want to create the file themselves
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


MAX_JSON_BYTES = 64 * 2**20  # run files are small; more is not one of ours


def read_json(path, hint: str = "restore the file, or delete it and re-create it"):
    """JSON data only (never code); an unreadable or malformed file is a UsageError naming it."""
    try:
        text = read_regular_bytes(path, MAX_JSON_BYTES).decode("utf-8")
    except NotRegularFile as err:
        raise UsageError(f"cannot read {path}: it {err}", hint) from None
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
