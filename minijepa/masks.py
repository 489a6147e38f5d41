"""Which patches the context encoder sees, and which ones the predictor must predict (paper §3, Fig. 4, Table 6).

Every masker works on a grid of H x W patches (patch index = r * W + c) and returns, for a batch of B images,

    context  LongTensor (B, Kc)                     patches the context encoder sees
    targets  list of LongTensors (B, Kt_i)          one per target block: patches the predictor must predict

with the invariant that no context patch is a target patch. Row lengths are equal within a batch (so batches
stack without padding): block sizes are drawn once per batch, positions once per image.

`MultiBlockMasker` is I-JEPA's strategy. It fixes four defects of the reference collator (notebook A1 shows each one):
  1. impossible parameters raise a ValueError instead of looping forever (try a 7x7 grid with big targets);
  2. block origins are uniform over *every* valid position, the last row and column included;
  3. scale and aspect ratio are drawn independently;
  4. context rows are shortened to the batch minimum by keeping a *random* subset, not the first K in raster
     order (which starved the bottom-right of the image of context).
The paper's comparison strategies (Table 6) share the same interface: `RandomMasker`, `BlockMasker`,
`RasterizedMasker`.
"""
from __future__ import annotations

import math

import torch

from .vit import to_2tuple

Masks = tuple[torch.Tensor, list[torch.Tensor]]


def _check_range(name: str, r: tuple[float, float], lo: float, hi: float) -> tuple[float, float]:
    a, b = float(r[0]), float(r[1])
    if not (lo < a <= b <= hi):
        raise ValueError(f"{name} must satisfy {lo} < low <= high <= {hi}, got {r}")
    return a, b


def _uniform(r: tuple[float, float], generator: torch.Generator | None) -> float:
    return r[0] + (r[1] - r[0]) * torch.rand((), generator=generator).item()


def block_shape(scale: float, aspect: float, grid_size: tuple[int, int]) -> tuple[int, int]:
    """Height and width (in patches) of a block covering `scale` of the grid with height/width ratio `aspect`."""
    H, W = grid_size
    area = scale * H * W
    h = min(max(round(math.sqrt(area * aspect)), 1), H)
    w = min(max(round(math.sqrt(area / aspect)), 1), W)
    return h, w


