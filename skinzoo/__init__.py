"""skinzoo: a Keras 3 / TensorFlow model zoo and CLI for medical image classification.

The public API is small and lazy: importing ``skinzoo`` does not import TensorFlow, so the CLI
answers ``--help`` and ``--version`` at once.
"""

__version__ = "0.1.0"

_LAZY = {
    "build_model": ("skinzoo.models.registry", "build_model"),
    "list_models": ("skinzoo.models.registry", "list_models"),
    "register_model": ("skinzoo.models.registry", "register_model"),
    "load_dataset": ("skinzoo.data.sources", "load_dataset"),
    "make_synthetic_dataset": ("skinzoo.data.synth", "make_synthetic_dataset"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'skinzoo' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
