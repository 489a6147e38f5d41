"""An interactive mask explorer for the notebooks: sliders over the masker's parameters, masks redrawn live.

The widget is a thin layer over two pure functions, which the tests and the notebooks also call directly:

    sample_masks(strategy, grid_size, ...) -> (context (B, Kc), [target (B, Kt_i), ...])   seeded, reproducible
    mask_stats(context, targets, grid_size) -> MaskStats(context_ratio, target_ratio, union_ratio, ...)

    explorer = mask_explorer(images)   # display it in a notebook; explorer.controls["n_targets"].value = 2 works too

What it writes under an impossible setting is pure too: `impossible_message(error, options, sampled)`, the masker's
reason followed by `remedies(options, sampled)`, the changes its own controls can make.

ipywidgets is imported only when `mask_explorer` is called, so the package does not need it.
"""
from __future__ import annotations

import html
import re
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

# The ends of the explorer's sliders. min_keep's top is the grid's patch count (`min_keep_limit`), so every grid has a
# min_keep the masker refuses; the batch slider steps through BATCH_SIZES (powers of two: 1 is as easy to reach as
# 1024).
LIMITS: dict[str, tuple[Any, Any]] = {"grid_size": (2, 16), "n_targets": (1, 7),  # plots.MASK_COLORS: 7 targets
                                      "target_scale": (0.01, 1.0), "target_aspect": (0.25, 4.0),
                                      "context_scale": (0.05, 1.0), "min_keep": (1, None), "seed": (0, 99)}
BATCH_SIZES = tuple(2 ** k for k in range(11))  # 1, 2, 4, ..., 1024

# ipywidgets gives a slider's readout 72 px, and a range such as "0.85 – 1.00" takes about 73: the explorer widens it.
EXPLORER_CLASS = "minijepa-mask-explorer"
READOUT_WIDTH_PX = 96
EXPLORER_CSS = (f".{EXPLORER_CLASS} .widget-readout, .{EXPLORER_CLASS} .jupyter-widget-readout "
                f"{{min-width: {READOUT_WIDTH_PX}px; max-width: none;}}")


def min_keep_limit(grid_size: int) -> int:
    """The top of the min_keep slider on a grid_size x grid_size grid: all its patches (always refused, since the
    targets take at least one)."""
    return grid_size * grid_size


def batch_choices(batch_size: int) -> list[int]:
    """The batch slider's stops: BATCH_SIZES, and `batch_size` itself if it is not one of them."""
    return sorted(set(BATCH_SIZES) | {int(batch_size)})


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


def _grid_text(grid_size: int | tuple[int, int]) -> str:
    H, W = to_2tuple(grid_size)
    return f"{H}x{W}"


def _now(name: str, value: Any) -> str:
    return _grid_text(value) if name == "grid_size" else str(tuple(value) if isinstance(value, tuple) else value)


