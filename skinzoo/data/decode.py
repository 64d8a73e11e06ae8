"""Encoded image bytes → uint8 image at the target size: decode, resize, centre-crop.

Two ways to run the same pixels:

- per image (``plan=None``): the graph decides for each image, from its bytes, whether it is a JPEG,
  which DCT-domain downscale ratio libjpeg may use, and whether the resize shrinks (area) or
  enlarges (bilinear). Every decision is a control-flow op, and in a tf.data map function each one
  costs ~0.02-0.05 ms per image and more start-up (its branches are functions to instantiate).
  Exported serving graphs (skinzoo.deploy.export) run this way: they see bytes, not files.
- per plan (a :data:`DecodePlan` read from the file's JPEG header beforehand, :func:`decode_plan`):
  the same decisions are made once, in Python, for a whole stream of images that share them, and
  the graph is straight-line. Measured on 500 HAM10000 files at 128 px: 1.2x less CPU per image,
  iterator start-up 21 vs 35 ms, 1.34x the images/s (bench/README.md "pipeline"). The output is
  bit-identical (tests/data/test_decode.py), so caches and trained models do not care which ran.
"""

from __future__ import annotations

import struct

from skinzoo import runtime

RESIZE_MODES = ("crop", "pad", "squash")
JPEG_RATIOS = (8, 4, 2, 1)  # libjpeg's DCT-domain downscales, largest first
# (JPEG DCT ratio, the crop-mode resize shrinks): what the per-image graph would decide for a file
DecodePlan = tuple[int, bool]

# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic): they
# carry the image size. C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field
_MAX_HEADER_BYTES = 1 << 24  # a frame header further in than 16 MB: not a layout we follow


# --- plans, from file headers ----------------------------------------------------------------------

