"""Models and images in, class probabilities out: loading a model safely, finding its class
names, assembling its inputs, test-time augmentation, and per-file error handling for predict.

A model is given as a run directory (``best.keras`` + ``classes.json`` + optional
``calibration.json`` / ``threshold.json``) or as a ``.keras`` file a user brings. Files are
loaded by :func:`skinzoo.models.files.load_model_file` with ``safe_mode=True``: a Lambda layer
carrying Python code is refused unless the user says ``--unsafe``, because loading it would run
that code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skinzoo.errors import DataError, UsageError
from skinzoo.evaluate.loaded import LoadedModel
from skinzoo.evaluate.meta_inputs import (
    chunk_inputs,
    input_names,
    missing_metadata,
    model_encodings,
    rows_by_path,
)
from skinzoo.fileio import read_json
from skinzoo.progress import Progress
from skinzoo.rundir import RunDir, find_latest_run

log = logging.getLogger(__name__)

# Dihedral views: flips first (valid for any shape), then the rotations (square images only).
TTA_VIEWS = ("identity", "hflip", "vflip", "rot180", "rot90", "rot270", "transpose", "antitranspose")


# --- loading ---------------------------------------------------------------------------------


def output_width(model) -> int:
    """Number of classes the model separates (2 for a single sigmoid unit)."""
    width = int(model.outputs[0].shape[-1])
    return 2 if width == 1 else width


def parse_classes(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    if len(set(names)) != len(names):
        raise UsageError(f"--classes has repeated names: {text}", "list each class once")
    return names


def resolve_model(spec=None, classes=None, unsafe: bool = False, runs_root="runs",
                  calibrated: bool = True) -> LoadedModel:
    """A run directory, a model file, or (``spec=None``) the latest run under ``runs_root``."""
    # skinzoo's fusion and ensemble layers register with Keras on import: a run's model may hold them.
    import skinzoo.models.ensemble  # noqa: F401
    import skinzoo.models.fusion  # noqa: F401
    from skinzoo.models.files import load_model_file

    classes = parse_classes(classes) if isinstance(classes, str) else classes
    if spec is None:
        run = find_latest_run(runs_root)
    else:
        path = Path(spec)
        if not path.exists():
            raise UsageError(f"{path} does not exist", "pass a run directory or a .keras model file")
        from skinzoo.evaluate.exported import export_format, load_export

        if export_format(path) is not None:  # SavedModel / TFLite / ONNX from `skinzoo export`
            return load_export(path, classes)
        run = RunDir(path) if path.is_dir() else None
        if run is None and RunDir(path.parent).is_run():
            run = RunDir(path.parent)  # a model file inside a run: use the run's class names
    info = run.read_info() if run is not None else {}
    model_path = run.model_file() if (spec is None or Path(spec).is_dir()) else Path(spec)
    model = load_model_file(model_path, unsafe=unsafe)
    k = output_width(model)
    notes = []
    if classes is None:
        classes = info.get("classes")
    if classes is None:
        classes, source = classes_beside(model_path)
        if classes is not None:
            notes.append(f"class names from {source}: {', '.join(classes)}")
    if classes is None:
        classes = [f"class_{i}" for i in range(k)]
        notes.append(f"no class names known for {model_path.name}: using class_0..class_{k - 1} "
                     f"(pass --classes a,b,c, or put classes.json or labels.txt beside it)")
    if len(classes) != k:
        raise UsageError(f"{len(classes)} class names ({', '.join(classes)}) for a model with "
                         f"{k} classes", f"pass --classes with exactly {k} names in training order")
    img_size = _model_image_size(model, info)
    task = info.get("task") or ("binary" if list(classes) == ["benign", "malignant"] else "multiclass")
    loaded = LoadedModel(model, list(classes), img_size, info.get("resize", "crop"), task,
                         model_path, run, notes=notes, metadata=model_encodings(model, run))
    if run is not None:
        if calibrated and run.calibration.exists():
            loaded.temperature = read_temperature(run.calibration)
        if run.threshold.exists():
            loaded.threshold = read_threshold(run.threshold)
        if run.tta.exists():
            loaded.tta = read_tta(run.tta)
    return loaded


CLASS_FILES = ("classes.json", "labels.txt")


def classes_beside(model_path) -> tuple[list[str] | None, Path | None]:
    """Class names for a bare model file from ``classes.json`` (skinzoo's ``{"classes": [...]}``
    or a plain JSON list) or ``labels.txt`` (one name per line, blank lines ignored) in its
    folder: ``(names, file)``, or ``(None, None)`` when there is neither. A file that is there
    but unusable is a UsageError naming it (silently numbering the classes would mislabel)."""
    folder = Path(model_path).parent
    for name in CLASS_FILES:
        path = folder / name
        if not path.is_file():
            continue
        hint = f"fix {path} (one class name per entry, training order) or pass --classes a,b,c"
        if name.endswith(".json"):
            data = read_json(path, hint)
            names = data.get("classes") if isinstance(data, dict) else data
        else:
            try:
                names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as err:
                raise UsageError(f"cannot read {path}: {err}", hint) from None
        if not isinstance(names, list) or not names or not all(isinstance(c, str) and c for c in names):
            raise UsageError(f"{path} does not hold a list of class names", hint)
        if len(set(names)) != len(names):
            raise UsageError(f"{path} repeats a class name ({', '.join(names)})", hint)
        return list(names), path
    return None, None


def read_temperature(path) -> float:
    """``calibration.json``'s temperature: a finite positive number, else a UsageError."""
    _, value = read_fitted_value(
        path, "temperature", lambda v: isinstance(v, int | float) and np.isfinite(v) and v > 0,
        "a positive number", f"delete {path} and run `skinzoo calibrate {Path(path).parent}` again")
    return float(value)


