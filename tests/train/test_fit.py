"""End-to-end training on tiny synthetic data, in process (TensorFlow imported once)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from skinzoo.config import TrainConfig, load_toml, resolve
from skinzoo.errors import TrainingError, UsageError
from skinzoo.evaluate.predict import load_model_file
from skinzoo.train.fit import train
from skinzoo.train.run import find_latest_run


def tiny(synth_dir, tmp_path, **overrides) -> TrainConfig:
    base = dict(data=str(synth_dir), model="simple_cnn", img_size=32, batch_size=16, epochs=2,
                out=str(tmp_path / "runs"), tensorboard=False, seed=1, cache="memory")
    base.update(overrides)
    return TrainConfig(**base).validate()


def quiet(*_):
    pass


def test_multiclass_run_directory_is_complete(synth_dir, tmp_path):
    lines = []
    result = train(tiny(synth_dir, tmp_path, model="compact_resnet", tensorboard=True), echo=lines.append)
    run = result.run
    for f in ("config.toml", "split.csv", "classes.json", "history.csv", "best.keras", "curves.png",
              "metrics.json", "state.json"):
        assert (run.path / f).exists(), f
    assert (run.path / "tensorboard").is_dir()
    assert not run.backup.exists()  # removed once the run finished
    history = pd.read_csv(run.history)
    assert history["epoch"].tolist() == [0, 1]
    assert {"loss", "val_loss", "val_balanced_accuracy", "val_auc", "lr"} <= set(history.columns)
    info = json.loads(run.classes_file.read_text())
    assert info["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"] and info["img_size"] == 32
    model = load_model_file(run.best_model)
    assert model.output_shape == (None, 7)
    metrics = json.loads(run.metrics.read_text())
    assert metrics["split"] == "val" and 0 <= metrics["balanced_accuracy"] <= 1
    split = pd.read_csv(run.split)
    assert split.groupby("group")["split"].nunique().max() == 1  # no lesion on two sides
    text = "\n".join(lines)
    assert "steps per epoch" in text and "parameters" in text and "next: skinzoo evaluate" in text
    assert find_latest_run(tmp_path / "runs").path == run.path


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup-cosine", "onecycle", "step", "plateau"])
def test_each_schedule_trains(synth_dir, tmp_path, schedule):
    result = train(tiny(synth_dir, tmp_path, schedule=schedule), echo=quiet)
    history = pd.read_csv(result.run.history)
    assert len(history) == 2 and np.isfinite(history["loss"]).all()
    if schedule == "constant":
        assert history["lr"].nunique() == 1
    if schedule in ("cosine", "onecycle"):
        assert history["lr"].iloc[1] < history["lr"].iloc[0]


@pytest.mark.slow
@pytest.mark.parametrize("balance", ["none", "class-weight", "oversample", "smote", "smote-tomek", "smote-enn"])
def test_each_balance_mode_trains(synth_dir, tmp_path, balance):
    result = train(tiny(synth_dir, tmp_path, balance=balance, epochs=1), echo=quiet)
    assert len(pd.read_csv(result.run.history)) == 1
    assert result.run.best_model.exists()


def test_binary_task_single_sigmoid(synth_dir, tmp_path):
    result = train(tiny(synth_dir, tmp_path, task="binary"), echo=quiet)
    info = json.loads(result.run.classes_file.read_text())
    assert info["classes"] == ["benign", "malignant"]
    model = load_model_file(result.run.best_model)
    assert model.output_shape == (None, 1)
    history = pd.read_csv(result.run.history)
    assert {"val_sensitivity", "val_specificity", "val_auc"} <= set(history.columns)


def test_same_seed_same_history_and_config_round_trip(synth_dir, tmp_path):
    first = train(tiny(synth_dir, tmp_path, seed=7), echo=quiet)
    # Repeat through the resolved config the run wrote: identical split and identical history.
    again = train(resolve(load_toml(first.run.config)).validate(), echo=quiet)
    a, b = pd.read_csv(first.run.history), pd.read_csv(again.run.history)
    pd.testing.assert_frame_equal(a, b)
    assert pd.read_csv(first.run.split)["split"].tolist() == pd.read_csv(again.run.split)["split"].tolist()


def test_nan_loss_stops_with_clear_message(synth_dir, tmp_path):
    config = tiny(synth_dir, tmp_path, optimizer="sgd", lr=1e12, schedule="constant", epochs=3,
                  balance="none")
    with pytest.raises(TrainingError, match="NaN") as err:
        train(config, echo=quiet)
    assert "learning rate" in err.value.hint and "--lr" in err.value.hint


def test_overfit_batch_passes_for_a_capable_model(synth_dir, tmp_path):
    lines = []
    result = train(tiny(synth_dir, tmp_path, overfit_batch=True, batch_size=8, model="compact_resnet"),
                   echo=lines.append)
    assert result.val_metrics["overfit_passed"], lines


def test_bad_options_are_usage_errors(synth_dir, tmp_path):
    with pytest.raises(UsageError, match="monitor"):
        train(tiny(synth_dir, tmp_path, monitor="val_nonsense", epochs=1), echo=quiet)
    with pytest.raises(UsageError, match="no dataset"):
        train(TrainConfig(out=str(tmp_path)), echo=quiet)


def test_explicit_stages_need_the_shared_head(synth_dir, tmp_path):
    with pytest.raises(UsageError, match="transfer head"):
        train(tiny(synth_dir, tmp_path, model="compact_resnet", stages="both"), echo=quiet)
    assert not list((tmp_path / "runs").glob("*/classes.json"))  # nothing left behind
