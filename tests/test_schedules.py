"""I-JEPA's optimisation schedules (paper App. A) and AdamW parameter groups.

    learning rate   linear warmup start_lr -> lr, then cosine lr -> final_lr   (reference: 2e-4 -> 1e-3 -> 1e-6)
    weight decay    cosine 0.04 -> 0.4
    EMA momentum    linear 0.996 -> 1.0 over the whole run (the target encoder slows down until it freezes)
The schedules are pure functions of the step, so a resumed run continues exactly.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from minijepa import IJEPA, ViT, ema_momentum, learning_rate, param_groups, set_optimizer, weight_decay

TOTAL, WARMUP, LR, START, FINAL = 1000, 100, 1e-3, 2e-4, 1e-6


def lr_at(step: int) -> float:
    return learning_rate(step, TOTAL, WARMUP, LR, start_lr=START, final_lr=FINAL)


# -------------------------------------------------------------------------------------------- learning rate


def test_learning_rate_warmup_is_linear_from_start_lr_to_lr():
    assert lr_at(0) == pytest.approx(START)
    assert lr_at(WARMUP // 2) == pytest.approx((START + LR) / 2)
    assert lr_at(WARMUP) == pytest.approx(LR)
    warm = [lr_at(s) for s in range(WARMUP + 1)]
    assert all(b > a for a, b in zip(warm, warm[1:])), "warmup must increase strictly"
    steps = torch.tensor([lr_at(s) for s in range(WARMUP)], dtype=torch.float64).diff()
    torch.testing.assert_close(steps, torch.full_like(steps, (LR - START) / WARMUP))  # constant slope


def test_learning_rate_cosine_decay_to_final_lr():
    """After warmup: half a cosine from lr (at the end of warmup) to final_lr (at total_steps), monotone; the
    midpoint is the mean of lr and final_lr; past the end it stays at final_lr."""
    assert lr_at(TOTAL) == pytest.approx(FINAL)
    assert lr_at(TOTAL + 500) == pytest.approx(FINAL)
    mid = WARMUP + (TOTAL - WARMUP) // 2
    assert lr_at(mid) == pytest.approx((LR + FINAL) / 2)
    decay = [lr_at(s) for s in range(WARMUP, TOTAL + 1)]
    assert all(b <= a for a, b in zip(decay, decay[1:])), "learning rate must not rise after warmup"
    quarter = WARMUP + (TOTAL - WARMUP) // 4
    assert lr_at(quarter) == pytest.approx(FINAL + 0.5 * (LR - FINAL) * (1 + math.cos(math.pi / 4)))


def test_learning_rate_without_warmup_starts_at_lr():
    assert learning_rate(0, 100, 0, 1e-3) == pytest.approx(1e-3)
    assert learning_rate(100, 100, 0, 1e-3) == pytest.approx(0.0)


# ----------------------------------------------------------------------------------- weight decay and EMA


def test_weight_decay_cosine_from_0_04_to_0_4():
    """Weight decay *grows* along a half cosine: 0.04 at the start, 0.4 at the end, monotone, clamped after."""
    assert weight_decay(0, TOTAL) == pytest.approx(0.04)
    assert weight_decay(TOTAL // 2, TOTAL) == pytest.approx(0.22)
    assert weight_decay(TOTAL, TOTAL) == pytest.approx(0.4)
    assert weight_decay(2 * TOTAL, TOTAL) == pytest.approx(0.4)
    values = [weight_decay(s, TOTAL) for s in range(TOTAL + 1)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert weight_decay(TOTAL // 4, TOTAL) < 0.22 - 0.05  # cosine, not linear: slow at first


def test_ema_momentum_linear_from_0_996_to_1_and_clamped():
    """The EMA momentum rises linearly 0.996 -> 1.0 over the run (target encoder freezes at the end) and never
    exceeds 1 after it (a momentum > 1 would extrapolate away from the context encoder)."""
    assert ema_momentum(0, TOTAL) == pytest.approx(0.996)
    assert ema_momentum(TOTAL // 4, TOTAL) == pytest.approx(0.997)
    assert ema_momentum(TOTAL // 2, TOTAL) == pytest.approx(0.998)
    assert ema_momentum(TOTAL, TOTAL) == pytest.approx(1.0)
    assert ema_momentum(3 * TOTAL, TOTAL) == pytest.approx(1.0)
    assert all(ema_momentum(s, TOTAL) <= 1.0 for s in range(0, 3 * TOTAL, 7))
    values = torch.tensor([ema_momentum(s, TOTAL) for s in range(TOTAL + 1)], dtype=torch.float64)
    torch.testing.assert_close(values.diff(), torch.full((TOTAL,), 0.004 / TOTAL, dtype=torch.float64))


def test_schedules_are_pure_functions_of_the_step():
    """Same step, same value, whatever was asked before (so resuming from a checkpoint is exact)."""
    a = [(lr_at(s), weight_decay(s, TOTAL), ema_momentum(s, TOTAL)) for s in (0, 50, 500, 999)]
    _ = [lr_at(s) for s in range(TOTAL)]
    b = [(lr_at(s), weight_decay(s, TOTAL), ema_momentum(s, TOTAL)) for s in (0, 50, 500, 999)]
    assert a == b


# --------------------------------------------------------------------------------------- parameter groups


def tiny_model() -> IJEPA:
    torch.manual_seed(0)
    return IJEPA(ViT(16, 4, in_chans=3, dim=32, depth=2, heads=2), predictor_dim=16, predictor_depth=1)


def split_by_name(model: nn.Module, groups: list[dict]) -> tuple[set[str], set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    return decay, no_decay


def test_param_groups_decay_only_weight_matrices():
    """Weight decay applies to the 2-D Linear weight matrices only; biases, LayerNorm gains/biases and the mask
    token are not decayed (decaying the mask token or norms towards 0 only hurts). The frozen target encoder is not
    in the optimiser at all; nothing is listed twice or forgotten."""
    model = tiny_model()
    groups = param_groups(model)
    assert len(groups) == 2 and groups[0]["decay"] is True and groups[1]["decay"] is False
    assert groups[1]["weight_decay"] == 0.0
    decay, no_decay = split_by_name(model, groups)

    linear_weights, other = set(), set()
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if full.startswith("target_encoder."):
                continue
            (linear_weights if isinstance(module, nn.Linear) and p_name == "weight" else other).add(full)
    assert decay == linear_weights
    assert no_decay == other
    assert "predictor.mask_token" in no_decay
    assert any(n.endswith("norm1.weight") for n in no_decay) and any(n.endswith(".bias") for n in no_decay)
    assert all(model.get_parameter(n).ndim == 2 for n in decay)

    n_decay, n_no_decay = len(groups[0]["params"]), len(groups[1]["params"])
    assert n_decay == len(decay) and n_no_decay == len(no_decay), "a parameter is listed twice"
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert n_decay + n_no_decay == len(trainable)
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in trainable)
    frozen = {id(p) for p in model.target_encoder.parameters()}
    assert not frozen & {id(p) for g in groups for p in g["params"]}


def test_param_groups_from_several_modules():
    """Passing the context encoder and predictor separately gives the same split as passing the whole model."""
    model = tiny_model()
    whole = param_groups(model)
    parts = param_groups(model.context_encoder, model.predictor)
    for a, b in zip(whole, parts):
        assert {id(p) for p in a["params"]} == {id(p) for p in b["params"]}


def test_set_optimizer_writes_lr_everywhere_and_wd_only_to_the_decay_group():
    """Each step the training loop writes the scheduled lr into every group and the scheduled wd into the decayed
    group only; the no-decay group keeps weight_decay 0."""
    model = tiny_model()
    opt = torch.optim.AdamW(param_groups(model), lr=1.0, weight_decay=0.123)
    assert opt.param_groups[0]["weight_decay"] == 0.123 and opt.param_groups[1]["weight_decay"] == 0.0
    set_optimizer(opt, lr=lr_at(10), wd=weight_decay(10, TOTAL))
    assert [g["lr"] for g in opt.param_groups] == [lr_at(10), lr_at(10)]
    assert opt.param_groups[0]["weight_decay"] == weight_decay(10, TOTAL)
    assert opt.param_groups[1]["weight_decay"] == 0.0
    set_optimizer(opt, lr=5e-4, wd=0.3)
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 5e-4]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]


def test_weight_decay_really_spares_the_no_decay_group():
    """With zero gradients, one AdamW step shrinks decayed weights by lr * wd and leaves no-decay params alone."""
    model = tiny_model()
    opt = torch.optim.AdamW(param_groups(model), lr=0.1, weight_decay=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    opt.step()
    decay, no_decay = split_by_name(model, param_groups(model))
    for n in decay:
        torch.testing.assert_close(model.get_parameter(n).detach(), before[n] * (1 - 0.1 * 0.5))
    for n in no_decay:
        assert torch.equal(model.get_parameter(n), before[n]), n
