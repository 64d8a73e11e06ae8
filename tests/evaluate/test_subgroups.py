"""Subgroup metrics: age bands, the flag rule (whole interval below the overall figure), binary
sensitivity, and `skinzoo evaluate` on the demo dataset (which has age, sex and site)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from skinzoo.evaluate.subgroups import MIN_GROUP_SIZE, group_labels, subgroup_metrics


def _probs(y_pred, k):
    p = np.full((len(y_pred), k), 0.1 / (k - 1))
    p[np.arange(len(y_pred)), y_pred] = 0.9
    return p


def test_age_bands_and_missing_values():
    ages = pd.Series(["12", "30", "44.5", "59", "60", "80", None, "n/a"])
    assert group_labels(ages, "age").tolist() == ["<30", "30-44", "30-44", "45-59", "60-74", "75+",
                                                  "unknown", "unknown"]
    sex = pd.Series(["male", " female", None, ""])
    assert group_labels(sex, "sex").tolist() == ["male", "female", "unknown", "unknown"]


def test_flags_only_a_group_whose_whole_interval_is_below_overall():
    rng = np.random.default_rng(0)
    y = np.tile([0, 1, 2], 200)[:560]
    groups = np.array(["good"] * 400 + ["bad"] * 148 + ["small"] * 12)
    y_pred = y.copy()
    bad = np.flatnonzero(groups == "bad")
    y_pred[bad] = rng.integers(0, 3, len(bad))  # chance level: clearly worse, on 148 images
    small = np.flatnonzero(groups == "small")
    y_pred[small[:3]] = (y[small[:3]] + 1) % 3  # 9/12 right: lower, but within noise
    sub = subgroup_metrics(y, _probs(y_pred, 3), ["a", "b", "c"], {"site": groups}, n_bootstrap=300)
    rows = sub["columns"]["site"]
    overall = sub["overall"]["balanced_accuracy"]
    assert rows["bad"]["flags"] and rows["bad"]["ci"]["balanced_accuracy"][1] < overall
    assert rows["small"]["balanced_accuracy"] < overall and not rows["small"]["flags"]
    assert rows["small"]["ci"]["balanced_accuracy"][1] >= overall
    assert not rows["good"]["flags"]
    assert [f["group"] for f in sub["flagged"]] == ["bad"]
    assert rows["good"]["n"] == 400 and sum(rows["bad"]["class_counts"].values()) == 148


def test_tiny_group_gets_counts_but_no_interval_or_flag():
    y = np.array([0, 1] * 20)
    groups = np.array(["big"] * (40 - MIN_GROUP_SIZE + 1) + ["tiny"] * (MIN_GROUP_SIZE - 1))
    y_pred = y.copy()
    y_pred[groups == "tiny"] = 1 - y[groups == "tiny"]  # all wrong, but too few to judge
    row = subgroup_metrics(y, _probs(y_pred, 2), ["benign", "malignant"], {"sex": groups},
                           threshold=0.5, n_bootstrap=200)["columns"]["sex"]["tiny"]
    assert row["balanced_accuracy"] == 0.0 and row["ci"] == {} and not row["flags"]
    assert "not judged" in row["note"]


def test_binary_sensitivity_is_judged_on_the_group_positives():
    y = np.array([1, 0] * 200)
    groups = np.array(["a"] * 200 + ["b"] * 200)
    y_pred = y.copy()
    pos_b = np.flatnonzero((groups == "b") & (y == 1))
    y_pred[pos_b[:70]] = 0  # group b misses 70 of its 100 positives
    sub = subgroup_metrics(y, _probs(y_pred, 2), ["benign", "malignant"], {"sex": groups},
                           threshold=0.5, n_bootstrap=300)
    b = sub["columns"]["sex"]["b"]
    assert b["sensitivity"] == pytest.approx(0.3) and b["specificity"] == 1.0
    assert b["ci"]["sensitivity"][1] < sub["overall"]["sensitivity"]
    assert any(f.startswith("sensitivity") for f in b["flags"])


@pytest.mark.slow
def test_evaluate_reports_subgroups_and_writes_a_model_card(multiclass_run, synth_dir, tmp_path):
    import shutil

    from click.testing import CliRunner
    from skinzoo_cli.main import cli

    run = tmp_path / multiclass_run.name
    shutil.copytree(multiclass_run, run)
    result = CliRunner().invoke(cli, ["evaluate", str(run), "--data", str(synth_dir), "--report",
                                      "--bootstrap", "100", "--subgroups", "dx_type"])
    assert result.exit_code == 0, result.output
    assert "subgroups (overall balanced accuracy" in result.output and "sex=female" in result.output
    metrics = json.loads((run / "eval" / f"test-{synth_dir.name}" / "metrics.json").read_text())
    columns = metrics["subgroups"]["columns"]
    assert set(columns) == {"sex", "age", "site", "dx_type"}
    assert sum(r["n"] for r in columns["sex"].values()) == metrics["n"]
    report = run / "eval" / f"test-{synth_dir.name}" / "report"
    assert "<h2>Subgroups</h2>" in (report / "report.html").read_text()
    card = json.loads((report / "model_card.json").read_text())
    assert card["metrics"]["test"]["subgroups"]["groups"]["sex"]
    result = CliRunner().invoke(cli, ["evaluate", str(run), "--data", str(synth_dir),
                                      "--bootstrap", "50", "--subgroups", "skin_colour"])
    assert result.exit_code == 3 and "no column(s) skin_colour" in result.output
    assert "dx_type" in result.output and "Traceback" not in result.output
