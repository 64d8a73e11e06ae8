"""`skinzoo info`: the environment in one paste-able report (for bug reports and sizing runs).

Versions (skinzoo, Python, TensorFlow, Keras, NumPy, and the CUDA/cuDNN TensorFlow was built
for), the devices TensorFlow sees (GPUs with their memory; the CPU's model, cores and the
instruction sets that matter for speed: AVX-512, bfloat16, AMX), memory, where runs and caches
go (with free disk), and whether the ImageNet weights could be downloaded from here.

It downloads nothing: the weights check is one ``HEAD`` request with a short timeout (the answer
says yes/no and why). Every probe that fails says so in the report instead of raising.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from skinzoo import __version__
from skinzoo.runtime import usable_cores

# One real keras.applications file (the ResNet-50 backbone, ~94 MB): HEAD only, never fetched.
IMAGENET_PROBE_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                      "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
PROBE_TIMEOUT = 2.0
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


# --- probes (each returns plain data, never raises) ------------------------------------------

def versions() -> dict:
    out = {"skinzoo": __version__, "python": platform.python_version(),
           "platform": platform.platform()}
    try:
        from skinzoo.runtime import tf

        t = tf()
        import keras
        import numpy

        out.update(tensorflow=t.__version__, keras=keras.__version__, numpy=numpy.__version__)
        build = dict(t.sysconfig.get_build_info())
        out["cuda_build"] = bool(build.get("is_cuda_build"))
        out["cuda"] = build.get("cuda_version") or None
        out["cudnn"] = build.get("cudnn_version") or None
    except Exception as err:  # noqa: BLE001 - a broken install is exactly what to report
        out["tensorflow"] = f"cannot import ({type(err).__name__}: {str(err)[:120]})"
    return out


def cpu_info(cpuinfo: str | None = None) -> dict:
    """Model, logical cores (all / usable by this process) and speed-relevant flags."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.lower().startswith(("model name", "hardware", "cpu model"))), None)
    flags_line = next((line.split(":", 1)[1] for line in cpuinfo.splitlines()
                       if line.lower().startswith(("flags", "features"))), "")
    flags = set(flags_line.split())
    usable = usable_cores()
    found = {f: f in flags for f in CPU_FLAGS} if flags else {}
    return {"model": model or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "usable_cores": usable, "flags": found,
            "avx512": found.get("avx512f"), "bfloat16": (found.get("avx512_bf16") or found.get("amx_bf16"))
            if found else None, "amx": found.get("amx_tile") if found else None}


def memory_info(meminfo: str | None = None) -> dict:
    """Total and available RAM (GiB) and a cgroup (container) limit when there is one."""
    if meminfo is None:
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            meminfo = ""
    values = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0]) * 1024
    out = {"total_gb": _gb(values.get("MemTotal")), "available_gb": _gb(values.get("MemAvailable"))}
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            out["container_limit_gb"] = _gb(int(limit))
    except OSError:
        pass
    return out


def _gb(n) -> float | None:
    return None if n is None else round(n / 2**30, 1)


def device_info() -> dict:
    """What TensorFlow sees: GPUs (name, compute capability, memory from nvidia-smi)."""
    try:
        from skinzoo.runtime import tf

        t = tf()
        gpus = t.config.list_physical_devices("GPU")
        cpus = t.config.list_physical_devices("CPU")
    except Exception as err:  # noqa: BLE001
        return {"error": f"{type(err).__name__}: {str(err)[:120]}"}
    memory = _nvidia_smi_memory()
    listed = []
    for i, gpu in enumerate(gpus):
        try:
            details = t.config.experimental.get_device_details(gpu)
        except Exception:  # noqa: BLE001
            details = {}
        cc = details.get("compute_capability")
        listed.append({"name": details.get("device_name") or gpu.name,
                       "compute_capability": ".".join(map(str, cc)) if cc else None,
                       "memory_gb": memory[i] if i < len(memory) else None})
    return {"gpus": listed, "cpu_devices": len(cpus)}


