"""Dataset readers: HAM10000, ISIC 2019, any labelled CSV, class folders → one tidy table.

:func:`load_dataset` returns a :class:`Dataset` whose ``table`` has one row per image that
exists, with the columns of docs/CONTRACTS.md ("Dataset table"). Reading never decodes images
(that is :mod:`skinzoo.data.check`'s job); it only finds files, reads labels and metadata, and
records every row it had to skip in ``Dataset.problems``.

Formats (``format=`` name, and what ``"auto"`` looks for):

``ham10000``
    ``HAM10000_metadata.csv`` (lesion_id, image_id, dx, dx_type, age, sex, localization); the
    images are found anywhere below the root (``HAM10000_images_part_1/``, ``images/``...).
    group = lesion_id, site = localization.
``isic2019``
    ``ISIC_2019_Training_GroundTruth.csv`` (image + one-hot MEL, NV, BCC, AK, BKL, DF, VASC, SCC,
    UNK) with the optional ``ISIC_2019_Training_Metadata.csv`` (age_approx,
    anatom_site_general, lesion_id, sex); group = lesion_id where known, else the image id.
    Also the challenge-style ``metadataTrain.csv`` (ID, CLASS, age, sex, position) whose CLASS
    1..8 is mapped to the ISIC 2019 order: 1 mel, 2 nv, 3 bcc, 4 ak, 5 bkl, 6 df, 7 vasc, 8 scc.
    Class names are lower-cased so they match HAM10000's and :data:`BINARY_MAP`.
``csv``
    Any CSV with an image column and a label column (guessed from common names, or given as
    ``image_col``/``label_col``); an optional group column (lesion_id, patient_id...).
``folders``
    ``root/<class>/*.jpg``. When every top folder is a split name (train/val/test...), each holds
    class folders: all are read and the original split is kept in the column ``source_split``.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from skinzoo.data.images import IMAGE_EXTENSIONS, list_image_files
from skinzoo.errors import DataError, UsageError
from skinzoo.fileio import NotRegularFile, check_regular_file, read_regular_bytes

FORMATS = ("auto", "ham10000", "isic2019", "csv", "folders")
TASKS = ("multiclass", "binary")

HAM_CSV = "HAM10000_metadata.csv"
HAM_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
ISIC_GT_CSV = "ISIC_2019_Training_GroundTruth.csv"
ISIC_META_CSV = "ISIC_2019_Training_Metadata.csv"
ISIC_CHALLENGE_CSV = "metadataTrain.csv"
# The ISIC 2019 one-hot column order; the challenge CSV's CLASS k is ISIC_CLASSES[k - 1].
ISIC_CLASSES = ("mel", "nv", "bcc", "ak", "bkl", "df", "vasc", "scc")

# Diagnosis -> benign/malignant for task="binary". Malignant: melanoma, basal cell carcinoma,
# actinic keratosis / Bowen's disease (akiec, a precursor treated as malignant in HAM10000 binary
# benchmarks) and squamous cell carcinoma. Keys are lower-case; lookups ignore case.
BINARY_MAP = {
    "mel": "malignant", "bcc": "malignant", "akiec": "malignant", "ak": "malignant",
    "scc": "malignant", "malignant": "malignant",
    "nv": "benign", "bkl": "benign", "df": "benign", "vasc": "benign", "benign": "benign",
}
BINARY_CLASSES = ["benign", "malignant"]

IMAGE_COLUMNS = ("image", "image_id", "imageid", "image_name", "filename", "file_name", "file",
                 "path", "filepath", "file_path", "image_path", "img", "isic_id", "id")
LABEL_COLUMNS = ("label", "dx", "class", "diagnosis", "target", "category", "y",
                 "benign_malignant", "finding", "labels")
GROUP_COLUMNS = ("lesion_id", "patient_id", "patient", "subject_id", "subject", "group")
AGE_COLUMNS = ("age", "age_approx")
SEX_COLUMNS = ("sex", "gender")
SITE_COLUMNS = ("localization", "anatom_site_general", "anatom_site_general_challenge", "site",
                "position", "anatomical location", "anatomical_location", "location")
# Label values that mean "no label": such rows are reported and skipped, never made a class.
PLACEHOLDER_LABELS = {"", "nan", "none", "null", "na", "n/a", "?", "-", "unknown", "unk"}
# Image formats people put in datasets that skinzoo does not read: named when a folder holds only
# these, so "holds no images" never hides a folder of TIFF scans.
OTHER_IMAGE_EXTENSIONS = (".tif", ".tiff", ".dcm", ".dicom", ".heic", ".heif", ".webp", ".gif",
                          ".jp2", ".j2k", ".nii", ".svg", ".raw", ".dng", ".cr2", ".nef")
MAX_CSV_BYTES = 512 * 2**20  # ISIC 2019's metadata is 2 MB; a larger "CSV" is not a label file
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}


@dataclass
class Problem:
    """One thing found wrong while reading or checking a dataset.

    ``action`` is what skinzoo does about it: ``"skipped"`` (row/image left out), ``"converted"``
    (used after a fix, e.g. a grayscale image read as RGB), ``"kept"`` (reported only, e.g. a
    missing age) or ``"error"`` (blocks training).
    """

    kind: str
    where: str
    message: str
    action: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Dataset:
    """A dataset as one table plus what was found while reading it (see docs/CONTRACTS.md)."""

    table: pd.DataFrame
    classes: list[str]
    format: str
    root: Path
    problems: list[Problem] = field(default_factory=list)
    task: str = "multiclass"
    source: Path | None = None  # the CSV that was read, if any

    def __len__(self) -> int:
        return len(self.table)

    @property
    def class_counts(self) -> pd.Series:
        """Images per class, in class order (zero for a class with no rows left)."""
        return self.table["label"].value_counts().reindex(self.classes, fill_value=0)

    @property
    def label_index(self) -> pd.Series:
        """Each row's class as an int index into ``classes``."""
        return self.table["label"].map({c: i for i, c in enumerate(self.classes)}).astype(int)

    def with_table(self, table: pd.DataFrame, problems=()) -> Dataset:
        """A copy with another table (e.g. bad images dropped) and more problems appended."""
        return replace(self, table=table.reset_index(drop=True),
                       problems=[*self.problems, *problems])


