"""Grad-CAM and Grad-CAM++ for any Keras image classifier, including nested backbones.

One model yields ``[activation, class scores, probabilities]``, built one of two ways:

- **public** (the target layer is a top-level layer, e.g. every zoo model and fused model):
  ``keras.Model(model.inputs, [layer.output, scores, *model.outputs])``, public Keras only.
- **replay** (the target lives inside a nested sub-model: ensembles, a backbone used as one layer,
  ``Sequential([MobileNetV2(...), ...])``): the public form fails there because the inner layer's
  tensor belongs to the inner graph. The forward pass is rebuilt level by level: at each level
  the graph is replayed on fresh inputs, the operation on the path to the target layer is swapped
  for a rebuilt copy of itself that also returns the target activation, and everything else is
  called as it is. Replay needs Keras internals (``Functional._run_through_graph``,
  ``Sequential._functional``), so it runs only on the Keras versions it was checked on
  (skinzoo/keras_version.py) and otherwise refuses with a clear error.

Either way weights are shared; nothing is copied except a linear twin of the output layer.

Class scores are the logits when the output layer is a Dense/Activation with softmax or sigmoid
(Grad-CAM is defined on pre-softmax scores; probabilities saturate near 0 and 1), otherwise the
probabilities themselves.

All images of a batch share one gradient call: the batch's selected scores are summed, and since
samples do not interact in inference mode, each image's gradient is its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from skinzoo.errors import ModelError, UsageError
from skinzoo.keras_version import PRIVATE_USES, is_checked, range_text, version_text
from skinzoo.progress import track

log = logging.getLogger(__name__)

# Layers with 4-D outputs that only prepare the input: never a useful Grad-CAM target.
_PREPROCESSING = ("InputLayer", "Rescaling", "Normalization", "Resizing", "CenterCrop",
                  "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
                  "RandomContrast", "RandomBrightness", "RandomCrop", "ZeroPadding2D")
METHODS = ("gradcam", "gradcam++")
REPLAY = "graph replay"  # the private Keras use in skinzoo/keras_version.py


def output_names(stem: str, method: str) -> tuple[str, str]:
    """(overlay PNG, heatmap .npy) file names for one image: Grad-CAM keeps ``X_gradcam.png`` /
    ``X_heatmap.npy``; Grad-CAM++ writes ``X_gradcampp.png`` / ``X_gradcampp_heatmap.npy`` (no
    '+' in file names), so both methods can share one --out without overwriting each other."""
    if method == "gradcam":
        return f"{stem}_gradcam.png", f"{stem}_heatmap.npy"
    tag = method.replace("+", "p")
    return f"{stem}_{tag}.png", f"{stem}_{tag}_heatmap.npy"


# --- model structure -------------------------------------------------------------------------


def _has_graph(model) -> bool:
    """Functional and Sequential models have a layer graph; subclassed ones have no ``inputs``."""
    import keras

    return isinstance(model, keras.Sequential) or hasattr(model, "inputs")


def _replay_graph(model, path):
    """The Functional graph to replay for ``model`` (a Sequential keeps one in ``_functional``).
    Private Keras: only on the checked versions, and a clear error when the symbols are gone."""
    import keras

    if not _has_graph(model):
        raise ModelError(f"cannot trace model '{model.name}' ({type(model).__name__}): it is a "
                         "subclassed model without a layer graph",
                         "Grad-CAM needs a Functional or Sequential model (or one nesting them)")
    checked = range_text(PRIVATE_USES[REPLAY].checked)
    hint = (f"install keras{checked} (the version setup.cfg pins), or explain a top-level layer "
            "with --layer NAME")
    if not is_checked(REPLAY):
        raise ModelError(f"Grad-CAM of layer {'/'.join(path)} inside a nested model replays the "
                         f"model's graph with Keras internals checked on keras{checked} only; "
                         f"this is Keras {version_text()}", hint)
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    if graph is None or not hasattr(graph, "_run_through_graph"):
        raise ModelError(f"Keras {version_text()} has no Functional._run_through_graph / "
                         "Sequential._functional, which Grad-CAM of a layer inside a nested "
                         f"model ({'/'.join(path)}) needs", hint)
    return graph


def _is_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _layers(model) -> list:
    """Layers in topological order (inputs first), input layers excluded."""
    return [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]


def _output_shape(layer):
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None


def image_input_index(model) -> int:
    """Index of the model's image input (the first one of rank 4)."""
    for i, t in enumerate(model.inputs):
        if len(t.shape) == 4:
            return i
    raise ModelError(f"model '{model.name}' has no image input (inputs: "
                     + ", ".join(str(tuple(t.shape)) for t in model.inputs) + ")",
                     "Grad-CAM and predict need a model taking (batch, height, width, channels) images")


