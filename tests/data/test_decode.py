"""skinzoo.data.decode: the crop-mode fast path and decode plans give exactly the pixels of the
generic per-image path (decode → _resize → round/clip/cast), so caches made before them stay valid
(same PIPELINE_VERSION) and exported serving graphs (per image) match training (per plan)."""

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
    from skinzoo.data.decode import _decode, _resize, decode_and_resize
    from skinzoo.runtime import tf

    tf = tf()
    contents = tf.constant(_encoded(w, h, fmt))
    for hw in [(8, 8), (64, 64), (224, 224), (12, 20), (150, 200)]:
        fast = decode_and_resize(contents, hw, "crop").numpy()
        generic = _resize(_decode(contents, hw), hw, "crop")
        generic = tf.cast(tf.clip_by_value(tf.round(generic), 0.0, 255.0), tf.uint8).numpy()
        assert fast.shape == (*hw, 3) and fast.dtype == np.uint8
        assert np.array_equal(fast, generic), (w, h, fmt, hw)


# --- decode plans: read from the header, the same decisions as the per-image graph ---------------

def _jpeg_file(path, w, h, seed=0, **save):
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    mode = save.pop("mode", None)
    if mode:
        img = img.convert(mode)
    img.save(path, "JPEG", **save)
    return path


def _exif_of(n_bytes):
    from PIL import Image

    exif = Image.Exif()
    exif[0x010E] = "x" * n_bytes  # ImageDescription: makes the APP1 segment that long
    return exif.tobytes()


@pytest.mark.parametrize("name,save", [
    ("baseline", {}),
    ("progressive", {"progressive": True}),
    ("optimized", {"optimize": True, "quality": 70}),
    ("grayscale", {"mode": "L"}),
    ("cmyk", {"mode": "CMYK"}),
    ("restart markers", {"restart_marker_blocks": 1}),
    ("exif past the first read", {"exif": _exif_of(6000)}),
    ("icc profile of 60 KB", {"icc_profile": b"\0" * 60000}),
])
def test_jpeg_size_reads_the_frame_header_as_pillow_does(tmp_path, name, save):
    from PIL import Image

    from skinzoo.data.decode import jpeg_size

    path = _jpeg_file(tmp_path / "a.jpg", 131, 77, **save)
    with Image.open(path) as im:
        assert jpeg_size(path) == (im.height, im.width) == (77, 131), name


def test_jpeg_size_is_none_for_anything_it_does_not_follow(tmp_path):
    from PIL import Image

    from skinzoo.data.decode import jpeg_size

    jpeg = _jpeg_file(tmp_path / "a.jpg", 40, 30).read_bytes()
    cases = {
        "png": None, "bmp": None,
        "empty": b"", "text": b"hello, not an image",
        "cut before the frame header": jpeg[:20],
        "scan before any frame": b"\xff\xd8\xff\xda\x00\x08" + bytes(6),
        "segment length below 2": b"\xff\xd8\xff\xe0\x00\x01" + bytes(20),
        "garbage between segments": b"\xff\xd8\xff\xe0\x00\x04ab" + b"zz" + bytes(20),
        "zero height (DNL)": b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x28" + bytes(12),
    }
    for name, data in cases.items():
        path = tmp_path / name.replace(" ", "_")
        if data is None:
            Image.new("RGB", (40, 30)).save(path, name.upper())
        else:
            path.write_bytes(data)
        assert jpeg_size(path) is None, name
    assert jpeg_size(tmp_path / "missing.jpg") is None


# Sides at the ratio boundaries (exactly 2x / 4x / 8x the target, one pixel short, odd sides whose
# scaled size rounds up) and sizes where the crop-mode resize neither clearly shrinks nor enlarges.
PLAN_SIZES = [(128, 128), (127, 129), (256, 96), (257, 129), (511, 1023), (64, 64), (65, 200),
              (64, 300), (20, 500), (1024, 768), (130, 64)]


@pytest.mark.parametrize("w,h", PLAN_SIZES)
@pytest.mark.parametrize("mode", ["crop", "pad", "squash"])
def test_a_plan_gives_the_pixels_of_the_per_image_decisions(tmp_path, w, h, mode):
    from skinzoo.data.decode import decode_and_resize, decode_plan
    from skinzoo.runtime import tf

    tf = tf()
    path = _jpeg_file(tmp_path / "a.jpg", w, h, quality=90)
    contents = tf.constant(path.read_bytes())
    for hw in [(64, 64), (32, 64), (128, 128)]:
        plan = decode_plan(path, hw)
        planned = decode_and_resize(contents, hw, mode, plan).numpy()
        per_image = decode_and_resize(contents, hw, mode).numpy()
        assert np.array_equal(planned, per_image), (w, h, hw, mode, plan)


