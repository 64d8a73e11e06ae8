"""Metadata fusion: two-input zoo models, field dropout, safe loading, and the commands that
take metadata (train --metadata, evaluate/predict/gradcam --meta), plus models skinzoo did not
train that have a raw vector input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from skinzoo_cli.main import cli

from skinzoo.data.metadata import fit_encoding, requested_fields

TABLE = pd.DataFrame({"age": [50.0, np.nan, 30.0], "sex": ["male", "unknown", "female"],
                      "site": ["back", "face", "back"]})


@pytest.fixture(scope="module")
def encoding():
    return fit_encoding(TABLE, requested_fields("age,sex,site"))


def _run(args):
    result = CliRunner().invoke(cli, args)
    text = result.output  # stdout and stderr, as a user sees them
    assert "Traceback" not in text, text
    return result, text


@pytest.mark.parametrize("name", ["compact_resnet", "custom_cnn"])
def test_any_zoo_model_gets_a_metadata_branch_and_loads_in_safe_mode(keras, encoding, name, tmp_path):
    from skinzoo.models.files import load_model_file
    from skinzoo.models.fusion import encodings_of, with_metadata
    from skinzoo.models.graph import input_names
    from skinzoo.models.registry import build_model

    fused = with_metadata(build_model(name, 3, input_shape=(32, 32, 3)), encoding, 3)
    names = [layer.name for layer in fused.layers]
    assert input_names(fused) == ["image", "metadata"]
    assert {"metadata_dropout", "metadata_dense", "fusion", "predictions"} <= set(names)
    assert names.index("fusion") < names.index("predictions")
    if name == "compact_resnet":  # fused at the pooled embedding, head rebuilt after it
        assert names.index("embedding") < names.index("fusion")
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    meta = encoding.encode_table(TABLE)
    before = fused.predict([x, meta], verbose=0)
    fused.save(tmp_path / "m.keras")
    loaded = load_model_file(tmp_path / "m.keras")  # safe_mode=True
    np.testing.assert_allclose(loaded.predict([x, meta], verbose=0), before, atol=1e-6)
    assert encodings_of(loaded) == {"metadata": encoding}
    assert input_names(loaded) == ["image", "metadata"]
    other = meta.copy()
    other[:, 0] = 0.9  # another age changes the prediction: the metadata reaches the head
    assert not np.allclose(loaded.predict([x, other], verbose=0), before)


def test_metadata_dropout_hides_whole_fields_at_training_time_only(keras, encoding):
    from skinzoo.models.fusion import MetadataDropout

    layer = MetadataDropout(encoding.to_dict(), rate=0.5, seed=3)
    x = np.repeat(encoding.encode_values({"age": "40", "sex": "male", "site": "back"}), 400, axis=0)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    out = np.asarray(layer(x, training=True))
    hidden_age = out[:, 1] == 1
    assert 0.35 < hidden_age.mean() < 0.65
    assert np.all(out[hidden_age, 0] == 0) and np.all(out[~hidden_age] [:, 0] == 0.4)
    for start, stop in ((2, 5), (5, 8)):  # each field either intact or exactly "missing"
        block = out[:, start:stop]
        missing = np.eye(stop - start)[-1]
        assert all(np.array_equal(r, x[0, start:stop]) or np.array_equal(r, missing) for r in block)
    fields_hidden = np.stack([out[:, 1], out[:, 4], out[:, 7]], axis=1)
    assert 0 < (fields_hidden.sum(1) == 3).mean() < 0.3  # fields are dropped independently


def test_two_stage_head_shares_layer_names(keras, encoding):
    from skinzoo.models.fusion import head_with_metadata, with_metadata
    from skinzoo.models.registry import build_model
    from skinzoo.models.transfer import copy_head_weights

    full = with_metadata(build_model("resnet18_small", 3, input_shape=(32, 32, 3)), encoding, 3)
    head = head_with_metadata(full.get_layer("embedding").output.shape[-1], encoding, 3,
                              dense=(256, 128), dropout=0.5)
    copied = copy_head_weights(head, full)
    assert {"metadata_dense", "predictions"} <= set(copied)


# --- end to end: train with metadata, then every command -----------------------------------------

@pytest.fixture(scope="module")
def meta_run(synth_dir, tmp_path_factory):
    from skinzoo.config import TrainConfig
    from skinzoo.train.fit import train

    out = tmp_path_factory.mktemp("meta-runs")
    config = TrainConfig(data=str(synth_dir), model="simple_cnn", img_size=32, batch_size=16,
                         epochs=2, out=str(out), tensorboard=False, seed=1, cache="memory",
                         metadata="age,sex,site").validate()
    lines = []
    return train(config, echo=lines.append).run, lines


@pytest.mark.slow
def test_train_with_metadata_writes_the_encoding_and_a_two_input_model(meta_run, synth_dir):
    from skinzoo.evaluate.predict import resolve_model

    run, lines = meta_run
    saved = json.loads((run.path / "metadata.json").read_text())
    assert [f["name"] for f in saved["fields"]] == ["age", "sex", "site"]
    split = pd.read_csv(run.split)
    meta = pd.read_csv(synth_dir / "HAM10000_metadata.csv").set_index("image_id")
    train_sites = set(meta.loc[split.loc[split["split"] == "train", "image_id"], "localization"])
    assert set(saved["fields"][2]["categories"]) == train_sites - {"unknown"}  # training split only
    assert len(pd.read_csv(run.path / "metadata.csv")) == len(split)
    assert any(line.startswith("metadata: age, sex, site") for line in lines)
    loaded = resolve_model(run.path)
    assert list(loaded.metadata) == ["metadata"] and loaded.metadata["metadata"].names == ["age", "sex", "site"]


@pytest.mark.slow
def test_commands_take_metadata_by_name(meta_run, synth_dir, tmp_path, caplog):
    run, _ = meta_run
    image = sorted((synth_dir / "images").glob("*.jpg"))[0]
    res, text = _run(["predict", str(image), "--model", str(run.path), "--format", "json",
                      "--meta", "age=55,sex=female,site=back"])
    assert res.exit_code == 0, text
    given = json.loads(res.stdout)[0]["probs"]
    res2, text2 = _run(["predict", str(image), "--model", str(run.path), "--format", "json"])
    assert res2.exit_code == 0 and "sex, site: treated as missing" in text2
    assert "filled with zeros" not in text2 + caplog.text
    assert json.loads(res2.stdout)[0]["probs"] != given  # missing is not the same input
    res3, text3 = _run(["predict", str(image), "--model", str(run.path), "--meta", "colour=red"])
    assert res3.exit_code == 2 and "colour" in text3 and "age, sex, site" in text3
    assert abs(sum(given.values()) - 1) < 1e-4

    res4, text4 = _run(["evaluate", str(run.path), "--bootstrap", "20"])
    res5, text5 = _run(["evaluate", str(run.path), "--bootstrap", "20", "--meta", "age=85,sex=male"])
    assert res4.exit_code == 0 and res5.exit_code == 0, text4 + text5
    assert "balanced accuracy" in text4

    res6, text6 = _run(["gradcam", str(image), "--model", str(run.path), "--meta", "age=50",
                        "--out", str(tmp_path / "cam")])
    assert res6.exit_code == 0, text6
    assert (tmp_path / "cam" / f"{image.stem}_gradcam.png").is_file()
    assert "filled with zeros" not in text6


@pytest.mark.slow
def test_metadata_reaches_the_evaluation(meta_run, synth_dir):
    """Each image's own metadata (metadata.csv) against one constant for all: not the same input."""
    from skinzoo.evaluate.evaluation import evaluate_model
    from skinzoo.evaluate.meta_inputs import meta_for_command
    from skinzoo.evaluate.predict import resolve_model

    run, _ = meta_run
    own = resolve_model(run.path)
    a = evaluate_model(own, n_bootstrap=10, write=False)
    fixed = resolve_model(run.path)
    fixed.meta, _ = meta_for_command(fixed, "age=5,sex=male,site=face", per_image_source=True)
    b = evaluate_model(fixed, n_bootstrap=10, write=False)
    assert a.paths == b.paths and not np.allclose(a.probs, b.probs)
    absent = resolve_model(run.path)
    absent.meta, notes = meta_for_command(absent, "none", per_image_source=True)  # --meta none
    assert len(notes) == 1 and "by request" in notes[0] and "pass --meta" not in notes[0]
    np.testing.assert_array_equal(absent.meta["metadata"], own.metadata["metadata"].encode_values({}))
    c = evaluate_model(absent, n_bootstrap=10, write=False)
    assert not np.allclose(c.probs, a.probs)
    from_data = resolve_model(run.path)  # --data: the dataset's own columns, same test images
    d = evaluate_model(from_data, data=str(synth_dir), n_bootstrap=10, write=False)
    assert d.paths == a.paths
    np.testing.assert_allclose(d.probs, a.probs, atol=1e-6)


