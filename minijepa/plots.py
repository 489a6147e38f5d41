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
