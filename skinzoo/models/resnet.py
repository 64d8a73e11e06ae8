"""ResNets from primitive layers (Conv2D, BatchNormalization, ReLU, pooling, Add), Functional API.

One generic builder, :func:`resnet`, with the depth picking the block type (basic for 18/34,
bottleneck for 50/101/152/200) and ``variant`` picking the layout:

============  ==========================================================================
variant       layout
============  ==========================================================================
``"v1"``      He et al. 2015 as in keras.applications: bottleneck stride in the first 1x1,
              conv biases everywhere, caffe preprocessing. Depths 50/101/152 are
              weight-compatible with keras.applications.ResNet50/101/152 (same layer names
              and parameter counts). Depths 18/34 follow torchvision (no conv bias, stride in
              the first 3x3, torch preprocessing).
``"b"``       ResNet-B (He et al. 2019, "Bag of Tricks"): stride in the 3x3, no conv bias.
``"c"``       ResNet-C = B + deep stem (three 3x3 convs 32/32/64 instead of one 7x7).
``"d"``       ResNet-D = C + average-pool shortcut downsampling (2x2 avg pool then a 1x1
              stride-1 conv); the layout of timm's ``resnet50d``.
============  ==========================================================================

Layer names follow keras.applications (``conv1_conv``, ``conv4_block3_2_bn``, ``conv5_block3_out``)
so weights map by name, the last conv block (``conv5_block<N>_out``) is addressable for Grad-CAM,
and names stay stable across variants. The head is :func:`skinzoo.models.transfer.build_head`
(``embedding`` = global average pool). ``width`` scales every channel count and ``stem="small"``
replaces the 7x7/2 conv + max-pool by one 3x3/1 conv, for 64–128 px inputs on a CPU.
"""

from __future__ import annotations

from skinzoo.errors import ModelError
from skinzoo.models.layers import (
    ImagePreprocess,
    color_corrected,
    drop_path_rates,
    image_input,
    keras,
    residual_branch,
)
from skinzoo.models.registry import register_model
from skinzoo.models.transfer import build_head

layers = keras.layers

# depth -> (block type, blocks per stage conv2..conv5)
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
VARIANTS = ("v1", "b", "c", "d")
STEMS = ("imagenet", "small")
BN_EPSILON = 1.001e-5  # keras.applications' value; keeps outputs equal after a weight transfer


def resnet(num_classes, input_shape, weights=None, *, depth=50, variant="v1", width=1.0,
           stem="imagenet", dense=(256, 128), dropout=0.5, bn_momentum=0.9,
           zero_init_residual=False, preprocess=None, name=None, color_constancy=None, drop_path=0.0):
    """Build a ResNet (see the module docstring for the layouts).

    ``weights``: None, "imagenet" or a local file — v1 depths 50/101/152 only, loaded through
    :mod:`skinzoo.models.weights`. ``preprocess``: override the input mode ("caffe" for the v1
    bottleneck nets, "torch" otherwise). ``zero_init_residual`` starts each block's last BN
    gamma at zero (identity blocks at init; helps from-scratch training). ``drop_path``: stochastic
    depth, each block's residual branch dropped per sample at a rate rising linearly to
    ``drop_path`` at the last block (0 = off: no layer, the same layer list as without it).
    """
    block_type, stages = _check_resnet_options(depth, variant, width, stem)
    if not 0.0 <= drop_path < 1.0:
        raise ModelError(f"drop_path must be in [0, 1), got {drop_path!r}", "e.g. drop_path=0.1")
    rates = iter(drop_path_rates(drop_path, sum(stages)))
    bottleneck = block_type == "bottleneck"
    keras_layout = variant == "v1" and bottleneck
    opts = {
        "use_bias": keras_layout,
        "stride_in_1x1": keras_layout,
        "avg_down": variant == "d",
        "momentum": bn_momentum,
        "zero_init": zero_init_residual,
    }
    mode = preprocess or ("caffe" if keras_layout else "torch")
    inputs = image_input(input_shape)
    x = ImagePreprocess(mode, name="preprocess")(color_corrected(inputs, color_constancy))
    x = resnet_stem(x, _scaled(64, width), deep=variant in ("c", "d"), small=stem == "small",
                    use_bias=keras_layout, momentum=bn_momentum)
    block = bottleneck_block if bottleneck else basic_block
    for i, n_blocks in enumerate(stages):
        filters = _scaled(64 * 2**i, width)
        for j in range(n_blocks):
            stride = 2 if (j == 0 and i > 0) else 1
            x = block(x, filters, stride=stride, name=f"conv{i + 2}_block{j + 1}", drop_path=next(rates),
                      **opts)
    outputs = build_head(x, num_classes, dense=dense, dropout=dropout)
    model = keras.Model(inputs, outputs, name=name or f"resnet{depth}{'' if variant == 'v1' else variant}")
    if weights is not None:
        from skinzoo.models.weights import load_resnet_weights

        load_resnet_weights(model, depth, weights)
    return model


