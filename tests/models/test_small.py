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


def test_compact_resnet_stochastic_depth_and_avg_down_options(tmp_path):
    """drop_path adds one StochasticDepth layer per block (rates rising to the maximum), is the
    identity at inference, and survives safe loading; avg_down swaps the strided 1x1 shortcut for
    an average pool + 1x1 conv with the same parameter count."""
    import keras

    from skinzoo.models import build_model

    plain = build_model("compact_resnet", 3, input_shape=(32, 32, 3), width=8)
    model = build_model("compact_resnet", 3, input_shape=(32, 32, 3), width=8, drop_path=0.2,
                        avg_down=True)
    drops = [layer for layer in model.layers if layer.name.endswith("_drop")]
    # six blocks, rates 0, .04, ..., .2: the first block (rate 0) gets no layer at all
    assert [round(d.rate, 3) for d in drops] == [0.04, 0.08, 0.12, 0.16, 0.2]
    assert model.get_layer("stage2_block1_0_pool") is not None
    assert model.count_params() == plain.count_params()
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
