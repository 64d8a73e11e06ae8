"""Comparing runs: a leaderboard from each run's ``eval/<split>/metrics.json``, with a warning
when the runs were evaluated on different splits.
"""

from __future__ import annotations

import json
from pathlib import Path

from skinzoo.errors import UsageError
from skinzoo.evaluate.evaluation import split_digest
from skinzoo.rundir import RunDir

COMPARE_COLUMNS = ("run", "model", "n", "accuracy", "balanced_accuracy", "bal_acc_ci", "macro_f1",
                   "macro_auc", "ece")


def compare_runs(run_dirs, split: str = "test") -> tuple[list[dict], list[str]]:
    """Leaderboard rows (best balanced accuracy first) from each run's ``eval/<split>/metrics.json``,
    plus warnings (missing evaluations, runs whose split.csv differ)."""
    rows, warnings, digests = [], [], {}
    for d in run_dirs:
        run = RunDir(d)
        path = run.eval_dir / split / "metrics.json"
        if not path.is_file():
            warnings.append(f"{run.path}: no {path.relative_to(run.path)}; run `skinzoo evaluate "
                            f"{run.path} --split {split}` first (skipped)")
            continue
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            warnings.append(f"{path} is not valid JSON (skipped)")
            continue
        if not isinstance(m, dict):
            warnings.append(f"{path} does not hold a metrics object (skipped)")
            continue
        digests[str(run.path)] = split_digest(run)
        ci = (m.get("ci") if isinstance(m.get("ci"), dict) else {}).get("balanced_accuracy")
        ci = ci if isinstance(ci, list) and len(ci) == 2 and all(_number(v) is not None for v in ci) \
            else None
        rows.append({"run": run.path.name, "model": _model_of(run),
                     "n": m.get("n") if isinstance(m.get("n"), int) else None,
                     "accuracy": _number(m.get("accuracy")),
                     "balanced_accuracy": _number(m.get("balanced_accuracy")),
                     "bal_acc_ci": f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "",
                     "macro_f1": _number(m.get("macro_f1")), "macro_auc": _number(m.get("macro_auc")),
                     "ece": _number(m.get("ece")), "collapsed": bool(m.get("collapse_warnings"))})
    if not rows:
        raise UsageError(f"none of the runs has a {split} evaluation to compare",
                         f"run `skinzoo evaluate RUN --split {split}` for each run first")
    if len(set(digests.values())) > 1:
        groups = {}
        for run, dg in digests.items():
            groups.setdefault(dg, []).append(Path(run).name)
        warnings.append("the runs were evaluated on DIFFERENT splits (their split.csv differ), so the "
                        "numbers are not directly comparable: "
                        + "; ".join(", ".join(v) for v in groups.values()))
    rows.sort(key=lambda r: -(r["balanced_accuracy"] or 0))
    return rows, warnings


def _number(value) -> float | None:
    # metrics.json is data a user may have edited: only real numbers reach the leaderboard.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _model_of(run) -> str:
    try:
        return str(run.read_info().get("model", ""))
    except UsageError:  # a damaged classes.json only costs the leaderboard its model name
        return ""
