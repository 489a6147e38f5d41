"""Masks: the invariants of multi-block masking, the fixes of the reference's defects, the ablation strategies."""
from __future__ import annotations

import pytest
import torch

from minijepa.masks import (BlockMasker, MultiBlockMasker, RandomMasker, RasterizedMasker, indices_to_mask,
                            make_masker, mask_grid)

GRIDS = [(7, 7), (8, 8), (14, 14), (16, 16), (6, 10)]


def is_rectangle(index: torch.Tensor, W: int) -> bool:
    """Do these patch indices form one full, axis-aligned rectangle of the grid?"""
    r, c = index // W, index % W
    h, w = int(r.max() - r.min() + 1), int(c.max() - c.min() + 1)
    return len(index.unique()) == len(index) == h * w


@pytest.mark.parametrize("grid", GRIDS)
def test_multiblock_invariants(grid):
    """Context and targets never overlap; each target is a full rectangle; rows are equal length and valid."""
    masker = MultiBlockMasker(grid)
    g = torch.Generator().manual_seed(0)
    N = grid[0] * grid[1]
    for _ in range(30):
        context, targets = masker.sample(16, g)
        assert context.dtype == torch.long and context.ndim == 2 and len(targets) == 4
        assert context.shape[1] >= masker.min_keep
        assert torch.equal(context, context.sort(1).values) and (context.diff(1) > 0).all()  # sorted, unique
        covered = indices_to_mask(torch.cat(targets, 1), N)
        assert not indices_to_mask(context, N)[covered].any(), "a context patch is also a target patch"
        for t in targets:
            assert t.shape == targets[0].shape and 0 <= t.min() and t.max() < N
            assert all(is_rectangle(row, grid[1]) for row in t)