def _check_resnet_options(depth, variant, width, stem):
    if depth not in DEPTHS:
        raise ModelError(f"ResNet depth {depth!r} is not supported",
                         f"use one of {', '.join(map(str, DEPTHS))}.")
    if variant not in VARIANTS:
        raise ModelError(f"ResNet variant {variant!r} is not supported",
                         f"use one of {', '.join(VARIANTS)}.")
    if stem not in STEMS:
        raise ModelError(f"ResNet stem {stem!r} is not supported", f"use one of {', '.join(STEMS)}.")
    if not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise ModelError(f"ResNet width multiplier must be in (0, 4], got {width!r}",
                         "e.g. width=0.25 for a narrow CPU net.")
    return DEPTHS[depth]


def _scaled(channels, width):
    """Channels times the width multiplier, at least 8 and a multiple of 8 below 1.0 widths."""
    if width == 1.0:
        return channels
    return max(8, int(round(channels * width / 8)) * 8)


def _bn(x, name, momentum, zero=False):
    return layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=momentum, name=name,
        gamma_initializer="zeros" if zero else "ones",
    )(x)


def _conv(x, filters, kernel, stride, name, use_bias):
    """Conv with torch-style symmetric padding for strided kernels (SAME would pad 0/1 on even
    inputs), plain SAME for stride 1 as keras.applications does."""
    if kernel > 1 and stride > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=name.replace("_conv", "_pad"))(x)
        return layers.Conv2D(filters, kernel, strides=stride, use_bias=use_bias, name=name)(x)
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=use_bias,
                         name=name)(x)


