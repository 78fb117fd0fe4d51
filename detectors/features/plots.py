"""PNG figures for the feature evaluations (matplotlib, Agg): ROC per head, feature scatters, matrices.

Each figure is rendered to memory and written with ``atomic_write_bytes``, so an
interrupted run never leaves half a PNG.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from explainer.safe_io import atomic_write_bytes  # noqa: E402

# t-SNE is quadratic-ish in points: plot a seeded sample of at most this many.
MAX_SCATTER_POINTS = 2000


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path) -> Path:
    """``curves``: label -> (y_true 0/1, score of the positive class)."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, (y, s) in curves.items():
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        from sklearn.metrics import auc

        ax.plot(fpr, tpr, label=f"{label} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def scatter_plots(x: np.ndarray, y: np.ndarray, classes: list[str], title: str, out_dir: Path, stem: str, seed: int = 0) -> list[Path]:
    """PCA and t-SNE of the features, coloured by class. Returns the PNG paths written."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    if len(x) > MAX_SCATTER_POINTS:
        keep = rng.choice(len(x), MAX_SCATTER_POINTS, replace=False)
        x, y = x[keep], y[keep]
    written = []
    if len(x) < 3:
        return written
    pca = PCA(n_components=2, random_state=seed).fit_transform(x)
    written.append(_scatter(pca, y, classes, f"PCA: {title}", out_dir / f"{stem}-pca.png"))
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    written.append(_scatter(tsne, y, classes, f"t-SNE: {title}", out_dir / f"{stem}-tsne.png"))
    return written


def _scatter(z: np.ndarray, y: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for k, name in enumerate(classes):
        m = y == k
        ax.scatter(z[m, 0], z[m, 1], s=8, alpha=0.7, label=f"{name} ({int(m.sum())})")
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(fontsize=8)
    return _save(fig, path)


def matrix_plot(matrix: np.ndarray, rows: list[str], cols: list[str], title: str, path: Path,
                xlabel: str = "", ylabel: str = "", fmt: str = "{:.3f}") -> Path:
    """A labelled heatmap (confusion matrix, train x test transforms, cross-dataset)."""
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 2.5, 0.8 * len(rows) + 2))
    im = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    finite = matrix[np.isfinite(matrix)]
    mid = (finite.max() + finite.min()) / 2 if finite.size else 0
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = matrix[i, j]
            ax.text(j, i, "n/a" if not np.isfinite(v) else fmt.format(v), ha="center", va="center",
                    color="black" if np.isfinite(v) and v > mid else "white", fontsize=8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)
