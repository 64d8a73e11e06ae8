"""The built-in demo dataset: counts, class shares, groups, determinism, decodable files."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinzoo.data.synth import CLASSES, class_counts, make_synthetic_dataset
from skinzoo.errors import UsageError


def test_class_counts_sum_and_shape_like_ham10000():
    counts = class_counts(700)
    assert sum(counts.values()) == 700
    assert max(counts, key=counts.get) == "nv" and counts["nv"] > 0.5 * 700
    assert min(counts.values()) >= 20  # rare classes still splittable three ways
    assert counts["df"] <= counts["vasc"] <= counts["akiec"] < counts["bcc"] < counts["mel"]


def test_dataset_files_groups_and_metadata(synth_dir):
    table = pd.read_csv(synth_dir / "HAM10000_metadata.csv")
    assert list(table.columns) == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    assert len(table) == 140 and set(table["dx"]) == set(CLASSES)
    assert table["image_id"].is_unique
    assert (table.groupby("lesion_id")["dx"].nunique() == 1).all()  # one diagnosis per lesion
    assert (table.groupby("lesion_id").size() > 1).any()  # several views of some lesions
    for image_id in table["image_id"].sample(10, random_state=0):
        with Image.open(synth_dir / "images" / f"{image_id}.jpg") as img:
            img.load()
            assert img.size == (32, 32) and img.mode == "RGB"


def _digest(root):
    h = hashlib.sha1()
    for path in sorted((root / "images").glob("*.jpg")):
        h.update(path.read_bytes())
    h.update((root / "HAM10000_metadata.csv").read_bytes())
    return h.hexdigest()


def test_deterministic_per_seed(tmp_path):
    make_synthetic_dataset(tmp_path / "a", n_images=30, size=24, seed=3)
    make_synthetic_dataset(tmp_path / "b", n_images=30, size=24, seed=3)
    make_synthetic_dataset(tmp_path / "c", n_images=30, size=24, seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_classes_differ_in_colour(synth_dir):
    # Not a proof of learnability, but mel must be darker than nv and vasc redder than nv.
    table = pd.read_csv(synth_dir / "HAM10000_metadata.csv")

    def centre_mean(dx):
        imgs = [np.asarray(Image.open(synth_dir / "images" / f"{i}.jpg"))[12:20, 12:20].mean((0, 1))
                for i in table[table.dx == dx]["image_id"]]
        return np.mean(imgs, axis=0)

    mel, nv, vasc = centre_mean("mel"), centre_mean("nv"), centre_mean("vasc")
    assert mel.sum() < nv.sum()
    assert vasc[0] - vasc[1] > nv[0] - nv[1]


def test_refuses_to_overwrite_and_bad_sizes(tmp_path):
    make_synthetic_dataset(tmp_path, n_images=21, size=16)
    with pytest.raises(UsageError, match="already holds"):
        make_synthetic_dataset(tmp_path, n_images=21, size=16)
    make_synthetic_dataset(tmp_path, n_images=21, size=16, overwrite=True)
    with pytest.raises(UsageError):
        make_synthetic_dataset(tmp_path / "x", n_images=5)
