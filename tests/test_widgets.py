"""The mask explorer (minijepa/widgets.py), driven headlessly: set a control's value, check what it now shows; and
once inside a real kernel (nbclient plays the notebook front end), where an impossible setting must leave no figure
under its message.

The pure functions underneath (`sample_masks`, `mask_stats`) are tested directly: same seed, same masks; and the
statistics land where the paper says (multi-block context ~0.25 of a 14x14 grid, Table 6).
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from minijepa.masks import (BlockMasker, MultiBlockMasker, RandomMasker, RasterizedMasker,  # noqa: E402
                            indices_to_mask)
from minijepa.plots import block_outline  # noqa: E402
from minijepa.widgets import MaskStats, masker_from_options, mask_explorer, mask_stats, sample_masks  # noqa: E402

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
        "context (seen)", "not used", "target 1", "target 2", "target 3", "target 4"]
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