def _nvidia_smi_memory() -> list[float]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
        return [round(float(v) / 1024, 1) for v in out.split()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


def path_info(runs_root: str | os.PathLike = "runs") -> dict:
    """Where runs, skinzoo's caches and Keras' downloaded weights go, with free disk space."""
    runs = Path(runs_root).expanduser().absolute()
    keras_home = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()
    weights = keras_home / "models"
    return {"runs": str(runs), "runs_exist": runs.is_dir(),
            "cache": str(runs / ".cache"),
            "keras_weights": str(weights),
            "cached_weight_files": sorted(p.name for p in weights.glob("*.h5")) if weights.is_dir() else [],
            "free_disk_gb": _free_gb(runs)}


def _free_gb(path: Path) -> float | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return _gb(shutil.disk_usage(candidate).free)
            except OSError:
                return None
    return None


def can_download(url: str = IMAGENET_PROBE_URL, timeout: float = PROBE_TIMEOUT) -> dict:
    """``{"ok": bool, "reason": str, "url": url}`` from one HEAD request (no body is fetched)."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": f"skinzoo/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return {"ok": True, "reason": f"HTTP {response.status} from {response.url.split('/')[2]}",
                    "url": url}
    except urllib.error.HTTPError as err:
        return {"ok": False, "reason": f"the server answered HTTP {err.code} {err.reason}", "url": url}
    except urllib.error.URLError as err:
        reason = getattr(err.reason, "strerror", None) or str(err.reason)
        return {"ok": False, "reason": f"no connection: {reason}", "url": url}
    except (TimeoutError, OSError) as err:
        return {"ok": False, "reason": f"no connection: {type(err).__name__} {err or 'timed out'}",
                "url": url}


# --- the report ------------------------------------------------------------------------------

def collect_info(runs_root="runs", network: bool = True, probe_url: str = IMAGENET_PROBE_URL,
                 timeout: float = PROBE_TIMEOUT) -> dict:
    return {"versions": versions(), "cpu": cpu_info(), "memory": memory_info(),
            "devices": device_info(), "paths": path_info(runs_root),
            "imagenet_download": can_download(probe_url, timeout) if network else
            {"ok": None, "reason": "not checked (--no-network)", "url": probe_url},
            "python_executable": sys.executable}


def _yes(value) -> str:
    return "?" if value is None else ("yes" if value else "no")


def info_lines(info: dict) -> list[str]:
    v, cpu, mem, dev, paths, net = (info[k] for k in ("versions", "cpu", "memory", "devices",
                                                        "paths", "imagenet_download"))
    cuda = (f"built for CUDA {v.get('cuda') or '?'}, cuDNN {v.get('cudnn') or '?'}"
            if v.get("cuda_build") else "CPU-only build (no CUDA)")
    lines = [f"skinzoo {v['skinzoo']}   Python {v['python']}   {v['platform']}",
             f"TensorFlow {v.get('tensorflow', '?')}   Keras {v.get('keras', '?')}   NumPy "
             f"{v.get('numpy', '?')}   {cuda}",
             f"CPU: {cpu['model']}, {cpu['cores']} logical cores ({cpu['usable_cores']} usable here); "
             f"AVX-512 {_yes(cpu['avx512'])}, bfloat16 {_yes(cpu['bfloat16'])}, AMX {_yes(cpu['amx'])}"]
    extra = f", container limit {mem['container_limit_gb']} GB" if mem.get("container_limit_gb") else ""
    lines.append(f"memory: {mem['total_gb']} GB total, {mem['available_gb']} GB available{extra}")
    if "error" in dev:
        lines.append(f"devices: TensorFlow could not list them ({dev['error']})")
    elif dev["gpus"]:
        for i, g in enumerate(dev["gpus"]):
            memory = f", {g['memory_gb']} GB" if g["memory_gb"] else ""
            cc = f", compute capability {g['compute_capability']}" if g["compute_capability"] else ""
            lines.append(f"GPU {i}: {g['name']}{memory}{cc}")
    else:
        lines.append("GPUs: none visible to TensorFlow (training runs on the CPU)")
    lines += [f"runs: {paths['runs']}{'' if paths['runs_exist'] else ' (not created yet)'}, "
              f"{paths['free_disk_gb']} GB free",
              f"caches: {paths['cache']} (decoded images, embeddings)",
              f"ImageNet weights cache: {paths['keras_weights']} "
              f"({len(paths['cached_weight_files'])} file(s) there)"]
    ok = net["ok"]
    lines.append(f"ImageNet weights downloadable from here: {_yes(ok) if ok is not None else 'not checked'}"
                 f" ({net['reason']})")
    if ok is False:
        lines.append("  use --weights PATH with a keras.applications *_notop.h5 file copied from "
                     "elsewhere, or --weights none")
    return lines
