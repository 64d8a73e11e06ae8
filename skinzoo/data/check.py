"""Validate a whole dataset before training: every image, the classes, the groups.

:func:`check_dataset` inspects every image once (bytes hashed, header parsed, pixels decoded,
JPEGs at 1/8 scale; see :func:`skinzoo.data.images.inspect_image`) in a thread pool, and returns a :class:`CheckReport`: one :class:`~skinzoo.data.sources.Problem` per
thing found wrong plus a summary (class counts, groups per class, image sizes, byte-identical
duplicates, missing metadata). Only problems with ``action == "error"`` block training:

* fewer than two classes with usable images, or a class left with none;
* a class with fewer groups than the split has sides (it cannot appear in train, val and test).

Unusable images (missing, empty, truncated, not an image, too large/small...) are ``"skipped"``:
:func:`validate_for_training` drops them and trains on the rest.

Byte-identical files: copies under one label are kept once (the others ``"skipped"``, so they
can never straddle the split); copies under different labels are all left out, because which
label is true cannot be known (``conflicting_duplicate``). Groups that share a file are joined, so
a lesion listed under two ids, or rows without a lesion id, cannot leak across the split through
identical images. Problems in :data:`LOUD_KINDS` change what is trained on or risk a leak: besides
the report, :func:`validate_for_training` logs them as warnings.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from skinzoo.data.images import UNUSABLE_KINDS, ImageInfo, hint_for, inspect_image
from skinzoo.data.sources import Dataset, Problem
from skinzoo.errors import DataError

METADATA_COLUMNS = ("age", "sex", "site")
# Problems a user must see when training, not only in `data check`: they change the training set
# or risk a leak between train and test.
LOUD_KINDS = ("conflicting_duplicate", "duplicate_image", "missing_group", "merged_labels",
              "outside_root")

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. ``images`` has one row per table row (same index)."""

    dataset: Dataset
    problems: list[Problem]
    images: pd.DataFrame  # path, ok, problem, width, height, mode, format, conversion, digest
    summary: dict
    merged_group: pd.Series  # group per usable row, byte-identical copies joined into one group
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)
    dropped: pd.Series | None = None  # per table row: readable but left out (duplicate copies)

    @property
    def blocking(self) -> bool:
        """True when the dataset cannot be trained on as it is."""
        return any(p.action == "error" for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.action == "error"]

    @property
    def usable(self) -> pd.Series:
        """Boolean per table row: the image can be read and is used (not a left-out copy)."""
        ok = self.images["ok"].astype(bool)
        return ok if self.dropped is None else ok & ~self.dropped

    def problem_table(self) -> pd.DataFrame:
        """One row per problem: kind, where (file or CSV line), message, action."""
        return pd.DataFrame([p.to_dict() for p in self.problems],
                            columns=["kind", "where", "message", "action"])

    def problems_by_kind(self) -> dict[str, list[Problem]]:
        out: dict[str, list[Problem]] = {}
        for p in self.problems:
            out.setdefault(p.kind, []).append(p)
        return out

    def to_dict(self) -> dict:
        return {"summary": self.summary, "blocking": self.blocking,
                "problems": [p.to_dict() for p in self.problems], "seconds": self.seconds}


def check_dataset(dataset: Dataset, val: float = 0.15, test: float = 0.15, folds: int | None = None,
                  decode: str = "auto", workers: int | None = None) -> CheckReport:
    """Inspect every image of ``dataset`` and the class/group structure; never raises for bad data.

    ``val``/``test``/``folds`` say how the data will be split, which sets how many groups each
    class needs (3 for train/val/test, 2 with ``test=0``, k for k folds).
    """
    start = time.perf_counter()
    table = dataset.table
    infos = inspect_images(table["path"].tolist(), decode=decode, workers=workers)
    images = pd.DataFrame([i.to_dict() for i in infos], index=table.index)
    problems = list(dataset.problems)
    for info in infos:
        if not info.ok:
            problems.append(Problem(info.problem, info.path, f"{info.path} {info.message}", "skipped"))
        elif info.converted:
            problems.append(Problem(f"converted_{info.conversion}", info.path,
                                    f"{info.path} is {info.mode} ({info.format}): read as RGB",
                                    "converted"))
    readable = images["ok"].astype(bool)
    merged, dup_problems, n_dup_sets, dropped_idx = _duplicates(table[readable],
                                                                images.loc[readable, "digest"])
    problems += dup_problems
    dropped = pd.Series(table.index.isin(dropped_idx), index=table.index)
    ok = readable & ~dropped
    usable = table[ok]
    merged = merged[ok[readable].to_numpy()]
    problems += _metadata_problems(usable)
    sides = folds if folds else (3 if test > 0 else 2)
    counts = usable["label"].value_counts().reindex(dataset.classes, fill_value=0)
    groups = merged.groupby(usable["label"]).nunique().reindex(dataset.classes, fill_value=0)
    problems += _class_problems(dataset, counts, groups, sides, len(table) - int(ok.sum()))
    seconds = time.perf_counter() - start
    summary = _summary(dataset, images, ok, counts, groups, problems, n_dup_sets, seconds)
    summary["left_out_copies"] = int(dropped.sum())
    summary["unusable"] -= summary["left_out_copies"]  # readable: counted as copies, not unusable
    return CheckReport(dataset, problems, images, summary, merged, seconds,
                       dict(val=val, test=test, folds=folds, decode=decode), dropped)


