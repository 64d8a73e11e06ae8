"""TensorFlow start-up in one place: quiet logs, seeds and determinism.

Every module that needs TensorFlow imports it through :func:`tf` so the start-up noise (oneDNN,
CUDA-stub and CPU-feature lines that ignore TF_CPP_MIN_LOG_LEVEL) is filtered once, while real
errors printed during import still reach the user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import signal
import sys
import tempfile
import threading

_NOISE = re.compile(
    r"oneDNN custom operations|cudart_stub|Could not find cuda drivers|cuda_platform|cuInit|"
    r"absl::InitializeLog|cpu_feature_guard|rebuild TensorFlow with the appropriate|"
    r"TF-TRT Warning|Unable to register cu(DNN|FFT|BLAS)|computation placer already registered|"
    r"This TensorFlow binary is optimized|cuda_executor|cuda_diagnostics|kernel driver does not appear|"
    r"oneDNN supports DT_BOOL only|Falling back to the default Eigen|was passed, but will be ignored since"
    r"|self.data_adapter = data_adapters|NodeDef mentions attribute use_unbounded_threadpool"
    r"|Created TensorFlow Lite XNNPACK delegate|fully_quantize:"
)
_TF = None


_FILTER_INSTALLED = False


def filter_native_stderr() -> None:
    """For the CLI: route file descriptor 2 through a thread that drops TensorFlow's C++ noise for
    the whole process (it also logs at the first op, not only at import). Real lines, Python
    warnings and tracebacks pass through unchanged. Libraries embedding skinzoo never get this."""
    global _FILTER_INSTALLED
    if _FILTER_INSTALLED:
        return
    import atexit
    import threading

    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except (OSError, ValueError):
        return
    _FILTER_INSTALLED = True

    def pump():
        with os.fdopen(read_end, "rb", buffering=0) as source:
            pending = b""
            while chunk := source.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = [line for line in lines if not _NOISE.search(line.decode("utf-8", "replace"))]
                if kept:
                    os.write(original, b"\n".join(kept) + b"\n")
            if pending and not _NOISE.search(pending.decode("utf-8", "replace")):
                os.write(original, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def drain():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # closes the pipe's last write end, so the pump sees EOF
        thread.join(timeout=2)

    atexit.register(drain)


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (a container or `taskset` may allow fewer
    than the machine has), all logical cores where the platform cannot say."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def tf():
    """Import TensorFlow once with the start-up noise filtered; returns the module."""
    global _TF
    if _TF is not None:
        return _TF
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _filtered_stderr() if not _FILTER_INSTALLED else contextlib.nullcontext():
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


# --- SIGTERM ----------------------------------------------------------------------------------

class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while no training loop was running (the CLI exits 143 with a message)."""


_TERMINATED = threading.Event()
SIGTERM_EXIT = 128 + signal.SIGTERM  # 143: what shells and schedulers expect after SIGTERM
SIGINT_EXIT = 128 + signal.SIGINT  # 130


def treat_sigterm_like_ctrl_c() -> None:
    """Install a SIGTERM handler (main thread only) that does what Ctrl-C does.

    SLURM, Kubernetes and ``timeout`` stop jobs with SIGTERM. During training the Ctrl-C handler
    (skinzoo.train.callbacks.InterruptHandler) owns SIGINT: SIGTERM is passed to it, so the batch
    is finished, best.keras and the backup are kept and the resume command is printed; a second
    SIGTERM aborts at once. Outside training it raises :class:`Terminated`.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum, frame):
    _TERMINATED.set()
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        logging.getLogger(__name__).warning("\nSIGTERM received: stopping like Ctrl-C")
        handler(signal.SIGINT, frame)
        return
    raise Terminated()


def was_terminated() -> bool:
    """Whether SIGTERM (not Ctrl-C) stopped this process's work."""
    return _TERMINATED.is_set()


def interruption() -> tuple[str, int]:
    """How to word an interruption and the exit code: SIGTERM 143, Ctrl-C 130."""
    return ("terminated (SIGTERM)", SIGTERM_EXIT) if was_terminated() else ("interrupted", SIGINT_EXIT)
