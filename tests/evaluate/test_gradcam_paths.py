"""Grad-CAM's two routes give the heat maps the graph-replay-only code gave before the public
route existed: flat zoo models (public ``keras.Model(inputs, [layer.output, ...])``), a fused
two-input model, and an ensemble of sub-models (graph replay, private Keras behind the version
gate).

REFERENCE holds per-image sums and maxima of heat maps computed by the previous code (every model
through graph replay) on the same seeded weights and images, captured before the change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skinzoo.errors import ModelError

REFERENCE = {  # case: (sum of each image's heat map, max of each), previous code, Keras 3.15.1
    "flat gradcam": ([0.63394654, 0.59268934, 0.58669007], [0.062846884, 0.068523869, 0.061758608]),
    "flat gradcam++": ([10.57481956, 10.2072773, 10.19441319], [0.845472515, 0.849841475, 0.767700315]),
    "flat binary": ([0.55750144, 0.54109424, 0.58924162], [0.064815886, 0.053244226, 0.059897449]),
    "ensemble gradcam": ([0.00479273, 0.01850331, 0.02888561], [0.001949923, 0.004227894, 0.004547322]),
    "ensemble member1 layer": ([0.02903818, 0.03110206, 0.03087784], [0.000830556, 0.000827806, 0.000919998]),
    "fused": ([0.24944481, 0.26007733, 0.26132837], [0.030044971, 0.02986444, 0.029213501]),
}
CLASSES = ["x", "y", "z"]


def _filled(model, seed):
    """Weights from a seeded numpy generator (not Keras's initialisers), so REFERENCE does not
    depend on how a Keras version draws its random weights."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        shape, path = tuple(w.shape), w.path
        if "variance" in path:
            v = rng.uniform(0.5, 1.5, shape)
        elif "gamma" in path:
            v = 1 + rng.normal(0, 0.1, shape)
        elif len(shape) >= 2:
            v = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
        else:
            v = rng.normal(0, 0.05, shape)
        values.append(v.astype(np.float32))
    model.set_weights(values)
    return model


def _resnet(k, seed):
    from skinzoo.models.registry import build_model

    return _filled(build_model("compact_resnet", k, input_shape=(32, 32, 3)), seed)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)


def _assert_as_before(heatmaps, case):
    sums, maxima = REFERENCE[case]
    np.testing.assert_allclose(heatmaps.sum(axis=(1, 2)), sums, rtol=1e-4, err_msg=case)
    np.testing.assert_allclose(heatmaps.max(axis=(1, 2)), maxima, rtol=1e-4, err_msg=case)


def _same_outputs(a, b, inputs):
    for x, y in zip(a.model(inputs, training=False), b.model(inputs, training=False), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_flat_zoo_model_takes_the_public_route_with_the_same_heat_maps(keras, images):
    from skinzoo.evaluate.gradcam import GradCam, build_cam_model, replayed_cam_model

    model = _resnet(3, 1)
    for method in ("gradcam", "gradcam++"):
        cam = GradCam(model, method=method)
        assert cam.cam.route == "public" and cam.layer_path == ["stage3_block2_out"]
        assert cam.cam.score_is_logits  # logits from the linear twin of `predictions`
        _assert_as_before(cam.explain([images], None).heatmaps, f"flat {method}")
    # the public model computes exactly what graph replay computes
    _same_outputs(build_cam_model(model), replayed_cam_model(model, ["stage3_block2_out"]), [images])
    binary = GradCam(_resnet(2, 2))
    assert binary.cam.route == "public" and binary.cam.num_outputs == 1
    _assert_as_before(binary.explain([images], None).heatmaps, "flat binary")


def test_flat_sequential_takes_the_public_route(keras, images):
    from skinzoo.evaluate.gradcam import build_cam_model, replayed_cam_model

    model = _filled(keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.0),
                                      keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                                      keras.layers.GlobalAveragePooling2D(),
                                      keras.layers.Dense(3), keras.layers.Softmax()]), 5)
    cam = build_cam_model(model)
    assert cam.route == "public" and cam.layer_path == ["conv"] and cam.score_is_logits
    _same_outputs(cam, replayed_cam_model(model, ["conv"]), [images])