def validate_for_training(dataset: Dataset, val: float = 0.15, test: float = 0.15,
                          folds: int | None = None, workers: int | None = None):
    """``(clean_dataset, report)``: unusable images dropped (and listed in ``problems``),
    byte-identical copies put in one group so no split can separate them.

    Raises ``DataError`` when the dataset cannot be trained on (see the module docstring).
    """
    report = check_dataset(dataset, val=val, test=test, folds=folds, workers=workers)
    if report.blocking:
        errors = report.errors
        shown = "; ".join(p.message for p in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise DataError(f"the dataset at {dataset.source or dataset.root} cannot be trained on: "
                        f"{shown}{more}", f"run `skinzoo data check {dataset.root}` for the full "
                        "list")
    for p in report.problems:
        if p.kind in LOUD_KINDS:
            log.warning("WARNING: %s", p.message if p.where in p.message else f"{p.where}: {p.message}")
    ok = report.usable.astype(bool)
    table = dataset.table[ok].assign(group=report.merged_group)
    added = report.problems[len(dataset.problems):]
    return dataset.with_table(table, problems=added), report


def inspect_images(paths: list[str], decode: str = "auto", workers: int | None = None) -> list[ImageInfo]:
    """:func:`inspect_image` (with digest) over many files in a thread pool, in input order.

    Threads suffice: file reads, hashing and Pillow's decoders release the GIL.
    """
    workers = workers or min(8, 2 * (os.cpu_count() or 1))

    def one(p):
        return inspect_image(p, decode=decode, with_digest=True)

    from skinzoo.progress import track

    if workers <= 1 or len(paths) < 64:
        return [one(p) for p in track(paths, "checking images")]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(track(pool.map(one, paths, chunksize=64), "checking images", total=len(paths)))


# --- parts ---------------------------------------------------------------------------------

def _duplicates(usable: pd.DataFrame, digests: pd.Series):
    """``(merged groups, problems, number of sets, index of rows left out)``.

    Groups sharing a file are joined (union-find); per set of byte-identical files, one copy is
    kept when they agree on the label, none when they do not (see the module docstring)."""
    parent: dict[str, str] = {}
    left_out: list = []

    def find(g):
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    problems, n_sets = [], 0
    for _, idx in digests.groupby(digests).groups.items():
        if len(idx) < 2:
            continue
        n_sets += 1
        rows = usable.loc[idx]
        labels, groups = sorted(set(rows["label"])), sorted(set(rows["group"]))
        if len(groups) > 1:
            root = find(groups[0])
            for g in groups[1:]:
                parent[find(g)] = root
        if len(labels) > 1:
            listed = ", ".join(f"{i} ({lab})" for i, lab in zip(rows["image_id"].astype(str),
                                                               rows["label"], strict=True))
            left_out += list(idx)
            problems.append(Problem(
                "conflicting_duplicate", str(rows["path"].iloc[0]),
                f"{len(rows)} byte-identical files carry different labels: {listed}; all left out "
                "of training (which label is true cannot be known)", "skipped"))
            continue
        kept, others = rows["image_id"].astype(str).iloc[0], rows["image_id"].astype(str).iloc[1:]
        left_out += list(idx[1:])
        shown = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
        problems.append(Problem(
            "duplicate_image", str(rows["path"].iloc[0]),
            f"{len(rows)} byte-identical files labelled {labels[0]!r}: {kept} kept, {shown} left "
            "out (copies must not sit on both sides of the split)"
            + (f"; their {len(groups)} groups joined into one" if len(groups) > 1 else ""),
            "skipped"))
    merged = usable["group"].map(lambda g: find(g)) if parent else usable["group"].copy()
    return merged, problems, n_sets, left_out


def _metadata_problems(usable: pd.DataFrame) -> list[Problem]:
    out = []
    for col in METADATA_COLUMNS:
        if col not in usable:
            continue
        values = usable[col]
        missing = values.isna() if col == "age" else values.astype(str).str.lower().isin(
            ["unknown", "nan", ""])
        n = int(missing.sum())
        if n:
            out.append(Problem("missing_metadata", col, f"{col} is missing for {n} of "
                               f"{len(usable)} images", "kept"))
    return out


def _class_problems(dataset, counts, groups, sides, n_unusable) -> list[Problem]:
    out = []
    where = str(dataset.source or dataset.root)
    if int(counts.sum()) == 0:
        return [Problem("no_usable_images", where, f"none of the {n_unusable} images can be read",
                        "error")]
    for name in counts.index[counts == 0]:
        out.append(Problem("empty_class", f"class {name}", f"class {name!r} has no usable images "
                           "left", "error"))
    if int((counts > 0).sum()) < 2:
        only = counts.index[counts > 0][0]
        out.append(Problem("one_class", where, f"found only one class {only!r} with usable images; "
                           "a classifier needs at least two", "error"))
    side_names = {2: "train/val", 3: "train/val/test"}.get(sides, f"{sides} folds")
    for name in counts.index[(groups < sides) & (counts > 0)]:
        out.append(Problem("too_few_groups", f"class {name}",
                           f"class {name!r} has {int(groups[name])} group(s) (lesions/patients, "
                           f"{int(counts[name])} images); a {side_names} split needs at least "
                           f"{sides} so every side has one", "error"))
    return out


def _summary(dataset, images, ok, counts, groups, problems, n_dup_sets, seconds) -> dict:
    usable = images[ok]
    n = int(counts.sum())
    classes = [{"class": c, "images": int(counts[c]), "groups": int(groups[c]),
                "share": round(float(counts[c]) / n, 4) if n else 0.0} for c in counts.index]
    size = {}
    if len(usable):
        for dim in ("width", "height"):
            v = usable[dim].astype(float)
            size[dim] = {"min": int(v.min()), "median": float(np.median(v)), "max": int(v.max())}
        size["distinct_sizes"] = int(usable[["width", "height"]].drop_duplicates().shape[0])
    by_kind: dict[str, int] = {}
    for p in problems:
        by_kind[p.kind] = by_kind.get(p.kind, 0) + 1
    missing_meta = {p.where: int(p.message.split(" is missing for ")[1].split()[0])
                    for p in problems if p.kind == "missing_metadata"}
    return {
        "dataset": str(dataset.source or dataset.root), "format": dataset.format,
        "task": dataset.task, "rows": len(images), "usable": int(ok.sum()),
        "unusable": int((~ok).sum()), "classes": classes, "image_size": size,
        "formats": {str(k): int(v) for k, v in usable["format"].value_counts().items()},
        "conversions": {str(k): int(v) for k, v in usable["conversion"].value_counts().items()},
        "duplicate_sets": n_dup_sets, "missing_metadata": missing_meta,
        "problems_by_kind": by_kind, "seconds": round(seconds, 3),
        "blocking": any(p.action == "error" for p in problems),
    }


def report_text(report: CheckReport, max_per_kind: int = 5) -> str:
    """The report as text: summary table, then problems grouped by kind (first few of each)."""
    s = report.summary
    lines = [f"dataset  {s['dataset']}  (format {s['format']}, task {s['task']})",
             f"images   {s['usable']} usable of {s['rows']} listed"
             + (f", {s['unusable']} unusable (skipped)" if s["unusable"] else "")
             + (f", {s['left_out_copies']} duplicate copies left out"
                if s.get("left_out_copies") else ""), ""]
    width = max([len("class")] + [len(c["class"]) for c in s["classes"]])
    lines.append(f"  {'class':<{width}}  {'images':>7}  {'groups':>7}  {'share':>6}")
    for c in s["classes"]:
        lines.append(f"  {c['class']:<{width}}  {c['images']:>7}  {c['groups']:>7}  "
                     f"{c['share']:>6.1%}")
    size = s["image_size"]
    if size:
        w, h = size["width"], size["height"]
        lines += ["", f"image size  width {w['min']}..{w['max']} (median {w['median']:g}), "
                  f"height {h['min']}..{h['max']} (median {h['median']:g}), "
                  f"{size['distinct_sizes']} distinct size(s)"]
    if s["formats"]:
        lines.append("formats     " + ", ".join(f"{k} {v}" for k, v in s["formats"].items()))
    if s["conversions"]:
        lines.append("converted   " + ", ".join(f"{k} {v}" for k, v in s["conversions"].items())
                     + " (read as RGB)")
    if s["duplicate_sets"]:
        lines.append(f"duplicates  {s['duplicate_sets']} set(s) of byte-identical files")
    by_kind = report.problems_by_kind()
    if by_kind:
        lines += ["", "problems"]
        order = {"error": 0, "warning": 1, "skipped": 2, "converted": 3, "kept": 4}
        for kind, items in sorted(by_kind.items(), key=lambda kv: (order.get(kv[1][0].action, 4),
                                                                   kv[0])):
            lines.append(f"  {kind} ({len(items)}, {items[0].action})")
            for p in items[:max_per_kind]:
                text = p.message if p.where in p.message else f"{p.where}: {p.message}"
                lines.append(f"    {text}")
            if len(items) > max_per_kind:
                lines.append(f"    ... and {len(items) - max_per_kind} more")
            if items[0].action == "skipped" and kind in UNUSABLE_KINDS:
                lines.append(f"    hint: {hint_for(kind)}")
    lines += ["", f"checked in {s['seconds']:.1f} s"]
    return "\n".join(lines)