def load_dataset(path, format: str = "auto", task: str = "multiclass", image_col: str | None = None,
                 label_col: str | None = None, binary_map: dict | None = None,
                 allow_outside_root: bool = False) -> Dataset:
    """Read the dataset at ``path`` (a folder or a CSV file) into a :class:`Dataset`.

    Raises ``DataError`` when nothing usable can be read (no such path, unknown layout, missing
    columns, fewer than two classes) and ``UsageError`` for bad options.
    """
    if format not in FORMATS:
        raise UsageError(f"unknown dataset format {format!r}", f"use one of: {', '.join(FORMATS)}")
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}", f"use one of: {', '.join(TASKS)}")
    if binary_map is not None:
        binary_map = _check_binary_map(binary_map)
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"dataset path {path} does not exist",
                        "check the path (`skinzoo data synth demo/` writes a demo dataset)")
    if not path.is_dir():
        try:
            check_regular_file(path)
        except NotRegularFile as err:  # a FIFO would block the CSV reader forever
            raise DataError(f"dataset path {path} {err}",
                            "pass a dataset folder or the labels CSV file itself") from None
    fmt, source = detect_format(path) if format == "auto" else (format, _source_for(format, path))
    read = _READERS[fmt](source, image_col=image_col, label_col=label_col,
                         allow_outside_root=allow_outside_root)
    return _finish(read, fmt, task, binary_map)


# --- format detection ----------------------------------------------------------------------

def detect_format(path: Path) -> tuple[str, Path]:
    """``(format, source)``: what kind of dataset ``path`` is and which file/folder to read."""
    path = Path(path)
    if path.is_file():
        return _format_of_csv(path), path
    for name, fmt in ((HAM_CSV, "ham10000"), (ISIC_GT_CSV, "isic2019"),
                      (ISIC_CHALLENGE_CSV, "isic2019")):
        if (path / name).is_file():
            return fmt, path / name
        if (path / name).exists():  # a FIFO or device under the metadata's name: never opened
            try:
                check_regular_file(path / name)
            except NotRegularFile as err:
                raise DataError(f"{path / name} {err}", "replace it with the CSV file itself") from None
    csvs = sorted(p for p in path.glob("*.csv") if p.is_file() and not p.name.startswith("."))
    if len(csvs) == 1:
        return _format_of_csv(csvs[0]), csvs[0]
    if _has_class_folders(path):
        return "folders", path
    if len(csvs) > 1:
        raise DataError(f"{path} holds several CSV files ({', '.join(p.name for p in csvs)}) and "
                        "no class folders; which one labels the images is ambiguous",
                        "pass the CSV file itself as PATH")
    found = _describe_folder(path)
    raise DataError(f"could not recognise a dataset in {path}: {found}; expected "
                    f"{HAM_CSV}, {ISIC_GT_CSV}, a labels CSV, or one folder of images per class",
                    "see `skinzoo data check --help` for the layouts, or pass --format")


def _source_for(fmt: str, path: Path) -> Path:
    """The file/folder to read when the format is named explicitly."""
    if fmt == "folders":
        if not path.is_dir():
            raise DataError(f"--format folders needs a folder, but {path} is a file",
                            "pass the folder that holds one subfolder per class")
        return path
    if path.is_file():
        return path
    names = {"ham10000": (HAM_CSV,), "isic2019": (ISIC_GT_CSV, ISIC_CHALLENGE_CSV)}.get(fmt, ())
    for name in names:
        if (path / name).is_file():
            return path / name
    csvs = sorted(path.glob("*.csv"))
    if fmt == "csv" and len(csvs) == 1:
        return csvs[0]
    expected = " or ".join(names) if names else "one CSV file"
    raise DataError(f"{path} has no {expected} ({_describe_folder(path)})",
                    "pass the CSV file itself as PATH, or --format auto")