def read_threshold(path) -> dict:
    """``threshold.json``: an object whose ``threshold`` is a probability, else a UsageError."""
    data, _ = read_fitted_value(
        path, "threshold", lambda v: isinstance(v, int | float) and 0 <= v <= 1, "a number in 0..1",
        f"delete {path}: `skinzoo evaluate` fits a new one on the validation split")
    return data


def read_tta(path) -> int:
    """``tta.json``'s number of views: an integer in 1..8, else a UsageError."""
    _, value = read_fitted_value(
        path, "tta", lambda v: isinstance(v, int) and 1 <= v <= len(TTA_VIEWS),
        f"an integer in 1..{len(TTA_VIEWS)}",
        f"delete {path}: `skinzoo evaluate` chooses the views again on the validation split")
    return value


def read_fitted_value(path, key: str, valid, expected: str, hint: str):
    """``(contents, contents[key])`` of a JSON file a run fitted on validation; a UsageError naming
    the file, the key and what was found when it is not an object whose ``key`` passes ``valid``
    (booleans never do: JSON ``true`` is not a number here)."""
    data = read_json(path, hint)
    value = data.get(key) if isinstance(data, dict) else None
    if isinstance(value, bool) or not valid(value):
        raise UsageError(f"{path}: \"{key}\" must be {expected}, found {value!r:.40}", hint)
    return data, value


def _model_image_size(model, info) -> tuple[int, int]:
    from skinzoo.evaluate.gradcam import image_input_index

    shape = model.inputs[image_input_index(model)].shape
    if shape[1] is not None and shape[2] is not None:
        return int(shape[1]), int(shape[2])
    size = info.get("img_size") or 224
    return (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)


# --- inputs ----------------------------------------------------------------------------------


def parse_meta(text: str | None) -> dict[str, list[float]]:
    """``"age=55,site=3"`` -> ``{"age": [55.0], "site": [3.0]}``; vectors as ``name=1:0:0``."""
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[key.strip()] = [float(v) for v in value.split(":")]
        except ValueError:
            raise UsageError(f"--meta item {item!r} is not name=number",
                             "write e.g. --meta age=55,sex=1 (vectors as name=1:0:0)") from None
    return out


