"""Augmentation: presets, overrides, each op's effect, stateless determinism, value range."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from skinzoo.errors import UsageError


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    img = np.stack([xx * 8, yy * 8, np.full_like(xx, 120)], -1).astype(np.float32)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.float32)


def _run(image, aug, seed=(1, 2)):
    from skinzoo.data.augment import augment_image
    from skinzoo.runtime import tf

    tf = tf()
    return augment_image(tf.constant(image), tf.constant(seed, tf.int64), aug).numpy()


def test_presets_and_overrides():
    from skinzoo.data.augment import Augment, resolve_augment

    assert not resolve_augment("none").active and not resolve_augment(None).active
    light, heavy = resolve_augment("light"), resolve_augment("heavy")
    assert light.active and light.flip_h and light.rot90 and light.rotate == 0
    assert heavy.rotate > 0 and heavy.cutout > 0 and heavy.noise > 0
    custom = resolve_augment("light, rotate=15, flip_v=false")
    assert custom.rotate == 15.0 and custom.flip_v is False and custom.flip_h
    assert resolve_augment("cutout=0.5").cutout == 0.5
    assert resolve_augment(Augment(noise=2)) == Augment(noise=2)
    for bad in ("medium", "light,spin=3", "light,rotate=abc", "light,rotate=-5"):
        with pytest.raises(UsageError):
            resolve_augment(bad)


def test_each_op_changes_the_image_within_range_and_is_deterministic(image):
    from skinzoo.data.augment import Augment

    ops = dict(flip_h=True, flip_v=True, rot90=True, rotate=30.0, zoom=0.3, shift=0.2,
               brightness=0.3, contrast=0.3, saturation=0.5, hue=0.1, blur=1.0, noise=10.0,
               cutout=1.0)
    for name, value in ops.items():
        aug = Augment(**{name: value})
        outs = [_run(image, aug, (s, 7)) for s in range(6)]
        assert all(o.shape == image.shape and o.dtype == np.float32 for o in outs), name
        assert all(o.min() >= 0 and o.max() <= 255 for o in outs), name
        assert any(not np.allclose(o, image, atol=0.5) for o in outs), f"{name} never changed it"
        assert np.array_equal(_run(image, aug, (3, 7)), _run(image, aug, (3, 7))), name


def test_geometric_ops_move_pixels_colour_ops_do_not(image):
    from skinzoo.data.augment import Augment

    flipped = [_run(image, Augment(flip_h=True), (s, 0)) for s in range(8)]
    assert any(np.array_equal(f, image[:, ::-1]) for f in flipped)
    assert any(np.array_equal(f, image) for f in flipped)
    dihedral = {_run(image, Augment(rot90=True), (s, 1)).tobytes() for s in range(40)}
    assert len(dihedral) == 8  # the 8 symmetries of the square
    # colour jitter keeps each pixel where it was: the spatial gradient direction survives
    bright = _run(image, Augment(brightness=0.3), (2, 2))
    assert np.corrcoef(bright[..., 0].ravel(), image[..., 0].ravel())[0, 1] > 0.99


def test_all_off_is_identity_and_heavy_differs_per_seed(image):
    from skinzoo.data.augment import Augment

    assert np.array_equal(_run(image, Augment()), image)
    heavy = Augment.preset("heavy")
    assert not np.array_equal(_run(image, heavy, (1, 1)), _run(image, heavy, (2, 1)))
    assert dataclasses.replace(heavy, cutout=0).cutout == 0

