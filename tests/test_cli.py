"""The CLI entry point: group, version, help, error-to-exit-code behaviour."""

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from skinzoo_cli.main import cli

from skinzoo import __version__


def test_version_and_help_list_every_command():
    runner = CliRunner()
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("data", "models", "train", "evaluate", "predict", "gradcam", "compare"):
        assert f"  {name} " in result.output, name


def test_library_error_is_one_line_and_exit_code(tmp_path):
    runner = CliRunner()
    (tmp_path / "d" / "HAM10000_metadata.csv").parent.mkdir()
    (tmp_path / "d" / "HAM10000_metadata.csv").write_text("x\n")
    result = runner.invoke(cli, ["data", "synth", str(tmp_path / "d")])
    assert result.exit_code == 2  # UsageError
    assert "already holds a dataset" in result.output and "--overwrite" in result.output
    assert "Traceback" not in result.output


def test_debug_flag_shows_traceback(tmp_path):
    (tmp_path / "HAM10000_metadata.csv").write_text("x\n")
    result = CliRunner().invoke(cli, ["--debug", "data", "synth", str(tmp_path)])
    assert result.exit_code == 2
    assert "Traceback" in result.output


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2 and "No such command" in result.output


def test_installed_console_script_runs(tmp_path):
    exe = Path(sys.executable).with_name("skinzoo")
    assert exe.exists(), "pip install must create the skinzoo console script"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([str(exe), "data", "synth", str(tmp_path / "s"), "--n", "21", "--size", "24"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "wrote 21 images" in out.stdout
    assert len(list((tmp_path / "s" / "images").glob("*.jpg"))) == 21
    bad = subprocess.run([str(exe), "data", "synth", str(tmp_path / "s")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_package_is_not_installed_as_top_level_cli():
    import importlib.util

    spec = importlib.util.find_spec("cli")
    assert spec is None or "site-packages" not in str(spec.origin or "")