def remedies(options: dict[str, Any], sampled: bool) -> list[str]:
    """The changes the explorer's controls can make to an impossible setting, each with the control's current value,
    e.g. "a lower min_keep (now 40)". `options` are the controls' values (`MaskExplorer.options()`); only controls that
    the strategy uses (OPTIONS, and the grid) and that are not already at the end of their slider are named.

    sampled=False: the masker refused the options when built (a quick check): a control is named when moving it alone
    to the end of its slider passes that check. sampled=True: it was built but could not draw the masks (too many
    failed redraws, or a block covering the grid): the controls that make room for the context are named."""
    strategy, v = options["strategy"], options
    used = [*OPTIONS[strategy], "grid_size"]
    (k_lo, _), (n_lo, _), (s_lo, _), (a_lo, a_hi), (_, c_hi), (_, g_hi) = (
        LIMITS[n] for n in ("min_keep", "n_targets", "target_scale", "target_aspect", "context_scale", "grid_size"))
    # control: (words, its slider's end(s) that leave the most room for the context, can it still move that way)
    moves = {
        "min_keep": ("a lower min_keep", [k_lo], lambda: v["min_keep"] > k_lo),
        "n_targets": ("fewer target blocks", [n_lo], lambda: v["n_targets"] > n_lo),
        "target_scale": ("a smaller target scale", [(s_lo, s_lo)], lambda: v["target_scale"][1] > s_lo),
        "context_scale": ("a larger context scale", [(c_hi, c_hi)], lambda: v["context_scale"][0] < c_hi),
        # a block's rounded shape covers more of a small grid the squarer it is (multi-block's need not)
        "target_aspect": ("a target aspect further from 1", [(a_lo, a_lo), (a_hi, a_hi)],
                          lambda: strategy == "block" and v["target_aspect"] not in ((a_lo, a_lo), (a_hi, a_hi))),
        "grid_size": ("a larger grid", [g_hi], lambda: v["grid_size"] < g_hi),
    }
    fixes = []
    for name in used:
        words, ends, can_move = moves[name]
        if sampled:
            helps = can_move()
        else:
            helps = any(_builds({**{n: v[n] for n in ("strategy", *used)}, name: end}) for end in ends)
        if helps:
            fixes.append(f"{words} (now {_now(name, v[name])})")
    return fixes


def _builds(options: dict[str, Any]) -> bool:
    try:
        masker_from_options(**options)
        return True
    except ValueError:
        return False


def impossible_message(error: Exception | str, options: dict[str, Any], sampled: bool) -> str:
    """What the explorer shows for an impossible setting: "impossible", the masker's reason (grids written HxW, its
    own advice left out: it names parameters the explorer may not offer), and `remedies(options, sampled)`."""
    reason = re.split(r"[.:] +(?=[Ll]ower\b)", str(error), maxsplit=1)[0].rstrip(". ")
    reason = re.sub(r"\((\d+), (\d+)\)(?= grid)", r"\1x\2", reason)  # a masker may write (7, 7) for the grid
    if not reason.startswith("impossible"):
        reason = f"impossible: {reason}"
    fixes = remedies(options, sampled)
    if not fixes:
        return f"{reason}. No single control makes room alone: change several."
    either = fixes[0] if len(fixes) == 1 else f"{', '.join(fixes[:-1])} or {fixes[-1]}"
    return f"{reason}. Try {either}."


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
    mask_legend(fig, len(targets), on_image=images is not None)
    return fig


