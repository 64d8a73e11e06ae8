"""ColorConstancy: neutralises a colour cast, lives inside every zoo model, loads in safe mode."""

from __future__ import annotations

import numpy as np
import pytest

from skinzoo.models.layers import ColorConstancy
from skinzoo.models.registry import build_model


def _cast_image(seed=0, cast=(1.3, 1.0, 0.6)):
    """A grey-ish textured image under a warm lamp: each channel scaled by ``cast``."""
    rng = np.random.default_rng(seed)
    grey = rng.uniform(40, 180, size=(1, 32, 32, 1)).astype(np.float32)
    texture = grey * rng.uniform(0.9, 1.1, size=(1, 32, 32, 3)).astype(np.float32)
    return np.clip(texture * np.asarray(cast, np.float32), 0, 255)


@pytest.mark.parametrize("power", [1.0, 6.0])
def test_colour_cast_becomes_neutral(power):
    image = _cast_image()
    before = image.mean(axis=(0, 1, 2))
    after = np.asarray(ColorConstancy(power)(image)).mean(axis=(0, 1, 2))
    spread = lambda m: (m.max() - m.min()) / m.mean()  # noqa: E731
    assert spread(before) > 0.5  # a strong cast going in
    assert spread(after) < (0.02 if power == 1.0 else 0.1)  # gray-world exactly grey on average
    assert abs(after.mean() - before.mean()) / before.mean() < 0.15  # brightness roughly kept


def test_same_scene_under_two_lamps_looks_alike():
    warm, cold = _cast_image(cast=(1.3, 1.0, 0.6)), _cast_image(cast=(0.7, 1.0, 1.25))
    layer = ColorConstancy(6.0)
    raw_gap = np.abs(warm - cold).mean()
    corrected_gap = np.abs(np.asarray(layer(warm)) - np.asarray(layer(cold))).mean()
    assert corrected_gap < raw_gap / 5


def test_output_range_and_bad_power():
    out = np.asarray(ColorConstancy(6.0)(np.full((2, 8, 8, 3), 255.0, np.float32)))
    assert out.min() >= 0 and out.max() <= 255
    black = np.asarray(ColorConstancy(6.0)(np.zeros((1, 8, 8, 3), np.float32)))
    assert np.isfinite(black).all()
    with pytest.raises(ValueError):
        ColorConstancy(0.5)


@pytest.mark.parametrize("name", ["compact_resnet", "resnet18_small", "custom_cnn"])
def test_every_builder_takes_the_layer_and_it_survives_safe_loading(name, tmp_path):
    import keras

    model = build_model(name, 3, input_shape=(32, 32, 3), color_constancy=6.0)
    assert model.get_layer("color_constancy").power == 6.0
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    x = _cast_image()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    plain = build_model(name, 3, input_shape=(32, 32, 3))
    assert "color_constancy" not in [layer.name for layer in plain.layers]


def test_stochastic_depth_drops_whole_samples_and_keeps_the_mean():
    from skinzoo.models.layers import StochasticDepth

    layer = StochasticDepth(0.25, seed=3)
    x = np.ones((4000, 2, 2, 3), np.float32)
    out = np.asarray(layer(x, training=True))
    per_sample = out.reshape(4000, -1)
    # each sample is either dropped whole (0) or kept whole and scaled by 1 / (1 - rate)
    np.testing.assert_allclose(np.unique(per_sample), [0.0, 1 / 0.75], rtol=1e-6)
    assert (per_sample.min(axis=1) == per_sample.max(axis=1)).all()
    kept = (per_sample[:, 0] > 0).mean()
    assert abs(kept - 0.75) < 0.03
    assert abs(out.mean() - 1.0) < 0.05
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    with pytest.raises(ValueError):
        StochasticDepth(1.0)


def test_drop_path_rates_rise_linearly_to_the_maximum():
    from skinzoo.models.layers import drop_path_rates

    assert drop_path_rates(0.2, 5) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    assert drop_path_rates(0.1, 1) == [0.1]
