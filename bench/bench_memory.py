"""Peak memory of training on HAM10000 at 128 px: skinzoo's disk cache vs images in one array.

- skinzoo: ``skinzoo train --data <folder> --model custom_cnn --img-size 128 --epochs 1
  --cache disk``, the real CLI in a subprocess. Decoded images stream through a tf.data file cache
  with a bounded shuffle buffer, so memory does not grow with the number of images.
- baseline, the notebooks' way: read every image with PIL, resize it to 128x128, stack them into
  one float32 NumPy array and ``model.fit`` on it (same model, split, batch size and epochs).

Each side runs in its own process; its peak RSS is the kernel's ``ru_maxrss`` for exactly that
child (``os.wait4``), so neither measurement sees the other or this process. Both processes pay
the same TensorFlow import (~0.8 GB), which is included. Quick mode uses a stratified subset of
2,000 images: the array grows linearly with the number of images, the disk-cached run does not,
so the ratio is only representative in full mode (all 10,013 images).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.rounds import alternating_calls, ratio_summary

IMG_SIZE = 128
MODEL = "simple_cnn"  # custom_cnn: `skinzoo train` passes it dense=[256, 128] (see report)
BATCH = 32
SEED = 0


# --- the two measured processes ---------------------------------------------------------------

def run_measured(label: str, cmd: list[str], log_path: Path, cwd: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of ``cmd``; a non-zero exit raises with the log's tail."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"}
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        lines = log_path.read_text(errors="replace").strip().splitlines() or ["(no output)"]
        raise RuntimeError(f"{label} exited with {proc.returncode}: {lines[-1]}\n"
                           f"$ {' '.join(cmd)}\n" + "\n".join(lines[-15:]))
    return usage.ru_maxrss / 1024, seconds  # Linux reports kilobytes


def disk_cache_command(data: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "skinzoo_cli.main", "--seed", str(SEED), "train", "--data", data,
            "--model", MODEL, "--img-size", str(IMG_SIZE), "--epochs", "1", "--batch-size", str(BATCH),
            "--cache", "disk", "--out", str(out), "--no-tensorboard"]


def array_command(data: str) -> list[str]:
    return [sys.executable, "-m", "bench.bench_memory", "--array-child", "--data", data]


def array_child(data: str) -> None:
    """The notebook way, same split as ``skinzoo train``: every image in one float32 array."""
    import numpy as np
    from PIL import Image

    from skinzoo.data.sources import load_dataset
    from skinzoo.data.splits import make_split
    from skinzoo.runtime import set_seed, tf

    tf()
    import keras

    from skinzoo.data.pipeline import encode_targets
    from skinzoo.models import build_model

    set_seed(SEED)
    dataset = load_dataset(data)
    table = dataset.table.reset_index(drop=True)
    split = make_split(table, val=0.15, test=0.15, seed=SEED)
    classes = list(dataset.classes)

    def arrays(name):
        rows = table[split == name]
        images = [np.asarray(Image.open(p).convert("RGB").resize((IMG_SIZE, IMG_SIZE)))
                  for p in rows["path"]]
        x = np.array(images, dtype=np.float32)  # what `np.array(images) / 255.` notebooks keep
        return x, encode_targets(rows["label"].map(classes.index).to_numpy(), len(classes))

    x_train, y_train = arrays("train")
    x_val, y_val = arrays("val")
    model = build_model(MODEL, len(classes), input_shape=(IMG_SIZE, IMG_SIZE, 3))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, validation_data=(x_val, y_val), batch_size=BATCH, epochs=1,
              verbose=2)
    megabytes = (x_train.nbytes + x_val.nbytes) / 2**20
    print(f"arrays: train {x_train.shape} val {x_val.shape}, {megabytes:.0f} MB")


# --- data -------------------------------------------------------------------------------------

def subset_folder(data: str, n: int, dest: Path) -> int:
    """A HAM10000-layout folder holding copies of a stratified sample of ``n`` images (quick
    mode; ~20 MB). Copies, not symlinks: skinzoo refuses images that resolve outside the dataset
    folder unless told (--allow-outside-root), and a benchmark should read a folder as users have."""
    import pandas as pd

    from skinzoo.data.sources import load_dataset

    table = load_dataset(data).table
    sample = table.groupby("label", group_keys=False).sample(frac=min(1.0, n / len(table)),
                                                            random_state=SEED)
    images = dest / "images"
    images.mkdir(parents=True)
    for path in sample["path"]:
        shutil.copyfile(path, images / Path(path).name)
    source_csv = pd.read_csv(Path(data) / "HAM10000_metadata.csv")
    source_csv[source_csv["image_id"].isin(sample["image_id"])].to_csv(
        dest / "HAM10000_metadata.csv", index=False)
    return len(sample)


def run(quick: bool = False, data: str | None = None) -> dict:
    from skinzoo.errors import UsageError

    if not data or not (Path(data) / "HAM10000_metadata.csv").is_file():
        raise UsageError(f"the memory benchmark needs the HAM10000 folder (got {data!r})",
                         "pass --data PATH (a folder with HAM10000_metadata.csv and its images)")
    repo = Path(__file__).resolve().parent.parent
    rounds = 3 if quick else 2  # a full round trains twice over all 10,013 images (~10 min)
    with tempfile.TemporaryDirectory(prefix="skinzoo-bench-memory-") as tmp:
        tmp = Path(tmp)
        if quick:
            n_images = subset_folder(data, 2000, tmp / "data")
            data = str(tmp / "data")
        else:
            from skinzoo.data.sources import load_dataset

            n_images = len(load_dataset(data).table)
        # Peak RSS moves little with load, but it does move (allocator timing, tf.data buffers
        # filled ahead): each side runs once per round, the order alternating, and the ratio is
        # the median of the per-round ratios with its range (bench/rounds.py).
        sides = {
            "disk": lambda r: run_measured("skinzoo train --cache disk",
                                           disk_cache_command(data, tmp / f"runs{r}"),
                                           tmp / "disk.log", repo),
            "array": lambda r: run_measured("array baseline", array_command(data),
                                            tmp / "array.log", repo),
        }
        measured = alternating_calls(sides, rounds)
        array_log = (tmp / "array.log").read_text(errors="replace")
    disk_rss = statistics.median(m[0] for m in measured["disk"])
    array_rss = statistics.median(m[0] for m in measured["array"])
    disk_s = statistics.median(m[1] for m in measured["disk"])
    array_s = statistics.median(m[1] for m in measured["array"])
    ratio, spread = ratio_summary([m[0] for m in measured["array"]], [m[0] for m in measured["disk"]])
    array_mb = n_images * 0.85 * IMG_SIZE * IMG_SIZE * 3 * 4 / 2**20  # train + val share, float32
    result = {
        "name": "memory",
        "baseline": "all images in one float32 array + model.fit (notebooks)",
        "figures": {
            "images": n_images, "image_size": IMG_SIZE, "model": MODEL, "epochs": 1,
            "rounds": rounds,
            "peak_rss_mb_disk_cache": round(disk_rss), "peak_rss_mb_array": round(array_rss),
            "peak_rss_mb_disk_cache_per_round": [round(m[0]) for m in measured["disk"]],
            "peak_rss_mb_array_per_round": [round(m[0]) for m in measured["array"]],
            "array_size_mb_expected": round(array_mb),
            "seconds_disk_cache": round(disk_s, 1), "seconds_array": round(array_s, 1),
        },
        "ratios": {"peak_rss_array_vs_disk_cache": ratio},
        "ratio_ranges": {"peak_rss_array_vs_disk_cache": spread},
        "notes": f"peak RSS per process (os.wait4 ru_maxrss), TensorFlow import included; "
                 f"median of {rounds} alternating rounds (figures: medians); "
                 f"{MODEL} at {IMG_SIZE} px, 1 epoch, batch {BATCH}, split 70/15/15; "
                 + ("quick: 2,000-image subset, ratio grows with the number of images"
                    if quick else "all images") + "; " + _last_line(array_log, "arrays:"),
    }
    if not quick:
        result["targets"] = {"peak_rss_array_vs_disk_cache": ">= 2"}
    return result


def _last_line(text: str, prefix: str) -> str:
    found = [line for line in text.splitlines() if line.startswith(prefix)]
    return found[-1] if found else ""


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", default=None, help="HAM10000 folder")
    parser.add_argument("--array-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.array_child:
        array_child(args.data)
    else:
        print(json.dumps(run(args.quick, args.data), indent=2))
