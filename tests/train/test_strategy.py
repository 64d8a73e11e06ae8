import json
import os

import pytest

from skinzoo.errors import ResourceError, UsageError
from skinzoo.train.strategy import parse_gpus, select_strategy, write_tf_config


def test_more_gpus_than_exist_is_a_clear_error():
    with pytest.raises(ResourceError, match="asked for 2 GPU") as err:
        select_strategy(gpus="2")
    assert "--gpus all" in err.value.hint


def test_no_gpu_means_cpu_said_plainly():
    choice = select_strategy(gpus="all")
    assert choice.kind == "cpu" and choice.replicas == 1
    assert "CPU" in choice.describe()


def test_parse_gpus():
    assert parse_gpus("all") is None and parse_gpus(None) is None and parse_gpus("0") == 0
    with pytest.raises(UsageError):
        parse_gpus("two")
    with pytest.raises(UsageError):
        parse_gpus("-1")


def test_worker_hosts_write_tf_config(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "")  # so monkeypatch restores whatever write_tf_config sets
    config = write_tf_config("10.0.0.1:2222, 10.0.0.2:2222", 1)
    assert json.loads(os.environ["TF_CONFIG"]) == config
    assert config["cluster"]["worker"] == ["10.0.0.1:2222", "10.0.0.2:2222"]
    assert config["task"] == {"type": "worker", "index": 1}
    for hosts, index in (("a:1", 0), ("a:1,b:2", 2), ("a,b:2", 0)):
        with pytest.raises(UsageError):
            write_tf_config(hosts, index)
