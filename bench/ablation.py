"""Ablation of the CPU recipe on real HAM10000, validation split only (+ the external check).

    python -m bench.ablation [--data ../shared/data/ham10000] [--out runs-ablation] [--only NAME ...]
    python -m bench.ablation --collect runs-ablation      # rebuild the table from finished runs

Every variant trains compact_resnet at 64 px for 15 epochs (half the recipe, so the table is
affordable on 2 cores) on the lesion-grouped seed-0 split of bench/real_data.py, and is read on
the **validation** split (balanced accuracy, macro-F1, macro AUC, log loss at the chosen epoch) and
on the non-HAM external images (mel and nv recall). The test split is never touched here: the
README's ablation table comes from this script, its test-split table from bench/real_data.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ham10000"
EXTERNAL = REPO.parent / "shared" / "data" / "isic-external" / "labels.csv"
BASE = ["--model", "compact_resnet", "--img-size", "64", "--epochs", "15", "--seed", "0"]
RECIPE = ["--augment", "dermoscopy", "--color-constancy", "shades-of-gray", "--ema", "0.999"]
# name -> (what it shows, options on top of BASE)
VARIANTS = {
    "round1": ("round-1 recipe: light augmentation, full class weights, raw weights",
               ["--augment", "light"]),
    "new, weights^0.5": ("dermoscopy augmentation + shades of gray + EMA, class weights^0.5",
                         [*RECIPE, "--class-weight-power", "0.5"]),
    "new, weights^1": ("the same with full class weights", [*RECIPE, "--class-weight-power", "1.0"]),
    "new, logit-adjusted": ("the same with the logit-adjusted loss instead of weights",
                            [*RECIPE, "--balance", "none", "--loss", "logit-adjusted"]),
    "new, logit-adjusted, 128 px": ("the same on compact_resnet_128 (stride-2 stem, ResNet-D, "
                                    "stochastic depth 0.1) at 128 px",
                                    [*RECIPE, "--balance", "none", "--loss", "logit-adjusted",
                                     "--model", "compact_resnet_128", "--img-size", "128"]),
    "new, logit-adjusted, hair removal": ("the same with hair removal (thin elongated components only)",
                                          [*RECIPE, "--balance", "none", "--loss", "logit-adjusted",
                                           "--hair-removal"]),
    "new, logit-adjusted, mixup 0.2": ("the same with mixup 0.2",
                                       [*RECIPE, "--balance", "none", "--loss", "logit-adjusted",
                                        "--mixup", "0.2"]),
    "new, weights^1, no colour constancy": ("without shades of gray",
                                            ["--augment", "dermoscopy", "--ema", "0.999",
                                             "--class-weight-power", "1.0"]),
}


def skinzoo(*args) -> list[str]:
    return [sys.executable, "-m", "skinzoo_cli.main", *map(str, args)]


def train(name: str, data: Path, out: Path, split: Path) -> Path:
    folder = out / name.replace(" ", "_").replace(",", "").replace("^", "")
    folder.mkdir(parents=True, exist_ok=True)
    cmd = skinzoo("train", "--data", data, "--out", folder, "--no-tensorboard", *BASE, *VARIANTS[name][1])
    if split.exists():
        cmd += ["--split-file", split]
    with open(out / "ablation.log", "a") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode:
        raise SystemExit(f"{name}: training failed (exit {done.returncode}); see {out / 'ablation.log'}")
    run = next(p for p in folder.iterdir() if (p / "metrics.json").exists())
    if not split.exists():
        split.write_bytes((run / "split.csv").read_bytes())
    if EXTERNAL.exists():
        subprocess.run(skinzoo("evaluate", run, "--data", EXTERNAL, "--bootstrap", 100),
                       capture_output=True)
    return run


def row(run: Path) -> dict:
    val = json.loads((run / "metrics.json").read_text())
    found = sorted(run.glob("eval/all-isic-external*/metrics.json"))
    ext = json.loads(found[0].read_text())["per_class"] if found else {}
    return {"val_balanced_accuracy": val.get("balanced_accuracy"), "val_macro_f1": val.get("macro_f1"),
            "val_macro_auc": val.get("macro_auc"), "val_accuracy": val.get("accuracy"),
            "external_mel_recall": ext.get("mel", {}).get("recall"),
            "external_nv_recall": ext.get("nv", {}).get("recall")}


def table(rows: dict) -> str:
    lines = ["| variant (15 epochs, 64 px) | val balanced acc. | val macro-F1 | val macro AUC | val accuracy "
             "| external mel / nv recall |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        ext = (f"{r['external_mel_recall']:.2f} / {r['external_nv_recall']:.2f}"
               if r["external_mel_recall"] is not None else "–")
        lines.append(f"| {name}: {VARIANTS.get(name, ('', []))[0]} | {r['val_balanced_accuracy']:.3f} | "
                     f"{r['val_macro_f1']:.3f} | {r['val_macro_auc']:.3f} | {r['val_accuracy']:.3f} | {ext} |")
    return "\n".join(lines)


def collect(out: Path) -> dict:
    rows = {}
    for name in VARIANTS:
        folder = out / name.replace(" ", "_").replace(",", "").replace("^", "")
        runs = sorted(p for p in folder.glob("*") if (p / "metrics.json").exists()) if folder.exists() else []
        if runs:
            rows[name] = row(runs[-1])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default="runs-ablation")
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS))
    parser.add_argument("--collect", metavar="OUT", help="only read finished runs under OUT")
    args = parser.parse_args(argv)
    if args.collect:
        rows = collect(Path(args.collect))
    else:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name in args.only or VARIANTS:
            train(name, Path(args.data), out, out / "split.csv")
        rows = collect(out)
    results = REPO / "bench" / "results" / "ablation.json"
    results.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
