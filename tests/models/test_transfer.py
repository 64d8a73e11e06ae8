"""Transfer models: flat graphs, input scaling, the shared head, freezing, local weights."""

from __future__ import annotations

import numpy as np
import pytest

from skinzoo.errors import ModelError
from skinzoo.models import build_model
from skinzoo.models.transfer import (
    copy_head_weights,
    feature_extractor,
    freeze_backbone,
    head_model,
    unfreeze_top,
)


@pytest.fixture(scope="module")
def effnet():
    return build_model("efficientnetb0", 7, input_shape=(32, 32, 3))


def test_efficientnet_is_flat_and_rescales_raw_pixels_itself(effnet):
    import keras

    assert effnet.get_layer("top_activation").output.shape[-1] == 1280  # Grad-CAM layer, top level
    first = effnet.layers[1]  # right after the input: the backbone's own Rescaling(1/255)
    assert isinstance(first, keras.layers.Rescaling) and first.scale == pytest.approx(1 / 255)
    assert first.input is effnet.input  # nothing of ours rescales before it (no double scaling)
    x = np.full((1, 32, 32, 3), 255.0, "float32")
    out = keras.Model(effnet.input, first.output).predict(x, verbose=0)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_resnet50v2_gets_symmetric_inputs():
    import keras

    model = build_model("resnet50v2", 3, input_shape=(32, 32, 3), dense=(8,))
    assert model.get_layer("post_relu").output.shape[1:] == (1, 1, 2048)
    pre = keras.Model(model.input, model.get_layer("preprocess").output)
    x = np.stack([np.zeros((32, 32, 3)), np.full((32, 32, 3), 255.0)]).astype("float32")
    out = pre.predict(x, verbose=0)
    np.testing.assert_allclose(out[0], -1.0, atol=1e-6)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-6)


def test_head_layer_names_and_two_stage_copy(effnet):
    names = [layer.name for layer in effnet.layers]
    tail = names[names.index("embedding"):]
    assert tail == ["embedding", "head_dropout", "head_dense1", "head_dense1_dropout",
                    "head_dense2", "head_dense2_dropout", "predictions"]
    head = head_model(1280, 7)
    for layer in head.layers:  # pretend stage 1 trained it
        if layer.weights:
            layer.set_weights([np.full(w.shape, 0.01 * (i + 1), "float32")
                               for i, w in enumerate(layer.weights)])
    copied = copy_head_weights(head, effnet)
    assert copied == ["head_dense1", "head_dense2", "predictions"]
    np.testing.assert_array_equal(effnet.get_layer("head_dense2").get_weights()[0],
                                  head.get_layer("head_dense2").get_weights()[0])
    # the standalone head on the embedding = the full model (dropout is off at inference)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    features = feature_extractor(effnet)
    assert features.output.shape[-1] == 1280
    np.testing.assert_allclose(head.predict(features.predict(x, verbose=0), verbose=0),
                               effnet.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ModelError):
        copy_head_weights(head_model(1280, 3), effnet)


def _trainable_names(model):
    return {layer.name for layer in model.layers if layer.trainable and layer.weights}


def test_freeze_and_unfreeze(effnet):
    import keras

    freeze_backbone(effnet)
    assert _trainable_names(effnet) == {"head_dense1", "head_dense2", "predictions"}
    assert len(effnet.trainable_weights) == 6

    unfreeze_top(effnet, n_blocks=1)
    opened = _trainable_names(effnet) - {"head_dense1", "head_dense2", "predictions"}
    assert opened and all(n.startswith(("block7a_", "top_")) for n in opened)
    bns = [layer for layer in effnet.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert not any(bn.trainable for bn in bns)

    unfreeze_top(effnet, from_layer="block6a_expand_conv")
    assert "block6a_expand_conv" in _trainable_names(effnet)
    assert "block5c_expand_conv" not in _trainable_names(effnet)

    unfreeze_top(effnet)  # whole backbone, BN still frozen
    assert "stem_conv" in _trainable_names(effnet)
    assert not any(bn.trainable for bn in bns)

    # frozen BN runs in inference mode: a training step leaves its statistics alone
    bn = effnet.get_layer("top_bn")
    before = bn.moving_mean.numpy().copy()
    effnet.compile(optimizer="sgd", loss="categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    effnet.train_on_batch(x, np.eye(7, dtype="float32")[[0, 1, 2, 3]])
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)

    with pytest.raises(ModelError):
        unfreeze_top(effnet, from_layer="no_such_layer")
    freeze_backbone(effnet)


def test_primitive_resnet_unfreeze_by_blocks():
    model = build_model("resnet18_small", 3, input_shape=(32, 32, 3))
    unfreeze_top(model, n_blocks=2)
    opened = {n for n in _trainable_names(model) if n.startswith("conv")}
    assert opened and all(n.startswith(("conv5_block1_", "conv5_block2_")) for n in opened)


def test_efficientnet_local_imagenet_file_gets_the_imagenet_scaling(tmp_path):
    """keras adds Rescaling(1/sqrt(std)) only for weights="imagenet"; a local copy of the same
    file must give the same input normalisation: ((x/255 - mean) / std) / sqrt(std)."""
    import keras

    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    donor = keras.applications.EfficientNetB0(weights=None, include_top=False,
                                              input_shape=(32, 32, 3))
    norm = next(la for la in donor.layers if isinstance(la, keras.layers.Normalization))
    norm.set_weights([mean.astype("float32"), (std**2).astype("float32"), np.array(0)])
    donor.save_weights(tmp_path / "effb0.weights.h5")

    model = build_model("efficientnetb0", 3, input_shape=(32, 32, 3),
                        weights=str(tmp_path / "effb0.weights.h5"))
    layer = next(la for la in model.layers if isinstance(la, keras.layers.Normalization))
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    out = keras.Model(model.input, layer.output).predict(x, verbose=0)
    np.testing.assert_allclose(out, (x / 255 - mean) / std / np.sqrt(std), rtol=1e-4, atol=1e-4)
