"""Time to accuracy on real HAM10000: minutes of training until validation balanced accuracy
first reaches 0.60, the round-1 CPU recipe vs today's (examples/ham10000_cpu/config.toml).

    python -m bench.run --only time_to_accuracy [--quick]

Both recipes train one after the other in this run, on the same lesion-grouped seed-0 split
(70/15/15, written by the first run and reused), and are read from their history.csv (``seconds``
per epoch incl. validation). Only the validation split is looked at. Full: each recipe at its own
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


def _train(options, data, out: Path, split: Path, epochs: int | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "skinzoo_cli.main", "train", *options, "--data", str(data),
           "--out", str(out), "--no-tensorboard", "--seed", "0"]
    if split.exists():
        cmd += ["--split-file", str(split)]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode != 0:
        raise RuntimeError(f"training failed (exit {done.returncode}): {done.stderr[-800:]}")
    run = next(p for p in out.iterdir() if (p / "history.csv").exists())
    if not split.exists():
        split.write_bytes((run / "split.csv").read_bytes())
    return run


def curve(history: pd.DataFrame) -> dict:
    minutes = history["seconds"].cumsum() / 60
    reached = history.index[history["val_balanced_accuracy"] >= THRESHOLD]
    return {
        "epochs": len(history),
        "minutes_per_epoch": round(float(history["seconds"].median()) / 60, 2),
        "best_val_balanced_accuracy": round(float(history["val_balanced_accuracy"].max()), 4),
        "minutes_to_0_60": round(float(minutes[reached[0]]), 1) if len(reached) else None,
    }


def run(quick: bool = False, data: str | None = None) -> dict:
    data = Path(data or DEFAULT_DATA)
    if not (data / "HAM10000_metadata.csv").exists():
        raise SystemExit(f"HAM10000 not found at {data}; pass --data")
    with tempfile.TemporaryDirectory(prefix="skinzoo-tta-") as tmp:
        tmp = Path(tmp)
        split = tmp / "split.csv"
        epochs = 3 if quick else None
        old = curve(pd.read_csv(_train(OLD_RECIPE, data, tmp / "old", split, epochs) / "history.csv"))
        new = curve(pd.read_csv(_train(NEW_RECIPE, data, tmp / "new", split, epochs) / "history.csv"))
    figures = {f"{side}_{k}": v for side, c in (("old", old), ("new", new)) for k, v in c.items()}
    ratios = {}
    if old["minutes_to_0_60"] and new["minutes_to_0_60"]:
        ratios["speedup_to_0_60"] = round(old["minutes_to_0_60"] / new["minutes_to_0_60"], 2)
    return {
        "name": "time_to_accuracy",
        "baseline": "round-1 recipe (compact_resnet 64 px, light augmentation, full class weights)",
        "figures": figures,
        "ratios": ratios,
        "notes": ("validation split only; a recipe that never reaches 0.60 shows None"
                  + ("; quick: 3 epochs each" if quick else "")),
    }
