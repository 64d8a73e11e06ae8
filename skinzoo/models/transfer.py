"""Transfer learning: keras.applications backbones, the shared head, freeze / unfreeze.

Every backbone model (the primitive ResNets and the keras.applications ones here) ends the same
way: global average pooling named ``embedding`` → dropout → dense layers → ``predictions``,
built by :func:`build_head` with stable names, so a head trained alone on cached embeddings
(:func:`head_model`, two-stage training) copies into the full model by name
(:func:`copy_head_weights`).

keras.applications backbones are built on the zoo's input tensor (``input_tensor=``) and their
output tensor feeds the head, so the model is one flat graph: every backbone layer (e.g. the last
conv, ``post_relu`` / ``top_activation``) is a top-level layer reachable with ``get_layer``.
Inputs are raw RGB in [0, 255]: ResNet50V2 gets an ``ImagePreprocess("symmetric")`` layer
([-1, 1]); EfficientNet rescales and normalises inside its own first layers, so it is fed the raw
pixels (feeding it [0, 1] is the classic bug).

ResNet-50/101/152 transfer models are the primitive builds in :mod:`skinzoo.models.resnet` with
ImageNet weights (``build_model("resnet50", k, weights="imagenet")``).
"""

from __future__ import annotations

import re

from skinzoo.errors import ModelError
from skinzoo.models.files import load_model_file
from skinzoo.models.layers import ImagePreprocess, color_corrected, image_input, keras, predictions
from skinzoo.models.registry import register_model

layers = keras.layers
EMBEDDING = "embedding"
# keras.applications' extra scaling for EfficientNet ImageNet weights (see _fold_efficientnet_std)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def build_head(x, num_classes, dense=(256, 128), dropout=0.5):
    """Head on a 4-D feature map (pooled into ``embedding``) or a 2-D embedding.

    Layers: ``embedding`` (GlobalAveragePooling2D, 4-D input only) → ``head_dropout`` →
    for each width i: ``head_dense{i}`` (ReLU) → ``head_dense{i}_dropout`` → ``predictions``.
    Dropout layers are left out when ``dropout`` is 0. ``dense=()`` gives the classic single
    linear classifier (the keras.applications top).
    """
    if len(x.shape) == 4:
        x = layers.GlobalAveragePooling2D(name=EMBEDDING)(x)
    dense = tuple(int(n) for n in (dense or ()))
    _check_head_options(dense, dropout)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    for i, n in enumerate(dense, start=1):
        x = layers.Dense(n, activation="relu", name=f"head_dense{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"head_dense{i}_dropout")(x)
    return predictions(x, num_classes)


def head_model(embedding_dim, num_classes, dense=(256, 128), dropout=0.5):
    """The head alone as a Keras model on ``(embedding_dim,)`` inputs, same layer names as in
    the full model (input named ``embedding_input``)."""
    inputs = keras.Input(shape=(int(embedding_dim),), name="embedding_input")
    return keras.Model(inputs, build_head(inputs, num_classes, dense, dropout), name="head")


def copy_head_weights(head, full_model) -> list[str]:
    """Copy every weighted layer of ``head`` into the layer of the same name in ``full_model``;
    returns the copied names. A missing layer or a shape mismatch is a ModelError."""
    copied = []
    for layer in head.layers:
        if not layer.weights:
            continue
        try:
            target = full_model.get_layer(layer.name)
        except ValueError:
            raise ModelError(
                f"{full_model.name} has no layer {layer.name!r} for the head's weights",
                             "build the head and the model with the same dense=/dropout= options.",
            ) from None
        src = [tuple(w.shape) for w in layer.weights]
        dst = [tuple(w.shape) for w in target.weights]
        if src != dst:
            raise ModelError(f"head layer {layer.name!r} has shapes {src}, model has {dst}",
                             "build the head with the model's embedding size, classes and dense=.")
        target.set_weights(layer.get_weights())
        copied.append(layer.name)
    return copied


def embedding_layer(model):
    """The model's pooled ``embedding`` layer; a ModelError for models without one."""
    try:
        return model.get_layer(EMBEDDING)
    except ValueError:
        raise ModelError(f"model {model.name!r} has no {EMBEDDING!r} layer",
                         "feature extraction needs a zoo model with a pooled embedding layer.") from None


def feature_extractor(model):
    """input → ``embedding``: the pooled features (for embeddings, t-SNE, head-only training)."""
    embedding = embedding_layer(model)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, embedding.output, name=f"{model.name}_features")


def _split(model):
    """(backbone layers, head layers) around ``embedding``."""
    names = [layer.name for layer in model.layers]
    if EMBEDDING not in names:
        raise ModelError(f"model {model.name!r} has no {EMBEDDING!r} layer",
                         "freezing needs a zoo model (backbone → embedding → head).")
    cut = names.index(EMBEDDING)
    return model.layers[:cut], model.layers[cut:]


def freeze_backbone(model):
    """Freeze every layer before ``embedding``; the head stays trainable. Recompile afterwards."""
    backbone, head = _split(model)
    for layer in backbone:
        layer.trainable = False
    for layer in head:
        layer.trainable = True
    return model


_BLOCK = re.compile(r"^(conv\d+_block\d+|block\d+[a-z]?)_")


