"""``skinzoo export``: a trained Keras model as a SavedModel (TF Serving), TFLite or ONNX file.

- **SavedModel** (``keras.export.ExportArchive``): ``serving_default`` takes encoded JPEG/PNG
  bytes (``image_bytes``, a batch of strings) and runs the training pipeline's own decode + resize
  (:func:`skinzoo.data.decode.decode_and_resize`) in the graph; ``serving_pixels`` takes float
  RGB pixels in [0, 255] at the model's input size. Both return ``probabilities`` ``(N, K)``,
  ``predicted_class`` ``(N,)`` and ``class_names`` ``(N, K)`` (strings). The model's pixel
  preprocessing is inside the Keras model, so it is in every export.
- **TFLite** (``tf.lite.TFLiteConverter`` from a pixels-only SavedModel): ``float32``,
  ``float16`` (weights) or ``int8`` (full-integer kernels, uint8 pixel input, float output),
  calibrated on TRAINING-split images of the run only.
- **ONNX** (``tf2onnx.convert.from_function``), run with onnxruntime.

TFLite and ONNX have no JPEG decoder: they take pixels, and ``skinzoo predict`` decodes with the
pipeline before feeding them. Temperature scaling is not in the graphs (an int8 ``log`` would
wreck it): every export outputs the model's own probabilities, and the temperature is in the
export's ``skinzoo.json``, which ``skinzoo predict --model EXPORT`` applies.

Models with extra named inputs (metadata) export with those inputs under the same names.
Every export is verified before it is moved into place (:mod:`skinzoo.deploy.verify`); a failing
one never replaces a previous export.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skinzoo.deploy.verify import meta_values, verify_export
from skinzoo.errors import DataError, ModelError, UsageError
from skinzoo.evaluate.exported import (
    BYTES_INPUT,
    BYTES_SIGNATURE,
    IMAGE_INPUT,
    PIXELS_SIGNATURE,
    InputSpec,
    export_format,
    import_optional,
    info_path,
)
from skinzoo.fileio import write_json_atomic

log = logging.getLogger(__name__)

FORMATS = ("savedmodel", "tflite", "onnx")
PRECISIONS = ("float32", "float16", "int8")  # TFLite only; SavedModel and ONNX are float32
ONNX_OPSET = 17  # onnxruntime >= 1.14 runs it; opset 17 has every op the zoo's models need
DEFAULT_CHECK_IMAGES = 64
DEFAULT_CALIBRATION_IMAGES = 200


@dataclass(frozen=True)
class ExportInputs:
    """The model's inputs as the exports name them: the image and any extra (metadata) inputs."""

    image_index: int  # position of the image among model.inputs
    image: InputSpec  # always named IMAGE_INPUT, shape (h, w, 3)
    meta: tuple[InputSpec, ...]  # named as in the Keras model, model order

    def ordered(self, image_spec) -> list:
        """The model's inputs in model order, with ``image_spec`` in the image's place."""
        specs = list(self.meta)
        specs.insert(self.image_index, image_spec)
        return specs

    def as_json(self) -> dict:
        return {"image": self.image.as_json(), "meta": [m.as_json() for m in self.meta]}


def export_inputs(model, img_size) -> ExportInputs:
    """Inputs of a Keras model: one image input (rank 4) plus fixed-shape extra inputs."""
    from skinzoo.evaluate.gradcam import image_input_index

    if not getattr(model, "inputs", None):
        raise ModelError(f"model '{model.name}' has no defined inputs (a subclassed model that was "
                         "never built), so it cannot be exported",
                         "save a functional Keras model (keras.Model(inputs, outputs))")
    img_i = image_input_index(model)
    meta = []
    for i, tensor in enumerate(model.inputs):
        if i == img_i:
            continue
        name = getattr(tensor, "name", None) or f"input_{i}"
        shape = tuple(tensor.shape[1:])
        if any(d is None for d in shape):
            raise ModelError(f"the model's extra input '{name}' has an open shape {shape}: "
                             "exports need fixed shapes", "build the input with a fixed width")
        if name in (IMAGE_INPUT, BYTES_INPUT):
            raise ModelError(f"the model's extra input is named '{name}', which the exports use "
                             "for the image", "rename that input and save the model again")
        meta.append(InputSpec(name, tuple(int(d) for d in shape)))
    h, w = img_size
    channels = model.inputs[img_i].shape[-1]
    if channels not in (None, 3):
        raise ModelError(f"the model's image input has {channels} channels; exports take RGB",
                         "export a model trained on 3-channel images")
    return ExportInputs(img_i, InputSpec(IMAGE_INPUT, (int(h), int(w), 3)), tuple(meta))


