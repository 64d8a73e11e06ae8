"""Training curves (loss and the headline metrics per epoch) as one PNG."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from skinzoo.fileio import atomic_path

PANELS = (("loss", "loss"), ("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
          ("auc", "macro AUC"))


def plot_history(history: pd.DataFrame, out_png: str | Path) -> Path:
    """One panel per metric, train and validation side by side, stage changes marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(key, title) for key, title in PANELS if key in history or f"val_{key}" in history]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.4))
    axes = list(axes) if len(panels) > 1 else [axes]
    epochs = history["epoch"] + 1 if "epoch" in history else pd.Series(range(1, len(history) + 1))
    for ax, (key, title) in zip(axes, panels, strict=False):
        if key in history:
            ax.plot(epochs, history[key], marker="o", ms=3, label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", ms=3, label="validation")
        if "stage" in history and history["stage"].nunique() > 1:
            change = epochs[history["stage"].ne(history["stage"].shift()).to_numpy()].iloc[1:]
            for x in change:
                ax.axvline(x - 0.5, color="grey", ls="--", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out_png
