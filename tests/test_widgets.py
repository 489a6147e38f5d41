"""The mask explorer (minijepa/widgets.py), driven headlessly: set a control's value, check what it now shows; and
once inside a real kernel (nbclient plays the notebook front end), where an impossible setting must leave no figure
under its message.

The pure functions underneath (`sample_masks`, `mask_stats`, `remedies`, `impossible_message`) are tested directly:
same seed, same masks; the statistics land where the paper says (multi-block context ~0.25 of a 14x14 grid, Table 6);
an impossible setting's advice names only what the explorer's controls can still change.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import re  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from minijepa.masks import (BlockMasker, MultiBlockMasker, RandomMasker, RasterizedMasker,  # noqa: E402
                            indices_to_mask)
from minijepa.plots import block_outline  # noqa: E402
from minijepa.widgets import (BATCH_SIZES, EXPLORER_CLASS, EXPLORER_CSS, LIMITS, READOUT_WIDTH_PX,  # noqa: E402
                              MaskStats, batch_choices, impossible_message, mask_explorer, mask_stats,
                              masker_from_options, min_keep_limit, remedies, sample_masks)

pytest.importorskip("ipywidgets")


def same(a, b) -> bool:
    (ca, ta), (cb, tb) = a, b
    return torch.equal(ca, cb) and len(ta) == len(tb) and all(torch.equal(x, y) for x, y in zip(ta, tb))


# ------------------------------------------------------------------------------------------------- pure functions
def test_same_seed_same_masks_other_seed_other_masks():
    for strategy in ("multiblock", "random", "block", "rasterized"):
        a = sample_masks(strategy, 14, seed=3, batch_size=8)
        assert same(a, sample_masks(strategy, 14, seed=3, batch_size=8)), strategy
        assert not same(a, sample_masks(strategy, 14, seed=4, batch_size=8)), strategy


def test_sample_masks_shapes_follow_the_options():
    context, targets = sample_masks("multiblock", (7, 9), n_targets=2, batch_size=5)
    assert len(targets) == 2 and context.shape[0] == 5 and all(t.shape[0] == 5 for t in targets)
    assert int(context.max()) < 63 and all(int(t.max()) < 63 for t in targets)
    for t in targets:  # no context patch is a target patch
        assert not (indices_to_mask(context, 63) & indices_to_mask(t, 63)).any()


def test_build_masker_ignores_options_a_strategy_does_not_take():
    assert isinstance(masker_from_options("random", 8, n_targets=7, context_scale=(0.1, 0.2)), RandomMasker)
    block = masker_from_options("block", 8, target_aspect=(1.0, 2.0), target_scale=(0.9, 1.0))
    assert isinstance(block, BlockMasker) and block.aspect == (1.0, 2.0) and block.scale == 0.6
    multi = masker_from_options("multiblock", 8, n_targets=3, target_scale=(0.1, 0.15))
    assert isinstance(multi, MultiBlockMasker) and multi.n_targets == 3 and multi.target_scale == (0.1, 0.15)
    with pytest.raises(ValueError, match="unknown masking strategy"):
        masker_from_options("checkerboard", 8)


def test_mask_stats_by_hand():
    context = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])  # 4 of 16 patches
    targets = [torch.tensor([[8, 9], [8, 9]]), torch.tensor([[9, 10], [12, 13]])]  # union: 3 and 4 patches
    s = mask_stats(context, targets, 4)
    assert s == MaskStats(context_ratio=0.25, target_ratio=2 / 16, union_ratio=7 / 32, n_targets=2, num_patches=16)
    assert "0.250" in str(s) and "16 patches" in str(s)


def test_multiblock_stats_on_the_paper_grid():
    # paper Table 6: multi-block keeps ~0.25 of the patches as context (after cutting to the batch minimum)
    ratios = [mask_stats(*sample_masks("multiblock", 14, seed=s, batch_size=128), 14) for s in range(5)]
    for r in ratios:
        assert 0.2 <= r.context_ratio <= 0.4
        assert 0.13 <= r.target_ratio <= 0.22  # block of scale U(0.15, 0.2), after rounding to whole patches
        assert r.target_ratio <= r.union_ratio <= 4 * r.target_ratio and r.n_targets == 4
    assert 0.25 <= sum(r.context_ratio for r in ratios) / 5 <= 0.35


def test_comparison_strategies_stats():
    s = mask_stats(*sample_masks("rasterized", 14, batch_size=16), 14)
    assert (s.context_ratio, s.target_ratio, s.union_ratio, s.n_targets) == (0.25, 0.25, 0.75, 3)
    s = mask_stats(*sample_masks("random", 10, batch_size=16), 10)
    assert (s.context_ratio, s.target_ratio, s.union_ratio, s.n_targets) == (0.4, 0.6, 0.6, 1)
    s = mask_stats(*sample_masks("block", 14, batch_size=16), 14)
    assert s.context_ratio + s.target_ratio == 1.0 and 0.5 <= s.target_ratio <= 0.7


def test_block_outline_traces_the_border_of_a_block():
    # what draw_masks outlines each target block with: the unit edges between the block and the rest
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[1:3, 1:4] = True  # a 2x3 block: perimeter 2 * (2 + 3) = 10 unit edges
    edges = block_outline(mask)
    assert len(edges) == 10
    xs = {x for edge in edges for x, _ in edge}
    ys = {y for edge in edges for _, y in edge}
    assert min(xs) == 0.5 and max(xs) == 3.5 and min(ys) == 0.5 and max(ys) == 2.5
    mask[0, 0] = True  # a lone cell adds its own 4 edges
    assert len(block_outline(mask)) == 14



@pytest.mark.parametrize("on_image", [True, False])
def test_the_legend_shows_unused_patches_as_draw_masks_paints_them(on_image):
    """Over an image, a patch in neither the context nor a target is washed out: a black one turns the grey of the
    legend's "not used" swatch; on a bare grid it stays white, and so does the swatch."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import to_rgb

    from minijepa.plots import draw_masks, mask_legend
    fig, ax = plt.subplots()
    image = torch.zeros(1, 8, 8) if on_image else None  # black: every unused patch shows the wash alone
    draw_masks(ax, image, torch.tensor([0, 1]), [torch.tensor([3])], (2, 2))
    fig.canvas.draw()
    pixels = torch.from_numpy(np.asarray(fig.canvas.buffer_rgba()).copy())[..., :3].float() / 255  # (H, W, 3)
    x0, y0, x1, y1 = ax.get_window_extent().extents
    h = pixels.shape[0]
    # patch (1, 0) of the 2x2 grid is unused: the centre of the lower-left quarter of the axes
    painted = pixels[int(h - (y0 + (y1 - y0) / 4)), int(x0 + (x1 - x0) / 4)]
    mask_legend(ax, 1, on_image=on_image)
    swatch = next(h for h in ax.get_legend().legend_handles if h.get_label().startswith("not used"))
    assert torch.allclose(painted, torch.tensor(to_rgb(swatch.get_facecolor())), atol=0.02)
    plt.close(fig)

