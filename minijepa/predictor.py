"""The predictor: a narrow ViT that guesses target-block representations from the context (paper §3, Fig. 3).

For one target block the predictor's input is

    [ proj(context tokens) + pos[context idx] ,  mask_token + pos[target idx] ]      (B, Kc + Kt, d)

i.e. the context encoder's output projected to the predictor width, followed by one *shared, learnable* mask
token per patch to predict, each tagged with the sin-cos position of the patch it stands for. After `depth`
transformer blocks, the tokens sitting at the target positions are projected back to the encoder width
(latent targets) or to P*P*C pixel values (pixel targets). Each target block gets its own pass, so blocks never
attend to each other; the caller stacks the M blocks along the batch dimension to run them in one go.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .vit import Block, check_index, gather_tokens, init_weights, sincos_pos_embed, to_2tuple


class Predictor(nn.Module):
    def __init__(self, grid_size: int | tuple[int, int], encoder_dim: int, dim: int = 384, depth: int = 6,
                 heads: int = 6, mlp_ratio: float = 4.0, out_dim: int | None = None):
        super().__init__()
        self.grid_size = to_2tuple(grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.encoder_dim, self.dim, self.depth = encoder_dim, dim, depth
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))  # one token shared by every masked position
        self.register_buffer("pos_embed", sincos_pos_embed(dim, self.grid_size)[None], persistent=False)  # (1,N,d)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, out_dim or encoder_dim)
        init_weights(self, depth)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context_tokens: torch.Tensor, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """context_tokens (B, Kc, D_enc) at patch indices context (B, Kc); target (B, Kt) -> (B, Kt, out_dim)."""
        check_index(context, self.num_patches, "context")
        check_index(target, self.num_patches, "target")
        B, Kc, _ = context_tokens.shape
        if context.shape != (B, Kc) or target.shape[0] != B:
            raise ValueError(f"context tokens {tuple(context_tokens.shape)}, context indices {tuple(context.shape)} "
                             f"and target indices {tuple(target.shape)} do not match")
        pos = self.pos_embed.expand(B, -1, -1)  # (B, N, d)
        x = self.embed(context_tokens) + gather_tokens(pos, context)  # (B, Kc, d)
        m = self.mask_token + gather_tokens(pos, target)  # (B, Kt, d): same token, different positions
        x = torch.cat([x, m], dim=1)  # (B, Kc + Kt, d)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, Kc:]))  # (B, Kt, out_dim): read out the mask-token positions only
