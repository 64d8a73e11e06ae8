"""Input names (what ``--meta NAME=...`` refers to) from public Keras attributes: the name of the
InputLayer that owns each input, on fused, raw, loaded, Sequential and ensemble models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

TABLE = pd.DataFrame({"age": [50.0, np.nan, 30.0], "sex": ["male", "unknown", "female"],
                      "site": ["back", "face", "back"]})


@pytest.fixture(scope="module")
def fused(keras):
    from skinzoo.data.metadata import fit_encoding, requested_fields
    from skinzoo.models.fusion import with_metadata
    from skinzoo.models.registry import build_model

    encoding = fit_encoding(TABLE, requested_fields("age,sex,site"))
    return with_metadata(build_model("compact_resnet", 3, input_shape=(32, 32, 3)), encoding, 3), encoding


def test_fused_two_input_model_names_and_encodings_survive_saving(keras, fused, tmp_path):
    from skinzoo.evaluate.meta_inputs import input_names, model_encodings
    from skinzoo.models.files import load_model_file

    model, encoding = fused
    assert input_names(model) == ["image", "metadata"]
    assert model_encodings(model) == {"metadata": encoding}
    model.save(tmp_path / "m.keras")
    loaded = load_model_file(tmp_path / "m.keras")
    assert input_names(loaded) == ["image", "metadata"]
    assert model_encodings(loaded) == {"metadata": encoding}


def test_unnamed_inputs_take_their_input_layer_names(keras):
    """A model skinzoo did not train: its raw input is named as Keras named the InputLayer
    (``input_layer_N``), and --meta by that name fills it."""
    from skinzoo.evaluate.meta_inputs import input_names
    from skinzoo.evaluate.predict import model_inputs, parse_meta

    image, vector = keras.Input((32, 32, 3)), keras.Input((2,))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(image))
    model = keras.Model([vector, image], keras.layers.Concatenate()([pooled, vector]))
    names = input_names(model)
    input_layers = [layer.name for layer in model.layers if isinstance(layer, keras.layers.InputLayer)]
    assert sorted(names) == sorted(input_layers) and len(set(names)) == 2
    assert all(n.startswith("input_layer") for n in names)
    assert [model.get_layer(n).output is t for n, t in zip(names, model.inputs, strict=True)] == [True, True]
    x = np.zeros((2, 32, 32, 3), np.float32)
    arrays = model_inputs(model, x, parse_meta(f"{names[0]}=3:4"))
    np.testing.assert_array_equal(arrays[0], [[3, 4], [3, 4]])
    assert arrays[1] is not None and arrays[1].shape == x.shape


def test_sequential_input_is_named_after_its_input_layer(keras):
    from skinzoo.models.graph import input_names

    model = keras.Sequential([keras.Input((8, 8, 3), name="pixels"), keras.layers.Conv2D(2, 3)])
    assert input_names(model) == ["pixels"]


def test_ensemble_finds_the_encoding_inside_its_members(keras, fused):
    from skinzoo.models.ensemble import Member, build_ensemble
    from skinzoo.models.fusion import encodings_of
    from skinzoo.models.graph import input_names
    from skinzoo.models.registry import build_model

    model, encoding = fused
    classes = ["x", "y", "z"]
    ensemble = build_ensemble([
        Member(model, "fused", classes, "multiclass", (32, 32), metadata={"metadata": encoding}),
        Member(build_model("compact_resnet", 3, input_shape=(32, 32, 3)), "plain", classes,
               "multiclass", (32, 32))])
    assert input_names(ensemble) == ["image", "metadata"]
    assert encodings_of(ensemble) == {"metadata": encoding}  # read inside member 1


def test_absent_fields_note_does_not_contradict_meta_none():
    """`--meta none` asked for absent metadata: the note says so and does not tell the user to
    pass values; a partial --meta names only what is missing."""
    from skinzoo.data.metadata import fit_encoding, requested_fields
    from skinzoo.evaluate.meta_inputs import absent_fields_note

    encodings = {"metadata": fit_encoding(TABLE, requested_fields("age,sex,site"))}
    none = absent_fields_note(encodings, "none")
    assert "by request" in none and "pass --meta" not in none and "age, sex, site" in none
    partial = absent_fields_note(encodings, "age=50")
    assert "pass --meta sex=...,site=..." in partial and "age" not in partial.split(":")[0]
    assert absent_fields_note(encodings, "age=50,sex=male,site=back") is None
    from skinzoo.evaluate.meta_inputs import meta_from_text  # the same "none" for exports' --meta

    np.testing.assert_array_equal(meta_from_text(encodings, "None")["metadata"],
                                  encodings["metadata"].encode_values({}))
