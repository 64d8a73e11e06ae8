"""EMA weights, the windowed monitor, tempered class weights and the option checks."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from skinzoo.config import TrainConfig
from skinzoo.data.balance import class_weights, sample_weights_for
from skinzoo.errors import UsageError
from skinzoo.train.callbacks import BestCheckpoint, WeightAverage


def _tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(0.05), "categorical_crossentropy")
    return model


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[(x[:, 0] > 0).astype(int) + (x[:, 1] > 1)]
    return x, y


class _RawAtEpochEnd(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.raw = [w.copy() for w in self.model.get_weights()]


def test_ema_weights_are_validated_kept_and_differ_from_raw():
    model = _tiny_model()
    x, y = _data()
    ema, raw = WeightAverage(0.9), _RawAtEpochEnd()
    seen = {}

    class _ValWeights(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            seen["val"] = [w.copy() for w in self.model.get_weights()]

    model.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), verbose=0,
              callbacks=[ema, _ValWeights(), raw])
    final = model.get_weights()
    averaged = [np.asarray(v) for v in ema.shadow]
    assert all(np.allclose(f, a) for f, a in zip(final, averaged, strict=True))  # model leaves fit averaged
    assert any(not np.allclose(f, r) for f, r in zip(final, raw.raw, strict=True))  # and it is not the raw
    # validation ran on averaged weights (the callback order puts the swap first)
    assert any(not np.allclose(v, r) for v, r in zip(seen["val"], raw.raw, strict=True))


def test_best_checkpoint_saves_the_averaged_weights(tmp_path):
    model = _tiny_model()
    x, y = _data()
    ema = WeightAverage(0.9)
    best = BestCheckpoint(tmp_path / "best.keras", tmp_path / "state.json", "val_loss", mode="min",
                          averaged=ema, restore_best=False)
    raw = _RawAtEpochEnd()
    model.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), verbose=0,
              callbacks=[ema, best, raw])
    saved = keras.models.load_model(tmp_path / "best.keras", compile=False).get_weights()
    assert all(np.allclose(s, np.asarray(a)) for s, a in zip(saved, ema.shadow, strict=True))
    assert any(not np.allclose(s, r) for s, r in zip(saved, raw.raw, strict=True))


def test_window_ignores_one_lucky_epoch(tmp_path):
    model = _tiny_model()
    cb = BestCheckpoint(tmp_path / "best.keras", tmp_path / "state.json", "val_m", window=3,
                        restore_best=False)
    cb.set_model(model)
    cb.on_train_begin()
    # a lucky spike at epoch 2 (index 1); a steadily good run from epoch 4 on
    for epoch, value in enumerate([0.40, 0.70, 0.40, 0.55, 0.60, 0.62]):
        cb.on_epoch_end(epoch, {"val_m": value})
    assert cb.best_epoch == 5 and cb.best == pytest.approx(np.mean([0.55, 0.60, 0.62]))
    plain = BestCheckpoint(tmp_path / "b2.keras", tmp_path / "s2.json", "val_m", restore_best=False)
    plain.set_model(model)
    plain.on_train_begin()
    for epoch, value in enumerate([0.40, 0.70, 0.40, 0.55, 0.60, 0.62]):
        plain.on_epoch_end(epoch, {"val_m": value})
    assert plain.best_epoch == 1  # what a window of 1 picks


def test_tempered_class_weights():
    labels = np.array([0] * 90 + [1] * 10)
    full, half, none = (class_weights(labels, 2, p) for p in (1.0, 0.5, 0.0))
    assert full[1] / full[0] == pytest.approx(9.0)
    assert half[1] / half[0] == pytest.approx(3.0)
    np.testing.assert_allclose(none, [1.0, 1.0])
    for power in (1.0, 0.5, 0.0):  # the mean sample weight stays 1 whatever the power
        assert sample_weights_for(labels, 2, power=power).mean() == pytest.approx(1.0)


@pytest.mark.parametrize("options, match", [
    (dict(loss="logit-adjusted", balance="class-weight"), "twice"),
    (dict(ema=1.5), "ema"),
    (dict(mixup=-1.0), "mixup"),
    (dict(class_weight_power=3.0), "class_weight_power"),
    (dict(monitor_window=0), "monitor_window"),
    (dict(color_constancy="purple"), "color_constancy"),
    (dict(augment="wild"), "augment"),
])
def test_bad_options_are_refused(options, match):
    with pytest.raises(UsageError, match=match):
        TrainConfig(**options).validate()


def test_colour_constancy_power_from_the_name():
    assert TrainConfig().color_constancy_power is None
    assert TrainConfig(color_constancy="gray-world").color_constancy_power == 1.0
    assert TrainConfig(color_constancy="shades-of-gray", color_power=4.0).color_constancy_power == 4.0
