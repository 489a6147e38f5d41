"""The ViT that I-JEPA uses as context encoder, target encoder and (narrow) predictor backbone.

I-JEPA's encoder is a plain ViT with three details that matter for the method: fixed 2-D sin-cos position
embeddings, no [CLS] token, and position embeddings added *before* the context encoder drops the patches it must not
see. These tests pin down those details, the patch layout every masker relies on (patch index = r * W + c), and the
errors a student meets when the data does not fit the model.
"""
from __future__ import annotations

import pytest
import torch

from minijepa import ViT, patchify, sincos_pos_embed, vit_base, vit_small, vit_tiny


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning worker threads can
    make them 10-50x slower: run each test on one thread, then restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_vit(img_size=(8, 12), patch_size=4, in_chans=3, dim=32, depth=2, heads=2) -> ViT:
    torch.manual_seed(0)
    return ViT(img_size, patch_size, in_chans=in_chans, dim=dim, depth=depth, heads=heads)


def images_for(vit: ViT, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, vit.in_chans, *vit.img_size, generator=g)


def patch_pixels(images: torch.Tensor, patch_size: int, index: int, grid_w: int) -> torch.Tensor:
    """The pixels of patch `index` by hand: rows/cols of the image slice, flattened as (p1, p2, c)."""
    r, c = divmod(index, grid_w)
    block = images[:, :, r * patch_size:(r + 1) * patch_size, c * patch_size:(c + 1) * patch_size]  # (B, C, P, P)
    return block.permute(0, 2, 3, 1).reshape(images.shape[0], -1)


def keep_mask(keep: torch.Tensor, num_patches: int) -> torch.Tensor:
    return torch.zeros(keep.shape[0], num_patches, dtype=torch.bool).scatter_(1, keep, True)


def pixel_mask_of_patches(vit: ViT, patches: torch.Tensor) -> torch.Tensor:
    """(B, N) boolean patch mask -> (B, 1, H, W) boolean pixel mask."""
    gh, gw = vit.grid_size
    p = vit.patch_size
    return patches.view(-1, 1, gh, 1, gw, 1).expand(-1, 1, gh, p, gw, p).reshape(-1, 1, gh * p, gw * p)