class MaskExplorer:
    """The explorer's state, for notebooks and tests alike. `widget` is the ipywidgets box (a notebook displays the
    explorer as that box); `controls` maps option names to their widgets; after each redraw `masker`, `result`
    (context, targets), `stats` and `figure` hold what is shown, or `error` the message of an impossible setting
    (then `result` and `figure` are None, and the output area is empty): `impossible_message`'s text."""

    def __init__(self, widget: Any, controls: dict[str, Any], output: Any, status: Any,
                 images: torch.Tensor | None, n_images: int):
        self.widget, self.controls, self.output, self.status = widget, controls, output, status
        self.images, self.n_images = images, n_images
        self.masker: Masker | None = None
        self.result: Masks | None = None
        self.stats: MaskStats | None = None
        self.figure: Figure | None = None
        self.error: str | None = None
        self._resizing = False  # min_keep's slider is being fitted to the grid: its own change redraws nothing

    def options(self) -> dict[str, Any]:
        """The controls' current values, as keyword arguments of `sample_masks`. Ranges are rounded to the sliders'
        step of 0.01 (a slider can hold 0.15000000000000002 for 0.15)."""
        return {name: tuple(round(v, 2) for v in control.value) if isinstance(control.value, tuple) else control.value
                for name, control in self.controls.items()}

    def update(self, change: Any = None) -> None:
        """Resample and redraw (called whenever a control changes); impossible settings show their message."""
        from IPython.display import display

        if self._resizing:
            return
        min_keep, top = self.controls["min_keep"], min_keep_limit(self.controls["grid_size"].value)
        if min_keep.max != top:  # every grid gets a min_keep the masker refuses; a lower top may lower the value
            self._resizing = True
            try:
                min_keep.max = top
            finally:
                self._resizing = False
        opts = self.options()
        seed, batch_size, strategy = opts.pop("seed"), opts.pop("batch_size"), opts["strategy"]
        for name in ("n_targets", "target_scale", "target_aspect", "context_scale", "min_keep"):
            self.controls[name].disabled = name not in OPTIONS[strategy]  # grey out the options it does not use
        sampled = False
        try:
            self.masker = masker_from_options(**opts)
            sampled = True
            self.result = self.masker.sample(batch_size, torch.Generator().manual_seed(seed))
            self.error = None
        except (ValueError, RuntimeError) as e:  # impossible parameters (ValueError) or too many failed redraws
            message = impossible_message(e, opts, sampled)
            self.masker, self.result, self.stats, self.figure, self.error = None, None, None, None, message
            self.output.clear_output()  # now: clear_output(wait=True) would wait for an output that never comes
            head, rest = message.split(" ", 1)  # "impossible: ..." or "impossible masks ...": the first word in bold
            self.status.value = f"<span style='color:#c44e52'><b>{head}</b> {html.escape(rest)}</span>"
            return
        context, targets = self.result
        H, W = self.masker.grid_size
        self.stats = mask_stats(context, targets, (H, W))
        self.status.value = (f"{strategy} on a {_grid_text((H, W))} grid, batch of {batch_size}: "
                             f"{html.escape(str(self.stats))}")
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
    `batch_size` masks (a slider too, over powers of two: contexts are cut to the shortest one in the batch, so the
    batch matters). min_keep's slider reaches the grid's patch count, where the masker always refuses."""
    import ipywidgets as w

    if images is not None and not isinstance(images, torch.Tensor):
        images = torch.stack(list(images))
    style = {"description_width": "110px"}
    layout = w.Layout(width="380px")
    common = dict(continuous_update=False, style=style, layout=layout)
    ranged = dict(step=0.01, readout_format=".2f", **common)
    controls = {
        "strategy": w.Dropdown(options=list(OPTIONS), value=strategy, description="strategy", style=style),
        "grid_size": w.IntSlider(grid_size, *LIMITS["grid_size"], description="grid (patches)", **common),
        "n_targets": w.IntSlider(n_targets, *LIMITS["n_targets"], description="target blocks", **common),
        "target_scale": w.FloatRangeSlider(value=target_scale, min=LIMITS["target_scale"][0],
                                           max=LIMITS["target_scale"][1], description="target scale", **ranged),
        "target_aspect": w.FloatRangeSlider(value=target_aspect, min=LIMITS["target_aspect"][0],
                                            max=LIMITS["target_aspect"][1], description="target aspect", **ranged),
        "context_scale": w.FloatRangeSlider(value=context_scale, min=LIMITS["context_scale"][0],
                                            max=LIMITS["context_scale"][1], description="context scale", **ranged),
        "min_keep": w.IntSlider(min_keep, LIMITS["min_keep"][0], min_keep_limit(grid_size), description="min_keep",
                                **common),
        "batch_size": w.SelectionSlider(options=batch_choices(batch_size), value=int(batch_size),
                                        description="batch size", **common),
        "seed": w.IntSlider(seed, *LIMITS["seed"], description="seed", **common),
    }
    output, status = w.Output(), w.HTML()
    names = list(controls)
    columns = w.HBox([w.VBox([controls[n] for n in names[:5]]), w.VBox([controls[n] for n in names[5:]])])
    box = w.VBox([columns, status, output, w.HTML(f"<style>{EXPLORER_CSS}</style>")])  # the style: wider readouts
    box.add_class(EXPLORER_CLASS)
    explorer = MaskExplorer(box, controls, output, status, images, n_images)
    for control in controls.values():
        control.observe(explorer.update, names="value")
    explorer.update()
    return explorer
