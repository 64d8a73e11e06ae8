"""Every registered model: output contract, Grad-CAM layer at top level, training step for the
cheap ones, and a .keras round trip that loads with safe_mode=True and predicts identically."""

from __future__ import annotations

import numpy as np
import pytest

from skinzoo.models import build_model, last_conv_layer_name, list_models

slow = pytest.mark.slow
# name -> (input side, options, train one step?). Deep nets are narrowed (width) or only built.
ZOO = {
    "alexnet": (67, {"fc": (16, 16)}, True),
    "compact_resnet": (32, {"width": 8}, True),
    "compact_resnet_128": (32, {"width": 8}, True),
    "custom_cnn": (32, {"filters": (8, 16, 16), "dense": 16}, True),
    "simple_cnn": (32, {"filters": (8, 16), "dense": (16, 8)}, True),
    "resnet18_small": (32, {}, True),
    "resnet18": (32, {"width": 0.25, "dense": (16,)}, True),
    "resnet34": (32, {"width": 0.25, "dense": (16,)}, False),
    "resnet50": (32, {"width": 0.25, "dense": (16,)}, False),
    "resnet50d": (32, {"width": 0.25, "dense": (16,)}, False),
    "resnet101": (32, {"width": 0.25}, False),
    "resnet152": (32, {"width": 0.25}, False),
    "resnet152d": (32, {"width": 0.25}, False),
    "resnet200": (32, {"width": 0.25}, False),
    "efficientnetb0": (32, {"dense": (16,)}, False),
    "resnet50v2": (32, {"dense": (16,)}, False),
}
SLOW = {"resnet34", "resnet50d", "resnet101", "resnet152", "resnet152d", "resnet200", "resnet50v2"}


def test_every_registered_model_is_tested():
    assert set(list_models()) == set(ZOO)


def _targets(k, n, rng):
    labels = rng.integers(0, k, n)
    return labels.reshape(-1, 1).astype("float32") if k == 2 else np.eye(k, dtype="float32")[labels]


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=slow) if n in SLOW else n for n in sorted(ZOO)]
)
def test_model_contract_and_round_trip(name, tmp_path):
    import keras

    side, options, train = ZOO[name]
    k = 7
    model = build_model(name, k, input_shape=(side, side, 3), **options)
    assert model.output.shape[-1] == k and model.output.dtype == "float32"
    assert model.get_layer("predictions").activation.__name__ == "softmax"
    assert not any(isinstance(layer, keras.Model) for layer in model.layers), "nested sub-model"
    conv = model.get_layer(last_conv_layer_name(model))
    assert len(conv.output.shape) == 4 and conv.output.shape[1] >= 1

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, side, side, 3)).astype("float32")
    if train:
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        before = [w.copy() for w in model.trainable_weights[0].numpy()[None]]
        loss = model.train_on_batch(x, _targets(k, 4, rng))
        assert np.isfinite(loss)
        assert not np.allclose(before[0], model.trainable_weights[0].numpy())
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), probs, atol=1e-5)


@pytest.mark.parametrize("name", ["compact_resnet", "resnet18_small", "efficientnetb0"])
def test_binary_head_is_one_sigmoid_unit(name):
    model = build_model(name, 2, input_shape=(32, 32, 3), **ZOO[name][1])
    out = model.get_layer("predictions")
    assert model.output.shape[-1] == 1 and out.activation.__name__ == "sigmoid"
    p = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    assert p.shape == (2, 1) and ((p > 0) & (p < 1)).all()


def test_predictions_stay_float32_under_mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("resnet18_small", 3, input_shape=(32, 32, 3))
        assert model.get_layer("conv2_block1_1_conv").compute_dtype == "bfloat16"
        assert model.get_layer("predictions").compute_dtype == "float32"
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