def find_target_layer(model) -> list[str]:
    """Path of layer names to the last 4-D feature map before global pooling, descending into
    nested sub-models: e.g. ``["mobilenetv2_1.00_64", "out_relu"]``.

    Feature maps of 1x1 are skipped when a larger one exists (squeeze-excite reshapes and
    classifier "1x1 conv heads" are not where the spatial evidence is).
    """
    for allow_1x1 in (False, True):
        path = _search_last_feature_map(model, allow_1x1)
        if path:
            return path
    raise ModelError(f"model '{model.name}' has no convolutional feature map to explain",
                     "Grad-CAM needs a conv layer with a (batch, h, w, channels) output; "
                     "pass --layer NAME if the model has one under another form")


def _search_last_feature_map(model, allow_1x1: bool) -> list[str] | None:
    for layer in reversed(_layers(model)):
        if _is_model(layer):
            inner = _search_last_feature_map(layer, allow_1x1)
            if inner:
                return [layer.name, *inner]
            continue
        if type(layer).__name__ in _PREPROCESSING:
            continue
        shape = _output_shape(layer)
        if shape is None or len(shape) != 4:
            continue
        if allow_1x1 or not (shape[1] == 1 and shape[2] == 1):
            return [layer.name]
    return None


def find_layer_path(model, name: str) -> list[str]:
    """Path to the layer called ``name`` (``outer/inner`` paths accepted), searching nested models."""
    if "/" in name:
        parts = name.split("/")
        current, path = model, []
        for part in parts:
            names = [layer.name for layer in _layers(current)]
            if part not in names:
                raise _no_such_layer(model, name)
            path.append(part)
            current = current.get_layer(part)
        return path
    found = _search_name(model, name)
    if not found:
        raise _no_such_layer(model, name)
    return found


def _search_name(model, name):
    for layer in _layers(model):
        if layer.name == name:
            return [name]
    for layer in _layers(model):
        if _is_model(layer):
            inner = _search_name(layer, name)
            if inner:
                return [layer.name, *inner]
    return None


def _no_such_layer(model, name):
    candidates = [f"{'/'.join(p)}" for p in _feature_map_paths(model)][-8:]
    return UsageError(f"no layer named '{name}' in model '{model.name}'",
                      "use --layer auto, or one of the last feature maps: " + ", ".join(candidates))


def _feature_map_paths(model, prefix=()):
    for layer in _layers(model):
        if _is_model(layer):
            yield from _feature_map_paths(layer, (*prefix, layer.name))
        else:
            shape = _output_shape(layer)
            if shape is not None and len(shape) == 4:
                yield [*prefix, layer.name]


# --- rebuilding the forward pass ---------------------------------------------------------------


def _fresh_inputs(graph):
    import keras

    from skinzoo.models.graph import input_name

    return [keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=input_name(graph, t))
            for t in graph.inputs]


def _output_layer(graph):
    from skinzoo.models.graph import producing_layer

    return producing_layer(graph, graph.outputs[0])


