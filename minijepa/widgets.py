"""An interactive mask explorer for the notebooks: sliders over the masker's parameters, masks redrawn live.

The widget is a thin layer over two pure functions, which the tests and the notebooks also call directly:

    sample_masks(strategy, grid_size, ...) -> (context (B, Kc), [target (B, Kt_i), ...])   seeded, reproducible
    mask_stats(context, targets, grid_size) -> MaskStats(context_ratio, target_ratio, union_ratio, ...)

    explorer = mask_explorer(images)   # display it in a notebook; explorer.controls["n_targets"].value = 2 works too

ipywidgets is imported only when `mask_explorer` is called, so the package does not need it.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from matplotlib.figure import Figure

from .masks import Masker, Masks, indices_to_mask, make_masker
from .plots import draw_masks, mask_legend
from .vit import to_2tuple

# The explorer's options that each strategy uses, and the keyword its masker takes them under (the paper's
# comparison strategies have fixed sizes: random and block targets cover 0.6 of the grid, rasterized a quadrant).
OPTIONS: dict[str, dict[str, str]] = {
    "multiblock": {"n_targets": "n_targets", "target_scale": "target_scale", "target_aspect": "target_aspect",
                   "context_scale": "context_scale", "min_keep": "min_keep"},
    "random": {},
    "block": {"target_aspect": "aspect"},
    "rasterized": {},
}


def masker_from_options(strategy: str = "multiblock", grid_size: int | tuple[int, int] = 14, n_targets: int = 4,
                 target_scale: tuple[float, float] = (0.15, 0.2), target_aspect: tuple[float, float] = (0.75, 1.5),
                 context_scale: tuple[float, float] = (0.85, 1.0), min_keep: int = 4) -> Masker:
    """`make_masker(strategy, grid_size, ...)` given only the options that `strategy` uses (see OPTIONS); the
    others are ignored. Raises the masker's ValueError for impossible parameters."""
    if strategy not in OPTIONS:
        raise ValueError(f"unknown masking strategy {strategy!r}; choose one of {sorted(OPTIONS)}")
    given = dict(n_targets=n_targets, target_scale=tuple(target_scale), target_aspect=tuple(target_aspect),
                 context_scale=tuple(context_scale), min_keep=min_keep)
    return make_masker(strategy, grid_size, **{keyword: given[name] for name, keyword in OPTIONS[strategy].items()})