def model_inputs(model, images, meta: dict | None = None, warn: bool = True) -> list[np.ndarray]:
    """The list of arrays ``model`` takes: ``images`` for the image input, and for each other
    input (e.g. metadata) the ``meta`` values named after that input, or zeros with a warning."""
    from skinzoo.evaluate.gradcam import image_input_index

    meta = dict(meta or {})
    img_i = image_input_index(model)
    n = len(images)
    names = input_names(model)
    unknown = [k for k in meta if k not in names or k == names[img_i]]
    if unknown:  # refused before anything is filled in or announced
        others = [name for i, name in enumerate(names) if i != img_i]
        raise UsageError(f"--meta names unknown input(s): {', '.join(unknown)}",
                         "the model's non-image inputs are: " + (", ".join(others) or "none"))
    arrays = []
    for i, t in enumerate(model.inputs):
        if i == img_i:
            arrays.append(np.asarray(images, np.float32))
            continue
        name = names[i]
        shape = tuple(d or 1 for d in t.shape[1:])
        width = int(np.prod(shape))
        if name in meta:
            values = np.asarray(meta.pop(name), np.float32)
            if values.ndim == 2 and values.shape == (n, width):  # one row per image
                arrays.append(values.reshape((n, *shape)))
                continue
            values = values.reshape(-1)
            if values.size == 1:
                values = np.full(width, values.item(), np.float32)
            if values.size != width:
                raise UsageError(f"--meta {name} has {values.size} value(s); input '{name}' takes {width}",
                                 f"give {width} values separated by ':'")
            arrays.append(np.broadcast_to(values.reshape(shape), (n, *shape)).copy())
        elif (missing := missing_metadata(model, name)) is not None:
            arrays.append(np.repeat(missing, n, axis=0))  # encoded metadata not given = missing
        else:
            if warn:
                log.warning("warning: the model's extra input '%s' %s is filled with zeros "
                            "(pass --meta %s=v1:v2:..., see README 'Using a model you did not "
                            "train')", name, shape, name)
            arrays.append(np.zeros((n, *shape), np.float32))
    return arrays


def tta_views(images, n: int) -> list[np.ndarray]:
    """``n`` dihedral views of ``(N, H, W, C)`` images (identity first)."""
    images = np.asarray(images)
    square = images.shape[1] == images.shape[2]
    available = TTA_VIEWS if square else TTA_VIEWS[:4]
    if not 1 <= n <= len(available):
        raise UsageError(f"--tta {n} is out of range", f"use 1..{len(available)} views"
                         + ("" if square else " (rotations need square images)"))
    ops = {
        "identity": lambda x: x,
        "hflip": lambda x: x[:, :, ::-1],
        "vflip": lambda x: x[:, ::-1],
        "rot180": lambda x: x[:, ::-1, ::-1],
        "rot90": lambda x: np.rot90(x, 1, axes=(1, 2)),
        "rot270": lambda x: np.rot90(x, 3, axes=(1, 2)),
        "transpose": lambda x: x.transpose(0, 2, 1, 3),
        "antitranspose": lambda x: np.rot90(x, 2, axes=(1, 2)).transpose(0, 2, 1, 3),
    }
    return [np.ascontiguousarray(ops[name](images)) for name in available[:n]]


def predict_view_probs(model, images, meta=None, batch_size: int = 32, tta: int = 1,
                       warn: bool = True) -> np.ndarray:
    """``(V, N, K)`` uncalibrated class probabilities (K >= 2), one slice per TTA view."""
    from skinzoo.evaluate.exported import ExportedModel
    from skinzoo.metrics import as_class_probs

    images = np.asarray(images, np.float32)
    if isinstance(model, ExportedModel):  # an export runs through its own runtime
        return np.stack([model.predict_arrays(view, meta, batch_size, warn=warn and i == 0)
                         for i, view in enumerate(tta_views(images, tta))])
    if len(images) == 0:
        return np.zeros((tta, 0, output_width(model)))
    views = []
    for i, view in enumerate(tta_views(images, tta)):
        inputs = model_inputs(model, view, meta, warn=warn and i == 0)
        out = model.predict(inputs if len(inputs) > 1 else inputs[0], batch_size=batch_size, verbose=0)
        views.append(as_class_probs(out[0] if isinstance(out, (list, tuple)) else out))
    return np.stack(views)


def predict_probs(model, images, meta=None, batch_size: int = 32, tta: int = 1,
                  temperature: float = 1.0, warn: bool = True) -> np.ndarray:
    """``(N, K)`` class probabilities averaged over ``tta`` views, then temperature-scaled."""
    from skinzoo.evaluate.calibration import apply_temperature

    views = predict_view_probs(model, images, meta, batch_size, tta, warn)
    return apply_temperature(views.mean(axis=0), temperature)


