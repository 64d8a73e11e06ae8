"""Patient metadata (age, sex, site, or a CSV's own columns) as a fixed-width numeric vector.

The encoding is fitted on the TRAINING split only and saved as ``metadata.json`` in the run
directory (and inside the model, in the metadata layer's config), so that ``predict``,
``evaluate`` and ``gradcam`` turn raw values into exactly the vector the model was trained on.

Per field, in field order:

``numeric`` (e.g. age)
    two values: ``value / scale`` and a missing indicator (1 when the value is missing, then the
    value slot is 0). ``age`` uses the fixed scale 100 (no statistic of any split enters it);
    another numeric column uses the largest absolute value seen in the training split.
``category`` (e.g. sex, site)
    one-hot over the categories seen in the training split (sorted), then a missing indicator.
    A category never seen in training is encoded as missing (one warning per call lists them).

Missing is explicit, never a zero that looks like a value and never imputed from the label:
empty cells, NaN and placeholders such as ``unknown`` (HAM10000's sex/site) count as missing.

To describe the metadata input of a model skinzoo did NOT train (``evaluate --meta-encoding``),
a field may also have ``"offset"`` (numeric: ``(value - offset) / scale``) and
``"missing_indicator": false`` (no indicator slot; a missing value is all zeros).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from skinzoo.errors import DataError, UsageError
from skinzoo.fileio import read_json, write_json_atomic

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"  # the encoding, in the run directory
METADATA_VALUES_FILE = "metadata.csv"  # the raw values of every image of the run, by path
ENCODING_VERSION = 1
STANDARD_FIELDS = ("age", "sex", "site")  # columns every dataset reader fills when it can
NUMERIC_KINDS = {"age": "numeric", "sex": "category", "site": "category"}
AGE_SCALE = 100.0
DEFAULT_DROPOUT = 0.3
MISSING_TOKENS = {"", "nan", "none", "null", "na", "n/a", "?", "-", "unknown", "unk"}
KINDS = ("numeric", "category")
# Body sites: HAM10000 (`localization`) and ISIC 2019 (`anatom_site_general`) name them differently,
# so a model trained on one would see every site of the other as missing. A site the model never
# saw is looked up here and encoded as the first of its equivalents the model knows (most specific
# first); only when none is known does it count as missing. Same body region, other vocabulary:
# not a guess from the label.
SITE_EQUIVALENTS = {
    # ISIC 2019 -> HAM10000
    "anterior torso": ("trunk", "chest", "abdomen"),
    "posterior torso": ("back", "trunk"),
    "lateral torso": ("trunk",),
    "torso": ("trunk",),
    "head/neck": ("face", "neck", "scalp", "ear"),
    "palms/soles": ("acral", "foot", "hand"),
    "oral/genital": ("genital",),
    # HAM10000 -> ISIC 2019
    "trunk": ("anterior torso", "posterior torso", "torso"),
    "back": ("posterior torso", "torso"),
    "chest": ("anterior torso", "torso"),
    "abdomen": ("anterior torso", "torso"),
    "face": ("head/neck",),
    "neck": ("head/neck",),
    "scalp": ("head/neck",),
    "ear": ("head/neck",),
    "acral": ("palms/soles",),
    "foot": ("palms/soles", "lower extremity"),
    "hand": ("palms/soles", "upper extremity"),
    "genital": ("oral/genital",),
}


@dataclass(frozen=True)
class Field:
    """One metadata field: its name (as typed after ``--meta``), the table column it is read
    from, and how it is encoded."""

    name: str
    column: str
    kind: str  # numeric | category
    scale: float = 1.0  # numeric: (value - offset) / scale
    categories: tuple[str, ...] = ()  # category: one-hot order
    offset: float = 0.0
    indicator: bool = True  # a missing-indicator slot after the values (always, for skinzoo's own)

    @property
    def width(self) -> int:
        return (1 if self.kind == "numeric" else len(self.categories)) + int(self.indicator)

    def feature_names(self) -> list[str]:
        values = [self.name] if self.kind == "numeric" else [f"{self.name}={c}" for c in self.categories]
        return values + ([f"{self.name}_missing"] if self.indicator else [])

    def to_dict(self) -> dict:
        out = {"name": self.name, "column": self.column, "kind": self.kind}
        if self.kind == "numeric":
            out["scale"] = self.scale
            if self.offset:
                out["offset"] = self.offset
        else:
            out["categories"] = list(self.categories)
        if not self.indicator:
            out["missing_indicator"] = False
        return out


@dataclass(frozen=True)
class MetadataEncoding:
    """Field order, categories, scaling and missing indicators: raw values -> float32 vectors."""

    fields: tuple[Field, ...]
    version: int = ENCODING_VERSION
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def width(self) -> int:
        return sum(f.width for f in self.fields)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def feature_names(self) -> list[str]:
        return [n for f in self.fields for n in f.feature_names()]

    def field_of_column(self) -> list[int]:
        """For each vector position, the index of the field it belongs to."""
        return [i for i, f in enumerate(self.fields) for _ in range(f.width)]

    def missing_columns(self) -> list[int]:
        """Vector positions of the missing indicators (the last position of each field that
        has one)."""
        ends = np.cumsum([f.width for f in self.fields])
        return [int(e) - 1 for e, f in zip(ends, self.fields, strict=True) if f.indicator]

    # --- encoding --------------------------------------------------------------------------

    def encode_table(self, table: pd.DataFrame, where: str = "the data") -> np.ndarray:
        """``(N, width)`` float32 for the rows of ``table`` (columns = each field's ``column``).
        A field whose column is absent is missing for every row (one warning)."""
        n = len(table)
        absent = [f.name for f in self.fields if f.column not in table.columns]
        if absent:
            log.warning("warning: %s has no %s column(s): encoded as missing for all %d image(s)",
                        where, ", ".join(absent), n)
        columns = {f.name: (table[f.column].tolist() if f.column in table.columns else [None] * n)
                   for f in self.fields}
        return self._encode(columns, n, where)

    def encode_values(self, values: dict, where: str = "--meta") -> np.ndarray:
        """``(1, width)`` for one set of raw values by field name (absent names are missing)."""
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            raise UsageError(f"{where} names unknown metadata field(s): {', '.join(unknown)}",
                             "the model's metadata fields are: " + ", ".join(self.names))
        return self._encode({f.name: [values.get(f.name)] for f in self.fields}, 1, where)

    def _encode(self, columns: dict, n: int, where: str) -> np.ndarray:
        out = np.zeros((n, self.width), np.float32)
        start = 0
        unseen: dict[str, set] = {}
        for f in self.fields:
            raw = columns[f.name]
            if f.kind == "numeric":
                values = np.array([_as_number(v) for v in raw], np.float64)
                bad = [v for v, x in zip(raw, values, strict=True) if np.isnan(x) and not is_missing(v)]
                if bad:
                    unseen.setdefault(f.name, set()).update(str(b) for b in bad)
                known = ~np.isnan(values)
                out[known, start] = ((values[known] - f.offset) / f.scale).astype(np.float32)
                if f.indicator:
                    out[~known, start + 1] = 1.0
            else:
                index = {c: i for i, c in enumerate(f.categories)}
                for row, v in enumerate(raw):
                    text = None if is_missing(v) else _category(v)
                    if f.name == "site" and text is not None and text not in index:
                        text = known_site(text, index) or text
                    if text is not None and text in index:
                        out[row, start + index[text]] = 1.0
                    else:
                        if text is not None:
                            unseen.setdefault(f.name, set()).add(text)
                        if f.indicator:
                            out[row, start + f.width - 1] = 1.0
            start += f.width
        if unseen:
            shown = "; ".join(f"{k}: {', '.join(sorted(v)[:6])}" for k, v in unseen.items())
            log.warning("warning: metadata values in %s that the model never saw in training are "
                        "treated as missing (%s)", where, shown)
        return out

    # --- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"version": self.version, "fields": [f.to_dict() for f in self.fields],
                "width": self.width, "feature_names": self.feature_names()}

    @classmethod
    def from_dict(cls, data, where: str = "metadata encoding") -> MetadataEncoding:
        hint = "restore the file from the run, or train again with --metadata"
        if not isinstance(data, dict) or not isinstance(data.get("fields"), list) or not data["fields"]:
            raise UsageError(f"{where} is not a metadata encoding (no \"fields\" list)", hint)
        if data.get("version", ENCODING_VERSION) != ENCODING_VERSION:
            raise UsageError(f"{where} has encoding version {data.get('version')!r}; this skinzoo "
                             f"reads version {ENCODING_VERSION}", "use the skinzoo version that trained it")
        fields = []
        for item in data["fields"]:
            try:
                kind = item["kind"]
                indicator = item.get("missing_indicator", True)
                if kind not in KINDS or not isinstance(indicator, bool):
                    raise ValueError(kind)
                if kind == "numeric":
                    scale, offset = float(item["scale"]), float(item.get("offset", 0.0))
                    if not (math.isfinite(scale) and scale > 0 and math.isfinite(offset)):
                        raise ValueError(scale)
                    fields.append(Field(str(item["name"]), str(item["column"]), kind, scale,
                                        offset=offset, indicator=indicator))
                else:
                    cats = tuple(_category(c) for c in item["categories"])
                    if not cats and not indicator:
                        raise ValueError(cats)
                    fields.append(Field(str(item["name"]), str(item["column"]), kind,
                                        categories=cats, indicator=indicator))
            except (KeyError, TypeError, ValueError):
                raise UsageError(f"{where}: field {item!r:.80} is malformed", hint) from None
        encoding = cls(tuple(fields))
        if len(set(encoding.names)) != len(encoding.names):
            raise UsageError(f"{where} repeats a field name ({', '.join(encoding.names)})", hint)
        if "width" in data and data["width"] != encoding.width:
            raise UsageError(f"{where}: width {data['width']!r} does not match its fields "
                             f"({encoding.width})", hint)
        return encoding

    def save(self, path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path) -> MetadataEncoding:
        return cls.from_dict(read_json(path, "restore it from the run, or train again with --metadata"),
                             str(path))


# --- values --------------------------------------------------------------------------------

def is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        if pd.isna(value):
            return True
    except (TypeError, ValueError):
        pass
    return str(value).strip().lower() in MISSING_TOKENS


def _as_number(value) -> float:
    if is_missing(value) or isinstance(value, bool):
        return math.nan
    try:
        number = float(str(value).strip())
    except ValueError:
        return math.nan
    return number if math.isfinite(number) else math.nan


def known_site(site: str, known) -> str | None:
    """The first of ``site``'s equivalents (:data:`SITE_EQUIVALENTS`) that is in ``known``."""
    return next((alias for alias in SITE_EQUIVALENTS.get(site, ()) if alias in known), None)


def _category(value) -> str:
    text = str(value).strip().lower()
    # pandas turns an integer column with a gap into floats: "1.0" is the category "1".
    return text[:-2] if text.endswith(".0") and text[:-2].lstrip("-").isdigit() else text


# --- choosing and fitting fields -------------------------------------------------------------

def parse_field_list(text, option: str = "--metadata") -> list[tuple[str, str]]:
    """``"age,sex"`` or ``"age=patient_age,fitz"`` -> ``[(name, column), ...]`` (no repeats)."""
    if text is None:
        return []
    items = text if isinstance(text, list | tuple) else str(text).split(",")
    out = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        name, _, column = item.partition("=")
        name, column = name.strip(), (column.strip() or name.strip())
        if not name or not column:
            raise UsageError(f"{option} item {item!r} is empty on one side of '='",
                             f"write {option} NAME or NAME=COLUMN, comma-separated")
        out.append((name, column))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise UsageError(f"{option} names a field twice: {text}", "list each field once")
    return out


def requested_fields(metadata=None, metadata_cols=None) -> list[tuple[str, str]]:
    """``--metadata`` (standard fields age/sex/site, read from the dataset's own columns) and
    ``--metadata-cols`` (a CSV's own columns, ``NAME[=COLUMN]``) as one ordered field list."""
    standard = parse_field_list(metadata, "--metadata")
    for name, column in standard:
        if name not in STANDARD_FIELDS or column != name:
            raise UsageError(f"--metadata {name!r} is not one of {', '.join(STANDARD_FIELDS)}",
                             "name a CSV's own columns with --metadata-cols COLUMN[,COLUMN...]")
    custom = parse_field_list(metadata_cols, "--metadata-cols")
    both = standard + custom
    names = [n for n, _ in both]
    if len(set(names)) != len(names):
        raise UsageError("--metadata and --metadata-cols name the same field twice: "
                         + ", ".join(sorted({n for n in names if names.count(n) > 1})),
                         "list each field once")
    return both


def fit_encoding(train_table: pd.DataFrame, fields, where: str = "the training split") -> MetadataEncoding:
    """The encoding of ``fields`` (``[(name, column)]``) learned from the TRAINING rows only."""
    if not fields:
        raise UsageError("no metadata fields chosen", "pass --metadata age,sex,site or --metadata-cols")
    out = []
    for name, column in fields:
        if column not in train_table.columns:
            raise DataError(f"the dataset has no {column!r} column for metadata field {name!r}",
                            "HAM10000 and ISIC 2019 give age, sex and site; for another CSV name its "
                            "columns with --metadata-cols NAME=COLUMN")
        values = train_table[column].tolist()
        present = [v for v in values if not is_missing(v)]
        if not present:
            raise DataError(f"metadata field {name!r} ({column}) is missing for every training image",
                            "drop it from --metadata / --metadata-cols")
        kind = NUMERIC_KINDS.get(name) or _guess_kind(present)
        if kind == "numeric":
            numbers = np.array([_as_number(v) for v in present])
            if name == "age":
                scale = AGE_SCALE
            else:
                top = float(np.nanmax(np.abs(numbers))) if not np.isnan(numbers).all() else 0.0
                scale = top if top > 0 else 1.0
            out.append(Field(name, column, "numeric", scale))
        else:
            out.append(Field(name, column, "category",
                             categories=tuple(sorted({_category(v) for v in present}))))
    return MetadataEncoding(tuple(out))


def _guess_kind(values) -> str:
    numbers = [_as_number(v) for v in values]
    return "numeric" if not any(math.isnan(x) for x in numbers) else "category"


def attach_columns(table: pd.DataFrame, source, columns) -> pd.DataFrame:
    """``table`` with the CSV columns ``columns`` of ``source`` (the CSV the dataset was read
    from) added, matched on ``image_id``. The dataset readers keep only the standard columns; a
    generic CSV's own columns (``--metadata-cols``) are read here."""
    from skinzoo.data.sources import read_csv_table

    wanted = [c for c in columns if c not in table.columns]
    if not wanted:
        return table
    if source is None or not Path(source).is_file():
        raise DataError(f"metadata column(s) {', '.join(wanted)} need a CSV, but this dataset "
                        "was read from class folders", "use a labels CSV that holds the columns")
    csv = read_csv_table(Path(source))
    missing = [c for c in wanted if c not in csv.columns]
    if missing:
        raise DataError(f"{Path(source).name} has no column(s) {', '.join(missing)}; found: "
                        + ", ".join(c for c in csv.columns if c != "_line"),
                        "name existing columns with --metadata-cols NAME=COLUMN")
    ids = set(table["image_id"].astype(str))
    key = next((c for c in csv.columns if c != "_line" and ids <= set(csv[c].dropna().astype(str))),
               None)
    if key is None:
        raise DataError(f"cannot match the rows of {Path(source).name} to the images (no column "
                        "holds every image id)", "check that the CSV lists each image once")
    values = csv.drop_duplicates(key).set_index(csv.drop_duplicates(key)[key].astype(str))[wanted]
    joined = values.reindex(table["image_id"].astype(str).to_numpy())
    return table.assign(**{c: joined[c].to_numpy() for c in wanted})


# --- run directory ------------------------------------------------------------------------

def write_values(table: pd.DataFrame, encoding: MetadataEncoding, path) -> None:
    """``metadata.csv``: ``path`` and the raw value of every field for each image of a run, so
    evaluating the run on its own split finds each image's metadata without the dataset CSV."""
    from skinzoo.fileio import write_text_atomic

    out = pd.DataFrame({"path": table["path"].astype(str)})
    for f in encoding.fields:
        out[f.name] = table[f.column].to_numpy() if f.column in table else None
    write_text_atomic(path, out.to_csv(index=False))


def read_values(path) -> pd.DataFrame:
    """``metadata.csv`` back: columns ``path`` and one per field name (strings, NaN = missing)."""
    from skinzoo.data.sources import read_csv_table

    table = read_csv_table(Path(path))
    if "path" not in table.columns:
        raise DataError(f"{path} has no path column", f"delete {path}: evaluate then needs --data")
    return table.drop(columns="_line")


def encode_by_path(encoding: MetadataEncoding, values: pd.DataFrame, paths,
                   where: str = "the data") -> np.ndarray:
    """``(len(paths), width)``: the row of ``values`` (with ``path`` and field-name columns) of
    each path; a path without a row is all missing."""
    rows = values.drop_duplicates("path").set_index("path")
    table = rows.reindex([str(p) for p in paths]).rename(
        columns={f.name: f.column for f in encoding.fields})
    return encoding.encode_table(table, where)


def parse_meta_values(text: str | None, option: str = "--meta") -> dict[str, str]:
    """``"age=55,sex=female,site=upper extremity"`` -> raw values by field name."""
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} item {item!r} is not name=value",
                             "write e.g. --meta age=55,sex=female,site=back")
        out[key.strip()] = value.strip()
    return out


def encoding_for_run(run_path, table: pd.DataFrame, split: pd.Series, fields) -> MetadataEncoding:
    """The run's encoding: read from ``metadata.json`` when resuming, else fitted on the TRAINING
    rows of ``table`` and written to ``metadata.json`` with every image's raw values
    (``metadata.csv``)."""
    run_path = Path(run_path)
    saved = run_path / METADATA_FILE
    if saved.exists():
        return MetadataEncoding.load(saved)
    encoding = fit_encoding(table[split.reindex(table.index) == "train"], fields)
    encoding.save(saved)
    write_values(table, encoding, run_path / METADATA_VALUES_FILE)
    return encoding
