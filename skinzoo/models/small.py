"""Small networks that train from scratch on a CPU: baselines and the default demo model.

All take raw RGB in [0, 255] (an ``ImagePreprocess("unit")`` layer rescales to [0, 1]), any
number of classes, and end in the zoo's ``predictions`` layer.
"""

from __future__ import annotations

from skinzoo.models.layers import (
    ImagePreprocess,
    color_corrected,
    drop_path_rates,
    image_input,
    keras,
    predictions,
    residual_branch,
)
from skinzoo.models.registry import register_model

layers = keras.layers


@register_model(
    "compact_resnet", family="resnet", default_size=64, default_batch=32, default_lr=2e-3,
    description="Compact residual net (BN, 3 stages, ~0.7M params); the CPU default.",
)
def compact_resnet(num_classes, input_shape, weights=None, *, width=32, blocks=(2, 2, 2),
                   dropout=0.2, stem_stride=1, drop_path=0.0, avg_down=False,
                   color_constancy=None):
    """A narrow pre-activation-free ResNet for 64–128 px inputs on a CPU.

    Stem: 3x3 conv (``stem_stride``) + BN + ReLU. Then ``len(blocks)`` stages of basic residual
    blocks with ``width * 2**i`` channels, each stage halving the resolution in its first block
    (projection shortcut: strided 1x1 conv + BN, or with ``avg_down`` a 2x2 average pool then a
    1x1 conv, ResNet-D, so the shortcut sees every pixel). The last BN of each block starts at
    zero (Goyal et al.: every block is the identity at init), which lets it train with a high
    learning rate from the first epoch. ``drop_path``: stochastic depth, the rate rising linearly
    to this value at the last block. Global average pooling (``embedding``), dropout, output.
    """
    inputs = image_input(input_shape)
    x = ImagePreprocess("unit", name="preprocess")(color_corrected(inputs, color_constancy))
    x = layers.Conv2D(width, 3, strides=stem_stride, padding="same", use_bias=False,
                      name="stem_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    rates = iter(drop_path_rates(drop_path, sum(blocks)))
    for stage, n_blocks in enumerate(blocks):
        filters = width * 2**stage
        for block in range(n_blocks):
            x = _basic_block(x, filters, stride=2 if block == 0 else 1, drop_path=next(rates),
                             avg_down=avg_down, name=f"stage{stage + 1}_block{block + 1}")
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    return keras.Model(inputs, predictions(x, num_classes), name="compact_resnet")


# The same net at twice the input side for the same cost: a stride-2 stem brings 128 px to the
# 64x64 grid where the 64 px net's stem works, so the stages cost what they did, while the stem
# (learned, not bilinear, downsampling) sees the fine pigment network that 64 px averages away.
# ResNet-D shortcuts and stochastic depth 0.1 are its regularisers (#12 item 6).
register_model(
    "compact_resnet_128", family="resnet", default_size=128, default_batch=32, default_lr=2e-3,
    description="compact_resnet at 128 px: stride-2 stem, ResNet-D shortcuts, stochastic depth.",
    stem_stride=2, avg_down=True, drop_path=0.1,
)(compact_resnet)


def _basic_block(x, filters, stride, name, drop_path=0.0, avg_down=False):
    """conv3x3-BN-ReLU-conv3x3-BN (+ shortcut) → ReLU; the second BN's gamma starts at zero."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        if avg_down and stride != 1:
            shortcut = layers.AveragePooling2D(stride, padding="same", name=f"{name}_0_pool")(x)
        shortcut = layers.Conv2D(filters, 1, strides=1 if avg_down else stride, use_bias=False,
                                 name=f"{name}_0_conv")(shortcut)
        shortcut = layers.BatchNormalization(momentum=0.9, name=f"{name}_0_bn")(shortcut)
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_1_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_1_bn")(x)
    x = layers.ReLU(name=f"{name}_1_relu")(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, gamma_initializer="zeros", name=f"{name}_2_bn")(x)
    x = residual_branch(x, drop_path, name=f"{name}_drop")
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


@register_model(
    "custom_cnn", family="cnn", default_size=64, default_batch=32, default_lr=1e-3,
    description="The common notebook baseline: conv 32/64/128 + dense 256 + dropout.",
)
def custom_cnn(num_classes, input_shape, weights=None, *, filters=(32, 64, 128), dense=256,
               dropout=0.5, color_constancy=None):
    """Conv(3x3, ReLU) + 2x2 max-pool per entry of ``filters``, flatten, dense, dropout, output.

    Flatten (not pooling) as in the Kaggle HAM10000 notebooks, so parameters grow with the input
    size (2.2M at 64 px).
    """
    inputs = image_input(input_shape)
    x = _conv_pool_flatten(color_corrected(inputs, color_constancy), filters, kernel=3)
    x = layers.Dense(dense, activation="relu", name="fc1")(x)
    if dropout:
        x = layers.Dropout(dropout, name="fc1_dropout")(x)
    return keras.Model(inputs, predictions(x, num_classes), name="custom_cnn")


def _conv_pool_flatten(inputs, filters, kernel: int):
    """Rescale to [0, 1], then Conv(kernel, ReLU) + 2x2 max-pool per entry of ``filters``, then
    flatten: the notebook CNNs' feature part (layer names conv{i}, pool{i}, flatten)."""
    x = ImagePreprocess("unit", name="preprocess")(inputs)
    for i, n in enumerate(filters, start=1):
        x = layers.Conv2D(n, kernel, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    return layers.Flatten(name="flatten")(x)


@register_model(
    "simple_cnn", family="cnn", default_size=64, default_batch=32, default_lr=1e-3,
    description="SimpleCNN: 2 conv + 3 fully connected layers.",
)
def simple_cnn(num_classes, input_shape, weights=None, *, filters=(32, 64), dense=(128, 64),
               color_constancy=None):
    """Two conv(5x5, ReLU) + max-pool layers, flatten, two dense layers, output (3 FC in all)."""
    inputs = image_input(input_shape)
    x = _conv_pool_flatten(color_corrected(inputs, color_constancy), filters, kernel=5)
    for i, n in enumerate(dense, start=1):
        x = layers.Dense(n, activation="relu", name=f"fc{i}")(x)
    return keras.Model(inputs, predictions(x, num_classes), name="simple_cnn")


@register_model(
    "alexnet", family="alexnet", default_size=227, default_batch=32, default_lr=1e-4,
    description="AlexNet (Krizhevsky 2012): 5 conv + 3 FC with dropout, 227 px.",
)
def alexnet(num_classes, input_shape, weights=None, *, fc=(4096, 4096), dropout=0.5,
            batch_norm=True, color_constancy=None):
    """AlexNet, single-tower: conv 96(11x11/4) → pool → 256(5x5) → pool → 384 → 384 → 256 → pool
    → FC 4096 → FC 4096 → output, dropout before each hidden FC.

    BatchNormalization replaces the original local response normalisation (``batch_norm``);
    inputs below 67 px shrink to nothing and raise ModelError.
    """
    inputs = image_input(input_shape)
    x = ImagePreprocess("unit", name="preprocess")(color_corrected(inputs, color_constancy))
    specs = [(96, 11, 4, True), (256, 5, 1, True), (384, 3, 1, False), (384, 3, 1, False),
             (256, 3, 1, True)]
    for i, (n, k, s, pool) in enumerate(specs, start=1):
        padding = "valid" if i == 1 else "same"
        x = layers.Conv2D(n, k, strides=s, padding=padding, name=f"conv{i}",
                          use_bias=not batch_norm)(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"conv{i}_bn")(x)
        x = layers.ReLU(name=f"conv{i}_relu")(x)
        if pool:
            x = layers.MaxPooling2D(3, strides=2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, n in enumerate(fc, start=1):
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
        x = layers.Dense(n, activation="relu", name=f"fc{i}")(x)
    return keras.Model(inputs, predictions(x, num_classes), name="alexnet")
