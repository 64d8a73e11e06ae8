"""The two Keras bugs skinzoo/train/keras_compat.py works around, reproduced on this Keras.

Each test starts a two-process MultiWorkerMirroredStrategy cluster on loopback ports (this file is
also the worker: ``python this_file.py INDEX HOSTS``), fits a tiny model for two steps with
one workaround left out and asserts Keras still fails the known way. When a Keras release fixes a
bug its test turns red and says which workaround to delete. With both workarounds the same fit
succeeds (test_processes.py also runs that end to end through ``skinzoo train``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import free_ports

from skinzoo.keras_version import is_checked, version_text
from skinzoo.train.keras_compat import BUILD, REDUCE

pytestmark = pytest.mark.slow

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the workers run this file as a script: they need tests/ on the path for `support`, as pytest has
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH")) if p)}
ATTEMPTS = ("none", "build", "both")  # workarounds applied in each attempt
BUGS = {  # the error each bug raises without its workaround
    BUILD: "Attempt to convert a value (PerReplica",
    REDUCE: "Invalid reduction dimension 0",
}


@pytest.fixture(scope="module")
def cluster_results() -> list[dict[str, str]]:
    """Per worker, ``{attempt: "ok" | "error ..."}`` of two-step fits with the workarounds of each
    attempt ("none", "build", "both"), all in one two-process cluster (TF starts once)."""
    hosts = ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
    procs = [subprocess.Popen([sys.executable, __file__, str(i), hosts], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=ENV) for i in range(2)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = []
    for out in outputs:
        found = dict(chunk.split(" ", 1) for chunk in ("\n" + out).split("\nRESULT ")[1:])
        assert set(found) == set(ATTEMPTS), out[-3000:]
        results.append(found)
    return results


def _assert_still_broken(results, key: str, attempt: str):
    if not is_checked(key):
        pytest.skip(f"Keras {version_text()}: workaround '{key}' is not applied on this version")
    for found in results:
        assert not found[attempt].startswith("ok"), (
            f"Keras {version_text()} no longer has the bug behind '{key}': delete workaround "
            f"'{key}' from skinzoo/train/keras_compat.py, its row in skinzoo/keras_version.py "
            "and its test here")
        assert BUGS[key] in found[attempt], found[attempt][:3000]


def test_keras_still_fails_to_prebuild_from_a_distributed_batch(cluster_results):
    _assert_still_broken(cluster_results, BUILD, "none")


def test_keras_still_fails_to_reduce_scalar_logs_across_workers(cluster_results):
    _assert_still_broken(cluster_results, REDUCE, "build")  # bug 1 worked around: fit reaches bug 2


def test_both_workarounds_make_the_fit_work(cluster_results):
    for found in cluster_results:
        assert found["both"].startswith("ok"), found["both"][:3000]
        loss = float(found["both"].split()[1])
        assert 0 < loss < 10


def _worker(index: int, hosts: str) -> None:
    """One worker: for each attempt a fresh Dense model fitted for two steps; prints
    ``RESULT attempt ok LOSS`` or ``RESULT attempt error ...``. Both bugs raise before any
    collective runs, on both workers alike, so the cluster stays usable for the next attempt."""
    import contextlib

    import numpy as np

    from skinzoo.runtime import tf
    from skinzoo.train.keras_compat import local_batch_build, multi_worker_fit
    from skinzoo.train.strategy import select_strategy

    choice = select_strategy(worker_hosts=hosts, worker_index=index)
    assert choice.kind == "multi-worker"
    t = tf()
    import keras

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 2, 32)
    options = t.data.Options()
    options.experimental_distribute.auto_shard_policy = t.data.experimental.AutoShardPolicy.OFF
    ds = t.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat().with_options(options)
    for attempt in ATTEMPTS:
        with choice.strategy.scope():
            inp = keras.Input((4,))
            model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(inp))
            model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
        workarounds = {"none": contextlib.nullcontext(),
                       "build": local_batch_build(model, ds, choice.strategy),
                       "both": multi_worker_fit(model, ds, choice.strategy)}[attempt]
        try:
            with workarounds:
                history = model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)
            print(f"RESULT {attempt} ok {history.history['loss'][-1]}", flush=True)
        except Exception as err:  # the bug under test: report it, do not hide it
            print(f"RESULT {attempt} error {type(err).__name__}: {err}", flush=True)
    os._exit(0)  # skip collective teardown at exit, which can wait on the other worker


if __name__ == "__main__":
    _worker(int(sys.argv[1]), sys.argv[2])
