"""Issue #14 (robustness round 2), the training side: SIGTERM, one training per run directory,
resuming from the previous backup generation when the latest is damaged, and an image that
fails to decode mid-epoch. Each test failed (exit 143 silently, two trainings in one run,
"delete backup" advice, an unattributed TensorFlow error) before the fix."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from badinputs import write_cut_idat_png, write_good_jpeg, write_good_png

from skinzoo.errors import TrainingError, UsageError
from skinzoo.rundir import RunDir
from skinzoo.train.run import RunLock, prepare_resume

from .conftest import error_lines, invoke

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def skinzoo(*args) -> list[str]:
    return [sys.executable, "-m", "skinzoo_cli.main", *map(str, args)]


# --- backup generations (no training: weights written by Keras itself) -------------------------

@pytest.fixture
def two_generations(tmp_path):
    """A run folder whose backup holds epoch 2 (latest) and epoch 1 (previous), as Keras'
    BackupAndRestore(double_checkpoint=True) leaves it, plus a history and a state file."""
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    run = RunDir(tmp_path / "run")
    run.backup.mkdir(parents=True)
    for suffix, epoch in (".bkp", 1), ("", 2):
        model.save_weights(run.backup / "latest.weights.h5")
        os.replace(run.backup / "latest.weights.h5", run.backup / f"latest.weights.h5{suffix}")
        model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)  # generations differ
        (run.backup / f"training_metadata.json{suffix}").write_text(json.dumps({"epoch": epoch}))
    pd.DataFrame({"epoch": [0, 1], "val_balanced_accuracy": [0.4, 0.6]}).to_csv(run.history,
                                                                                index=False)
    run.state.write_text(json.dumps({"best": 0.6, "best_epoch": 1, "wait": 0}))
    return run


def _corrupt_in_place(path: Path):
    """Same size, garbage in the middle: h5py may still open it, reading the weights fails."""
    data = bytearray(path.read_bytes())
    data[len(data) // 3: 2 * len(data) // 3] = os.urandom(len(data) // 3)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "corrupt_full_size", "metadata"])
def test_damaged_latest_backup_falls_back_to_the_previous_one(two_generations, damage):
    run = two_generations
    weights, meta = run.backup / "latest.weights.h5", run.backup / "training_metadata.json"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "corrupt_full_size":
        _corrupt_in_place(weights)
    else:
        meta.write_text('{"epo')
    notes = []
    assert prepare_resume(run, "val_balanced_accuracy", notes.append) == 1
    (note,) = notes
    assert "previous backup generation, after epoch 1" in note
    assert json.loads(meta.read_text())["epoch"] == 1
    assert weights.read_bytes() == (run.backup / "latest.weights.h5.bkp").read_bytes()


def test_no_intact_generation_never_advises_deleting_good_state(two_generations):
    run = two_generations
    for suffix in ("", ".bkp"):
        (run.backup / f"latest.weights.h5{suffix}").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(TrainingError) as err:
        prepare_resume(run, "val_balanced_accuracy", print)
    assert "no intact earlier backup generation" in err.value.message
    assert "delete" not in err.value.hint.lower() and "evaluate" in err.value.hint


def test_damaged_state_is_rebuilt_from_history(two_generations):
    run = two_generations
    run.state.write_text("{")
    notes = []
    assert prepare_resume(run, "val_balanced_accuracy", notes.append) == 2
    state = json.loads(run.state.read_text())
    assert state["best"] == 0.6 and state["best_epoch"] == 1 and state["wait"] == 0
    assert "rebuilt from history.csv" in notes[0]


# --- the run directory lock ------------------------------------------------------------------------

def test_second_lock_is_refused_and_stale_lock_taken_over(tmp_path):
    run = RunDir(tmp_path)
    first = RunLock(run).acquire()
    with pytest.raises(UsageError, match=f"in use by another training \\(PID {os.getpid()}"):
        RunLock(run).acquire()
    first.release()
    assert not run.lock.exists()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    run.lock.write_text(json.dumps({"pid": int(ended.stdout), "host": socket.gethostname()}))
    notes = []
    lock = RunLock(run).acquire(notes.append)
    assert "stale lock" in notes[0] and json.loads(run.lock.read_text())["pid"] == os.getpid()
    lock.release()
    run.lock.write_text(json.dumps({"pid": 1, "host": "another-machine"}))
    with pytest.raises(UsageError, match="another-machine"):
        RunLock(run).acquire()


# --- a file that breaks mid-epoch -------------------------------------------------------------------

def test_image_failing_to_decode_during_an_epoch_is_named(tmp_path):
    from skinzoo.data.pipeline import make_dataset
    from skinzoo.train.run import naming_unreadable_images

    paths = [str(write_good_png(tmp_path, f"{i}.png", seed=i)) for i in range(4)]
    ds = make_dataset(paths, [0, 1, 0, 1], 2, 32, 2, training=False)
    bad = write_cut_idat_png(tmp_path, "1.png")  # replaced after the check: TF fails on it
    with pytest.raises(TrainingError) as err:
        with naming_unreadable_images(paths, RunDir(tmp_path)):
            for _ in ds:
                pass
    assert str(bad) in err.value.message and "truncated" in err.value.message


# --- end to end: SIGTERM, resume from the previous generation, two resumes at once ----------------

@pytest.fixture(scope="module")
def terminated_run(tmp_path_factory):
    """A real `skinzoo train` process sent SIGTERM after its second epoch (of 40)."""
    base = tmp_path_factory.mktemp("sigterm")
    for cls in ("a", "b"):
        for i in range(24):
            write_good_jpeg(base / "data" / cls, f"{cls}{i}.jpg", seed=i + 30 * (cls == "b"))
    out = base / "runs"
    proc = subprocess.Popen(
        skinzoo("train", "--data", base / "data", "--model", "simple_cnn", "--img-size", 32,
                "--batch-size", 4, "--epochs", 40, "--out", out, "--no-tensorboard",
                "--augment", "none", "--cache", "memory"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.time() + 180
        history = None
        while time.time() < deadline and proc.poll() is None:
            found = list(out.glob("*/history.csv"))
            if found and len(pd.read_csv(found[0])) >= 2:
                history = found[0]
                break
            time.sleep(0.05)
        assert history is not None, "training did not reach two epochs"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    except BaseException:
        proc.kill()
        raise
    return history.parent, proc.returncode, stdout + stderr


@pytest.mark.slow
def test_sigterm_keeps_the_state_and_prints_the_resume_command(terminated_run):
    run, code, output = terminated_run
    assert code == 143, output
    assert "terminated (SIGTERM) during epoch" in output and "Traceback" not in output
    assert f"resume with: skinzoo train --resume {run}" in output
    assert (run / "best.keras").is_file() and (run / "backup" / "latest.weights.h5").is_file()
    assert not (run / "run.lock").exists()  # released on the way out


@pytest.mark.slow
def test_resume_after_a_kill_during_the_backup_write(terminated_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(terminated_run[0], run)
    done = int(json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"])
    _corrupt_in_place(run / "backup" / "latest.weights.h5")  # a kill -9 mid-write
    result = invoke("train", "--resume", run, "--epochs", done + 1)
    assert result.exit_code == 0, result.output
    assert f"previous backup generation, after epoch {done - 1}" in result.output
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == list(range(done + 1))


@pytest.mark.slow
def test_two_resumes_of_one_run_at_once(terminated_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(terminated_run[0], run)
    done = int(json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"])
    first = subprocess.Popen(skinzoo("train", "--resume", run, "--epochs", done + 3),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.time() + 120
        while not (run / "run.lock").exists() and time.time() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        second = invoke("train", "--resume", run)
        assert second.exit_code == 2, second.output
        (line,) = error_lines(second.output)
        assert "in use by another training" in line and f"PID {first.pid}" in line
        stdout, stderr = first.communicate(timeout=180)
    except BaseException:
        first.kill()
        raise
    assert first.returncode == 0, stdout + stderr
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == list(range(done + 3))