def probabilities_fn(model, inputs: ExportInputs):
    """``f(*tensors in model order) -> (N, K) float32``: the Keras model, with a single sigmoid
    unit expanded to ``[1 - p, p]`` so every export's columns line up with the class names."""
    from skinzoo.runtime import tf as tf_runtime

    tf = tf_runtime()

    def probabilities(*tensors):
        out = model(list(tensors) if len(tensors) > 1 else tensors[0], training=False)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        if isinstance(out, (list, tuple)):
            out = out[0]
        out = tf.cast(out, tf.float32)
        return tf.concat([1.0 - out, out], axis=-1) if out.shape[-1] == 1 else out

    return probabilities


def _specs(tf, inputs: ExportInputs, image_spec):
    return [s if isinstance(s, tf.TensorSpec) else tf.TensorSpec([None, *s.shape], tf.float32, name=s.name)
            for s in inputs.ordered(image_spec)]


def _pixels_function(tf, model, inputs: ExportInputs):
    probabilities = probabilities_fn(model, inputs)
    image = tf.TensorSpec([None, *inputs.image.shape], tf.float32, name=IMAGE_INPUT)
    return tf.function(lambda *t: {"probabilities": probabilities(*t)},
                       input_signature=_specs(tf, inputs, image))


def write_savedmodel(model, inputs: ExportInputs, classes, resize: str, out) -> None:
    """A SavedModel with the encoded-bytes ``serving_default`` and the ``serving_pixels`` signature."""
    from skinzoo.data.decode import decode_and_resize
    from skinzoo.runtime import tf as tf_runtime

    tf = tf_runtime()
    import keras

    probabilities = probabilities_fn(model, inputs)
    names = tf.constant(list(classes), tf.string)
    hw = inputs.image.shape[:2]

    def outputs(probs):
        n = tf.shape(probs)[0]
        return {"probabilities": probs,
                "predicted_class": tf.gather(names, tf.argmax(probs, axis=-1)),
                "class_names": tf.tile(names[None, :], [n, 1])}

    def from_pixels(*tensors):
        return outputs(probabilities(*tensors))

    def from_bytes(*tensors):
        # The pipeline's decode + resize, image by image (sizes differ before the resize).
        images = tf.map_fn(lambda b: decode_and_resize(b, hw, resize), tensors[inputs.image_index],
                           fn_output_signature=tf.TensorSpec([*hw, 3], tf.uint8))
        tensors = list(tensors)
        tensors[inputs.image_index] = tf.cast(images, tf.float32)
        return outputs(probabilities(*tensors))

    pixel_spec = tf.TensorSpec([None, *inputs.image.shape], tf.float32, name=IMAGE_INPUT)
    bytes_spec = tf.TensorSpec([None], tf.string, name=BYTES_INPUT)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(BYTES_SIGNATURE, tf.function(from_bytes, input_signature=_specs(tf, inputs, bytes_spec)))
    archive.add_endpoint(PIXELS_SIGNATURE, tf.function(from_pixels, input_signature=_specs(tf, inputs, pixel_spec)))
    archive.write_out(str(out), verbose=False)