# --- image files -----------------------------------------------------------------------------


def collect_image_paths(items) -> tuple[list[str], dict[str, str]]:
    """Files and folders (searched recursively) -> image paths, plus errors for bad items."""
    from skinzoo.data.images import list_image_files

    paths, errors = [], {}
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = list_image_files(p)
            if not found:
                errors[str(p)] = "folder holds no .jpg/.jpeg/.png/.bmp images"
            paths.extend(str(f) for f in found)
        elif p.exists() or p.is_symlink():  # a dangling link or loop: inspect_image says which
            paths.append(str(p))
        else:
            errors[str(p)] = "no such file"
    return paths, errors


def load_images_tolerant(paths, img_size, resize: str = "crop") -> tuple[np.ndarray, list[str], dict]:
    """Decode what can be decoded: ``(images, ok_paths, {bad_path: message})``.

    Each file is screened first (cheap header check), then the good ones are decoded together with
    the pipeline's own decode + resize; if that still fails, files are retried one by one.
    """
    from skinzoo.data.images import inspect_image
    from skinzoo.data.pipeline import image_hw, load_images

    errors = {}
    ok = []
    for p in paths:
        info = inspect_image(p)
        if info.ok:
            ok.append(p)
        else:
            errors[p] = info.message or info.problem or "unreadable"
    try:
        images = load_images(ok, img_size, resize=resize)
        return images, ok, errors
    except DataError:
        pass
    kept, arrays = [], []
    for p in ok:
        try:
            arrays.append(load_images([p], img_size, resize=resize))
            kept.append(p)
        except DataError as err:
            errors[p] = err.message
    h, w = image_hw(img_size)
    images = np.concatenate(arrays) if arrays else np.zeros((0, h, w, 3), np.float32)
    return images, kept, errors


@dataclass
class Prediction:
    path: str
    probs: np.ndarray | None = None
    error: str | None = None


def predict_split(loaded, eval_set, tta, batch_size):
    """``(views, labels, readable paths, errors)`` of one split's images; unreadable ones are
    skipped with a warning, none readable is a UsageError."""
    views, ok, errors = predict_paths(loaded, eval_set.paths, batch_size, tta)
    keep = np.isin(np.asarray(eval_set.paths), ok)
    for path, message in errors.items():
        log.warning("warning: skipped %s: %s", path, message)
    if not ok:
        raise UsageError(f"none of the {len(eval_set.paths)} images of the {eval_set.split} split "
                         "could be read", "run `skinzoo data check` on the dataset")
    return views, eval_set.labels[keep], ok, errors


def predict_paths(loaded: LoadedModel, paths, batch_size: int = 32, tta: int = 1, meta=None,
                  chunk: int | None = None) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """``(views (V, N, K) uncalibrated, ok_paths, {bad_path: message})`` for image files.

    Images are decoded and predicted ``chunk`` at a time (default ``8 * batch_size``), so a
    folder of 100,000 images never has to fit in memory.
    """
    chunk = chunk or max(batch_size * 8, 1)
    views, kept, errors = [], [], {}
    with Progress("predicting", total=len(paths)) as bar:
        for start in range(0, len(paths), chunk):
            images, ok, bad = load_images_tolerant(paths[start:start + chunk], loaded.img_size,
                                                   loaded.resize)
            errors.update(bad)
            if ok:
                inputs_meta = chunk_inputs(meta if meta is not None else loaded.meta,
                                           loaded.meta_rows, loaded.metadata, ok)
                views.append(predict_view_probs(loaded.model, images, inputs_meta, batch_size, tta,
                                                warn=not kept))
                kept.extend(ok)
            bar.update(len(paths[start:start + chunk]))
    k = loaded.num_classes
    return (np.concatenate(views, axis=1) if views else np.zeros((tta, 0, k))), kept, errors