def place_blocks(batch_size: int, n: int, h: int, w: int, grid_size: tuple[int, int],
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """n blocks of h x w patches per image at uniformly random origins: (B, n, h*w) patch indices, row-major."""
    H, W = grid_size
    top = torch.randint(0, H - h + 1, (batch_size, n, 1, 1), generator=generator)  # every origin, last row included
    left = torch.randint(0, W - w + 1, (batch_size, n, 1, 1), generator=generator)
    rows = top + torch.arange(h).view(1, 1, h, 1)  # (B, n, h, 1)
    cols = left + torch.arange(w).view(1, 1, 1, w)  # (B, n, 1, w)
    return (rows * W + cols).flatten(2)  # (B, n, h*w)


def indices_to_mask(index: torch.Tensor, num_patches: int) -> torch.Tensor:
    """(B, K) patch indices -> (B, N) boolean mask."""
    return torch.zeros(index.shape[0], num_patches, dtype=torch.bool).scatter_(1, index, True)


def random_subset(mask: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """From each row of a (B, N) boolean mask, pick k of its True positions uniformly at random: (B, k), sorted."""
    scores = torch.rand(mask.shape, generator=generator).masked_fill_(~mask, 2.0)  # unselectable -> last
    return scores.topk(k, dim=1, largest=False).indices.sort(dim=1).values


def mask_grid(context: torch.Tensor, targets: list[torch.Tensor], grid_size: tuple[int, int]) -> torch.Tensor:
    """Paint masks for plotting: (B, H, W) long with 0 = unused, 1 = context, 2 + i = target block i."""
    H, W = to_2tuple(grid_size)
    canvas = torch.zeros(context.shape[0], H * W, dtype=torch.long)
    canvas.scatter_(1, context.cpu(), 1)
    for i, t in enumerate(targets):
        canvas.scatter_(1, t.cpu(), 2 + i)
    return canvas.view(-1, H, W)


class Masker:
    """Common interface: `sample(batch_size, generator) -> (context (B, Kc), [target (B, Kt_i), ...])`."""

    def __init__(self, grid_size: int | tuple[int, int]):
        self.grid_size = to_2tuple(grid_size)
        if min(self.grid_size) < 1:
            raise ValueError(f"grid_size must be positive, got {grid_size}")
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Masks:
        raise NotImplementedError

    __call__ = sample


class MultiBlockMasker(Masker):
    """I-JEPA's multi-block masking (§3): `n_targets` target blocks of scale ~ U(target_scale) and aspect
    ~ U(target_aspect); one context block of scale ~ U(context_scale), aspect 1, with every target patch removed.
    Sizes are drawn per batch, positions per image; at least `min_keep` context patches are kept."""

    def __init__(self, grid_size: int | tuple[int, int], n_targets: int = 4,
                 target_scale: tuple[float, float] = (0.15, 0.2), target_aspect: tuple[float, float] = (0.75, 1.5),
                 context_scale: tuple[float, float] = (0.85, 1.0), context_aspect: tuple[float, float] = (1.0, 1.0),
                 min_keep: int = 4, max_tries: int = 100):
        super().__init__(grid_size)
        if n_targets < 1:
            raise ValueError(f"n_targets must be at least 1, got {n_targets}")
        self.n_targets, self.min_keep, self.max_tries = n_targets, min_keep, max_tries
        self.target_scale = _check_range("target_scale", target_scale, 0.0, 1.0)
        self.context_scale = _check_range("context_scale", context_scale, 0.0, 1.0)
        self.target_aspect = _check_range("target_aspect", target_aspect, 0.0, math.inf)
        self.context_aspect = _check_range("context_aspect", context_aspect, 0.0, math.inf)
        # Feasibility, before any sampling: the biggest context block must be able to keep `min_keep` patches next to
        # the biggest target block any draw can produce. (The reference instead retried forever.)
        if min_keep < 1:
            raise ValueError(f"min_keep must be at least 1 (the context encoder needs a patch to see), got {min_keep}")
        max_context = min(self._area_range(self.context_scale, self.context_aspect)[1],
                          self.num_patches - self._area_range(self.target_scale, self.target_aspect)[1])
        if min_keep > max_context:
            H, W = self.grid_size
            raise ValueError(
                f"impossible masks on a {H}x{W} grid: at most {max_context} context patches can remain next to the "
                f"targets, but min_keep={min_keep}. Lower min_keep, shrink target_scale {self.target_scale}, "
                f"grow context_scale {self.context_scale}, or use a finer grid (smaller patches).")

    def _area_range(self, scale: tuple[float, float], aspect: tuple[float, float]) -> tuple[int, int]:
        """Smallest and largest block area (in patches) these ranges can produce after rounding and clipping."""
        areas = [h * w for s in torch.linspace(*scale, 17).tolist() for a in torch.linspace(*aspect, 17).tolist()
                 for h, w in [block_shape(s, a, self.grid_size)]]
        return min(areas), max(areas)

    def blocks(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The blocks before the context is cut to one length: each image's context mask, (B, N) bool (the context
        block minus every target patch), and the target blocks' patch indices, (B, M, Kt)."""
        g, N = generator, self.num_patches
        th, tw = block_shape(_uniform(self.target_scale, g), _uniform(self.target_aspect, g), self.grid_size)
        ch, cw = block_shape(_uniform(self.context_scale, g), _uniform(self.context_aspect, g), self.grid_size)
        targets = torch.empty(batch_size, self.n_targets, th * tw, dtype=torch.long)  # (B, M, Kt)
        context = torch.zeros(batch_size, N, dtype=torch.bool)  # (B, N)
        redo = torch.ones(batch_size, dtype=torch.bool)
        for _ in range(self.max_tries):  # redraw positions for images whose context came out too small
            n = int(redo.sum())
            targets[redo] = place_blocks(n, self.n_targets, th, tw, self.grid_size, g)
            block = indices_to_mask(place_blocks(n, 1, ch, cw, self.grid_size, g)[:, 0], N)  # (n, N)
            context[redo] = block & ~indices_to_mask(targets[redo].flatten(1), N)
            redo = context.sum(1) < self.min_keep
            if not redo.any():
                break
        else:
            raise RuntimeError(
                f"after {self.max_tries} draws, {int(redo.sum())} image(s) still had fewer than min_keep="
                f"{self.min_keep} context patches with {th}x{tw} targets and a {ch}x{cw} context block on a "
                f"{self.grid_size} grid: lower min_keep or n_targets, or shrink target_scale")
        return context, targets

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Masks:
        context, targets = self.blocks(batch_size, generator)  # (B, N), (B, M, Kt)
        keep = int(context.sum(1).min())  # equalise lengths across the batch with a *random* subset per image
        return random_subset(context, keep, generator), list(targets.unbind(1))


class RandomMasker(Masker):
    """Table 6 'random': the target is a random `ratio` of all patches (one scattered 'block'); context = the rest."""

    def __init__(self, grid_size: int | tuple[int, int], ratio: float = 0.6):
        super().__init__(grid_size)
        self.n_target = round(_check_range("ratio", (ratio, ratio), 0.0, 1.0)[0] * self.num_patches)
        if not 1 <= self.n_target < self.num_patches:
            raise ValueError(f"ratio={ratio} leaves no target or no context on a {self.grid_size} grid")

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Masks:
        order = torch.rand(batch_size, self.num_patches, generator=generator).argsort(dim=1)  # random permutation
        target, context = order[:, :self.n_target], order[:, self.n_target:]
        return context.sort(dim=1).values, [target.sort(dim=1).values]


class BlockMasker(Masker):
    """Table 6 'block': one big target block (scale 0.6 in the paper); the context is its complement."""

    def __init__(self, grid_size: int | tuple[int, int], scale: float = 0.6,
                 aspect: tuple[float, float] = (0.75, 1.5)):
        super().__init__(grid_size)
        self.scale = _check_range("scale", (scale, scale), 0.0, 1.0)[0]
        self.aspect = _check_range("aspect", aspect, 0.0, math.inf)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Masks:
        h, w = block_shape(self.scale, _uniform(self.aspect, generator), self.grid_size)
        if h * w >= self.num_patches:
            raise ValueError(f"a {h}x{w} target block covers the whole {self.grid_size} grid: lower scale")
        target = place_blocks(batch_size, 1, h, w, self.grid_size, generator)[:, 0]  # (B, h*w)
        rest = ~indices_to_mask(target, self.num_patches)  # every row has N - h*w True entries
        return rest.nonzero()[:, 1].view(batch_size, -1), [target]


class RasterizedMasker(Masker):
    """Table 6 'rasterized': one quadrant is the context, the other three are the targets. On odd grids the
    quadrants are (H//2) x (W//2) corners, so the middle row/column is neither context nor target."""

    def __init__(self, grid_size: int | tuple[int, int]):
        super().__init__(grid_size)
        H, W = self.grid_size
        if H < 2 or W < 2:
            raise ValueError(f"rasterized masking needs at least a 2x2 grid, got {self.grid_size}")
        h, w = H // 2, W // 2
        rows, cols = torch.arange(h).view(h, 1), torch.arange(w).view(1, w)
        corners = [(0, 0), (0, W - w), (H - h, W - w), (H - h, 0)]  # clockwise from the top-left
        self.quadrants = torch.stack([((rows + r) * W + cols + c).flatten() for r, c in corners])  # (4, h*w)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Masks:
        first = torch.randint(0, 4, (batch_size,), generator=generator)  # which quadrant is the context
        order = (first[:, None] + torch.arange(4)) % 4  # (B, 4): context, then the others clockwise
        quads = self.quadrants[order]  # (B, 4, h*w)
        return quads[:, 0], list(quads[:, 1:].unbind(1))


MASKERS = {"multiblock": MultiBlockMasker, "random": RandomMasker, "block": BlockMasker,
           "rasterized": RasterizedMasker}


def make_masker(strategy: str, grid_size: int | tuple[int, int], **kwargs) -> Masker:
    """Build a masker by name: 'multiblock' (I-JEPA), 'random', 'block' or 'rasterized' (paper Table 6)."""
    if strategy not in MASKERS:
        raise ValueError(f"unknown masking strategy {strategy!r}; choose one of {sorted(MASKERS)}")
    return MASKERS[strategy](grid_size, **kwargs)
