"""Training-time augmentation: small composable functions on one (H, W, 3) float32 image.

Every function takes the image (raw values in [0, 255]), a stateless seed (int tensor of shape [2])
and its strength, and uses only ``tf.random.stateless_*`` ops, so an image's augmentation depends
on nothing but its seed: the pipeline derives seeds from (run seed, epoch, element) and the same
``--seed`` therefore gives the same batches. Nothing here ever runs on validation or test data;
the pipeline applies :func:`augment_image` only when ``training=True``.

Dermoscopic images have no "up", so flips and 90° rotations/transposes are label-preserving and
are part of every preset.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

from skinzoo import runtime
from skinzoo.errors import UsageError

PRESETS = ("none", "light", "heavy", "dermoscopy")


@dataclass(frozen=True)
class Augment:
    """Which augmentations to apply and how strongly (0 / False = off)."""

    flip_h: bool = False  # left-right flip, p = 0.5
    flip_v: bool = False  # up-down flip, p = 0.5
    rot90: bool = False  # random multiple of 90° and optional transpose (square outputs only)
    rotate: float = 0.0  # max small rotation, degrees
    zoom: float = 0.0  # max relative zoom in or out (0.2 -> scale in [0.8, 1.2])
    shift: float = 0.0  # max shift, fraction of the side
    brightness: float = 0.0  # max relative brightness change (multiplicative)
    contrast: float = 0.0  # max relative contrast change
    saturation: float = 0.0  # max relative saturation change
    hue: float = 0.0  # max hue rotation, fraction of the colour wheel
    blur: float = 0.0  # probability of a gaussian blur
    blur_sigma: float = 1.0  # max blur sigma in output pixels
    noise: float = 0.0  # max std of additive gaussian noise on the 0-255 scale
    cutout: float = 0.0  # probability of one cutout rectangle (filled with the image mean)
    cutout_size: float = 0.25  # cutout side as a fraction of the image side

    @property
    def active(self) -> bool:
        """True when at least one augmentation is switched on."""
        switches = ("flip_h", "flip_v", "rot90", "rotate", "zoom", "shift", "brightness",
                    "contrast", "saturation", "hue", "blur", "noise", "cutout")
        return any(bool(getattr(self, name)) for name in switches)

    @classmethod
    def preset(cls, name: str) -> Augment:
        """The named preset: ``none``, ``light`` (geometry + mild colour) or ``heavy``."""
        if name == "none":
            return cls()
        if name == "light":
            return cls(flip_h=True, flip_v=True, rot90=True, brightness=0.1, contrast=0.1)
        if name == "heavy":
            return cls(flip_h=True, flip_v=True, rot90=True, rotate=30.0, zoom=0.15, shift=0.08,
                       brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, blur=0.2,
                       blur_sigma=1.0, noise=6.0, cutout=0.3, cutout_size=0.25)
        if name == "dermoscopy":
            # A lesion can be photographed at any angle, distance and framing, under any lamp and
            # camera: any-angle rotation, a random resized crop (zoom + shift), colour/brightness/
            # contrast/hue jitter for other devices, light blur for focus. No noise or cutout: they
            # hide the fine pigment texture that separates melanoma from naevus.
            return cls(flip_h=True, flip_v=True, rot90=True, rotate=180.0, zoom=0.2, shift=0.1,
                       brightness=0.2, contrast=0.2, saturation=0.2, hue=0.04, blur=0.15,
                       blur_sigma=0.8)
        raise UsageError(f"unknown augmentation preset {name!r}",
                         f"use one of {', '.join(PRESETS)} (optionally with overrides, "
                         "e.g. 'light,rotate=15,cutout=0.5')")


def resolve_augment(spec) -> Augment:
    """An :class:`Augment` from a preset name, ``'preset,field=value,...'``, a dict, None or one.

    >>> resolve_augment("light,rotate=15").rotate
    15.0
    """
    if spec is None or spec is False:
        return Augment()
    if isinstance(spec, Augment):
        return spec
    if isinstance(spec, dict):
        return _with_overrides(Augment(), spec)
    if not isinstance(spec, str):
        raise UsageError(f"augmentation must be a preset name or an Augment, not {type(spec).__name__}")
    name, *overrides = [part.strip() for part in spec.split(",") if part.strip()] or ["none"]
    if "=" in name:  # only overrides, starting from nothing
        name, overrides = "none", [name, *overrides]
    pairs = {}
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"cannot read augmentation override {item!r} in {spec!r}",
                             "write overrides as field=value, e.g. 'light,rotate=15'")
        key, value = item.split("=", 1)
        pairs[key.strip()] = value.strip()
    return _with_overrides(Augment.preset(name), pairs)


def _with_overrides(base: Augment, pairs: dict) -> Augment:
    kinds = {f.name: f.type for f in fields(Augment)}
    values = {}
    for key, value in pairs.items():
        if key not in kinds:
            raise UsageError(f"unknown augmentation setting {key!r}",
                             f"known settings: {', '.join(kinds)}")
        try:
            if kinds[key] in ("bool", bool):
                values[key] = value if isinstance(value, bool) else str(value).lower() in (
                    "1", "true", "yes", "on")
            else:
                values[key] = float(value)
        except ValueError:
            raise UsageError(f"augmentation setting {key}={value!r} is not a number",
                             f"e.g. {key}=0.2") from None
        if not isinstance(values[key], bool) and values[key] < 0:
            raise UsageError(f"augmentation setting {key}={value} is negative", "use 0 to switch it off")
    return dataclasses.replace(base, **values)


# --- the graph ---------------------------------------------------------------------------------

def augment_image(image, seed, aug: Augment):
    """Apply ``aug`` to one float32 (H, W, 3) image in [0, 255] with stateless seed ``seed``."""
    tf = runtime.tf()
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=10)
    if aug.flip_h:
        image = random_flip(image, seeds[0], axis=1)
    if aug.flip_v:
        image = random_flip(image, seeds[1], axis=0)
    if aug.rot90 and image.shape[0] is not None and image.shape[0] == image.shape[1]:
        image = random_dihedral(image, seeds[2])
    if aug.rotate or aug.zoom or aug.shift:
        image = random_affine(image, seeds[3], aug.rotate, aug.zoom, aug.shift)
    if aug.brightness or aug.contrast or aug.saturation or aug.hue:
        image = random_colour(image, seeds[4], aug.brightness, aug.contrast, aug.saturation, aug.hue)
    if aug.blur:
        image = random_blur(image, seeds[5], aug.blur, aug.blur_sigma)
    if aug.noise:
        image = random_noise(image, seeds[6], aug.noise)
    if aug.cutout:
        image = random_cutout(image, seeds[7], aug.cutout, aug.cutout_size)
    return tf.clip_by_value(image, 0.0, 255.0)


def _uniform(seed, low=0.0, high=1.0, shape=()):
    tf = runtime.tf()
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def random_flip(image, seed, axis: int):
    """Flip along ``axis`` (0 = up-down, 1 = left-right) with probability 0.5."""
    tf = runtime.tf()
    return tf.cond(_uniform(seed) < 0.5, lambda: tf.reverse(image, [axis]), lambda: image)


def random_dihedral(image, seed):
    """One of the 8 symmetries of the square: k×90° rotation, optionally transposed."""
    tf = runtime.tf()
    k = tf.random.stateless_uniform((), seed=seed, minval=0, maxval=4, dtype=tf.int32)
    image = tf.image.rot90(image, k)
    transpose = _uniform(tf.random.experimental.stateless_fold_in(seed, 1)) < 0.5
    return tf.cond(transpose, lambda: tf.transpose(image, [1, 0, 2]), lambda: image)


def random_affine(image, seed, max_degrees: float, max_zoom: float, max_shift: float):
    """Small rotation + zoom + shift in one bilinear resampling (reflect at the borders)."""
    tf = runtime.tf()
    s = tf.random.experimental.stateless_split(seed, num=4)
    angle = _uniform(s[0], -max_degrees, max_degrees) * (math.pi / 180.0)
    scale = _uniform(s[1], 1.0 - max_zoom, 1.0 + max_zoom)
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    tx = _uniform(s[2], -max_shift, max_shift) * w
    ty = _uniform(s[3], -max_shift, max_shift) * h
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    # The op maps each OUTPUT pixel to the INPUT point it samples: rotate about the centre,
    # divide by the zoom (scale > 1 samples a smaller region = zoom in), then shift.
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1, a3, a4 = cos, -sin, sin, cos
    a2 = cx - a0 * cx - a1 * cy + tx
    a5 = cy - a3 * cx - a4 * cy + ty
    zero = tf.zeros(())
    transform = tf.stack([a0, a1, a2, a3, a4, a5, zero, zero])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=shape[:2], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")
    return tf.ensure_shape(out[0], image.shape)


def random_colour(image, seed, brightness: float, contrast: float, saturation: float, hue: float):
    """Brightness (×), contrast, saturation and hue jitter; works in [0, 1] where TF needs it."""
    tf = runtime.tf()
    s = tf.random.experimental.stateless_split(seed, num=4)
    if brightness:
        image = image * _uniform(s[0], 1.0 - brightness, 1.0 + brightness)
    if contrast:
        image = tf.image.adjust_contrast(image, _uniform(s[1], 1.0 - contrast, 1.0 + contrast))
    if saturation or hue:
        unit = tf.clip_by_value(image / 255.0, 0.0, 1.0)  # rgb_to_hsv expects [0, 1]
        if saturation:
            unit = tf.image.adjust_saturation(unit, _uniform(s[2], 1.0 - saturation, 1.0 + saturation))
        if hue:
            unit = tf.image.adjust_hue(unit, _uniform(s[3], -hue, hue))
        image = unit * 255.0
    return image


def random_blur(image, seed, probability: float, max_sigma: float):
    """Gaussian blur with sigma in [0.2, max_sigma] (separable depthwise conv), p = probability."""
    tf = runtime.tf()
    s = tf.random.experimental.stateless_split(seed, num=2)
    radius = max(1, int(math.ceil(3 * max_sigma)))  # static kernel size, sigma varies inside

    def blur():
        sigma = _uniform(s[1], min(0.2, max_sigma), max_sigma)
        x = tf.range(-radius, radius + 1, dtype=tf.float32)
        k = tf.exp(-(x**2) / (2.0 * sigma**2))
        k = k / tf.reduce_sum(k)
        kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1])
        ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1])
        padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
        out = tf.nn.depthwise_conv2d(padded, kx, [1, 1, 1, 1], "VALID")
        out = tf.nn.depthwise_conv2d(out, ky, [1, 1, 1, 1], "VALID")
        return out[0]

    return tf.cond(_uniform(s[0]) < probability, blur, lambda: image)


def random_noise(image, seed, max_std: float):
    """Additive gaussian noise with std drawn from [0, max_std] (0-255 scale)."""
    tf = runtime.tf()
    s = tf.random.experimental.stateless_split(seed, num=2)
    std = _uniform(s[0], 0.0, max_std)
    return image + std * tf.random.stateless_normal(tf.shape(image), seed=s[1])


def random_cutout(image, seed, probability: float, size: float):
    """One square of side ``size`` × side at a random centre, filled with the image mean colour.

    The mean (not black) because dermoscopy images often have black vignette corners, which a
    black square would imitate.
    """
    tf = runtime.tf()
    s = tf.random.experimental.stateless_split(seed, num=3)
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    half_h, half_w = size * h / 2.0, size * w / 2.0
    cy, cx = _uniform(s[1], 0.0, h), _uniform(s[2], 0.0, w)
    ys = tf.range(h)[:, None]
    xs = tf.range(w)[None, :]
    inside = (tf.abs(ys + 0.5 - cy) < half_h) & (tf.abs(xs + 0.5 - cx) < half_w)
    mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
    cut = tf.where(inside[..., None], mean, image)
    return tf.cond(_uniform(s[0]) < probability, lambda: cut, lambda: image)
