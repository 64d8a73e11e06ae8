"""`skinzoo data download`: the public dermoscopy sets, fetched, checked and laid out for training.

What it does for each file of a set, in order:

1. **fetch** into ``DIR/downloads/NAME`` through ``NAME.part``: a partial file is resumed with an
   HTTP ``Range`` request (a server that ignores ranges gets a fresh start); a transfer that
   breaks off is resumed automatically a few times, and the ``.part`` is kept for the next run.
   A file already in ``downloads/`` (a finished download, or one placed by hand) is not fetched.
2. **verify the size** against what the server announced (``Content-Length`` / ``Content-Range``).
3. **verify the checksum**: the publishers give no SHA-256 for these files (Harvard Dataverse
   lists MD5s on its web page; the ISIC bucket lists none), and no checksum is pinned here that
   could not be checked while writing this code. So the SHA-256 of each file is *recorded on its
   first download* in ``DIR/downloads/SHA256SUMS`` (``sha256sum -c`` format) and checked on
   every later run: a re-download or a copy placed by hand must match what was first fetched.
4. **unpack** zip archives into ``DIR/<archive name>/`` (member names checked: no absolute
   paths, no ``..``, no links: nothing lands outside that folder), through a temporary folder
   renamed at the end, so an interrupted unpack is redone, never half-used; CSVs go to ``DIR/``.
5. **lay out** what ``--format auto`` reads, and say the exact ``skinzoo train`` command.

Offline (connection refused, no DNS, timeout before any byte) it fails at once with one line
naming the URL and how to place the file by hand. Nothing is downloaded at import time and no
other command downloads.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shlex
import shutil
import socket
import stat
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from skinzoo import __version__
from skinzoo.errors import DataError, SkinzooError, UsageError
from skinzoo.fileio import atomic_path, write_text_atomic
from skinzoo.progress import Progress, note, track

CHUNK = 1 << 20
TIMEOUT_SECONDS = 20.0  # per socket operation: a refused connection still fails at once
RETRIES = 3  # automatic resumes of a transfer that breaks off
CHECKSUM_FILE = "SHA256SUMS"
DOWNLOADS = "downloads"


class DownloadError(SkinzooError):
    """A file could not be fetched or did not verify (network, server, size, checksum)."""

    exit_code = 7


class OfflineError(DownloadError):
    """The server could not be reached at all (no network, refused, no DNS)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a public set: its name on disk, where it comes from, what to do with it."""

    name: str
    url: str
    approx_size: str  # for --list only; the real size is the server's and is what is checked
    unpack: bool = False  # a zip archive to unpack into DIR/<stem>/
    to_top: bool = False  # a CSV that --format auto expects in DIR/ itself


@dataclass(frozen=True)
class PublicDataset:
    name: str
    title: str
    files: tuple[RemoteFile, ...]
    size: str
    licence: str
    citation: str
    homepage: str
    layout: Callable[[Path], list[str]] | None = None  # extra layout step; returns train options
    notes: tuple[str, ...] = field(default=())


_DATAVERSE = "https://dataverse.harvard.edu/api/access/datafile/"
_ISIC = "https://isic-challenge-data.s3.amazonaws.com/"

_ISIC2018_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
_ISIC2018_SPLITS = (("Training", "train"), ("Validation", "val"), ("Test", "test"))
ISIC2018_LABELS = "labels.csv"
ISIC2018_SPLIT = Path("splits") / "official.csv"


def layout_isic2018(root: Path) -> list[str]:
    """ISIC 2018 Task 3 ships one-hot ground truth per split (MEL, NV, BCC, AKIEC, BKL, DF, VASC)
    and lesion groups for the training images only. Writes ``labels.csv`` (image, label in
    HAM10000's names, lesion_id), which ``--format auto`` reads as a generic CSV, and the official
    train/val/test split as ``splits/official.csv`` for ``--split-file``."""
    import pandas as pd

    groups = {}
    grouping = root / DOWNLOADS / "ISIC2018_Task3_Training_LesionGroupings.csv"
    if grouping.is_file():
        g = pd.read_csv(grouping)
        if {"image", "lesion_id"} <= set(g.columns):
            groups = dict(zip(g["image"].astype(str), g["lesion_id"].astype(str), strict=True))
    rows = []
    for folder, split in _ISIC2018_SPLITS:
        found = sorted(root.glob(f"ISIC2018_Task3_{folder}_GroundTruth/**/ISIC2018_Task3_{folder}_GroundTruth.csv"))
        if not found:
            raise DataError(f"the {folder} ground truth of ISIC 2018 Task 3 is missing under {root}",
                            "run the same download command again to fetch and unpack it")
        gt = pd.read_csv(found[0])
        missing = [c for c in ("image", *_ISIC2018_CLASSES) if c not in gt.columns]
        if missing:
            raise DataError(f"{found[0]} has no {', '.join(missing)} column(s)",
                            "delete it and its zip in downloads/, then run the download again")
        hot = gt[list(_ISIC2018_CLASSES)].to_numpy().argmax(axis=1)
        for image, k in zip(gt["image"].astype(str), hot, strict=True):
            rows.append({"image": image, "label": _ISIC2018_CLASSES[k].lower(),
                         "lesion_id": groups.get(image, image), "split": split})
    table = pd.DataFrame(rows)
    write_text_atomic(root / ISIC2018_LABELS, table[["image", "label", "lesion_id"]].to_csv(index=False))
    split = table.rename(columns={"image": "image_id"})[["image_id", "label", "split"]]
    write_text_atomic(root / ISIC2018_SPLIT, split.to_csv(index=False))
    return ["--split-file", str(root / ISIC2018_SPLIT)]


DATASETS: dict[str, PublicDataset] = {
    "ham10000": PublicDataset(
        name="ham10000",
        title="HAM10000: 10,015 dermoscopic images of 7 classes, with lesion ids, age, sex, site",
        files=(
            RemoteFile("HAM10000_images_part_1.zip", _DATAVERSE + "3172585", "~1.3 GB", unpack=True),
            RemoteFile("HAM10000_images_part_2.zip", _DATAVERSE + "3172584", "~1.4 GB", unpack=True),
            # Dataverse serves its re-exported tab file unless asked for the original CSV.
            RemoteFile("HAM10000_metadata.csv", _DATAVERSE + "4338392?format=original", "~0.6 MB",
                       to_top=True),
        ),
        size="~2.7 GB",
        licence="CC BY-NC-SA 4.0 (non-commercial; see the Dataverse page)",
        citation=("Tschandl P, Rosendahl C, Kittler H. The HAM10000 dataset, a large collection of "
                  "multi-source dermatoscopic images of common pigmented skin lesions. Sci Data 5, "
                  "180161 (2018). doi:10.1038/sdata.2018.161"),
        homepage="https://doi.org/10.7910/DVN/DBW86T (Harvard Dataverse)",
    ),
    "isic2019": PublicDataset(
        name="isic2019",
        title="ISIC 2019 training set: 25,331 dermoscopic images of 8 classes, ground truth + metadata",
        files=(
            RemoteFile("ISIC_2019_Training_Input.zip", _ISIC + "2019/ISIC_2019_Training_Input.zip",
                       "~9.1 GB", unpack=True),
            RemoteFile("ISIC_2019_Training_GroundTruth.csv",
                       _ISIC + "2019/ISIC_2019_Training_GroundTruth.csv", "~1.2 MB", to_top=True),
            RemoteFile("ISIC_2019_Training_Metadata.csv",
                       _ISIC + "2019/ISIC_2019_Training_Metadata.csv", "~1.3 MB", to_top=True),
        ),
        size="~9.1 GB",
        licence="CC BY-NC 4.0 (non-commercial)",
        citation=("Tschandl P et al. The HAM10000 dataset. Sci Data 5, 180161 (2018); Codella N et al. "
                  "Skin lesion analysis toward melanoma detection: a challenge at ISBI 2017. "
                  "arXiv:1710.05006; Combalia M et al. BCN20000: Dermoscopic lesions in the wild. "
                  "arXiv:1908.02288 (2019)"),
        homepage="https://challenge.isic-archive.com/data/#2019",
    ),
    "isic2018": PublicDataset(
        name="isic2018",
        title=("ISIC 2018 Task 3: 10,015 training (= HAM10000), 193 validation and 1,512 test images "
               "of 7 classes, all with ground truth"),
        files=(
            RemoteFile("ISIC2018_Task3_Training_Input.zip",
                       _ISIC + "2018/ISIC2018_Task3_Training_Input.zip", "~2.6 GB", unpack=True),
            RemoteFile("ISIC2018_Task3_Training_GroundTruth.zip",
                       _ISIC + "2018/ISIC2018_Task3_Training_GroundTruth.zip", "~40 kB", unpack=True),
            RemoteFile("ISIC2018_Task3_Training_LesionGroupings.csv",
                       _ISIC + "2018/ISIC2018_Task3_Training_LesionGroupings.csv", "~0.4 MB"),
            RemoteFile("ISIC2018_Task3_Validation_Input.zip",
                       _ISIC + "2018/ISIC2018_Task3_Validation_Input.zip", "~50 MB", unpack=True),
            RemoteFile("ISIC2018_Task3_Validation_GroundTruth.zip",
                       _ISIC + "2018/ISIC2018_Task3_Validation_GroundTruth.zip", "~2 kB", unpack=True),
            RemoteFile("ISIC2018_Task3_Test_Input.zip",
                       _ISIC + "2018/ISIC2018_Task3_Test_Input.zip", "~0.4 GB", unpack=True),
            RemoteFile("ISIC2018_Task3_Test_GroundTruth.zip",
                       _ISIC + "2018/ISIC2018_Task3_Test_GroundTruth.zip", "~10 kB", unpack=True),
        ),
        size="~3.1 GB",
        licence="CC BY-NC 4.0 (non-commercial)",
        citation=("Codella N et al. Skin lesion analysis toward melanoma detection 2018: a challenge "
                  "hosted by the ISIC. arXiv:1902.03368; Tschandl P et al. The HAM10000 dataset. "
                  "Sci Data 5, 180161 (2018)"),
        homepage="https://challenge.isic-archive.com/data/#2018",
        layout=layout_isic2018,
        notes=("labels.csv + splits/official.csv (the challenge's own train/val/test) are written "
               "after unpacking",),
    ),
}
DATASET_NAMES = tuple(DATASETS)


# --- catalogue -------------------------------------------------------------------------------

def get_dataset(name: str) -> PublicDataset:
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}", f"choose one of: {', '.join(DATASET_NAMES)} "
                         "(skinzoo data download --list)")
    return DATASETS[name]


def catalogue_lines() -> list[str]:
    """``--list``: name, size, licence, files with their URLs, and how to cite each set."""
    lines = []
    for d in DATASETS.values():
        lines += [f"{d.name}  ({d.size})  {d.title}",
                  f"  licence:  {d.licence}", f"  source:   {d.homepage}", f"  cite:     {d.citation}"]
        lines += [f"  file:     {f.name} ({f.approx_size})  {f.url}" for f in d.files]
        lines += [f"  note:     {n}" for n in d.notes]
        lines.append("")
    lines.append("Sizes are approximate; each download is checked against the size the server "
                 "announces and its SHA-256 is recorded on first download (downloads/SHA256SUMS).")
    return lines


def file_url(remote: RemoteFile, mirror: str | None = None) -> str:
    """The publisher's URL, or ``MIRROR/NAME`` (a local or institutional copy)."""
    if not mirror:
        return remote.url
    return mirror.rstrip("/") + "/" + urllib.parse.quote(remote.name)


# --- checksums -------------------------------------------------------------------------------

def read_checksums(path: Path) -> dict[str, str]:
    """``SHA256SUMS`` (``<hex>  <name>`` per line) as ``{name: hex}``; unreadable lines skipped."""
    if not path.is_file():
        return {}
    sums = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
        if m:
            sums[m.group(2)] = m.group(1).lower()
    return sums


def record_checksum(path: Path, name: str, digest: str) -> None:
    sums = read_checksums(path)
    sums[name] = digest
    write_text_atomic(path, "".join(f"{h}  {n}\n" for n, h in sorted(sums.items())))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh, Progress(f"sha256 {path.name}", total=size, unit="B") as bar:
        while block := fh.read(CHUNK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def verify_checksum(path: Path, sums_file: Path) -> str:
    """Check ``path`` against its recorded SHA-256, or record it (first download). A mismatch
    moves the file aside (never deleted: it may be the user's own copy) and raises."""
    digest = sha256_of(path)
    recorded = read_checksums(sums_file).get(path.name)
    if recorded is None:
        record_checksum(sums_file, path.name, digest)
        note(f"{path.name}: sha256 {digest} recorded in {sums_file} (first download)")
        return digest
    if recorded != digest:
        aside = path.with_name(path.name + ".sha256-mismatch")
        os.replace(path, aside)
        raise DownloadError(
            f"{path.name} does not match the SHA-256 recorded in {sums_file} "
            f"(recorded {recorded[:12]}..., this file {digest[:12]}...); moved to {aside.name}",
            f"delete {aside} and run the same command again to fetch it afresh; if the publisher "
            f"changed the file on purpose, also delete its line in {sums_file.name}")
    return digest


# --- fetching --------------------------------------------------------------------------------

def _offline_error(url: str, reason, target: Path) -> OfflineError:
    host = urllib.parse.urlsplit(url).netloc or url
    why = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return OfflineError(
        f"cannot reach {host} to download {target.name} ({why}): {url}",
        f"download {url} by hand (browser, curl -L -C -) into {target.parent}/ as {target.name}, "
        "then run the same command again: it verifies and unpacks files already there")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000)."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    return start, (int(m.group(2)) if m.group(2) != "*" else None)


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": f"skinzoo/{__version__} (+dataset download)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def fetch(url: str, target: Path, retries: int = RETRIES, timeout: float = TIMEOUT_SECONDS) -> Path:
    """Download ``url`` to ``target`` through ``target.part`` with resume; returns ``target``.

    The size on disk must equal the size the server announced. A transfer that breaks off is
    resumed up to ``retries`` times; after that the ``.part`` file stays for the next run.
    """
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    attempts = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        try:
            total = _transfer(url, part, offset, timeout, target)
        except _Interrupted as err:
            attempts += 1
            got = part.stat().st_size if part.exists() else 0
            if attempts > retries:
                raise DownloadError(
                    f"the transfer of {target.name} stopped at {got:,} bytes ({err.reason}): {url}",
                    f"run the same command again: it resumes from byte {got:,} ({part.name} is kept)"
                ) from None
            note(f"{target.name}: transfer stopped at {got:,} bytes ({err.reason}); resuming "
                 f"({attempts}/{retries})")
            continue
        except OSError as err:  # writing the .part: full disk, no permission
            raise DownloadError(f"cannot write {part}: {err.strerror or err}",
                                "free some space or choose another --to folder; the partial file "
                                "is resumed next time") from None
        size = part.stat().st_size
        if total is not None and size != total:
            part.unlink()
            raise DownloadError(f"{target.name} is {size:,} bytes but the server announced {total:,}: {url}",
                                "the file may have changed on the server while it was fetched; "
                                "run the same command again to fetch it afresh")
        os.replace(part, target)
        return target


class _Interrupted(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _transfer(url: str, part: Path, offset: int, timeout: float, target: Path) -> int | None:
    """One request: append to ``part`` from ``offset``; returns the full size the server
    announced (None if it did not say). Raises OfflineError before the first byte,
    _Interrupted once bytes flowed (or the connection dropped mid-way)."""
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # asked past the end: the .part may already be complete
            _, total = _content_range(err.headers.get("Content-Range"))
            err.close()
            if total is not None and total == offset:
                return total
            part.unlink()  # not a prefix of the file on the server: start over
            raise _Interrupted(f"the partial file ({offset:,} bytes) does not fit the server's "
                               f"({total if total is not None else '?'} bytes); starting over") from None
        reason = f"{err.code} {err.reason}"
        err.close()
        raise DownloadError(f"the server answered {reason} for {target.name}: {url}",
                            "try again later (a partial download is kept and resumed); if it "
                            "persists, download the file by hand into "
                            f"{target.parent}/ and run the same command again") from None
    except (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError, http.client.HTTPException) as err:
        raise _offline_error(url, getattr(err, "reason", err), target) from None
    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:  # a range we did not ask for: trust nothing, start over
                part.unlink(missing_ok=True)
                raise _Interrupted("the server resumed at the wrong byte")
            mode = "ab"
        else:  # 200: the server ignored the range (or there was none): from the start
            offset, total, mode = 0, length, "wb"
        note(f"{target.name}: {'resuming at byte ' + format(offset, ',') if offset else 'downloading'} "
             f"from {urllib.parse.urlsplit(url).netloc}", detail=True)
        received = 0
        with open(part, mode) as out, Progress(target.name, total=total, unit="B", start=offset) as bar:
            while block := _read_block(response):
                out.write(block)  # a full disk is an OSError for the user, not a retry
                received += len(block)
                bar.update(len(block))
        # http.client's read(n) returns b"" when the server closes early instead of raising
        if length is not None and received < length:
            raise _Interrupted(f"connection closed after {received:,} of {length:,} bytes")
        return total


def _read_block(response) -> bytes:
    try:
        return response.read(CHUNK)
    except (http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout) as err:
        # IncompleteRead: the server closed before sending what it announced
        raise _Interrupted(type(err).__name__ if not str(err) else str(err)[:80]) from None


# --- unpacking -------------------------------------------------------------------------------

def _member_parts(info: zipfile.ZipInfo, archive: Path) -> tuple[str, ...] | None:
    """The path parts of a zip member, or None to skip it (folders, macOS metadata). A member
    that would land outside the target (absolute, drive letter, ``..``) or is a link is refused:
    a zip made that way is not a dataset ("zip slip")."""
    name = info.filename.replace("\\", "/")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    bad = name.startswith("/") or ".." in parts or (parts and re.match(r"^[A-Za-z]:", parts[0]))
    mode = info.external_attr >> 16
    if bad or stat.S_ISLNK(mode):
        what = "a symbolic link" if not bad else "a path outside the folder"
        raise DataError(f"{archive.name} holds {what} ({info.filename!r}); refusing to unpack it",
                        "this is not the publisher's archive: delete it and download it again")
    if not parts or info.is_dir() or parts[0] == "__MACOSX" or parts[-1] == ".DS_Store":
        return None
    return parts


def safe_unpack(archive: Path, dest: Path) -> int:
    """Unpack ``archive`` into ``dest`` (created; must not exist yet) via a temporary folder.

    A single top folder named like the archive (``X.zip`` holding ``X/...``) is dropped, so the
    files land in ``dest/`` not ``dest/X/``. Returns the number of files written."""
    tmp = dest.with_name(f".{dest.name}.unpacking")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted run
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{archive} is not a complete zip archive ({err})",
                        f"delete {archive} and run the same command again to download it afresh") from None
    with zf:
        members = [(info, _member_parts(info, archive)) for info in zf.infolist()]
        members = [(info, parts) for info, parts in members if parts]
        if members and all(parts[0] == dest.name and len(parts) > 1 for _, parts in members):
            members = [(info, parts[1:]) for info, parts in members]
        root = tmp.resolve()
        try:
            for info, parts in track(members, f"unpacking {archive.name}", unit="files"):
                out = tmp.joinpath(*parts)
                if root not in out.resolve().parents:  # belt and braces after the name checks
                    raise DataError(f"{archive.name}: {info.filename!r} would land outside {dest}",
                                    "delete the archive and download it again")
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"cannot unpack {archive.name}: {err}",
                            f"the archive is damaged: delete {archive} and run the same command again"
                            ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    os.replace(tmp, dest)
    return len(members)


# --- the command -----------------------------------------------------------------------------

@dataclass
class DownloadResult:
    root: Path
    dataset: PublicDataset
    fetched: list[str]
    reused: list[str]
    unpacked: list[str]
    train_command: str


def download_dataset(name: str, to: str | os.PathLike, mirror: str | None = None,
                     retries: int = RETRIES, timeout: float = TIMEOUT_SECONDS) -> DownloadResult:
    """Fetch, verify, unpack and lay out public set ``name`` in ``to``; see the module docstring."""
    dataset = get_dataset(name)
    root = Path(to).expanduser()
    if root.exists() and not root.is_dir():
        raise UsageError(f"--to {root} is a file, not a folder", "choose a folder")
    downloads = root / DOWNLOADS
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create {downloads}: {err.strerror or err}",
                         "choose a --to folder you can write to") from None
    sums = downloads / CHECKSUM_FILE
    fetched, reused, unpacked = [], [], []
    for remote in dataset.files:
        target = downloads / remote.name
        if target.is_file():
            reused.append(remote.name)
        else:
            fetch(file_url(remote, mirror), target, retries=retries, timeout=timeout)
            fetched.append(remote.name)
        verify_checksum(target, sums)
        if remote.unpack:
            dest = root / Path(remote.name).stem
            if not dest.is_dir():
                safe_unpack(target, dest)
                unpacked.append(remote.name)
        if remote.to_top:
            with atomic_path(root / remote.name) as tmp:
                shutil.copyfile(target, tmp)
    options = dataset.layout(root) if dataset.layout else []
    command = shlex.join(["skinzoo", "train", "--data", str(root), *options])
    return DownloadResult(root, dataset, fetched, reused, unpacked, command)
