"""--cluster: detection, TensorFlow's SLURM resolver on loopback, and preemption of two workers.

The end-to-end tests start two real worker processes on 127.0.0.1 with the variables SLURM sets
for one node running a two-task step, as ``srun --ntasks-per-node=2`` would (SlurmClusterResolver
reads SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE). Two
nodes cannot be imitated on one machine: each node's workers listen on the same ports.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from support import free_ports

from skinzoo.errors import UsageError
from skinzoo.models.files import load_model_file
from skinzoo.runtime import tf
from skinzoo.train.cluster import detect_cluster, slurm_resolver
from train.test_processes import ENV, common, only_run, skinzoo, wait_for_rows

SLURM_STEP = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "127.0.0.1", "SLURM_STEP_NODELIST": "127.0.0.1",
              "SLURM_NNODES": "1", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2",
              "SLURM_TASKS_PER_NODE": "2", "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_NODEID": "0"}


# --- detection ------------------------------------------------------------------------------

def test_detects_each_launcher_and_says_why():
    assert detect_cluster("auto", {}).kind == "none"
    slurm = detect_cluster("auto", {**SLURM_STEP, "SLURM_PROCID": "1"})
    assert slurm.kind == "slurm" and "2 tasks" in slurm.describe() and "SLURM_PROCID=1" in slurm.reason
    one_task = detect_cluster("auto", {"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"})
    assert one_task.kind == "none" and "one task" in one_task.reason
    k8s = detect_cluster("auto", {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "1"})
    assert k8s.kind == "kubernetes"
    assert detect_cluster("auto", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}).kind == "none"  # a plain pod
    two = '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}'
    # TF_CONFIG wins: an operator (Kubeflow's TFJob) sets it inside Kubernetes pods
    assert detect_cluster("auto", {"TF_CONFIG": two, "KUBERNETES_SERVICE_HOST": "x",
                                   "JOB_COMPLETION_INDEX": "0"}).kind == "tf-config"
    assert detect_cluster("auto", {"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}}'}).kind == "none"


def test_an_explicit_cluster_must_match_the_environment():
    assert detect_cluster("none", {**SLURM_STEP, "SLURM_PROCID": "0"}).kind == "none"
    for kind, needs in (("slurm", "SLURM_PROCID"), ("tf-config", "TF_CONFIG"),
                        ("kubernetes", "KUBERNETES_SERVICE_HOST")):
        with pytest.raises(UsageError, match=needs) as err:
            detect_cluster(kind, {})
        assert err.value.hint
    with pytest.raises(UsageError, match="not valid JSON"):
        detect_cluster("auto", {"TF_CONFIG": "{oops"})


def test_slurm_resolver_reads_the_step_variables(monkeypatch):
    """TensorFlow's SlurmClusterResolver, unchanged except for nodes without a GPU (see cluster.py):
    two nodes with two tasks each, as examples/slurm/job.sbatch asks for."""
    step = {**SLURM_STEP, "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
            "SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3"}
    for key, value in step.items():
        monkeypatch.setenv(key, value)
    resolver = slurm_resolver(tf(), 23456)
    assert resolver.cluster_spec().as_dict() == {"worker": ["gpu07:23456", "gpu07:23457",
                                                            "gpu08:23456", "gpu08:23457"]}
    assert resolver.get_task_info() == ("worker", 3)
    assert resolver.num_accelerators() == {"GPU": 0}  # this machine has no GPU
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "3")  # 3 tasks on one node, but 4 in the step
    with pytest.raises(UsageError, match="SLURM cluster") as err:
        slurm_resolver(tf(), 23456)
    assert "srun" in err.value.hint


# --- two workers on loopback, launched as SLURM launches them --------------------------------

def fake_scontrol(folder: Path) -> Path:
    """A stand-in for SLURM's scontrol (``scontrol show hostnames LIST``): the issue expects the
    resolver to call it. TensorFlow 2.21's resolver expands host lists itself; each call is logged
    so the test can say whether it was used."""
    script = folder / "scontrol"
    script.write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/scontrol.calls"\n'
                      'if [ "$1 $2" = "show hostnames" ]; then echo 127.0.0.1; fi\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def start_workers(tmp_path: Path, args, tag: str):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake_scontrol(bin_dir)
    procs = []
    for rank in range(2):
        env = {**ENV, **SLURM_STEP, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
               "PATH": f"{bin_dir}{os.pathsep}{ENV.get('PATH', '')}"}
        env.pop("TF_CONFIG", None)
        log = open(tmp_path / f"{tag}-worker{rank}.log", "w")  # noqa: SIM115 (closed in finish)
        procs.append((subprocess.Popen(skinzoo(*args), stdout=log, stderr=subprocess.STDOUT,
                                       text=True, env=env), log))
    return procs


def finish(procs, timeout=300) -> list[tuple[int, str]]:
    results = []
    for proc, log in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other, _ in procs:
                other.kill()
            raise
        log.close()
        results.append((proc.returncode, Path(log.name).read_text()))
    return results


def train_args(data, out, port, *extra):
    return [*common(data, out, "--epochs", 2, "--batch-size", 4, "--cluster-port", port), *extra]


@pytest.mark.slow
def test_slurm_two_workers_sigterm_then_requeue_to_the_end(synth_dir, tmp_path):
    # 1. A two-task SLURM step, preempted: SIGTERM to worker 1 during epoch 2; both stop after
    #    the same step. (Two launches only: each costs TensorFlow's start-up on both workers.)
    out = tmp_path / "preempted"
    port = free_ports(1)[0]
    procs = start_workers(tmp_path, train_args(synth_dir, out, port), "preempted")
    try:
        deadline = time.time() + 120
        while not any(out.glob("*/history.csv")) and time.time() < deadline:
            time.sleep(0.05)
        run = only_run(out)
        wait_for_rows(run / "history.csv", 1, procs[0][0])
    except BaseException:
        for proc, _ in procs:
            proc.kill()
        raise
    procs[1][0].send_signal(signal.SIGTERM)
    results = finish(procs)
    assert "cluster: slurm (detected: SLURM step with 2 tasks, SLURM_PROCID=0)" in results[0][1]
    assert "2 replicas (this is worker 0, chief at 127.0.0.1:" in results[0][1]
    assert not (tmp_path / "bin" / "scontrol.calls").exists()  # TF 2.21 never calls scontrol
    for code, log in results:
        assert code == 143, log
        assert "preempted (SIGTERM) during epoch" in log and "Traceback" not in log
    assert f"skinzoo train --resume {run}" in results[0][1]
    rows = pd.read_csv(run / "history.csv")["epoch"].tolist()
    assert rows == [0]

    # 2. Requeued: every worker resumes the chief's run from the last finished epoch.
    port = free_ports(1)[0]
    results = finish(start_workers(tmp_path, ["train", "--resume", run, "--cluster", "slurm",
                                              "--cluster-port", port], "requeued"))
    for code, log in results:
        assert code == 0, log
        assert "Traceback" not in log
    assert "resuming after epoch 1" in results[0][1] and "worker 1 done" in results[1][1]
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1]  # each epoch once, to the end
    assert only_run(out) == run and not (run / "backup").exists()
    model = load_model_file(run / "best.keras")
    assert model.output_shape == (None, 7)