def _format_of_csv(path: Path) -> str:
    if path.suffix.lower() not in (".csv", ".tsv", ".txt"):
        raise DataError(f"{path} is not a CSV file",
                        "pass a dataset folder, or the CSV file that labels the images")
    if path.name == HAM_CSV:
        return "ham10000"
    if path.name in (ISIC_GT_CSV, ISIC_CHALLENGE_CSV):
        return "isic2019"
    try:
        header = {c.strip().lower() for c in read_csv_table(path, nrows=2).columns}
    except DataError:
        return "csv"  # the CSV reader gives the precise error
    if {"image", "mel", "nv"} <= header:
        return "isic2019"
    if {"id", "class"} <= header and path.name.lower().startswith("metadata"):
        return "isic2019"
    if {"lesion_id", "image_id", "dx"} <= header:
        return "ham10000"
    return "csv"


def _has_class_folders(path: Path) -> bool:
    return any(list_image_files(d) for d in _subfolders(path))


def _subfolders(path: Path) -> list[Path]:
    # __MACOSX/ and dot-folders come from zip tools and version control, never from labels.
    return sorted(d for d in path.iterdir()
                  if d.is_dir() and not d.name.startswith((".", "__MACOSX")))


def _describe_folder(path: Path) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    except OSError as err:
        return f"cannot list it ({err.strerror})"
    if not names:
        return "it is empty"
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} entries)" if len(names) > 8 else "")
    return f"found {shown}" + unsupported_note(path)


def unsupported_note(folder: Path, limit: int = 20000) -> str:
    """``"; it holds 12 .tif file(s), a format skinzoo does not read ..."`` or ``""``: what
    image-like files a folder holds that are not read (only the first ``limit`` files are looked at)."""
    counts: dict[str, int] = {}
    seen = 0
    for _dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            ext = os.path.splitext(name)[1].lower()
            if ext in OTHER_IMAGE_EXTENSIONS and not name.startswith("."):
                counts[ext] = counts.get(ext, 0) + 1
            seen += 1
        if seen >= limit:
            break
    if not counts:
        return ""
    listed = ", ".join(f"{n} {ext} file(s)" for ext, n in sorted(counts.items()))
    return (f"; it holds {listed}, a format skinzoo does not read (it reads "
            f"{', '.join(IMAGE_EXTENSIONS)}): convert them to PNG or JPEG")


# --- CSV reading ---------------------------------------------------------------------------

def read_csv_table(path: Path, nrows: int | None = None, problems: list | None = None) -> pd.DataFrame:
    """Read a CSV as strings, robustly: BOM, ``;``/tab separators, blank rows, odd encodings.

    Cells are stripped; empty cells become NaN. The column ``_line`` holds each row's line
    number in the file (header = line 1) so problems can point at it.
    """
    path = Path(path)
    try:
        raw = read_regular_bytes(path, MAX_CSV_BYTES)
    except NotRegularFile as err:  # a FIFO would block, /dev/zero would never end
        raise DataError(f"cannot read {path}: it {err}",
                        "pass the labels CSV file itself") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}",
                        "check the file exists and is readable") from None
    if not raw.strip():
        raise DataError(f"{path} is empty", "write a header line and one row per image")
    text = _decode_text(raw, path, problems)
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    sep = max([",", ";", "\t", "|"], key=first.count)
    _check_field_counts(text, sep, path, problems)
    _check_duplicate_columns(text, sep, path)
    try:
        # index_col=False: rows with more fields than the header must never turn the first
        # columns into an index (pandas' default), which would shift every label by a column.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.ParserWarning)  # reported as extra_fields
            table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                                skip_blank_lines=False, nrows=nrows, skipinitialspace=True,
                                index_col=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} has no header line", "write a header line naming the columns") from None
    except (pd.errors.ParserError, UnicodeError, ValueError) as err:
        detail = str(err).strip().splitlines()[-1]
        raise DataError(f"{path} could not be parsed as CSV ({detail})",
                        "check that line: a stray separator or an unclosed quote") from None
    table.columns = [str(c).strip().lstrip("\ufeff") for c in table.columns]
    # Lines were counted with blank lines kept, so index + 2 is the file's line number
    # (as long as no quoted cell spans lines, which label CSVs do not do).
    table.insert(0, "_line", table.index + 2)
    table = table.apply(lambda col: col.str.strip() if col.dtype == object else col)
    table = table.replace("", pd.NA)
    data_cols = [c for c in table.columns if c != "_line"]
    blank = table[data_cols].isna().all(axis=1)
    if blank.any() and problems is not None:
        problems.append(Problem("empty_rows", path.name, f"{int(blank.sum())} empty row(s) ignored",
                                "skipped"))
    return table[~blank].reset_index(drop=True)


