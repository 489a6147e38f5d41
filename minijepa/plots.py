"""Figures shared by the training script, `make demo` and the notebooks (matplotlib, saved as PNG)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt  # without a display matplotlib falls back to Agg by itself
import torch
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgb
from matplotlib.patches import Circle, FancyBboxPatch, Patch
from matplotlib.patheffects import withStroke

from .masks import indices_to_mask

# 0 = unused, 1 = context, 2.. = target blocks (up to 7)
MASK_COLORS = ["#ffffff", "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
UNUSED_WASH = 0.75  # opacity of the white laid over image patches in neither the context nor a target


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
    ax[3].set(title="collapse signals (target encoder)", xlabel="step", ylabel="effective rank", ylim=(0, None))
    ax3b = ax[3].twinx()
    ax3b.plot([r["step"] for r in logged], [r["feat_std"] for r in logged], color="C1")
    ax3b.set_ylim(0, None)  # both from 0: collapse is a fall towards 0 (std) or towards 1 (rank)
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


def block_outline(mask: torch.Tensor) -> list[list[tuple[float, float]]]:
    """The border of the True cells of an (H, W) boolean mask, as line segments in patch units (cell (r, c) spans
    x in c +- 0.5, y in r +- 0.5, as `imshow` draws it)."""
    H, W = mask.shape
    segments = []
    for r, c in mask.nonzero().tolist():
        x0, x1, y0, y1 = c - 0.5, c + 0.5, r - 0.5, r + 0.5
        for (dr, dc), edge in [((-1, 0), [(x0, y0), (x1, y0)]), ((1, 0), [(x0, y1), (x1, y1)]),
                               ((0, -1), [(x0, y0), (x0, y1)]), ((0, 1), [(x1, y0), (x1, y1)])]:
            if not (0 <= r + dr < H and 0 <= c + dc < W and mask[r + dr, c + dc]):
                segments.append(edge)
    return segments


def draw_masks(ax: plt.Axes, image: torch.Tensor | None, context: torch.Tensor, targets: list[torch.Tensor],
               grid_size: tuple[int, int], alpha: float = 0.3) -> None:
    """One image with its masks (paper Fig. 4): context patches tinted blue, patches in neither the context nor a
    target washed out white, each target block filled (`alpha`) and outlined in its own colour (MASK_COLORS), so
    overlapping blocks stay visible. context and targets are index vectors (K,) for this image; without an image,
    the bare grid. `mask_legend` explains the colours."""
    H, W = grid_size
    extent = (-0.5, W - 0.5, H - 0.5, -0.5)  # one unit per patch
    if image is not None:
        show_image(ax, image)
        ax.images[-1].set_extent(extent)
    else:
        ax.set_xticks(torch.arange(W + 1).sub(0.5).tolist(), minor=True)
        ax.set_yticks(torch.arange(H + 1).sub(0.5).tolist(), minor=True)
        ax.grid(which="minor", color="0.85", lw=0.5)
        ax.tick_params(which="minor", length=0)

    def as_grid(index: torch.Tensor) -> torch.Tensor:  # (K,) patch indices -> (H, W) bool
        return indices_to_mask(index[None].cpu(), H * W)[0].view(H, W)

    context_mask, target_masks = as_grid(context), [as_grid(t) for t in targets]
    unused = ~context_mask
    for mask in target_masks:
        unused &= ~mask
    layer = torch.zeros(H, W, 4)  # RGBA over the image: washed-out unused patches, blue-tinted context
    layer[unused] = torch.tensor([1.0, 1.0, 1.0, UNUSED_WASH if image is not None else 0.0])
    layer[context_mask] = torch.tensor([*to_rgb(MASK_COLORS[1]), 0.45 if image is not None else 0.7])
    ax.imshow(layer.numpy(), extent=extent, interpolation="nearest")
    for i, mask in enumerate(target_masks):
        color = MASK_COLORS[2 + i % 7]
        fill = torch.zeros(H, W, 4)
        fill[mask] = torch.tensor([*to_rgb(color), alpha if image is not None else 0.5])
        ax.imshow(fill.numpy(), extent=extent, interpolation="nearest")
        ax.add_collection(LineCollection(block_outline(mask), colors=color, linewidths=2,
                                         path_effects=[withStroke(linewidth=3.5, foreground="white")]))
    ax.set(xlim=(-0.5, W - 0.5), ylim=(H - 0.5, -0.5), xticks=[], yticks=[])


def mask_legend(where: plt.Figure | plt.Axes, n_targets: int, fontsize: float = 9, on_image: bool = True) -> None:
    """A legend for `draw_masks`' colours. On a Figure (made with layout="constrained") it goes below the panels;
    on an Axes, to its right. `on_image`: the masks were drawn over images, where a patch that is not used is washed
    out (a dark one turns light grey); on a bare grid it stays white."""
    handles = [Patch(fc=MASK_COLORS[1], alpha=0.6, label="context (seen)"),  # not used: as over a black patch
               Patch(fc=str(UNUSED_WASH) if on_image else "white", ec="0.6", label="not used (washed out)")]
    handles += [Patch(fc=MASK_COLORS[2 + i % 7], alpha=0.5, ec=MASK_COLORS[2 + i % 7], lw=2, label=f"target {i + 1}")
                for i in range(n_targets)]
    if isinstance(where, plt.Axes):
        where.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=fontsize, frameon=False)
    else:  # one row if the figure is wide enough, else two
        ncol = len(handles) if where.get_figwidth() >= 1.3 * len(handles) else (len(handles) + 1) // 2
        where.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=fontsize, frameon=False,
                     handlelength=1.5, columnspacing=1.2)


def plot_masks(images: torch.Tensor | None, context: torch.Tensor, targets: list[torch.Tensor],
               grid_size: tuple[int, int], n: int = 3, out: str | Path | None = None,
               title: str | None = None, dpi: float = 100) -> plt.Figure:
    """The first n images of a batch with their masks, in one row, with a colour legend. Block sizes are shared by
    the batch, so the title gives them once."""
    n = min(n, context.shape[0])
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.9), squeeze=False, dpi=dpi, layout="constrained")
    for i, ax in enumerate(axes[0]):
        draw_masks(ax, None if images is None else images[i], context[i], [t[i] for t in targets], grid_size)
    sizes = f"context {context.shape[1]} patches, {len(targets)} target block(s) of {targets[0].shape[1]}"
    fig.suptitle(f"{title}\n{sizes}" if title else sizes, fontsize=10)
    mask_legend(fig, len(targets), on_image=images is not None)
    if out is not None:
        fig.savefig(out, dpi=dpi)
        plt.close(fig)
    return fig


ARCHITECTURE_COLORS = dict(input="#e8e8e8", encoder=MASK_COLORS[1], target="#8c8c8c", predictor=MASK_COLORS[2],
                           decoder=MASK_COLORS[4], energy=MASK_COLORS[3])


def _box(ax: plt.Axes, xy: tuple[float, float], text: str, kind: str, w: float = 2.8, h: float = 1.1) -> None:
    x, y = xy  # a rounded box centred at xy; dark boxes get white text
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.08,rounding_size=0.25",
                                fc=ARCHITECTURE_COLORS[kind], ec="black", lw=1.2))
    ax.text(x, y, text, ha="center", va="center", fontsize=10, color="black" if kind == "input" else "white")


def _arrow(ax: plt.Axes, a: tuple[float, float], b: tuple[float, float], label: str | None = None, side: int = 1,
           dashed: bool = False) -> None:
    ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="-|>", lw=1.4, color="black", shrinkA=0, shrinkB=0,
                                                     linestyle="--" if dashed else "-"))
    if label:  # beside the arrow's middle, on the left (side=-1) or the right
        ax.text((a[0] + b[0]) / 2 + 0.25 * side, (a[1] + b[1]) / 2, label, ha="left" if side > 0 else "right",
                va="center", fontsize=11)


def _latent_z(ax: plt.Axes, xy: tuple[float, float], r: float = 0.42) -> None:
    ax.add_patch(Circle(xy, r, fc="white", ec="black", lw=1.2))
    ax.text(*xy, "$z$", ha="center", va="center", fontsize=11)


def draw_architecture(ax: plt.Axes, kind: str) -> None:
    """One energy function E(x, y) drawn bottom-up (inputs, networks, the distance D on top): the paper's Fig. 2
    ("jea", "generative", "jepa") and I-JEPA itself after Fig. 3 ("ijepa")."""
    ax.set(xlim=(0, 10), ylim=(0, 10.4))
    ax.axis("off")
    L, R = 2.6, 7.4  # left column (the x side), right column (the y side)
    if kind == "ijepa":
        _box(ax, (L, 0.9), "context block $x$", "input", w=3.0)
        _box(ax, (R, 0.9), "whole image", "input", w=3.0)
        _box(ax, (L, 3.4), "context encoder\n(ViT, trained)", "encoder", w=3.2, h=1.3)
        _box(ax, (R, 3.4), "target encoder\n(EMA, no gradient)", "target", w=3.2, h=1.3)
        _box(ax, (R, 6.0), "keep target\nblocks", "input", w=2.6)
        _box(ax, (L, 6.0), "predictor\n(narrow ViT)", "predictor", w=3.2, h=1.3)
        _box(ax, (5, 9.0), r"$\frac{1}{M}\sum_i \|\hat s_{y}(i) - s_{y}(i)\|_2^2$", "energy", w=4.4, h=1.2)
        _arrow(ax, (L, 1.5), (L, 2.75))
        _arrow(ax, (R, 1.5), (R, 2.75))
        _arrow(ax, (L, 4.05), (L, 5.35), "$s_x$", side=-1)
        _arrow(ax, (R, 4.05), (R, 5.45), "all patches")
        _arrow(ax, (L, 6.65), (3.9, 8.4), r"$\hat s_y$", side=-1)
        _arrow(ax, (R, 6.55), (6.1, 8.4), "$s_y$")
        _latent_z(ax, (0.45, 7.6))
        _arrow(ax, (0.75, 7.3), (1.6, 6.65))
        ax.text(0.45, 8.25, "mask tokens +\ntarget positions", ha="center", va="bottom", fontsize=9)
        _arrow(ax, (4.3, 3.4), (5.7, 3.4), dashed=True)
        ax.text(5, 3.75, "EMA", ha="center", va="bottom", fontsize=9)
        ax.set_title("I-JEPA (after Fig. 3)", fontsize=11)
        return
    _box(ax, (L, 0.9), "$x$", "input", w=1.4)
    _box(ax, (R, 0.9), "$y$", "input", w=1.4)
    _box(ax, (L, 3.4), "x-encoder", "encoder")
    _arrow(ax, (L, 1.5), (L, 2.8))
    if kind in ("jea", "jepa"):  # y has an encoder too: trained (JEA) or a slowly moving copy (JEPA, grey)
        _box(ax, (R, 3.4), "y-encoder", "encoder" if kind == "jea" else "target")
        _arrow(ax, (R, 1.5), (R, 2.8))
    if kind in ("generative", "jepa"):  # a network, told by z what to produce, between s_x and the energy
        network = "decoder" if kind == "generative" else "predictor"
        _box(ax, (L, 6.0), network, network)
        _latent_z(ax, (0.55, 6.0))
        _arrow(ax, (0.97, 6.0), (L - 1.45, 6.0))
        _arrow(ax, (L, 4.0), (L, 5.4), "$s_x$", side=-1)
    energy, left, right = {"jea": ("$D(s_x, s_y)$", "$s_x$", "$s_y$"),
                           "generative": (r"$D(\hat y, y)$", r"$\hat y$", "pixels $y$"),
                           "jepa": (r"$D(\hat s_y, s_y)$", r"$\hat s_y$", "$s_y$")}[kind]
    _box(ax, (5, 8.6), energy, "energy", w=3.4)
    _arrow(ax, (L, 4.0 if kind == "jea" else 6.6), (4.1, 8.0), left, side=-1)
    _arrow(ax, (R, 1.5 if kind == "generative" else 4.0), (5.9, 8.0), right)
    ax.set_title({"jea": "(a) Joint-Embedding Architecture", "generative": "(b) Generative Architecture",
                  "jepa": "(c) Joint-Embedding Predictive Architecture"}[kind], fontsize=11)


DIAL_STYLE = {"latent": ("I-JEPA (latent targets)", "C0", "-", "o"), "pixels": ("pixel targets", "C1", "-", "s"),
              "random_init": ("random init", "C7", "--", "^"), "raw_pixels": ("raw pixels", "C2", ":", "v")}
DIAL_AXIS = {"noise": "noise std (pixel scale [0, 1])", "clutter": "background contrast"}


def plot_dial(rows: list[dict], out: str | Path | None = None,
              metrics: tuple[str, ...] = ("knn", "linear_10_per_class")) -> plt.Figure:
    """The distractor study's dial figure: one row of panels per distractor kind, one column per read-out; x = the
    distractor's strength (0 = clean images, shared by both kinds), y = test accuracy on images corrupted the same
    way; a line per encoder, the mean over seeds with the seeds' range as error bars (none where one seed); an encoder
    without the read-out (raw pixels are not fine-tuned) is left out of that panel. `rows`: studies.dial_rows."""
    kinds = [k for k in DIAL_AXIS if any(r["kind"] == k for r in rows)]
    titles = {"knn": "kNN (k = 20)", "linear_10_per_class": "linear probe, 10 labels per class",
              "linear": "linear probe, all labels", "linear_1pct": "linear probe, 1 % of labels",
              "finetune_1pct": "fine-tuned on 1 % of labels"}
    fig, axes = plt.subplots(len(kinds), len(metrics), figsize=(5.2 * len(metrics), 3.6 * len(kinds)),
                             squeeze=False)
    for ax_row, kind in zip(axes, kinds):
        for ax, metric in zip(ax_row, metrics):
            for encoder, (label, color, style, marker) in DIAL_STYLE.items():
                mine = [r for r in rows if r["encoder"] == encoder and r["kind"] in (kind, "none")
                        and r.get(metric) is not None]
                points = sorted({r["strength"] for r in mine})
                if not points:
                    continue
                values = [[100 * r[metric] for r in mine if r["strength"] == x] for x in points]
                mean = [sum(v) / len(v) for v in values]
                lo, hi = min(len(v) for v in values), max(len(v) for v in values)
                err = [[m - min(v) if len(v) > 1 else float("nan") for m, v in zip(mean, values)],
                       [max(v) - m if len(v) > 1 else float("nan") for m, v in zip(mean, values)]]  # none for 1 seed
                seeds = f"{hi} seed{'s' if hi > 1 else ''}" if lo == hi else f"{lo}-{hi} seeds"
                ax.errorbar(points, mean, yerr=err if hi > 1 else None, color=color, ls=style, marker=marker,
                            ms=5, capsize=3, label=f"{label} ({seeds})")
            ax.set(xlabel=DIAL_AXIS[kind], ylabel="test accuracy (%)", title=f"{kind}: {titles[metric]}")
            ax.grid(alpha=0.3)
    for ax_row in axes:  # per kind: its seeds may differ from the other kind's
        ax_row[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.suptitle("Turning up unpredictable pixel detail (error bars: range over seeds)", fontsize=11)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return fig
