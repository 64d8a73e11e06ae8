"""The small CPU models: raw-pixel input, defaults, binary training."""

from __future__ import annotations

import numpy as np


def test_models_take_raw_pixels():
    """The first layer maps 0..255 to 0..1: the pipeline hands over raw pixels."""
    import keras

    from skinzoo.models import build_model

    model = build_model("compact_resnet", 3, input_shape=(16, 16, 3), width=8)
    pre = keras.Model(model.input, model.get_layer("preprocess").output)
    x = np.full((1, 16, 16, 3), 255.0, "float32")
    x[..., 0] = 0.0
    out = pre.predict(x, verbose=0)
    assert out[..., 0].max() == 0.0 and np.allclose(out[..., 1:], 1.0)


def test_compact_resnet_default_size_and_params():
    from skinzoo.models import build_model

    model = build_model("compact_resnet", 7)
    assert model.input.shape[1:] == (64, 64, 3)
    assert 300_000 <= model.count_params() <= 1_000_000


def test_compact_resnet_learns_a_binary_rule():
    """A few steps on "bright vs dark" images must bring the loss down (one sigmoid unit)."""
    from skinzoo.models import build_model
    from skinzoo.runtime import set_seed

    set_seed(0, deterministic=False)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 32).astype("float32").reshape(-1, 1)
    x = rng.uniform(0, 120, (32, 16, 16, 3)).astype("float32") + 120 * y[:, :, None, None]
    model = build_model("compact_resnet", 2, input_shape=(16, 16, 3), width=8, dropout=0)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.6 * first