def _check_field_counts(text: str, sep: str, path: Path, problems) -> None:
    """Rows with more fields than the header: empty extras (a trailing separator on every row,
    as spreadsheets export) are ignored and reported; extras holding values are a DataError."""
    import csv

    rows = csv.reader(io.StringIO(text), delimiter=sep, skipinitialspace=True)
    header = None
    trailing = 0
    for line_no, fields in enumerate(rows, start=1):
        if not any(f.strip() for f in fields):
            continue
        if header is None:
            header = len(fields)
            continue
        if len(fields) > header:
            extra = [f for f in fields[header:] if f.strip()]
            if extra:
                raise DataError(f"{path} line {line_no} has {len(fields)} fields but the header "
                                f"names {header} columns (extra: {', '.join(extra[:3])})",
                                "name every column in the header line, or remove the extra "
                                "fields from that line")
            trailing += 1
    if trailing and problems is not None:
        problems.append(Problem("extra_fields", path.name, f"{trailing} row(s) end with empty "
                                "fields beyond the header (trailing separators): ignored",
                                "converted"))


def _check_duplicate_columns(text: str, sep: str, path: Path) -> None:
    """Two columns with one name (pandas would silently call the second ``label.1``): which one
    holds the labels is ambiguous, so it is refused rather than guessed."""
    import csv

    header = next((f for f in csv.reader(io.StringIO(text), delimiter=sep, skipinitialspace=True)
                   if any(x.strip() for x in f)), [])
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        key = name.strip().lstrip("\ufeff").lower()
        if key and key in seen:
            raise DataError(f"{path} names the column {name.strip()!r} twice (columns "
                            f"{seen[key]} and {position}); which one to use is ambiguous",
                            "rename or remove one of the two columns in the header line")
        seen.setdefault(key, position)


def _decode_text(raw: bytes, path: Path, problems) -> str:
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            pass
        if len(raw) % 2:  # a copy cut short inside its last character: drop the half
            note, raw = "ends in half a UTF-16 character (cut short?): last byte ignored", raw[:-1]
        else:
            note = "UTF-16 text with undecodable bytes: replaced by \ufffd"
        if problems is not None:
            problems.append(Problem("encoding", path.name, note, "converted"))
        return raw.decode("utf-16", errors="replace")
    if b"\x00" in raw[:4096]:
        raise DataError(f"{path} is not a text CSV file (it holds binary data)",
                        "pass the labels CSV, not an image or spreadsheet")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        if problems is not None:
            problems.append(Problem("encoding", path.name,
                                    "not UTF-8; read as Windows-1252 (check accented names)",
                                    "converted"))
        return raw.decode("cp1252", errors="replace")


def _column(table: pd.DataFrame, explicit: str | None, candidates, what: str, path: Path,
            required: bool = True, option: str | None = None) -> str | None:
    """Find a column by explicit name or by common names (case-insensitive)."""
    by_lower = {c.lower(): c for c in table.columns if c != "_line"}
    found = ", ".join(c for c in table.columns if c != "_line")
    if explicit is not None:
        if explicit in table.columns:
            return explicit
        if explicit.lower() in by_lower:
            return by_lower[explicit.lower()]
        raise DataError(f"{path.name} has no column {explicit!r} (the {what} column); "
                        f"found columns: {found}", f"pass one of those to {option or '--image-col'}")
    for name in candidates:
        if name in by_lower:
            return by_lower[name]
    if not required:
        return None
    raise DataError(f"{path.name} has no {what} column; found columns: {found}; expected one of: "
                    f"{', '.join(candidates)}",
                    "name the columns with --image-col/--label-col")


def _cell(row, col) -> str | None:
    if col is None:
        return None
    value = row[col]
    return None if pd.isna(value) else str(value)


# --- image lookup --------------------------------------------------------------------------

class ImageIndex:
    """Every image file below a root, looked up by file name or by name without extension."""

    def __init__(self, root: Path, problems: list | None = None):
        self.by_name: dict[str, str] = {}
        self.by_stem: dict[str, str] = {}
        self.duplicates: list[tuple[str, str]] = []
        for p in list_image_files(root):
            key = p.stem
            if key in self.by_stem:
                self.duplicates.append((self.by_stem[key], str(p)))
                continue
            self.by_stem[key] = str(p)
            self.by_name[p.name] = str(p)
        if problems is not None and self.duplicates:
            first, again = self.duplicates[0]
            problems.append(Problem(
                "duplicate_file", str(again),
                f"{len(self.duplicates)} image name(s) appear in two folders (e.g. {again} and "
                f"{first}); the first in sorted order is used", "skipped"))

    def find(self, image_id: str) -> str | None:
        return self.by_name.get(image_id) or self.by_stem.get(image_id) \
            or self.by_stem.get(os.path.splitext(image_id)[0])

    def __len__(self) -> int:
        return len(self.by_stem)