def write_tflite(model, inputs: ExportInputs, precision: str, out, calibration=None) -> None:
    """A TFLite flatbuffer; ``calibration`` (int8): ``(images, {meta name: array})`` from the
    training split, fed one sample at a time as the converter's representative dataset."""
    from skinzoo.runtime import tf as tf_runtime

    tf = tf_runtime()
    import keras

    with tempfile.TemporaryDirectory(prefix="skinzoo-tflite-") as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", _pixels_function(tf, model, inputs))
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if precision == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "int8":
            if calibration is None:
                raise UsageError("int8 export needs calibration images",
                                 "pass a run directory, or --calibration-images FOLDER")
            images, meta = calibration

            def representative():
                for i in range(len(images)):
                    sample = {IMAGE_INPUT: images[i:i + 1]}
                    sample.update({k: v[i:i + 1] for k, v in meta.items()})
                    yield sample

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8  # pixels are 0-255 integers anyway
            converter.inference_output_type = tf.float32  # probabilities, as every export
        try:
            with warnings.catch_warnings():  # the int8 calibrator uses the deprecated tf.lite.Interpreter
                warnings.simplefilter("ignore")
                flatbuffer = converter.convert()
        except Exception as err:  # noqa: BLE001 - the converter raises ConverterError and others
            raise ModelError(f"TFLite conversion ({precision}) failed: {_first_line(err)}",
                             "the model uses an op TFLite cannot express; try --format savedmodel") from None
    Path(out).write_bytes(flatbuffer)


def write_onnx(model, inputs: ExportInputs, out) -> None:
    """ONNX through tf2onnx (opset ``ONNX_OPSET``) from the same pixels function as TFLite."""
    from skinzoo.runtime import tf as tf_runtime

    tf = tf_runtime()
    tf2onnx = import_optional("tf2onnx", "--format onnx")
    import_optional("onnxruntime", "checking an ONNX export")
    function = _pixels_function(tf, model, inputs)
    image = tf.TensorSpec([None, *inputs.image.shape], tf.float32, name=IMAGE_INPUT)
    chatty = logging.getLogger("tf2onnx")
    level = chatty.level
    chatty.setLevel(logging.WARNING)  # its INFO lines ("Optimizing ONNX model") are not for users
    try:
        tf2onnx.convert.from_function(function, input_signature=_specs(tf, inputs, image),
                                      opset=ONNX_OPSET, output_path=str(out))
    except Exception as err:  # noqa: BLE001 - tf2onnx raises plain exceptions of many kinds
        raise ModelError(f"tf2onnx could not convert the model: {_first_line(err)}",
                         "use --format savedmodel (TF Serving) or --format tflite instead") from None
    finally:
        chatty.setLevel(level)


def _first_line(err) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:240] if text else type(err).__name__


# --- which images -------------------------------------------------------------------------------


def _run_table(loaded):
    from skinzoo.data.splits import read_split_table

    if loaded.run is None or not loaded.run.split.exists():
        return None
    table = read_split_table(loaded.run.split, ("path", "split"),
                             hint="pass --check-images and --calibration-images explicitly")
    table["resolved"] = [os.path.realpath(p) for p in table["path"].astype(str)]
    return table


def _sample(paths: list[str], count: int, seed: int) -> list[str]:
    if len(paths) <= count:
        return list(paths)
    picked = np.random.default_rng(seed).choice(len(paths), size=count, replace=False)
    return [paths[i] for i in sorted(picked)]


def check_image_paths(loaded, given=None, count: int = DEFAULT_CHECK_IMAGES, seed: int = 0):
    """``(paths, where from)``: ``given`` files/folders, else ``count`` validation images of the run."""
    from skinzoo.evaluate.predict import collect_image_paths

    if given:
        paths, errors = collect_image_paths(given)
        for p, message in errors.items():
            log.warning("warning: check image %s: %s", p, message)
        if not paths:
            raise DataError("none of the --check-images is an image", "pass image files or folders")
        return _sample(paths, count, seed), "--check-images"
    table = _run_table(loaded)
    if table is None:
        raise UsageError("no images to verify the export on: the model has no run split.csv",
                         "pass --check-images FOLDER (a few images like the ones it will see)")
    val = table.loc[table["split"].astype(str) == "val", "path"].astype(str).tolist()
    if not val:
        raise DataError(f"the run's split {loaded.run.split} has no validation images to verify on",
                        "pass --check-images FOLDER")
    return _sample(val, count, seed), f"validation split of {loaded.run.path.name}"


