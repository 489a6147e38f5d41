"""Optimisation schedules of I-JEPA (paper App. A), as pure functions of the step so a resumed run is exact.

    learning rate   linear warmup start_lr -> lr, then cosine lr -> final_lr       (ref: 2e-4 -> 1e-3 -> 1e-6)
    weight decay    cosine wd -> final_wd                                          (ref: 0.04 -> 0.4)
    EMA momentum    linear m -> final_m over the whole run                          (ref: 0.996 -> 1.0)
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def _cosine(progress: float, start: float, end: float) -> float:
    """Half a cosine from start (progress 0) to end (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def learning_rate(step: int, total_steps: int, warmup_steps: int, lr: float, start_lr: float = 0.0,
                  final_lr: float = 0.0) -> float:
    if step < warmup_steps:
        return start_lr + (lr - start_lr) * step / warmup_steps
    return _cosine((step - warmup_steps) / max(1, total_steps - warmup_steps), lr, final_lr)


def weight_decay(step: int, total_steps: int, wd: float = 0.04, final_wd: float = 0.4) -> float:
    return _cosine(step / max(1, total_steps), wd, final_wd)


def ema_momentum(step: int, total_steps: int, momentum: float = 0.996, final_momentum: float = 1.0) -> float:
    return momentum + (final_momentum - momentum) * min(step / max(1, total_steps), 1.0)


def param_groups(*modules: nn.Module) -> list[dict]:
    """AdamW groups: weight decay on weight matrices only; biases, norms, mask token (1-d or shape (1, 1, d)) none.

    The decayed group is tagged `decay=True` so the training loop knows which group follows the wd schedule."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") or "mask_token" in name else decay).append(p)
    return [{"params": decay, "decay": True}, {"params": no_decay, "weight_decay": 0.0, "decay": False}]


def set_optimizer(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    """Write this step's learning rate and weight decay into the optimiser's groups."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if group.get("decay", False):
            group["weight_decay"] = wd
