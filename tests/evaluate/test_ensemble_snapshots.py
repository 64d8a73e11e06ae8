"""`skinzoo ensemble --snapshots` (one run's snapshot checkpoints as members) and `--fit-weights`
(validation-fitted weights, refused without a shared split)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from skinzoo_cli.main import cli

from .conftest import make_run


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory, synth_dir):
    """A run trained 1 epoch, then 3 more with SnapshotSaver keeping epochs 2..4 (all three)."""
    from skinzoo.data.pipeline import load_images
    from skinzoo.data.sources import load_dataset
    from skinzoo.models.files import load_model_file
    from skinzoo.rundir import list_snapshots
    from skinzoo.train.snapshots import snapshot_callbacks

    run = make_run(tmp_path_factory.mktemp("snap"), synth_dir, epochs=1, seed=3, name="20260101-000000-snap")
    split = pd.read_csv(run / "split.csv")
    train = split[split["split"] == "train"]
    ds = load_dataset(synth_dir)
    y = np.asarray([ds.classes.index(v) for v in train["label"]])
    model = load_model_file(run / "best.keras")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(load_images(train["path"], 32), y, epochs=3, batch_size=16, verbose=0,
              callbacks=snapshot_callbacks(3, run, epochs=3, offset=1))
    assert [p.name for p in list_snapshots(run)] == ["epoch_002.keras", "epoch_003.keras", "epoch_004.keras"]
    return run


def test_snapshot_ensemble_with_fitted_weights(snapshot_run, tmp_path):
    from skinzoo.data.pipeline import load_images
    from skinzoo.models.ensemble import combine
    from skinzoo.models.files import load_model_file
    from skinzoo.rundir import list_snapshots

    out = tmp_path / "snap-ens"
    runner = CliRunner()
    res = runner.invoke(cli, ["ensemble", str(snapshot_run), "--snapshots", "--fit-weights", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = res.output
    assert "epoch_002@20260101-000000-snap" in text and "ensemble (equal weights)" in text
    assert "ensemble (fitted weights)" in text and "validation log loss" in text
    saved = json.loads((out / "ensemble.json").read_text())
    assert saved["from_snapshots"] is True and saved["weights_fitted_on"] == "val"
    assert len(saved["weights"]) == 3 and abs(sum(saved["weights"]) - 1) < 1e-6
    assert min(saved["weights"]) >= 0
    # the fit minimises validation log loss: it cannot end worse than equal weights
    assert saved["validation"]["log_loss"]["fitted"] <= saved["validation"]["log_loss"]["equal"] + 1e-9
    assert (out / "split.csv").read_bytes() == (snapshot_run / "split.csv").read_bytes()
    # the graph is the weighted mean of the snapshot models
    images = load_images(pd.read_csv(snapshot_run / "split.csv")["path"][:6], 32)
    members = [load_model_file(f).predict(images, verbose=0) for f in list_snapshots(snapshot_run)]
    got = load_model_file(out / "best.keras").predict(images, verbose=0)
    np.testing.assert_allclose(got, combine(members, saved["weights"]), atol=1e-5)
    # evaluated on the run's own test split, and listed beside the run
    for target in (out, snapshot_run):
        res = runner.invoke(cli, ["evaluate", str(target), "--bootstrap", "10"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["compare", str(snapshot_run), str(out)])
    assert res.exit_code == 0 and out.name in res.output and "ensemble" in res.output
    assert "DIFFERENT splits" not in res.output


def test_snapshot_and_fit_weights_refusals(snapshot_run, run_factory, tmp_path):
    runner = CliRunner()

    def refused(*args):
        res = runner.invoke(cli, ["ensemble", *map(str, args)])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        return " ".join(res.output.split())

    assert "is a file" in refused(snapshot_run / "best.keras", "--snapshots", "--out", tmp_path / "a.keras")
    plain = run_factory(tmp_path / "runs", seed=3, name="20260101-000001-plain")  # same split, no snapshots
    text = refused(plain, "--snapshots", "--out", tmp_path / "b.keras")
    assert "no snapshots" in text and "--snapshots K" in text
    bare = tmp_path / "loose" / "model.keras"
    bare.parent.mkdir()
    shutil.copyfile(plain / "best.keras", bare)
    shutil.copyfile(plain / "classes.json", bare.parent / "classes.json")  # class names, still no split
    text = refused(plain, bare, "--fit-weights", "--out", tmp_path / "c.keras")
    assert "loose/model.keras is a model file without a run directory" in text and "--weights W1,W2" in text
    other = run_factory(tmp_path / "runs", seed=4, name="20260101-000002-other")  # another split
    text = refused(plain, other, "--fit-weights", "--out", tmp_path / "d.keras")
    assert "split.csv differ" in text and "--split-file" in text
    assert "both set the weights" in refused(plain, snapshot_run, "--fit-weights", "--weights", "1,2",
                                             "--out", tmp_path / "e.keras")
    assert not list(tmp_path.glob("*.keras"))  # nothing written by a refused command


@pytest.mark.slow
def test_train_snapshots_then_ensemble_them(synth_dir, tmp_path):
    """The real path: `skinzoo train --snapshots 2` (with metadata), then the snapshot ensemble."""
    from skinzoo.rundir import list_snapshots

    runner = CliRunner()
    res = runner.invoke(cli, ["train", "--data", str(synth_dir), "--model", "simple_cnn", "--img-size", "32",
                              "--batch-size", "16", "--epochs", "2", "--snapshots", "2", "--metadata", "age,sex",
                              "--no-tensorboard", "--cache", "memory", "--out", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    run, = (tmp_path / "runs").iterdir()
    assert [p.name for p in list_snapshots(run)] == ["epoch_001.keras", "epoch_002.keras"]
    assert "snapshots = 2" in (run / "config.toml").read_text()
    out = tmp_path / "ens"
    res = runner.invoke(cli, ["ensemble", str(run), "--snapshots", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "metadata.json").read_text() == (run / "metadata.json").read_text()
    res = runner.invoke(cli, ["evaluate", str(out), "--bootstrap", "10"])
    assert res.exit_code == 0 and "balanced accuracy" in res.output, res.output
    res = runner.invoke(cli, ["train", "--data", str(synth_dir), "--snapshots", "101"])
    assert res.exit_code == 2 and "--snapshots" in res.output  # range checked at parse time