def resnet_stem(x, filters, *, deep, small, use_bias, momentum):
    """ImageNet stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool; /4), the ResNet-C deep stem
    (3x3/2 32, 3x3 32, 3x3 64 then the max-pool) or the small stem (one 3x3/1 conv, no pool)."""
    if small:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=use_bias, name="conv1_conv")(x)
        x = _bn(x, "conv1_bn", momentum)
        return layers.ReLU(name="conv1_relu")(x)
    if deep:
        for i, (n, stride) in enumerate([(filters // 2, 2), (filters // 2, 1), (filters, 1)], 1):
            x = _conv(x, n, 3, stride, f"conv1_{i}_conv", use_bias)
            x = _bn(x, f"conv1_{i}_bn", momentum)
            x = layers.ReLU(name=f"conv1_{i}_relu")(x)
    else:
        x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
        x = layers.Conv2D(filters, 7, strides=2, use_bias=use_bias, name="conv1_conv")(x)
        x = _bn(x, "conv1_bn", momentum)
        x = layers.ReLU(name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def shortcut(x, filters, *, stride, name, use_bias, avg_down, momentum):
    """Identity when shapes match, else a 1x1 projection + BN (strided, or after a 2x2 average
    pool for ResNet-D so no activation is skipped)."""
    if stride == 1 and x.shape[-1] == filters:
        return x
    if avg_down and stride > 1:
        x = layers.AveragePooling2D(stride, strides=stride, padding="same", name=f"{name}_0_pool")(x)
        stride = 1
    x = layers.Conv2D(filters, 1, strides=stride, use_bias=use_bias, name=f"{name}_0_conv")(x)
    return _bn(x, f"{name}_0_bn", momentum)


def bottleneck_block(x, filters, *, stride, name, use_bias, stride_in_1x1, avg_down, momentum,
                     zero_init, drop_path=0.0):
    """1x1 (filters) → 3x3 (filters) → 1x1 (4·filters), BN after each, add, ReLU.

    ``stride_in_1x1`` puts the stride in the first 1x1 (keras.applications / Caffe v1) instead
    of the 3x3 (ResNet-B and later).
    """
    short = shortcut(x, 4 * filters, stride=stride, name=name, use_bias=use_bias,
                     avg_down=avg_down, momentum=momentum)
    s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
    x = layers.Conv2D(filters, 1, strides=s1, use_bias=use_bias, name=f"{name}_1_conv")(x)
    x = _bn(x, f"{name}_1_bn", momentum)
    x = layers.ReLU(name=f"{name}_1_relu")(x)
    x = _conv(x, filters, 3, s3, f"{name}_2_conv", use_bias)
    x = _bn(x, f"{name}_2_bn", momentum)
    x = layers.ReLU(name=f"{name}_2_relu")(x)
    x = layers.Conv2D(4 * filters, 1, use_bias=use_bias, name=f"{name}_3_conv")(x)
    x = _bn(x, f"{name}_3_bn", momentum, zero=zero_init)
    x = residual_branch(x, drop_path, name=f"{name}_drop")
    x = layers.Add(name=f"{name}_add")([short, x])
    return layers.ReLU(name=f"{name}_out")(x)


def basic_block(x, filters, *, stride, name, use_bias, stride_in_1x1, avg_down, momentum,
                zero_init, drop_path=0.0):
    """3x3 (stride) → 3x3, BN after each, add, ReLU (ResNet-18/34). ``stride_in_1x1`` is
    meaningless here and ignored."""
    del stride_in_1x1
    short = shortcut(x, filters, stride=stride, name=name, use_bias=use_bias, avg_down=avg_down,
                     momentum=momentum)
    x = _conv(x, filters, 3, stride, f"{name}_1_conv", use_bias)
    x = _bn(x, f"{name}_1_bn", momentum)
    x = layers.ReLU(name=f"{name}_1_relu")(x)
    x = _conv(x, filters, 3, 1, f"{name}_2_conv", use_bias)
    x = _bn(x, f"{name}_2_bn", momentum, zero=zero_init)
    x = residual_branch(x, drop_path, name=f"{name}_drop")
    x = layers.Add(name=f"{name}_add")([short, x])
    return layers.ReLU(name=f"{name}_out")(x)


def _register(name, depth, variant="v1", *, pretrained=False, size=224, batch, lr, desc, **extra):
    def build(num_classes, input_shape, weights=None, *, width=1.0, stem="imagenet",
              dense=(256, 128), dropout=0.5, bn_momentum=0.9, zero_init_residual=False,
              preprocess=None, color_constancy=None, drop_path=0.0):
        return resnet(num_classes, input_shape, weights, depth=depth, variant=variant,
                      width=width, stem=stem, dense=dense, dropout=dropout,
                      bn_momentum=bn_momentum, zero_init_residual=zero_init_residual,
                      preprocess=preprocess, name=name, color_constancy=color_constancy,
                      drop_path=drop_path)

    build.__name__ = name
    build.__doc__ = f"{desc} (see skinzoo.models.resnet for the layout)."
    register_model(name, family="resnet", default_size=size, default_batch=batch, default_lr=lr,
                   pretrained=pretrained, description=desc, **extra)(build)
    return build


resnet18 = _register("resnet18", 18, batch=32, lr=1e-3,
                     desc="ResNet-18, basic blocks, torchvision layout (11.7M params).")
resnet34 = _register("resnet34", 34, batch=32, lr=1e-3,
                     desc="ResNet-34, basic blocks, torchvision layout (21.8M params).")
resnet50 = _register("resnet50", 50, pretrained=True, batch=16, lr=1e-4,
                     desc="ResNet-50 v1, keras.applications layout; ImageNet weights.")
resnet101 = _register("resnet101", 101, pretrained=True, batch=16, lr=1e-4,
                      desc="ResNet-101 v1, keras.applications layout; ImageNet weights.")
resnet152 = _register("resnet152", 152, pretrained=True, batch=16, lr=1e-4,
                      desc="ResNet-152 v1, keras.applications layout; ImageNet weights.")
resnet200 = _register("resnet200", 200, batch=8, lr=1e-4,
                      desc="ResNet-200 v1 (bottleneck, Keras-style stride in the 1x1).")
resnet50d = _register("resnet50d", 50, "d", batch=16, lr=1e-3,
                      desc="ResNet-50-D: stride in 3x3, deep stem, avg-pool shortcut (timm layout).")
resnet152d = _register("resnet152d", 152, "d", batch=16, lr=1e-4,
                       desc="ResNet-152-D: stride in 3x3, deep stem, avg-pool shortcut.")
resnet18_small = _register(
    "resnet18_small", 18, size=64, batch=32, lr=2e-3,
    desc="ResNet-18 at width 0.25 with a 3x3 stem for 64-128 px on a CPU (0.7M params).",
    width=0.25, stem="small", zero_init_residual=True,
)