def calibration_image_paths(loaded, given=None, count: int = DEFAULT_CALIBRATION_IMAGES,
                            seed: int = 0):
    """``(paths, where from)`` for int8 calibration: TRAINING-split images only.

    Given images that the run's split.csv puts in the test split are refused (calibrating on
    them would let test images shape the deployed model); so are validation images, because the
    export is verified on them and calibrating on the same images would flatter the check.
    """
    from skinzoo.evaluate.predict import collect_image_paths

    table = _run_table(loaded)
    if given:
        paths, _ = collect_image_paths(given)
        if not paths:
            raise DataError("none of the --calibration-images is an image", "pass image files or folders")
        if table is not None:
            split_of = dict(zip(table["resolved"], table["split"].astype(str), strict=True))
            held_out = [p for p in paths if split_of.get(os.path.realpath(p)) in ("test", "val")]
            if held_out:
                kinds = sorted({split_of[os.path.realpath(p)] for p in held_out})
                raise UsageError(f"{len(held_out)} of the --calibration-images are in the run's "
                                 f"{' and '.join(kinds)} split (e.g. {held_out[0]}); int8 calibration "
                                 "uses training images only",
                                 "leave --calibration-images out to use the run's training split")
        return _sample(paths, count, seed), "--calibration-images"
    if table is None:
        raise UsageError("int8 needs calibration images and the model has no run split.csv",
                         "pass --calibration-images FOLDER with training images (never test images)")
    train = table.loc[table["split"].astype(str) == "train", "path"].astype(str).tolist()
    if not train:
        raise DataError(f"the run's split {loaded.run.split} has no training images",
                        "pass --calibration-images FOLDER with training images")
    return _sample(train, count, seed), f"training split of {loaded.run.path.name}"


# --- the whole export -----------------------------------------------------------------------


@dataclass
class ExportResult:
    path: Path
    format: str
    precision: str
    size_bytes: int
    info: dict
    verification: dict


def default_out(loaded, fmt: str, precision: str) -> Path:
    """``RUN/export/<savedmodel | model-<precision>.tflite | model.onnx>`` (or beside a model file)."""
    base = (loaded.run.path if loaded.run is not None else Path(loaded.source).parent) / "export"
    return base / {"savedmodel": "savedmodel", "tflite": f"model-{precision}.tflite",
                   "onnx": "model.onnx"}[fmt]


def _check_out(out: Path, fmt: str) -> None:
    """Refuse to put an export where something that is not an earlier export of ours lives."""
    if not out.exists() and not out.is_symlink():
        return
    if export_format(out) == fmt and info_path(out).is_file():
        return  # an earlier skinzoo export: replaced once the new one has passed its check
    raise UsageError(f"{out} already exists and is not an earlier skinzoo {fmt} export",
                     "choose another --out path (skinzoo never overwrites other files)")


def path_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_model(loaded, fmt: str, out=None, precision: str = "float32", check_images=None,
                 check_count: int = DEFAULT_CHECK_IMAGES, calibration_images=None,
                 calibration_count: int = DEFAULT_CALIBRATION_IMAGES, seed: int = 0,
                 hair_removal: bool = False) -> ExportResult:
    """Export ``loaded`` (a :class:`~skinzoo.evaluate.predict.LoadedModel` of a Keras model),
    verify the written file against the Keras model, and only then move it to ``out``."""
    from skinzoo.evaluate.predict import load_images_tolerant
    from skinzoo.runtime import tf

    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    if fmt != "tflite" and precision != "float32":
        raise UsageError(f"--precision {precision} applies to --format tflite only",
                         f"{fmt} exports are float32; leave --precision out")
    if fmt == "savedmodel" and hair_removal:
        raise UsageError("this run was trained with --hair-removal, which runs OpenCV in Python and "
                         "cannot be part of a SavedModel serving graph",
                         "export --format tflite or onnx and remove hair before feeding pixels")
    if fmt == "onnx":
        import_optional("tf2onnx", "--format onnx")
        import_optional("onnxruntime", "checking an ONNX export")
    model = loaded.model
    inputs = export_inputs(model, loaded.img_size)
    out = Path(out) if out is not None else default_out(loaded, fmt, precision)
    suffix = {"tflite": ".tflite", "onnx": ".onnx"}.get(fmt)
    if suffix and out.suffix.lower() != suffix:
        raise UsageError(f"--out {out} must end in {suffix} for --format {fmt}",
                         f"e.g. --out {out.with_suffix(suffix)}")
    _check_out(out, fmt)

    check_paths, check_from = check_image_paths(loaded, check_images, check_count, seed)
    calibration = calibration_from = None
    if precision == "int8":
        cal_paths, calibration_from = calibration_image_paths(loaded, calibration_images,
                                                              calibration_count, seed)
        cal_images, cal_ok, _ = load_images_tolerant(cal_paths, loaded.img_size, loaded.resize)
        if not cal_ok:
            raise DataError("none of the calibration images could be read", "check the images")
        calibration = (cal_images, meta_values(loaded, inputs, cal_ok, seed + 1)[0])
        calibration_from = f"{len(cal_ok)} images, {calibration_from}"

    tf()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staged = tmp / out.name
    try:
        if fmt == "savedmodel":
            write_savedmodel(model, inputs, loaded.classes, loaded.resize, staged)
        elif fmt == "tflite":
            write_tflite(model, inputs, precision, staged, calibration)
        else:
            write_onnx(model, inputs, staged)
        info = export_info(loaded, fmt, precision, inputs, staged, calibration_from, hair_removal)
        verification = verify_export(loaded, staged, fmt, precision, inputs, check_paths, check_from,
                                     seed, info)
        info["verification"] = verification
        write_json_atomic(info_path(staged), info)
        if not verification["passed"]:
            failed = next(c for c in verification["checks"] if not c["passed"])
            raise ModelError(f"the {fmt} {precision} export disagrees with the Keras model on "
                             f"{failed['what']}: {failed['summary']} (tolerance {failed['tolerance_text']}); "
                             f"nothing was written to {out}",
                             "report this with the model; other formats or precisions may work")
        _move_into_place(staged, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, fmt, precision, path_size(out), info, verification)


