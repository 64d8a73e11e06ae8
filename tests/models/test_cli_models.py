"""`skinzoo models [PATTERN]` through Click's CliRunner."""

from __future__ import annotations

from click.testing import CliRunner
from skinzoo_cli.main import cli


def test_models_table_lists_everything_with_defaults():
    result = CliRunner().invoke(cli, ["models", "--no-size"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["name", "family", "params"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert {"compact_resnet", "resnet152", "efficientnetb0", "alexnet"} <= set(rows)
    assert "224 px" in rows["resnet152"] and "16" in rows["resnet152"].split()
    assert "0.0001" in rows["resnet152"] and " yes " in rows["resnet152"]


def test_models_pattern_with_sizes():
    result = CliRunner().invoke(cli, ["models", "resnet5*"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    assert set(rows) == {"resnet50", "resnet50d", "resnet50v2"}
    # keras.applications ResNet50 notop 23,587,712 + default head 2048→256→128→1000
    assert rows["resnet50"][2] == f"{(23_587_712 + 524_544 + 32_896 + 129_000) / 1e6:.2f}M"
    assert 3.5 < float(rows["resnet50"][3]) < 4.5  # ~4.1 GMACs at 224 px


def test_models_unknown_pattern_is_a_usage_error():
    result = CliRunner().invoke(cli, ["models", "zz*"])
    assert result.exit_code == 2 and "no model matches" in result.output
