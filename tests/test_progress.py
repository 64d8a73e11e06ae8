"""skinzoo.progress (live line vs stage lines, quiet/verbose) and the training progress callback."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest

from skinzoo import progress as pg


@pytest.fixture
def stream():
    buf = io.StringIO()
    yield buf
    pg.configure("normal")  # back to the default for the next test


def test_formatting():
    assert pg.format_duration(12.34) == "12.3 s"
    assert pg.format_duration(245) == "4 min 05 s"
    assert pg.format_duration(7380) == "2 h 03 min"
    assert pg.format_clock(31) == "0:31"
    assert pg.format_clock(3723) == "1:02:03"
    assert pg.format_clock(None) == "?"
    assert pg.format_rate(450, 10, "img") == "45.0 img/s"
    assert pg.format_rate(4500, 10, "img") == "450 img/s"
    line = pg.progress_line("predicting", 120, 1512, 10.0, "img")
    # 12 img/s; 1,392 left -> 116 s
    assert line == "predicting  120/1,512 (8%)  12.0 img/s  ETA 1:56"
    assert pg.summary_line("predicting", 1512, 33.4, "img") == "predicting: 1,512 img in 33.4 s (45.3 img/s)"


def test_resumed_count_rate_uses_this_session_only():
    # 60 MB of 100 MB were there before; 20 MB more in 10 s -> 2 MB/s, 20 MB left -> 10 s
    line = pg.progress_line("x.zip", 80 * 2**20, 100 * 2**20, 10.0, "B", initial=60 * 2**20)
    assert "80.0 MB/100.0 MB (80%)" in line and "2.0 MB/s" in line and "ETA 0:10" in line


def test_not_a_terminal_one_line_per_long_stage(stream):
    pg.configure("normal", stream=stream, live=False, min_seconds=0)
    assert list(pg.track(range(5), "checking images", unit="files")) == [0, 1, 2, 3, 4]
    out = stream.getvalue()
    assert out.count("\n") == 1 and out.startswith("checking images: 5 files in ")
    assert "\r" not in out and "\x1b" not in out  # nothing live in a log


def test_short_stage_silent_unless_verbose(stream):
    pg.configure("normal", stream=stream, live=False, min_seconds=60)
    with pg.Progress("quick", total=3) as bar:
        bar.update(3)
    assert stream.getvalue() == ""
    pg.configure("verbose", stream=stream, live=False, min_seconds=60)
    with pg.Progress("quick", total=3) as bar:
        bar.update(3)
    assert stream.getvalue().startswith("quick: 3 img in ")


def test_quiet_prints_nothing_even_on_a_terminal(stream):
    pg.configure("quiet", stream=stream, live=True, min_seconds=0)
    with pg.Progress("predicting", total=4) as bar:
        bar.update(4)
    pg.note("a stage line")
    assert stream.getvalue() == ""


def test_terminal_live_line_is_drawn_then_wiped(stream):
    pg.configure("normal", stream=stream, live=True, min_seconds=0)
    with pg.Progress("predicting", total=10) as bar:
        for _ in range(10):
            bar.update(1)
            time.sleep(0.03)  # the line redraws 4x/s on its own timer
    out = stream.getvalue()
    assert "predicting  " in out and "/10 (" in out and "img/s" in out
    assert "\x1b[2K" in out  # erased before the summary line
    assert out.rstrip().split("\x1b[2K")[-1].startswith("predicting: 10 img in ")
    assert not pg._active_live  # the terminal is handed back


def test_error_inside_a_stage_leaves_no_summary(stream):
    pg.configure("normal", stream=stream, live=False, min_seconds=0)
    with pytest.raises(RuntimeError), pg.Progress("predicting", total=4) as bar:
        bar.update(2)
        raise RuntimeError("boom")
    assert stream.getvalue() == ""


def test_track_counts_the_last_short_batch(stream):
    pg.configure("verbose", stream=stream, live=False)
    starts = list(pg.track(range(0, 10, 4), "Grad-CAM", total=10, step=4))
    assert starts == [0, 4, 8]
    assert stream.getvalue().startswith("Grad-CAM: 10 img in ")


def test_one_live_line_at_a_time(stream):
    pg.configure("normal", stream=stream, live=True, min_seconds=60)
    with pg.Progress("outer", total=2) as outer:
        with pg.Progress("inner", total=2) as inner:
            inner.update(2)
            assert pg._active_live == [outer._line]
        outer.update(2)
    assert not pg._active_live


# --- the training callback ---------------------------------------------------------------------


def test_eta_arithmetic():
    from skinzoo.train.progress import TrainProgress

    cb = TrainProgress(epochs=5, batch_size=8)
    cb.set_params({"epochs": 5, "steps": 100})
    cb._reset_epoch(1)
    cb.epoch_times = [(40.0, 10.0, 800, 80.0)]  # epoch 1: 40 s training + 10 s validation
    cb.epoch_started = 995.0
    cb.first_step_at = 1000.4  # the first step took 5.4 s (tracing): not the pace
    cb.step = 25  # 24 more steps in 9.6 s: 0.4 s/step, 75 steps left = 30 s, + 10 s validation
    assert cb.epoch_eta(now=1010.0) == pytest.approx(40.0)
    # then 3 more epochs (2, 3, 4 of 0..4) at the 50 s mean
    assert cb.run_eta(now=1010.0) == pytest.approx(40.0 + 3 * 50.0)


def test_timing_summary():
    import os

    from skinzoo.train.progress import timing_summary

    line = timing_summary([(40.0, 6.0, 6400, 50.0), (20.0, 4.0, 6400, 36.0), (22.0, 4.0, 6400, 40.0)], 97.0)
    # the figures to scale from are those after epoch 1 (which traced the graph)
    assert line == ("training took 1 min 37 s: 3 epochs, 25.0 s per epoch (train 21.0 s + validation "
                    f"4.0 s), 305 img/s at 181% CPU ({os.cpu_count()} cores) while training; epoch 1 took "
                    "46.0 s (graph tracing, cache filling)")
    one = timing_summary([(20.0, 4.0, 6400, 10.0)], 25.0, stage="head")
    assert one.startswith("head training took 25.0 s: 1 epoch, 24.0 s per epoch") and \
        one.endswith("320 img/s at 50% CPU (" + f"{os.cpu_count()} cores) while training (includes graph tracing)")


def test_callback_in_a_real_fit(stream):
    """A tiny real Keras fit: the live line content at each step, validation, and the summary."""
    import keras

    from skinzoo.train.progress import TrainProgress

    pg.configure("verbose", stream=stream, live=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, 64), 3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    echoed, seen = [], []
    progress = TrainProgress(epochs=2, batch_size=16, echo=echoed.append)

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(progress.line())

        def on_test_batch_end(self, batch, logs=None):
            seen.append(progress.line())

    model.fit(x, y, batch_size=16, epochs=2, validation_data=(x[:32], y[:32]), verbose=0,
              callbacks=[progress, Spy()])
    assert seen[0].startswith("epoch 1/2  1/4 (25%)  ") and "loss " in seen[0] and "acc " in seen[0]
    assert "  ETA " in seen[0] and "  run " in seen[0]
    assert any(s.startswith("epoch 1/2  validating 1 batches") for s in seen)
    assert any(s.startswith("epoch 2/2  validating 2/2 batches") for s in seen)  # known after epoch 1
    assert len(progress.epoch_times) == 2 and all(i == 64 and c > 0 for _, _, i, c in progress.epoch_times)
    assert len(echoed) == 1 and echoed[0].startswith("training took ") and "2 epochs" in echoed[0]
    assert re.search(r"img/s at \d+% CPU \(\d+ cores\) while training", echoed[0])
    per_epoch = stream.getvalue().splitlines()  # -v: one timing line per epoch, on stderr
    assert [line.split(":")[0] for line in per_epoch] == ["  epoch 1", "  epoch 2"]


def test_callback_silent_on_a_non_chief_worker(stream):
    from skinzoo.train.progress import TrainProgress

    echoed = []
    cb = TrainProgress(epochs=1, batch_size=4, echo=echoed.append, enabled=False)
    cb.set_params({"epochs": 1, "steps": 2})
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    cb.on_train_batch_end(0, {"loss": 1.0})
    cb.on_epoch_end(0, {})
    cb.on_train_end()
    assert echoed == [] and not pg._active_live
