"""Time to accuracy on real HAM10000: minutes of training until validation balanced accuracy
first reaches 0.60, the round-1 CPU recipe vs today's (examples/ham10000_cpu/config.toml).

    python -m bench.run --only time_to_accuracy [--quick]

Both recipes train at the same time in this run (side by side: a shared machine's load slows
both alike; each gets about half the CPU, so minutes are about twice an idle machine's, while
epochs to 0.60 and the ratio are not affected), on the same lesion-grouped seed-0 split (70/15/15),
and are read from their history.csv (``seconds`` per epoch incl. validation, ``cpu_percent``). Only the validation split is looked at. Full: each recipe at its own
epoch count (about 30 min each on 2 idle cores). ``--quick``: 3 epochs each, which shows the
per-epoch cost and the first epochs' curve, not the 0.60 crossing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ham10000"
NEW_RECIPE = ["--config", str(REPO / "examples" / "ham10000_cpu" / "config.toml")]
# Round 1's examples/ham10000_cpu/config.toml, kept here as the baseline.
OLD_RECIPE = ["--model", "compact_resnet", "--img-size", "64", "--batch-size", "32", "--epochs", "30",
              "--lr", "0.002", "--schedule", "warmup-cosine", "--balance", "class-weight",
              "--augment", "light", "--early-stopping", "8"]
THRESHOLD = 0.60


def _command(options, data, out: Path, split: Path, epochs: int | None) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "skinzoo_cli.main", "train", *options, "--data", str(data),
           "--out", str(out), "--no-tensorboard", "--seed", "0", "--split-file", str(split)]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    return cmd


def _train_side_by_side(commands: dict[str, list[str]], tmp: Path) -> dict[str, Path]:
    """Both recipes at the same time, so that whatever else runs on the machine slows both alike
    (one after the other, a shared machine's load changes between them). Each gets about half the
    CPU: absolute minutes are then about twice an idle machine's; epochs and the ratio are not."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = {name: subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
             for name, cmd in commands.items()}
    runs = {}
    for name, proc in procs.items():
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{name} recipe failed (exit {proc.returncode}): {err[-800:]}")
        out = tmp / name
        runs[name] = next(p for p in out.iterdir() if (p / "history.csv").exists())
    return runs


def curve(history: pd.DataFrame) -> dict:
    minutes = history["seconds"].cumsum() / 60
    reached = history.index[history["val_balanced_accuracy"] >= THRESHOLD]
    return {
        "epochs": len(history),
        "minutes_per_epoch": round(float(history["seconds"].median()) / 60, 2),
        "best_val_balanced_accuracy": round(float(history["val_balanced_accuracy"].max()), 4),
        "minutes_to_0_60": round(float(minutes[reached[0]]), 1) if len(reached) else None,
        "epochs_to_0_60": int(reached[0]) + 1 if len(reached) else None,
        "minutes_all_epochs": round(float(minutes.iloc[-1]), 1),
        # CPU seconds of all threads per wall second over the epochs (200 = both cores busy)
        "cpu_percent_median": (round(float(history["cpu_percent"].median()), 0)
                               if "cpu_percent" in history else None),
    }


def run(quick: bool = False, data: str | None = None) -> dict:
    data = Path(data or DEFAULT_DATA)
    if not (data / "HAM10000_metadata.csv").exists():
        raise SystemExit(f"HAM10000 not found at {data}; pass --data")
    from skinzoo.data.sources import load_dataset
    from skinzoo.data.splits import make_split, write_split_file

    with tempfile.TemporaryDirectory(prefix="skinzoo-tta-") as tmp:
        tmp = Path(tmp)
        split = tmp / "split.csv"  # the lesion-grouped seed-0 split, shared by both recipes
        table = load_dataset(str(data)).table
        write_split_file(table, make_split(table, val=0.15, test=0.15, seed=0), split)
        epochs = 3 if quick else None
        runs = _train_side_by_side({name: _command(options, data, tmp / name, split, epochs)
                                    for name, options in (("old", OLD_RECIPE), ("new", NEW_RECIPE))}, tmp)
        old, new = (curve(pd.read_csv(runs[name] / "history.csv")) for name in ("old", "new"))
    figures = {f"{side}_{k}": v for side, c in (("old", old), ("new", new)) for k, v in c.items()}
    ratios = {}
    if old["minutes_to_0_60"] and new["minutes_to_0_60"]:
        ratios["speedup_to_0_60"] = round(old["minutes_to_0_60"] / new["minutes_to_0_60"], 2)
        ratios["epochs_ratio_to_0_60"] = round(old["epochs_to_0_60"] / new["epochs_to_0_60"], 2)
    return {
        "name": "time_to_accuracy",
        "baseline": "round-1 recipe (compact_resnet 64 px, light augmentation, full class weights)",
        "figures": figures,
        "ratios": ratios,
        "notes": ("validation split only; both recipes trained at the same time (each ~half the CPU); "
                  "a recipe that never reaches 0.60 shows None"
                  + ("; quick: 3 epochs each" if quick else "")),
    }
