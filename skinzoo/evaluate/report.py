"""The ``--report`` folder: metrics files, plots, a Grad-CAM gallery and one self-contained HTML.

``report.html`` embeds every image as a base64 data URI and uses no external scripts, fonts or
links, so it can be mailed or archived as a single file. Plots use matplotlib's Agg backend
(no display needed).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from skinzoo.errors import UsageError
from skinzoo.evaluate.subgroups import subgroups_html
from skinzoo.fileio import atomic_path, write_json_atomic, write_text_atomic
from skinzoo.rundir import HISTORY_BOOKKEEPING

HEADLINE_NAMES = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy",
                  "macro_f1": "Macro F1", "macro_auc": "Macro AUC"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_confusion(cm, classes, path, normalise: bool = False) -> Path:
    """Confusion matrix heat map; ``normalise`` divides each row by its total (= recall per class)."""
    plt = _plt()
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalise else cm
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.65 * k))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else max(shown.max(), 1))
    for i in range(k):
        for j in range(k):
            text = f"{shown[i, j]:.2f}" if normalise else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > (0.5 if normalise else shown.max() / 2) else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix" + (" (row-normalised = recall)" if normalise else " (counts)"))
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, Path(path))


def plot_roc(y_true, probs, classes, path) -> Path:
    """One-vs-rest ROC curve per class (classes absent from the labels are left out)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    y_true = np.asarray(y_true)
    pairs = [(1, classes[1])] if len(classes) == 2 else list(enumerate(classes))
    for c, name in pairs:
        pos = y_true == c
        if pos.all() or not pos.any():
            continue
        fpr, tpr, _ = roc_curve(pos, probs[:, c])
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc_score(pos, probs[:, c]):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title("ROC curves (one vs rest)")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, Path(path))


def plot_reliability(y_true, probs, path, probs_uncalibrated=None) -> Path:
    """Reliability diagram: accuracy vs confidence per bin; the diagonal is perfect calibration."""
    from skinzoo.metrics import expected_calibration_error, reliability_bins

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    series = [("model", probs)]
    if probs_uncalibrated is not None:
        series = [("before calibration", probs_uncalibrated), ("after calibration", probs)]
    for label, p in series:
        bins = reliability_bins(y_true, p)
        used = bins["count"] > 0
        ece = expected_calibration_error(y_true, p)
        ax.plot(bins["confidence"][used], bins["accuracy"][used], marker="o",
                label=f"{label} (ECE {ece:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reliability diagram")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, Path(path))


