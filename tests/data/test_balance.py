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
    from skinzoo.data.balance import smote_bytes_estimate
    from skinzoo.data.pixel_smote import smote_pixels

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



def test_augmented_copy_keeps_groups_and_is_reproducible(synth_dir, tmp_path):
    """(The CLI itself is covered by tests/data/test_data_prep.py.)"""
    import pandas as pd

    from skinzoo.data.augmented_copy import write_augmented_copy
    from skinzoo.data.sources import load_dataset

    source = load_dataset(synth_dir)
    table = source.table[source.table["label"].isin(["df", "vasc", "nv"])].head(40)
    runs = [write_augmented_copy(table, source.classes, tmp_path / f"aug{k}", 12, img_size=32,
                                 seed=3, progress=False) for k in range(2)]
    assert runs[0].after["df"] == 12 and runs[0].after["nv"] == runs[0].before["nv"]
    manifest = pd.read_csv(runs[0].manifest_csv)
    new = manifest[manifest["augment"] != "none"]
    assert len(new) > 0 and new["augmentation_seed"].str.startswith("3:").all()
    group_of = table.set_index("path")["group"]
    labels = pd.read_csv(runs[0].labels_csv).set_index("image")
    assert (labels.loc[new["file"], "group"].to_numpy() == group_of[new["source_file"]].to_numpy()).all()
    for f in new["file"]:  # same seed, same variant bytes
        assert (tmp_path / "aug0" / f).read_bytes() == (tmp_path / "aug1" / f).read_bytes()
