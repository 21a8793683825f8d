"""Small figures for the notebooks: image grids with captions, bar charts, training curves.

Figures are sized to stay small as stored PNGs (a notebook stays well under 2 MB). Call
:func:`small_figures` once in a notebook's Settings cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from mmlab.train import History


def small_figures(dpi: int = 72) -> None:
    """Set matplotlib's figure DPI so stored PNGs stay small (call in the Settings cell)."""
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "font.size": 9})


def _to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    a = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if a.ndim != 3:
        raise ValueError(f"each image must be (C, H, W), got shape {a.shape}")
    a = np.transpose(a, (1, 2, 0))
    return np.clip(a[:, :, 0] if a.shape[2] == 1 else a, 0.0, 1.0)


def image_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    captions: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 1.2,
    title: str | None = None,
    colors: Sequence[str] | None = None,
) -> plt.Figure:
    """Show images (N, C, H, W) in [0, 1] in a grid, each with an optional caption underneath.

    Args:
        images: a tensor (N, C, H, W) or a sequence of (C, H, W) tensors.
        captions: N strings shown under the images.
        ncols: images per row.
        size: inches per image.
        colors: optional N caption colours (e.g. green for right, red for wrong).
    """
    n = len(images)
    if n == 0:
        raise ValueError("images must hold at least one image")
    if captions is not None and len(captions) != n:
        raise ValueError(f"captions must hold one string per image ({n}), got {len(captions)}")
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + 0.35) * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_to_hwc(images[i]), cmap="gray", interpolation="nearest")
            if captions is not None:
                ax.set_title(captions[i], fontsize=7, color="black" if colors is None else colors[i], y=-0.22)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def bar(values: Mapping[str, float], title: str | None = None, ylabel: str | None = None,
        ylim: tuple[float, float] | None = None, reference: float | None = None) -> plt.Figure:
    """A bar chart of name -> value, each bar labelled; ``reference`` draws a dashed line (e.g. chance)."""
    if not values:
        raise ValueError("values must hold at least one entry")
    fig, ax = plt.subplots(figsize=(max(3.0, 0.7 * len(values) + 1), 2.6))
    names, heights = list(values), [float(v) for v in values.values()]
    bars = ax.bar(names, heights, color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
    if reference is not None:
        ax.axhline(reference, ls="--", c="gray", lw=1)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title or "")
    ax.set_ylabel(ylabel or "")
    ax.tick_params(axis="x", labelrotation=30 if len(values) > 4 else 0, labelsize=8)
    fig.tight_layout()
    return fig


def training_curves(history: History, metrics: Sequence[str] = (), title: str | None = None,
                    smooth: int = 20) -> plt.Figure:
    """Training loss (moving average over ``smooth`` steps) and the named evaluation metrics by step."""
    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(3.2 * (1 + len(metrics)), 2.4), squeeze=False)
    losses = np.asarray(history.losses)
    k = max(1, min(smooth, len(losses)))
    ax = axes[0, 0]
    ax.plot(history.steps[k - 1:], np.convolve(losses, np.ones(k) / k, mode="valid"))
    ax.set_xlabel("step")
    ax.set_title("training loss")
    for ax, name in zip(axes[0, 1:], metrics):
        steps, vals = history.metric(name)
        ax.plot(steps, vals, marker=".")
        ax.set_xlabel("step")
        ax.set_title(name)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def diagram(boxes: Mapping[str, tuple[float, float, str]], arrows: Sequence[tuple[str, str, str]] = (),
            title: str | None = None, size: tuple[float, float] = (9.0, 3.0), frozen: Sequence[str] = ()) -> plt.Figure:
    """An architecture diagram: named boxes at (x, y) in [0, 1]² with their text, and labelled arrows between them.

    ``arrows``: (from box, to box, label); ``frozen``: boxes drawn grey (frozen weights). Returns the figure.
    """
    unknown = [name for a, b, _ in arrows for name in (a, b) if name not in boxes]
    if unknown:
        raise ValueError(f"arrows name boxes that do not exist: {sorted(set(unknown))}")
    fig, ax = plt.subplots(figsize=size)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.axis("off")
    artists = {}
    for name, (x, y, text) in boxes.items():
        face = "#dddddd" if name in frozen else "#dbe9f6"
        artists[name] = ax.text(x, y, text, ha="center", va="center", fontsize=8, zorder=3,
                                bbox={"boxstyle": "round,pad=0.4", "facecolor": face, "edgecolor": "#555555"})
    fig.canvas.draw()  # the boxes' sizes, so that arrows end at their edges
    for a, b, label in arrows:
        (xa, ya, _), (xb, yb, _) = boxes[a], boxes[b]
        back = xa > xb and abs(ya - yb) < 0.05  # a step back along a row (a loop): curve it below the row
        ax.annotate("", xy=(xb, yb), xytext=(xa, ya), zorder=2,
                    arrowprops={"arrowstyle": "-|>", "color": "#333333", "shrinkA": 2, "shrinkB": 2,
                                "patchA": artists[a].get_bbox_patch(), "patchB": artists[b].get_bbox_patch(),
                                "connectionstyle": "arc3,rad=-0.5" if back else "arc3"})
        if label:
            ax.text((xa + xb) / 2, (ya + yb) / 2 + (-0.2 if back else 0.04), label, ha="center",
                    va="top" if back else "bottom", fontsize=7, color="#333333")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