# ------------------------------------------------------------------------------------------------- impossible settings
def options(**changes) -> dict:
    """The explorer's options (less seed and batch size) at the paper's defaults, with `changes`."""
    return {"strategy": "multiblock", "grid_size": 14, "n_targets": 4, "target_scale": (0.15, 0.2),
            "target_aspect": (0.75, 1.5), "context_scale": (0.85, 1.0), "min_keep": 4} | changes


def refusal(**changes) -> tuple[Exception, dict, bool]:
    """What the masker raises for `options(**changes)`, the options, and whether it was built (sampling failed)."""
    opts = options(**changes)
    try:
        masker = masker_from_options(**opts)
    except ValueError as e:
        return e, opts, False
    with pytest.raises((ValueError, RuntimeError)) as e:
        masker.sample(8, torch.Generator().manual_seed(0))
    return e.value, opts, True


def advice(message: str) -> str:
    return message.split(". Try ", 1)[1]


def test_a_refused_build_names_only_the_controls_that_make_it_possible():
    # 7x7: the context block is already the whole grid, so a larger context scale cannot help and is not offered
    error, opts, sampled = refusal(grid_size=7, min_keep=38)
    assert not sampled
    assert remedies(opts, sampled) == ["a smaller target scale (now (0.15, 0.2))", "a lower min_keep (now 38)",
                                       "a larger grid (now 7x7)"]
    # a small context block: now the context scale helps, and shrinking the targets alone does not
    error, opts, sampled = refusal(grid_size=7, context_scale=(0.5, 0.6), min_keep=30)
    assert remedies(opts, sampled) == ["a larger context scale (now (0.5, 0.6))", "a lower min_keep (now 30)",
                                       "a larger grid (now 7x7)"]
    # a target covering the 4x4 grid: no min_keep and no grid helps, only a smaller (or less square) target
    error, opts, sampled = refusal(grid_size=4, target_scale=(0.9, 1.0))
    message = impossible_message(error, opts, sampled)
    assert message.startswith("impossible masks on a 4x4 grid: at most 0 context patches can remain")
    assert advice(message) == ("a smaller target scale (now (0.9, 1.0)) or a target aspect further from 1 "
                               "(now (0.75, 1.5)).")
    for name, end in [("target_scale", (0.01, 0.01)), ("target_aspect", (4.0, 4.0))]:  # each one alone builds
        masker_from_options(**(opts | {name: end}))


