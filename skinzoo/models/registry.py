"""The model registry: names → builders with their training defaults.

Modelled on timm's ``register_model`` / ``list_models``: each builder module decorates its
constructors with :func:`register_model`; :func:`build_model` checks the request (name, classes,
input shape, weights, options) and turns every mistake into a :class:`ModelError` before any
TensorFlow work starts. This module does not import TensorFlow; the builder modules are imported
on first use.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from dataclasses import asdict, dataclass, field
from typing import Callable

from skinzoo.errors import ModelError

# Modules whose import registers models (kept in display order).
_BUILDER_MODULES = ("skinzoo.models.small", "skinzoo.models.resnet", "skinzoo.models.transfer")
_REGISTRY: dict[str, ModelInfo] = {}
_BUILDERS: dict[str, Callable] = {}
_LOADED = False
# How `skinzoo ensemble` averages member probabilities (skinzoo.models.ensemble); defined here,
# where no TensorFlow is imported, so the CLI can offer the choice without loading it.
ENSEMBLE_MEANS = ("arithmetic", "geometric")


@dataclass(frozen=True)
class ModelInfo:
    """What the zoo knows about a model without building it.

    ``pretrained`` means ImageNet weights can be loaded (``weights="imagenet"`` or a local file).
    Item access (``info["default_lr"]``) works too, for callers that treat it as a mapping.
    """

    name: str
    family: str
    default_size: int
    default_batch: int
    default_lr: float
    pretrained: bool
    description: str
    options: dict = field(default_factory=dict)

    def __getitem__(self, key):
        return getattr(self, key)

    def as_dict(self) -> dict:
        return asdict(self)


def register_model(
    name: str,
    *,
    family: str,
    default_size: int,
    default_batch: int,
    default_lr: float,
    pretrained: bool = False,
    description: str = "",
    **options,
):
    """Decorator registering ``fn(num_classes, input_shape, weights, **options) -> keras.Model``.

    ``options`` are fixed keyword arguments for this name (``resnet50d`` = the ResNet builder with
    ``depth=50, variant="d"``); a caller may still override the builder's other keyword options.
    """

    def decorate(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(
            name, family, int(default_size), int(default_batch), float(default_lr),
            bool(pretrained), description, dict(options),
        )
        _BUILDERS[name] = fn
        return fn

    return decorate


def _load_builders() -> None:
    global _LOADED
    if not _LOADED:
        for module in _BUILDER_MODULES:
            importlib.import_module(module)
        _LOADED = True


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching an fnmatch pattern (``"resnet*"``, ``"*cnn"``)."""
    _load_builders()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern.lower()))


def get_model_info(name: str) -> ModelInfo:
    """Registry entry for ``name``; unknown names raise ModelError with close matches."""
    _load_builders()
    key = name.lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        close = difflib.get_close_matches(str(name).lower(), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ModelError(
            f"unknown model {name!r}",
            hint + "`skinzoo models` lists the available names.",
        )
    return _REGISTRY[key]


def build_model(name, num_classes, input_shape=None, weights=None, **options):
    """Build a registered model (see docs/CONTRACTS.md "Models").

    - ``input_shape``: ``(H, W, 3)`` or an int side; default: the model's ``default_size``.
      Inputs are raw RGB float32 in [0, 255]; the model rescales itself.
    - ``weights``: None (random init), ``"imagenet"`` (Keras download, needs network) or a path
      to a local weights/model file; only for models with ``pretrained=True``.
    - ``options``: builder keyword options (e.g. ``width=0.5``, ``dense=(256, 128)``,
      ``dropout=0.3``); unknown ones raise ModelError listing the accepted ones.

    The output layer is named ``predictions`` and is float32: softmax over K for K > 2, one
    sigmoid unit (probability of ``classes[1]``) for K == 2.
    """
    info = get_model_info(name)
    num_classes = _check_num_classes(num_classes)
    input_shape = _check_input_shape(input_shape, info)
    if weights is not None and not info.pretrained:
        raise ModelError(
            f"model {info.name!r} has no pretrained weights (weights={weights!r})",
            "use weights=None, or a pretrained model: " + ", ".join(
                n for n in list_models() if _REGISTRY[n].pretrained),
        )
    builder = _BUILDERS[info.name]
    kwargs = {**info.options, **_check_options(info, builder, options)}
    try:
        return builder(num_classes=num_classes, input_shape=input_shape, weights=weights, **kwargs)
    except ValueError as err:
        if min(input_shape[:2]) < info.default_size and "negative" in str(err).lower():
            raise ModelError(
                f"input {input_shape[0]}x{input_shape[1]} is too small for {info.name}: a layer's "
                "output would have zero or negative size",
                f"use a larger --img-size (default for {info.name}: {info.default_size}).",
            ) from err
        raise


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(
            f"num_classes must be an int >= 2, got {num_classes!r}",
            "a binary task has num_classes=2 (one sigmoid unit); K classes give a K-way softmax.",
        )
    return num_classes


def _check_input_shape(input_shape, info: ModelInfo) -> tuple[int, int, int]:
    if input_shape is None:
        return (info.default_size, info.default_size, 3)
    if isinstance(input_shape, int) and not isinstance(input_shape, bool):
        input_shape = (input_shape, input_shape, 3)
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or shape[2] != 3 or min(shape[:2]) < 8:
        raise ModelError(
            f"input_shape must be (height, width, 3) with sides >= 8, got {input_shape!r}",
            "images are RGB; pass e.g. input_shape=(96, 96, 3) or an int side.",
        )
    return shape


def _check_options(info: ModelInfo, builder, options: dict) -> dict:
    accepted = [
        p for p, spec in inspect.signature(builder).parameters.items()
        if p not in ("num_classes", "input_shape", "weights")
        and spec.kind is inspect.Parameter.KEYWORD_ONLY and p not in info.options
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ModelError(
            f"unknown option(s) {', '.join(unknown)} for model {info.name!r}",
            "accepted options: " + (", ".join(sorted(accepted)) or "none"),
        )
    return options


def builder_defaults(name: str) -> dict:
    """The builder's default keyword options for ``name`` (registered fixed options applied)."""
    info = get_model_info(name)
    params = inspect.signature(_BUILDERS[info.name]).parameters
    found = {p: s.default for p, s in params.items() if s.kind is inspect.Parameter.KEYWORD_ONLY}
    return {**found, **info.options}


def last_conv_layer_name(model) -> str:
    """Name of the last top-level layer with a 4-D output (the last conv feature map).

    A small helper for tests and summaries; Grad-CAM has its own, fuller discovery.
    """
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4:
            return layer.name
    raise ModelError(f"model {model.name!r} has no 4-D (convolutional) layer at top level")


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass (conv, depthwise conv and dense layers).

    FLOPs ≈ 2 × MACs. A cheap walk over the built layers' shapes; no forward pass.
    """
    total = 0
    for layer in _walk_layers(model):
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense"):
            continue
        out = layer.output.shape
        kernel = layer.kernel.shape  # Conv2D (kh, kw, cin/groups, cout); Dense (in, out)
        if kind == "Dense":
            positions = 1
            for s in out[1:-1]:
                positions *= s
            total += positions * kernel[0] * kernel[1]
        elif kind == "Conv2D":
            total += out[1] * out[2] * kernel[0] * kernel[1] * kernel[2] * kernel[3]
        else:
            total += out[1] * out[2] * out[3] * kernel[0] * kernel[1]
    return int(total)


def _walk_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _walk_layers(layer)
        else:
            yield layer
