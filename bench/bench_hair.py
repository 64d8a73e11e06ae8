"""How much of each image the hair mask takes, before and after the thin-elongated filter.

    python -m bench.bench_hair [--data ../shared/data/ham10000] [--n 70]   (also in make bench)

Per HAM10000 class: the share of pixels the black-hat threshold alone marks (the old mask, which
also caught dots, globules and pigment network) and the share the hair-shaped filter keeps. A mel
or nv image without visible hair should keep almost nothing; `skinzoo data preview --hair-removal`
shows the images themselves.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from skinzoo.data import hair

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000"


def masks(rgb):
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    k = hair.default_kernel_size(*rgb.shape[:2])
    blackhat = cv2.GaussianBlur(cv2.morphologyEx(
        grey, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_CROSS, (k, k))), (3, 3), 0)
    raw = (blackhat > 10).astype(np.uint8)
    return raw.mean(), hair.thin_elongated(raw, min(rgb.shape[:2])).mean()


def shares(data, per_class: int) -> pd.DataFrame:
    meta = pd.read_csv(Path(data) / "HAM10000_metadata.csv")
    rows = []
    for dx, group in meta.groupby("dx"):
        for image_id in group["image_id"].head(per_class):
            bgr = cv2.imread(str(Path(data) / "images" / f"{image_id}.jpg"))
            if bgr is None:
                continue
            old, new = masks(bgr[..., ::-1])
            rows.append({"dx": dx, "old": old, "new": new})
    return pd.DataFrame(rows).groupby("dx")[["old", "new"]].mean()


def run(quick: bool = False, data: str | None = None) -> dict:
    data = Path(data or DEFAULT_DATA)
    if not (data / "HAM10000_metadata.csv").exists():
        raise SystemExit(f"HAM10000 not found at {data}; pass --data")
    table = shares(data, 15 if quick else 70)
    figures = {f"{dx}_mask_percent_{kind}": round(100 * float(table.loc[dx, col]), 2)
               for dx in table.index for kind, col in (("blackhat", "old"), ("hair_shaped", "new"))}
    return {
        "name": "hair",
        "baseline": "black-hat threshold alone (round-1 mask)",
        "figures": figures,
        "ratios": {f"{dx}_kept": round(float(table.loc[dx, "new"] / table.loc[dx, "old"]), 3)
                   for dx in table.index},
        "notes": "share of image pixels in the hair mask before dilation, HAM10000 200x150 copy",
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--n", type=int, default=70, help="images per class")
    args = parser.parse_args(argv)
    table = shares(args.data, args.n)
    table["kept"] = table["new"] / table["old"]
    print("share of image pixels in the hair mask (before dilation), mean per class")
    print((table * 100).round(2).rename(columns={"old": "black-hat %", "new": "hair-shaped %",
                                                "kept": "kept % of old"}).to_string())


if __name__ == "__main__":
    main()
