"""The model zoo: a registry of named Keras models (see docs/CONTRACTS.md "Models").

``build_model``, ``get_model_info`` and ``list_models`` are importable without TensorFlow; the
builders (and TensorFlow) load on first use.
"""

from skinzoo.models.registry import (
    ModelInfo,
    build_model,
    get_model_info,
    last_conv_layer_name,
    list_models,
    register_model,
)

__all__ = [
    "ModelInfo", "build_model", "get_model_info", "last_conv_layer_name", "list_models",
    "register_model",
]
