"""Look at a dataset before training: counts, metadata cross-tables, image sizes, problems.

``explore_table`` takes the dataset table (see docs/CONTRACTS.md: ``path``, ``label``, ``group``,
``image_id`` and optional ``age``/``sex``/``site``) and writes one PNG per view plus a
self-contained ``explore.html`` (images embedded as base64, no external references), and
``summary.json`` with the numbers. Every number comes from a small pure function so the tests
can check it against counts computed independently.

Sections that do not apply are left out: a class-folder dataset has no age/sex/site and no
group ids (each image is its own group), so it gets the class, image-size and problem views only.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from skinzoo.errors import DataError, UsageError
from skinzoo.fileio import atomic_path, write_json_atomic, write_text_atomic
from skinzoo.progress import track

# Reading headers is ~35 µs per image here (10,013 HAM JPEGs in 0.34 s), so "all" is the right
# default for every common set; beyond this we read a seeded random sample to stay fast.
DEFAULT_SAMPLE_LIMIT = 20_000
AGE_BINS = (0, 20, 40, 60, 80, np.inf)
AGE_LABELS = ("0-19", "20-39", "40-59", "60-79", "80+")
UNKNOWN = "unknown"
SPLIT_ORDER = ("train", "val", "test")

# file stem -> title; the order is the order of the page. Files not produced by a run are removed
# so a re-run on the same --out never shows a stale plot from another dataset.
PLOTS = {
    "class_counts": "Class distribution",
    "images_per_group": "Images per group (lesion / patient)",
    "age_hist": "Age",
    "sex_counts": "Sex",
    "site_counts": "Body site",
    "dx_by_sex": "Diagnosis by sex",
    "dx_by_age_group": "Diagnosis by age group",
    "site_dx_heatmap": "Body site × diagnosis",
    "age_by_dx": "Age per diagnosis",
    "image_sizes": "Image width, height and aspect ratio",
    "split_counts": "Class counts per split",
}


@dataclass
class ExploreReport:
    """What ``explore_table`` wrote and computed."""

    out_dir: Path
    html: Path
    summary_json: Path
    plots: dict[str, Path]
    summary: dict
    lines: list[str] = field(default_factory=list)


# --- numbers ---------------------------------------------------------------------------------

def class_distribution(labels: pd.Series, classes: list[str] | None = None) -> pd.DataFrame:
    """Images per class (``count``) and their ``share`` of all images, largest first.

    Classes listed in ``classes`` but absent from ``labels`` appear with 0 so an empty class
    is visible instead of silently missing.
    """
    counts = labels.astype(str).value_counts()
    order = list(classes) if classes else []
    order += [c for c in counts.index if c not in order]
    counts = counts.reindex(order, fill_value=0)
    # stable sort: ties keep the class order
    counts = counts.iloc[np.argsort(-counts.to_numpy(), kind="stable")]
    total = int(counts.sum())
    return pd.DataFrame({"count": counts.astype(int),
                         "share": counts / total if total else counts * 0.0})


def imbalance_ratio(counts: pd.Series) -> float:
    """Largest class count / smallest class count (``inf`` when a class is empty)."""
    counts = pd.Series(counts)
    if counts.empty:
        return float("nan")
    smallest = counts.min()
    return float("inf") if smallest == 0 else float(counts.max() / smallest)


def group_summary(table: pd.DataFrame) -> dict:
    """How images spread over groups (lesions/patients).

    ``has_groups`` is False when every group id is just the image id (the contract's fallback
    when a dataset has no group column): then the numbers below say nothing about leakage.
    """
    if "group" not in table or table.empty:
        return {"has_groups": False, "n_groups": len(table), "multi_image_groups": 0,
                "max_images_per_group": 1 if len(table) else 0, "images_per_group": {}}
    per_group = table.groupby("group", sort=False).size()
    has_groups = not (table["group"].astype(str) == table["image_id"].astype(str)).all() \
        if "image_id" in table else True
    hist = per_group.value_counts().sort_index()
    return {
        "has_groups": bool(has_groups),
        "n_groups": int(len(per_group)),
        "multi_image_groups": int((per_group > 1).sum()),
        "images_in_multi_image_groups": int(per_group[per_group > 1].sum()),
        "max_images_per_group": int(per_group.max()),
        # images per group -> number of groups with that many images
        "images_per_group": {int(k): int(v) for k, v in hist.items()},
    }


def metadata_available(table: pd.DataFrame) -> dict[str, bool]:
    """Which metadata columns carry information (present and not all missing/unknown)."""
    has = {"age": "age" in table and pd.to_numeric(table["age"], errors="coerce").notna().any()}
    for col in ("sex", "site"):
        has[col] = col in table and (_known(table[col]) != UNKNOWN).any()
    return {k: bool(v) for k, v in has.items()}


def _known(values: pd.Series) -> pd.Series:
    """Strings with missing/blank values spelled ``unknown`` (the contract's spelling)."""
    text = values.astype("string").str.strip()
    return text.mask(text.isna() | (text == ""), UNKNOWN).astype(str)


def category_counts(values: pd.Series) -> pd.Series:
    """Counts per value, largest first, missing values counted as ``unknown``."""
    counts = _known(values).value_counts()
    return counts.iloc[np.argsort(-counts.to_numpy(), kind="stable")].astype(int)


def age_groups(ages: pd.Series) -> pd.Series:
    """Age bands ``0-19 … 80+`` as strings; missing ages become ``unknown``."""
    ages = pd.to_numeric(ages, errors="coerce")
    bands = pd.cut(ages, bins=list(AGE_BINS), labels=list(AGE_LABELS), right=False)
    return bands.astype(object).where(bands.notna(), UNKNOWN).astype(str)


def age_summary(ages: pd.Series) -> dict:
    ages = pd.to_numeric(ages, errors="coerce")
    known = ages.dropna()
    out = {"n_known": int(len(known)), "n_missing": int(ages.isna().sum())}
    if len(known):
        out.update(mean=float(known.mean()), median=float(known.median()),
                   min=float(known.min()), max=float(known.max()))
    return out


def label_crosstab(labels: pd.Series, values: pd.Series, classes: list[str],
                   columns: list[str] | None = None) -> pd.DataFrame:
    """Images per (class, value): rows in class order, columns in ``columns`` order (default:
    most frequent value first, ``unknown`` last)."""
    table = pd.crosstab(labels.astype(str).to_numpy(), values.astype(str).to_numpy())
    if columns is None:
        totals = table.sum(axis=0)
        columns = list(totals.iloc[np.argsort(-totals.to_numpy(), kind="stable")].index)
        if UNKNOWN in columns:
            columns = [c for c in columns if c != UNKNOWN] + [UNKNOWN]
    rows = list(classes) + [c for c in table.index if c not in classes]
    table = table.reindex(index=rows, columns=columns, fill_value=0).astype(int)
    table.index.name, table.columns.name = None, None
    return table


def choose_sample(n_images: int, sample: int | None) -> int:
    """How many image headers to read: ``sample`` (0 or None = default), capped at the set."""
    if sample is not None and sample < 0:
        raise UsageError(f"--sample {sample} is negative", "pass a positive number, or 0 for all")
    if not sample:
        return min(n_images, DEFAULT_SAMPLE_LIMIT)
    return min(n_images, sample)


def read_image_headers(paths, sample: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Width, height, aspect ratio (w/h), file format and colour mode of (a sample of) images.

    Only the header is read (Pillow opens lazily), so this takes milliseconds per thousand
    images. A file Pillow cannot identify gets ``error`` set instead of a size.
    """
    from PIL import Image, UnidentifiedImageError

    paths = [str(p) for p in paths]
    n = choose_sample(len(paths), sample)
    if n < len(paths):
        rng = np.random.default_rng(seed)
        paths = [paths[i] for i in sorted(rng.choice(len(paths), size=n, replace=False))]
    rows = []
    for path in track(paths, "reading image headers"):
        try:
            with Image.open(path) as im:
                width, height = im.size
                rows.append((path, width, height, im.format or UNKNOWN, im.mode, None))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            rows.append((path, np.nan, np.nan, None, None, f"{type(err).__name__}: {err}"))
    headers = pd.DataFrame(rows, columns=["path", "width", "height", "format", "mode", "error"])
    headers["aspect"] = headers["width"] / headers["height"]
    return headers


def image_summary(headers: pd.DataFrame, n_images: int) -> dict:
    """Counts of sizes, formats and modes from :func:`read_image_headers`."""
    ok = headers[headers["error"].isna()]
    sizes = (ok["width"].astype(int).astype(str) + "x" + ok["height"].astype(int).astype(str)) \
        if len(ok) else pd.Series([], dtype=str)
    out = {
        "n_images": int(n_images),
        "n_read": int(len(headers)),
        "sampled": bool(len(headers) < n_images),
        "n_unreadable": int(headers["error"].notna().sum()),
        "unreadable": headers.loc[headers["error"].notna(), ["path", "error"]]
        .head(20).to_dict("records"),
        "sizes": {k: int(v) for k, v in sizes.value_counts().head(20).items()},
        "n_distinct_sizes": int(sizes.nunique()),
        "formats": {k: int(v) for k, v in ok["format"].value_counts().items()},
        "modes": {k: int(v) for k, v in ok["mode"].value_counts().items()},
    }
    for col in ("width", "height", "aspect"):
        if len(ok):
            values = ok[col].astype(float)
            out[col] = {"min": float(values.min()), "median": float(values.median()),
                        "max": float(values.max())}
    return out


def split_class_counts(labels: pd.Series, split: pd.Series, classes: list[str]) -> pd.DataFrame:
    """Images per class (rows, class order) for each split side (columns train/val/test + others)."""
    split = split.reindex(labels.index)
    if split.isna().any():
        missing = int(split.isna().sum())
        raise DataError(f"the split has no side for {missing} image(s) of the dataset",
                        "make a split file for this dataset with `skinzoo data split`")
    seen = list(pd.unique(split.astype(str)))
    others = sorted((s for s in seen if s not in SPLIT_ORDER),  # fold numbers in numeric order
                    key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
    columns = [s for s in SPLIT_ORDER if s in seen] + others
    return label_crosstab(labels, split.astype(str), list(classes), columns=columns)


def problem_field(problem, name: str, default=""):
    """Problems may be dataclasses, namedtuples or dicts; read a field from any of them."""
    if isinstance(problem, dict):
        return problem.get(name, default)
    return getattr(problem, name, default)


def problem_summary(problems) -> list[dict]:
    """Problems grouped by kind (most frequent first): count, actions and up to 3 examples."""
    grouped: dict[str, dict] = {}
    for p in problems or ():
        kind = str(problem_field(p, "kind", "problem") or "problem")
        entry = grouped.setdefault(kind, {"kind": kind, "count": 0, "actions": {}, "examples": []})
        entry["count"] += 1
        action = str(problem_field(p, "action", "") or "")
        if action:
            entry["actions"][action] = entry["actions"].get(action, 0) + 1
        if len(entry["examples"]) < 3:
            entry["examples"].append({"where": str(problem_field(p, "where", "")),
                                      "message": str(problem_field(p, "message", ""))})
    return sorted(grouped.values(), key=lambda e: -e["count"])


def summarise(table: pd.DataFrame, classes: list[str], headers: pd.DataFrame | None = None,
              problems=(), split: pd.Series | None = None) -> dict:
    """Every number the page and the text summary show, as plain JSON-able values."""
    dist = class_distribution(table["label"], classes)
    meta = metadata_available(table)
    summary = {
        "n_images": int(len(table)),
        "n_classes": int(len(dist)),
        "classes": {c: {"count": int(r["count"]), "share": float(r["share"])}
                    for c, r in dist.iterrows()},
        "imbalance_ratio": imbalance_ratio(dist["count"]),
        "groups": group_summary(table),
        "metadata": meta,
        "problems": problem_summary(problems),
    }
    if meta["age"]:
        summary["age"] = age_summary(table["age"])
    for col in ("sex", "site"):
        if meta[col]:
            summary[col] = {k: int(v) for k, v in category_counts(table[col]).items()}
    if headers is not None:
        summary["images"] = image_summary(headers, len(table))
    if split is not None:
        counts = split_class_counts(table["label"], split, list(dist.index))
        summary["split"] = {side: {c: int(v) for c, v in counts[side].items()}
                            for side in counts.columns}
    return summary


# --- text ------------------------------------------------------------------------------------

def _n(value) -> str:
    return f"{int(value):,}"


def _top(counts: dict, k: int = 6) -> str:
    items = list(counts.items())
    text = ", ".join(f"{name} {_n(v)}" for name, v in items[:k])
    return text + (f", … ({len(items) - k} more)" if len(items) > k else "")


def summary_lines(summary: dict, name: str = "dataset") -> list[str]:
    """The short text summary printed by ``skinzoo data explore``."""
    lines = [f"{name}: {_n(summary['n_images'])} images, {summary['n_classes']} classes"]
    ratio = summary["imbalance_ratio"]
    ratio_text = "inf (a class has no images)" if ratio == float("inf") else f"{ratio:.1f}"
    lines.append("classes: " + ", ".join(
        f"{c} {_n(v['count'])} ({v['share']:.1%})" for c, v in summary["classes"].items()))
    lines.append(f"imbalance (largest/smallest class): {ratio_text}")
    groups = summary["groups"]
    if groups["has_groups"]:
        lines.append(f"groups: {_n(groups['n_groups'])}; {_n(groups['multi_image_groups'])} have "
                     f"several images (max {groups['max_images_per_group']})")
    else:
        lines.append("groups: none given (each image is its own group)")
    if "age" in summary:
        age = summary["age"]
        lines.append(f"age: mean {age['mean']:.1f}, median {age['median']:.0f}, range "
                     f"{age['min']:.0f}-{age['max']:.0f}, {_n(age['n_missing'])} missing")
    if "sex" in summary:
        lines.append("sex: " + _top(summary["sex"]))
    if "site" in summary:
        lines.append(f"sites ({len(summary['site'])}): " + _top(summary["site"]))
    if "images" in summary:
        img = summary["images"]
        read = f"sample of {_n(img['n_read'])} of {_n(img['n_images'])}" if img["sampled"] \
            else f"all {_n(img['n_read'])}"
        parts = [f"images ({read}): sizes " + _top(img["sizes"], 3)]
        if "aspect" in img:
            a = img["aspect"]
            parts.append(f"aspect {a['min']:.2f}-{a['max']:.2f} (median {a['median']:.2f})")
        parts.append("formats " + _top(img["formats"], 4))
        parts.append("modes " + _top(img["modes"], 4))
        if img["n_unreadable"]:
            parts.append(f"{_n(img['n_unreadable'])} unreadable")
        lines.append("; ".join(parts))
    if summary["problems"]:
        total = sum(p["count"] for p in summary["problems"])
        lines.append(f"problems ({_n(total)}): " + ", ".join(
            f"{p['kind']} {_n(p['count'])}" + (f" [{', '.join(p['actions'])}]" if p["actions"] else "")
            for p in summary["problems"]))
    elif summary.get("images", {}).get("n_unreadable"):
        lines.append("problems: only the unreadable images above")
    else:
        lines.append("problems: none found")
    if "split" in summary:
        lines.append("split: " + ", ".join(
            f"{side} {_n(sum(c.values()))}" for side, c in summary["split"].items()))
    return lines


# --- plots -----------------------------------------------------------------------------------

def _figure(width: float, height: float):
    # The object API with an explicit Agg canvas: no pyplot global state, no GUI backend, safe
    # to call from any thread and leaves other users of matplotlib in the process untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _tall(n_rows: int, base: float = 1.6, per_row: float = 0.32, cap: float = 30.0) -> float:
    return min(cap, base + per_row * n_rows)


def _bars(ax, names, values, shares=None, horizontal=False):
    positions = np.arange(len(names))
    if horizontal:
        bars = ax.barh(positions, values, color="#4c72b0")
        ax.set_yticks(positions, names)
        ax.invert_yaxis()
        ax.set_xlabel("images")
    else:
        bars = ax.bar(positions, values, color="#4c72b0")
        ax.set_xticks(positions, names, rotation=30 if len(names) > 6 else 0,
                      ha="right" if len(names) > 6 else "center")
        ax.set_ylabel("images")
    labels = [f"{v:,}" + (f"\n{s:.1%}" if shares is not None and not horizontal else "")
              for v, s in zip(values, shares if shares is not None else [None] * len(values),
                              strict=True)]
    if horizontal and shares is not None:
        labels = [f"{v:,} ({s:.1%})" for v, s in zip(values, shares, strict=True)]
    ax.bar_label(bars, labels, fontsize=8, padding=2)
    ax.margins(x=0.15 if horizontal else 0.02, y=0.02 if horizontal else 0.18)
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    ax.set_axisbelow(True)


def plot_class_counts(dist: pd.DataFrame):
    many = len(dist) > 12
    fig = _figure(9, _tall(len(dist)) if many else 4.5)
    ax = fig.subplots()
    _bars(ax, list(dist.index), dist["count"].tolist(), dist["share"].tolist(), horizontal=many)
    ratio = imbalance_ratio(dist["count"])
    ax.set_title(f"Images per class ({int(dist['count'].sum()):,} images; "
                 f"largest/smallest = {ratio:.1f})")
    return fig


def plot_images_per_group(groups: dict):
    hist = groups["images_per_group"]
    names, values = [str(k) for k in sorted(hist) if k < 10], [hist[k] for k in sorted(hist) if k < 10]
    if max(hist) >= 10:  # patient-level groups can hold hundreds of images: one bar for the tail
        names.append("10+")
        values.append(sum(v for k, v in hist.items() if k >= 10))
    fig = _figure(8, 4)
    ax = fig.subplots()
    _bars(ax, names, values)
    ax.set_xlabel("images per group")
    ax.set_ylabel("groups")
    ax.set_title(f"{groups['n_groups']:,} groups, {groups['multi_image_groups']:,} with several images")
    return fig


def plot_age_hist(ages: pd.Series):
    ages = pd.to_numeric(ages, errors="coerce")
    known = ages.dropna()
    fig = _figure(8, 4)
    ax = fig.subplots()
    top = max(5.0, float(known.max()) + 5)
    ax.hist(known, bins=np.arange(0, top + 5, 5), color="#4c72b0", edgecolor="white")
    ax.set_xlabel("age (years, 5-year bins)")
    ax.set_ylabel("images")
    ax.set_title(f"Age: {len(known):,} known, {int(ages.isna().sum()):,} missing")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


def plot_category_counts(counts: pd.Series, title: str):
    fig = _figure(8, _tall(len(counts), base=1.4, per_row=0.35))
    ax = fig.subplots()
    total = counts.sum()
    _bars(ax, list(counts.index), counts.tolist(), (counts / total).tolist(), horizontal=True)
    ax.set_title(title)
    return fig


def plot_grouped_counts(crosstab: pd.DataFrame, title: str, legend_title: str):
    """Bars per class, one colour per column value: absolute counts left, shares per class right
    (the share view shows the pattern in small classes that the counts hide)."""
    fig = _figure(13, 4.8)
    ax_counts, ax_share = fig.subplots(1, 2)
    n_cols = max(1, crosstab.shape[1])
    width = 0.8 / n_cols
    x = np.arange(len(crosstab.index))
    colors = _colors(n_cols)
    shares = crosstab.div(crosstab.sum(axis=1).replace(0, 1), axis=0)
    for i, col in enumerate(crosstab.columns):
        ax_counts.bar(x + (i - (n_cols - 1) / 2) * width, crosstab[col], width,
                      label=str(col), color=colors[i])
    bottom = np.zeros(len(x))
    for i, col in enumerate(crosstab.columns):
        ax_share.bar(x, shares[col], 0.7, bottom=bottom, color=colors[i], label=str(col))
        bottom += shares[col].to_numpy()
    for ax in (ax_counts, ax_share):
        ax.set_xticks(x, list(crosstab.index), rotation=30 if len(x) > 6 else 0,
                      ha="right" if len(x) > 6 else "center")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    ax_counts.set_ylabel("images")
    ax_counts.set_title("images")
    ax_share.set_ylabel("share of the class")
    ax_share.set_ylim(0, 1)
    ax_share.set_title("share within each class")
    ax_share.legend(title=legend_title, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.suptitle(title)
    return fig


def _colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_site_heatmap(crosstab: pd.DataFrame):
    """Sites (rows) × classes (columns). Colour = share of each class's images on that site, so
    rare classes are as readable as the majority class; the numbers are image counts."""
    matrix = crosstab.to_numpy().astype(float)
    share = matrix / np.maximum(matrix.sum(axis=0, keepdims=True), 1)
    fig = _figure(max(6.0, 1.2 + 0.9 * matrix.shape[1]), _tall(matrix.shape[0], 1.8, 0.38))
    ax = fig.subplots()
    image = ax.imshow(share, aspect="auto", cmap="Blues", vmin=0, vmax=max(share.max(), 1e-9))
    ax.set_xticks(np.arange(matrix.shape[1]), list(crosstab.columns),
                  rotation=30 if matrix.shape[1] > 6 else 0)
    ax.set_yticks(np.arange(matrix.shape[0]), list(crosstab.index))
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{int(value):,}", ha="center", va="center", fontsize=7,
                color="white" if share[i, j] > 0.6 * share.max() else "black")
    fig.colorbar(image, ax=ax, label="share of the diagnosis's images")
    ax.set_title("Body site × diagnosis (numbers: images)")
    return fig


def plot_age_by_class(table: pd.DataFrame, classes: list[str]):
    ages = pd.to_numeric(table["age"], errors="coerce")
    data, names = [], []
    for c in classes:
        values = ages[table["label"].astype(str) == c].dropna().to_numpy()
        if len(values):
            data.append(values)
            names.append(f"{c}\n(n={len(values):,})")
    fig = _figure(max(7.0, 1.0 + 1.0 * len(names)), 4.8)
    ax = fig.subplots()
    ax.boxplot(data, showmeans=True, meanprops={"marker": "^", "markerfacecolor": "white"})
    ax.set_xticks(np.arange(1, len(names) + 1), names, fontsize=8)
    ax.set_ylabel("age (years)")
    ax.set_title("Age per diagnosis (box: quartiles, line: median, triangle: mean)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


def plot_image_sizes(headers: pd.DataFrame):
    ok = headers[headers["error"].isna()]
    fig = _figure(13, 4)
    axes = fig.subplots(1, 3)
    for ax, col, label in zip(axes, ("width", "height", "aspect"),
                              ("width (px)", "height (px)", "aspect ratio (width / height)"),
                              strict=True):
        values = ok[col].astype(float).to_numpy()
        if len(values) and values.min() == values.max():
            # one value: a single labelled bar reads better than a histogram with empty bins
            ax.bar([0], [len(values)], color="#4c72b0", width=0.4)
            ax.set_xticks([0], [f"{values[0]:.3g}"])
            ax.set_xlim(-1, 1)
        else:
            ax.hist(values, bins=min(40, max(5, len(np.unique(values)))), color="#4c72b0",
                    edgecolor="white")
        ax.set_xlabel(label)
        ax.set_ylabel("images")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    fig.suptitle(f"Image sizes ({len(ok):,} images read)")
    return fig


def plot_split_counts(counts: pd.DataFrame):
    fig = plot_grouped_counts(counts, "Class counts per split", "split")
    return fig


def save_figure(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


# --- page ------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
img{max-width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
.problems{background:#fff4f4;border:1px solid #f0c0c0;padding:.6em 1em}
.ok{background:#f3fbf3;border:1px solid #c0e0c0;padding:.6em 1em}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto}
"""


def _table_html(frame: pd.DataFrame, index_name: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [index_name, *frame.columns])
    rows = []
    for idx, row in frame.iterrows():
        cells = "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row)
        rows.append(f"<tr><td>{html.escape(str(idx))}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _cell(value) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    return str(value)


def _img_html(path: Path, title: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
            "</figure>")


def _problems_html(summary: dict) -> str:
    problems = summary["problems"]
    unreadable = summary.get("images", {}).get("n_unreadable", 0)
    if not problems and not unreadable:
        return '<div class="ok">No problems found by the validation.</div>'
    parts = ['<div class="problems"><ul>']
    for p in problems:
        actions = ", ".join(f"{a} {n:,}" for a, n in p["actions"].items())
        examples = "".join(f"<li><code>{html.escape(e['where'])}</code> {html.escape(e['message'])}"
                           "</li>" for e in p["examples"])
        parts.append(f"<li><b>{html.escape(p['kind'])}</b>: {p['count']:,}"
                     f"{' (' + html.escape(actions) + ')' if actions else ''}<ul>{examples}</ul></li>")
    if unreadable:
        examples = "".join(f"<li><code>{html.escape(e['path'])}</code> {html.escape(e['error'])}</li>"
                           for e in summary["images"]["unreadable"][:3])
        parts.append(f"<li><b>unreadable image header</b>: {unreadable:,} of the images read"
                     f"<ul>{examples}</ul></li>")
    parts.append("</ul></div>")
    return "".join(parts)


def render_html(name: str, summary: dict, plots: dict[str, Path], tables: dict[str, pd.DataFrame],
                lines: list[str]) -> str:
    """One self-contained page: every image is a data: URI, the CSS is inline, no scripts."""
    def section(title, *body):
        return f"<h2>{html.escape(title)}</h2>" + "".join(body)

    def plot(key):
        return _img_html(plots[key], PLOTS[key]) if key in plots else ""

    body = [f"<h1>Dataset: {html.escape(name)}</h1>",
            "<pre>" + html.escape("\n".join(lines)) + "</pre>",
            section("Data quality", _problems_html(summary)),
            section("Classes", plot("class_counts"), _table_html(tables["classes"], "class"))]
    groups = summary["groups"]
    if groups["has_groups"]:
        body.append(section(PLOTS["images_per_group"], plot("images_per_group"),
                            f"<p>{groups['n_groups']:,} groups, {groups['multi_image_groups']:,} "
                            f"with several images ({groups['images_in_multi_image_groups']:,} "
                            "images). A split must keep every group on one side.</p>"))
    else:
        body.append(section("Groups", "<p>No group ids (lesion/patient): each image is its own "
                            "group, so a split cannot guard against near-duplicate leakage.</p>"))
    meta_keys = ["age_hist", "age_by_dx", "sex_counts", "dx_by_sex", "dx_by_age_group",
                 "site_counts", "site_dx_heatmap"]
    if any(k in plots for k in meta_keys):
        meta = [plot(k) for k in meta_keys]
        for key, title in (("dx_by_sex", "diagnosis × sex"), ("dx_by_age_group", "diagnosis × age group"),
                           ("site_dx", "body site × diagnosis")):
            if key in tables:
                meta.append(f"<h3>{html.escape(title)}</h3>" + _table_html(tables[key]))
        body.append(section("Metadata", *meta))
    else:
        body.append(section("Metadata", "<p>No age, sex or body-site metadata.</p>"))
    if "image_sizes" in plots:
        img = summary["images"]
        how = (f"a random sample of {img['n_read']:,} of {img['n_images']:,}" if img["sampled"]
               else f"all {img['n_read']:,}")
        body.append(section("Images", f"<p>Headers of {how} images.</p>", plot("image_sizes"),
                            _table_html(tables["formats"], "format / mode")))
    if "split_counts" in plots:
        body.append(section("Split", plot("split_counts"), _table_html(tables["split"], "class")))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>skinzoo explore: {html.escape(name)}</title><style>{_CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


# --- the whole thing -------------------------------------------------------------------------

def explore_table(table: pd.DataFrame, classes: list[str], out_dir, name: str = "dataset",
                  problems=(), split: pd.Series | None = None, sample: int | None = None,
                  seed: int = 0, read_images: bool = True) -> ExploreReport:
    """Write the plots, ``explore.html`` and ``summary.json`` for ``table`` into ``out_dir``."""
    if table.empty:
        raise DataError(f"{name} has no usable images to explore",
                        "run `skinzoo data check` on it to see why")
    for col in ("path", "label"):
        if col not in table:
            raise DataError(f"the dataset table has no '{col}' column")
    classes = list(classes) if classes is not None else sorted(table["label"].astype(str).unique())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    headers = read_image_headers(table["path"], sample=sample, seed=seed) if read_images else None
    summary = summarise(table, classes, headers, problems, split)
    dist = class_distribution(table["label"], classes)
    figures, tables = _figures_and_tables(table, classes, dist, summary, headers, split)

    plots = {key: save_figure(fig, out_dir / f"{key}.png") for key, fig in figures.items()}
    for key in PLOTS:  # drop plots of an earlier run that do not apply to this dataset
        stale = out_dir / f"{key}.png"
        if key not in plots and stale.exists():
            stale.unlink()
    lines = summary_lines(summary, name)
    page = write_text_atomic(out_dir / "explore.html",
                             render_html(name, summary, plots, tables, lines))
    summary_json = write_json_atomic(out_dir / "summary.json", {"name": name, **summary})
    return ExploreReport(out_dir=out_dir, html=page, summary_json=summary_json, plots=plots,
                         summary=summary, lines=lines)


def _figures_and_tables(table, classes, dist, summary, headers, split):
    figures, tables = {}, {}
    tables["classes"] = dist.assign(share=dist["share"].map(lambda s: f"{s:.1%}"))
    figures["class_counts"] = plot_class_counts(dist)
    if summary["groups"]["has_groups"]:
        figures["images_per_group"] = plot_images_per_group(summary["groups"])
    meta = summary["metadata"]
    labels = table["label"].astype(str)
    if meta["age"]:
        figures["age_hist"] = plot_age_hist(table["age"])
        figures["age_by_dx"] = plot_age_by_class(table, list(dist.index))
        bands = age_groups(table["age"])
        columns = list(AGE_LABELS) + ([UNKNOWN] if (bands == UNKNOWN).any() else [])
        tables["dx_by_age_group"] = label_crosstab(labels, bands, classes, columns=columns)
        figures["dx_by_age_group"] = plot_grouped_counts(
            tables["dx_by_age_group"], "Diagnosis by age group", "age")
    if meta["sex"]:
        figures["sex_counts"] = plot_category_counts(category_counts(table["sex"]), "Sex")
        tables["dx_by_sex"] = label_crosstab(labels, _known(table["sex"]), classes)
        figures["dx_by_sex"] = plot_grouped_counts(tables["dx_by_sex"], "Diagnosis by sex", "sex")
    if meta["site"]:
        site_counts = category_counts(table["site"])
        figures["site_counts"] = plot_category_counts(site_counts, "Body site")
        tables["site_dx"] = label_crosstab(labels, _known(table["site"]), classes).T \
            .reindex(list(site_counts.index))
        figures["site_dx_heatmap"] = plot_site_heatmap(tables["site_dx"])
    if headers is not None and summary["images"]["n_read"] > summary["images"]["n_unreadable"]:
        figures["image_sizes"] = plot_image_sizes(headers)
        ok = headers[headers["error"].isna()]
        tables["formats"] = (ok["format"].astype(str) + " / " + ok["mode"].astype(str)) \
            .value_counts().rename("images").to_frame()
    if split is not None:
        tables["split"] = split_class_counts(table["label"], split, list(dist.index))
        figures["split_counts"] = plot_split_counts(tables["split"])
    return figures, tables


def default_out_dir(data_path, cwd=None) -> Path:
    """``./explore-<dataset name>`` in the working directory: never inside the user's data.

    The name is the dataset folder's name (or a CSV file's stem), reduced to safe characters.
    """
    path = Path(data_path).expanduser().resolve()
    stem = path.stem if path.is_file() else path.name
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "dataset"
    return Path(cwd or Path.cwd()) / f"explore-{safe}"