def unfreeze_top(model, n_blocks=None, from_layer=None):
    """Make the top of the backbone trainable for fine-tuning; everything below stays frozen.

    ``from_layer``: unfreeze from that layer name on; ``n_blocks``: unfreeze the last N
    residual / MBConv blocks (named ``conv5_block3_*``, ``block7a_*``) and the layers after
    them; neither: the whole backbone. BatchNormalization layers stay frozen (Keras then runs them
    in inference mode), so small fine-tuning batches do not wreck their ImageNet statistics.
    Recompile afterwards. Returns the model.
    """
    backbone, _ = _split(model)
    freeze_backbone(model)
    start = _unfreeze_start(backbone, n_blocks, from_layer)
    for layer in backbone[start:]:
        layer.trainable = not isinstance(layer, layers.BatchNormalization)
    return model


def _unfreeze_start(backbone, n_blocks, from_layer):
    names = [layer.name for layer in backbone]
    if from_layer is not None:
        if from_layer not in names:
            close = [n for n in names if from_layer in n][:3]
            raise ModelError(f"no backbone layer named {from_layer!r}",
                             f"e.g. {', '.join(close or names[-3:])}")
        return names.index(from_layer)
    if n_blocks is None:
        return 0
    blocks = []
    for name in names:
        m = _BLOCK.match(name)
        if m and (not blocks or blocks[-1] != m.group(1)):
            blocks.append(m.group(1))
    if not isinstance(n_blocks, int) or n_blocks < 1 or not blocks:
        raise ModelError(f"cannot unfreeze {n_blocks!r} blocks of this backbone",
                         f"n_blocks must be 1..{len(blocks)}; or pass from_layer=<name>.")
    first = blocks[-min(n_blocks, len(blocks))]
    return next(i for i, n in enumerate(names) if n.startswith(first + "_"))


def _keras_backbone(app, x, weights, **kwargs):
    """keras.applications backbone built on tensor ``x`` (flat graph); weights None,
    "imagenet" or a local file (``.h5``/``.weights.h5``, or a ``.keras`` model copied by name)."""
    from skinzoo.models import weights as W

    if weights in (None, "imagenet"):
        return W.keras_application(app, weights=weights, include_top=False, input_tensor=x,
                                   **kwargs)
    path = W.check_weights_path(weights)
    backbone = W.keras_application(app, weights=None, include_top=False, input_tensor=x, **kwargs)
    if path.name.endswith(".keras"):
        source = load_model_file(path)
        W.copy_weights_by_name(source, backbone, required=W.backbone_layer_names(backbone))
    else:
        W.load_weights_file(backbone, path)
    return backbone


def _check_head_options(dense, dropout):
    if not 0 <= dropout < 1:
        raise ModelError(f"dropout must be in [0, 1), got {dropout!r}", "e.g. dropout=0.5")


@register_model(
    "resnet50v2", family="resnet", default_size=224, default_batch=16, default_lr=1e-4,
    pretrained=True,
    description="ResNet50V2 (keras.applications, pre-activation), inputs scaled to [-1, 1].",
)
def resnet50v2(num_classes, input_shape, weights=None, *, dense=(256, 128), dropout=0.5,
               color_constancy=None):
    """keras.applications.ResNet50V2 backbone (last conv output: ``post_relu``) + the head."""
    _check_head_options(dense, dropout)
    inputs = image_input(input_shape)
    x = ImagePreprocess("symmetric", name="preprocess")(color_corrected(inputs, color_constancy))
    backbone = _keras_backbone("ResNet50V2", x, weights)
    outputs = build_head(backbone.output, num_classes, dense, dropout)
    return keras.Model(inputs, outputs, name="resnet50v2")


@register_model(
    "efficientnetb0", family="efficientnet", default_size=224, default_batch=16, default_lr=1e-4,
    pretrained=True,
    description="EfficientNetB0 (keras.applications); rescales raw pixels internally.",
)
def efficientnetb0(num_classes, input_shape, weights=None, *, dense=(256, 128), dropout=0.5,
                   color_constancy=None):
    """keras.applications.EfficientNetB0 backbone (last conv output: ``top_activation``) + head.

    The raw input goes straight in: the backbone starts with Rescaling(1/255) and an ImageNet
    Normalization. keras.applications adds an extra per-channel rescale only for
    ``weights="imagenet"``; for a local ImageNet file the same scale is folded into the
    Normalization variance so both paths compute the same function.
    """
    _check_head_options(dense, dropout)
    inputs = image_input(input_shape)
    backbone = _keras_backbone("EfficientNetB0", color_corrected(inputs, color_constancy), weights)
    if weights not in (None, "imagenet"):
        _fold_efficientnet_std(backbone)
    outputs = build_head(backbone.output, num_classes, dense, dropout)
    return keras.Model(inputs, outputs, name="efficientnetb0")


def _fold_efficientnet_std(backbone):
    """keras.applications' ImageNet EfficientNet computes ((x/255 - mean) / sqrt(var)) *
    (1/sqrt(std)); with a local file that last Rescaling is missing, and is equal to dividing by
    sqrt(var * std). Applied only when the loaded statistics are ImageNet's."""
    import numpy as np

    norm = next(layer for layer in backbone.layers if isinstance(layer, layers.Normalization))
    mean, var = (np.asarray(v) for v in (norm.adapt_mean, norm.adapt_variance))
    if np.allclose(mean.ravel(), (0.485, 0.456, 0.406), atol=1e-3) and np.allclose(
        var.ravel(), np.square(IMAGENET_STD_RGB), rtol=1e-2
    ):
        norm.adapt_variance.assign(var * np.reshape(IMAGENET_STD_RGB, var.shape))
        norm.finalize_state()  # Normalization caches mean/variance as tensors

