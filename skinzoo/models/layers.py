"""Custom layers shared by the zoo, registered for ``.keras`` saving (loads with safe_mode=True).

Input preprocessing that every model carries so that it takes raw RGB in [0, 255] (the pipeline
never normalises), colour constancy, and stochastic depth for the residual nets. They are real
layers, not ``Lambda``, so saved models load in safe mode.
"""

from __future__ import annotations

from skinzoo.runtime import tf as _tf

_tf()
import keras  # noqa: E402
from keras import ops  # noqa: E402

# keras.applications' "caffe" mode: BGR means of ImageNet, on the 0-255 scale.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# "torch" mode: RGB means / stds of ImageNet on the 0-1 scale.
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
PREPROCESS_MODES = ("unit", "symmetric", "caffe", "torch")


@keras.saving.register_keras_serializable(package="skinzoo")
class ImagePreprocess(keras.layers.Layer):
    """Map raw RGB in [0, 255] to what a network expects.

    Modes: ``unit`` → [0, 1]; ``symmetric`` → [-1, 1] (ResNetV2, Inception style); ``caffe`` →
    BGR minus the ImageNet mean, unscaled (keras.applications ResNet50/101/152 ``preprocess_input``);
    ``torch`` → (x/255 - mean) / std per RGB channel (torchvision-trained layouts).

    Computed in float32 whatever the global dtype policy: in bfloat16 the mean subtraction of
    values near 255 would lose whole units.
    """

    def __init__(self, mode="unit", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"ImagePreprocess mode must be one of {PREPROCESS_MODES}, not {mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "symmetric":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(CAFFE_MEAN_BGR, "float32")
        mean = ops.convert_to_tensor(TORCH_MEAN_RGB, "float32")
        std = ops.convert_to_tensor(TORCH_STD_RGB, "float32")
        return (x / 255.0 - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="skinzoo")
class ColorConstancy(keras.layers.Layer):
    """Shades of Gray colour constancy (Finlayson & Trezzi 2004) on raw RGB in [0, 255].

    The illuminant of each image is estimated per channel as the Minkowski p-mean of its pixels,
    ``e_c = mean(x_c ** p) ** (1/p)``; each channel is then scaled by ``mean(e) / e_c`` so the
    estimated illuminant becomes neutral grey at the image's own brightness. ``power=1`` is
    gray-world; 6 is what the leading ISIC 2018/2019 entries used. Output stays raw RGB in [0, 255],
    so every model's own preprocessing follows unchanged.

    Why a layer: dermoscopes and clinics differ in colour cast, and a model trained on one
    clinic's colours meets another's at test time. Inside the model, ``predict``, ``evaluate``,
    ``gradcam`` and exported models apply it with no extra step, and training and inference can
    never disagree about it. Computed in float32 whatever the dtype policy.
    """

    def __init__(self, power=6.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        power = float(power)
        if not 1.0 <= power <= 20.0:
            raise ValueError(f"ColorConstancy power must be in [1, 20], not {power}")
        self.power = power

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        unit = ops.clip(x / 255.0, 0.0, 1.0)
        illuminant = ops.power(ops.mean(ops.power(unit, self.power), axis=(-3, -2), keepdims=True),
                               1.0 / self.power)
        gain = ops.mean(illuminant, axis=-1, keepdims=True) / (illuminant + 1e-6)
        return ops.clip(x * gain, 0.0, 255.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "power": self.power}


@keras.saving.register_keras_serializable(package="skinzoo")
class StochasticDepth(keras.layers.Layer):
    """Drop a residual branch for whole samples during training (Huang et al. 2016).

    Each sample's branch output is kept with probability ``1 - rate`` and then scaled by
    ``1 / (1 - rate)``, so its expected value is unchanged and inference (where the layer is the
    identity) needs no rescaling. Why: a small net trained for a few CPU epochs on 7,000 images
    overfits; dropping whole blocks trains an implicit ensemble of shallower nets, which is the
    regulariser that keeps working when dropout on the features alone does not.

    Draws come from the layer's own seed generator (seeded from ``seed``), so a seeded run drops
    the same blocks in the same steps.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"StochasticDepth rate must be in [0, 1), not {rate}")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        keep = ops.cast(keras.random.uniform(shape, seed=self.seed_generator) >= self.rate,
                        inputs.dtype)
        return inputs * keep / ops.cast(1.0 - self.rate, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def drop_path_rates(max_rate: float, n_blocks: int) -> list[float]:
    """Per-block stochastic-depth rates rising linearly to ``max_rate`` at the last block (the
    "linear decay" rule of Huang et al.: early blocks, which every later one builds on, are
    dropped least)."""
    if n_blocks <= 1:
        return [float(max_rate)] * n_blocks
    return [max_rate * i / (n_blocks - 1) for i in range(n_blocks)]


def residual_branch(x, rate: float, name: str):
    """``x`` through a :class:`StochasticDepth` layer named ``name`` (no layer when ``rate`` is 0,
    so models built without stochastic depth keep their old layer list)."""
    if not rate:
        return x
    return StochasticDepth(rate, name=name)(x)


def color_corrected(inputs, color_constancy=None):
    """``inputs`` after a :class:`ColorConstancy` layer of Minkowski power ``color_constancy``
    (None = no layer). Every zoo builder starts with this, so it is one option for every model."""
    if color_constancy is None:
        return inputs
    return ColorConstancy(color_constancy, name="color_constancy")(inputs)


def predictions(x, num_classes: int, name: str = "predictions"):
    """The zoo's output layer: float32 even under a mixed policy (losses and calibration need
    full precision); one sigmoid unit for K == 2, softmax over K otherwise."""
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name=name, dtype="float32")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name=name, dtype="float32")(x)


def image_input(input_shape, name: str = "image"):
    """The model input: raw RGB float32 in [0, 255]."""
    return keras.Input(shape=tuple(input_shape), name=name, dtype="float32")