# --- a model skinzoo did not train: a raw vector input ------------------------------------------

@pytest.fixture(scope="module")
def raw_model(keras, tmp_path_factory):
    image = keras.Input((32, 32, 3), name="image_in")
    meta = keras.Input((3,), name="input_layer_3")
    f = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(keras.layers.Rescaling(1 / 255)(image))
    f = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(f), meta])
    model = keras.Model([image, meta], keras.layers.Dense(7, activation="softmax")(f))
    path = tmp_path_factory.mktemp("raw") / "published.keras"
    model.save(path)
    return path


CLASSES = "akiec,bcc,bkl,df,mel,nv,vasc"


def test_evaluate_has_meta_for_a_raw_input(raw_model, synth_dir, caplog):
    base = ["evaluate", str(raw_model), "--data", str(synth_dir), "--classes", CLASSES,
            "--bootstrap", "10"]
    res, text = _run(base)
    assert res.exit_code == 0, text
    assert "filled with zeros" in caplog.text and "--meta input_layer_3=" in caplog.text
    caplog.clear()
    res2, text2 = _run([*base, "--meta", "input_layer_3=0.5:1:0"])
    assert res2.exit_code == 0 and "filled with zeros" not in caplog.text, text2
    assert float(text2.split("accuracy")[1].split()[0]) >= 0  # scored with the given vector
    res3, text3 = _run([*base, "--meta", "input_layer_3=0.5:1"])
    assert res3.exit_code == 2 and "takes 3" in text3