def plot_history(history_csv, path) -> Path | None:
    """Loss and every other logged metric per epoch, train vs validation; None without history."""
    import pandas as pd

    history_csv = Path(history_csv) if history_csv else None
    if history_csv is None or not history_csv.is_file():
        return None
    try:
        hist = pd.read_csv(history_csv)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    names = [c for c in hist.columns if c not in HISTORY_BOOKKEEPING and not c.startswith("val_")
             and pd.api.types.is_numeric_dtype(hist[c])]
    if hist.empty or not names:
        return None
    plt = _plt()
    epoch = pd.to_numeric(hist["epoch"], errors="coerce") if "epoch" in hist else None
    epochs = epoch + 1 if epoch is not None and epoch.notna().all() else np.arange(1, len(hist) + 1)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        ax.plot(epochs, hist[name], label="train")
        if f"val_{name}" in hist:
            ax.plot(epochs, hist[f"val_{name}"], label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.suptitle("Training curves")
    return _save(fig, Path(path))


def plot_gallery(items, classes, path, title: str) -> Path | None:
    """A grid: each column one image, top row the image, bottom row its Grad-CAM overlay.

    ``items``: dicts with ``image`` (H, W, 3 in 0-255), ``overlay`` (uint8 or None), ``true``,
    ``pred`` (class indices), ``prob`` (probability of the predicted class), ``name``, and for a
    model that takes metadata ``meta`` (the caption of :func:`metadata_caption`, written under
    the column).
    """
    if not items:
        return None
    plt = _plt()
    n = len(items)
    has_meta = any(item.get("meta") for item in items)
    fig, axes = plt.subplots(2, n, figsize=(2.1 * n, 5.0 if has_meta else 4.6), squeeze=False)
    for j, item in enumerate(items):
        ok = item["true"] == item["pred"]
        axes[0, j].imshow(np.clip(item["image"], 0, 255).astype(np.uint8))
        axes[0, j].set_title(f"true {classes[item['true']]}\npred {classes[item['pred']]} "
                             f"{item['prob']:.2f}", fontsize=8, color="green" if ok else "red")
        if item.get("overlay") is not None:
            axes[1, j].imshow(item["overlay"])
        if item.get("meta"):
            axes[1, j].text(0.5, -0.04, item["meta"], transform=axes[1, j].transAxes, ha="center",
                            va="top", fontsize=7)
        for ax in axes[:, j]:
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return _save(fig, Path(path))


def metadata_caption(encoding, vector) -> str:
    """The values an encoded metadata vector holds, one field per line (``age 55``, ``sex
    female``, ``site back``; ``missing`` where the field is missing). Decoded from what the model
    was fed, so an unseen category shows as missing, as the model saw it."""
    vector = np.asarray(vector, np.float64).reshape(-1)
    lines, start = [], 0
    for f in encoding.fields:
        values = vector[start:start + f.width]
        missing = f.indicator and values[-1] > 0.5
        if f.kind == "numeric":
            text = "missing" if missing else f"{round(values[0] * f.scale + f.offset, 1):g}"
        else:
            slots = values[:len(f.categories)]
            text = "missing" if missing or not len(slots) or slots.max() < 0.5 \
                else f.categories[int(np.argmax(slots))]
        lines.append(f"{f.name} {text}")
        start += f.width
    return "\n".join(lines)


def metadata_captions(encodings: dict, inputs: dict | None, n: int) -> list[str | None]:
    """One caption per image for the gallery: ``encodings`` ``{input name: MetadataEncoding}``,
    ``inputs`` ``{input name: (N, W) or (1, W) vectors}`` as fed to the model; ``[None] * n``
    for a model without encoded metadata."""
    if not encodings or not inputs:
        return [None] * n
    per_input = []
    for name, encoding in encodings.items():
        if name not in inputs:
            continue
        rows = np.asarray(inputs[name], np.float32).reshape(-1, encoding.width)
        rows = np.broadcast_to(rows, (n, encoding.width)) if len(rows) == 1 else rows
        per_input.append([metadata_caption(encoding, row) for row in rows])
    if not per_input:
        return [None] * n
    return ["\n".join(parts) for parts in zip(*per_input, strict=True)]


# --- the report folder ---------------------------------------------------------------------


def classification_report_text(y_true, y_pred, classes) -> str:
    from sklearn.metrics import classification_report

    return classification_report(y_true, y_pred, labels=list(range(len(classes))),
                                 target_names=list(classes), digits=3, zero_division=0)


def write_report(out_dir, metrics: dict, y_true, probs, classes, history_csv=None,
                 gallery: dict | None = None, probs_uncalibrated=None, title: str = "") -> Path:
    """Write every report file to ``out_dir``; returns the path of ``report.html``.

    ``gallery``: ``{class name: [item, ...]}`` (see :func:`plot_gallery`), correct and wrong mixed.
    """
    from skinzoo.metrics import predicted_classes

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, no permission, read-only disk
        raise UsageError(f"cannot create the report folder {out}: {err.strerror or err}",
                         "pass --report DIR with a folder path that can be written") from None
    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    threshold = (metrics.get("binary") or {}).get("threshold")
    y_pred = predicted_classes(probs, threshold)
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "classification_report.txt",
                      classification_report_text(y_true, y_pred, classes))
    cm = np.asarray(metrics["confusion_matrix"])
    plots = {
        "Confusion matrix (counts)": plot_confusion(cm, classes, out / "confusion_counts.png"),
        "Confusion matrix (row-normalised)": plot_confusion(cm, classes, out / "confusion_normalised.png",
                                                            normalise=True),
        "ROC curves": plot_roc(y_true, probs, classes, out / "roc.png"),
        "Reliability diagram": plot_reliability(y_true, probs, out / "reliability.png", probs_uncalibrated),
    }
    curves = plot_history(history_csv, out / "training_curves.png")
    if curves:
        plots["Training curves"] = curves
    galleries = {}
    for name, items in (gallery or {}).items():
        path = plot_gallery(items, classes, out / f"gallery_{_safe(name)}.png",
                            f"{name}: correctly (green) and wrongly (red) classified, with Grad-CAM")
        if path:
            galleries[name] = path
    page = render_html(metrics, plots, galleries, title)
    write_text_atomic(out / "report.html", page)
    return out / "report.html"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