def test_a_failed_draw_names_the_controls_that_make_room_for_the_context():
    error, opts, sampled = refusal(grid_size=7, min_keep=35)  # built, but 100 redraws leave too small contexts
    assert sampled and isinstance(error, RuntimeError)
    message = impossible_message(error, opts, sampled)
    assert message.startswith("impossible: after 100 draws") and "on a 7x7 grid." in message
    assert advice(message) == ("fewer target blocks (now 4), a smaller target scale (now (0.15, 0.2)), a larger "
                               "context scale (now (0.85, 1.0)), a lower min_keep (now 35) or a larger grid (now 7x7).")
    # controls at the end of their slider are not named
    ends = options(grid_size=LIMITS["grid_size"][1], n_targets=1, target_scale=(0.01, 0.01),
                   context_scale=(1.0, 1.0), min_keep=1)
    assert remedies(ends, sampled=True) == []
    assert impossible_message("too small", ends, sampled=True).endswith("No single control makes room alone: "
                                                                        "change several.")


def test_the_block_strategy_is_not_told_to_change_its_fixed_scale():
    error, opts, sampled = refusal(strategy="block", grid_size=2, target_aspect=(1.0, 1.0))  # 2x2 block covers 2x2
    assert sampled
    message = impossible_message(error, opts, sampled)
    assert message == ("impossible: a 2x2 target block covers the whole 2x2 grid. Try a target aspect further from 1 "
                       "(now (1.0, 1.0)) or a larger grid (now 2x2).")
    assert "scale" not in advice(message)
    # and each remedy works: an aspect of 4 or a 3x3 grid draws masks
    sample_masks("block", 2, target_aspect=(4.0, 4.0), batch_size=8)
    sample_masks("block", 3, target_aspect=(1.0, 1.0), batch_size=8)


def test_impossible_messages_say_impossible_once_and_write_grids_one_way():
    for changes in [dict(grid_size=7, min_keep=38), dict(grid_size=7, min_keep=35),
                    dict(strategy="block", grid_size=2, target_aspect=(1.0, 1.0))]:
        message = impossible_message(*refusal(**changes))
        assert message.startswith("impossible") and message.count("impossible") == 1, message
        assert not re.search(r"\(\d+, \d+\)", message), message  # never "(7, 7)": grids are "7x7"
        assert re.search(r"\b\d+x\d+ grid\b", message), message


def test_the_min_keep_slider_reaches_a_refusal_on_every_grid():
    for grid in range(LIMITS["grid_size"][0], LIMITS["grid_size"][1] + 1):
        with pytest.raises(ValueError, match="impossible masks"):
            masker_from_options("multiblock", grid, min_keep=min_keep_limit(grid))