def _gives_logits(layer) -> str | None:
    """How the class scores (logits) sit at ``layer``, the model's output layer: ``"dense"``
    (a softmax/sigmoid Dense: its linear twin gives them), ``"input"`` (a softmax/sigmoid
    Activation or Softmax: its input is them) or None (scores are the probabilities)."""
    import keras

    if isinstance(layer, keras.layers.Dense) and _activation_name(layer) in ("softmax", "sigmoid"):
        return "dense"
    if isinstance(layer, keras.layers.Softmax) or (isinstance(layer, keras.layers.Activation)
                                                   and _activation_name(layer) in ("softmax", "sigmoid")):
        return "input"
    return None


def _logit_twin(layer):
    """A linear copy of a Dense output layer (same weights): its output is the logits."""
    import keras

    cfg = layer.get_config()
    cfg.update(activation="linear", name=f"{layer.name}_logits", dtype="float32")
    twin = keras.layers.Dense.from_config(cfg)
    twin.build(layer.input.shape)
    twin.set_weights(layer.get_weights())
    return twin


def _activation_name(layer) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", str(act)) if act is not None else ""


def _replay(model, path, want_logits: bool):
    """``(inputs, activation, outputs, score)`` of ``model`` replayed on fresh inputs, with the
    activation at ``path`` exposed. ``score`` is the logits tensor or None."""
    import keras

    graph = _replay_graph(model, path)
    head, rest = path[0], path[1:]
    out_op = _output_layer(graph) if want_logits else None
    logits = _gives_logits(out_op) if out_op is not None else None
    captured = {}

    def operation_fn(op):
        if op.name == head and not rest:
            def capture(*args, **kwargs):
                out = op(*args, **kwargs)
                captured["act"] = out
                return out
            return capture
        if op.name == head:
            inner = _replay_model(op, rest)

            def capture_nested(*args, **kwargs):
                kwargs.pop("mask", None)
                act, *outs = inner(*args, **kwargs)
                captured["act"] = act
                return outs[0] if len(outs) == 1 else outs
            return capture_nested
        if op is out_op and logits == "dense":
            twin = _logit_twin(op)

            def with_logits(x, *args, **kwargs):
                captured["score"] = twin(x)
                return op(x, *args, **kwargs)
            return with_logits
        if op is out_op and logits == "input":
            def with_logits_input(x, *args, **kwargs):
                captured["score"] = x
                return op(x, *args, **kwargs)
            return with_logits_input
        return op

    inputs = _fresh_inputs(graph)
    outputs = graph._run_through_graph(inputs, operation_fn=operation_fn)
    if "act" not in captured:
        raise _not_on_path(model, path)
    return inputs, captured["act"], keras.tree.flatten(outputs), captured.get("score")


def _replay_model(model, path):
    """A model with the same inputs as ``model`` returning ``[activation, *outputs]``."""
    import keras

    inputs, act, outputs, _ = _replay(model, path, want_logits=False)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], [act, *outputs],
                       name=f"{model.name}")


@dataclass
class CamModel:
    """The rebuilt model: ``model(inputs) -> [activation, scores, probabilities]``."""

    model: object
    layer_path: list[str]
    score_is_logits: bool
    image_index: int
    num_outputs: int  # width of the original output: 1 for a sigmoid model
    route: str = "public"  # "public" (top-level layer) or "replay" (inside a nested model)


def build_cam_model(model, layer: str = "auto") -> CamModel:
    """Rebuild ``model`` so one call returns the feature map at ``layer`` and the class scores:
    the public route for a top-level layer, graph replay for one inside a nested model (or a
    top-level layer called more than once, whose ``output`` Keras cannot name)."""
    path = find_target_layer(model) if layer in (None, "auto") else find_layer_path(model, layer)
    cam = public_cam_model(model, path) if len(path) == 1 else None
    return cam if cam is not None else replayed_cam_model(model, path)


