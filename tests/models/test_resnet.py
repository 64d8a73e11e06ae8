"""Primitive ResNets: reference parameter counts, layouts of the variants, and ImageNet-weight
transfer from keras.applications (weights saved offline from weights=None builds)."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from skinzoo.errors import ModelError
from skinzoo.models import build_model

CLASSIC_HEAD = {"dense": (), "dropout": 0.0}  # GAP → Dense(1000): the keras.applications top


@pytest.mark.parametrize(
    "name, total",
    [("resnet50", 25_636_712), ("resnet101", 44_707_176),
     pytest.param("resnet152", 60_419_944, marks=pytest.mark.slow)],
)
def test_v1_parameter_counts_match_keras_applications(name, total):
    model = build_model(name, 1000, input_shape=(32, 32, 3), **CLASSIC_HEAD)
    assert model.count_params() == total


@pytest.mark.parametrize("name, trainable", [("resnet18", 11_689_512), ("resnet34", 21_797_672)])
def test_basic_block_counts_match_torchvision(name, trainable):
    """torchvision counts parameters only (BN running stats are buffers) = Keras trainable."""
    model = build_model(name, 1000, input_shape=(32, 32, 3), **CLASSIC_HEAD)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable
    assert not model.get_layer("conv1_conv").use_bias


def test_variant_layouts():
    v1 = build_model("resnet50", 3, input_shape=(64, 64, 3))
    d = build_model("resnet50d", 3, input_shape=(64, 64, 3))
    # v1: stride in the first 1x1 with conv biases; D: stride in the 3x3, no bias
    assert v1.get_layer("conv3_block1_1_conv").strides == (2, 2) and v1.get_layer(
        "conv3_block1_1_conv").use_bias
    assert d.get_layer("conv3_block1_1_conv").strides == (1, 1)
    assert d.get_layer("conv3_block1_2_conv").strides == (2, 2)
    assert not d.get_layer("conv3_block1_2_conv").use_bias
    # C: deep stem; D: average-pool shortcut then a stride-1 1x1
    assert [d.get_layer(f"conv1_{i}_conv").filters for i in (1, 2, 3)] == [32, 32, 64]
    assert d.get_layer("conv3_block1_0_pool").pool_size == (2, 2)
    assert d.get_layer("conv3_block1_0_conv").strides == (1, 1)
    for model in (v1, d):  # /32 overall, 2048 channels
        assert tuple(model.get_layer("conv5_block3_out").output.shape[1:]) == (2, 2, 2048)


def test_width_and_small_stem():
    model = build_model("resnet18", 3, input_shape=(64, 64, 3), width=0.5, stem="small")
    assert tuple(model.get_layer("conv5_block2_out").output.shape[1:]) == (8, 8, 256)
    small = build_model("resnet18_small", 3)
    assert small.input.shape[1:] == (64, 64, 3)
    assert small.get_layer("conv2_block1_1_conv").filters == 16
    with pytest.raises(ModelError):
        build_model("resnet18", 3, input_shape=(32, 32, 3), width=0)


def test_caffe_preprocessing_matches_keras():
    import keras

    model = build_model("resnet50", 3, input_shape=(32, 32, 3), width=0.25)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    ours = keras.Model(model.input, model.get_layer("preprocess").output).predict(x, verbose=0)
    expected = keras.applications.resnet.preprocess_input(x.copy())
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def _randomise_bn(model, seed=0):
    """Non-trivial BN statistics so a transfer that skips them cannot pass."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 1.5, v.shape)])


def _check_transfer(app, name, path, tmp_path, fmt):
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    ref = getattr(keras.applications, app)(weights=None, include_top=False, input_shape=(64, 64, 3))
    _randomise_bn(ref)
    if fmt == "legacy":  # the layout of the files keras.applications downloads
        import h5py

        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    else:
        ref.save_weights(path)
    model = build_model(name, 7, input_shape=(64, 64, 3), weights=str(path))
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = ref.predict(keras.applications.resnet.preprocess_input(x.copy()), verbose=0)
    features = keras.Model(model.input, model.get_layer("conv5_block3_out").output)
    np.testing.assert_allclose(features.predict(x, verbose=0), expected, atol=1e-4)


