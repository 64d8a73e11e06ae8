"""Running exported models: a SavedModel, a TFLite file or an ONNX file, behind one interface.

The same loaders serve the export's own verification (``skinzoo.deploy.verify``) and ``skinzoo
predict --model EXPORT``, so what is checked at export time is exactly what users later run.

Every export has a ``skinzoo.json`` description (inside a SavedModel folder; beside a file as
``<file>.skinzoo.json``): class names, input size, resize mode, the names and shapes of the
inputs, the run's temperature and threshold, and the verification result. Without it a
SavedModel or TFLite file still loads (size from the input shape, ``--classes`` for names).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skinzoo.data.metadata import MetadataEncoding
from skinzoo.errors import ModelError, UsageError
from skinzoo.evaluate.loaded import LoadedModel
from skinzoo.fileio import read_json

log = logging.getLogger(__name__)

EXPORT_INFO = "skinzoo.json"  # the description inside a SavedModel folder
INFO_SUFFIX = ".skinzoo.json"  # ... and beside a .tflite / .onnx file
EXPORT_SUFFIXES = {".tflite": "tflite", ".onnx": "onnx"}
IMAGE_INPUT = "image"  # pixel input name of every export (float32 or uint8 RGB, 0-255)
BYTES_INPUT = "image_bytes"  # the SavedModel serving_default input: encoded JPEG/PNG strings
PIXELS_SIGNATURE = "serving_pixels"
BYTES_SIGNATURE = "serving_default"
INSTALL_HINT = "install the export extras: pip install 'skinzoo[export]' (tf2onnx, onnxruntime, ai-edge-litert)"


@dataclass(frozen=True)
class InputSpec:
    """One named model input, batch dimension left out."""

    name: str
    shape: tuple[int, ...]

    def as_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape)}


def info_path(export_path) -> Path:
    """Where the ``skinzoo.json`` description of an export lives."""
    path = Path(export_path)
    return path / EXPORT_INFO if path.is_dir() else path.with_name(path.name + INFO_SUFFIX)


def export_format(path) -> str | None:
    """``savedmodel`` / ``tflite`` / ``onnx`` when ``path`` is an exported model, else None."""
    path = Path(path)
    if path.is_dir():
        return "savedmodel" if (path / "saved_model.pb").is_file() else None
    return EXPORT_SUFFIXES.get(path.suffix.lower()) if path.is_file() else None


# --- runners: named float arrays in, (N, K) probabilities out --------------------------------


class SavedModelRunner:
    """``serving_pixels`` (float pixels) and ``serving_default`` (encoded bytes) of a SavedModel."""

    def __init__(self, path):
        from skinzoo.runtime import tf

        self._tf = tf()
        try:
            self._model = self._tf.saved_model.load(str(path))
        except Exception as err:  # noqa: BLE001 - TF raises many kinds for a damaged folder
            raise ModelError(f"cannot load the SavedModel {path}: {_first_line(err)}",
                             "re-export it with `skinzoo export`") from None
        missing = [s for s in (PIXELS_SIGNATURE, BYTES_SIGNATURE) if s not in self._model.signatures]
        if PIXELS_SIGNATURE in missing:
            raise ModelError(f"the SavedModel {path} has no '{PIXELS_SIGNATURE}' signature "
                             f"(it has: {', '.join(self._model.signatures) or 'none'})",
                             "only SavedModels written by `skinzoo export` can be used here")
        self.has_bytes = not missing

    def input_shapes(self) -> dict[str, tuple]:
        specs = self._model.signatures[PIXELS_SIGNATURE].structured_input_signature[1]
        return {k: tuple(s.shape[1:]) for k, s in specs.items()}

    def __call__(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        signature = self._model.signatures[PIXELS_SIGNATURE]
        out = signature(**{k: self._tf.constant(v, self._tf.float32) for k, v in arrays.items()})
        return out["probabilities"].numpy()

    def predict_bytes(self, contents: list[bytes], meta: dict[str, np.ndarray] | None = None) -> dict:
        """The ``serving_default`` outputs for encoded images, as a TF Serving client sees them."""
        signature = self._model.signatures[BYTES_SIGNATURE]
        feed = {BYTES_INPUT: self._tf.constant(contents, self._tf.string)}
        feed.update({k: self._tf.constant(v, self._tf.float32) for k, v in (meta or {}).items()})
        return {k: v.numpy() for k, v in signature(**feed).items()}


class TFLiteRunner:
    """A TFLite file through its (single) signature; inputs quantized when the model is int8."""

    def __init__(self, path):
        interpreter_cls = tflite_interpreter_class()
        try:
            # every core, as TensorFlow and onnxruntime use (the interpreter's default is one)
            self._interpreter = interpreter_cls(model_path=str(path), num_threads=os.cpu_count() or 1)
            signatures = self._interpreter.get_signature_list()
        except (ValueError, RuntimeError) as err:
            raise ModelError(f"cannot load the TFLite model {path}: {_first_line(err)}",
                             "re-export it with `skinzoo export --format tflite`") from None
        if not signatures:
            raise ModelError(f"the TFLite model {path} has no signature",
                             "re-export it with `skinzoo export --format tflite`")
        self._key = next(iter(signatures))
        self._runner = self._interpreter.get_signature_runner(self._key)
        self._details = self._runner.get_input_details()

    def input_shapes(self) -> dict[str, tuple]:
        return {k: tuple(int(d) for d in v["shape_signature"][1:]) for k, v in self._details.items()}

    def __call__(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: _quantized(np.asarray(value, np.float32), self._details[name])
                for name, value in arrays.items()}
        return np.asarray(self._runner(**feed)["probabilities"], np.float32)


class OnnxRunner:
    """An ONNX file through onnxruntime on the CPU."""

    def __init__(self, path):
        ort = import_optional("onnxruntime", "running ONNX models")
        try:
            self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelError(f"cannot load the ONNX model {path}: {_first_line(err)}",
                             "re-export it with `skinzoo export --format onnx`") from None
        self._outputs = [o.name for o in self._session.get_outputs()]

    def __call__(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
        out = self._session.run(None, feed)
        return np.asarray(out[self._outputs.index("probabilities")] if "probabilities" in self._outputs
                          else out[0], np.float32)


def _quantized(value: np.ndarray, detail: dict) -> np.ndarray:
    """Float input -> the tensor type the TFLite input wants (int8 models take uint8 pixels)."""
    dtype = detail["dtype"]
    if dtype == np.float32:
        return value
    scale, zero = detail["quantization"]
    scale = scale or 1.0
    info = np.iinfo(dtype)
    return np.clip(np.round(value / scale + zero), info.min, info.max).astype(dtype)


def tflite_interpreter_class():
    """LiteRT's interpreter when installed (TensorFlow deprecates its own), else ``tf.lite``'s."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        from skinzoo.runtime import tf

        interpreter = tf().lite.Interpreter
        return _quiet(interpreter)


