"""Real-data results on HAM10000: train the CPU-friendly zoo models, evaluate once on test.

    python -m bench.real_data [--data ../shared/data/ham10000] [--out runs-ham] [--only NAME]

Protocol (the README's "Results on real HAM10000 images" table comes from this script):
- one lesion-grouped, class-stratified 70/15/15 split with seed 0, shared by every model
  (the first run writes it, the others reuse it with --split-file);
- each model trains with the fixed settings below (skinzoo's defaults: class-weighted loss,
  light augmentation, warm-up + cosine schedule, best epoch chosen on validation balanced
  accuracy) — nothing here was tuned on the test split;
- the best checkpoint is evaluated once on the test split with bootstrap 95% intervals.
Writes bench/results/real_data.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "real_data.json"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000"

# name -> skinzoo train options. Epoch counts keep each run within ~30 CPU-minutes here; they were
# set from a first 25-epoch compact_resnet run whose validation balanced accuracy was still rising.
MODELS = {
    "custom_cnn": ["--model", "custom_cnn", "--img-size", "64", "--epochs", "20"],
    "compact_resnet": ["--model", "compact_resnet", "--img-size", "64", "--epochs", "50"],
    "resnet18_small": ["--model", "resnet18_small", "--img-size", "64", "--epochs", "30"],
    # round 1's examples/ham10000_cpu/config.toml, and today's (the recommended CPU recipe)
    "recipe_round1": ["--model", "compact_resnet", "--img-size", "64", "--epochs", "30",
                      "--augment", "light", "--early-stopping", "8"],
    "recipe": ["--config", str(Path(__file__).resolve().parents[1] / "examples" / "ham10000_cpu" / "config.toml")],
}
# Non-HAM ISIC images (other clinics and cameras): essentially melanoma vs naevus, so mel and nv
# recall are reported, never used to choose anything.
EXTERNAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isic-external" / "labels.csv"
LITERATURE = {
    "model": "typical notebook custom CNN (random split, leaks lesions)",
    "accuracy": 0.686, "macro_f1": 0.41,
}


def skinzoo(*args) -> list[str]:
    return [sys.executable, "-m", "skinzoo_cli.main", *map(str, args)]


def run(cmd: list[str], log: Path) -> float:
    started = time.time()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode != 0:
        raise SystemExit(f"command failed (exit {done.returncode}); see {log}")
    return time.time() - started


def newest_run(out: Path, before: set[Path]) -> Path:
    runs = [p for p in out.iterdir() if (p / "classes.json").exists() and p not in before]
    if len(runs) != 1:
        raise SystemExit(f"expected one new run in {out}, found {len(runs)}")
    return runs[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default="runs-ham")
    parser.add_argument("--only", nargs="*", choices=sorted(MODELS))
    parser.add_argument("--collect", nargs="*", metavar="OUT",
                        help="rebuild the results from finished runs in these folders (no training)")
    parser.add_argument("--record", nargs=2, metavar=("NAME", "RUN"),
                        help="add a finished run (trained on the same split) under NAME: its one "
                             "test evaluation and the external check, no training")
    parser.add_argument("--external", default=str(EXTERNAL), help="external check labels.csv")
    args = parser.parse_args(argv)
    if args.record:
        return record(*args.record, Path(args.external), Path(args.out))
    if args.collect is not None:
        return collect([Path(p) for p in args.collect] or [Path(args.out)])
    data = Path(args.data)
    if not (data / "HAM10000_metadata.csv").exists():
        raise SystemExit(f"HAM10000 not found at {data} (expected HAM10000_metadata.csv and images/); "
                         "pass --data PATH")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "real_data.log"
    split_file = out / "split.csv"
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"models": {}}
    for name in args.only or MODELS:
        before = set(out.iterdir())
        shared = ["--split-file", split_file] if split_file.exists() else []
        seconds = run(skinzoo("train", "--data", data, "--out", out, "--no-tensorboard",
                              "--seed", 0, *MODELS[name], *shared), log)
        run_dir = newest_run(out, before)
        if not split_file.exists():
            split_file.write_bytes((run_dir / "split.csv").read_bytes())
        run(skinzoo("evaluate", run_dir, "--split", "test", "--report"), log)  # the one test look
        external_check(run_dir, Path(args.external), log)
        results["models"][name] = model_result(name, run_dir, seconds / 60)
        print(f"{name}: done in {seconds / 60:.1f} min", flush=True)
    if RESULTS.exists():  # another invocation (--only) may have finished meanwhile: keep its models
        on_disk = json.loads(RESULTS.read_text())
        results["models"] = {**on_disk.get("models", {}), **results["models"]}
    results.update(date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, {os.cpu_count()} cores",
                   data=str(data), literature=LITERATURE)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


def external_check(run_dir: Path, labels: Path, log: Path) -> None:
    if labels.exists():
        run(skinzoo("evaluate", run_dir, "--data", labels, "--bootstrap", 200), log)


def external_result(run_dir: Path) -> dict | None:
    found = sorted(run_dir.glob("eval/all-isic-external*/metrics.json"))
    if not found:
        return None
    per_class = json.loads(found[0].read_text()).get("per_class", {})
    recall = {c: per_class.get(c, {}).get("recall") for c in ("mel", "nv")}
    if None in recall.values():
        return None
    return {"mel_recall": recall["mel"], "nv_recall": recall["nv"],
            "mean": (recall["mel"] + recall["nv"]) / 2}


def record(name: str, run_dir: str, labels: Path, out: Path) -> None:
    """A run trained outside this script (same split): evaluate it once on test, check it
    externally, and add it to the results under ``name``."""
    run_dir = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "real_data.log"
    if not (run_dir / "eval" / "test" / "metrics.json").exists():
        run(skinzoo("evaluate", run_dir, "--split", "test", "--report"), log)  # the one test look
    external_check(run_dir, labels, log)
    started = time.mktime(time.strptime(run_dir.name[:15], "%Y%m%d-%H%M%S"))
    minutes = ((run_dir / "metrics.json").stat().st_mtime - started) / 60
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"models": {}}
    config = (run_dir / "config.toml").read_text()
    results["models"][name] = {**model_result(name, run_dir, minutes), "options": ["--config", "config.toml"],
                               "config": config}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


def model_result(name: str, run_dir: Path, minutes: float) -> dict:
    test = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())
    val = json.loads((run_dir / "metrics.json").read_text())
    return {
        "options": MODELS.get(name, []), "run": str(run_dir), "train_minutes": round(minutes, 1),
        "test": {k: test.get(k) for k in ("n", "accuracy", "balanced_accuracy", "macro_f1",
                                         "macro_auc", "ci", "per_class")},
        "val_balanced_accuracy": val.get("balanced_accuracy"),
        "external": external_result(run_dir),
    }


def collect(outs: list[Path]) -> None:
    """Results from runs that finished (e.g. trained by parallel invocations into other folders):
    the run folder name holds its start time, metrics.json's mtime its end."""
    import datetime as dt

    results = {"models": {}}
    for out in outs:
        for run_dir in sorted(p for p in out.iterdir() if (p / "eval" / "test" / "metrics.json").exists()):
            name = next((m for m in MODELS if f"-{m}-" in run_dir.name), None)
            if name is None:
                continue
            started = dt.datetime.strptime(run_dir.name[:15], "%Y%m%d-%H%M%S").timestamp()
            minutes = ((run_dir / "metrics.json").stat().st_mtime - started) / 60
            results["models"][name] = model_result(name, run_dir, minutes)
    results.update(date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, {os.cpu_count()} cores",
                   literature=LITERATURE)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


