"""I-JEPA: predict the representations of target blocks from a context block, in latent space (paper §3).

    context_encoder  ViT that sees only the context patches                 (trained by gradient descent)
    target_encoder   EMA copy of the context encoder; sees the whole image  (no gradients, §3 "Targets")
    predictor        narrow ViT: context tokens + mask tokens -> target representations

One training step (see `forward`):

    targets   = layer_norm(target_encoder(image))[target idx]   -- masked at the *output*, not the input
    predicted = predictor(context_encoder(image[context idx]), context idx, target idx)
    loss      = mean over blocks and patches of ||predicted - targets||^2   (or smooth-L1, as the reference code)

followed, outside this module, by an optimiser step on the context encoder + predictor and `update_target(m)`.

With `reg="vicreg"` or `"sigreg"` (regularisers.py) the loss adds `reg_weight` times an anti-collapse term on the
context encoder's output, averaged over each image's kept patches (`reg_on="image"`) or taken per patch
(`reg_on="patch"`); the default `"none"` is the paper's I-JEPA, whose only defence against collapse is its asymmetry.

With `target="pixels"` the same masks and predictor regress per-patch-normalised pixels instead (MAE-style targets),
which is the paper's Table 7 comparison; the EMA encoder is still kept (and evaluated) so both modes are measured
identically.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .predictor import Predictor
from .regularisers import REGULARISERS, regulariser
from .vit import ViT, gather_tokens, patchify


def pixel_targets(images: torch.Tensor, patch_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch normalised pixels (MAE's best target): (B, C, H, W) -> (B, N, P*P*C), zero mean, unit var each."""
    x = patchify(images, patch_size)
    return (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + eps).sqrt()


class IJEPA(nn.Module):
    def __init__(self, encoder: ViT, predictor_dim: int = 384, predictor_depth: int = 6,
                 predictor_heads: int | None = None, target: str = "latent", loss: str = "l2",
                 target_norm: bool = True, reg: str = "none", reg_weight: float = 0.0, reg_on: str = "image"):
        super().__init__()
        if target not in ("latent", "pixels"):
            raise ValueError(f"target must be 'latent' or 'pixels', got {target!r}")
        if loss not in ("l2", "smooth_l1"):
            raise ValueError(f"loss must be 'l2' or 'smooth_l1', got {loss!r}")
        if reg not in REGULARISERS or reg_on not in ("image", "patch") or reg_weight < 0:
            raise ValueError(f"reg must be one of {REGULARISERS} (got {reg!r}), reg_on 'image' or 'patch' (got "
                             f"{reg_on!r}), reg_weight >= 0 (got {reg_weight})")
        self.target, self.loss, self.target_norm = target, loss, target_norm
        self.reg, self.reg_weight, self.reg_on = reg, reg_weight, reg_on
        self.context_encoder = encoder
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        pixels_per_patch = encoder.patch_size ** 2 * encoder.in_chans
        self.predictor = Predictor(encoder.grid_size, encoder.dim, predictor_dim, predictor_depth,
                                   predictor_heads or encoder.heads, encoder.mlp_ratio,
                                   out_dim=pixels_per_patch if target == "pixels" else encoder.dim)

    @torch.no_grad()
    def target_features(self, images: torch.Tensor) -> torch.Tensor:
        """What the predictor must match at every patch: (B, N, D) latents, or (B, N, P*P*C) pixels.
        `target_norm` (default, as the paper) normalises each target: layer norm of latents, per-patch pixels."""
        if self.target == "pixels":
            x = images.float()
            return pixel_targets(x, self.context_encoder.patch_size) if self.target_norm else \
                patchify(x, self.context_encoder.patch_size)
        h = self.target_encoder(images)  # (B, N, D): the whole image, no masking of the input
        return F.layer_norm(h, h.shape[-1:]) if self.target_norm else h  # §3: over the feature dim, no affine

    def forward(self, images: torch.Tensor, context: torch.Tensor, targets: list[torch.Tensor],
                parts: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
        """images (B, C, H, W); context (B, Kc); targets M x (B, Kt) patch indices -> scalar loss (with `parts`:
        {"loss": total, "pred_loss": the prediction loss, "reg": the regulariser, unweighted})."""
        if len(targets) == 0:
            raise ValueError("need at least one target block")
        B = images.shape[0]
        if any(t.ndim != 2 or t.shape[0] != B for t in targets):
            raise ValueError(f"every target block needs one row per image: {B} images, but target shapes "
                             f"{[tuple(t.shape) for t in targets]}; pass a list of (B, Kt) tensors, one per block")
        if any(t.shape[1] != targets[0].shape[1] for t in targets):  # (a set would pin the length under compile)
            raise ValueError(f"all target blocks of a batch must have the same size, got "
                             f"{[t.shape[1] for t in targets]}; maskers draw one block size per batch")
        M = len(targets)
        y = self.target_features(images)  # (B, N, D_out)
        z = self.context_encoder(images, keep=context)  # (B, Kc, D)
        target_idx = torch.cat(targets, dim=0)  # (M*B, Kt): block m of image b is row m*B + b
        pred = self.predictor(z.repeat(M, 1, 1), context.repeat(M, 1), target_idx)  # (M*B, Kt, D_out)
        y = gather_tokens(y.repeat(M, 1, 1), target_idx).to(pred.dtype)  # (M*B, Kt, D_out)
        pred_loss = F.smooth_l1_loss(pred, y) if self.loss == "smooth_l1" else F.mse_loss(pred, y)
        if self.reg == "none":
            return dict(loss=pred_loss, pred_loss=pred_loss, reg=torch.zeros_like(pred_loss)) if parts else pred_loss
        emb = z.mean(1) if self.reg_on == "image" else z.flatten(0, 1)  # (B, D) or (B*Kc, D)
        reg = regulariser(self.reg, emb.float())
        loss = pred_loss + self.reg_weight * reg
        return dict(loss=loss, pred_loss=pred_loss, reg=reg) if parts else loss

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """EMA step, target <- m * target + (1 - m) * context, over all parameters at once (foreach kernels)."""
        t = list(self.target_encoder.parameters())
        c = list(self.context_encoder.parameters())
        torch._foreach_mul_(t, momentum)
        torch._foreach_add_(t, c, alpha=1.0 - momentum)