def test_gradcam_unknown_meta_name_is_one_error_without_a_contradiction(raw_model, synth_dir, tmp_path,
                                                                       caplog):
    image = sorted((synth_dir / "images").glob("*.jpg"))[0]
    res, text = _run(["gradcam", str(image), "--model", str(raw_model), "--classes", CLASSES,
                      "--meta", "age=50", "--out", str(tmp_path / "cam")])
    assert res.exit_code == 2
    assert "age" in text and "input_layer_3" in text
    assert "filled with zeros" not in text + caplog.text  # not announced before the refusal


def test_smote_with_metadata_is_refused_up_front():
    from skinzoo.config import TrainConfig
    from skinzoo.errors import UsageError

    with pytest.raises(UsageError, match="smote cannot be combined with metadata"):
        TrainConfig(data="x", metadata="age", balance="smote").validate()
    with pytest.raises(UsageError, match="not one of age, sex, site"):
        TrainConfig(data="x", metadata="age,bmi").validate()


@pytest.mark.slow
def test_two_stage_with_metadata_head_on_embeddings_then_finetune(synth_dir, tmp_path):
    from skinzoo.config import TrainConfig
    from skinzoo.models.files import load_model_file
    from skinzoo.train.fit import train

    lines = []
    config = TrainConfig(data=str(synth_dir), model="resnet18_small", img_size=32, batch_size=16,
                         epochs=2, finetune_epochs=1, stages="both", dense=[32], augment="none",
                         out=str(tmp_path / "runs"), tensorboard=False, seed=2, cache="memory",
                         metadata="age,sex").validate()
    run = train(config, echo=lines.append).run
    history = pd.read_csv(run.history)
    assert history["stage"].tolist() == ["head", "head", "finetune"]
    assert "stage 1: embedding" in "\n".join(lines)
    model = load_model_file(run.best_model)
    assert [t.shape[-1] for t in model.inputs][1] == json.loads(
        (run.path / "metadata.json").read_text())["width"]
    x = np.full((2, 32, 32, 3), 128, np.float32)
    young, old = (np.array([[a, 0, 1, 0, 0], [a, 0, 0, 1, 0]], np.float32) for a in (0.1, 0.9))
    assert not np.allclose(model.predict([x, young], verbose=0), model.predict([x, old], verbose=0))


def test_evaluate_reads_a_raw_input_from_the_dataset_columns(raw_model, synth_dir, tmp_path, caplog):
    enc = {"fields": [
        {"name": "age", "column": "age", "kind": "numeric", "scale": 100, "missing_indicator": False},
        {"name": "sex", "column": "sex", "kind": "category", "categories": ["female", "male"],
         "missing_indicator": False}]}
    path = tmp_path / "published-metadata.json"
    path.write_text(json.dumps(enc))
    base = ["evaluate", str(raw_model), "--data", str(synth_dir), "--classes", CLASSES,
            "--bootstrap", "10"]
    res, text = _run([*base, "--meta-encoding", f"input_layer_3={path}"])
    assert res.exit_code == 0, text
    assert "filled with zeros" not in caplog.text
    res2, text2 = _run([*base, "--meta-encoding", str(path), "--meta", "age=50"])  # one input: no name needed
    assert res2.exit_code == 0, text2
    enc["fields"][1]["missing_indicator"] = True  # 4 values for a 3-value input
    path.write_text(json.dumps(enc))
    res3, text3 = _run([*base, "--meta-encoding", str(path)])
    assert res3.exit_code == 2 and "takes 3" in text3


def test_raw_input_encoding_from_the_dataset_reaches_the_model(raw_model, synth_dir, tmp_path):
    from skinzoo.evaluate.evaluation import evaluate_model
    from skinzoo.evaluate.meta_inputs import use_encoding_file
    from skinzoo.evaluate.predict import resolve_model

    path = tmp_path / "enc.json"
    path.write_text(json.dumps({"fields": [
        {"name": "age", "column": "age", "kind": "numeric", "scale": 10, "offset": 50,
         "missing_indicator": False},
        {"name": "sex", "column": "sex", "kind": "category", "categories": ["Female", "Male"],
         "missing_indicator": False}]}))
    loaded = resolve_model(raw_model, classes=CLASSES)
    use_encoding_file(loaded, str(path))
    ev = evaluate_model(loaded, data=str(synth_dir), n_bootstrap=10, write=False)
    table = pd.read_csv(synth_dir / "HAM10000_metadata.csv")
    first = table.iloc[0]
    vector = loaded.meta_rows["input_layer_3"][ev.paths[0]]
    assert ev.paths[0].endswith(f"{first['image_id']}.jpg")
    np.testing.assert_allclose(vector, [(first["age"] - 50) / 10, first["sex"] == "female",
                                        first["sex"] == "male"], atol=1e-6)