def public_cam_model(model, path) -> CamModel | None:
    """``keras.Model(model.inputs, [layer.output, scores, probabilities])`` for a top-level layer
    (``path == [name]``), or None when the layer has no single output tensor (called twice)."""
    import keras

    from skinzoo.models.graph import producing_layer

    if not _has_graph(model):
        return None  # a subclassed model: replay says why it cannot be traced
    try:
        act = model.get_layer(path[0]).output
    except (AttributeError, ValueError):
        return None
    probs = model.outputs[0]
    try:  # the layers the first output depends on (Keras refuses an input it does not use)
        on_path = keras.Model(model.inputs, probs).layers
    except ValueError:
        return None
    if not any(layer.name == path[0] for layer in on_path):
        raise _not_on_path(model, path)
    out_layer = producing_layer(model, probs)
    logits = _gives_logits(out_layer) if out_layer is not None else None
    score = _logit_twin(out_layer)(out_layer.input) if logits == "dense" else \
        out_layer.input if logits == "input" else None
    return _cam_model(model, path, model.inputs, act, probs, score, "public")


def replayed_cam_model(model, path) -> CamModel:
    """The same by graph replay (private Keras, gated): any layer, at any nesting depth."""
    inputs, act, outputs, score = _replay(model, path, want_logits=True)
    return _cam_model(model, path, inputs, act, outputs[0], score, "replay")


def _cam_model(model, path, inputs, act, probs, score, route: str) -> CamModel:
    import keras

    if len(act.shape) != 4:
        raise UsageError(f"layer {'/'.join(path)} outputs shape {tuple(act.shape)}, not a feature map",
                         "Grad-CAM needs a layer with a (batch, h, w, channels) output; try --layer auto")
    cam = keras.Model(inputs, [act, score if score is not None else probs, probs],
                      name=f"{model.name}_gradcam")
    return CamModel(cam, path, score is not None, image_input_index(model), int(probs.shape[-1]),
                    route)


def _not_on_path(model, path):
    return ModelError(f"layer {'/'.join(path)} is not on the path from the inputs to the output "
                      f"of model '{model.name}'", "pick another --layer, or --layer auto")


# --- the heatmaps --------------------------------------------------------------------------------


@dataclass
class CamResult:
    """Raw Grad-CAM maps at feature-map resolution (ReLU'd, not normalised), the model's class
    probabilities ``(N, K)`` (K >= 2) and the explained class of each image."""

    heatmaps: np.ndarray
    probs: np.ndarray
    class_index: np.ndarray
    layer_path: list[str]