def _quiet(interpreter_cls):
    def make(**kwargs):
        with warnings.catch_warnings():  # the "use ai_edge_litert" deprecation, said in the hint
            warnings.simplefilter("ignore")
            return interpreter_cls(**kwargs)

    return make


def import_optional(module: str, purpose: str):
    """Import an optional export dependency, or a UsageError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{purpose} needs the Python package '{module}', which is not installed",
                         INSTALL_HINT) from None


def _first_line(err) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:240] if text else type(err).__name__


# --- an export as a model predict() can use ---------------------------------------------------


@dataclass
class ExportedModel:
    """An exported model: ``predict_arrays(images, meta)`` -> ``(N, K)`` probabilities."""

    path: Path
    format: str
    runner: object
    image_input: InputSpec
    meta_inputs: list[InputSpec] = field(default_factory=list)
    precision: str = "float32"

    def predict_arrays(self, images, meta: dict | None = None, batch_size: int = 32,
                       warn: bool = True) -> np.ndarray:
        images = np.asarray(images, np.float32)
        extra = meta_arrays(self.meta_inputs, len(images), meta, warn)
        out, step = [], max(batch_size, 1)
        for start in range(0, len(images), step):
            stop = start + step
            feed = {self.image_input.name: images[start:stop]}
            feed.update({k: v[start:stop] for k, v in extra.items()})
            out.append(self.runner(feed))
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))


def meta_arrays(specs: list[InputSpec], n: int, meta: dict | None, warn: bool = True) -> dict:
    """``{input name: (n, *shape) float32}`` from ``--meta`` values; zeros (with a warning) for an
    input without values, as ``skinzoo predict`` does for Keras models."""
    meta = dict(meta or {})
    out = {}
    for spec in specs:
        width = int(np.prod(spec.shape))
        if spec.name in meta:
            values = np.asarray(meta.pop(spec.name), np.float32)
            if values.shape == (n, width):  # one row per image (a dataset's own values)
                out[spec.name] = values.reshape((n, *spec.shape))
                continue
            values = values.ravel()
            if values.size == 1:
                values = np.full(width, values.item(), np.float32)
            if values.size != width:
                raise UsageError(f"--meta {spec.name} has {values.size} value(s); input "
                                 f"'{spec.name}' takes {width}", f"give {width} values separated by ':'")
            out[spec.name] = np.broadcast_to(values.reshape(spec.shape), (n, *spec.shape)).copy()
        else:
            if warn:
                log.warning("warning: the model's extra input '%s' %s is filled with zeros "
                            "(pass --meta %s=...)", spec.name, spec.shape, spec.name)
            out[spec.name] = np.zeros((n, *spec.shape), np.float32)
    if meta:
        raise UsageError(f"--meta names unknown input(s): {', '.join(meta)}",
                         "the model's non-image inputs are: "
                         + (", ".join(s.name for s in specs) or "none"))
    return out


def read_export_info(path) -> dict | None:
    """The export's ``skinzoo.json``, or None when there is none."""
    where = info_path(path)
    if not where.is_file():
        return None
    info = read_json(where, f"delete {where} and export again, or pass --classes")
    if not isinstance(info, dict) or not isinstance(info.get("classes"), list):
        raise UsageError(f"{where} is not an export description (no \"classes\" list)",
                         "export the model again with `skinzoo export`")
    return info


