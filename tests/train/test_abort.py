"""The job's AbortState: set by the callbacks that stop a fit, read by those that write, turned
into the user's error after the fit; nothing is hung on the Keras model."""

from types import SimpleNamespace

import pytest

from skinzoo.errors import TrainingError
from skinzoo.rundir import RunDir
from skinzoo.train.abort import AbortState
from skinzoo.train.parts import TrainingInterrupted, raise_if_aborted


@pytest.fixture()
def tiny_model():
    import keras

    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])


def test_nan_guard_sets_the_shared_state_and_writers_skip_the_epoch(tiny_model, tmp_path):
    from skinzoo.train import callbacks as cb

    abort = AbortState()
    guard, history = cb.NaNGuard(abort), cb.HistoryLogger(tmp_path / "history.csv", abort=abort)
    unaware = cb.HistoryLogger(tmp_path / "other.csv")  # given no state: never sees an abort
    before = set(vars(tiny_model))
    for c in (guard, history, unaware):
        c.set_model(tiny_model)
        c.on_train_begin()
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(5, {"loss": float("nan")})
    assert (abort.kind, abort.epoch, abort.batch) == ("nan", 2, 5)
    assert tiny_model.stop_training
    history.on_epoch_end(2, {"loss": 1.0})
    unaware.on_epoch_end(2, {"loss": 1.0})
    assert not (tmp_path / "history.csv").exists()  # the cut-short epoch wrote no row
    assert (tmp_path / "other.csv").exists()
    assert set(vars(tiny_model)) - before <= {"stop_training"}  # no skinzoo flag on the model


def test_abort_state_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown abort kind"):
        AbortState().set("oops", 0, 0)


def _prepared(tmp_path):
    return SimpleNamespace(run=RunDir(tmp_path), strategy=SimpleNamespace(is_chief=True))


def test_raise_if_aborted_names_the_cause(tmp_path):
    p = _prepared(tmp_path)
    raise_if_aborted(AbortState(), p, 0.1)  # not aborted: nothing raised
    nan = AbortState()
    nan.set("nan", 0, 3)
    with pytest.raises(TrainingError, match=r"NaN/inf at epoch 1, batch 4") as err:
        raise_if_aborted(nan, p, 0.1)
    assert "--lr 0.01" in err.value.hint
    stopped = AbortState()
    stopped.set("interrupt", 1, 0)
    with pytest.raises(TrainingInterrupted, match="before any epoch finished"):
        raise_if_aborted(stopped, p, 0.1)
    (tmp_path / "history.csv").write_text("epoch\n0\n")
    with pytest.raises(TrainingInterrupted, match="during epoch 2") as err:
        raise_if_aborted(stopped, p, 0.1)
    assert f"--resume {tmp_path}" in err.value.hint