def sample_masks(strategy: str = "multiblock", grid_size: int | tuple[int, int] = 14, n_targets: int = 4,
                 target_scale: tuple[float, float] = (0.15, 0.2), target_aspect: tuple[float, float] = (0.75, 1.5),
                 context_scale: tuple[float, float] = (0.85, 1.0), seed: int = 0, batch_size: int = 4,
                 min_keep: int = 4) -> Masks:
    """One batch of masks from `masker_from_options(...)`, drawn with a generator seeded by `seed`: the same arguments
    always give the same (context (B, Kc), [target (B, Kt_i), ...])."""
    masker = masker_from_options(strategy, grid_size, n_targets, target_scale, target_aspect, context_scale, min_keep)
    return masker.sample(batch_size, torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class MaskStats:
    """Fractions of the N = H*W patches, averaged over a batch."""
    context_ratio: float  # context patches / N (every row of a batch has the same length)
    target_ratio: float  # patches in one target block / N, mean over the blocks
    union_ratio: float  # patches in any target block / N, mean over the images
    n_targets: int  # target blocks per image
    num_patches: int  # N

    def __str__(self) -> str:
        n = self.num_patches
        return (f"context {self.context_ratio:.3f} of the {n} patches ({round(self.context_ratio * n)}), "
                f"{self.n_targets} target block(s) of {self.target_ratio:.3f} each, "
                f"union of the targets {self.union_ratio:.3f}")


def mask_stats(context: torch.Tensor, targets: list[torch.Tensor], grid_size: int | tuple[int, int]) -> MaskStats:
    """Context ratio, mean target-block ratio and mean ratio of the union of the targets, for one batch of masks."""
    H, W = to_2tuple(grid_size)
    N = H * W
    union = indices_to_mask(torch.cat(targets, dim=1), N)  # (B, N): in at least one target block
    return MaskStats(context_ratio=context.shape[1] / N,
                     target_ratio=sum(t.shape[1] for t in targets) / (len(targets) * N),
                     union_ratio=int(union.sum()) / union.numel(), n_targets=len(targets), num_patches=N)


def draw_batch(images: torch.Tensor | None, context: torch.Tensor, targets: list[torch.Tensor],
               grid_size: int | tuple[int, int], n: int = 3, title: str | None = None, dpi: float = 100) -> Figure:
    """The first n masks of a batch (over the first n images, if given), with a colour legend, on a new matplotlib
    Figure (not pyplot's: nothing accumulates while a slider moves). In a notebook, `display(figure)` shows it as a
    PNG."""
    n = min(n, context.shape[0]) if images is None else min(n, context.shape[0], len(images))
    fig = Figure(figsize=(max(3.2 * n, 6.0), 3.8), dpi=dpi, layout="constrained")
    for i, ax in enumerate(fig.subplots(1, n, squeeze=False)[0]):
        draw_masks(ax, None if images is None else images[i], context[i], [t[i] for t in targets],
                   to_2tuple(grid_size))
    if title:
        fig.suptitle(title, fontsize=9)
    mask_legend(fig, len(targets))
    return fig


class MaskExplorer:
    """The explorer's state, for notebooks and tests alike. `widget` is the ipywidgets box (a notebook displays the
    explorer as that box); `controls` maps option names to their widgets; after each redraw `masker`, `result`
    (context, targets), `stats` and `figure` hold what is shown, or `error` the message of an impossible setting
    (then `result` and `figure` are None, and the output area is empty)."""

    def __init__(self, widget: Any, controls: dict[str, Any], output: Any, status: Any,
                 images: torch.Tensor | None, n_images: int):
        self.widget, self.controls, self.output, self.status = widget, controls, output, status
        self.images, self.n_images = images, n_images
        self.masker: Masker | None = None
        self.result: Masks | None = None
        self.stats: MaskStats | None = None
        self.figure: Figure | None = None
        self.error: str | None = None

    def options(self) -> dict[str, Any]:
        """The controls' current values, as keyword arguments of `sample_masks`. Ranges are rounded to the sliders'
        step of 0.01 (a slider can hold 0.15000000000000002 for 0.15)."""
        return {name: tuple(round(v, 2) for v in control.value) if isinstance(control.value, tuple) else control.value
                for name, control in self.controls.items()}

    def update(self, change: Any = None) -> None:
        """Resample and redraw (called whenever a control changes); impossible settings show their message."""
        from IPython.display import display

        opts = self.options()
        seed, batch_size, strategy = opts.pop("seed"), opts.pop("batch_size"), opts["strategy"]
        for name in ("n_targets", "target_scale", "target_aspect", "context_scale", "min_keep"):
            self.controls[name].disabled = name not in OPTIONS[strategy]  # grey out the options it does not use
        try:
            self.masker = masker_from_options(**opts)
            self.result = self.masker.sample(batch_size, torch.Generator().manual_seed(seed))
            self.error = None
        except (ValueError, RuntimeError) as e:  # impossible parameters (ValueError) or too many failed redraws
            self.masker, self.result, self.stats, self.figure, self.error = None, None, None, None, str(e)
            self.output.clear_output()  # now: clear_output(wait=True) would wait for an output that never comes
            self.status.value = f"<span style='color:#c44e52'><b>impossible:</b> {html.escape(self.error)}</span>"
            return
        context, targets = self.result
        H, W = self.masker.grid_size
        self.stats = mask_stats(context, targets, (H, W))
        self.status.value = f"{strategy} on a {H}x{W} grid, batch of {batch_size}: {html.escape(str(self.stats))}"
        self.figure = draw_batch(self.images, context, targets, (H, W), self.n_images)
        self.output.clear_output(wait=True)  # the old figure goes when the new one arrives: no flicker
        with self.output:
            display(self.figure)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:  # a notebook shows the explorer as its widget
        return self.widget._repr_mimebundle_(**kwargs)


def mask_explorer(images: torch.Tensor | Sequence[torch.Tensor] | None = None, strategy: str = "multiblock",
                  grid_size: int = 14, n_targets: int = 4, target_scale: tuple[float, float] = (0.15, 0.2),
                  target_aspect: tuple[float, float] = (0.75, 1.5), context_scale: tuple[float, float] = (0.85, 1.0),
                  seed: int = 0, n_images: int = 3, batch_size: int = 128, min_keep: int = 4) -> MaskExplorer:
    """Sliders for the masking strategy and its options; the masks of the first `n_images` images ((N, C, H, W) or a
    list of (C, H, W); None draws bare grids) are redrawn on every change, with statistics over a batch of
    `batch_size` masks (a slider too: contexts are cut to the shortest one in the batch, so the batch matters)."""
    import ipywidgets as w

    if images is not None and not isinstance(images, torch.Tensor):
        images = torch.stack(list(images))
    style = {"description_width": "110px"}
    layout = w.Layout(width="380px")
    ranged = dict(step=0.01, readout_format=".2f", continuous_update=False, style=style, layout=layout)
    controls = {
        "strategy": w.Dropdown(options=list(OPTIONS), value=strategy, description="strategy", style=style),
        "grid_size": w.IntSlider(grid_size, min=2, max=16, description="grid (patches)", continuous_update=False,
                                 style=style, layout=layout),
        "n_targets": w.IntSlider(n_targets, min=1, max=7, description="target blocks", continuous_update=False,
                                 style=style, layout=layout),  # plots.MASK_COLORS colours up to 7 targets
        "target_scale": w.FloatRangeSlider(value=target_scale, min=0.01, max=1.0, description="target scale",
                                           **ranged),
        "target_aspect": w.FloatRangeSlider(value=target_aspect, min=0.25, max=4.0, description="target aspect",
                                            **ranged),
        "context_scale": w.FloatRangeSlider(value=context_scale, min=0.05, max=1.0, description="context scale",
                                            **ranged),
        "min_keep": w.IntSlider(min_keep, min=1, max=40, description="min_keep", continuous_update=False,
                                style=style, layout=layout),
        "batch_size": w.IntSlider(batch_size, min=1, max=1024, description="batch size", continuous_update=False,
                                  style=style, layout=layout),
        "seed": w.IntSlider(seed, min=0, max=99, description="seed", continuous_update=False, style=style,
                            layout=layout),
    }
    output, status = w.Output(), w.HTML()
    names = list(controls)
    columns = w.HBox([w.VBox([controls[n] for n in names[:5]]), w.VBox([controls[n] for n in names[5:]])])
    box = w.VBox([columns, status, output])
    explorer = MaskExplorer(box, controls, output, status, images, n_images)
    for control in controls.values():
        control.observe(explorer.update, names="value")
    explorer.update()
    return explorer
