"""Registry behaviour: names, wildcards, defaults and every user mistake as a ModelError."""

from __future__ import annotations

import pytest

from skinzoo.errors import ModelError
from skinzoo.models import build_model, get_model_info, list_models


def test_list_models_wildcards():
    names = list_models()
    assert names == sorted(names)
    assert {"compact_resnet", "custom_cnn", "simple_cnn", "alexnet"} <= set(names)
    assert list_models("*cnn") == ["custom_cnn", "simple_cnn"]
    assert list_models("nothing*") == []


def test_model_info_fields():
    info = get_model_info("compact_resnet")
    assert info.name == "compact_resnet" and info["default_size"] == info.default_size == 64
    assert info.default_batch > 0 and 0 < info.default_lr < 1 and info.pretrained is False
    assert info.description


def test_unknown_name_suggests_close_match():
    with pytest.raises(ModelError) as err:
        get_model_info("compact_resnte")
    assert "compact_resnet" in err.value.hint


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 3, "input_shape": (32, 32, 1)}, "input_shape"),
        ({"num_classes": 3, "input_shape": (32, 32, 3), "widht": 8}, "widht"),
        ({"num_classes": 3, "weights": "imagenet"}, "no pretrained weights"),
    ],
)
def test_bad_requests_raise_model_error(kwargs, text):
    with pytest.raises(ModelError) as err:
        build_model("compact_resnet", **kwargs)
    assert text in err.value.message


def test_too_small_input_is_a_model_error():
    with pytest.raises(ModelError) as err:
        build_model("alexnet", 3, input_shape=(48, 48, 3), fc=(8, 8))
    assert "too small" in err.value.message and "227" in err.value.hint