def test_batch_sizes_step_by_doubling_from_one():
    assert BATCH_SIZES[0] == 1 and BATCH_SIZES[-1] == 1024
    assert all(b == 2 * a for a, b in zip(BATCH_SIZES, BATCH_SIZES[1:]))
    assert batch_choices(128) == list(BATCH_SIZES) and batch_choices(100) == sorted([*BATCH_SIZES, 100])


# ------------------------------------------------------------------------------------------------- the widget
@pytest.fixture
def explorer():
    images = torch.randint(0, 256, (3, 3, 28, 28), dtype=torch.uint8)
    return mask_explorer(images, n_images=3, batch_size=32)


def test_explorer_starts_with_the_paper_defaults(explorer):
    assert set(explorer.controls) == {"strategy", "grid_size", "n_targets", "target_scale", "target_aspect",
                                      "context_scale", "min_keep", "batch_size", "seed"}
    assert explorer.error is None and isinstance(explorer.masker, MultiBlockMasker)
    context, targets = explorer.result
    assert len(targets) == 4 and context.shape[0] == 32
    assert explorer.stats == mask_stats(context, targets, 14)
    assert len(explorer.figure.axes) == 3  # one panel per image
    assert [t.get_text() for t in explorer.figure.legends[0].get_texts()] == [
        "context (seen)", "not used (washed out)", "target 1", "target 2", "target 3", "target 4"]
    assert "multiblock on a 14x14 grid, batch of 32" in explorer.status.value


def test_explorer_follows_its_sliders(explorer):
    explorer.controls["n_targets"].value = 2
    assert len(explorer.result[1]) == 2 and explorer.stats.n_targets == 2
    explorer.controls["grid_size"].value = 7
    assert explorer.masker.grid_size == (7, 7)
    image = explorer.figure.axes[0].images[-1].get_array()  # the last mask layer drawn on the first image
    assert image.shape[:2] == (7, 7)
    explorer.controls["target_scale"].value = (0.3, 0.3)
    assert explorer.masker.target_scale == (0.3, 0.3)
    assert 12 <= explorer.result[1][0].shape[1] <= 16  # 0.3 * 49 = 14.7 patches: 3x4, 4x4 or 5x3 by aspect
    before = explorer.result
    explorer.controls["seed"].value = 1
    assert not same(before, explorer.result)
    explorer.controls["seed"].value = 0
    assert same(before, explorer.result)


def test_explorer_batch_size_and_min_keep(explorer):
    explorer.controls["batch_size"].value = 1  # no shorter context in the batch to cut to
    assert explorer.result[0].shape[0] == 1 and "batch of 1" in explorer.status.value
    one = explorer.stats.context_ratio
    explorer.controls["batch_size"].value = 512  # contexts are cut to the batch's shortest one
    assert explorer.result[0].shape[0] == 512 and explorer.stats.context_ratio < one
    explorer.controls["min_keep"].value = 20
    assert explorer.masker.min_keep == 20 and explorer.result[0].shape[1] >= 20
    explorer.controls["grid_size"].value = 7  # at most 49 - 9 = 40 context patches next to one 3x3 target...
    explorer.controls["min_keep"].value = 40  # ...and four targets leave fewer: impossible
    assert explorer.error is not None and "min_keep=40" in explorer.error


def test_explorer_min_keep_slider_follows_the_grid(explorer):
    min_keep = explorer.controls["min_keep"]
    assert min_keep.max == 14 * 14
    min_keep.value = min_keep.max  # "raise min_keep until the masker refuses" works on the default grid
    assert explorer.error.startswith("impossible masks on a 14x14 grid")
    assert "a lower min_keep (now 196)" in explorer.error
    explorer.controls["grid_size"].value = 7  # the top comes down with the grid, and the value with it
    assert min_keep.max == min_keep.value == 49 and "min_keep=49" in explorer.error
    min_keep.value = 4
    assert explorer.error is None and explorer.masker.grid_size == (7, 7)


