"""Metadata for models that take it: which inputs are encoded metadata, and their values.

A model's non-image inputs are of two kinds:

- **encoded metadata** (models trained with ``--metadata``, and ensembles of them): the encoding
  is in the run's ``metadata.json`` or in the model's own ``metadata_dropout`` layer, so raw values
  are given by field name (``--meta age=55,sex=female,site=back``) or read from a dataset's
  columns, and anything not given is encoded as *missing*, the state the model was trained to
  handle (never zeros that look like values);
- **raw inputs** of a model skinzoo did not train: given as numbers by input name
  (``--meta input_layer_3=0.55:1:0:...``), zeros with a warning otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from skinzoo.data.metadata import (
    METADATA_FILE,
    METADATA_VALUES_FILE,
    MetadataEncoding,
    attach_columns,
    encode_by_path,
    is_missing,
    parse_meta_values,
    read_values,
)
from skinzoo.errors import DataError, UsageError

log = logging.getLogger(__name__)
ABSENT = "none"  # --meta none: metadata absent (every field missing), e.g. to measure that case


def model_encodings(model, run=None) -> dict[str, MetadataEncoding]:
    """``{input name: encoding}`` of the model's encoded metadata inputs. The run's
    ``metadata.json`` is the reference for the input ``metadata`` when it exists."""
    from skinzoo.models.fusion import METADATA_INPUT, encodings_of

    found = encodings_of(model)
    if run is not None and (Path(run.path) / METADATA_FILE).exists():
        found[METADATA_INPUT] = MetadataEncoding.load(Path(run.path) / METADATA_FILE)
    names = set(input_names(model))
    return {k: v for k, v in found.items() if k in names}


def input_names(model) -> list[str]:
    """Names of ``model``'s inputs, in order: the names ``--meta`` and metadata encodings use."""
    from skinzoo.models.graph import input_names as graph_input_names

    return graph_input_names(model)


def asks_absent(text: str | None) -> bool:
    """``--meta none``: the user asks for every metadata field to be missing."""
    return text is not None and text.strip().lower() == ABSENT


def meta_from_text(encodings: dict, text: str | None, raw_inputs=(), option: str = "--meta") -> dict:
    """``--meta`` text -> ``{input name: array}``: fields of the encoded inputs by name (absent
    fields missing; ``none``: all missing), raw inputs as ``name=v1:v2:...``. Unknown names are
    refused up front."""
    values = {} if asks_absent(text) else parse_meta_values(text, option)
    fields = {name for enc in encodings.values() for name in enc.names}
    unknown = sorted(set(values) - fields - set(raw_inputs))
    if unknown:
        parts = []
        if fields:
            parts.append("metadata fields: " + ", ".join(sorted(fields)))
        if raw_inputs:
            parts.append("raw inputs: " + ", ".join(raw_inputs) + " (as name=v1:v2:...)")
        raise UsageError(f"{option} names unknown field(s) or input(s): {', '.join(unknown)}",
                         "this model takes " + ("; ".join(parts) or "no metadata at all"))
    out = {}
    for input_name, enc in encodings.items():
        given = {k: v for k, v in values.items() if k in enc.names}
        out[input_name] = enc.encode_values(given, option)
    for name in raw_inputs:
        if name in values:
            try:
                out[name] = np.array([float(v) for v in values[name].split(":")], np.float32)
            except ValueError:
                raise UsageError(f"{option} {name}={values[name]} is not a list of numbers",
                                 f"write {name}=v1:v2:... for a raw model input") from None
    return out


def absent_fields_note(encodings: dict, text: str | None) -> str | None:
    """A one-line note naming the metadata fields the user did not give (treated as missing)."""
    names = sorted({n for enc in encodings.values() for n in enc.names})
    if asks_absent(text):  # asked for: no hint to pass values
        return f"metadata absent by request (--meta {ABSENT}): {', '.join(names)} treated as missing" \
            if names else None
    given = {k for k, v in parse_meta_values(text).items() if not is_missing(v)}
    absent = [n for n in names if n not in given]
    if not absent:
        return None
    return (f"metadata not given for {', '.join(absent)}: treated as missing "
            "(pass --meta " + ",".join(f"{n}=..." for n in absent) + ")")


