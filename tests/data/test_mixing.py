"""Mixup / CutMix: targets and class weights mixed so the weighted loss is exact."""

from __future__ import annotations

import numpy as np
import pytest

from skinzoo.data.mixing import Mix, mix_batch, mixed_targets
from skinzoo.errors import UsageError


def _batch(n=8, k=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, 16, 16, 3)).astype(np.float32)
    labels = rng.integers(0, k, n)
    targets = np.eye(k, dtype=np.float32)[labels]
    weights = rng.uniform(0.2, 3.0, n).astype(np.float32)
    return images, targets, weights


def _ce(t, p):
    return -(t * np.log(p)).sum(-1)


def test_weighted_loss_of_a_mixed_sample_is_the_mix_of_the_two_losses():
    _, targets, weights = _batch()
    partner = np.array([3, 0, 5, 1, 7, 2, 6, 4])
    lam = np.float32(0.3)
    t, s = (np.asarray(v) for v in mixed_targets(targets, weights, partner, lam))
    np.testing.assert_allclose(t.sum(-1), 1.0, atol=1e-5)  # still a distribution
    p = np.random.default_rng(1).dirichlet(np.ones(4), len(t)).astype(np.float32)
    exact = lam * weights * _ce(targets, p) + (1 - lam) * weights[partner] * _ce(targets[partner], p)
    np.testing.assert_allclose(s * _ce(t, p), exact, rtol=1e-5)
    # averaging weights and targets separately (the common shortcut) would not match
    naive = (lam * weights + (1 - lam) * weights[partner]) * _ce(
        lam * targets + (1 - lam) * targets[partner], p)
    assert not np.allclose(naive, exact, rtol=1e-3)


@pytest.mark.parametrize("mix", [Mix(mixup=0.4), Mix(cutmix=1.0), Mix(mixup=0.2, cutmix=1.0)])
def test_mix_batch_gives_soft_targets_and_positive_weights(mix):
    import tensorflow as tf

    images, targets, weights = _batch()
    x, t, s = (np.asarray(v) for v in mix_batch(images, targets, weights, tf.constant([3, 4], tf.int64), mix))
    assert x.shape == images.shape and not np.allclose(x, images)
    np.testing.assert_allclose(t.sum(-1), 1.0, atol=1e-5)
    assert (s >= weights.min() - 1e-5).all() and (s <= weights.max() + 1e-5).all()


def test_cutmix_pastes_a_box_and_is_reproducible():
    import tensorflow as tf

    images = np.zeros((4, 16, 16, 3), np.float32)
    images[1:] = 255.0  # sample 0 black, the others white
    targets = np.eye(4, dtype=np.float32)
    seed = tf.constant([0, 9], tf.int64)
    a = [np.asarray(v) for v in mix_batch(images, targets, None, seed, Mix(cutmix=1.0))]
    b = [np.asarray(v) for v in mix_batch(images, targets, None, seed, Mix(cutmix=1.0))]
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    x, t, s = a
    np.testing.assert_allclose(s, 1.0)  # no class weights: every weight stays 1
    values = np.unique(x)
    assert set(values.tolist()) <= {0.0, 255.0}  # pasted, not blended
    white_share = (x[0] == 255.0).mean()
    if t[0, 0] < 1:  # sample 0 got a partner's box: its target says how much
        np.testing.assert_allclose(1 - t[0, 0], white_share, atol=1e-5)


def test_mix_in_the_pipeline_and_refused_outside_training(tmp_path):
    import cv2

    from skinzoo.data.pipeline import make_dataset

    paths = []
    for i in range(8):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), np.full((20, 20, 3), i * 30, np.uint8))
        paths.append(str(path))
    labels = np.arange(8) % 2
    ds = make_dataset(paths, labels, 2, 16, 4, training=True, augment="none",
                      mix=Mix(mixup=0.5), cache="memory")
    x, y, w = next(iter(ds))
    assert x.shape == (4, 16, 16, 3) and y.shape == (4, 1) and w.shape == (4,)
    assert ((np.asarray(y) > 0) & (np.asarray(y) < 1)).any()  # soft targets
    with pytest.raises(UsageError, match="training"):
        make_dataset(paths, labels, 2, 16, 4, training=False, mix=Mix(mixup=0.5))
    with pytest.raises(UsageError):
        Mix(mixup=-1)
