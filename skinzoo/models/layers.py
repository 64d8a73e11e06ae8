"""Custom layers shared by the zoo, registered for ``.keras`` saving (loads with safe_mode=True).

Only one is needed: input preprocessing that every model carries so that it takes raw RGB in
[0, 255] (the pipeline never normalises). It is a real layer, not a ``Lambda``, so saved models
load in safe mode.
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