class GradCam:
    """Grad-CAM for one model: build once, explain many batches."""

    def __init__(self, model, layer: str = "auto", method: str = "gradcam"):
        if method not in METHODS:
            raise UsageError(f"unknown Grad-CAM method {method!r}", f"use one of: {', '.join(METHODS)}")
        self.cam = build_cam_model(model, layer)
        self.method = method
        self._step = None

    @property
    def layer_path(self) -> list[str]:
        return self.cam.layer_path

    def _compiled_step(self):
        from skinzoo.runtime import tf as start_tensorflow

        tf = start_tensorflow()
        cam, plusplus = self.cam, self.method == "gradcam++"
        binary = cam.num_outputs == 1

        @tf.function(reduce_retracing=True)
        def step(inputs, class_index):
            with tf.GradientTape() as tape:
                act, score, probs = cam.model(inputs, training=False)
                score = tf.cast(score, tf.float32)
                if binary:
                    p1 = tf.cast(probs[:, 0], tf.float32)
                    probs2 = tf.stack([1.0 - p1, p1], axis=1)
                    sign = tf.where(class_index == 1, 1.0, -1.0)
                    # logit z favours class 1, -z class 0; without logits use p and 1 - p
                    target = score[:, 0] * sign if cam.score_is_logits else \
                        tf.where(class_index == 1, score[:, 0], 1.0 - score[:, 0])
                else:
                    probs2 = tf.cast(probs, tf.float32)
                    target = tf.gather(score, class_index, batch_dims=1)
                total = tf.reduce_sum(target)
            act = tf.cast(act, tf.float32)
            grads = tf.cast(tape.gradient(total, act), tf.float32)
            if plusplus:
                g2 = tf.square(grads)
                g3 = g2 * grads
                sum_act = tf.reduce_sum(act, axis=(1, 2), keepdims=True)
                denom = 2.0 * g2 + sum_act * g3
                alphas = g2 / tf.where(denom != 0.0, denom, tf.ones_like(denom))
                weights = tf.reduce_sum(alphas * tf.nn.relu(grads), axis=(1, 2))
            else:
                weights = tf.reduce_mean(grads, axis=(1, 2))
            maps = tf.nn.relu(tf.einsum("bhwc,bc->bhw", act, weights))
            return maps, probs2

        return step

    def predict_probs(self, inputs, batch_size: int = 32) -> np.ndarray:
        """``(N, K)`` probabilities from the rebuilt model (equals the original model's)."""
        from skinzoo.metrics import as_class_probs

        n = len(inputs[0])
        out = []
        for start in range(0, n, batch_size):
            batch = [x[start:start + batch_size] for x in inputs]
            out.append(np.asarray(self.cam.model(batch, training=False)[2]))
        return as_class_probs(np.concatenate(out)) if out else np.zeros((0, max(2, self.cam.num_outputs)))

    def explain(self, inputs, class_index=None, batch_size: int = 16,
                threshold: float | None = None) -> CamResult:
        """Heatmaps for ``inputs`` (list: one array per model input, images first-class raw 0-255).

        ``class_index``: int array (one class per image), an int for all, or None for the
        predicted class (argmax, or ``P(classes[1]) >= threshold`` for a sigmoid model).
        """
        if self._step is None:
            self._step = self._compiled_step()
        n = len(inputs[0])
        if class_index is None:
            probs = self.predict_probs(inputs, batch_size)
            from skinzoo.metrics import predicted_classes

            class_index = predicted_classes(probs, threshold if probs.shape[1] == 2 else None)
        class_index = np.broadcast_to(np.asarray(class_index, dtype=np.int32), (n,)).copy()
        k = max(2, self.cam.num_outputs)
        if n and (class_index.min() < 0 or class_index.max() >= k):
            raise UsageError(f"class index {int(class_index.max())} is outside 0..{k - 1}")
        maps, probs = [], []
        for start in track(range(0, n, batch_size), "Grad-CAM", total=n, step=batch_size):
            stop = min(start + batch_size, n)
            # pad the last batch to the full size so the traced step is reused, not retraced
            pad = batch_size - (stop - start) if n > batch_size else 0
            batch = [_pad(x[start:stop], pad) for x in inputs]
            cls = _pad(class_index[start:stop], pad)
            m, p = self._step([np.asarray(b, dtype=np.float32) for b in batch], cls)
            maps.append(np.asarray(m)[: stop - start])
            probs.append(np.asarray(p)[: stop - start])
        fmap = tuple(self.cam.model.outputs[0].shape[1:3])
        return CamResult(np.concatenate(maps) if maps else np.zeros((0, *fmap), np.float32),
                         np.concatenate(probs) if probs else np.zeros((0, k), np.float32),
                         class_index, self.layer_path)


def _pad(x, pad: int):
    x = np.asarray(x)
    if pad <= 0:
        return x
    return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])


# --- images ----------------------------------------------------------------------------------


def upsample(heatmap, size) -> np.ndarray:
    """A raw heatmap resized to ``size`` = (height, width) and scaled to [0, 1] (all zero stays 0)."""
    import cv2

    h, w = size
    up = cv2.resize(np.asarray(heatmap, np.float32), (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
    up = np.maximum(up, 0)
    top = float(up.max())
    return up / top if top > 0 else up


def overlay(image, heatmap01, alpha: float = 0.4) -> np.ndarray:
    """RGB uint8: the image blended with the heatmap in the 'jet' colour map."""
    import matplotlib

    image = np.clip(np.asarray(image, np.float32), 0, 255)
    colours = matplotlib.colormaps["jet"](np.asarray(heatmap01))[..., :3] * 255.0
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)
