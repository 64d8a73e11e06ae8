"""Snapshot checkpoints (skinzoo train --snapshots K): which epochs, what is written, and when not."""

from __future__ import annotations

import numpy as np
import pytest

from skinzoo.errors import UsageError
from skinzoo.rundir import list_snapshots, require_snapshots, snapshot_name
from skinzoo.train.snapshots import snapshot_callbacks, snapshot_epochs


@pytest.mark.parametrize("epochs, k, expected", [
    (10, 3, [5, 7, 9]),  # spread over the second half, ending at the last epoch
    (10, 5, [5, 6, 7, 8, 9]),  # K = half the epochs: the last K
    (10, 8, [2, 3, 4, 5, 6, 7, 8, 9]),  # K above half: still the last K
    (2, 2, [0, 1]),
    (3, 5, [0, 1, 2]),  # more snapshots than epochs: every epoch once
    (20, 1, [19]),
    (10, 0, []),
])
def test_snapshot_epochs(epochs, k, expected):
    assert snapshot_epochs(epochs, k) == expected


def test_snapshot_callbacks_off_by_default():
    assert snapshot_callbacks(0, "/nonexistent", 10) == []


def _tiny(keras):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    out = keras.layers.Dense(3, activation="softmax", name="predictions")(
        keras.layers.Dense(4, activation="relu")(inp))
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


class _WeightsAtEpochEnd:
    """Records the model's weights at the end of every epoch (to compare the files with)."""

    def __init__(self, keras):
        outer = self
        self.weights = []

        class Recorder(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                outer.weights.append([w.copy() for w in self.model.get_weights()])

        self.callback = Recorder()


def test_saver_writes_the_chosen_epochs_atomically(keras, tmp_path):
    from skinzoo.models.files import load_model_file

    model = _tiny(keras)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, 64)
    record = _WeightsAtEpochEnd(keras)
    saver, = snapshot_callbacks(2, tmp_path, epochs=4, offset=1)  # e.g. after a 1-epoch head stage
    model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[record.callback, saver])
    files = list_snapshots(tmp_path)
    # epochs 3 and 4 of this fit = epochs 4 and 5 of the run (offset 1), as the progress lines count
    assert [f.name for f in files] == [snapshot_name(4), snapshot_name(5)] == ["epoch_004.keras", "epoch_005.keras"]
    assert not [p for p in (tmp_path / "snapshots").iterdir() if p not in files]  # no temporary files left
    for f, epoch in zip(files, (2, 3), strict=True):
        saved = load_model_file(f).get_weights()
        for a, b in zip(saved, record.weights[epoch], strict=True):
            np.testing.assert_array_equal(a, b)
    first, last = (load_model_file(f).get_weights()[0] for f in files)
    assert not np.allclose(first, last)  # two different epochs, not one model saved twice


def test_saver_keeps_the_averaged_weights_with_ema(keras, tmp_path):
    from skinzoo.models.files import load_model_file
    from skinzoo.train.callbacks import WeightAverage

    model = _tiny(keras)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, 64)
    averaged = WeightAverage(0.9)
    saver, = snapshot_callbacks(1, tmp_path, epochs=2, averaged=averaged)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[averaged, saver])
    # WeightAverage leaves the averaged weights in the model at the end of fit
    saved = load_model_file(list_snapshots(tmp_path)[0]).get_weights()
    for a, b in zip(saved, model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_require_snapshots_refuses_fewer_than_two(tmp_path):
    with pytest.raises(UsageError, match="no snapshots") as err:
        require_snapshots(tmp_path)
    assert "--snapshots K" in err.value.hint
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "epoch_003.keras").write_bytes(b"x")
    (tmp_path / "snapshots" / "epoch_004.keras.tmp").write_bytes(b"x")  # an interrupted write
    with pytest.raises(UsageError, match=r"only 1 snapshot \(epoch_003.keras\)"):
        require_snapshots(tmp_path)


def test_start_up_lines_say_snapshots_are_kept():
    from skinzoo.config import TrainConfig
    from skinzoo.train.prepare import regulariser_summary

    assert not any("snapshot" in part for part in regulariser_summary(TrainConfig()))
    assert any(part.startswith("3 snapshot") for part in regulariser_summary(TrainConfig(snapshots=3)))
