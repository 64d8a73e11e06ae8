"""Pretrained weights: keras.applications ImageNet weights onto the zoo's own builds.

The primitive ResNet-50/101/152 v1 builds use keras.applications' layer names, so weights move
by name: build the matching keras.applications model (``weights="imagenet"`` downloads into
~/.keras/models/; a local ``.h5`` / ``.weights.h5`` file is loaded into it; a ``.keras`` file
is loaded as a model), then copy every layer whose name exists in the zoo model. Any backbone
layer left without weights is an error, never a silent half-transfer.
"""

from __future__ import annotations

import os
import socket
import urllib.error
from pathlib import Path

from skinzoo.errors import ModelError
from skinzoo.models.files import load_model_file
from skinzoo.models.layers import keras

KERAS_RESNETS = {50: "ResNet50", 101: "ResNet101", 152: "ResNet152"}
KERAS_CACHE = "~/.keras/models/"
# What keras.applications downloads for each backbone (include_top=False), for the hint.
WEIGHT_URLS = {
    "ResNet50": "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "ResNet101": "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                 "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "ResNet152": "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                 "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "ResNet50V2": "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                  "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "EfficientNetB0": "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
}
_REFERENCE_SHAPE = (64, 64, 3)  # weight shapes do not depend on the input size


def load_resnet_weights(model, depth: int, weights) -> list[str]:
    """Fill the backbone of a primitive ResNet v1 ``model`` from ImageNet or a file.

    Returns the names of the layers that received weights. ``predictions`` is copied too when
    the source has a 1000-way top of the same shape (``dense=(), dropout=0, num_classes=1000``).
    """
    if depth not in KERAS_RESNETS:
        raise ModelError(f"no ImageNet weights for ResNet-{depth}",
                         f"pretrained ResNets: {', '.join(f'resnet{d}' for d in KERAS_RESNETS)}.")
    app = KERAS_RESNETS[depth]
    if weights == "imagenet":
        source = keras_application(app, weights="imagenet", include_top=False,
                                   input_shape=_REFERENCE_SHAPE)
    else:
        source = _resnet_from_file(app, weights)
    return copy_weights_by_name(source, model, required=backbone_layer_names(model),
                                hint="ImageNet weights fit width=1.0, stem='imagenet', "
                                     "variant='v1' only.")


def keras_application(app: str, *, weights, **kwargs):
    """``keras.applications.<app>(weights=..., **kwargs)`` with a download failure turned into
    a ModelError that says how to work offline."""
    fn = getattr(keras.applications, app)
    try:
        return fn(weights=weights, **kwargs)
    except Exception as err:  # Keras wraps URLError in a bare Exception
        if weights == "imagenet" and _is_download_error(err):
            raise ModelError(
                f"cannot download the ImageNet weights for {app} (no network: {_reason(err)})",
                f"download {WEIGHT_URLS.get(app, 'the keras.applications weights file')} on a "
                f"machine with network (Keras caches it in {KERAS_CACHE}; copying that folder "
                "here also works) and pass the file: weights=PATH / --weights PATH.",
            ) from err
        raise


def _is_download_error(err: BaseException) -> bool:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (urllib.error.URLError, socket.error, ConnectionError, TimeoutError)):
            return True
        if "URL fetch failure" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _reason(err: BaseException) -> str:
    inner = err.__cause__ or err.__context__
    return str(getattr(inner, "reason", None) or inner or err).strip()[:120]


def check_weights_path(weights) -> Path:
    path = Path(os.path.expanduser(str(weights)))
    if not path.is_file():
        raise ModelError(
            f"weights file not found: {path}",
            'pass weights="imagenet" (needs network), None, or an existing .h5 / .weights.h5 / '
            ".keras file.",
        )
    return path


def _resnet_from_file(app: str, weights):
    """A keras.applications model (or any saved model) holding the file's weights."""
    path = check_weights_path(weights)
    if path.name.endswith(".keras"):
        return load_model_file(path)
    include_top = h5_has_top(path)
    shape = (224, 224, 3) if include_top else _REFERENCE_SHAPE
    reference = keras_application(app, weights=None, include_top=include_top, input_shape=shape)
    load_weights_file(reference, path)
    return reference


