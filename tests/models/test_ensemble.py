"""Ensembles: one safe-mode .keras averaging members of different sizes, arithmetic/geometric
means, temperatures, weights fitted on validation only, clear refusals, and the commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from skinzoo_cli.main import cli

from skinzoo.errors import UsageError


def tiny(keras, k, size, seed, name="tiny"):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    units, act = (1, "sigmoid") if k == 2 else (k, "softmax")
    return keras.Model(inp, keras.layers.Dense(units, activation=act, name="predictions")(x), name=name)


def member(model, classes, size, temperature=1.0, task="multiclass", name=None):
    from skinzoo.models.ensemble import Member

    return Member(model, name or model.name, list(classes), task, (size, size),
                  temperature=temperature)


def as_probs(p):
    p = np.asarray(p, np.float64)
    return np.concatenate([1 - p, p], 1) if p.shape[1] == 1 else p


@pytest.mark.parametrize("mean", ["arithmetic", "geometric"])
def test_graph_equals_the_numpy_mean_and_loads_in_safe_mode(keras, mean, tmp_path):
    from skinzoo.models.ensemble import build_ensemble, combine
    from skinzoo.models.files import load_model_file

    a, b = tiny(keras, 3, 32, 1, "same"), tiny(keras, 3, 24, 2, "same")  # same names on purpose
    model = build_ensemble([member(a, "xyz", 32), member(b, "xyz", 24, temperature=2.0)],
                           weights=[3, 1], mean=mean)
    x = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    resized = np.asarray(keras.layers.Resizing(24, 24, interpolation="area")(x))
    pa, pb = a.predict(x, verbose=0), b.predict(resized, verbose=0)
    pb_t = np.exp(np.log(pb) / 2.0)
    pb_t /= pb_t.sum(1, keepdims=True)
    expected = combine([pa, pb_t], [0.75, 0.25], mean)
    got = model.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, pa, atol=1e-4)  # both members count
    path = tmp_path / "ens.keras"
    model.save(path)
    again = load_model_file(path)  # safe_mode=True
    np.testing.assert_allclose(again.predict(x, verbose=0), got, atol=1e-6)


def test_binary_members_give_one_sigmoid_unit(keras):
    from skinzoo.models.ensemble import build_ensemble, combine

    a, b = tiny(keras, 2, 32, 3, "a"), tiny(keras, 2, 32, 4, "b")
    classes = ["benign", "malignant"]
    model = build_ensemble([member(a, classes, 32, task="binary"), member(b, classes, 32, task="binary")])
    assert model.output_shape == (None, 1)
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    expected = combine([as_probs(a.predict(x, verbose=0)), as_probs(b.predict(x, verbose=0))], [1, 1])
    np.testing.assert_allclose(model.predict(x, verbose=0)[:, 0], expected[:, 1], atol=1e-5)


def test_members_must_share_classes_and_task(keras):
    from skinzoo.models.ensemble import build_ensemble

    a, b = tiny(keras, 3, 32, 1, "a"), tiny(keras, 3, 32, 2, "b")
    with pytest.raises(UsageError, match="share the class list"):
        build_ensemble([member(a, "xyz", 32), member(b, "xzy", 32)])
    with pytest.raises(UsageError, match="same task|binary"):
        build_ensemble([member(a, "xyz", 32), member(b, "xyz", 32, task="binary")])
    with pytest.raises(UsageError, match="at least 2"):
        build_ensemble([member(a, "xyz", 32)])
    with pytest.raises(UsageError, match="weight"):
        build_ensemble([member(a, "xyz", 32), member(b, "xyz", 32)], weights=[1, 2, 3])


def test_fitted_weights_favour_the_better_member():
    from skinzoo.models.ensemble import fit_weights

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    good = np.full((300, 3), 0.1)
    good[np.arange(300), y] = 0.8
    noise = rng.dirichlet(np.ones(3), 300)
    w = fit_weights([noise, good], y)
    assert abs(sum(w) - 1) < 1e-9 and w[1] > 0.8


# --- from runs, through the command line ---------------------------------------------------------

@pytest.fixture(scope="module")
def member_runs(keras, synth_dir, tmp_path_factory):
    """Two runs on ONE split (different models and input sizes), one with a calibration file."""
    from skinzoo.data.pipeline import load_images
    from skinzoo.data.sources import load_dataset
    from skinzoo.data.splits import make_split, write_split_file

    ds = load_dataset(synth_dir)
    split = make_split(ds.table, seed=0)
    train = (split == "train").to_numpy()
    y = ds.label_index.to_numpy()[train]
    root = tmp_path_factory.mktemp("members")
    runs = []
    for i, size in enumerate((32, 24)):
        run = root / f"20260101-00000{i}-tiny{size}-{i}"
        run.mkdir()
        write_split_file(ds.table, split, run / "split.csv")
        (run / "classes.json").write_text(json.dumps(
            {"classes": ds.classes, "task": "multiclass", "model": f"tiny{size}", "img_size": size,
             "resize": "crop"}))
        model = tiny(keras, 7, size, 10 + i, f"tiny{size}")
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(load_images(ds.table["path"][train], size), y, epochs=2, batch_size=16, verbose=0)
        model.save(run / "best.keras")
        runs.append(run)
    (runs[1] / "calibration.json").write_text(json.dumps({"temperature": 1.5}))
    return runs


@pytest.mark.slow
def test_ensemble_command_writes_a_run_that_evaluate_and_compare_read(member_runs, tmp_path):
    out = tmp_path / "ens"
    runner = CliRunner()
    res = runner.invoke(cli, ["ensemble", *map(str, member_runs), "--out", str(out), "--weights", "val"])
    assert res.exit_code == 0, res.output
    assert "ensemble (fitted weights)" in res.output and "Traceback" not in res.output
    saved = json.loads((out / "ensemble.json").read_text())
    assert saved["weights_fitted_on"] == "val" and abs(sum(saved["weights"]) - 1) < 1e-6
    assert saved["members"][1]["temperature"] == 1.5
    assert saved["validation"]["n_val"] == sum(
        line.endswith(",val") for line in (member_runs[0] / "split.csv").read_text().splitlines())
    info = json.loads((out / "classes.json").read_text())
    assert info["model"] == "ensemble" and info["img_size"] == 32
    for target in (out, *member_runs):
        res = runner.invoke(cli, ["evaluate", str(target), "--bootstrap", "10"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["compare", str(out), *map(str, member_runs)])
    assert res.exit_code == 0 and out.name in res.output and "ensemble" in res.output
    assert "DIFFERENT splits" not in res.output  # the ensemble was scored on its members' test split
    res = runner.invoke(cli, ["predict", _first_image(member_runs[0]), "--model", str(out)])
    assert res.exit_code == 0, res.output
    cams = tmp_path / "cams"
    res = runner.invoke(cli, ["gradcam", _first_image(member_runs[0]), "--model", str(out),
                              "--out", str(cams)])
    assert res.exit_code == 0, res.output
    names = {p.name.split("_", 2)[-1] for p in cams.glob("*.png")}
    assert {"member1_gradcam.png", "member2_gradcam.png", "ensemble_gradcam.png", "gradcam.png"} <= names


def _first_image(run):
    import pandas as pd

    return pd.read_csv(run / "split.csv")["path"].iloc[0]


def test_ensemble_command_refusals(member_runs, keras, tmp_path):
    import shutil

    runner = CliRunner()
    reordered = tmp_path / "reordered"
    shutil.copytree(member_runs[1], reordered)
    info = json.loads((reordered / "classes.json").read_text())
    classes = info["classes"]
    (reordered / "classes.json").write_text(json.dumps({**info, "classes": classes[::-1]}))
    res = runner.invoke(cli, ["ensemble", str(member_runs[0]), str(reordered), "--out",
                              str(tmp_path / "x.keras")])
    assert res.exit_code == 2 and "share the class list" in res.output and "Traceback" not in res.output
    other = tmp_path / "other.keras"
    tiny(keras, 7, 32, 5, "other").save(other)
    res = runner.invoke(cli, ["ensemble", str(member_runs[0]), str(other), "--out",
                              str(tmp_path / "y.keras"), "--weights", "val", "--classes", ",".join(classes)])
    assert res.exit_code == 2 and "shared split" in res.output.replace("\n", " ")
    assert not (tmp_path / "y.keras").exists()
    res = runner.invoke(cli, ["ensemble", *map(str, member_runs), "--out", str(tmp_path / "z.keras"),
                              "--weights", "1,x"])
    assert res.exit_code == 2 and "not a list of numbers" in res.output
