"""Shared fixtures. Every fixture makes its own tiny images; no test reads ../shared data."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic HAM10000-layout dataset (140 images, 32 px), shared read-only."""
    from skinzoo.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root, n_images=140, size=32, seed=0)
    return root


@pytest.fixture(scope="session")
def keras():
    """Keras, imported after TensorFlow through skinzoo.runtime (filtered start-up noise)."""
    from skinzoo.runtime import tf

    tf()
    import keras

    return keras


@pytest.fixture
def synth_copy(tmp_path, synth_dir):
    """A private copy of the synthetic dataset that a test may damage."""
    import shutil

    dst = tmp_path / "data"
    shutil.copytree(synth_dir, dst)
    return dst
