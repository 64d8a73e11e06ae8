"""Config precedence, TOML round trip, validation messages."""

import pytest

from skinzoo.config import TrainConfig, load_toml, resolve, to_toml
from skinzoo.errors import UsageError


def test_precedence_defaults_file_cli(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nmodel = "custom_cnn"\nepochs = 3\nlr = 0.01\n')
    cfg = resolve(load_toml(f), {"epochs": 5, "lr": None})
    assert cfg.model == "custom_cnn"  # from file
    assert cfg.epochs == 5  # command line wins
    assert cfg.lr == 0.01  # None on the command line means "not given"
    assert cfg.balance == "class-weight"  # default


def test_round_trip(tmp_path):
    cfg = TrainConfig(data="d i r/\"q\"", model="resnet18", epochs=2, dense=[64, 32], clipnorm=1.0,
                      hair_removal=True)
    f = tmp_path / "config.toml"
    f.write_text(to_toml(cfg))
    assert resolve(load_toml(f)) == cfg


def test_unknown_key_suggests(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("epoch = 3\n")
    with pytest.raises(UsageError, match="unknown option") as err:
        load_toml(f)
    assert "epochs" in err.value.hint


def test_invalid_toml_and_values(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("epochs = = 3\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_toml(f)
    with pytest.raises(UsageError, match="schedule"):
        TrainConfig(schedule="linear").validate()
    with pytest.raises(UsageError, match="val"):
        TrainConfig(val=0.6, test=0.5).validate()
    with pytest.raises(UsageError, match="lr"):
        TrainConfig(lr=float("nan")).validate()