def rows_by_path(encodings: dict, paths, run=None, dataset=None) -> dict[str, dict]:
    """``{input name: {path: vector}}`` for evaluation: the dataset's own columns when a dataset
    is given (``dataset``: a skinzoo Dataset), else the run's ``metadata.csv``."""
    if not encodings:
        return {}
    paths = [str(p) for p in paths]
    out = {}
    for input_name, enc in encodings.items():
        if dataset is not None:
            table = dataset.table
            custom = [f.column for f in enc.fields if f.column not in table.columns]
            if custom:
                try:
                    table = attach_columns(table, dataset.source, custom)
                except DataError as err:
                    log.warning("warning: %s; those fields are treated as missing", err.message)
            rows = table.drop_duplicates("path").set_index(table.drop_duplicates("path")["path"].astype(str))
            vectors = enc.encode_table(rows.reindex(paths), "the dataset")
        else:
            values_file = Path(run.path) / METADATA_VALUES_FILE if run is not None else None
            if values_file is None or not values_file.exists():
                log.warning("warning: no %s in the run: metadata treated as missing for every "
                            "image (pass --data DATASET or --meta)", METADATA_VALUES_FILE)
                vectors = np.repeat(enc.encode_values({}), len(paths), axis=0)
            else:
                vectors = encode_by_path(enc, read_values(values_file), paths, str(values_file))
        out[input_name] = dict(zip(paths, vectors, strict=True))
    return out


def chunk_inputs(constant: dict | None, rows: dict | None, encodings: dict, paths) -> dict:
    """The ``meta`` for one chunk of images: per-image rows, overridden by constant values."""
    out = {}
    for input_name, by_path in (rows or {}).items():
        missing = encodings[input_name].encode_values({})[0]
        out[input_name] = np.stack([by_path.get(str(p), missing) for p in paths]) if len(paths) \
            else np.zeros((0, len(missing)), np.float32)
    out.update(constant or {})
    return out


def meta_for_command(loaded, text: str | None, per_image_source: bool = False):
    """``(meta, notes)`` for predict / gradcam / evaluate from the ``--meta`` text.

    ``per_image_source``: the command reads each image's metadata from a dataset (evaluate), so
    without ``--meta`` no constant is set. Otherwise encoded inputs not given are all missing and
    a note says which fields were not given.
    """
    from skinzoo.evaluate.gradcam import image_input_index

    names = input_names(loaded.model)
    img_i = image_input_index(loaded.model)
    raw = [n for i, n in enumerate(names) if i != img_i and n not in loaded.metadata]
    if text is None and per_image_source:
        return None, []
    meta = meta_from_text(loaded.metadata, text, raw)
    note = absent_fields_note(loaded.metadata, text) if loaded.metadata else None
    return meta, [note] if note else []


def missing_metadata(model, input_name: str):
    """``(1, width)`` "every field missing" for an encoded metadata input of ``model``, or None
    when the input is not encoded metadata (a raw input of a model skinzoo did not train)."""
    from skinzoo.models.fusion import encodings_of

    encoding = encodings_of(model).get(input_name)
    return None if encoding is None else encoding.encode_values({})


def use_encoding_file(loaded, spec: str, option: str = "--meta-encoding") -> str:
    """``INPUT=FILE.json`` (or ``FILE.json`` when the model has one non-image input): from now on
    ``loaded`` encodes that raw input from a dataset's columns (or ``--meta`` field values) with
    the encoding in FILE (the ``metadata.json`` format). Returns the input name."""
    from skinzoo.evaluate.gradcam import image_input_index

    names = input_names(loaded.model)
    img_i = image_input_index(loaded.model)
    others = [n for i, n in enumerate(names) if i != img_i]
    name, sep, path = spec.partition("=")
    if not sep:
        if len(others) != 1:
            raise UsageError(f"{option} {spec}: say which input it encodes ({', '.join(others) or 'none'})",
                             f"write {option} INPUT=FILE.json")
        name, path = others[0], spec
    if name not in others:
        raise UsageError(f"{option} names input {name!r}, which the model does not have as a "
                         "non-image input", "the model's non-image inputs are: " + (", ".join(others) or "none"))
    encoding = MetadataEncoding.load(Path(path))
    width = int(np.prod([d or 1 for d in loaded.model.inputs[names.index(name)].shape[1:]]))
    if encoding.width != width:
        raise UsageError(f"{path} encodes {encoding.width} values ({', '.join(encoding.feature_names())}) "
                         f"but input {name!r} takes {width}",
                         "describe every value of the input, in order (see README 'Using a model "
                         "you did not train')")
    loaded.metadata[name] = encoding
    return name
