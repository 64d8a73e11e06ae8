"""Logit-adjusted cross-entropy: equals plain cross-entropy under a uniform prior, shifts
the decision towards rare classes under a skewed one."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from skinzoo.train.losses import LogitAdjustedCrossentropy


def _probs(n=6, k=4, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(k), n).astype(np.float32)
    y = np.eye(k, dtype=np.float32)[rng.integers(0, k, n)]
    return y, p


def test_uniform_prior_is_plain_crossentropy():
    y, p = _probs()
    adjusted = float(LogitAdjustedCrossentropy([1, 1, 1, 1])(y, p))
    plain = float(keras.losses.CategoricalCrossentropy()(y, p))
    assert adjusted == pytest.approx(plain, rel=1e-5)


def test_skewed_prior_penalises_rare_class_errors_more():
    # a sample of the rare class 1 predicted as the common class 0 costs more than plain CE says
    y = np.array([[0, 1, 0]], np.float32)
    p = np.array([[0.6, 0.3, 0.1]], np.float32)
    prior = [0.8, 0.1, 0.1]
    adjusted = float(LogitAdjustedCrossentropy(prior)(y, p))
    plain = float(keras.losses.CategoricalCrossentropy()(y, p))
    assert adjusted > plain
    expected = -np.log(0.3 * 0.1 / (0.6 * 0.8 + 0.3 * 0.1 + 0.1 * 0.1))
    assert adjusted == pytest.approx(expected, rel=1e-4)


def test_binary_matches_the_formula_and_round_trips_config():
    y = np.array([[1.0], [0.0]], np.float32)
    p = np.array([[0.4], [0.3]], np.float32)
    loss = LogitAdjustedCrossentropy([0.9, 0.1])
    shift = np.log(0.1 / 0.9)
    z = np.log(p / (1 - p)) + shift
    sig = 1 / (1 + np.exp(-z))
    expected = -(y * np.log(sig) + (1 - y) * np.log(1 - sig)).mean()
    assert float(loss(y, p)) == pytest.approx(expected, rel=1e-4)
    again = LogitAdjustedCrossentropy.from_config(loss.get_config())
    assert again.prior == pytest.approx([0.9, 0.1]) and again.tau == 1.0
    with pytest.raises(ValueError):
        LogitAdjustedCrossentropy([1.0, 0.0])