# --------------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("img_size,patch_size,in_chans", [((8, 12), 4, 3), (16, 4, 1), ((12, 8), 2, 2)])
def test_output_shapes_with_and_without_keep(img_size, patch_size, in_chans):
    """Without `keep` the encoder returns one token per patch (the target encoder's view); with `keep` only the
    kept patches (the context encoder's view). No [CLS] token is prepended."""
    vit = tiny_vit(img_size, patch_size, in_chans)
    x = images_for(vit, batch=3)
    N = vit.num_patches
    assert N == (vit.img_size[0] // patch_size) * (vit.img_size[1] // patch_size)
    assert vit(x).shape == (3, N, vit.dim)
    keep = torch.stack([torch.randperm(N, generator=torch.Generator().manual_seed(i))[:3] for i in range(3)])
    assert vit(x, keep).shape == (3, 3, vit.dim)


def test_forward_layers_returns_every_block_and_the_last_equals_forward():
    """`forward_layers` gives depth normed outputs (used by the 'last 4 layers' evaluation); the last is forward()."""
    vit = tiny_vit(depth=3)
    x = images_for(vit)
    keep = torch.tensor([[0, 2, 5], [1, 3, 4]])
    for k in (None, keep):
        layers = vit.forward_layers(x, k)
        assert len(layers) == vit.depth == 3
        assert all(t.shape == layers[-1].shape for t in layers)
        torch.testing.assert_close(layers[-1], vit(x, k), rtol=0, atol=0)
        assert not torch.allclose(layers[0], layers[-1]), "the blocks should change the tokens"


# --------------------------------------------------------------------------------------- position embedding


@pytest.mark.parametrize("dim,grid", [(32, (14, 14)), (64, (14, 14)), (32, (6, 10))])
def test_sincos_embedding_shape_range_and_distinct_rows(dim, grid):
    """One fixed (not learned) vector per patch, row-major; sin/cos values lie in [-1, 1]; no two patches share a
    position code (otherwise the predictor could not tell which patch a mask token stands for)."""
    pe = sincos_pos_embed(dim, grid)
    N = grid[0] * grid[1]
    assert pe.shape == (N, dim) and pe.dtype == torch.float32
    assert pe.min() >= -1.0 and pe.max() <= 1.0
    pairwise = torch.cdist(pe.double(), pe.double())
    pairwise.fill_diagonal_(float("inf"))
    assert pairwise.min() > 1e-3, "two patches have (almost) the same position embedding"
    # row-major: the first half encodes the row, the second half the column
    rows = torch.arange(N) // grid[1]
    first_half = pe[:, : dim // 2]
    assert torch.equal(first_half[rows == 0], first_half[0].expand(grid[1], -1))


@pytest.mark.parametrize("dim", [32, 64])
def test_sincos_nearby_patches_are_more_similar_than_far_ones(dim):
    """Sin-cos codes are smooth in space: every patch's direct neighbours are more similar (dot product) to it than
    any patch two or more steps away, and the mean similarity decreases with distance."""
    H = W = 14
    pe = sincos_pos_embed(dim, (H, W)).double()
    sim = pe @ pe.T
    r, c = torch.arange(H * W) // W, torch.arange(H * W) % W
    dist = ((r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2).double().sqrt()
    neighbours = sim[dist == 1]
    far = sim[dist >= 2]
    assert neighbours.min() > far.max(), (neighbours.min().item(), far.max().item())
    means = [sim[(dist >= d) & (dist < d + 1)].mean().item() for d in (1, 2, 3, 5, 8, 12)]
    assert means == sorted(means, reverse=True), means


def test_sincos_needs_dim_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed(30, 4)


def test_position_embedding_is_a_fixed_buffer_not_a_parameter():
    """I-JEPA keeps the sin-cos position embedding fixed: it must not be trained or EMA-averaged."""
    vit = tiny_vit()
    assert "pos_embed" not in dict(vit.named_parameters())
    torch.testing.assert_close(vit.pos_embed[0], sincos_pos_embed(vit.dim, vit.grid_size))


# ---------------------------------------------------------------------------------------------- patchify


@pytest.mark.parametrize("C", [1, 3])
def test_patchify_layout_matches_manual_slicing(C):
    """Patch index r * W + c holds exactly the pixels of grid cell (r, c), flattened as (p1, p2, channel): this is
    the layout every masker's patch indices refer to. Non-square 8x12 image, patch 4 -> 2x3 grid."""
    P, H, W = 4, 8, 12
    images = torch.arange(2 * C * H * W, dtype=torch.float32).view(2, C, H, W)  # every pixel value unique
    patches = patchify(images, P)
    assert patches.shape == (2, (H // P) * (W // P), P * P * C)
    for index in range((H // P) * (W // P)):
        assert torch.equal(patches[:, index], patch_pixels(images, P, index, W // P)), f"patch {index}"


def test_patchify_is_a_lossless_rearrangement():
    """Patchify only moves pixels around: every pixel appears exactly once."""
    images = torch.randn(3, 3, 8, 12)
    patches = patchify(images, 4)
    assert torch.equal(patches.flatten().sort().values, images.flatten().sort().values)


# -------------------------------------------------------------------- the context encoder sees only `keep`


def test_context_encoder_ignores_pixels_of_dropped_patches():
    """The context encoder must not leak information from patches it drops: changing the pixels of every patch
    outside `keep` leaves its output unchanged, while changing a single kept patch changes it."""
    vit = tiny_vit()
    x = images_for(vit)
    keep = torch.tensor([[0, 4, 5], [1, 2, 3]])
    kept_pixels = pixel_mask_of_patches(vit, keep_mask(keep, vit.num_patches))  # (B, 1, H, W)
    noise = torch.randn_like(x) * 10
    x_dropped_changed = torch.where(kept_pixels, x, x + noise)
    assert not torch.equal(x_dropped_changed, x)
    out = vit(x, keep)
    torch.testing.assert_close(vit(x_dropped_changed, keep), out, rtol=1e-6, atol=1e-6)

    x_kept_changed = x.clone()
    x_kept_changed[1, :, 0:4, 8:12] += 1.0  # patch 2 of image 1 (row 0, col 2) is kept
    out2 = vit(x_kept_changed, keep)
    assert not torch.allclose(out2[1], out[1], atol=1e-4), "a kept patch did not influence the output"
    torch.testing.assert_close(out2[0], out[0], rtol=1e-6, atol=1e-6)  # images are encoded independently


def test_position_is_added_before_dropping():
    """Each kept token still knows where it came from: the same pixels kept at a different index give a
    different token (positions are added before patches are dropped)."""
    vit = tiny_vit()
    x = torch.zeros(1, 3, 8, 12)  # every patch identical
    a, b = vit(x, torch.tensor([[0]])), vit(x, torch.tensor([[5]]))
    assert not torch.allclose(a, b, atol=1e-4)


def test_keep_order_only_permutes_tokens():
    """Without a [CLS] token and with positions baked into the tokens, the encoder is permutation-equivariant:
    listing the kept patches in another order yields the same tokens in that order."""
    vit = tiny_vit()
    x = images_for(vit)
    keep = torch.tensor([[0, 2, 3, 5], [1, 2, 4, 5]])
    perm = torch.tensor([2, 0, 3, 1])
    out = vit(x, keep)
    torch.testing.assert_close(vit(x, keep[:, perm]), out[:, perm], rtol=1e-5, atol=1e-5)


def test_keep_all_patches_in_order_equals_no_keep():
    vit = tiny_vit()
    x = images_for(vit)
    all_patches = torch.arange(vit.num_patches).expand(2, -1)
    torch.testing.assert_close(vit(x, all_patches), vit(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------- errors


def test_image_size_not_divisible_by_patch_size():
    with pytest.raises(ValueError, match="patch size"):
        ViT(30, 4, dim=32, depth=1, heads=2)
    with pytest.raises(ValueError, match="patch size"):
        ViT((32, 30), 4, dim=32, depth=1, heads=2)


def test_dim_not_divisible_by_heads():
    with pytest.raises(ValueError, match="divisible by heads"):
        ViT(8, 4, dim=32, depth=1, heads=3)


@pytest.mark.parametrize("shape,match", [
    ((2, 1, 8, 12), r"expected 3 channel\(s\), got 1.*in_chans=1"),
    ((2, 3, 12, 8), r"expected 8x12 images, got 12x8"),
    ((2, 3, 8, 16), r"expected 8x12 images, got 8x16"),
    ((3, 8, 12), r"\(B, C, H, W\)"),
])
def test_wrong_images_raise_clear_errors(shape, match):
    vit = tiny_vit()
    with pytest.raises(ValueError, match=match):
        vit(torch.zeros(shape))


@pytest.mark.parametrize("keep,error,match", [
    (torch.tensor([[0, 1], [2, 3]], dtype=torch.int32), TypeError, "LongTensor"),
    (torch.tensor([[0.0, 1.0], [2.0, 3.0]]), TypeError, "LongTensor"),
    ([[0, 1], [2, 3]], TypeError, "LongTensor"),
    (torch.empty(2, 0, dtype=torch.long), ValueError, r"K >= 1"),
    (torch.tensor([0, 1]), ValueError, r"shape \(B, K\)"),
    (torch.tensor([[0, -1], [2, 3]]), ValueError, r"outside \[0, 6\).*min -1"),
    (torch.tensor([[0, 6], [2, 3]]), ValueError, r"outside \[0, 6\).*max 6"),
    (torch.tensor([[0, 1], [2, 3], [4, 5]]), ValueError, "3 rows but there are 2 images"),
    (torch.tensor([[0, 1]]), ValueError, "1 rows but there are 2 images"),
])
def test_bad_keep_raises_clear_errors(keep, error, match):
    """Bad patch indices fail loudly instead of silently gathering the wrong tokens (gather would happily wrap or
    crash deep inside torch)."""
    vit = tiny_vit()  # 8x12 image, patch 4 -> 6 patches
    with pytest.raises(error, match=match):
        vit(images_for(vit), keep)


# ------------------------------------------------------------------------------------------------ presets


def expected_param_count(vit: ViT) -> int:
    """Count the parameters from the module definition: patch embedding Linear(P*P*C, D); per block two LayerNorms
    (2D each), qkv Linear(D, 3D), proj Linear(D, D), MLP Linear(D, rD) + Linear(rD, D); a final LayerNorm.
    (With r = 4 a block is 12 D^2 + 13 D.) The sin-cos position embedding is a buffer, not a parameter."""
    D, P, C = vit.dim, vit.patch_size, vit.in_chans
    hidden = int(D * vit.mlp_ratio)
    block = 2 * (2 * D) + (D * 3 * D + 3 * D) + (D * D + D) + (D * hidden + hidden) + (hidden * D + D)
    return (P * P * C * D + D) + vit.depth * block + 2 * D


@pytest.mark.parametrize("make,dims,approx_millions", [
    (vit_tiny, (192, 12, 3), 5.5),
    (vit_small, (384, 12, 6), 21.7),
    (vit_base, (768, 12, 12), 85.6),
])
def test_presets_have_the_paper_sizes(make, dims, approx_millions):
    """vit_tiny / vit_small / vit_base are the paper's widths, depths and heads; their parameter counts follow
    exactly from the architecture and land near the well-known 5.5M / 22M / 86M of ViT-Ti/S/B-16 (no CLS, no head)."""
    vit = make(img_size=32, patch_size=16)  # image size does not change the parameter count; keeps the test fast
    assert (vit.dim, vit.depth, vit.heads) == dims
    assert vit.patch_size == 16 and vit.in_chans == 3 and vit.mlp_ratio == 4.0
    n = sum(p.numel() for p in vit.parameters())
    D = vit.dim
    assert n == expected_param_count(vit)
    assert n == 12 * (12 * D * D + 13 * D) + (16 * 16 * 3 * D + D) + 2 * D
    assert abs(n / 1e6 - approx_millions) < 0.05 * approx_millions, n


def test_preset_defaults_are_224_pixels_with_16_pixel_patches():
    vit = vit_tiny()
    assert vit.img_size == (224, 224) and vit.grid_size == (14, 14) and vit.num_patches == 196


def test_xavier_patch_embedding_keeps_content_visible_next_to_positions():
    """With 4x4 grey patches the reference init (std 0.02) makes patch content ~6x smaller than the sin-cos
    positions; MAE's xavier init of the patch projection brings it to the same scale."""
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    scale = {}
    for init in ("reference", "xavier"):
        torch.manual_seed(0)
        vit = ViT(28, 4, in_chans=1, dim=128, depth=1, heads=4, embed_init=init)
        scale[init] = vit.patch_embed(patchify(x, 4)).std() / vit.pos_embed.std()
    assert scale["reference"] < 0.25 < 0.6 < scale["xavier"] < 1.5, scale
    with pytest.raises(ValueError, match="embed_init"):
        ViT(28, 4, in_chans=1, dim=128, depth=1, heads=4, embed_init="kaiming")
