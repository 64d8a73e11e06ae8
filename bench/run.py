"""Run every benchmark in its own process, print one table, write bench/results/<name>.json.

    python -m bench.run [--quick] [--data PATH] [--only NAME ...] [--timeout SECONDS]

Each ``bench/bench_<name>.py`` exposes ``run(quick, data) -> dict`` (docs/CONTRACTS.md
"Benchmarks"). Every benchmark gets a fresh interpreter: TensorFlow state (graphs, thread pools,
allocator caches) and peak-memory figures must not leak from one benchmark into the next. A
benchmark that fails is reported in the table and the others still run; the exit code is non-zero
only when every benchmark failed.

A result dict may carry an optional ``targets`` mapping ``{ratio name: ">= 10"}`` (operators
``>=``, ``>``, ``<=``, ``<``); the table then says whether each target was met.
An optional ``ratio_ranges`` mapping ``{ratio name: [min, max]}`` (the spread over alternating
rounds, when a ratio is a median) is shown beside the ratio and kept in the JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# The shared HAM10000 copy sits next to the repository (/work/shared next to /work/main).
DEFAULT_DATA = REPO_ROOT / ".." / "shared" / "data" / "ham10000"
TARGET = re.compile(r"^\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")
COLUMNS = ("benchmark", "figure", "value", "baseline", "ratio", "target", "met?")


# --- discovery and the child process --------------------------------------------------------------

def discover() -> list[str]:
    """Benchmark names (``bench_<name>.py`` → ``name``), sorted."""
    return sorted(p.stem[len("bench_"):] for p in BENCH_DIR.glob("bench_*.py"))


def select(names: list[str], only: list[str] | None) -> list[str]:
    if not only:
        return names
    wanted = [n.removeprefix("bench_").removesuffix(".py") for n in only]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise SystemExit(f"error: no benchmark named {', '.join(unknown)}\n"
                         f"  hint: available: {', '.join(names)}")
    return [n for n in names if n in wanted]


def child_main(name: str, quick: bool, data: str | None, out: str) -> int:
    """Inside the subprocess: run one benchmark, write its dict (or the error) to ``out``."""
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.bench_{name}")
        result = module.run(quick=quick, data=data)
        payload = {"ok": True, "result": result}
    except BaseException as err:  # noqa: BLE001 - any failure is a table row, not a crash
        import traceback

        from skinzoo.errors import SkinzooError

        if isinstance(err, SkinzooError):  # a user-side problem (data absent...): no traceback
            payload = {"ok": False, "error": f"{type(err).__name__}: {err.message}", "hint": err.hint}
        else:
            payload = {"ok": False, "error": f"{type(err).__name__}: {err}"}
            payload["traceback"] = traceback.format_exc()
    payload["seconds"] = round(time.perf_counter() - started, 2)
    payload["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(out).write_text(json.dumps(payload, default=_jsonable))
    return 0 if payload["ok"] else 1


def _jsonable(value):
    """numpy scalars and paths in a benchmark's dict become plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def run_child(name: str, quick: bool, data: str | None, timeout: float | None) -> dict:
    """Run one benchmark in a fresh interpreter; always returns a payload dict."""
    with tempfile.TemporaryDirectory(prefix=f"skinzoo-bench-{name}-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.run", "--child", name, "--result-file", str(out)]
        if quick:
            cmd.append("--quick")
        if data:
            cmd += ["--data", data]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout:g} s",
                    "seconds": round(time.perf_counter() - started, 2)}
        if out.exists():
            return json.loads(out.read_text())
        return {"ok": False, "error": f"the benchmark process died (exit code {proc.returncode}) "
                                      "before writing a result",
                "seconds": round(time.perf_counter() - started, 2)}


# --- machine and versions -------------------------------------------------------------------------

