"""Several machines: which cluster launched us, TensorFlow's resolver for it, and preemption.

``--cluster slurm|kubernetes|tf-config|none`` (default ``auto``: detected from the environment).
Every mode goes through TensorFlow's own cluster resolvers; skinzoo only picks one, supplies what
the resolver cannot find itself (this pod's index on Kubernetes, the GPU count on a CPU node) and
turns their failures into one-line errors.
Preemption (SIGTERM) is handled in :mod:`skinzoo.train.preemption`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass

from skinzoo.config import CLUSTERS
from skinzoo.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_PORT = 8888  # SlurmClusterResolver's own default port_base
K8S_WAIT_SECONDS = 600


@dataclass(frozen=True)
class Cluster:
    kind: str  # "slurm" | "kubernetes" | "tf-config" | "none"
    reason: str  # why: "detected: ..." or "--cluster slurm"

    def describe(self) -> str:
        return f"{self.kind} ({self.reason})"


# --- which cluster ----------------------------------------------------------------------------

def detect_cluster(requested: str = "auto", environ=None) -> Cluster:
    """The cluster to use: the one asked for, or the one the environment shows.

    Detection order: ``TF_CONFIG`` naming several workers (set by ``--worker-hosts``, by the user
    or by an operator such as Kubeflow's TFJob) > a SLURM step with several tasks (``srun``) >
    a Kubernetes Indexed Job pod > none. A SLURM job with one task is a single machine.
    """
    env = os.environ if environ is None else environ
    if requested not in CLUSTERS:
        raise UsageError(f"--cluster {requested!r} is not one of {', '.join(CLUSTERS)}")
    if requested != "auto":
        if requested == "slurm" and "SLURM_PROCID" not in env:
            raise UsageError("--cluster slurm, but this process is not a SLURM task (no SLURM_PROCID)",
                             "start it with srun inside the job (see examples/slurm), or use --cluster none")
        if requested == "tf-config" and not env.get("TF_CONFIG"):
            raise UsageError("--cluster tf-config, but TF_CONFIG is not set",
                             "export TF_CONFIG, or pass --worker-hosts/--worker-index")
        if requested == "kubernetes" and "KUBERNETES_SERVICE_HOST" not in env:
            raise UsageError("--cluster kubernetes, but this process is not in a Kubernetes pod "
                             "(no KUBERNETES_SERVICE_HOST)", "use --cluster none outside Kubernetes")
        return Cluster(requested, f"--cluster {requested}")
    workers = _tf_config_workers(env)
    if workers > 1:
        return Cluster("tf-config", f"detected: TF_CONFIG with {workers} workers")
    slurm_tasks = _int(env.get("SLURM_STEP_NUM_TASKS"))
    if slurm_tasks > 1 and "SLURM_PROCID" in env:
        return Cluster("slurm", f"detected: SLURM step with {slurm_tasks} tasks, "
                                f"SLURM_PROCID={env['SLURM_PROCID']}")
    if "KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env:
        return Cluster("kubernetes", f"detected: Kubernetes Indexed Job, "
                                     f"JOB_COMPLETION_INDEX={env['JOB_COMPLETION_INDEX']}")
    if "SLURM_JOB_ID" in env:
        return Cluster("none", f"SLURM job {env['SLURM_JOB_ID']} with one task: one machine "
                               "(srun with several tasks for multi-worker)")
    return Cluster("none", "one machine: no TF_CONFIG, SLURM step or Kubernetes Indexed Job found")


def _tf_config_workers(env) -> int:
    raw = env.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except (json.JSONDecodeError, AttributeError):
        raise UsageError("TF_CONFIG is not valid JSON", "unset it, or use --worker-hosts/--worker-index") from None
    return sum(len(cluster.get(job, [])) for job in ("chief", "worker"))


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# --- TensorFlow's resolvers -------------------------------------------------------------------

def make_resolver(t, cluster: Cluster, port: int = DEFAULT_PORT):
    """TensorFlow's cluster resolver for ``cluster``; runs before TensorFlow's first op."""
    if cluster.kind == "tf-config":
        return t.distribute.cluster_resolver.TFConfigClusterResolver()
    if cluster.kind == "slurm":
        return slurm_resolver(t, port)
    if cluster.kind == "kubernetes":
        return kubernetes_resolver(t, port)
    raise ValueError(f"no resolver for cluster {cluster.kind!r}")


def slurm_resolver(t, port: int):
    """SlurmClusterResolver: node list, tasks per node and this task's rank from SLURM's step
    variables; each task gets ``port + its index on the node`` and its share of the node's GPUs."""
    gpus = t.config.list_physical_devices("GPU")
    base = t.distribute.cluster_resolver.SlurmClusterResolver
    try:
        if gpus:
            resolver = base(port_base=port, gpus_per_node=len(gpus), auto_set_gpu=True)
        else:
            resolver = _slurm_resolver_without_gpus(base)(port_base=port, gpus_per_node=1 << 16,
                                                          gpus_per_task=1, auto_set_gpu=False)
        resolver.cluster_spec()  # resolves now, so a bad SLURM variable is reported here
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"SLURM cluster: {err}",
                         "run skinzoo with srun inside the job, one task per GPU or per node "
                         "(see examples/slurm/job.sbatch)") from None
    if gpus:
        if resolver.num_accelerators()["GPU"] == 0:
            raise UsageError(f"SLURM cluster: this task sees {len(gpus)} GPU(s), too few for one per "
                             "task on its node", "request --gres=gpu:N per node with "
                             "--ntasks-per-node=N and no per-task GPU binding (examples/slurm)")
        # The resolver hands each task its GPUs through CUDA_VISIBLE_DEVICES, which CUDA has
        # already read here (skinzoo lists devices at import): apply the same choice in TensorFlow.
        chosen = [int(i) for i in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if i.strip()]
        t.config.set_visible_devices([gpus[i] for i in chosen], "GPU")
    return resolver


