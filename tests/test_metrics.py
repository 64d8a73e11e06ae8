"""Metric functions against scikit-learn on fixed arrays (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from skinzoo.evaluate.calibration import apply_temperature, fit_temperature
from skinzoo.metrics import (
    _weighted_macro_auc,
    as_class_probs,
    binary_metrics,
    bootstrap_ci,
    classification_metrics,
    collapse_check,
    expected_calibration_error,
    fit_threshold,
)

CLASSES = ["a", "b", "c", "d"]


def _probs(n=300, k=4, seed=0, skill=1.5):
    rng = np.random.default_rng(seed)
    y = rng.choice(k, size=n, p=[0.55, 0.25, 0.15, 0.05][:k] / np.sum([0.55, 0.25, 0.15, 0.05][:k]))
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += skill
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def test_metrics_agree_with_sklearn():
    y, p = _probs()
    pred = p.argmax(1)
    m = classification_metrics(y, p, CLASSES)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = skm.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        assert m[f"{avg}_precision"] == pytest.approx(pr)
        assert m[f"{avg}_recall"] == pytest.approx(rc)
        assert m[f"{avg}_f1"] == pytest.approx(f1)
    assert m["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    assert m["macro_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["top2_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, p, k=2))
    f1s = skm.f1_score(y, pred, average=None)
    for i, c in enumerate(CLASSES):
        assert m["per_class"][c]["f1"] == pytest.approx(f1s[i])
        assert m["per_class"][c]["support"] == int((y == i).sum())
        assert m["per_class"][c]["auc"] == pytest.approx(skm.roc_auc_score(y == i, p[:, i]))
    assert np.array_equal(m["confusion_matrix"], skm.confusion_matrix(y, pred, labels=range(4)))
    # ECE by a slow loop over bins
    conf, correct = p.max(1), pred == y
    bins = np.minimum((conf * 15).astype(int), 14)
    slow = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
               for b in range(15) if (bins == b).any())
    assert m["ece"] == pytest.approx(slow)


def test_all_majority_predictor_matches_sklearn_and_warns():
    y, _ = _probs(n=200, seed=1)
    p = np.tile([0.7, 0.1, 0.1, 0.1], (len(y), 1))  # always class 0, the majority
    m = classification_metrics(y, p, CLASSES)
    pred = np.zeros_like(y)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred)) and m["accuracy"] > 0.5
    assert m["balanced_accuracy"] == pytest.approx(0.25)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert m["cohen_kappa"] == pytest.approx(0.0)
    warnings = collapse_check(y, pred, 4, CLASSES)
    assert warnings and "collapsed" in warnings[0] and "'a'" in warnings[0]


def test_collapse_check_quiet_on_good_model_and_flags_never_predicted():
    y, p = _probs(skill=4.0)
    assert collapse_check(y, p.argmax(1), 4, CLASSES) == []
    pred = y.copy()
    pred[pred == 3] = 0  # rare class 'd' never predicted, the rest perfect
    warnings = collapse_check(y, pred, 4, CLASSES)
    assert any("never predicted" in w and "d" in w for w in warnings)


def test_auc_skips_absent_class():
    y, p = _probs()
    keep = y != 2
    m = classification_metrics(y[keep], p[keep], CLASSES)
    assert m["auc_skipped_classes"] == ["c"] and m["per_class"]["c"]["auc"] is None
    expected = np.mean([skm.roc_auc_score(y[keep] == i, p[keep, i]) for i in (0, 1, 3)])
    assert m["macro_auc"] == pytest.approx(expected)


def test_bootstrap_vectorised_auc_equals_resampled_sklearn():
    y, p = _probs(n=120)
    p = np.round(p, 2)  # ties, which the weighted Mann-Whitney must count half
    rng = np.random.default_rng(3)
    for _ in range(3):
        idx = rng.integers(0, len(y), len(y))
        w = np.bincount(idx, minlength=len(y))[None, :].astype(float)
        present = [c for c in range(4) if 0 < (y[idx] == c).sum() < len(idx)]
        ref = np.mean([skm.roc_auc_score(y[idx] == c, p[idx, c]) for c in present])
        assert _weighted_macro_auc(y, p, w)[0] == pytest.approx(ref)


def test_bootstrap_ci_brackets_point_estimate_and_is_seeded():
    y, p = _probs(n=400)
    ci = bootstrap_ci(y, p, n_resamples=500, seed=7)
    m = classification_metrics(y, p, CLASSES)
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc"):
        lo, hi = ci[name]
        assert lo < m[name] < hi and hi - lo < 0.25
    assert ci == bootstrap_ci(y, p, n_resamples=500, seed=7)
    assert ci != bootstrap_ci(y, p, n_resamples=500, seed=8)


def test_binary_conversion_and_metrics():
    probs = as_class_probs(np.array([[0.2], [0.9], [0.6], [0.4]]))
    assert np.allclose(probs, [[0.8, 0.2], [0.1, 0.9], [0.4, 0.6], [0.6, 0.4]])
    y = np.array([0, 1, 0, 1])
    b = binary_metrics(y, probs[:, 1], 0.5)
    assert (b["tp"], b["fp"], b["tn"], b["fn"]) == (1, 1, 1, 1)
    assert b["sensitivity"] == 0.5 and b["specificity"] == 0.5
    assert b["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    assert b["pr_auc"] == pytest.approx(skm.average_precision_score(y, probs[:, 1]))


def test_fit_threshold_youden_and_target_sensitivity():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.2).astype(int)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.15, 500), 0, 1)
    fitted = fit_threshold(y, p)
    fpr, tpr, thr = skm.roc_curve(y, p)
    assert fitted["threshold"] == pytest.approx(thr[np.argmax(tpr - fpr)])
    strict = fit_threshold(y, p, target_sensitivity=0.95)
    assert strict["threshold"] < fitted["threshold"]
    assert ((p >= strict["threshold"])[y == 1]).mean() >= 0.95
    with pytest.raises(ValueError):
        fit_threshold(np.zeros(10, int), p[:10])


def test_temperature_scaling_reduces_ece_of_overconfident_model():
    y, p = _probs(n=1000, skill=1.0)
    sharp = apply_temperature(p, 0.3)  # overconfident version of the same model
    fitted = fit_temperature(y, sharp)
    assert fitted["temperature"] == pytest.approx(1 / 0.3, rel=0.2)
    assert fitted["ece_after"] < fitted["ece_before"] / 2
    assert fitted["nll_after"] < fitted["nll_before"]
    assert np.array_equal(apply_temperature(sharp, fitted["temperature"]).argmax(1), sharp.argmax(1))
    assert expected_calibration_error(y, p) < expected_calibration_error(y, sharp)
