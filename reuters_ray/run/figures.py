"""The report's figures, drawn with matplotlib (Agg) from a run folder's files into PNGs beside the reports:
confusion_matrix.png, f1_vs_support.png, training_curves.png. No Ray here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reuters_ray import rows as R
from reuters_ray.config import monitor_key


def save_png(fig, path) -> None:
    """A figure as a PNG into `path` (a file or a binary stream), closed after."""
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    pyplot().close(fig)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(cm: np.ndarray, names: list[str], path: Path, predictor: str) -> None:
    """Heatmap of the confusion matrix: colour = share of the true class, numbers = counts."""
    plt = pyplot()
    k = len(names)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.42 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_title(f"Confusion matrix of the {predictor} on the test split")
    save_png(fig, path)


def f1_support_figure(per_class: list[dict], baseline: list[dict] | None, path: Path, predictor: str) -> None:
    """Per-class F1 against test support (log scale), the class names beside the points."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    support = [max(c["support"], 1) for c in per_class]
    ax.scatter(support, [c["f1"] for c in per_class], color="tab:blue", label=predictor, zorder=3)
    if baseline:
        ax.scatter(
            support,
            [c["f1"] for c in baseline],
            color="tab:orange",
            marker="x",
            label="TF-IDF + SVM baseline",
            zorder=2,
        )
    for c, x in zip(per_class, support):
        ax.annotate(c["name"], (x, c["f1"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("test examples of the class (log scale)")
    ax.set_ylabel("F1")
    ax.set_title("Per-class F1 against support")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save_png(fig, path)


def monitor_of(config: dict[str, Any]) -> str:
    """The key of the validation figure a run's folds stopped on (RunConfig.monitor()), from its config.yaml."""

    return monitor_key(config["train"].get("monitor"), config["data"].get("task"))


def curves_figure(history: pd.DataFrame, path: Path, monitor: str = "f1_weighted") -> None:
    """Training and validation loss, and the monitored validation figure (monitor_of), per epoch; one colour per
    fold."""
    key, name = R.VAL + monitor, R.NAMES[monitor]
    if key not in history and key == R.VAL_SUBSET_ACCURACY:  # a multi-label run's rows before it had its own key
        key = R.VAL_ACCURACY
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, h in history.groupby(R.FOLD):
        h = h.drop_duplicates(R.EPOCH, keep="last").sort_values(R.EPOCH)  # an epoch retrained after a restart
        color = f"C{int(k)}"
        a.plot(h[R.EPOCH], h[R.TRAIN_LOSS], color=color, marker="o", ms=3, label=f"fold {k} train")
        a.plot(h[R.EPOCH], h[R.VAL_LOSS], color=color, ls="--", marker="o", ms=3, label=f"fold {k} val")
        b.plot(h[R.EPOCH], h[key], color=color, marker="o", ms=3, label=f"fold {k}")
        best = h.loc[h[key].idxmax()]
        b.scatter([best[R.EPOCH]], [best[key]], color=color, marker="*", s=140, zorder=3)
    a.set_title("Focal loss per epoch (solid: train, dashed: validation)")
    b.set_title(f"Validation {name} per epoch (star: best epoch)")
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    a.set_ylabel("loss")
    b.set_ylabel(name)
    save_png(fig, path)
