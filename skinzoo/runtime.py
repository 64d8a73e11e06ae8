"""TensorFlow start-up in one place: quiet logs, seeds and determinism.

Every module that needs TensorFlow imports it through :func:`tf` so the start-up noise (oneDNN,
CUDA-stub and CPU-feature lines that ignore TF_CPP_MIN_LOG_LEVEL) is filtered once, while real
errors printed during import still reach the user.
"""

from __future__ import annotations

import os
import random
import re
import sys
import tempfile

_NOISE = re.compile(
    r"oneDNN custom operations|cudart_stub|Could not find cuda drivers|cuda_platform|cuInit|"
    r"absl::InitializeLog|cpu_feature_guard|rebuild TensorFlow with the appropriate|"
    r"TF-TRT Warning|Unable to register cu(DNN|FFT|BLAS)|computation placer already registered|"
    r"This TensorFlow binary is optimized|cuda_executor|cuda_diagnostics|kernel driver does not appear"
)
_TF = None


def tf():
    """Import TensorFlow once with the start-up noise filtered; returns the module."""
    global _TF
    if _TF is not None:
        return _TF
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _filtered_stderr():
        import tensorflow

        tensorflow.config.list_physical_devices()  # CUDA probing logs here, not at import
    tensorflow.get_logger().setLevel("ERROR")
    _TF = tensorflow
    return tensorflow


class _filtered_stderr:
    """Redirect file descriptor 2 (C++ logging writes there directly) and replay real lines."""

    def __enter__(self):
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
        except (OSError, ValueError):
            self._saved = None
            return self
        self._tmp = tempfile.TemporaryFile(mode="w+b")
        os.dup2(self._tmp.fileno(), 2)
        return self

    def __exit__(self, *exc):
        if self._saved is None:
            return False
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._tmp.seek(0)
        kept = [
            line for line in self._tmp.read().decode("utf-8", "replace").splitlines()
            if line.strip() and not _NOISE.search(line)
        ]
        self._tmp.close()
        if kept:
            print("\n".join(kept), file=sys.stderr)
        return False


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy, TensorFlow and Keras; optionally enable TF op determinism.

    Op determinism makes two CPU runs with the same seed produce identical histories; it costs
    some speed, so training exposes it via ``--seed`` (on by default when a seed is given).
    """
    import numpy as np

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    t = tf()
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic:
        t.config.experimental.enable_op_determinism()
