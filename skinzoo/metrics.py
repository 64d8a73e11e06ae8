"""Classification metrics on ``(y_true, probs)``: pure functions, NumPy + scikit-learn underneath.

Every function takes ``y_true`` as int class indices ``(N,)`` and ``probs`` as ``(N, K)`` class
probabilities. A binary model outputs one sigmoid unit (the probability of ``classes[1]``);
:func:`as_class_probs` is the one place that turns it into ``(N, 2)``.

Headline metrics are the ones ISIC ranks by: balanced accuracy (mean per-class recall) first,
because plain accuracy rewards a model that always says "nevus" on a 67%-nevus test set.
"""

from __future__ import annotations

import numpy as np

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")


def as_class_probs(outputs) -> np.ndarray:
    """Model outputs -> ``(N, K)`` probabilities; a single sigmoid column becomes ``[1-p, p]``."""
    p = np.asarray(outputs, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2:
        raise ValueError(f"expected model outputs of shape (N, K), got {p.shape}")
    if p.shape[1] == 1:
        p = np.concatenate([1.0 - p, p], axis=1)
    return p


def predicted_classes(probs, threshold: float | None = None) -> np.ndarray:
    """Argmax, or for K == 2 with a threshold: ``classes[1]`` when ``P(classes[1]) >= threshold``."""
    probs = np.asarray(probs)
    if threshold is not None and probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(int)
    return probs.argmax(axis=1)


def confusion(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``(K, K)`` counts; rows are true classes, columns predicted classes."""
    idx = np.asarray(y_true) * num_classes + np.asarray(y_pred)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _scores_from_confusion(cm: np.ndarray) -> dict:
    """Accuracy, balanced accuracy and macro-F1 from one or a stack ``(..., K, K)`` of matrices.

    Classes with no true samples are left out of balanced accuracy (as scikit-learn does);
    precision of a never-predicted class is 0 (scikit-learn's ``zero_division=0``).
    """
    cm = cm.astype(np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    total = support.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / np.where(support > 0, support, 1), np.nan)
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 0.0)
        denom = precision + np.nan_to_num(recall)
        f1 = np.where(denom > 0, 2 * precision * np.nan_to_num(recall) / np.where(denom > 0, denom, 1), 0.0)
        present = support > 0
        return {
            "accuracy": tp.sum(axis=-1) / total,
            "balanced_accuracy": np.nanmean(recall, axis=-1),
            # scikit-learn's macro-F1 averages over classes present in y_true or y_pred
            "macro_f1": (f1 * (present | (predicted > 0))).sum(axis=-1)
            / np.maximum((present | (predicted > 0)).sum(axis=-1), 1),
        }


def top_k_accuracy(y_true, probs, k: int = 2) -> float:
    """Share of samples whose true class is among the ``k`` most probable ones."""
    probs = np.asarray(probs)
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(y_true)[:, None]).any(axis=1).mean())


def expected_calibration_error(y_true, probs, n_bins: int = 15) -> float:
    """ECE of the top-1 confidence: sum over equal-width bins of |accuracy - confidence| x share."""
    probs = np.asarray(probs)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / max(len(conf), 1))


def reliability_bins(y_true, probs, n_bins: int = 15) -> dict:
    """Per-bin mean confidence, accuracy and count, for the reliability diagram."""
    probs = np.asarray(probs)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "edges": np.linspace(0, 1, n_bins + 1),
            "confidence": np.bincount(bins, weights=conf, minlength=n_bins) / count,
            "accuracy": np.bincount(bins, weights=correct, minlength=n_bins) / count,
            "count": count,
        }


def per_class_auc(y_true, probs) -> tuple[dict[int, float], list[int]]:
    """One-vs-rest ROC-AUC per class; classes absent from ``y_true`` (or the only class) are
    skipped, since AUC needs positives and negatives. Returns ``(auc by class index, skipped)``."""
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true)
    aucs, skipped = {}, []
    for k in range(probs.shape[1]):
        positives = y_true == k
        if positives.all() or not positives.any():
            skipped.append(k)
            continue
        aucs[k] = float(roc_auc_score(positives, probs[:, k]))
    return aucs, skipped


def classification_metrics(y_true, probs, classes, threshold: float | None = None) -> dict:
    """All multiclass metrics (also valid for K == 2) in one JSON-ready dict.

    ``threshold`` only matters for K == 2 (see :func:`predicted_classes`).
    """
    from sklearn.metrics import cohen_kappa_score, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    if len(classes) != k:
        raise ValueError(f"{len(classes)} class names for {k} model outputs")
    y_pred = predicted_classes(probs, threshold)
    labels = list(range(k))
    cm = confusion(y_true, y_pred, k)
    scores = _scores_from_confusion(cm)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    # macro/weighted averages over the classes seen in y_true or y_pred, exactly as scikit-learn
    pm, rm, fm, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    pw, rw, fw, _ = precision_recall_fscore_support(y_true, y_pred, average="weighted",
                                                    zero_division=0)
    aucs, skipped = per_class_auc(y_true, probs)
    kappa = cohen_kappa_score(y_true, y_pred, labels=labels) if len(set(y_true) | set(y_pred)) > 1 else 0.0
    out = {
        "n": int(len(y_true)),
        "num_classes": k,
        "classes": list(classes),
        "accuracy": float(scores["accuracy"]),
        "balanced_accuracy": float(scores["balanced_accuracy"]),
        "macro_precision": float(pm),
        "macro_recall": float(rm),
        "macro_f1": float(fm),
        "weighted_precision": float(pw),
        "weighted_recall": float(rw),
        "weighted_f1": float(fw),
        "cohen_kappa": float(np.nan_to_num(kappa)),
        "macro_auc": float(np.mean(list(aucs.values()))) if aucs else None,
        "auc_skipped_classes": [classes[c] for c in skipped],
        "top2_accuracy": top_k_accuracy(y_true, probs, 2),
        "ece": expected_calibration_error(y_true, probs),
        "confusion_matrix": cm.tolist(),
        "per_class": {
            classes[c]: {"precision": float(p[c]), "recall": float(r[c]), "f1": float(f[c]),
                         "support": int(s[c]), "auc": aucs.get(c),
                         "predicted": int(cm[:, c].sum())}
            for c in labels
        },
    }
    return out


# --- binary ------------------------------------------------------------------------------------


def binary_metrics(y_true, p_positive, threshold: float) -> dict:
    """Sensitivity, specificity, PPV, NPV at ``threshold`` plus threshold-free ROC-AUC and PR-AUC.

    Positive = class index 1 (e.g. "malignant"). Undefined ratios (no positives...) are None.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y_true, dtype=int)
    p = np.asarray(p_positive, dtype=np.float64)
    pred = p >= threshold
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    tn = int((~pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())

    def ratio(a, b):
        return a / (a + b) if a + b else None

    both = 0 < y.sum() < len(y)
    return {
        "threshold": float(threshold),
        "sensitivity": ratio(tp, fn), "specificity": ratio(tn, fp),
        "ppv": ratio(tp, fp), "npv": ratio(tn, fn),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
    }


def fit_threshold(y_val, p_val, target_sensitivity: float | None = None) -> dict:
    """Pick the decision threshold on VALIDATION data only.

    Default: the ROC point with the largest Youden J (sensitivity + specificity - 1). With
    ``target_sensitivity``: the highest threshold whose sensitivity still reaches the target
    (i.e. the lowest false-positive rate that keeps the target), which is what a screening tool
    wants ("miss at most 5% of melanomas").
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(y_val, dtype=int)
    p = np.asarray(p_val, dtype=np.float64)
    if not (0 < y.sum() < len(y)):
        raise ValueError("threshold fitting needs both classes in the validation split")
    fpr, tpr, thr = roc_curve(y, p)
    thr = np.minimum(thr, 1.0)  # roc_curve's first threshold is +inf ("predict nothing")
    if target_sensitivity is not None:
        ok = np.flatnonzero(tpr >= target_sensitivity)
        i = int(ok[0])  # thresholds decrease along the curve: the first hit is the highest one
        method = f"sensitivity>={target_sensitivity:g}"
    else:
        i = int(np.argmax(tpr - fpr))
        method = "youden"
    return {"threshold": float(thr[i]), "method": method, "val_sensitivity": float(tpr[i]),
            "val_specificity": float(1 - fpr[i]), "n_val": int(len(y))}


# --- collapse ----------------------------------------------------------------------------------


def collapse_check(y_true, y_pred, num_classes: int, classes=None) -> list[str]:
    """Warnings when a model has (nearly) collapsed onto few classes.

    Catches the classic trap: high accuracy on an imbalanced test set while the rare class that
    matters (melanoma) is almost never predicted. Empty list = nothing suspicious.
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    names = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    warnings = []
    if len(y_true) == 0:
        return warnings
    cm = confusion(y_true, y_pred, num_classes)
    bal = float(_scores_from_confusion(cm)["balanced_accuracy"])
    chance = 1.0 / num_classes
    predicted = cm.sum(axis=0)
    present = cm.sum(axis=1) > 0
    if len(np.unique(y_pred)) == 1:
        only = names[int(y_pred[0])]
        warnings.append(f"the model predicts '{only}' for every image: it has collapsed to one class "
                        f"(accuracy {np.mean(y_true == y_pred):.2f} only reflects how common "
                        f"'{only}' is)")
    elif bal < chance + 0.1 * (1 - chance):
        warnings.append(f"balanced accuracy {bal:.2f} is near chance (1/{num_classes} = {chance:.2f}): "
                        "the model barely separates the classes")
    never = [names[c] for c in range(num_classes) if present[c] and predicted[c] == 0]
    if never and len(np.unique(y_pred)) > 1:
        warnings.append("never predicted although present in the labels: " + ", ".join(never))
    recall = np.diag(cm) / np.maximum(cm.sum(axis=1), 1)
    weak = [f"{names[c]} {recall[c]:.2f}" for c in range(num_classes)
            if present[c] and predicted[c] > 0 and recall[c] < 0.1 and cm[c].sum() >= 5]
    if weak:
        warnings.append("recall below 0.10: " + ", ".join(weak))
    return warnings


# --- bootstrap ---------------------------------------------------------------------------------


def bootstrap_ci(y_true, probs, n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
                 threshold: float | None = None, chunk: int = 250) -> dict:
    """Percentile bootstrap CIs for the headline metrics: ``{name: [low, high]}``.

    Vectorised: each resample is a vector of counts per sample, so confusion matrices are one
    ``bincount`` and AUCs are weighted Mann-Whitney sums over scores sorted once per class.
    """
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    n, k = probs.shape
    rng = np.random.default_rng(seed)
    y_pred = predicted_classes(probs, threshold)
    cell = y_true * k + y_pred
    values = {name: [] for name in HEADLINE}
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(b, n))
        flat = (np.arange(b)[:, None] * k * k + cell[idx]).ravel()
        cms = np.bincount(flat, minlength=b * k * k).reshape(b, k, k)
        scores = _scores_from_confusion(cms)
        for name in ("accuracy", "balanced_accuracy", "macro_f1"):
            values[name].append(scores[name])
        weights = np.zeros((b, n))
        np.add.at(weights, (np.repeat(np.arange(b), n), idx.ravel()), 1.0)
        values["macro_auc"].append(_weighted_macro_auc(y_true, probs, weights))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for name, chunks in values.items():
        v = np.concatenate(chunks)
        v = v[np.isfinite(v)]
        out[name] = [float(np.percentile(v, lo)), float(np.percentile(v, hi))] if len(v) else None
    return out


def _weighted_macro_auc(y_true, probs, weights) -> np.ndarray:
    """Macro one-vs-rest AUC for each row of ``weights`` (``(B, N)`` sample counts)."""
    per_class = []
    for c in range(probs.shape[1]):
        pos = y_true == c
        if pos.all() or not pos.any():
            continue
        order = np.argsort(probs[:, c], kind="stable")
        s = probs[order, c]
        w = weights[:, order]
        wpos = w * pos[order]
        wneg = w - wpos
        # ties: a positive gets full credit for negatives strictly below, half for equal scores
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        neg_group = np.add.reduceat(wneg, starts, axis=1)
        pos_group = np.add.reduceat(wpos, starts, axis=1)
        neg_below = np.cumsum(neg_group, axis=1) - neg_group
        pairs = (pos_group * (neg_below + 0.5 * neg_group)).sum(axis=1)
        total = wpos.sum(axis=1) * wneg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class.append(np.where(total > 0, pairs / np.where(total > 0, total, 1), np.nan))
    if not per_class:
        return np.full(weights.shape[0], np.nan)
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        return np.nanmean(np.stack(per_class, axis=1), axis=1)


class _quiet_nanmean:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