def open_export(path, info: dict | None = None) -> ExportedModel:
    """Load an export; inputs from its description, else from the model file itself."""
    path = Path(path)
    fmt = export_format(path)
    if fmt is None:
        raise ModelError(f"{path} is not an exported model (a SavedModel folder, .tflite or .onnx)",
                         "pass a folder holding saved_model.pb, or a .tflite / .onnx file")
    info = info if info is not None else (read_export_info(path) or {})
    runner = {"savedmodel": SavedModelRunner, "tflite": TFLiteRunner, "onnx": OnnxRunner}[fmt](path)
    inputs = info.get("inputs") or _inputs_from_runner(runner, fmt, path)
    image = InputSpec(inputs["image"]["name"], tuple(inputs["image"]["shape"]))
    meta = [InputSpec(m["name"], tuple(m["shape"])) for m in inputs.get("meta", [])]
    return ExportedModel(path, fmt, runner, image, meta, info.get("precision", "float32"))


def _inputs_from_runner(runner, fmt: str, path) -> dict:
    # No description: ask the model. ONNX files from elsewhere are not guessed at.
    if fmt == "onnx":
        raise UsageError(f"{path} has no {Path(str(path) + INFO_SUFFIX).name} beside it",
                         "keep the .skinzoo.json that `skinzoo export` writes next to the .onnx file")
    shapes = runner.input_shapes()
    image = [k for k, s in shapes.items() if len(s) == 3]
    if len(image) != 1:
        raise ModelError(f"cannot tell the image input of {path} (inputs: {shapes})",
                         "export the model again with `skinzoo export`")
    return {"image": {"name": image[0], "shape": list(shapes[image[0]])},
            "meta": [{"name": k, "shape": list(s)} for k, s in shapes.items() if k != image[0]]}


def load_export(path, classes=None) -> LoadedModel:
    """An export as a :class:`skinzoo.evaluate.loaded.LoadedModel` (for predict / evaluate)."""
    path = Path(path)
    info = read_export_info(path)
    exported = open_export(path, info)
    info = info or {}
    h, w = exported.image_input.shape[:2]
    notes = []
    if classes is None:
        classes = info.get("classes")
    if classes is None:
        k = _probe_width(exported)
        classes = [f"class_{i}" for i in range(k)]
        notes.append(f"no {info_path(path).name} for {path.name}: using class_0..class_{k - 1} "
                     "and resize 'crop' (pass --classes a,b,c)")
    width = len(info["classes"]) if info.get("classes") else _probe_width(exported)
    if len(classes) != width:
        raise UsageError(f"{len(classes)} class names for an exported model with {width} classes",
                         f"pass --classes with exactly {width} names in training order")
    if info.get("hair_removal"):
        notes.append("the model was trained on hair-removed images; feed images the same way")
    temperature = float(info.get("temperature") or 1.0)
    encodings = {name: MetadataEncoding.from_dict(d, f"{info_path(path)} metadata_encodings")
                 for name, d in (info.get("metadata_encodings") or {}).items()}
    return LoadedModel(exported, list(classes), (int(h), int(w)), info.get("resize", "crop"),
                       info.get("task") or "multiclass", path, None, temperature=temperature,
                       threshold=info.get("threshold"), notes=notes, metadata=encodings)


def meta_for_export(loaded, text: str | None, per_image_source: bool = False):
    """``(meta, notes)`` from ``--meta`` for an exported model: fields by name for the encoded
    metadata inputs (the encoding travels in skinzoo.json), ``input=v1:v2:...`` for raw inputs."""
    from skinzoo.evaluate.meta_inputs import absent_fields_note, meta_from_text

    if text is None and per_image_source:
        return None, []
    raw = [m.name for m in loaded.model.meta_inputs if m.name not in loaded.metadata]
    meta = meta_from_text(loaded.metadata, text, raw)
    note = absent_fields_note(loaded.metadata, text) if loaded.metadata else None
    return meta, [note] if note else []


def require_keras_model(loaded, what: str) -> None:
    """A UsageError when ``loaded`` is an export: ``what`` (e.g. Grad-CAM) needs Keras gradients."""
    if isinstance(loaded.model, ExportedModel):
        raise UsageError(f"{what} needs the Keras model; {loaded.source} is an exported "
                         f"{loaded.model.format} model", "pass the run directory or its best.keras")


def _probe_width(exported: ExportedModel) -> int:
    zeros = np.zeros((1, *exported.image_input.shape), np.float32)
    return int(exported.predict_arrays(zeros, warn=False).shape[1])
