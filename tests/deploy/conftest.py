"""A tiny trained run with everything `skinzoo train` leaves (config.toml naming its dataset, so
subgroups and model cards find the metadata), and exports of it."""

from __future__ import annotations

import importlib.util
import json

import pytest

HAVE_ONNX = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnxruntime"))


def tiny_model(keras, num_classes, size=32, meta_width=0):
    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(image)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    inputs = [image]
    if meta_width:
        meta = keras.Input((meta_width,), name="metadata")
        x = keras.layers.Concatenate()([x, keras.layers.Dense(4, activation="relu")(meta)])
        inputs.append(meta)
    units, act = (1, "sigmoid") if num_classes == 2 else (num_classes, "softmax")
    out = keras.layers.Dense(units, activation=act, name="predictions")(x)
    return keras.Model(inputs if meta_width else image, out)


@pytest.fixture(scope="session")
def deploy_run(tmp_path_factory, synth_dir):
    from skinzoo.runtime import set_seed, tf

    tf()
    import keras

    from skinzoo.data.pipeline import load_images
    from skinzoo.data.sources import load_dataset
    from skinzoo.data.splits import make_split, write_split_file

    set_seed(0, deterministic=False)
    ds = load_dataset(synth_dir)
    split = make_split(ds.table, seed=0)
    run = tmp_path_factory.mktemp("runs") / "20260101-000000-tiny-deploy"
    run.mkdir()
    write_split_file(ds.table, split, run / "split.csv")
    (run / "classes.json").write_text(json.dumps(
        {"classes": ds.classes, "task": "multiclass", "model": "tiny_cnn", "img_size": 32,
         "resize": "crop"}))
    (run / "config.toml").write_text(
        f'data = "{synth_dir}"\nmodel = "tiny_cnn"\nimg_size = 32\nresize = "crop"\n'
        'augment = "light"\nhair_removal = false\nepochs = 6\nlr = 0.01\nval = 0.15\n'
        'test = 0.15\nseed = 0\nbalance = "none"\n')
    train = (split == "train").to_numpy()
    x = load_images(ds.table["path"][train], 32)
    y = ds.label_index.to_numpy()[train]
    model = tiny_model(keras, len(ds.classes))
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    hist = model.fit(x, y, epochs=6, batch_size=16, verbose=0)
    model.save(run / "best.keras")
    rows = ["epoch,loss"] + [f"{i},{v:.4f}" for i, v in enumerate(hist.history["loss"])]
    (run / "history.csv").write_text("\n".join(rows) + "\n")
    (run / "metrics.json").write_text(json.dumps({"n": 22, "balanced_accuracy": 0.5, "accuracy": 0.6}))
    return run


@pytest.fixture(scope="session")
def exports(deploy_run, tmp_path_factory):
    """Every format and precision, exported (and verified) once: ``{(format, precision): result}``."""
    from skinzoo.deploy.export import export_model
    from skinzoo.evaluate.predict import resolve_model

    out = tmp_path_factory.mktemp("exports")
    loaded = resolve_model(deploy_run)
    targets = {("savedmodel", "float32"): out / "savedmodel", ("tflite", "float32"): out / "f32.tflite",
               ("tflite", "float16"): out / "f16.tflite", ("tflite", "int8"): out / "int8.tflite",
               ("onnx", "float32"): out / "model.onnx"}
    if not HAVE_ONNX:  # `pip install '.[export]'` brings it; the ONNX tests say they were skipped
        del targets[("onnx", "float32")]
    return {key: export_model(loaded, key[0], path, key[1], check_count=32)
            for key, path in targets.items()}
