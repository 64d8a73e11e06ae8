"""Models are loaded with Keras ``safe_mode=True``: a ``.keras`` file that carries code (a Lambda
layer, or a config naming an arbitrary Python callable) is refused with a message, and the code
never runs. Each payload touches a marker file if executed; ``--unsafe`` shows the marker works."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest
from badinputs import write_good_jpeg

from .conftest import error_lines

MARKER_ENV = "SKINZOO_TEST_EXECUTED_MARKER"


# A lambda (not a named function) so Keras stores its bytecode in the file, as an attacker's
# file would; it touches the marker only if Keras deserialises and calls that bytecode.
_TOUCH_MARKER = lambda t: (open(__import__("os").environ["SKINZOO_TEST_EXECUTED_MARKER"], "a")  # noqa: E731
                           .close(), t)[1]


def tiny_model(keras, with_lambda: bool, k: int = 7):
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(_TOUCH_MARKER, name="code")(inp) if with_lambda else inp
    x = keras.layers.Conv2D(4, 3, activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(k, activation="softmax", name="predictions")(x))


@pytest.fixture
def marker(tmp_path, monkeypatch):
    path = tmp_path / "code-was-executed"
    monkeypatch.setenv(MARKER_ENV, str(path))
    return path


@pytest.fixture
def lambda_model(tmp_path, marker):
    from skinzoo.runtime import tf

    tf()
    import keras

    path = tmp_path / "shared model.keras"
    tiny_model(keras, with_lambda=True).save(path)
    marker.unlink(missing_ok=True)  # Keras may trace the function while building
    return path


def evil_config_model(tmp_path, marker, module="os", name="system"):
    """A valid .keras zip whose config.json asks Keras to build ``module.name("touch MARKER")``."""
    from skinzoo.runtime import tf

    tf()
    import keras

    good = tmp_path / "good.keras"
    tiny_model(keras, with_lambda=False).save(good)
    evil = tmp_path / f"{module}-{name}.keras"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for member in src.namelist():
            data = src.read(member)
            if member == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["class_name"] == "GlobalAveragePooling2D":
                        layer.update(module=module, class_name=name, registered_name=None,
                                     config=f"touch {marker}")
                data = json.dumps(config)
            dst.writestr(member, data)
    return evil


def commands(model, image, tmp_path):
    return {"predict": ["predict", image, "--model", model],
            "gradcam": ["gradcam", image, "--model", model, "--out", tmp_path / "cams"],
            "evaluate": ["evaluate", model, "--data", image.parent, "--classes", "a,b,c,d,e,f,g"]}


@pytest.mark.parametrize("command", ["predict", "gradcam", "evaluate"])
def test_lambda_layer_is_refused_and_never_runs(skinzoo, tmp_path, lambda_model, marker, command):
    image = write_good_jpeg(tmp_path / "imgs", "x.jpg")
    result = skinzoo(*commands(lambda_model, image, tmp_path)[command])
    assert result.exit_code == 4, result.output
    (line,) = error_lines(result.output)
    assert "contains a Lambda layer with Python code" in line and str(lambda_model) in line
    assert "--unsafe" in result.output and "trust" in result.output
    assert not marker.exists()


def test_unsafe_flag_loads_it_and_the_marker_shows_the_code_ran(skinzoo, tmp_path, lambda_model,
                                                                 marker):
    image = write_good_jpeg(tmp_path / "imgs", "x.jpg")
    result = skinzoo("predict", image, "--model", lambda_model, "--unsafe")
    assert result.exit_code == 0, result.output
    assert marker.exists()  # so the refusals above really kept the code from running


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "gradcam", "evaluate"])
def test_lambda_model_inside_a_run_is_refused(skinzoo, messy_run, tmp_path, lambda_model, marker,
                                              command):
    run = tmp_path / "run"
    shutil.copytree(messy_run[1], run)
    shutil.copy(lambda_model, run / "best.keras")
    image = write_good_jpeg(tmp_path / "imgs", "x.jpg")
    args = {"predict": ["predict", image, "--model", run],
            "gradcam": ["gradcam", image, "--model", run, "--out", tmp_path / "cams"],
            "evaluate": ["evaluate", run]}[command]
    result = skinzoo(*args)
    assert result.exit_code == 4, result.output
    assert "Lambda layer" in error_lines(result.output)[0] and "--unsafe" in result.output
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "exec"),
                                          ("subprocess", "getoutput")])
def test_config_naming_a_python_callable_is_refused(skinzoo, tmp_path, marker, module, name):
    evil = evil_config_model(tmp_path, marker, module, name)
    image = write_good_jpeg(tmp_path / "imgs", "x.jpg")
    for args in commands(evil, image, tmp_path).values():
        result = skinzoo(*args)
        assert result.exit_code == 4, result.output
        assert f"cannot load {evil} as a Keras model" in error_lines(result.output)[0]
    result = skinzoo("predict", image, "--model", evil, "--unsafe")
    assert result.exit_code == 4  # not even with --unsafe: Keras only builds its own classes
    assert not marker.exists()


def test_train_weights_file_with_a_lambda_is_refused(skinzoo, tmp_path, lambda_model, marker):
    root = tmp_path / "data"
    for cls in ("a", "b"):
        for i in range(4):
            write_good_jpeg(root / cls, f"{cls}{i}.jpg", seed=i + 10 * (cls == "b"))
    result = skinzoo("train", "--data", root, "--model", "resnet50v2", "--weights", lambda_model,
                     "--img-size", "32", "--epochs", "1", "--batch-size", "2", "--no-tensorboard",
                     "--out", tmp_path / "runs")
    assert result.exit_code == 4, result.output
    (line,) = error_lines(result.output)
    assert str(lambda_model) in line and "Lambda" in line
    assert not marker.exists()
