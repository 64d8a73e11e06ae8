"""`skinzoo train --resume` on an interrupted run whose files were damaged afterwards (a disk
error, a hand edit, a copy cut short): one clear line naming the file, never a traceback.

The interrupted run is made the way a user makes one: Ctrl-C (SIGINT) during epoch 2. (Resuming
an undamaged run is tested by tests/train/test_processes.py.)"""

from __future__ import annotations

import shutil
import signal

import pytest
from badinputs import write_good_jpeg

from .conftest import error_lines

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    from skinzoo.config import TrainConfig
    from skinzoo.train.fit import train
    from skinzoo.train.parts import TrainingInterrupted

    base = tmp_path_factory.mktemp("interrupted")
    for cls in ("a", "b"):
        for i in range(8):
            write_good_jpeg(base / "data" / cls, f"{cls}{i}.jpg", seed=i + 10 * (cls == "b"))
    config = TrainConfig(data=str(base / "data"), model="simple_cnn", img_size=32, batch_size=4,
                         epochs=2, out=str(base / "runs"), tensorboard=False,
                         cache="memory").validate()

    def press_ctrl_c_after_epoch_1(line):
        if line.startswith("epoch 1/"):
            # Only while training's InterruptHandler owns SIGINT (never hit pytest's own handler).
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train(config, echo=press_ctrl_c_after_epoch_1)
    (run,) = (base / "runs").iterdir()
    assert (run / "backup" / "training_metadata.json").is_file() and (run / "best.keras").is_file()
    return run


def _truncate(path):
    path.write_bytes(path.read_bytes()[:1000])


# With one backup generation only (Ctrl-C after epoch 1), a damaged backup cannot fall back.
DAMAGE = {
    "backup/training_metadata.json": lambda p: p.write_text("{"),
    "backup/latest.weights.h5": _truncate,
    "best.keras": _truncate,
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_resume_with_a_damaged_file_names_it(skinzoo, interrupted_run, tmp_path, name):
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    DAMAGE[name](run / name)
    result = skinzoo("train", "--resume", run)
    assert result.exit_code in (2, 5), result.output
    (line,) = error_lines(result.output)
    assert name.split("/")[-1] in line, line
    assert "  hint: " in result.output
    # Never advise deleting state that is still good (the backup, best.keras, history).
    assert "delete" not in result.output.split("  hint: ")[1].lower()


def test_resume_rebuilds_a_damaged_state_json_from_the_history(skinzoo, interrupted_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    (run / "state.json").write_text("{")
    result = skinzoo("train", "--resume", run)
    assert result.exit_code == 0, result.output
    assert "state.json was damaged; rebuilt from history.csv" in result.output
