"""The Vision Transformer used as I-JEPA's context encoder, target encoder and (narrow) predictor.

I-JEPA (Assran et al., CVPR 2023, §3 and App. A) uses a standard ViT (Dosovitskiy et al., 2021) with three details:
fixed 2-D sin-cos position embeddings, *no* [CLS] token, and position embeddings added to every patch *before*
the context encoder drops the patches it must not see. This file builds that ViT from small pieces:

    images (B, C, H, W) --patchify--> (B, N, P*P*C) --linear--> (B, N, D) --+pos--> keep K of N --> blocks --> norm
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


def to_2tuple(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, P*P*C), patches in row-major order (patch index = r * W_grid + c)."""
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


def sincos_pos_embed(dim: int, grid_size: int | tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (MAE / I-JEPA style): (H*W, dim), row-major.

    Half of the channels encode the row, half the column; each half is [sin(p * w_k), cos(p * w_k)] over
    dim/4 frequencies w_k = 10000^(-k / (dim/4)).
    """
    gh, gw = to_2tuple(grid_size)
    if dim % 4 != 0:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got dim={dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64),
                                indexing="ij")

    def embed_1d(pos: torch.Tensor) -> torch.Tensor:  # (H*W,) -> (H*W, dim/2)
        angles = pos.reshape(-1, 1) * omega  # (H*W, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([embed_1d(rows), embed_1d(cols)], dim=1).float()  # (H*W, dim)


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick tokens by patch index: x (B, N, D), index (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def check_index(index: torch.Tensor, num_patches: int, name: str = "keep") -> None:
    """Early, clear errors for index tensors (the range check runs only on CPU tensors: it needs their values)."""
    if not isinstance(index, torch.Tensor) or index.dtype != torch.long:
        raise TypeError(f"{name} must be a LongTensor of patch indices, got {getattr(index, 'dtype', type(index))}")
    if index.ndim != 2 or index.shape[1] == 0:
        raise ValueError(f"{name} must have shape (B, K) with K >= 1, got {tuple(index.shape)}")
    if index.device.type == "cpu" and (index.min() < 0 or index.max() >= num_patches):
        raise ValueError(f"{name} holds indices outside [0, {num_patches}): "
                         f"min {int(index.min())}, max {int(index.max())}")


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)  # qkv bias, as in the reference
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D)
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d): flash / memory-efficient kernels when available
        return self.proj(rearrange(x, "b h n d -> b n (h d)"))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module, depth: int) -> None:
    """Reference init: trunc-normal(0.02) Linear weights, zero biases, unit LayerNorms; then each block's output
    projections are scaled by 1/sqrt(2 * layer) so deep residual streams start small."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for layer, block in enumerate(module.blocks, start=1):
        with torch.no_grad():
            block.attn.proj.weight.div_(math.sqrt(2.0 * layer))
            block.mlp[2].weight.div_(math.sqrt(2.0 * layer))


class ViT(nn.Module):
    """ViT encoder without [CLS] token. `forward(images, keep)` encodes only the patches listed in `keep`."""

    def __init__(self, img_size: int | tuple[int, int], patch_size: int, in_chans: int = 3, dim: int = 192,
                 depth: int = 12, heads: int = 3, mlp_ratio: float = 4.0, embed_init: str = "reference"):
        super().__init__()
        self.img_size = to_2tuple(img_size)
        if embed_init not in ("reference", "xavier"):
            raise ValueError(f"embed_init must be 'reference' or 'xavier', got {embed_init!r}")
        if any(s % patch_size for s in self.img_size):
            raise ValueError(f"image size {self.img_size} is not divisible by patch size {patch_size}; "
                             f"pick a patch size that divides it (e.g. 4 for 28 or 32 px, 16 for 224 px)")
        self.patch_size, self.in_chans, self.dim = patch_size, in_chans, dim
        self.depth, self.heads, self.mlp_ratio = depth, heads, mlp_ratio
        self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.patch_embed = nn.Linear(patch_size * patch_size * in_chans, dim)
        self.register_buffer("pos_embed", sincos_pos_embed(dim, self.grid_size)[None], persistent=False)  # (1, N, D)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        init_weights(self, depth)
        if embed_init == "xavier":  # MAE's choice: the patch embedding's output scale no longer shrinks with the
            nn.init.xavier_uniform_(self.patch_embed.weight)  # patch (std 0.02 * sqrt(16) = 0.08 for 4x4 gray)

    def check_images(self, images: torch.Tensor) -> None:
        if images.ndim != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
        if images.shape[1] != self.in_chans:
            raise ValueError(f"expected {self.in_chans} channel(s), got {images.shape[1]}: build the ViT with "
                             f"in_chans={images.shape[1]} (1 for Fashion-MNIST, 3 for RGB)")
        if tuple(images.shape[2:]) != self.img_size:
            raise ValueError(f"expected {self.img_size[0]}x{self.img_size[1]} images, got "
                             f"{images.shape[2]}x{images.shape[3]}: resize them or build the ViT with that size")

    def embed(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Patch embedding + position embedding, then keep only the patches in `keep`: (B, K, D)."""
        self.check_images(images)
        x = self.patch_embed(patchify(images, self.patch_size)) + self.pos_embed  # (B, N, D)
        if keep is not None:
            check_index(keep, self.num_patches)
            if keep.shape[0] != x.shape[0]:
                raise ValueError(f"keep has {keep.shape[0]} rows but there are {x.shape[0]} images")
            x = gather_tokens(x, keep)  # (B, K, D): positions were added first, so each token knows where it was
        return x

    def forward(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, C, H, W), keep (B, K) patch indices or None for all -> (B, K, D), layer-normed."""
        x = self.embed(images, keep)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_layers(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every block's output, each passed through the final norm: depth x (B, K, D). The last equals forward()."""
        x, outs = self.embed(images, keep), []
        for block in self.blocks:
            x = block(x)
            outs.append(self.norm(x))
        return outs


# Paper sizes (App. A): width / depth / heads. Patch and image size depend on the data (16 px patches at 224 px).
def vit_tiny(img_size: int | tuple[int, int] = 224, patch_size: int = 16, **kwargs) -> ViT:
    return ViT(img_size, patch_size, dim=192, depth=12, heads=3, **kwargs)


def vit_small(img_size: int | tuple[int, int] = 224, patch_size: int = 16, **kwargs) -> ViT:
    return ViT(img_size, patch_size, dim=384, depth=12, heads=6, **kwargs)


def vit_base(img_size: int | tuple[int, int] = 224, patch_size: int = 16, **kwargs) -> ViT:
    return ViT(img_size, patch_size, dim=768, depth=12, heads=12, **kwargs)


VIT_PRESETS = {"vit_tiny": vit_tiny, "vit_small": vit_small, "vit_base": vit_base}
