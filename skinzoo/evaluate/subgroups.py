"""Per-subgroup metrics (sex, age bands, anatomical site, any other metadata column).

For each group: the image count, counts per class, balanced accuracy with a bootstrap interval
(:func:`skinzoo.metrics.bootstrap_ci`, the same resampling as the headline metrics) and,
for binary tasks, sensitivity and specificity at the evaluation's threshold with intervals.

A group is flagged only when its interval's UPPER bound is below the overall point estimate:
the whole interval is worse, so a small group that scored low by chance is not called a failure.
Groups under ``MIN_GROUP_SIZE`` images get counts and point values but no interval and no flag,
because a percentile bootstrap of a handful of images understates the uncertainty (one image
gives an interval of width zero).
"""

from __future__ import annotations

import html
import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from skinzoo.data.metadata import attach_columns
from skinzoo.errors import DataError, UsageError
from skinzoo.rundir import read_run_config

log = logging.getLogger(__name__)

DEFAULT_COLUMNS = ("sex", "age", "site")
AGE_BANDS = ((0, 30, "<30"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"), (75, math.inf, "75+"))
MIN_GROUP_SIZE = 10
MAX_CATEGORIES = 30  # a numeric column with more distinct values is cut into quartiles
MISSING = "unknown"
_NOT_METADATA = {"path", "label", "group", "image_id", "split", "_line"}


def parse_columns(text: str | None) -> list[str]:
    """``"fitzpatrick,scanner"`` -> ``["fitzpatrick", "scanner"]``."""
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def dataset_metadata(loaded, data=None, columns=()) -> tuple[pd.DataFrame | None, str]:
    """``(table with a "resolved" path column and the metadata columns, where it came from)``.

    From ``data`` when given, else the dataset named in the run's ``config.toml``. None (with the
    reason) when neither is available: subgroups are then left out, never guessed. ``columns``
    beyond the standard age/sex/site are read from the dataset's CSV (a DataError names the
    CSV's columns when one is not there).
    """
    from skinzoo.data.sources import load_dataset

    options = {}
    if data is None:
        config = read_run_config(loaded.run)
        data = config.get("data")
        if not data:
            return None, "no dataset known (pass --data DATASET for subgroup metrics)"
        options = {k: config[k] for k in ("format", "image_col", "label_col", "allow_outside_root")
                   if config.get(k) is not None}
        if not Path(data).exists():
            return None, f"the run's dataset {data} is not there any more (pass --data DATASET)"
    try:
        dataset = load_dataset(data, task=loaded.task, **options)
    except (DataError, UsageError) as err:
        return None, f"cannot read {data} for subgroup metrics: {err.message}"
    table = attach_columns(dataset.table.copy(), dataset.source, list(columns))
    table["resolved"] = [os.path.realpath(p) for p in table["path"].astype(str)]
    return table, str(data)


def group_labels(values: pd.Series, column: str) -> pd.Series:
    """Group name per row: age bands for ``age``, quartiles for other many-valued numbers,
    the values themselves otherwise; missing values are the group ``unknown``."""
    if column == "age" or _many_numbers(values):
        numbers = pd.to_numeric(values, errors="coerce")
        if column == "age":
            bands = [next((name for lo, hi, name in AGE_BANDS if lo <= v < hi), MISSING)
                     if np.isfinite(v) else MISSING for v in numbers]
            return pd.Series(bands, index=values.index)
        cut = pd.qcut(numbers, 4, duplicates="drop")
        return cut.astype(str).where(numbers.notna(), MISSING)
    text = values.astype("string").str.strip()
    return text.where(text.notna() & (text != "") & (text.str.lower() != "nan"), MISSING).astype(str)


def _many_numbers(values: pd.Series) -> bool:
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers.notna().mean() > 0.9 and numbers.nunique() > MAX_CATEGORIES


def subgroup_metrics(y_true, probs, classes, groups: dict[str, np.ndarray], threshold=None,
                     n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """``{"overall": {...}, "columns": {column: {group: row}}, "flagged": [...]}``."""
    from skinzoo.metrics import classification_metrics

    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    binary = probs.shape[1] == 2
    overall = _point_values(y_true, probs, classes, threshold, binary, classification_metrics)
    columns, flagged = {}, []
    for column, labels in groups.items():
        labels = np.asarray(labels, dtype=str)
        rows = {}
        for name in sorted(set(labels), key=lambda v: (v == MISSING, _sort_key(v))):
            mask = labels == name
            row = _group_row(y_true[mask], probs[mask], classes, threshold, binary, overall,
                             n_bootstrap, seed)
            rows[name] = row
            if row["flags"]:
                flagged.append({"column": column, "group": name, "n": row["n"], "flags": row["flags"]})
        columns[column] = rows
    return {"overall": overall, "columns": columns, "flagged": flagged,
            "min_group_size": MIN_GROUP_SIZE,
            "rule": "flagged when the group's 95% bootstrap interval lies entirely below the "
                    "overall point estimate"}


def _sort_key(name: str):
    for i, (_, _, band) in enumerate(AGE_BANDS):
        if name == band:
            return (0, i, "")
    return (1, 0, name)


def _point_values(y, probs, classes, threshold, binary, classification_metrics) -> dict:
    values = {"n": int(len(y)),
              "balanced_accuracy": classification_metrics(y, probs, classes, threshold)["balanced_accuracy"]}
    if binary:
        values.update(_sens_spec(y, probs, threshold))
    return values


def _sens_spec(y, probs, threshold) -> dict:
    from skinzoo.metrics import predicted_classes

    pred = predicted_classes(probs, threshold)
    pos, neg = y == 1, y == 0
    return {"sensitivity": float((pred[pos] == 1).mean()) if pos.any() else None,
            "specificity": float((pred[neg] == 0).mean()) if neg.any() else None}


def _group_row(y, probs, classes, threshold, binary, overall, n_bootstrap, seed) -> dict:
    from skinzoo.metrics import bootstrap_ci, classification_metrics

    row = _point_values(y, probs, classes, threshold, binary, classification_metrics)
    row["class_counts"] = {classes[c]: int((y == c).sum()) for c in range(len(classes)) if (y == c).any()}
    row["ci"], row["flags"] = {}, []
    if len(y) < MIN_GROUP_SIZE:
        row["note"] = f"fewer than {MIN_GROUP_SIZE} images: no interval, not judged"
        return row
    row["ci"]["balanced_accuracy"] = bootstrap_ci(y, probs, n_bootstrap, seed, threshold=threshold)[
        "balanced_accuracy"]
    if binary:
        # Sensitivity (specificity) is the accuracy on the positives (negatives): the same
        # bootstrap, resampling within that class.
        for name, cls in (("sensitivity", 1), ("specificity", 0)):
            mask = y == cls
            if mask.sum() >= MIN_GROUP_SIZE:
                row["ci"][name] = bootstrap_ci(y[mask], probs[mask], n_bootstrap, seed,
                                               threshold=threshold)["accuracy"]
    for name in ("balanced_accuracy", "sensitivity"):
        interval, reference = row["ci"].get(name), overall.get(name)
        if interval and reference is not None and interval[1] < reference:
            row["flags"].append(f"{name} {row[name]:.3f} (95% CI {interval[0]:.3f}-{interval[1]:.3f}) "
                                f"below overall {reference:.3f}")
    return row


def add_subgroups(loaded, evaluation, data=None, extra_columns=(), n_bootstrap: int = 1000,
                  seed: int = 0) -> dict | None:
    """Subgroup metrics of an evaluation, added to its metrics (and its metrics.json)."""
    from skinzoo.fileio import write_json_atomic

    table, source = dataset_metadata(loaded, data, extra_columns)
    wanted = list(dict.fromkeys([*DEFAULT_COLUMNS, *extra_columns]))
    if table is None:
        if extra_columns:
            raise UsageError(f"--subgroups needs the dataset's metadata: {source}",
                             "pass --data DATASET")
        log.info("note: no subgroup metrics: %s", source)
        return None
    available = [c for c in table.columns if c not in _NOT_METADATA and c != "resolved"]
    unknown = [c for c in extra_columns if c not in available]
    if unknown:
        raise UsageError(f"--subgroups names column(s) the dataset does not have: {', '.join(unknown)}",
                         "available: " + (", ".join(available) or "none (no metadata)"))
    columns = [c for c in wanted if c in available and table[c].notna().any()]
    if not columns:
        log.info("note: no subgroup metrics: %s has no sex/age/site metadata", source)
        return None
    by_path = table.drop_duplicates("resolved").set_index("resolved")
    resolved = [os.path.realpath(p) for p in evaluation.paths]
    known = np.isin(resolved, by_path.index)
    if not known.any():
        log.info("note: no subgroup metrics: the evaluated images are not in %s", source)
        return None
    rows = by_path.loc[np.asarray(resolved)[known]]
    groups = {c: group_labels(rows[c].reset_index(drop=True), c).to_numpy() for c in columns}
    threshold = (evaluation.metrics.get("binary") or {}).get("threshold")
    result = subgroup_metrics(evaluation.y_true[known], evaluation.probs[known], evaluation.classes,
                              groups, threshold, n_bootstrap, seed)
    result.update(source=source, images_without_metadata=int((~known).sum()))
    evaluation.metrics["subgroups"] = result
    if evaluation.out_dir is not None:
        write_json_atomic(evaluation.out_dir / "metrics.json", evaluation.metrics)
    return result


# --- presenting ---------------------------------------------------------------------------------


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _ci(row, name) -> str:
    interval = (row.get("ci") or {}).get(name)
    return f"{interval[0]:.3f}-{interval[1]:.3f}" if interval else ""


def subgroup_lines(sub: dict) -> list[str]:
    """Plain-text table for the terminal."""
    binary = "sensitivity" in sub["overall"]
    out = [f"subgroups (overall balanced accuracy {_fmt(sub['overall']['balanced_accuracy'])}"
           + (f", sensitivity {_fmt(sub['overall'].get('sensitivity'))}" if binary else "") + "):"]
    for column, rows in sub["columns"].items():
        for name, row in rows.items():
            text = (f"  {column + '=' + name:<24} n={row['n']:<5} bal.acc {_fmt(row['balanced_accuracy'])}"
                    f" ({_ci(row, 'balanced_accuracy') or 'no CI'})")
            if binary:
                text += f"  sens {_fmt(row.get('sensitivity'))} ({_ci(row, 'sensitivity') or 'no CI'})"
            out.append(text + ("  FLAGGED" if row["flags"] else ""))
    for f in sub["flagged"]:
        out.append(f"  flagged: {f['column']}={f['group']} (n={f['n']}): " + "; ".join(f["flags"]))
    return out


def subgroups_html(sub: dict) -> str:
    """The report's subgroup section (HTML fragment)."""
    e = html.escape
    binary = "sensitivity" in sub["overall"]
    head = "<th>group</th><th>n</th><th>balanced accuracy</th><th>95% CI</th>" + (
        "<th>sensitivity</th><th>95% CI</th><th>specificity</th>" if binary else "") + "<th>flag</th>"
    parts = [f"<h2>Subgroups</h2><p>{e(sub['rule'])}; groups under {sub['min_group_size']} images "
             f"are shown but not judged. Overall balanced accuracy {_fmt(sub['overall']['balanced_accuracy'])}"
             + (f", sensitivity {_fmt(sub['overall'].get('sensitivity'))}" if binary else "") + ".</p>"]
    for column, rows in sub["columns"].items():
        parts.append(f"<h3>{e(column)}</h3><table><tr>{head}</tr>")
        for name, row in rows.items():
            cls = " class='bad'" if row["flags"] else ""
            cells = [e(name), str(row["n"]), _fmt(row["balanced_accuracy"]), _ci(row, "balanced_accuracy")]
            if binary:
                cells += [_fmt(row.get("sensitivity")), _ci(row, "sensitivity"), _fmt(row.get("specificity"))]
            cells.append("below overall" if row["flags"] else "")
            parts.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    return "\n".join(parts)
