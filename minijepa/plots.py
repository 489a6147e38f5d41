"""Figures shared by the training script, `make demo` and the notebooks (matplotlib, saved as PNG)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt  # without a display matplotlib falls back to Agg by itself
import torch
from matplotlib.colors import ListedColormap

from .masks import mask_grid

# 0 = unused, 1 = context, 2.. = target blocks
MASK_COLORS = ["#ffffff", "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(metrics: str | Path | list[dict], out: str | Path | None = None) -> plt.Figure:
    """Loss, schedules, gradient norm and collapse signals of a run (metrics.jsonl rows)."""
    rows = read_metrics(metrics) if isinstance(metrics, (str, Path)) else metrics
    step = [r["step"] for r in rows]
    fig, ax = plt.subplots(1, 4, figsize=(16, 3.2))
    if "reg" in rows[0]:  # a regularised run: the prediction loss and the regulariser, each on its own
        ax[0].plot(step, [r["pred_loss"] for r in rows], lw=0.8, label="prediction loss")
        ax[0].plot(step, [r["reg"] for r in rows], lw=0.8, label="regulariser (unweighted)")
        ax[0].legend(fontsize=8)
    else:
        ax[0].plot(step, [r["loss"] for r in rows], lw=0.8)
    ax[0].set(title="loss", xlabel="step", yscale="log")
    ax[1].plot(step, [r["lr"] for r in rows], label="lr")
    ax[1].set(title="learning rate / EMA momentum", xlabel="step")
    ax1b = ax[1].twinx()
    ax1b.plot(step, [r["momentum"] for r in rows], color="C1", label="momentum")
    ax1b.set_ylabel("momentum", color="C1")
    ax[2].plot(step, [r["grad_norm"] for r in rows], lw=0.8)
    ax[2].set(title="gradient norm", xlabel="step", yscale="log")
    logged = [r for r in rows if "erank" in r]
    ax[3].plot([r["step"] for r in logged], [r["erank"] for r in logged], label="effective rank")
    ax[3].set(title="collapse signals (target encoder)", xlabel="step", ylabel="effective rank")
    ax3b = ax[3].twinx()
    ax3b.plot([r["step"] for r in logged], [r["feat_std"] for r in logged], color="C1")
    ax3b.set_ylabel("per-dim std", color="C1")
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=100)
        plt.close(fig)
    return fig


def show_image(ax: plt.Axes, image: torch.Tensor) -> None:
    """Draw a (C, H, W) image (uint8 or float, any range) on `ax`."""
    img = image.detach().float().cpu()
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-8)
    ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if img.shape[0] == 1 else None)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_masks(ax: plt.Axes, image: torch.Tensor | None, context: torch.Tensor, targets: list[torch.Tensor],
               grid_size: tuple[int, int], alpha: float = 0.55) -> None:
    """One image with its context (blue) and target blocks (other colours) painted over it; context and targets
    are index vectors (K,) for this image. Without an image, the mask grid alone."""
    labels = mask_grid(context[None], [t[None] for t in targets], grid_size)[0]  # (H, W)
    cmap = ListedColormap(MASK_COLORS[:2 + len(targets)])
    extent = None
    if image is not None:
        show_image(ax, image)
        extent = (-0.5, image.shape[-1] - 0.5, image.shape[-2] - 0.5, -0.5)
    overlay = torch.where(labels == 0, float("nan"), labels.float()) if image is not None else labels.float()
    ax.imshow(overlay.numpy(), cmap=cmap, vmin=0, vmax=1 + len(targets), alpha=alpha if image is not None else 1.0,
              extent=extent, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_masks(images: torch.Tensor | None, context: torch.Tensor, targets: list[torch.Tensor],
               grid_size: tuple[int, int], n: int = 4, out: str | Path | None = None,
               title: str | None = None) -> plt.Figure:
    """The first n images of a batch with their masks (one row: image, then context + targets)."""
    n = min(n, context.shape[0])
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8), squeeze=False)
    for i, ax in enumerate(axes[0]):
        draw_masks(ax, None if images is None else images[i], context[i], [t[i] for t in targets], grid_size)
        ax.set_title(f"context {context.shape[1]}, targets {len(targets)}x{targets[0].shape[1]}", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=100)
        plt.close(fig)
    return fig

DIAL_STYLE = {"latent": ("I-JEPA (latent targets)", "C0", "-", "o"), "pixels": ("pixel targets", "C1", "-", "s"),
              "random_init": ("random init", "C7", "--", "^"), "raw_pixels": ("raw pixels", "C2", ":", "v")}
DIAL_AXIS = {"noise": "noise std (pixel scale [0, 1])", "clutter": "background contrast"}


def plot_dial(rows: list[dict], out: str | Path | None = None,
              metrics: tuple[str, ...] = ("knn", "linear_10_per_class")) -> plt.Figure:
    """The distractor study's dial figure: one row of panels per distractor kind, one column per read-out; x = the
    distractor's strength (0 = clean images, shared by both kinds), y = test accuracy on images corrupted the same
    way; a line per encoder, the mean over seeds with the seeds' range as error bars. `rows`: study.dial_rows."""
    kinds = [k for k in DIAL_AXIS if any(r["kind"] == k for r in rows)]
    titles = {"knn": "kNN (k = 20)", "linear_10_per_class": "linear probe, 10 labels per class",
              "linear": "linear probe, all labels", "linear_1pct": "linear probe, 1 % of labels"}
    fig, axes = plt.subplots(len(kinds), len(metrics), figsize=(5.2 * len(metrics), 3.6 * len(kinds)),
                             squeeze=False)
    for ax_row, kind in zip(axes, kinds):
        for ax, metric in zip(ax_row, metrics):
            for encoder, (label, color, style, marker) in DIAL_STYLE.items():
                points = sorted({r["strength"] for r in rows if r["encoder"] == encoder and r["kind"] in (kind, "none")})
                if not points:
                    continue
                values = [[100 * r[metric] for r in rows if r["encoder"] == encoder and r["strength"] == x
                           and r["kind"] in (kind, "none")] for x in points]
                mean = [sum(v) / len(v) for v in values]
                err = [[m - min(v) for m, v in zip(mean, values)], [max(v) - m for m, v in zip(mean, values)]]
                seeds = max(len(v) for v in values)
                ax.errorbar(points, mean, yerr=err, color=color, ls=style, marker=marker, ms=5, capsize=3,
                            label=f"{label} ({seeds} seed{'s' if seeds > 1 else ''})")
            ax.set(xlabel=DIAL_AXIS[kind], ylabel="test accuracy (%)", title=f"{kind}: {titles[metric]}")
            ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=8, loc="best")
    fig.suptitle("Turning up unpredictable pixel detail (error bars: range over seeds)", fontsize=11)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return fig