def _resolve_path(value: str, base: Path, index: ImageIndex | None) -> str | None:
    """The absolute (normalised, symlinks not followed) path an image column value names."""
    value = value.replace("\\", "/")  # CSVs written on Windows
    cand = Path(value) if os.path.isabs(value) else base / value
    cand_str = os.path.normpath(str(cand))
    if os.path.splitext(cand_str)[1].lower() in IMAGE_EXTENSIONS and os.path.lexists(cand_str):
        return cand_str
    for ext in IMAGE_EXTENSIONS:
        for variant in (ext, ext.upper()):
            if os.path.lexists(cand_str + variant):
                return cand_str + variant
    if index is not None and "/" not in value:
        return index.find(value)
    return None


def _outside(path: str, root: Path) -> bool:
    """Whether ``path`` leaves ``root``, by its name (``../x``) or through a symlink (a link to
    ``/etc/passwd`` named ``x.jpg``): both are refused unless ``--allow-outside-root``."""
    return _escapes(path, os.path.normpath(str(root.absolute()))) or \
        _escapes(os.path.realpath(path), os.path.realpath(root))


def _escapes(path: str, root: str) -> bool:
    rel = os.path.relpath(path, root)
    return rel == ".." or rel.startswith("../") or os.path.isabs(rel)


# --- readers -------------------------------------------------------------------------------

@dataclass
class _Read:
    table: pd.DataFrame  # path, label (raw), group, image_id, [age, sex, site, source_split]
    root: Path
    problems: list[Problem]
    order: tuple | None = None  # a fixed class order, or None for sorted names
    vocabulary: tuple | None = None  # labels outside it are reported and skipped
    source: Path | None = None


def _read_ham(csv_path: Path, **_) -> _Read:
    root = csv_path.parent.absolute()
    problems: list[Problem] = []
    meta = read_csv_table(csv_path, problems=problems)
    image_col = _column(meta, None, ("image_id",), "image_id", csv_path)
    label_col = _column(meta, None, ("dx",), "dx (diagnosis)", csv_path)
    group_col = _column(meta, None, ("lesion_id",), "lesion_id", csv_path, required=False)
    index = ImageIndex(root, problems)
    rows = _rows_from_table(meta, csv_path, root, image_col, label_col, group_col, index, problems,
                            by_id=True)
    return _Read(rows, root, problems, order=None, vocabulary=HAM_CLASSES, source=csv_path)


def _read_isic(csv_path: Path, **_) -> _Read:
    if csv_path.name == ISIC_CHALLENGE_CSV or not _is_one_hot(csv_path):
        return _read_isic_challenge(csv_path)
    root = csv_path.parent.absolute()
    problems: list[Problem] = []
    gt = read_csv_table(csv_path, problems=problems)
    image_col = _column(gt, None, ("image", "image_id", "image_name"), "image", csv_path)
    upper = {c.upper(): c for c in gt.columns}
    class_cols = [upper[c.upper()] for c in ISIC_CLASSES if c.upper() in upper]
    unk_col = upper.get("UNK")
    if len(class_cols) < 2:
        raise DataError(f"{csv_path.name} has no one-hot class columns; found columns: "
                        f"{', '.join(c for c in gt.columns if c != '_line')}; expected "
                        f"{', '.join(c.upper() for c in ISIC_CLASSES)}, UNK",
                        "pass --format csv with --label-col if the labels are in one column")
    onehot = gt[class_cols].apply(pd.to_numeric, errors="coerce").fillna(0) >= 0.5
    unk = (pd.to_numeric(gt[unk_col], errors="coerce").fillna(0) >= 0.5) if unk_col else False
    gt["_label"] = pd.NA
    keep = []
    for i, row in gt.iterrows():
        where = f"{csv_path.name} line {row['_line']}"
        hot = [c for c in class_cols if onehot.at[i, c]]
        if unk_col is not None and bool(unk.iloc[i]):
            problems.append(Problem("unk_label", where, f"{row[image_col]} is labelled UNK "
                                    "(unknown): not usable for training", "skipped"))
        elif len(hot) != 1:
            problems.append(Problem("bad_onehot", where, f"{row[image_col]} has {len(hot)} class "
                                    "columns set to 1 (expected exactly one)", "skipped"))
        else:
            gt.at[i, "_label"] = hot[0].lower()
            keep.append(i)
    gt = gt.loc[keep]
    meta_path = csv_path.parent / ISIC_META_CSV
    if meta_path.is_file():
        meta = read_csv_table(meta_path, problems=problems).drop(columns="_line")
        meta_image = _column(meta, None, ("image", "image_id"), "image", meta_path)
        meta = meta.drop_duplicates(meta_image).rename(columns={meta_image: image_col})
        meta = meta.drop(columns=[c for c in meta.columns if c in gt.columns and c != image_col])
        gt = gt.merge(meta, on=image_col, how="left")
    group_col = _column(gt, None, ("lesion_id",), "lesion_id", csv_path, required=False)
    index = ImageIndex(root, problems)
    rows = _rows_from_table(gt, csv_path, root, image_col, "_label", group_col, index, problems,
                            by_id=True)
    return _Read(rows, root, problems, order=ISIC_CLASSES, source=csv_path)