def _fmt(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "–"
    ci = (metrics.get("ci") or {}).get(key)
    return f"{value:.3f} ({ci[0]:.3f}–{ci[1]:.3f})" if ci else f"{value:.3f}"


def _size_epochs(r: dict) -> tuple:
    if "config" in r:  # a recorded run: read its resolved config
        import tomllib

        cfg = tomllib.loads(r["config"]).get("train", {})
        return cfg.get("img_size", "?"), cfg.get("epochs", "?")
    opts = dict(zip(r["options"][::2], r["options"][1::2], strict=True))
    return opts.get("--img-size", "?"), opts.get("--epochs", "?")


def markdown(results: dict) -> str:
    rows = ["| model | input | epochs | train time | accuracy | balanced accuracy | macro-F1 | macro AUC "
            "| val bal. acc. | external mel / nv recall |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        size, epochs = _size_epochs(r)
        t = r["test"]
        ext = r.get("external")
        ext_text = f"{ext['mel_recall']:.2f} / {ext['nv_recall']:.2f}" if ext else "–"
        val = r.get("val_balanced_accuracy")
        rows.append(f"| {name} | {size} px | {epochs} | {r['train_minutes']} min | "
                    f"{_fmt(t, 'accuracy')} | {_fmt(t, 'balanced_accuracy')} | {_fmt(t, 'macro_f1')} | "
                    f"{_fmt(t, 'macro_auc')} | {f'{val:.3f}' if val else '–'} | {ext_text} |")
    lit = results.get("literature", LITERATURE)
    rows.append(f"| {lit['model']} | – | – | – | {lit['accuracy']:.3f} | – | {lit['macro_f1']:.2f} | – | – | – |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
