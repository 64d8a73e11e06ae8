"""Device and distribution strategy selection: CPU, MirroredStrategy over GPUs, multi-worker.

``--gpus N|all|0`` picks the GPUs of this machine; a cluster (``--cluster``: SLURM, Kubernetes or
``TF_CONFIG``, which ``--worker-hosts`` with ``--worker-index`` writes; detected by default, see
:mod:`skinzoo.train.cluster`) switches to MultiWorkerMirroredStrategy across machines with
TensorFlow's own cluster resolvers and collective ops. ``cpu_replicas`` splits the CPU into logical devices and mirrors
over them: the way the multi-device code path is tested on a machine without GPUs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass

from skinzoo.errors import ResourceError, UsageError
from skinzoo.runtime import tf
from skinzoo.train.cluster import (
    DEFAULT_PORT,
    Cluster,
    chief_of,
    detect_cluster,
    make_resolver,
    task_address,
)

log = logging.getLogger(__name__)


@dataclass
class StrategyChoice:
    strategy: object
    kind: str  # "cpu" | "gpu" | "mirrored" | "multi-worker"
    devices: list[str]
    replicas: int
    is_chief: bool = True
    worker_index: int = 0
    cluster: Cluster | None = None

    def describe(self) -> str:
        if self.kind == "multi-worker":
            return (f"MultiWorkerMirroredStrategy, {self.replicas} replicas "
                    f"(this is worker {self.worker_index}{', chief' if self.is_chief else ''} "
                    f"at {self.devices[0]}; cluster: {self.cluster.describe()})")
        if self.kind == "mirrored":
            return f"MirroredStrategy over {self.replicas} devices: {', '.join(self.devices)}"
        if self.kind == "gpu":
            return f"one GPU ({self.devices[0]})"
        return "the CPU (no GPU found)" if not self.devices or "CPU" in self.devices[0].upper() else self.devices[0]


def write_tf_config(worker_hosts: str, worker_index: int) -> dict:
    """Build and export ``TF_CONFIG`` from ``host:port,host:port`` and this machine's index."""
    hosts = [h.strip() for h in worker_hosts.split(",") if h.strip()]
    if len(hosts) < 2:
        raise UsageError(f"--worker-hosts {worker_hosts!r} names fewer than 2 workers",
                         "give every worker as host:port, comma-separated, the same list on each host")
    if not 0 <= worker_index < len(hosts):
        raise UsageError(f"--worker-index {worker_index} is outside 0..{len(hosts) - 1}")
    for host in hosts:
        if ":" not in host:
            raise UsageError(f"worker {host!r} has no port", "write it as host:port, e.g. 10.0.0.2:12345")
    config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": worker_index}}
    os.environ["TF_CONFIG"] = json.dumps(config)
    return config


def parse_gpus(value: str | int | None) -> int | None:
    """``all``/None → None (every GPU there is); otherwise a non-negative count."""
    if value is None or str(value).lower() == "all":
        return None
    try:
        count = int(value)
    except ValueError:
        raise UsageError(f"--gpus {value!r} is not a number or 'all'") from None
    if count < 0:
        raise UsageError(f"--gpus {count} is negative")
    return count


def select_strategy(gpus="all", cpu_replicas: int = 0, worker_hosts: str | None = None,
                    worker_index: int | None = None, cluster: str = "auto",
                    cluster_port: int = DEFAULT_PORT) -> StrategyChoice:
    """Choose the strategy. Must run before TensorFlow executes its first op (logical devices)."""
    if worker_hosts:
        if cluster not in ("auto", "tf-config"):
            raise UsageError(f"--worker-hosts and --cluster {cluster} contradict each other",
                             "--worker-hosts is TF_CONFIG: drop one of them")
        write_tf_config(worker_hosts, worker_index if worker_index is not None else 0)
    found = detect_cluster(cluster)
    t = tf()
    if found.kind != "none":
        return _multi_worker(t, found, cluster_port)
    return dataclasses.replace(_one_machine(t, gpus, cpu_replicas), cluster=found)


def _one_machine(t, gpus, cpu_replicas: int) -> StrategyChoice:
    if cpu_replicas and cpu_replicas > 1:
        return _mirrored_cpu(t, cpu_replicas)

    wanted = parse_gpus(gpus)
    found = [d.name.replace("/physical_device:", "/") for d in t.config.list_physical_devices("GPU")]
    if wanted is None:
        wanted = len(found)
    if wanted > len(found):
        raise ResourceError(
            f"--gpus {wanted} asked for {wanted} GPU(s) but TensorFlow sees {len(found)}",
            "use --gpus all (every GPU there is) or --gpus 0 (CPU); for NVIDIA GPUs install "
            "skinzoo[gpu] and check `nvidia-smi`",
        )
    for device in t.config.list_physical_devices("GPU"):
        try:  # take memory as needed, so two runs can share a GPU and OOMs are reported sooner
            t.config.experimental.set_memory_growth(device, True)
        except RuntimeError:
            pass
    if wanted == 0:
        if found:
            log.info("--gpus 0: training on the CPU although %d GPU(s) are present", len(found))
        return StrategyChoice(t.distribute.get_strategy(), "cpu", ["/CPU:0"], 1)
    devices = [f"/GPU:{i}" for i in range(wanted)]
    if wanted == 1:
        return StrategyChoice(t.distribute.OneDeviceStrategy(devices[0]), "gpu", devices, 1)
    return StrategyChoice(t.distribute.MirroredStrategy(devices=devices), "mirrored", devices, wanted)


def _mirrored_cpu(t, replicas: int) -> StrategyChoice:
    cpu = t.config.list_physical_devices("CPU")[0]
    current = t.config.get_logical_device_configuration(cpu)
    if not current or len(current) != replicas:
        try:
            t.config.set_logical_device_configuration(
                cpu, [t.config.LogicalDeviceConfiguration() for _ in range(replicas)])
        except RuntimeError:
            raise UsageError(
                "cannot split the CPU into logical devices after TensorFlow has started",
                "choose the strategy before building models or datasets (a fresh process)",
            ) from None
    devices = [d.name for d in t.config.list_logical_devices("CPU")][:replicas]
    return StrategyChoice(t.distribute.MirroredStrategy(devices=devices), "mirrored", devices, replicas)


def _multi_worker(t, cluster: Cluster, port: int) -> StrategyChoice:
    resolver = make_resolver(t, cluster, port)
    options = t.distribute.experimental.CommunicationOptions(
        implementation=t.distribute.experimental.CommunicationImplementation.RING)
    strategy = t.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver,
                                                        communication_options=options)
    return StrategyChoice(strategy, "multi-worker", [task_address(resolver)],
                          strategy.num_replicas_in_sync, is_chief=chief_of(resolver),
                          worker_index=int(resolver.task_id), cluster=cluster)


def precision_policy(precision: str, choice: StrategyChoice) -> str:
    """``auto``: mixed_float16 on GPUs, float32 on the CPU (bfloat16 only when asked)."""
    if precision != "auto":
        return precision
    return "mixed_float16" if choice.kind in ("gpu", "mirrored") and any(
        "GPU" in d.upper() for d in choice.devices) else "float32"
