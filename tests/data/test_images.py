"""Image inspection and reading: every bad kind is named, convertible modes come back as RGB."""

from __future__ import annotations

import numpy as np
import pytest
from badinputs import (
    BAD_IMAGES,
    CONVERTED_IMAGES,
    write_16bit_png,
    write_folder_named_like_image,
    write_good_jpeg,
    write_grayscale_jpeg,
    write_huge_png,
    write_nonascii_name,
    write_rgba_png,
    write_truncated_jpeg,
)

from skinzoo.data.images import MIN_SIDE, inspect_image, list_image_files, read_image_rgb
from skinzoo.errors import DataError


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_is_named_and_unusable(tmp_path, name):
    writer, kind = BAD_IMAGES[name]
    path = writer(tmp_path)
    info = inspect_image(path)
    assert not info.ok
    assert info.problem == kind
    assert info.message
    with pytest.raises(DataError) as err:
        read_image_rgb(path)
    assert str(path) in err.value.message and err.value.hint


@pytest.mark.parametrize("name", sorted(CONVERTED_IMAGES))
def test_convertible_modes_are_read_as_rgb(tmp_path, name):
    writer, conversion = CONVERTED_IMAGES[name]
    path = writer(tmp_path)
    info = inspect_image(path)
    assert info.ok and info.conversion == conversion and info.converted
    img = read_image_rgb(path)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8


def test_good_jpeg_header_facts(tmp_path):
    info = inspect_image(write_good_jpeg(tmp_path, size=40), with_digest=True)
    assert info.ok and not info.converted
    assert (info.width, info.height, info.mode, info.format) == (40, 40, "RGB", "JPEG")
    assert len(info.digest) == 32


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path):
    img = read_image_rgb(write_16bit_png(tmp_path))
    # Pillow's own convert("RGB") would clip everything above 255 to white.
    assert img[0, 0, 0] == 0 and img[-1, -1, 0] == 255
    assert 100 < img[16, 0, 0] < 160  # the middle of the ramp stays mid-grey
    assert (img[..., 0] == img[..., 2]).all()


def test_grayscale_and_rgba_keep_their_values(tmp_path):
    gray = read_image_rgb(write_grayscale_jpeg(tmp_path))
    assert (gray[..., 0] == gray[..., 1]).all()
    from PIL import Image

    src = np.asarray(Image.open(write_rgba_png(tmp_path)))
    rgb = read_image_rgb(tmp_path / "rgba.png")
    assert (rgb == src[..., :3]).all()  # alpha dropped, not composited


def test_truncation_needs_the_decode_step(tmp_path):
    path = write_truncated_jpeg(tmp_path)
    assert inspect_image(path, decode="never").ok  # the header alone looks fine
    info = inspect_image(path, decode="auto")
    assert info.problem == "truncated" and "stops early" in info.message
    assert inspect_image(path, decode="always").problem == "truncated"


def test_huge_header_refused_without_decoding(tmp_path):
    for side in (12_000, 20_000):  # Pillow warns at the first, raises at the second
        info = inspect_image(write_huge_png(tmp_path, name=f"h{side}.png", side=side))
        assert info.problem == "too_large" and "megapixels" in info.message


def test_small_but_usable_side(tmp_path):
    from PIL import Image

    Image.new("RGB", (MIN_SIDE, MIN_SIDE)).save(tmp_path / "ok.png")
    Image.new("RGB", (MIN_SIDE - 1, 50)).save(tmp_path / "thin.png")
    assert inspect_image(tmp_path / "ok.png").ok
    assert inspect_image(tmp_path / "thin.png").problem == "too_small"


def test_folder_and_nonascii_paths(tmp_path):
    assert inspect_image(write_folder_named_like_image(tmp_path)).problem == "not_regular"
    path = write_nonascii_name(tmp_path / "dossier avec espaces")
    assert inspect_image(path).ok
    assert read_image_rgb(path).shape == (32, 32, 3)


def test_list_image_files_case_insensitive_and_skips_hidden(tmp_path):
    write_good_jpeg(tmp_path / "a", "x.JPG")
    write_good_jpeg(tmp_path / "a" / "deep", "y.jpeg")
    write_good_jpeg(tmp_path / "a", "._x.jpg")  # macOS resource fork
    write_good_jpeg(tmp_path / ".git", "z.jpg")
    (tmp_path / "a" / "notes.txt").write_text("x")
    names = sorted(p.name for p in list_image_files(tmp_path))
    assert names == ["x.JPG", "y.jpeg"]