def _slurm_resolver_without_gpus(base):
    """TensorFlow 2.21's SlurmClusterResolver cannot resolve a node without GPUs: it walks the
    node's GPUs with ``range(0, gpus_per_node, gpus_per_task)``, whose step is 0 there
    (ValueError). This subclass is given one placeholder GPU slot per task for that walk (no
    CUDA_VISIBLE_DEVICES is set) and reports the truth, no accelerator, to the strategy."""

    class SlurmResolverWithoutGpus(base):
        def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
            return {"GPU": 0}

    return SlurmResolverWithoutGpus


def kubernetes_resolver(t, port: int, wait_seconds: int = K8S_WAIT_SECONDS):
    """KubernetesClusterResolver over the pods of this Indexed Job (label ``job-name``).

    TensorFlow's resolver lists the pods and their node addresses (``host_ip``: the workers
    listen on a hostPort) but cannot tell a pod its own index: that is JOB_COMPLETION_INDEX. It
    also raises while any pod is not Running yet, so start-up waits for every pod.
    """
    try:
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config
    except ImportError:
        raise UsageError("--cluster kubernetes needs the Kubernetes Python client",
                         "pip install 'skinzoo[kubernetes]' in the image, or set TF_CONFIG "
                         "(--cluster tf-config)") from None
    raw_index = os.environ.get("JOB_COMPLETION_INDEX", "")
    if not raw_index.isdigit():
        raise UsageError("--cluster kubernetes needs JOB_COMPLETION_INDEX (an Indexed Job)",
                         "set completionMode: Indexed in the Job (examples/kubernetes/job.yaml)")
    index = int(raw_index)
    # An Indexed Job's pod is named <job>-<index>-<suffix> and its hostname is <job>-<index>.
    job = os.environ.get("SKINZOO_K8S_JOB") or socket.gethostname().rsplit("-", 1)[0]
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException as err:
        raise UsageError(f"cannot reach the Kubernetes API from this pod: {err}",
                         "the pod needs a service account allowed to list pods "
                         "(examples/kubernetes/job.yaml)") from None
    # override_client: TF 2.21's cluster_spec() would otherwise load a kubeconfig file, which a
    # pod does not have, even when told it runs inside the cluster.
    resolver = t.distribute.cluster_resolver.KubernetesClusterResolver(
        {"worker": [f"job-name={job}"]}, tf_server_port=port, override_client=k8s_client.CoreV1Api())
    resolver.task_type, resolver.task_id = "worker", index
    deadline = time.time() + wait_seconds
    while True:
        try:
            workers = resolver.cluster_spec().as_dict().get("worker", [])
            if len(workers) > index:
                return resolver
            why = f"{len(workers)} pod(s) found, this is index {index}"
        except RuntimeError as err:  # a pod not Running yet
            why = str(err)
        if time.time() > deadline:
            raise UsageError(f"Kubernetes job {job}: the workers were not all running after "
                             f"{wait_seconds} s ({why})", "kubectl get pods -l job-name=" + job)
        time.sleep(5)


def chief_of(resolver) -> bool:
    """TensorFlow's rule: the ``chief`` task, or worker 0 when there is no chief job."""
    jobs = resolver.cluster_spec().as_dict()
    if "chief" in jobs:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and int(resolver.task_id) == 0


def task_address(resolver) -> str:
    return resolver.cluster_spec().task_address(resolver.task_type, int(resolver.task_id))