def _is_one_hot(csv_path: Path) -> bool:
    header = {c.upper() for c in read_csv_table(csv_path, nrows=1).columns}
    return {"MEL", "NV"} <= header


def _read_isic_challenge(csv_path: Path) -> _Read:
    """``metadataTrain.csv``: ID, CLASS in 1..8 (the ISIC 2019 order), sex, age, position."""
    root = csv_path.parent.absolute()
    problems: list[Problem] = []
    meta = read_csv_table(csv_path, problems=problems)
    image_col = _column(meta, None, ("id", "image", "image_id"), "ID", csv_path)
    class_col = _column(meta, None, ("class", "label"), "CLASS", csv_path)
    meta["_label"] = pd.NA
    for i, value in meta[class_col].items():
        number = pd.to_numeric(value, errors="coerce")
        if pd.notna(number) and float(number).is_integer() and 1 <= int(number) <= 8:
            meta.at[i, "_label"] = ISIC_CLASSES[int(number) - 1]
        else:
            shown = "empty" if pd.isna(value) else repr(value)
            problems.append(Problem("bad_label", f"{csv_path.name} line {meta.at[i, '_line']}",
                                    f"CLASS is {shown}; expected an integer 1..8", "skipped"))
    meta = meta[meta["_label"].notna()]
    group_col = _column(meta, None, GROUP_COLUMNS, "group", csv_path, required=False)
    index = ImageIndex(root, problems)
    rows = _rows_from_table(meta, csv_path, root, image_col, "_label", group_col, index, problems,
                            by_id=True)
    return _Read(rows, root, problems, order=ISIC_CLASSES, source=csv_path)


def _read_csv(csv_path: Path, image_col=None, label_col=None, allow_outside_root=False) -> _Read:
    root = csv_path.parent.absolute()
    problems: list[Problem] = []
    table = read_csv_table(csv_path, problems=problems)
    if table.empty:
        raise DataError(f"{csv_path} has a header but no rows", "add one row per image")
    image_col = _column(table, image_col, IMAGE_COLUMNS, "image", csv_path, option="--image-col")
    label_col = _column(table, label_col, LABEL_COLUMNS, "label", csv_path, option="--label-col")
    if image_col == label_col:
        raise UsageError(f"the image and label columns are both {image_col!r}",
                         "pass different --image-col and --label-col")
    group_col = _column(table, None, GROUP_COLUMNS, "group", csv_path, required=False)
    index = ImageIndex(root) if not table[image_col].dropna().str.contains("/|\\\\").all() else None
    rows = _rows_from_table(table, csv_path, root, image_col, label_col, group_col, index, problems,
                            by_id=False, allow_outside_root=allow_outside_root)
    return _Read(rows, root, problems, source=csv_path)


def _rows_from_table(table, csv_path, root, image_col, label_col, group_col, index, problems,
                     by_id, allow_outside_root=False) -> pd.DataFrame:
    """Turn CSV rows into table rows: find each image, keep the first of duplicated ids."""
    age_col = _column(table, None, AGE_COLUMNS, "age", csv_path, required=False)
    sex_col = _column(table, None, SEX_COLUMNS, "sex", csv_path, required=False)
    site_col = _column(table, None, SITE_COLUMNS, "site", csv_path, required=False)
    seen: dict[str, int] = {}
    rows, outside, no_group = [], [], []
    for _, row in table.iterrows():
        where = f"{csv_path.name} line {row['_line']}"
        image_id = _cell(row, image_col)
        if image_id is None:
            problems.append(Problem("missing_id", where, f"the {image_col} cell is empty", "skipped"))
            continue
        if image_id in seen:
            problems.append(Problem("duplicate_row", where, f"{image_id} is listed again (first on "
                                    f"line {seen[image_id]}); the first row is kept", "skipped"))
            continue
        seen[image_id] = row["_line"]
        path = index.find(image_id) if by_id else _resolve_path(image_id, root, index)
        if path is None:
            problems.append(Problem("missing_image", where, f"image {image_id!r} not found below "
                                    f"{root}", "skipped"))
            continue
        if not allow_outside_root and _outside(path, root):
            outside.append(where)
            problems.append(Problem("outside_root", where, f"{image_id} points outside the dataset "
                                    f"folder {root}{_via_link(path)} (pass --allow-outside-root "
                                    "if intended)", "skipped"))
            continue
        group = _cell(row, group_col)
        if group_col is not None and group is None:
            no_group.append(where)
        out = dict(path=os.path.abspath(path), label=_cell(row, label_col),
                   group=group or image_id, image_id=image_id, _where=where)
        if age_col:
            out["age"] = row[age_col]
        if sex_col:
            out["sex"] = _cell(row, sex_col) or "unknown"
        if site_col:
            out["site"] = _cell(row, site_col) or "unknown"
        rows.append(out)
    if outside and not rows:
        raise DataError(f"all {len(outside)} image paths in {csv_path.name} point outside the "
                        f"dataset folder {root}",
                        "pass --allow-outside-root (allow_outside_root=True) if that is intended")
    if no_group:
        problems.append(_missing_group_problem(csv_path, group_col, no_group, len(rows)))
    result = pd.DataFrame(rows, columns=_columns_of(rows))
    if "age" in result:
        result["age"] = pd.to_numeric(result["age"], errors="coerce").astype(float)
    return result