def _move_into_place(staged: Path, out: Path) -> None:
    """Replace ``out`` (an earlier export, already checked by ``_check_out``) with ``staged``."""
    sidecar_staged, sidecar_out = info_path(staged), info_path(out)
    if staged.is_dir():
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(staged, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(staged, out)
    os.replace(sidecar_staged, sidecar_out)


def export_info(loaded, fmt, precision, inputs: ExportInputs, staged: Path, calibration_from,
                hair_removal: bool) -> dict:
    """The ``skinzoo.json`` of an export: what a user (and ``skinzoo predict``) needs to run it."""
    from skinzoo import __version__
    from skinzoo.runtime import tf

    image = dict(inputs.image.as_json(), dtype="uint8" if precision == "int8" else "float32",
                 range="RGB 0-255, resized with the pipeline (see resize)")
    info = {
        "skinzoo_export": 1,
        "format": fmt,
        "precision": precision,
        "file": staged.name,
        "classes": list(loaded.classes),
        "task": loaded.task,
        "img_size": list(loaded.img_size),
        "resize": loaded.resize,
        "hair_removal": bool(hair_removal),
        "temperature": loaded.temperature,
        "threshold": loaded.threshold,
        "inputs": {"image": image, "meta": [m.as_json() for m in inputs.meta]},
        "outputs": {"probabilities": "(N, K) class probabilities in class order, before "
                    "temperature scaling: apply softmax(log(p) / temperature) to calibrate"},
        "source": {"model_file": str(loaded.source),
                   "run": str(loaded.run.path) if loaded.run is not None else None},
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "skinzoo_version": __version__,
        "tensorflow_version": tf().__version__,
    }
    if fmt == "savedmodel":
        info["signatures"] = {
            BYTES_SIGNATURE: {"inputs": [BYTES_INPUT, *(m.name for m in inputs.meta)],
                              "outputs": ["probabilities", "predicted_class", "class_names"],
                              "note": "encoded JPEG/PNG/BMP/GIF bytes; decode + resize in the graph"},
            PIXELS_SIGNATURE: {"inputs": [IMAGE_INPUT, *(m.name for m in inputs.meta)],
                               "outputs": ["probabilities", "predicted_class", "class_names"]},
        }
    if loaded.metadata:  # encoded metadata inputs: `predict --meta age=55,...` works on the export
        info["metadata_encodings"] = {name: enc.to_dict() for name, enc in loaded.metadata.items()}
    if calibration_from:
        info["int8_calibration"] = calibration_from
    return info