def machine_info() -> dict:
    info = {"cpu_model": platform.processor() or "unknown", "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "ram_gb": None, "load_average_at_start": None, "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
        info["cpu_model"] = model or info["cpu_model"]
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
        info["ram_gb"] = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    try:
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    return info


def versions() -> dict:
    """Installed versions without importing TensorFlow in the parent process."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for key, dists in (("tensorflow", ("tensorflow", "tensorflow-cpu", "tf-nightly")),
                       ("keras", ("keras",)), ("skinzoo", ("skinzoo",))):
        found[key] = None
        for dist in dists:
            try:
                found[key] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=10)
        found["git_commit"] = head.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        found["git_commit"] = None
    return found


# --- targets and the table ------------------------------------------------------------------------

def target_met(value, target: str | None) -> bool | None:
    """Whether ``value`` meets ``target`` (">= 10"); None when either is missing or unreadable."""
    if target is None or not isinstance(value, int | float):
        return None
    m = TARGET.match(str(target))
    if not m:
        return None
    op, bound = m.group(1), float(m.group(2))
    return {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[op]


def table_rows(name: str, payload: dict) -> list[tuple]:
    if not payload.get("ok"):
        return [(name, "FAILED", _one_line(payload.get("error", "unknown error")), "", "", "", "")]
    result = payload["result"]
    rows = [(name, figure, _fmt(value), "", "", "", "")
            for figure, value in (result.get("figures") or {}).items()]
    targets = result.get("targets") or {}
    for ratio, value in (result.get("ratios") or {}).items():
        target = targets.get(ratio)
        met = target_met(value, target)
        spread = (result.get("ratio_ranges") or {}).get(ratio)  # [min, max] over rounds, optional
        shown = _fmt(value) + (f" [{_fmt(spread[0])}-{_fmt(spread[1])}]" if spread else "")
        rows.append((name, ratio, "", result.get("baseline", ""), shown, target or "",
                     "" if met is None else ("yes" if met else "NO")))
    rows.append((name, "(process)", f"{payload.get('seconds', 0):.0f} s, peak RSS "
                 f"{payload.get('peak_rss_mb', 0):.0f} MB", "", "", "", ""))
    return rows


def _one_line(text: str, limit: int = 110) -> str:
    """The first line of an error, shortened: the table stays readable, the JSON keeps it all."""
    first = str(text).strip().splitlines()[0] if str(text).strip() else "unknown error"
    return first if len(first) <= limit else first[:limit - 3] + "..."


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(c).ljust(w) for c, w in zip(COLUMNS, widths, strict=True)), line]
    previous = None
    for row in rows:
        if previous is not None and row[0] != previous:
            out.append(line)
        out.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        previous = row[0]
    return "\n".join(out)


def write_result(name: str, payload: dict, quick: bool, data: str | None, machine: dict,
                 versions_: dict, started: str) -> Path:
    from skinzoo.fileio import write_json_atomic

    record = {"name": name, "quick": quick, "date": started, "data": data, "machine": machine,
              "versions": versions_, "ok": payload.get("ok", False),
              "seconds": payload.get("seconds"), "peak_rss_mb": payload.get("peak_rss_mb")}
    if payload.get("ok"):
        result = payload["result"]
        record.update({k: result.get(k) for k in ("baseline", "figures", "ratios", "ratio_ranges",
                                                     "targets", "notes")})
        record["targets_met"] = {r: target_met(v, (result.get("targets") or {}).get(r))
                                 for r, v in (result.get("ratios") or {}).items()}
    else:
        record.update({k: payload.get(k) for k in ("error", "hint", "traceback")})
    path = RESULTS_DIR / f"{name}.json"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, json.loads(json.dumps(record, default=_jsonable)))
    return path


# --- main -----------------------------------------------------------------------------------------

def resolve_data(data: str | None) -> str | None:
    """The data folder to pass on, or None (with a clear message) when it is absent."""
    explicit = data is not None
    path = Path(data) if explicit else DEFAULT_DATA
    if path.exists():
        return str(path.resolve())
    where = f"--data {data}" if explicit else f"the default data folder {path.resolve()}"
    print(f"NOTE: {where} does not exist: benchmarks that need real images will fail; pass "
          "--data PATH (a HAM10000 folder with HAM10000_metadata.csv and its images)", file=sys.stderr)
    return str(path) if explicit else None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small, few-minute versions")
    parser.add_argument("--data", default=None,
                        help=f"HAM10000 folder [default: {DEFAULT_DATA}]")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, args.quick, args.data, args.result_file)
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    names = select(names, args.only)
    data = resolve_data(args.data)
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    machine, versions_ = machine_info(), versions()
    print(f"{len(names)} benchmark(s), {'quick' if args.quick else 'full'} mode, data: {data or 'none'}; "
          f"{machine['cpu_model']}, {machine['usable_cores']} cores, {machine['ram_gb']} GB RAM, "
          f"load average {machine['load_average_at_start']}", flush=True)
    rows, failures = [], 0
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        try:
            payload = run_child(name, args.quick, data, args.timeout)
        except KeyboardInterrupt:  # the child got the same Ctrl-C; show what finished
            print(f"\ninterrupted during {name}; results so far:")
            print("\n" + format_table(rows) if rows else "(none)")
            return 130
        if not payload.get("ok"):
            failures += 1
            print(f"{name} FAILED: {payload.get('error')}", file=sys.stderr)
            if payload.get("hint"):
                print(f"  hint: {payload['hint']}", file=sys.stderr)
            if payload.get("traceback"):
                print(payload["traceback"], file=sys.stderr)
        path = write_result(name, payload, args.quick, data, machine, versions_, started)
        print(f"{name}: {payload.get('seconds', 0):.0f} s -> {path.relative_to(REPO_ROOT)}", flush=True)
        rows += table_rows(name, payload)
    print("\n" + format_table(rows))
    if machine["load_average_at_start"] and machine["usable_cores"] and \
            machine["load_average_at_start"][0] > machine["usable_cores"]:
        print(f"\nNOTE: load average {machine['load_average_at_start'][0]} > {machine['usable_cores']} "
              "cores at start: other processes share the CPU; compare ratios, not absolute times.")
    return 1 if names and failures == len(names) else 0


if __name__ == "__main__":
    sys.exit(main())
