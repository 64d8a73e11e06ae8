"""Shared pieces of the robustness tests: a CLI runner that fails on any traceback, and one real
`skinzoo train` run over a messy dataset that the evaluate/artifact tests reuse."""

from __future__ import annotations

import pytest

TINY = ["--model", "simple_cnn", "--img-size", "32", "--epochs", "1", "--batch-size", "8",
        "--no-tensorboard"]


def invoke(*args):
    """Run ``skinzoo ARGS`` in process; a Python traceback or an uncaught exception fails."""
    from click.testing import CliRunner
    from skinzoo_cli.main import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    text = result.output  # stdout and stderr as a terminal shows them
    assert "Traceback" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{type(result.exception).__name__}: {result.exception}\n{text}"
    return result


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.fixture
def skinzoo():
    return invoke


@pytest.fixture(scope="session")
def messy_run(tmp_path_factory):
    """`skinzoo train` (1 epoch, simple_cnn, 32 px, disk cache) over tests/badinputs'
    make_messy_dataset: ``(messy dataset, run directory, train output)``."""
    from badinputs import make_messy_dataset

    base = tmp_path_factory.mktemp("messy")
    messy = make_messy_dataset(base / "data")
    runs = base / "runs"
    result = invoke("train", "--data", messy.root, *TINY, "--cache", "disk", "--out", runs)
    assert result.exit_code == 0, result.output
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    return messy, run, result.output