def test_same_seed_same_masks_other_seed_other_masks():
    m = MultiBlockMasker((14, 14))
    a = m.sample(8, torch.Generator().manual_seed(3))
    b = m.sample(8, torch.Generator().manual_seed(3))
    c = m.sample(8, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    assert not (torch.equal(a[0], c[0]) if a[0].shape == c[0].shape else False) or \
        not all(torch.equal(x, y) for x, y in zip(a[1], c[1]))


def test_target_size_and_aspect_statistics():
    """Target area follows U(0.15, 0.2) of the 14x14 grid (up to rounding); aspect spans both sides of 1; scale
    and aspect are drawn independently (the reference drew both from one uniform number: defect 3)."""
    m = MultiBlockMasker((14, 14))
    g = torch.Generator().manual_seed(0)
    areas, aspects = [], []
    for _ in range(400):
        _, targets = m.sample(1, g)
        t = targets[0][0]
        h, w = int(t.max() // 14 - t.min() // 14 + 1), int(t.max() % 14 - t.min() % 14 + 1)
        areas.append(h * w / 196)
        aspects.append(h / w)
    areas, aspects = torch.tensor(areas), torch.tensor(aspects)
    assert 0.15 < areas.mean() < 0.2, areas.mean()
    assert areas.min() >= 0.1 and areas.max() <= 0.26  # rounding h and w moves the area a little
    assert (aspects < 1).any() and (aspects > 1).any() and aspects.min() >= 0.6 and aspects.max() <= 1.8
    corr = torch.corrcoef(torch.stack([areas, aspects]))[0, 1]
    assert abs(corr) < 0.5, f"scale and aspect look coupled (corr {corr:.2f})"


def test_block_origins_are_uniform_including_last_row_and_column():
    """Defect 2 of the reference: randint(0, H - h) never put a block on the last row/column."""
    H = W = 8
    counts = torch.zeros(H, W)
    g = torch.Generator().manual_seed(0)
    m = MultiBlockMasker((H, W), target_scale=(0.0625, 0.0625), target_aspect=(1.0, 1.0))  # 2x2 blocks
    for _ in range(200):
        _, targets = m.sample(32, g)
        for t in targets:
            top_left = t[:, 0]
            counts.view(-1).index_add_(0, top_left, torch.ones(len(top_left)))
    valid = counts[: H - 1, : W - 1]  # a 2x2 block can start at rows/cols 0..6
    assert (counts[H - 1] == 0).all() and (counts[:, W - 1] == 0).all()
    assert (valid > 0).all(), "some valid origins never occur"
    assert valid[-1, :].sum() > 0 and valid[:, -1].sum() > 0  # the last valid row/column is used
    expected = valid.sum() / valid.numel()
    assert ((valid - expected).abs() / expected).max() < 0.25, "origins are far from uniform"


def test_context_truncation_keeps_a_random_subset():
    """Defect 4 of the reference: cutting every context list to the batch minimum by keeping the first K indices
    starved the bottom-right of the image. Here the last row is kept about as often as the first."""
    m = MultiBlockMasker((14, 14))
    g = torch.Generator().manual_seed(0)
    freq = torch.zeros(196)
    for _ in range(10):
        context, _ = m.sample(128, g)
        freq += indices_to_mask(context, 196).float().sum(0)
    freq = freq.view(14, 14)
    first, last = freq[0].sum(), freq[-1].sum()
    assert last > 0.5 * first and first > 0.5 * last, (first, last)
    assert freq[-1, -1] > 0


@pytest.mark.parametrize("grid,lo,hi", [((14, 14), 0.15, 0.45), ((8, 8), 0.1, 0.5)])
def test_context_ratio(grid, lo, hi):
    """After removing targets and equalising the batch, the context keeps a minority of the image (the paper
    reports an average ratio of about 0.25 at 14x14 with batch-level truncation)."""
    m = MultiBlockMasker(grid)
    g = torch.Generator().manual_seed(0)
    ratios = [m.sample(128, g)[0].shape[1] / (grid[0] * grid[1]) for _ in range(20)]
    mean = sum(ratios) / len(ratios)
    assert lo < mean < hi, f"mean context ratio {mean:.3f}"


@pytest.mark.parametrize("kwargs,match", [
    (dict(grid_size=(7, 7), min_keep=60), "impossible masks on a 7x7 grid"),
    (dict(grid_size=(8, 8), target_scale=(1.0, 1.0), target_aspect=(1.0, 1.0), min_keep=1), "impossible"),
    (dict(grid_size=(7, 7), context_scale=(0.05, 0.05), min_keep=10), "min_keep"),
    (dict(grid_size=(8, 8), target_scale=(0.3, 0.2)), "target_scale"),
    (dict(grid_size=(8, 8), target_scale=(0.1, 1.5)), "target_scale"),
    (dict(grid_size=(8, 8), context_scale=(0.0, 0.5)), "context_scale"),
    (dict(grid_size=(8, 8), target_aspect=(-1.0, 2.0)), "target_aspect"),
    (dict(grid_size=(8, 8), n_targets=0), "n_targets"),
    (dict(grid_size=(0, 8)), "grid_size"),
])
def test_impossible_parameters_raise_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiBlockMasker(**kwargs)


@pytest.mark.parametrize("grid", [(7, 7), (8, 8)])
def test_small_grids_where_the_reference_hung(grid):
    """The reference's min_keep=10 made 7x7 and 8x8 grids loop forever; the defaults here just work."""
    context, targets = MultiBlockMasker(grid).sample(64, torch.Generator().manual_seed(0))
    assert context.shape[0] == 64 and len(targets) == 4


def test_unlucky_draws_give_up_with_a_clear_error():
    """Parameters that are possible but almost never satisfied fail after max_tries instead of hanging."""
    m = MultiBlockMasker((4, 4), n_targets=8, target_scale=(0.25, 0.25), target_aspect=(1.0, 1.0), min_keep=8,
                         max_tries=5)
    with pytest.raises(RuntimeError, match="min_keep"):
        m.sample(64, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("grid", [(8, 8), (7, 7), (14, 14)])
def test_random_and_block_strategies_use_the_complement(grid):
    N = grid[0] * grid[1]
    g = torch.Generator().manual_seed(0)
    for masker in (RandomMasker(grid, ratio=0.6), BlockMasker(grid, scale=0.6)):
        context, targets = masker.sample(8, g)
        assert len(targets) == 1
        ctx, tgt = indices_to_mask(context, N), indices_to_mask(targets[0], N)
        assert not (ctx & tgt).any() and (ctx | tgt).all()
        assert abs(targets[0].shape[1] / N - 0.6) < 0.15
    _, (block,) = BlockMasker(grid).sample(8, g)
    assert all(is_rectangle(row, grid[1]) for row in block)


@pytest.mark.parametrize("grid", [(8, 8), (7, 7)])
def test_rasterized_predicts_three_quadrants_from_one(grid):
    H, W = grid
    context, targets = RasterizedMasker(grid).sample(16, torch.Generator().manual_seed(0))
    assert len(targets) == 3
    blocks = [context, *targets]
    assert all(b.shape == (16, (H // 2) * (W // 2)) for b in blocks)
    for i in range(16):
        rows = [b[i] for b in blocks]
        assert all(is_rectangle(r, W) for r in rows)
        assert len(torch.cat(rows).unique()) == 4 * (H // 2) * (W // 2)  # four disjoint quadrants
    assert len({int(c[0]) for c in context}) > 1  # the context quadrant changes from image to image


def test_make_masker_and_mask_grid():
    m = make_masker("block", (8, 8), scale=0.5)
    assert isinstance(m, BlockMasker)
    with pytest.raises(ValueError, match="multiblock"):
        make_masker("checkerboard", (8, 8))
    context = torch.tensor([[0, 1]])
    targets = [torch.tensor([[2, 3]]), torch.tensor([[3, 4]])]
    grid = mask_grid(context, targets, (2, 3))
    assert grid.tolist() == [[[1, 1, 2], [3, 3, 0]]]  # later targets paint over earlier ones
