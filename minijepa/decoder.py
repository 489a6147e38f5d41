"""A pixel decoder for frozen patch features: a light version of the paper's predictor visualisation (Fig. 6).

I-JEPA never decodes pixels. To *look* at what its predictor outputs, the paper (Assran et al., CVPR 2023, Fig. 6)
freezes the model and trains a separate generative decoder (RCDM, Bordes et al. 2022) that maps representations back
to images. This module does the same in miniature and deterministically:

    features (B, N, D)  --PatchDecoder (one small MLP per token)-->  (B, N, P*P*C) normalised pixels
                        --unpatchify, * std + mean-->                (B, C, H, W) image in [0, 1] units

`train_decoder` fits the decoder by MSE on the *target* features of a frozen encoder, layer-normed over the feature
dim exactly as `IJEPA.target_features` normalises the training targets. The predictor is trained to output that
same space, so its predictions can be pasted into the grid in place of target features and decoded by the same
decoder (notebook 10). The decoder works token by token: a token's pixels come from that token alone, so a decoded
patch shows what its feature vector says about its own place in the image. An MSE decoder draws the *average* image
consistent with a feature, so it is blurry wherever the feature leaves the pixels uncertain; RCDM samples instead.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .data import normalise
from .vit import ViT, patchify, to_2tuple


class PatchDecoder(nn.Module):
    """Per-token MLP: (B, N, dim) features -> (B, N, P*P*C) pixels in normalised units (`depth` hidden layers of
    width `hidden`; depth 0 = one linear map). `mean`/`std` (C,) are kept to map outputs back to [0, 1] units."""

    def __init__(self, dim: int, patch_size: int, in_chans: int = 1, hidden: int = 256, depth: int = 2,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.dim, self.patch_size, self.in_chans = dim, patch_size, in_chans
        layers, width = [], dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        self.mlp = nn.Sequential(*layers, nn.Linear(width, patch_size * patch_size * in_chans))
        self.register_buffer("mean", torch.zeros(in_chans) if mean is None else torch.as_tensor(mean).float().view(-1))
        self.register_buffer("std", torch.ones(in_chans) if std is None else torch.as_tensor(std).float().view(-1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 3 or features.shape[-1] != self.dim:
            raise ValueError(f"expected features of shape (B, N, {self.dim}), got {tuple(features.shape)}")
        return self.mlp(features)  # (B, N, P*P*C)


def unpatchify(patches: torch.Tensor, patch_size: int, grid_size: int | tuple[int, int]) -> torch.Tensor:
    """Inverse of `vit.patchify`: (B, N, P*P*C) with N = H*W patches in row-major order -> (B, C, H*P, W*P)."""
    h, w = to_2tuple(grid_size)
    if patches.ndim != 3 or patches.shape[1] != h * w or patches.shape[2] % (patch_size * patch_size):
        raise ValueError(f"expected patches of shape (B, {h * w}, {patch_size}*{patch_size}*C) for a {h}x{w} grid "
                         f"of {patch_size}-px patches, got {tuple(patches.shape)}")
    return rearrange(patches, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=h, w=w, p1=patch_size, p2=patch_size)


@torch.no_grad()
def decode(decoder: PatchDecoder, features: torch.Tensor, grid_size: int | tuple[int, int]) -> torch.Tensor:
    """(B, N, D) patch features on a grid of N = H*W patches -> (B, C, H*P, W*P) images in [0, 1] units
    (un-normalised with the decoder's mean/std, then clipped)."""
    x = unpatchify(decoder(features), decoder.patch_size, grid_size)  # (B, C, H, W), normalised units
    return (x * decoder.std.view(-1, 1, 1) + decoder.mean.view(-1, 1, 1)).clamp(0, 1)


@torch.no_grad()
def target_features(encoder: ViT, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Layer-normed (no affine) patch features of a frozen encoder, as I-JEPA's targets: (B, C, H, W) normalised
    float images -> (B, N, D)."""
    was_training = encoder.training
    out = [encoder.eval()(x) for x in images.split(batch_size)]
    encoder.train(was_training)
    return torch.cat([F.layer_norm(h, h.shape[-1:]) for h in out])


def train_decoder(encoder: ViT, images: torch.Tensor, norm: dict, steps: int = 1000, batch_size: int = 128,
                  lr: float = 1e-3, seed: int = 0, hidden: int = 256, depth: int = 2) -> tuple[PatchDecoder, list]:
    """Fit a PatchDecoder on `encoder`'s frozen target features of uint8 `images` (N, C, H, W) -> their normalised
    pixels (MSE, AdamW, cosine learning rate). norm = {"mean": (C,), "std": (C,)} as the encoder was trained with.
    Returns (decoder in eval mode, the loss of every step)."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    mean, std = torch.as_tensor(norm["mean"]).float(), torch.as_tensor(norm["std"]).float()
    x = normalise(images, mean, std)  # (N, C, H, W)
    feats = target_features(encoder, x)  # (N, Np, D): computed once, the encoder is frozen
    pixels = patchify(x, encoder.patch_size)  # (N, Np, P*P*C)
    torch.manual_seed(seed)
    decoder = PatchDecoder(encoder.dim, encoder.patch_size, encoder.in_chans, hidden, depth, mean, std)
    opt = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    g, losses = torch.Generator().manual_seed(seed), []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        loss = F.mse_loss(decoder(feats[idx]), pixels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return decoder.eval(), losses