.banner{background:#b00020;color:#fff;padding:12px 16px;border-radius:6px;font-weight:600}
.banner li{font-weight:400}.note{background:#fff4d6;padding:8px 12px;border-radius:6px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:170px}
.card .v{font-size:26px;font-weight:700}.card .ci{color:#666;font-size:12px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}.bad{background:#fde0e0}img{max-width:100%}
"""


def render_html(metrics: dict, plots: dict, galleries: dict, title: str = "") -> str:
    """One self-contained HTML page: banner, headline cards with CIs, per-class table, plots."""
    e = html.escape
    ci = metrics.get("ci") or {}
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title or 'skinzoo report')}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{e(title or 'Evaluation report')}</h1>",
             f"<p>{metrics.get('n', 0)} images, split <b>{e(str(metrics.get('split', '')))}</b>, "
             f"{len(metrics.get('classes', []))} classes. Source: {e(str(metrics.get('source', '')))}</p>"]
    warnings = metrics.get("collapse_warnings") or []
    if warnings:
        parts.append("<div class='banner'>Warning: the model looks collapsed or badly imbalanced<ul>"
                     + "".join(f"<li>{e(w)}</li>" for w in warnings) + "</ul></div>")
    for note in metrics.get("notes") or []:
        parts.append(f"<p class='note'>{e(note)}</p>")
    parts.append("<h2>Headline metrics (95% bootstrap CI)</h2><div class='cards'>")
    for key, label in HEADLINE_NAMES.items():
        interval = ci.get(key)
        ci_text = f"95% CI {interval[0]:.3f} – {interval[1]:.3f}" if interval else "&nbsp;"
        parts.append(f"<div class='card'><div>{label}</div><div class='v'>{_fmt(metrics.get(key))}</div>"
                     f"<div class='ci'>{ci_text}</div></div>")
    parts.append("</div>")
    extra = [("Cohen's kappa", metrics.get("cohen_kappa")), ("Top-2 accuracy", metrics.get("top2_accuracy")),
             ("ECE", metrics.get("ece")), ("Weighted F1", metrics.get("weighted_f1"))]
    parts.append("<p>" + " · ".join(f"{k}: <b>{_fmt(v)}</b>" for k, v in extra) + "</p>")
    binary = metrics.get("binary")
    if binary:
        parts.append("<h2>Binary decision</h2><p>threshold "
                     f"<b>{binary['threshold']:.3f}</b> ({e(str(binary.get('threshold_method', '')))})</p><table>"
                     "<tr><th>sensitivity</th><th>specificity</th><th>PPV</th><th>NPV</th><th>ROC-AUC</th>"
                     "<th>PR-AUC</th></tr><tr>"
                     + "".join(f"<td>{_fmt(binary.get(k))}</td>" for k in
                               ("sensitivity", "specificity", "ppv", "npv", "roc_auc", "pr_auc"))
                     + "</tr></table>")
    if metrics.get("tta"):
        t = metrics["tta"]
        parts.append(f"<p>Test-time augmentation: {t['views']} views; balanced accuracy "
                     f"{_fmt(t['balanced_accuracy_without'])} → {_fmt(t['balanced_accuracy_with'])} "
                     f"(gain {t['balanced_accuracy_gain']:+.3f}).</p>")
    if metrics.get("calibration"):
        c = metrics["calibration"]
        parts.append(f"<p>Temperature scaling T = {c['temperature']:.3f}: ECE {_fmt(c['ece_before'])} → "
                     f"{_fmt(c['ece_after'])}.</p>")
    parts.append("<h2>Per class</h2><table><tr><th>class</th><th>support</th><th>predicted</th>"
                 "<th>precision</th><th>recall</th><th>F1</th><th>AUC</th></tr>")
    for name, row in (metrics.get("per_class") or {}).items():
        cls = " class='bad'" if row["support"] and row["recall"] < 0.1 else ""
        parts.append(f"<tr{cls}><td>{e(name)}</td><td>{row['support']}</td><td>{row.get('predicted', '')}</td>"
                     f"<td>{_fmt(row['precision'])}</td><td>{_fmt(row['recall'])}</td>"
                     f"<td>{_fmt(row['f1'])}</td><td>{_fmt(row.get('auc'))}</td></tr>")
    parts.append("</table>")
    if metrics.get("subgroups"):
        parts.append(subgroups_html(metrics["subgroups"]))
    if metrics.get("auc_skipped_classes"):
        parts.append("<p class='note'>AUC not defined (class absent from the labels): "
                     + e(", ".join(metrics["auc_skipped_classes"])) + "</p>")
    for label, path in plots.items():
        parts.append(f"<h2>{e(label)}</h2><img alt='{e(label)}' src='{_data_uri(path)}'>")
    if galleries:
        parts.append("<h2>Examples with Grad-CAM</h2>")
        for name, path in galleries.items():
            parts.append(f"<h3>{e(name)}</h3><img alt='gallery {e(name)}' src='{_data_uri(path)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