def jpeg_size(path) -> tuple[int, int] | None:
    """(height, width) from a JPEG file's frame header, reading only the segments before it (a
    few hundred bytes to a few tens of KB with EXIF/ICC data); None when the file is not a JPEG
    or its layout is anything this small parser does not follow (the per-image path then decodes
    it, and reports it if it is broken)."""
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
            if data[:3] != b"\xff\xd8\xff":  # what tf.io.is_jpeg checks
                return None
            pos = 2
            while pos < _MAX_HEADER_BYTES:
                if pos + 9 > len(data):  # data always holds the file from offset 0
                    more = f.read(max(65536, pos + 9 - len(data)))
                    if not more:
                        return None
                    data += more
                    continue
                if data[pos] != 0xFF:
                    return None
                marker = data[pos + 1]
                if marker == 0xFF:  # fill byte before a marker
                    pos += 1
                elif marker in _SOF_MARKERS:
                    height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
                    return (height, width) if height and width else None  # 0: size comes later (DNL)
                elif marker in _STANDALONE_MARKERS:
                    pos += 2
                elif marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI or a scan before any frame
                    return None
                else:
                    (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
                    if length < 2:
                        return None
                    pos += 2 + length
    except OSError:
        return None
    return None


def jpeg_ratio(height: int, width: int, target_hw) -> int:
    """The largest DCT-domain downscale that keeps the decoded image at least the target size in
    both dimensions (so the resize after it only ever shrinks when the image is larger)."""
    room = min(height // target_hw[0], width // target_hw[1])
    return next(r for r in JPEG_RATIOS if r <= max(room, 1))


def decode_plan(path, target_hw) -> DecodePlan | None:
    """The per-image graph's decisions for one file, from its header; None for a file that is not
    a JPEG (PNG, BMP, GIF decode per image) or whose header :func:`jpeg_size` does not follow."""
    size = jpeg_size(path)
    if size is None:
        return None
    height, width = size
    ratio = jpeg_ratio(height, width, target_hw)
    # libjpeg's scaled output is ceil(side / ratio); crop mode shrinks exactly when the decoded
    # image is larger than the target in both dimensions (scale = max(th/h, tw/w) < 1).
    decoded_h, decoded_w = -(-height // ratio), -(-width // ratio)
    return ratio, (decoded_h > target_hw[0] and decoded_w > target_hw[1])


# --- decode + resize ------------------------------------------------------------------------------

def _decode(contents, target_hw):
    """uint8 (h, w, 3) from JPEG/PNG/BMP/GIF bytes; large JPEGs decode at 1/2, 1/4 or 1/8 scale.

    libjpeg's DCT-domain downscaling is cheap and good quality; the ratio is chosen so the decoded
    image is still at least the target size in both dimensions, so the following resize only ever
    shrinks, whatever the resize mode. One ``switch_case`` picks the ratio where ``tf.case`` built
    a chain of three nested conds, each a function call per image (measured: ~1.04x less CPU per
    image, a small but consistent gain; bench/README.md "pipeline").
    """
    tf = runtime.tf()
    th, tw = target_hw

    def jpeg():
        shape = tf.image.extract_jpeg_shape(contents)
        room = tf.minimum(shape[0] // th, shape[1] // tw)  # largest safe integer downscale
        index = tf.reduce_sum(tf.cast(room < tf.constant(JPEG_RATIOS[:-1]), tf.int32))
        return tf.switch_case(index, [lambda r=r: tf.io.decode_jpeg(contents, channels=3, ratio=r)
                                      for r in JPEG_RATIOS])

    def other():
        return tf.io.decode_image(contents, channels=3, expand_animations=False, dtype=tf.uint8)

    image = tf.cond(tf.io.is_jpeg(contents), jpeg, other)
    return tf.ensure_shape(image, [None, None, 3])


def _centre_crop_resized(image, target_hw, shrinking: bool | None = None):
    """float32 (th, tw, 3) from a uint8 image: ``crop`` mode, the same pixels as ``_resize``.

    The crop is a slice rather than ``resize_with_crop_or_pad``'s dozen shape ops (1.1-1.6x less
    CPU per image than ``_resize``). The image is cast to float32 *before* the resize kernels:
    TensorFlow's bilinear kernel on uint8 input costs 1.5x the CPU of the same kernel on float32
    (200x150 -> 224 px: 0.61 vs 0.41 ms per image, bit-identical output), the area kernel the same
    or slightly less (bench/README.md "pipeline"). ``shrinking`` (from a plan) fixes the kernel;
    None decides per image.
    """
    tf = runtime.tf()
    th, tw = target_hw
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.maximum(th / shape[0], tw / shape[1])
    # must cover the target; rounding may miss by a pixel
    new_hw = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), [th, tw])
    batch = tf.cast(image, tf.float32)[None]

    # the kernels of tf.image.resize's "area" and "bilinear" (half-pixel centres), minus its wrapper
    def area():
        return tf.raw_ops.ResizeArea(images=batch, size=new_hw, align_corners=False)

    def bilinear():
        return tf.raw_ops.ResizeBilinear(images=batch, size=new_hw, align_corners=False,
                                         half_pixel_centers=True)

    if shrinking is None:
        resized = tf.cond(tf.reduce_any(tf.shape(image)[:2] > new_hw), area, bilinear)[0]
    else:
        resized = (area() if shrinking else bilinear())[0]
    top, left = (new_hw[0] - th) // 2, (new_hw[1] - tw) // 2  # resize_with_crop_or_pad's offsets
    return tf.ensure_shape(resized[top:top + th, left:left + tw], [th, tw, 3])


def _resize(image, target_hw, mode: str):
    """float32 (th, tw, 3) from a uint8 image: centre ``crop`` / ``pad`` (aspect kept) / ``squash``."""
    tf = runtime.tf()
    th, tw = target_hw
    image = tf.cast(image, tf.float32)
    if mode == "squash":
        return _scaled(image, [th, tw])
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    ratio = tf.stack([th / shape[0], tw / shape[1]])
    scale = tf.reduce_max(ratio) if mode == "crop" else tf.reduce_min(ratio)
    new_hw = tf.cast(tf.round(shape * scale), tf.int32)
    # crop must cover the target, pad must fit inside it; rounding may miss by a pixel.
    new_hw = tf.maximum(new_hw, [th, tw]) if mode == "crop" else tf.minimum(new_hw, [th, tw])
    new_hw = tf.maximum(new_hw, 1)
    image = _scaled(image, new_hw)
    image = tf.image.resize_with_crop_or_pad(image, th, tw)
    return tf.ensure_shape(image, [th, tw, 3])


def _scaled(image, new_hw):
    """Area averaging to shrink (antialiased by construction), bilinear to enlarge. TF's
    ``antialias=True`` bilinear kernel costs ~5x the whole decode, so it is not used."""
    tf = runtime.tf()
    shrinking = tf.reduce_any(tf.shape(image)[:2] > tf.convert_to_tensor(new_hw, tf.int32))
    return tf.cond(shrinking,
                   lambda: tf.image.resize(image, new_hw, method="area"),
                   lambda: tf.image.resize(image, new_hw, method="bilinear"))


def decode_and_resize(contents, target_hw, resize: str, plan: DecodePlan | None = None,
                      dtype: str = "uint8"):
    """uint8 (th, tw, 3) from encoded image bytes: the pipeline's decode + resize, pure TF ops, so
    an exported model's serving graph (skinzoo.deploy.export) runs exactly this code too.
    ``plan``: the decisions for these bytes made beforehand (:func:`decode_plan`); same pixels.
    ``dtype="float32"``: the same whole numbers as float32, for streams that are not cached (the
    uint8 round trip, then a cast back per batch, cost 1.25x the CPU at 224 px)."""
    tf = runtime.tf()
    if plan is None:
        image = _decode(contents, target_hw)
    else:
        image = tf.ensure_shape(tf.io.decode_jpeg(contents, channels=3, ratio=plan[0]), [None, None, 3])
    if resize == "crop":  # the default mode, on a leaner path with identical output
        image = _centre_crop_resized(image, target_hw, None if plan is None else plan[1])
    else:
        image = _resize(image, target_hw, resize)
    image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
    return image if dtype == "float32" else tf.cast(image, tf.uint8)
