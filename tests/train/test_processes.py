"""Training in real subprocesses: kill -9 and resume, Ctrl-C, MirroredStrategy over two logical
CPU devices, and a two-process MultiWorkerMirroredStrategy run on loopback ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import free_ports

from skinzoo.models.files import load_model_file

pytestmark = pytest.mark.slow

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def skinzoo(*args) -> list[str]:
    return [sys.executable, "-m", "skinzoo_cli.main", *map(str, args)]


def common(data, out, *extra):
    return ["train", "--data", data, "--model", "simple_cnn", "--img-size", 32, "--out", out,
            "--no-tensorboard", "--seed", 3, "--augment", "none", *extra]


def run_ok(args, timeout=300):
    out = subprocess.run(skinzoo(*args), capture_output=True, text=True, env=ENV, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    return out


def only_run(out_dir: Path) -> Path:
    runs = [p for p in out_dir.iterdir() if (p / "classes.json").exists()]
    assert len(runs) == 1, runs
    return runs[0]


def wait_for_rows(history: Path, rows: int, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be interrupted"
        if history.exists():
            try:
                if len(pd.read_csv(history)) >= rows:
                    return
            except (pd.errors.EmptyDataError, pd.errors.ParserError):
                pass
        time.sleep(0.05)
    raise AssertionError("history did not grow")


@pytest.fixture(scope="module")
def slow_data(tmp_path_factory):
    """Enough images that an epoch takes a few seconds, so a kill lands mid-run."""
    from skinzoo.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("slowdata")
    make_synthetic_dataset(root, n_images=500, size=48, seed=1)
    return root


def start_and_wait(data, out: Path, epochs: int, rows: int):
    """Start a real training process; return it with its run directory once ``rows`` epochs of
    its history are written (the moment to kill or interrupt it)."""
    out.mkdir(exist_ok=True)
    args = common(data, out, "--epochs", epochs, "--batch-size", 8, "--model", "compact_resnet",
                  "--img-size", 48)
    proc = subprocess.Popen(skinzoo(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            text=True)
    try:
        deadline = time.time() + 120
        while not any(out.glob("*/history.csv")) and time.time() < deadline:
            time.sleep(0.05)
        run = only_run(out)
        wait_for_rows(run / "history.csv", rows, proc)
    except BaseException:
        proc.kill()
        raise
    return proc, run


def test_kill_9_then_resume_has_every_epoch_once(slow_data, tmp_path):
    proc, run = start_and_wait(slow_data, tmp_path / "runs", epochs=6, rows=2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_rows = len(pd.read_csv(run / "history.csv"))
    assert killed_rows < 6
    resumed = run_ok(["train", "--resume", run])
    assert "resuming after epoch" in resumed.stdout
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == list(range(6))  # every epoch exactly once
    model = load_model_file(run / "best.keras")
    assert model.output_shape == (None, 7)


def test_ctrl_c_saves_and_says_how_to_resume(slow_data, tmp_path):
    proc, run = start_and_wait(slow_data, tmp_path / "runs", epochs=5, rows=1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "resume with: skinzoo train --resume" in stderr and "Traceback" not in stderr
    assert (run / "backup").exists()
    run_ok(["train", "--resume", run])
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == list(range(5))


def test_mirrored_two_logical_cpus_matches_one_device(synth_dir, tmp_path):
    """Same global batch on one device and mirrored over two logical CPUs.

    With a vanishing learning rate the weights stay at their (seeded, identical) initial values,
    so every validation metric must agree exactly: this checks the per-replica batch split and the
    cross-replica aggregation of losses and metrics. With a real learning rate the curves agree
    within tolerance (summation order differs across replicas, and Adam amplifies it).
    """
    def pair(tag, *extra):
        run_ok(common(synth_dir, tmp_path / f"{tag}1", "--batch-size", 16, "--gpus", 0,
                            "--balance", "none", *extra))
        two = run_ok(common(synth_dir, tmp_path / f"{tag}2", "--batch-size", 8, "--cpu-replicas", 2,
                            "--balance", "none", *extra))
        assert "MirroredStrategy over 2 devices" in two.stdout
        assert "8 per replica x 2 = 16 global" in two.stdout
        return (pd.read_csv(only_run(tmp_path / f"{tag}1") / "history.csv"),
                pd.read_csv(only_run(tmp_path / f"{tag}2") / "history.csv"))

    a, b = pair("frozen", "--epochs", 1, "--lr", 1e-9, "--optimizer", "sgd", "--schedule", "constant")
    for key in ("val_loss", "val_accuracy", "val_auc", "val_balanced_accuracy"):
        assert a[key].iloc[0] == pytest.approx(b[key].iloc[0], rel=1e-5), key
    assert a["loss"].iloc[0] == pytest.approx(b["loss"].iloc[0], rel=2e-3)
    a, b = pair("learn", "--epochs", 2)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=0.1)
    assert b["loss"].iloc[1] < b["loss"].iloc[0]


def test_multi_worker_on_loopback_writes_one_run(synth_dir, tmp_path):
    hosts = ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
    out = tmp_path / "runs"
    procs = [subprocess.Popen(
        skinzoo(*common(synth_dir, out, "--epochs", 1, "--batch-size", 8, "--worker-hosts", hosts,
                        "--worker-index", i)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, results, strict=True):
        assert p.returncode == 0, stdout + stderr
    assert "MultiWorkerMirroredStrategy, 2 replicas" in results[0][0]
    run = only_run(out)  # the chief's run only; the other worker wrote nothing here
    assert len(pd.read_csv(run / "history.csv")) == 1
    assert (run / "best.keras").exists()
