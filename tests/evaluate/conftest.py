"""Tiny trained runs on the synthetic dataset, laid out like `skinzoo train` leaves them."""

from __future__ import annotations

import json

import pytest


def tiny_cnn(keras, num_classes, size=32):
    inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    units, act = (1, "sigmoid") if num_classes == 2 else (num_classes, "softmax")
    return keras.Model(inp, keras.layers.Dense(units, activation=act, name="predictions")(x))


def make_run(root, synth_dir, task="multiclass", epochs=3, seed=0, name=None):
    from skinzoo.runtime import set_seed, tf

    tf()
    import keras

    from skinzoo.data.pipeline import load_images
    from skinzoo.data.sources import load_dataset
    from skinzoo.data.splits import make_split, write_split_file

    set_seed(seed, deterministic=False)
    ds = load_dataset(synth_dir, task=task)
    split = make_split(ds.table, seed=seed)
    run = root / (name or f"20260101-000000-tiny-{task}-{seed}")
    run.mkdir(parents=True)
    write_split_file(ds.table, split, run / "split.csv")
    (run / "classes.json").write_text(json.dumps(
        {"classes": ds.classes, "task": task, "model": "tiny_cnn", "img_size": 32, "resize": "crop"}))
    train = (split == "train").to_numpy()
    x = load_images(ds.table["path"][train], 32)
    y = ds.label_index.to_numpy()[train]
    k = len(ds.classes)
    model = tiny_cnn(keras, k)
    model.compile("adam", "binary_crossentropy" if k == 2 else "sparse_categorical_crossentropy")
    hist = model.fit(x, y.astype("float32") if k == 2 else y, epochs=epochs, batch_size=16, verbose=0)
    model.save(run / "best.keras")
    rows = ["epoch,loss,val_loss"] + [f"{i},{v:.4f},{v * 1.1:.4f}" for i, v in enumerate(hist.history["loss"])]
    (run / "history.csv").write_text("\n".join(rows) + "\n")
    return run


@pytest.fixture(scope="session")
def multiclass_run(tmp_path_factory, synth_dir):
    return make_run(tmp_path_factory.mktemp("runs"), synth_dir, "multiclass")


@pytest.fixture(scope="session")
def binary_run(tmp_path_factory, synth_dir):
    return make_run(tmp_path_factory.mktemp("runs"), synth_dir, "binary")


@pytest.fixture
def run_factory(synth_dir):
    """``run_factory(root, task, epochs, seed, name)`` -> a new trained run directory."""
    def factory(root, task="multiclass", epochs=1, seed=1, name=None):
        return make_run(root, synth_dir, task, epochs=epochs, seed=seed, name=name)
    return factory
