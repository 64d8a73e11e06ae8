"""The Keras version gate and the scope of the multi-worker workarounds (one process, no cluster:
tests/train/test_keras_compat_multiworker.py reproduces the bugs themselves)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import skinzoo.keras_version as kv
from skinzoo.train.keras_compat import (
    BUILD,
    REDUCE,
    local_batch_build,
    multi_worker_fit,
    scalar_safe_reduce,
)


@pytest.fixture
def trainer(keras):
    from keras.src.backend.tensorflow import trainer

    return trainer


def _tiny(keras):
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(inp))
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 2, 16)


@pytest.mark.parametrize("text, version", [("3.15.1", (3, 15, 1)), ("3.16.0rc1", (3, 16, 0)),
                                           ("3.16.0.dev2025", (3, 16, 0)), ("4.0", (4, 0, 0))])
def test_parse_version(text, version):
    assert kv.parse_version(text) == version


def test_installed_keras_is_in_the_tested_range_and_the_pin_says_the_same():
    """The installed Keras is one setup.cfg allows, and setup.cfg's pin is TESTED."""
    import configparser
    from pathlib import Path

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).parents[2] / "setup.cfg")
    requires = [r.strip() for r in cfg["options"]["install_requires"].splitlines()]
    assert f"keras{kv.range_text(kv.TESTED)}" in requires
    low, high = kv.TESTED
    assert low <= kv.keras_version()[:2] < high


def test_each_private_use_is_checked_on_its_range_only():
    for key in kv.PRIVATE_USES:
        assert kv.is_checked(key, (3, 15, 1))
        assert not kv.is_checked(key, (3, 14, 9)) and not kv.is_checked(key, (3, 16, 0))


def test_outside_the_checked_range_nothing_is_patched_and_one_warning_says_so(keras, trainer, monkeypatch,
                                                                            caplog):
    from skinzoo.runtime import tf

    monkeypatch.setattr(kv, "keras_version", lambda: (3, 99, 0))
    monkeypatch.setattr(kv, "_WARNED", set())
    original = trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build
    model = _tiny(keras)
    ds = tf().data.Dataset.from_tensor_slices(_data()).batch(8)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with multi_worker_fit(model, ds, tf().distribute.get_strategy()):
                assert (trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build) == original
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # one per workaround, not one per fit
    for key, line in zip((BUILD, REDUCE), lines, strict=True):
        assert f"Keras 3.99.0 is outside keras>=3.15,<3.16, where the workaround '{key}' was checked" in line
    assert not model.optimizer.built  # the local-batch build did not run either


def test_workarounds_live_only_inside_the_block_and_leave_the_model_alone(keras, trainer):
    from skinzoo.runtime import tf

    original = trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build
    model = _tiny(keras)
    ds = tf().data.Dataset.from_tensor_slices(_data()).batch(8)
    with pytest.raises(RuntimeError, match="boom"), multi_worker_fit(model, ds, tf().distribute.get_strategy()):
        assert trainer.reduce_per_replica is not original[0]
        assert trainer.TensorFlowTrainer._maybe_symbolic_build is not original[1]
        assert model.optimizer.built  # built (weights, loss, metrics, optimizer) from a local batch
        raise RuntimeError("boom")
    assert (trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build) == original
    assert "_maybe_symbolic_build" not in vars(model)  # no attribute set on the Keras object


def test_single_machine_fit_is_unchanged_inside_the_workarounds(keras):
    """The patched functions hand every non-multi-worker call to Keras's own: same losses."""
    from skinzoo.runtime import tf

    t = tf()
    x, y = _data()
    losses = []
    for patched in (False, True):
        keras.utils.set_random_seed(7)
        model = _tiny(keras)
        ds = t.data.Dataset.from_tensor_slices((x, y)).batch(8)
        if patched:
            with local_batch_build(model, ds, t.distribute.get_strategy()), scalar_safe_reduce():
                history = model.fit(ds, epochs=2, verbose=0, shuffle=False)
        else:
            history = model.fit(ds, epochs=2, verbose=0, shuffle=False)
        losses.append(history.history["loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