def predict_files(loaded: LoadedModel, items, batch_size: int = 32, tta: int = 1,
                  meta=None) -> list[Prediction]:
    """One :class:`Prediction` per image or bad item, in input order; a bad file never stops the rest."""
    from skinzoo.evaluate.calibration import apply_temperature

    paths, errors = collect_image_paths(items)
    views, ok, bad = predict_paths(loaded, paths, batch_size, tta, meta)
    errors.update(bad)
    probs = apply_temperature(views.mean(axis=0), loaded.temperature) if len(ok) else []
    results = dict(zip(ok, probs, strict=True))
    listed = set(paths)
    return [Prediction(p, error=e) for p, e in errors.items() if p not in listed] + \
        [Prediction(p, probs=results[p]) if p in results else Prediction(p, error=errors[p])
         for p in paths]


# --- evaluation data -------------------------------------------------------------------------


@dataclass
class EvalSet:
    """Images and true labels of one split, with a description of where they came from."""

    paths: list[str]
    labels: np.ndarray
    split: str
    source: str
    split_file: Path | None = None


GENERIC_LABEL_FILES = ("labels", "label", "metadata", "ground_truth", "groundtruth", "data", "dataset",
                       "ham10000_metadata", "isic_2019_training_groundtruth", "metadatatrain")


def dataset_name(data) -> str:
    """The name results on ``data`` are filed under: the dataset folder's name; for a CSV file,
    its folder's name, plus the file's stem unless that is a generic labels-file name (so two
    CSVs of one folder stay apart), never the file name with its extension."""
    path = Path(data).expanduser().resolve()
    if not path.is_file():
        return path.name or "data"
    folder = path.parent.name or "data"
    return folder if path.stem.lower() in GENERIC_LABEL_FILES else f"{folder}-{path.stem}"


def eval_table(loaded: LoadedModel, data=None):
    """A table with ``path``, ``label``, ``split`` (NaN where unknown) for this model.

    No ``data``: the run's own ``split.csv``. With ``data``: that dataset, with the run's split
    applied when the run was trained on it (same image ids), otherwise no split (external data).
    """

    run = loaded.run
    if data is None:
        if run is None or not run.split.exists():
            raise UsageError("no data to evaluate on: this model has no run split.csv",
                             "pass --data DATASET (and --classes if the model has no classes.json)")
        from skinzoo.data.splits import read_split_table

        table = read_split_table(run.split, ("path", "label", "split"),
                                 hint="pass --data DATASET to evaluate on the dataset itself")
        if loaded.metadata:
            loaded.meta_rows = rows_by_path(loaded.metadata, table["path"], run=run)
        return table[["path", "label", "split"]].copy(), f"{run.split}"
    from skinzoo.data.sources import load_dataset

    ds = load_dataset(data, task=loaded.task)
    table = ds.table.copy()
    table["split"] = np.nan
    if run is not None and run.split.exists():
        from skinzoo.data.splits import read_split_file

        try:
            table["split"] = read_split_file(run.split, table, allow_missing=True).astype(str)
        except DataError as err:
            log.info("note: %s is not the run's training data (%s); evaluating all of it",
                     data, err.message)
    if loaded.metadata:
        loaded.meta_rows = rows_by_path(loaded.metadata, table["path"], dataset=ds)
    return table[["path", "label", "split"]].copy(), str(data)


def select_split(table, source: str, classes, split: str | None) -> EvalSet:
    """Rows of ``split`` (``None`` = test when the table has a split, else all)."""
    has_split = table["split"].notna().any() and table["split"].astype(str).isin(["train", "val", "test"]).any()
    if split is None:
        split = "test" if has_split else "all"
    if split not in ("test", "val", "all", "train"):
        raise UsageError(f"unknown split {split!r}", "use --split test, val or all")
    if split != "all":
        if not has_split:
            raise UsageError(f"--split {split} needs a split, but {source} has none",
                             "evaluate with --split all, or pass the run directory the model came from")
        table = table[table["split"].astype(str) == split]
        if table.empty:
            raise DataError(f"the {split} split of {source} is empty", "use another --split")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(table["label"].astype(str)) - set(index))
    if unknown:
        raise DataError(f"labels in {source} that the model does not know: {', '.join(unknown[:8])} "
                        f"(model classes: {', '.join(classes)})",
                        "pass --classes in the model's training order, or evaluate on matching data")
    labels = table["label"].astype(str).map(index).to_numpy(dtype=int)
    return EvalSet(table["path"].astype(str).tolist(), labels, split, source)
