"""The crop-mode fast path of decode_and_resize gives exactly the pixels of the generic path
(decode → _resize → round/clip/cast), so caches made before it stay valid (same PIPELINE_VERSION)."""

from __future__ import annotations

import io

import numpy as np
import pytest


def _encoded(w, h, fmt, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx * yy) % 256], -1) + rng.integers(-20, 20, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


# shrinking at every JPEG ratio (8, 4, 2, 1), enlarging, equal size, portrait, non-square targets
@pytest.mark.parametrize("w,h", [(200, 150), (150, 200), (640, 480), (33, 17), (224, 300)])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_crop_fast_path_is_pixel_identical_to_the_generic_resize(w, h, fmt):
    from skinzoo.data.pipeline import _decode, _resize, decode_and_resize
    from skinzoo.runtime import tf

    tf = tf()
    contents = tf.constant(_encoded(w, h, fmt))
    for hw in [(8, 8), (64, 64), (224, 224), (12, 20), (150, 200)]:
        fast = decode_and_resize(contents, hw, "crop").numpy()
        generic = _resize(_decode(contents, hw), hw, "crop")
        generic = tf.cast(tf.clip_by_value(tf.round(generic), 0.0, 255.0), tf.uint8).numpy()
        assert fast.shape == (*hw, 3) and fast.dtype == np.uint8
        assert np.array_equal(fast, generic), (w, h, fmt, hw)