def test_resnet50_weights_from_keras_h5(tmp_path):
    _check_transfer("ResNet50", "resnet50", tmp_path / "resnet50_notop.h5", tmp_path, "legacy")


@pytest.mark.slow
def test_resnet152_weights_from_keras_weights_file(tmp_path):
    _check_transfer("ResNet152", "resnet152", tmp_path / "r152.weights.h5", tmp_path, "keras3")


def test_full_keras_model_with_top_loads_including_predictions(tmp_path):
    """A .keras ResNet50 with its 1000-way top → the zoo ResNet-50 with the classic head gives
    the same probabilities."""
    import keras

    ref = keras.applications.ResNet50(weights=None, include_top=True, input_shape=(64, 64, 3))
    _randomise_bn(ref, seed=2)
    ref.save(tmp_path / "ref.keras")
    model = build_model("resnet50", 1000, input_shape=(64, 64, 3),
                        weights=str(tmp_path / "ref.keras"), **CLASSIC_HEAD)
    x = np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = ref.predict(keras.applications.resnet.preprocess_input(x.copy()), verbose=0)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)


def test_weights_that_do_not_fit_are_model_errors(tmp_path):
    import keras

    keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3)) \
        .save_weights(tmp_path / "r50.weights.h5")
    with pytest.raises(ModelError, match="weighted layers"):
        build_model("resnet101", 3, input_shape=(32, 32, 3), weights=str(tmp_path / "r50.weights.h5"))
    with pytest.raises(ModelError, match="do not fit"):
        build_model("resnet50", 3, input_shape=(32, 32, 3), width=0.5,
                    weights=str(tmp_path / "r50.weights.h5"))
    with pytest.raises(ModelError, match="not found"):
        build_model("resnet50", 3, weights=str(tmp_path / "missing.h5"))
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(ModelError, match="HDF5"):
        build_model("resnet50", 3, input_shape=(32, 32, 3), weights=str(tmp_path / "junk.h5"))
    with pytest.raises(ModelError, match="no pretrained"):
        build_model("resnet50d", 3, weights="imagenet")


def _online():
    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
        return True
    except OSError:
        return False


@pytest.mark.skipif(_online(), reason="network available: would download the real weights")
def test_offline_imagenet_is_a_clear_model_error():
    with pytest.raises(ModelError) as err:
        build_model("resnet50", 3, input_shape=(32, 32, 3), weights="imagenet")
    assert "download" in err.value.message and "weights=PATH" in err.value.hint
    assert ".keras/models" in err.value.hint


def test_resnet_stochastic_depth_option():
    """drop_path puts one StochasticDepth layer on each block's residual branch (rates rising
    linearly to the maximum, none where the rate is 0), changes no weight count, is the identity at
    inference; 0 keeps the layer list of a plain ResNet (the layer's training behaviour:
    tests/models/test_layers.py)."""
    plain = build_model("resnet18_small", 3, input_shape=(32, 32, 3))
    model = build_model("resnet18_small", 3, input_shape=(32, 32, 3), drop_path=0.3)
    drops = [layer for layer in model.layers if layer.name.endswith("_drop")]
    # 8 basic blocks, rates 0, 0.3/7, ..., 0.3: the first (rate 0) gets no layer
    assert [round(d.rate, 4) for d in drops] == [round(0.3 * i / 7, 4) for i in range(1, 8)]
    assert drops[0].name == "conv2_block2_drop" and drops[-1].name == "conv5_block2_drop"
    assert model.count_params() == plain.count_params()
    assert not [layer for layer in plain.layers if layer.name.endswith("_drop")]
    for layer in plain.layers:  # by name: the extra layers may change the topological order
        model.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-5)
    bottleneck = build_model("resnet50", 3, input_shape=(32, 32, 3), width=0.125, drop_path=0.1)
    assert bottleneck.get_layer("conv5_block3_drop").rate == pytest.approx(0.1)


def test_resnet_rejects_a_drop_path_outside_0_1():
    with pytest.raises(ModelError, match="drop_path"):
        build_model("resnet18_small", 3, input_shape=(32, 32, 3), drop_path=1.0)
