"""examples/: every config loads and validates, names a real model, and one runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONFIGS = sorted(EXAMPLES.glob("*/config.toml"))


def test_examples_exist():
    names = {c.parent.name for c in CONFIGS}
    # one per use case the README index promises
    assert {"ham10000_cpu", "ham10000_gpu", "isic2019", "binary_benign_malignant",
            "chest_xray_folders", "two_gpus", "multi_worker", "transfer_two_stage_smote"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_config_loads_and_names_a_registered_model(path):
    from skinzoo.config import load_toml, resolve
    from skinzoo.models.registry import list_models

    options = load_toml(path)  # unknown keys raise UsageError
    config = resolve(options).validate()
    assert config.model in list_models()
    assert config.model == options["model"]  # the example says which model, never the default
    # data is a placeholder the user replaces (or overrides with --data), never a local path
    assert not Path(config.data).is_absolute()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_readme_gives_the_command_and_is_indexed(path):
    readme = (path.parent / "README.md").read_text(encoding="utf-8")
    assert f"--config examples/{path.parent.name}/config.toml" in readme
    index = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert f"]({path.parent.name}/)" in index


def test_pretrained_examples_use_pretrained_models():
    from skinzoo.config import load_toml
    from skinzoo.models.registry import get_model_info

    for path in CONFIGS:
        options = load_toml(path)
        if options.get("weights") == "imagenet":
            assert get_model_info(options["model"]).pretrained, path


def test_multi_worker_example_lists_two_hosts_and_leaves_the_index_to_each_host():
    from skinzoo.config import load_toml

    options = load_toml(EXAMPLES / "multi_worker" / "config.toml")
    assert len(options["worker_hosts"].split(",")) == 2
    assert "worker_index" not in options  # the only per-host difference, given on the command line


@pytest.mark.slow
def test_cpu_example_trains_through_the_cli(synth_dir, tmp_path):
    """The README's command with --data and a tiny size: a complete run directory comes out."""
    from click.testing import CliRunner
    from skinzoo_cli.main import cli

    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, [
        "train", "--config", str(EXAMPLES / "ham10000_cpu" / "config.toml"), "--data", str(synth_dir),
        "--img-size", "32", "--epochs", "1", "--out", str(out), "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    (run,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert "compact_resnet" in run.name
    from skinzoo.config import load_toml

    saved = load_toml(run / "config.toml")  # the resolved config: example values + overrides
    assert saved["model"] == "compact_resnet" and saved["img_size"] == 32 and saved["epochs"] == 1
    assert saved["lr"] == 0.002 and saved["balance"] == "none" and saved["loss"] == "logit-adjusted"
    assert saved["color_constancy"] == "shades-of-gray" and saved["ema"] == 0.999
    assert saved["metadata"] == "age,sex,site" and (run / "metadata.json").is_file()
    assert saved["data"] == str(synth_dir)
    assert (run / "best.keras").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["balanced_accuracy"] <= 1.0
    history = (run / "history.csv").read_text().strip().splitlines()
    assert len(history) == 2  # header + the one epoch
