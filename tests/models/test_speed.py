"""`skinzoo models --speed` and skinzoo.models.speed on the smallest model, at 32 px."""

from __future__ import annotations

from click.testing import CliRunner
from skinzoo_cli.main import cli

from skinzoo.runtime import usable_cores


def test_measure_speed_reports_both_rates_and_the_models_size():
    from skinzoo.models.registry import build_model
    from skinzoo.models.speed import NUM_CLASSES, measure_speed

    s = measure_speed("simple_cnn", size=32, batch=8, steps=1)
    assert s.error is None and (s.name, s.size, s.batch) == ("simple_cnn", 32, 8)
    assert s.train_ips > 0 and s.predict_ips > 0
    # CPU time of every thread over wall time: above 0, at most every core busy (+ timer slack)
    assert isinstance(s.train_cpu_percent, float)
    assert 0 < s.train_cpu_percent <= 100 * usable_cores() + 5
    assert s.params == build_model("simple_cnn", NUM_CLASSES, input_shape=32).count_params()


def test_model_too_small_for_the_size_is_a_row_with_the_reason_not_a_crash():
    from skinzoo.models.speed import measure_speed

    s = measure_speed("alexnet", size=16, steps=1)
    assert s.train_ips is None and s.predict_ips is None and s.train_cpu_percent is None
    assert "too small" in s.error


def test_cli_speed_table_for_a_pattern():
    result = CliRunner().invoke(cli, ["models", "--speed", "--models", "simple_cnn", "--size", "32"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("note:")]
    assert lines[0].split()[:3] == ["name", "size", "batch"]
    assert lines[0].split()[3:9] == ["train", "img/s", "train", "CPU", "%", "predict"]
    row = lines[1].split()
    assert row[:4] == ["simple_cnn", "32", "px", "32"]  # default batch of simple_cnn
    assert float(row[4].replace(",", "")) > 0 and float(row[6].replace(",", "")) > 0
    assert 0 < float(row[5]) <= 100 * usable_cores() + 5  # train CPU %: all threads / wall
    assert len(lines) == 2


def test_cli_speed_options_are_checked():
    runner = CliRunner()
    too_small = runner.invoke(cli, ["models", "--speed", "--size", "4"])
    assert too_small.exit_code == 2 and "4 is not in the range" in too_small.output
    no_speed = runner.invoke(cli, ["models", "--size", "32", "--no-size"])
    assert no_speed.exit_code == 2 and "--size applies to --speed only" in no_speed.output
    twice = runner.invoke(cli, ["models", "resnet*", "--models", "simple_cnn", "--no-size"])
    assert twice.exit_code == 2 and "give the pattern once" in twice.output
