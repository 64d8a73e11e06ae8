"""Grad-CAM on models built in the test: a known-evidence model, nested backbones, two inputs."""

from __future__ import annotations

import numpy as np
import pytest

from skinzoo.errors import ModelError, UsageError

RED = (slice(2, 10), slice(20, 30))    # top-right block: row < col, so a transposed map fails
BLUE = (slice(22, 30), slice(2, 12))   # bottom-left block


def _colour_model(keras, softmax=True):
    """Channel 0 of `features` detects red, channel 1 blue (fixed 1x1 conv + ReLU). Class 0's
    logit is the mean blue response, class 1's the mean red one, so the evidence for class 1 is
    exactly where the red blob is and for class 0 where the blue one is."""
    inp = keras.Input((32, 32, 3))
    feats = keras.layers.Conv2D(2, 1, activation="relu", name="features")(inp)
    pooled = keras.layers.GlobalAveragePooling2D()(feats)
    out = keras.layers.Dense(2, activation="softmax", name="predictions")(pooled)
    model = keras.Model(inp, out)
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[0, 0, :, 0] = [1.0, -1.0, -1.0]   # red minus the rest
    kernel[0, 0, :, 1] = [-1.0, -1.0, 1.0]   # blue minus the rest
    model.get_layer("features").set_weights([kernel, np.zeros(2, np.float32)])
    model.get_layer("predictions").set_weights([np.array([[0.0, 1.0], [1.0, 0.0]], np.float32),
                                                np.zeros(2, np.float32)])
    return model


def _blob_images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.1, (n, 32, 32, 3)).astype(np.float32)  # faint grey noise
    x[:, RED[0], RED[1]] = [1.0, 0.0, 0.0]
    x[:, BLUE[0], BLUE[1]] = [0.0, 0.0, 1.0]
    return x


def _peak_inside(heat, region):
    r, c = np.unravel_index(np.argmax(heat), heat.shape)
    return region[0].start <= r < region[0].stop and region[1].start <= c < region[1].stop


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_heatmap_peaks_where_the_evidence_is(keras, method):
    from skinzoo.evaluate.gradcam import GradCam, upsample

    model = _colour_model(keras)
    x = _blob_images()
    cam = GradCam(model, method=method)
    assert cam.layer_path == ["features"] and cam.cam.score_is_logits
    for cls, region, other in ((1, RED, BLUE), (0, BLUE, RED)):
        result = cam.explain([x], cls, batch_size=2)
        assert result.heatmaps.shape == (3, 32, 32)
        for h in result.heatmaps:
            heat = upsample(h, (32, 32))
            assert _peak_inside(heat, region)
            assert heat[region].mean() > 20 * max(heat[other].mean(), 1e-6)
    assert np.allclose(result.probs, model.predict(x, verbose=0), atol=1e-5)


def test_batched_equals_one_at_a_time(keras):
    from skinzoo.evaluate.gradcam import GradCam

    model = _colour_model(keras)
    x = _blob_images(n=5, seed=1)
    cam = GradCam(model)
    batched = cam.explain([x], None, batch_size=4).heatmaps  # 4 + padded 1
    single = np.concatenate([cam.explain([x[i:i + 1]], None, batch_size=1).heatmaps for i in range(5)])
    assert np.allclose(batched, single, rtol=1e-4, atol=1e-6)


def test_nested_sequential_backbone(keras):
    from skinzoo.evaluate.gradcam import GradCam

    backbone = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(64, 64, 3),
                                              alpha=0.35)
    model = keras.Sequential([keras.Input((64, 64, 3)), backbone, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    cam = GradCam(model)
    assert cam.layer_path == [backbone.name, "out_relu"]
    result = cam.explain([x], None)
    assert result.heatmaps.shape == (3, 2, 2) and np.isfinite(result.heatmaps).all()
    assert np.allclose(result.probs, model.predict(x, verbose=0), atol=1e-5)
    inner = GradCam(model, layer="block_13_expand_relu")
    assert inner.layer_path == [backbone.name, "block_13_expand_relu"]
    assert inner.explain([x], 2).heatmaps.shape == (3, 4, 4)


def test_functional_wrapping_functional_backbone_sigmoid(keras):
    from skinzoo.evaluate.gradcam import GradCam

    inp = keras.Input((32, 32, 3))
    y = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    y = keras.layers.Conv2D(6, 3, activation="relu", name="c2")(y)
    backbone = keras.Model(inp, y, name="backbone")
    outer_in = keras.Input((32, 32, 3))
    z = backbone(keras.layers.Rescaling(1 / 255.0)(outer_in))
    z = keras.layers.GlobalAveragePooling2D()(z)
    model = keras.Model(outer_in, keras.layers.Dense(1, activation="sigmoid", name="predictions")(z))
    x = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    cam = GradCam(model, method="gradcam++")
    assert cam.layer_path == ["backbone", "c2"]
    result = cam.explain([x], None)
    assert result.heatmaps.shape == (4, 28, 28) and result.probs.shape == (4, 2)
    assert np.allclose(result.probs[:, 1], model.predict(x, verbose=0)[:, 0], atol=1e-5)
    assert GradCam(model, layer="backbone/c1").layer_path == ["backbone", "c1"]
    with pytest.raises(UsageError, match="no layer named"):
        GradCam(model, layer="nope")


def test_two_input_model_with_metadata(keras, caplog):
    from skinzoo.evaluate.gradcam import GradCam
    from skinzoo.evaluate.predict import model_inputs, parse_meta

    image = keras.Input((32, 32, 3), name="image")
    meta = keras.Input((2,), name="meta")
    f = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    f = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(f), meta])
    model = keras.Model([image, meta], keras.layers.Dense(3, activation="softmax")(f))
    # pixels in [0, 1]: this model has no rescaling, and 0-255 saturates its random-init softmax
    # so much that the metadata could not change the probabilities (the check below was flaky)
    x = np.random.default_rng(3).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    zeros = model_inputs(model, x)
    assert "filled with zeros" in caplog.text and np.all(zeros[1] == 0)
    given = model_inputs(model, x, parse_meta("meta=55:1"))
    assert np.allclose(given[1], [[55, 1], [55, 1]])
    cam = GradCam(model)
    assert cam.layer_path == ["conv"]
    r0, r1 = cam.explain(zeros, 0), cam.explain(given, 0)
    assert np.allclose(r1.probs, model.predict(given, verbose=0), atol=1e-5)
    assert not np.allclose(r0.probs, r1.probs)  # the metadata reaches the prediction
    with pytest.raises(UsageError, match="unknown input"):
        model_inputs(model, x, parse_meta("age=3"))


def test_model_without_feature_map_is_a_clear_error(keras):
    from skinzoo.evaluate.gradcam import GradCam

    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inp)))
    with pytest.raises(ModelError, match="no convolutional feature map"):
        GradCam(model)
