"""Rebalancing: class-weight formula, sample weights, SMOTE on features (train only), the
pixel-SMOTE memory estimate, small classes."""

from __future__ import annotations

import numpy as np
import pytest

from skinzoo.errors import DataError, ResourceError, UsageError


def test_class_weights_match_sklearn_balanced():
    from sklearn.utils.class_weight import compute_class_weight

    from skinzoo.data.balance import class_weights, sample_weights_for

    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    w = class_weights(y, 3)
    assert np.allclose(w, compute_class_weight("balanced", classes=np.arange(3), y=y))
    assert np.allclose(w, [100 / 180, 100 / 90, 100 / 30])
    sw = sample_weights_for(y, 3)
    assert sw.dtype == np.float32 and np.isclose(sw.mean(), 1.0)
    assert np.allclose(np.bincount(y, weights=sw), 100 / 3)  # every class weighs the same
    assert class_weights(np.array([0, 0, 2]), 3)[1] == 0  # absent class


def test_balance_plan():
    from skinzoo.data.balance import balance_plan

    y = np.array([0, 0, 0, 1])
    assert balance_plan("class-weight", y, 2).sample_weights is not None
    assert balance_plan("oversample", y, 2).oversample
    assert balance_plan("smote-enn", y, 2).feature_resampling == "smote-enn"
    assert balance_plan("none", y, 2).sample_weights is None
    with pytest.raises(UsageError, match="balance"):
        balance_plan("undersample", y, 2)


def _features(seed=0):
    rng = np.random.default_rng(seed)
    counts = (80, 20, 6)
    X = np.concatenate([rng.normal(3 * c, 1, (n, 5)) for c, n in enumerate(counts)]).astype(np.float32)
    y = np.repeat(np.arange(3), counts)
    return X, y


@pytest.mark.parametrize("method", ["smote", "smote-tomek", "smote-enn"])
def test_smote_balances_training_features_only(method):
    from skinzoo.data.balance import resample_features

    X, y = _features()
    X_val, y_val = _features(seed=1)
    X_copy, y_copy, X_val_copy = X.copy(), y.copy(), X_val.copy()
    X_res, y_res = resample_features(X, y, method, seed=0)
    counts = np.bincount(y_res)
    assert len(X_res) == len(y_res) > len(X)
    if method == "smote":
        assert (counts == 80).all()
    else:  # cleaning removes a few borderline samples again
        assert counts.min() > 0.8 * counts.max()
    assert np.array_equal(X, X_copy) and np.array_equal(y, y_copy)  # inputs untouched
    assert np.array_equal(X_val, X_val_copy) and np.array_equal(y_val, _features(seed=1)[1])
    # synthetic minority samples lie between real minority samples, not in another class
    new = X_res[len(X):][y_res[len(X):] == 2]
    assert np.abs(new.mean(0) - 6).max() < 1.0
    again = resample_features(X, y, method, seed=0)
    assert np.array_equal(again[0], X_res)  # seeded


def test_smote_small_class_and_misuse():
    from skinzoo.data.balance import resample_features

    X, y = _features()
    keep = np.r_[np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:3]]  # class 2: 3 samples < k=5
    X_res, y_res = resample_features(X[keep], y[keep], "smote")
    assert (np.bincount(y_res) == 80).all()
    keep = np.r_[np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:1]]
    with pytest.raises(DataError, match="single"):
        resample_features(X[keep], y[keep], "smote")
    with pytest.raises(UsageError, match="paths"):
        resample_features(np.array([["a.jpg"], ["b.jpg"]]), np.array([0, 1]), "smote")


def test_smote_pixels_memory_estimate_and_result():
    from skinzoo.data.balance import smote_bytes_estimate, smote_pixels

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], [30, 6])
    images = rng.integers(0, 255, (36, 8, 8, 3)).astype(np.uint8)
    images[y == 1] = images[y == 1] // 4  # dark minority
    out, y_res = smote_pixels(images, y, 8, seed=0)
    assert out.shape == (60, 8, 8, 3) and out.dtype == np.uint8
    assert (np.bincount(y_res) == 30).all() and out[y_res == 1].max() <= 255 // 4 + 1
    need = smote_bytes_estimate(36, [30, 6], 8 * 8 * 3)
    assert need == 192 * (4 * 36 + 8 * 24 + 8 * 60)
    with pytest.raises(ResourceError, match="GB") as err:
        smote_pixels(["x.jpg"] * 10000, np.repeat([0, 1], [9000, 1000]), 224, memory_limit_bytes=2**30)
    assert "embeddings" in err.value.hint


def test_cli_augment_writes_balanced_trainable_copy(synth_dir, tmp_path):
    import pandas as pd
    from click.testing import CliRunner
    from skinzoo_cli.main import cli

    from skinzoo.data.sources import load_dataset

    out = tmp_path / "aug"
    args = ["data", "augment", str(synth_dir), str(out), "--to-count", "20", "--img-size", "32",
            "--seed", "3"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    copy = load_dataset(out)  # generic CSV, readable as a dataset
    counts = copy.table["label"].value_counts()
    source = load_dataset(synth_dir).table["label"].value_counts()
    for c, n in source.items():
        assert counts[c] == max(20, n)
    manifest = pd.read_csv(out / "images" / "manifest.csv")
    new = manifest[manifest["augment"] != "none"]
    assert len(new) == (counts - source).sum() and new["augmentation_seed"].str.startswith("3:").all()
    assert set(new["source_file"].map(lambda p: p.split("/")[-1])) <= {
        p.split("/")[-1] for p in load_dataset(synth_dir).table["path"]}
    # variants keep their source's lesion group (a grouped split keeps them together)
    src_group = load_dataset(synth_dir).table.set_index("path")["group"]
    lab = pd.read_csv(out / "labels.csv").set_index("image")
    assert (lab.loc[new["file"], "group"].to_numpy() == src_group[new["source_file"]].to_numpy()).all()
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "already" in again.output