def load_weights_file(model, path: Path) -> None:
    """``model.load_weights(path)``, with a check Keras 3 skips: the file must hold exactly as
    many weighted layers as the model (it loads a mismatching .weights.h5 by position)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            in_file = _h5_weighted_layer_count(f)
    except OSError as err:
        raise ModelError(f"{path} is not an HDF5 weights file ({err})",
                         "pass a .h5 / .weights.h5 file from keras.applications or a .keras model.",
        ) from err
    expected = sum(1 for layer in model.layers if layer.weights)
    if in_file is not None and in_file != expected:
        raise ModelError(
            f"{path} holds {in_file} weighted layers, {model.name} has {expected}",
            "the file belongs to another architecture; use the file made for this model.",
        )
    try:
        model.load_weights(str(path))
    except Exception as err:
        raise ModelError(f"cannot load {path} into {model.name}: {err}",
                         "the file belongs to another architecture or is damaged.") from err


def h5_has_top(path: Path) -> bool:
    """Whether a keras.applications weights file includes the 1000-way classifier."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "layers" in f and isinstance(f["layers"], h5py.Group):  # Keras 3 .weights.h5
                return any(k == "dense" or k.startswith("dense_") for k in f["layers"])
            group = f["model_weights"] if "model_weights" in f else f
            names = [n.decode() if isinstance(n, bytes) else n
                     for n in group.attrs.get("layer_names", [])]
            return "predictions" in names or "probs" in names
    except OSError as err:
        raise ModelError(f"{path} is not an HDF5 weights file ({err})",
                         "pass a .h5 / .weights.h5 file from keras.applications or a .keras model.",
        ) from err


def _h5_weighted_layer_count(f):
    import h5py

    if "layers" in f and isinstance(f["layers"], h5py.Group):
        count = 0

        def visit(name, obj):
            nonlocal count
            if name.endswith("/vars") and isinstance(obj, h5py.Group) and len(obj):
                count += 1

        f["layers"].visititems(visit)
        return count
    group = f["model_weights"] if "model_weights" in f else f
    names = group.attrs.get("layer_names")
    if names is None:
        return None
    return sum(1 for n in names if len(group[n].attrs.get("weight_names", [])))


def backbone_layer_names(model) -> list[str]:
    """Weighted layers before ``embedding`` (the part that pretrained weights must cover)."""
    names = []
    for layer in model.layers:
        if layer.name == "embedding":
            break
        if layer.weights:
            names.append(layer.name)
    return names


def _named_layers(model) -> dict:
    found = {}
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            found.update(_named_layers(layer))
        elif layer.weights:
            found[layer.name] = layer
    return found


def copy_weights_by_name(source, target, *, required=(), hint="") -> list[str]:
    """Copy weights from every ``source`` layer to the ``target`` layer of the same name.

    Layers in ``required`` must all be filled with matching shapes, else ModelError; others
    (e.g. a 1000-way ``predictions`` into a 7-way one) are copied only when shapes match.
    """
    src = _named_layers(source)
    copied = []
    for name, layer in _named_layers(target).items():
        if name not in src:
            continue
        values = src[name].get_weights()
        shapes = [tuple(w.shape) for w in layer.weights]
        if [tuple(v.shape) for v in values] != shapes:
            if name in required:
                raise ModelError(
                    f"weights do not fit layer {name!r} of {target.name}: file has "
                    f"{[tuple(v.shape) for v in values]}, model has {shapes}",
                    hint or "build the model with the options the weights were made for.",
                )
            continue
        layer.set_weights(values)
        copied.append(name)
    missing = [n for n in required if n not in copied]
    if missing:
        raise ModelError(
            f"the weights leave {len(missing)} layers of {target.name} empty "
            f"(e.g. {', '.join(missing[:3])})",
            hint or "the weights belong to another architecture.",
        )
    return copied
