"""Names and producers of a Keras model's graph tensors, through public attributes only.

A Functional model's input is named after its ``InputLayer`` (``keras.Input(name="metadata")``,
or Keras's ``input_layer_3`` when unnamed): that is the name ``--meta`` uses. The layer is found
by identity with its public ``output`` tensor, never through the tensor's private history.
"""

from __future__ import annotations

from skinzoo.models.layers import keras


def input_names(model) -> list[str]:
    """Name of each of ``model.inputs``, in order (``input_{i}`` when no input layer owns it).
    A Sequential model's input layer is not among its ``layers``: its config names it."""
    if isinstance(model, keras.Sequential):
        first = model.get_config()["layers"][0]
        return [first["config"]["name"] if first["class_name"] == "InputLayer" else "input_0"]
    return [input_name(model, t) or f"input_{i}" for i, t in enumerate(model.inputs)]


def input_name(model, tensor) -> str | None:
    """Name of the ``InputLayer`` of ``model`` whose output is ``tensor``, or None."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) and _output_of(layer) is tensor:
            return layer.name
    return None


def producing_layer(model, tensor):
    """The top-level layer of ``model`` that outputs ``tensor``, or None (e.g. a layer called
    more than once, whose ``output`` is ambiguous)."""
    for layer in reversed(model.layers):
        if _output_of(layer) is tensor:
            return layer
    return None


def _output_of(layer):
    try:
        return layer.output
    except (AttributeError, ValueError):  # never called, or called more than once
        return None