def _via_link(path: str) -> str:
    lexical = os.path.normpath(path)
    return " through a symlink" if os.path.realpath(lexical) != lexical else ""


def _missing_group_problem(csv_path, group_col, lines, n_rows) -> Problem:
    shown = ", ".join(w.split(" line ")[-1] for w in lines[:5]) + (", ..." if len(lines) > 5 else "")
    return Problem(
        "missing_group", csv_path.name,
        f"{len(lines)} of {n_rows} rows have no {group_col} (lines {shown}): each is treated as its "
        f"own {group_col}, and byte-identical images are grouped; if several of them show one "
        "lesion (or patient), its images can land in both train and test and flatter the scores",
        "warning")


def _columns_of(rows) -> list[str]:
    base = ["path", "label", "group", "image_id", "_where"]
    return base + [c for c in ("age", "sex", "site", "source_split") if rows and c in rows[0]]


def _read_folders(root: Path, allow_outside_root: bool = False, **_) -> _Read:
    root = root.absolute()
    problems: list[Problem] = []
    top = _subfolders(root)
    split_named = [d for d in top if d.name.lower() in SPLIT_FOLDERS]
    if split_named and len(split_named) != len(top):
        others = ", ".join(d.name for d in top if d not in split_named)
        raise DataError(f"{root} mixes split folders ({', '.join(d.name for d in split_named)}) "
                        f"with other folders ({others})",
                        "point PATH at one folder of class folders, or move the extra folders out")
    for stray in sorted(p for p in root.iterdir() if p.is_file()
                        and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")):
        problems.append(Problem("no_class_folder", str(stray),
                                "image directly in the dataset folder, not in a class folder",
                                "skipped"))
    rows, outside = [], []
    parts = [(d, SPLIT_FOLDERS[d.name.lower()]) for d in split_named] or [(root, None)]
    for base, split in parts:
        if split is not None:
            for stray in sorted(p for p in base.iterdir() if p.is_file()
                                and p.suffix.lower() in IMAGE_EXTENSIONS):
                problems.append(Problem("no_class_folder", str(stray), f"image directly in "
                                        f"{base.name}/, not in a class folder", "skipped"))
        for class_dir in _subfolders(base):
            files = list_image_files(class_dir)
            if not files:
                problems.append(Problem("empty_class", str(class_dir), f"class folder "
                                        f"{class_dir.relative_to(root)}/ holds no images"
                                        + unsupported_note(class_dir), "skipped"))
            for f in files:
                if not allow_outside_root and _outside(str(f), root):
                    outside.append(str(f))
                    problems.append(Problem("outside_root", str(f), f"{f} leads outside the "
                                            f"dataset folder {root}{_via_link(str(f))}; not read "
                                            "(pass --allow-outside-root if intended)", "skipped"))
                    continue
                image_id = f.relative_to(root).as_posix()
                row = dict(path=str(f), label=class_dir.name, group=image_id, image_id=image_id,
                           _where=image_id)
                if split is not None:
                    row["source_split"] = split
                rows.append(row)
    if outside and not rows:
        raise DataError(f"all {len(outside)} images below {root} lead outside it through "
                        f"symlinks (e.g. {outside[0]})",
                        "pass --allow-outside-root (allow_outside_root=True) if that is intended")
    if not rows:
        raise DataError(f"found no images in class folders below {root} "
                        f"({_describe_folder(root)})",
                        f"put images ({', '.join(IMAGE_EXTENSIONS)}) in one folder per class")
    return _Read(pd.DataFrame(rows, columns=_columns_of(rows)), root, problems)


_READERS = {"ham10000": _read_ham, "isic2019": _read_isic, "csv": _read_csv,
            "folders": _read_folders}


# --- labels, task, final table -------------------------------------------------------------

def _finish(read: _Read, fmt: str, task: str, binary_map: dict | None) -> Dataset:
    table, problems = read.table, read.problems
    where = read.source or read.root
    labels = table["label"].map(_normalise_label)
    empty = labels.isna() | labels.str.lower().isin(PLACEHOLDER_LABELS)
    for i in table.index[empty]:
        shown = "empty" if pd.isna(table.at[i, "label"]) else repr(table.at[i, "label"])
        problems.append(Problem("missing_label", table.at[i, "_where"],
                                f"label is {shown} for {table.at[i, 'image_id']}", "skipped"))
    labels = fold_label_case(labels, ~empty, read.vocabulary or read.order, problems, where)
    if read.vocabulary is not None:
        unknown = ~empty & ~labels.isin(read.vocabulary)
        for i in table.index[unknown]:
            problems.append(Problem("unknown_label", table.at[i, "_where"],
                                    f"unknown diagnosis {labels[i]!r}; expected one of "
                                    f"{', '.join(read.vocabulary)}", "skipped"))
        empty = empty | unknown
    table = table.assign(label=labels)[~empty]
    order = read.order
    if task == "binary":
        table, order = _to_binary(table, binary_map, problems, where)
    if table.empty:
        raise DataError(f"no usable images in {where}: {_problem_summary(problems)}",
                        "fix the rows listed by `skinzoo data check`")
    present = set(table["label"])
    classes = [c for c in order if c in present] if order else sort_labels(present)
    if len(classes) < 2:
        raise DataError(f"found only one class {classes[0]!r} ({len(table)} images) in {where}; "
                        "a classifier needs at least two",
                        "check the label column / class folders (and --task)")
    table = table.drop(columns="_where").reset_index(drop=True)
    for col in ("label", "group", "image_id"):
        table[col] = table[col].astype(str)
    return Dataset(table=table, classes=classes, format=fmt, root=read.root, problems=problems,
                   task=task, source=read.source)


def fold_label_case(labels: pd.Series, present: pd.Series, known, problems, where) -> pd.Series:
    """Labels that differ only by case (``mel``, ``MEL``, ``Mel``) become one class, with one
    ``merged_labels`` problem listing the names merged. The name kept is the format's own
    spelling when it has a fixed vocabulary, else the most common spelling (lower case on a tie).
    Labels with a single spelling are never changed."""
    values = labels[present].astype(str)
    if values.empty:
        return labels
    known_by_fold = {str(k).casefold(): str(k) for k in (known or ())}
    counts = values.value_counts()
    spellings: dict[str, list[str]] = {}
    for name in counts.index:
        spellings.setdefault(name.casefold(), []).append(name)
    mapping = {}
    for fold, names in spellings.items():
        target = known_by_fold.get(fold)
        if target is None and len(names) == 1:
            continue
        if target is None:
            target = min(names, key=lambda n: (-counts[n], n != n.lower(), n))
        renamed = [n for n in names if n != target]
        if not renamed:
            continue
        mapping.update({n: target for n in renamed})
        n_rows = int(counts[renamed].sum())
        problems.append(Problem("merged_labels", str(where),
                                f"labels differing only by case merged into {target!r}: "
                                f"{', '.join(repr(n) for n in sorted(names))} ({n_rows} row(s) "
                                "renamed)", "converted"))
    if not mapping:
        return labels
    return labels.where(~present, labels.map(lambda v: mapping.get(v, v) if isinstance(v, str) else v))


def _normalise_label(value):
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return pd.NA
    text = str(value).strip()
    # pandas writes int labels with a missing value as floats: "1.0" is the class "1".
    return re.sub(r"^(-?\d+)\.0+$", r"\1", text)


def sort_labels(labels) -> list[str]:
    """Class names sorted, numerically when they are all integers ("2" before "10")."""
    labels = [str(x) for x in labels]
    if labels and all(re.fullmatch(r"-?\d+", x) for x in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _to_binary(table, binary_map, problems, where):
    mapping = {**BINARY_MAP, **(binary_map or {})}
    mapped = table["label"].str.lower().map(mapping)
    unmapped = sorted(set(table.loc[mapped.isna(), "label"]))
    if unmapped and mapped.isna().all():
        raise DataError(f"none of the labels in {where} ({', '.join(unmapped[:10])}) has a "
                        "benign/malignant mapping for --task binary",
                        "pass --binary-map LABEL=benign,LABEL=malignant, or use --task multiclass")
    for label in unmapped:
        n = int((table["label"] == label).sum())
        problems.append(Problem("unmapped_label", str(where), f"{n} image(s) labelled {label!r} "
                                "have no benign/malignant mapping", "skipped"))
    table = table.assign(dx=table["label"], label=mapped)[mapped.notna()]
    return table, tuple(BINARY_CLASSES)


def _check_binary_map(binary_map: dict) -> dict:
    out = {}
    for key, value in binary_map.items():
        if str(value).lower() not in BINARY_CLASSES:
            raise UsageError(f"binary map sends {key!r} to {value!r}",
                             "map every label to 'benign' or 'malignant'")
        out[str(key).lower()] = str(value).lower()
    return out


def parse_binary_map(text: str) -> dict:
    """``"nv=benign,mel=malignant"`` → dict (the CLI's ``--binary-map`` option)."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise UsageError(f"--binary-map item {item!r} has no '='",
                             "write LABEL=benign or LABEL=malignant, comma-separated")
        key, value = (s.strip() for s in item.split("=", 1))
        out[key] = value
    return _check_binary_map(out)


def _problem_summary(problems) -> str:
    if not problems:
        return "no rows"
    counts = pd.Series([p.kind for p in problems]).value_counts()
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())