def test_plans_name_the_ratio_and_the_kernel(tmp_path):
    from skinzoo.data.decode import decode_plan

    assert decode_plan(_jpeg_file(tmp_path / "a.jpg", 600, 450), (64, 64)) == (4, True)  # 150x113
    assert decode_plan(_jpeg_file(tmp_path / "b.jpg", 200, 150), (224, 224)) == (1, False)
    assert decode_plan(_jpeg_file(tmp_path / "c.jpg", 256, 128), (64, 64)) == (2, False)  # 64x128
    png = tmp_path / "d.png"
    from PIL import Image

    Image.new("RGB", (600, 450)).save(png)
    assert decode_plan(png, (64, 64)) is None


def _mixed_files(root):
    """JPEGs of four plans, a PNG, a BMP, interleaved so no two neighbours share a plan."""
    from PIL import Image

    paths = []
    sizes = [(600, 450), (200, 150), (97, 61), (1024, 768)]
    for i in range(12):
        if i % 6 == 4:
            path = root / f"{i:02d}.png"
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (90, 120, 3), np.uint8)).save(path)
        elif i % 6 == 5:
            path = root / f"{i:02d}.bmp"
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (70, 80, 3), np.uint8)).save(path)
        else:
            w, h = sizes[i % 4]
            path = _jpeg_file(root / f"{i:02d}.jpg", w, h, seed=i)
        paths.append(str(path))
    return paths


def test_a_stream_of_mixed_plans_keeps_file_order_and_pixels(tmp_path):
    """Files of several plans are loaded by several functions and merged back: every image must
    still be the one at its position (evaluation outputs are matched to paths by position)."""
    from skinzoo.data.decode import decode_and_resize, decode_plan
    from skinzoo.data.pipeline import load_images, make_dataset
    from skinzoo.runtime import tf

    tf = tf()
    paths = _mixed_files(tmp_path)
    assert len({decode_plan(p, (48, 48)) for p in paths}) >= 4
    expected = np.stack([decode_and_resize(tf.io.read_file(p), (48, 48), "crop").numpy() for p in paths])
    assert np.array_equal(load_images(paths, 48, batch_size=5), expected)
    labels = np.arange(len(paths)) % 2
    for cache in (None, "memory", str(tmp_path / "cache")):
        ds = make_dataset(paths, labels, 2, 48, 4, training=False, cache=cache)
        for _epoch in range(2):  # the second epoch reads the cache
            got = np.concatenate([x.numpy() for x, _y in ds])
            assert np.array_equal(got, expected), cache


def test_shuffled_training_streams_decode_with_a_shared_plan_or_per_image(tmp_path):
    """Uncached training shuffles paths before decoding, so it can use one plan only when every
    file shares it; mixed files decode per image. Both give the same images as evaluation."""
    from skinzoo.data.pipeline import load_images, make_dataset, shared_plan

    same = [str(_jpeg_file(tmp_path / f"s{i}.jpg", 120, 90, seed=i)) for i in range(8)]
    mixed = _mixed_files(tmp_path)
    assert shared_plan(same, (32, 32)) == (2, True)
    assert shared_plan(mixed, (32, 32)) is None
    for paths in (same, mixed):
        ds = make_dataset(paths, np.zeros(len(paths), int), 2, 32, 4, training=True, augment="none",
                          cache=None, seed=3)
        got = np.concatenate([x.numpy() for x, _y in ds])
        expected = load_images(paths, 32)
        # shuffled: compare as sets of images (drop_remainder keeps every one here: 8 and 12 images)
        assert sorted(map(bytes, got.astype(np.uint8))) == sorted(map(bytes, expected.astype(np.uint8)))


def test_a_broken_jpeg_with_a_good_header_is_named_on_the_planned_path(tmp_path):
    from skinzoo.data.decode import decode_plan
    from skinzoo.data.pipeline import load_images
    from skinzoo.errors import DataError

    paths = [str(_jpeg_file(tmp_path / f"{i}.jpg", 200, 150, seed=i)) for i in range(6)]
    data = open(paths[3], "rb").read()
    open(paths[3], "wb").write(data[:len(data) // 3])  # the header survives, the scan is cut
    assert decode_plan(paths[3], (32, 32)) == decode_plan(paths[0], (32, 32))
    with pytest.raises(DataError, match="3.jpg"):
        load_images(paths, 32)