def test_explorer_batch_slider_and_readouts(explorer):
    batch = explorer.controls["batch_size"]
    assert tuple(batch.options) == tuple(batch_choices(32)) and batch.options[0] == 1 and batch.options[-1] == 1024
    # every range readout ("0.85 – 1.00") gets more than the 72 px ipywidgets gives it, in this explorer only
    assert READOUT_WIDTH_PX >= 88 and f"min-width: {READOUT_WIDTH_PX}px" in EXPLORER_CSS
    assert EXPLORER_CLASS in explorer.widget._dom_classes and EXPLORER_CSS.startswith(f".{EXPLORER_CLASS} ")
    assert any(f"<style>{EXPLORER_CSS}</style>" == getattr(child, "value", None) for child in explorer.widget.children)


def test_explorer_message_rounds_slider_values(explorer):
    explorer.controls["grid_size"].value = 4
    explorer.controls["target_scale"].value = (0.9000000000000001, 1.0)  # what a slider's float steps can hold
    assert explorer.error is not None and "(0.9, 1.0)" in explorer.error and "0.900000" not in explorer.status.value


def test_explorer_switches_strategy_and_disables_unused_options(explorer):
    explorer.controls["strategy"].value = "rasterized"
    assert isinstance(explorer.masker, RasterizedMasker) and len(explorer.result[1]) == 3
    assert all(explorer.controls[n].disabled for n in ("n_targets", "target_scale", "target_aspect",
                                                       "context_scale", "min_keep"))
    explorer.controls["strategy"].value = "block"
    assert isinstance(explorer.masker, BlockMasker) and len(explorer.result[1]) == 1
    assert not explorer.controls["target_aspect"].disabled and explorer.controls["n_targets"].disabled
    explorer.controls["strategy"].value = "random"
    assert isinstance(explorer.masker, RandomMasker) and explorer.stats.target_ratio == pytest.approx(0.6, abs=0.01)
    explorer.controls["strategy"].value = "multiblock"
    assert isinstance(explorer.masker, MultiBlockMasker) and not explorer.controls["n_targets"].disabled


def test_explorer_shows_impossible_settings_instead_of_raising(explorer):
    explorer.controls["grid_size"].value = 4
    explorer.controls["target_scale"].value = (0.9, 1.0)  # a target covers the grid: no context can remain
    assert explorer.error is not None and "impossible masks on a 4x4 grid" in explorer.error
    assert explorer.result is None and explorer.figure is None
    assert "impossible" in explorer.status.value and "min_keep" in explorer.status.value
    assert "<b>impossible</b> masks on a 4x4 grid" in explorer.status.value
    assert explorer.status.value.count("impossible") == 1  # not "impossible: impossible masks"
    explorer.controls["target_scale"].value = (0.15, 0.2)  # back to a possible setting: masks again
    assert explorer.error is None and explorer.result is not None and explorer.figure is not None


def test_explorer_without_images_draws_bare_grids():
    explorer = mask_explorer(None, grid_size=8, n_images=2, batch_size=8)
    assert len(explorer.figure.axes) == 2 and explorer.figure.axes[0].images[-1].get_array().shape[:2] == (8, 8)


def test_explorer_in_a_kernel_clears_the_figure_under_an_impossible_setting():
    # nbclient plays the front end: it routes the kernel's display and clear_output messages into the Output widget
    # the way JupyterLab does (clear_output(wait=True) only takes effect when the next output arrives)
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = ["from minijepa.widgets import mask_explorer\n"
             "explorer = mask_explorer(None, grid_size=4, n_images=1, batch_size=4)\n"
             "explorer",
             "explorer.controls['target_scale'].value = (0.9000000000000001, 1.0)",  # impossible on 4x4
             "explorer.controls['target_scale'].value = (0.15, 0.2)"]  # possible again
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3")

    def shown():  # what the front end now holds in the explorer's Output widget, and its status line
        states = list(client.widget_state.values())
        output = next(s for s in states if s.get("_model_name") == "OutputModel")
        status = next(s for s in states if s.get("_model_name") == "HTMLModel")
        return [o.get("output_type") for o in output["outputs"]], status["value"]

    with client.setup_kernel():
        for i, cell in enumerate(notebook.cells):
            client.execute_cell(cell, i)
            outputs, status = shown()
            if i == 1:
                assert outputs == [] and "impossible" in status and "(0.9, 1.0)" in status
            else:
                assert outputs == ["display_data"] and "impossible" not in status
