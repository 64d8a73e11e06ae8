"""Hair removal: drawn dark hairs disappear, a drawn lesion keeps its colour."""

from __future__ import annotations

import numpy as np
import pytest


def _skin_with_hairs_and_lesion(size=96, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), (220, 175, 145), np.float32) + rng.normal(0, 3, (size, size, 1))
    lesion = np.zeros((size, size), np.uint8)
    cv2.circle(lesion, (size // 2, size // 2), size // 6, 1, -1)
    img[lesion.astype(bool)] = (120, 80, 55)
    hairs = np.zeros((size, size), np.uint8)
    for (x0, y0), (x1, y1) in [((0, 5), (95, 30)), ((10, 95), (40, 0)), ((60, 95), (95, 55)),
                               ((0, 70), (30, 95))]:
        cv2.line(hairs, (x0, y0), (x1, y1), 1, 2)
    hairs = hairs.astype(bool) & ~lesion.astype(bool)
    img[hairs] = (35, 28, 25)
    return np.clip(img, 0, 255).astype(np.uint8), hairs, lesion.astype(bool)


def test_dark_hairs_removed_lesion_colour_kept():
    from skinzoo.data.hair import remove_hair

    img, hairs, lesion = _skin_with_hairs_and_lesion()
    out = remove_hair(img)
    assert out.shape == img.shape and out.dtype == np.uint8

    def dark_hair_pixels(im):  # hair positions still much darker than skin
        return int((im[hairs].mean(axis=1) < 120).sum())

    before, after = dark_hair_pixels(img), dark_hair_pixels(out)
    assert before > 300 and after < 0.05 * before
    inner = lesion.copy()
    inner[:, :] &= np.hypot(*np.mgrid[-48:48, -48:48]) < 13  # away from the blob edge
    assert np.abs(out[inner].mean(0) - img[inner].mean(0)).max() < 3
    skin = ~(lesion | hairs)
    assert np.abs(out[skin].astype(int) - img[skin]).mean() < 2  # the rest left alone


def test_no_hair_means_no_change_and_bad_input_is_an_error():
    from skinzoo.data.hair import remove_hair
    from skinzoo.errors import UsageError

    img = np.full((32, 32, 3), 200, np.uint8)
    assert np.array_equal(remove_hair(img), img)
    with pytest.raises(UsageError, match="RGB"):
        remove_hair(np.zeros((32, 32), np.uint8))


def test_precompute_writes_cleaned_copies_and_pipeline_uses_hair_removal(tmp_path):
    import cv2

    from skinzoo.data.hair import precompute_hair_removed, remove_hair
    from skinzoo.data.pipeline import load_images

    img, hairs, _ = _skin_with_hairs_and_lesion()
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), img[..., ::-1])
    (out,) = precompute_hair_removed([src], tmp_path / "clean", progress=False)
    clean = cv2.imread(str(out))[..., ::-1]
    assert np.array_equal(clean, remove_hair(img))
    piped = load_images([str(src)], 96, "squash", hair_removal=True)[0]
    assert np.array_equal(piped, remove_hair(img).astype(np.float32))


def test_dots_and_globules_inside_a_lesion_are_not_hair():
    """Blob-shaped dark structures (dots, globules) are diagnostic texture: never in-painted."""
    import cv2

    from skinzoo.data.hair import hair_mask, remove_hair

    img, hairs, lesion = _skin_with_hairs_and_lesion()
    dots = np.zeros(img.shape[:2], np.uint8)
    for cx, cy in [(44, 44), (52, 46), (47, 53), (40, 50), (55, 54)]:
        cv2.circle(dots, (cx, cy), 1, 1, -1)
    dots = dots.astype(bool)
    img[dots] = (30, 20, 15)
    mask = hair_mask(img)
    assert mask[dots].mean() < 0.1  # the dots are not in the mask
    assert mask[hairs].mean() > 0.9  # the hairs still are
    out = remove_hair(img)
    assert out[dots].mean() < 60  # the dots are still dark after hair removal
