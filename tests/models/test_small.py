"""The small CPU models: output contract, one real training step, .keras round trip."""

from __future__ import annotations

import numpy as np
import pytest

from skinzoo.models import build_model, last_conv_layer_name

# name -> (input side, options) small enough for a test to train a step in well under a second
SMALL = {
    "compact_resnet": (32, {"width": 8}),
    "custom_cnn": (32, {"filters": (8, 16, 16), "dense": 16}),
    "simple_cnn": (32, {"filters": (8, 16), "dense": (16, 8)}),
    "alexnet": (67, {"fc": (16, 16)}),
}


def _targets(k, n, rng):
    labels = rng.integers(0, k, n)
    return labels.reshape(-1, 1).astype("float32") if k == 2 else np.eye(k, dtype="float32")[labels]


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("k", [2, 7])
def test_contract_train_step_and_round_trip(name, k, tmp_path):
    import keras

    side, options = SMALL[name]
    model = build_model(name, k, input_shape=(side, side, 3), **options)
    out = model.get_layer("predictions")
    assert model.output.shape[-1] == (1 if k == 2 else k)
    assert model.output.dtype == "float32"
    assert out.activation.__name__ == ("sigmoid" if k == 2 else "softmax")
    assert len(model.get_layer(last_conv_layer_name(model)).output.shape) == 4

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, side, side, 3)).astype("float32")
    y = _targets(k, 8, rng)
    model.compile(optimizer="adam", loss="binary_crossentropy" if k == 2 else
                  "categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(x, y)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=True))

    probs = model.predict(x, verbose=0)
    if k > 2:
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert ((probs >= 0) & (probs <= 1)).all()
    path = tmp_path / f"{name}.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), probs, atol=1e-6)


def test_models_take_raw_pixels():
    """The first layer maps 0..255 to 0..1: the pipeline hands over raw pixels."""
    import keras

    model = build_model("compact_resnet", 3, input_shape=(16, 16, 3), width=8)
    pre = keras.Model(model.input, model.get_layer("preprocess").output)
    x = np.full((1, 16, 16, 3), 255.0, "float32")
    x[..., 0] = 0.0
    out = pre.predict(x, verbose=0)
    assert out[..., 0].max() == 0.0 and np.allclose(out[..., 1:], 1.0)


def test_compact_resnet_default_size_and_params():
    model = build_model("compact_resnet", 7)
    assert model.input.shape[1:] == (64, 64, 3)
    assert 300_000 <= model.count_params() <= 1_000_000