def test_ensemble_of_sub_models_replays_the_graph_with_the_same_heat_maps(keras, images):
    from skinzoo.evaluate.gradcam import GradCam
    from skinzoo.models.ensemble import Member, build_ensemble

    first, second = _resnet(3, 1), _resnet(3, 3)
    ensemble = build_ensemble([Member(first, "a", CLASSES, "multiclass", (32, 32)),
                               Member(second, "b", CLASSES, "multiclass", (32, 32))])
    cam = GradCam(ensemble)
    assert cam.cam.route == "replay" and cam.layer_path == ["member2_b", "stage3_block2_out"]
    assert not cam.cam.score_is_logits  # the mean of probabilities has no logits
    result = cam.explain([images], None)
    _assert_as_before(result.heatmaps, "ensemble gradcam")
    inner_first = GradCam(ensemble, layer="member1_a/stage2_block2_out")
    _assert_as_before(inner_first.explain([images], 1).heatmaps, "ensemble member1 layer")

    # and independently of replay: Grad-CAM by hand on member 2 with public Keras only
    from skinzoo.runtime import tf

    t = tf()
    inner = keras.Model(second.inputs, [second.get_layer("stage3_block2_out").output, second.output])
    cls = result.class_index
    with t.GradientTape() as tape:
        act, p2 = inner([images], training=False)
        probs = 0.5 * t.clip_by_value(first(images, training=False), 1e-7, 1.0) + \
            0.5 * t.clip_by_value(p2, 1e-7, 1.0)
        total = t.reduce_sum(t.gather(probs, cls, batch_dims=1))
    grads = tape.gradient(total, act)
    by_hand = t.nn.relu(t.einsum("bhwc,bc->bhw", act, t.reduce_mean(grads, axis=(1, 2))))
    np.testing.assert_allclose(result.heatmaps, np.asarray(by_hand), rtol=1e-4, atol=1e-9)


def test_fused_two_input_model_takes_the_public_route(keras, images):
    from skinzoo.data.metadata import fit_encoding, requested_fields
    from skinzoo.evaluate.gradcam import GradCam
    from skinzoo.models.fusion import with_metadata
    from skinzoo.models.graph import input_names

    table = pd.DataFrame({"age": [50.0, np.nan, 30.0], "sex": ["male", "unknown", "female"],
                          "site": ["back", "face", "back"]})
    encoding = fit_encoding(table, requested_fields("age,sex,site"))
    from skinzoo.models.registry import build_model

    fused = _filled(with_metadata(build_model("compact_resnet", 3, input_shape=(32, 32, 3)),
                                  encoding, 3), 4)
    assert input_names(fused) == ["image", "metadata"]
    cam = GradCam(fused)
    assert cam.cam.route == "public" and cam.cam.image_index == 0
    assert [t.name for t in cam.cam.model.inputs] == ["image", "metadata"]
    _assert_as_before(cam.explain([images, encoding.encode_table(table)], None).heatmaps, "fused")


def test_replay_refuses_on_an_unchecked_keras_and_the_public_route_still_works(keras, images,
                                                                                monkeypatch):
    """Outside the checked Keras range the private graph replay is not attempted: a clear error
    for nested models, while flat models (public route) are unaffected."""
    import skinzoo.keras_version as kv
    from skinzoo.evaluate.gradcam import GradCam
    from skinzoo.models.ensemble import Member, build_ensemble

    first = _resnet(3, 1)
    ensemble = build_ensemble([Member(first, "a", CLASSES, "multiclass", (32, 32)),
                               Member(_resnet(3, 3), "b", CLASSES, "multiclass", (32, 32))])
    monkeypatch.setattr(kv, "keras_version", lambda: (3, 99, 0))
    with pytest.raises(ModelError, match=r"checked on keras>=3\.15,<3\.16 only; this is Keras 3\.99\.0"):
        GradCam(ensemble)
    _assert_as_before(GradCam(first).explain([images], None).heatmaps, "flat gradcam")
