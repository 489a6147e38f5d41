"""The anti-collapse regularisers measure what they claim, and leave plain I-JEPA's loss exactly as it was."""
from __future__ import annotations

import json

import pytest
import torch
from test_distractors import interrupted_and_resumed
from test_train import tiny

from minijepa import IJEPA, MultiBlockMasker, ViT
from minijepa.regularisers import sigreg, vicreg, vicreg_covariance, vicreg_variance
from minijepa.train import train


def gaussian(n: int = 1024, d: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def sig(z: torch.Tensor, seed: int = 0) -> float:
    return sigreg(z, generator=torch.Generator().manual_seed(seed)).item()


def test_sigreg_is_near_zero_for_an_isotropic_gaussian_and_large_otherwise():
    z = gaussian()
    null = sig(z)
    assert null < 0.005  # the empirical characteristic function of N(0, I) samples is close to exp(-t^2/2)
    assert sig(0.01 * z) > 50 * null  # collapsed to a point
    assert sig(z * torch.linspace(0.1, 3, 32)) > 20 * null  # anisotropic
    assert sig(z + 1.0) > 20 * null  # not centred
    assert sig(z[:, :1].expand(-1, 32).contiguous()) > 20 * null  # every dimension the same: collapsed to a line


def test_sigreg_is_seeded_and_differentiable():
    z = gaussian(256) * 0.1
    assert sig(z, 3) == sig(z, 3) and sig(z, 3) != sig(z, 4)  # the directions come from the generator
    z.requires_grad_(True)
    sigreg(z, generator=torch.Generator().manual_seed(0)).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    before = sig(z.detach())
    assert sig(z.detach() - 0.5 * z.grad) < before  # a gradient step spreads the batch towards N(0, I)


def test_vicreg_terms():
    z = gaussian()
    assert vicreg_variance(2 * z).item() == 0  # every std is at least 1: no penalty
    assert vicreg_variance(0.01 * z).item() > 0.9  # collapsed: close to the maximum, 1
    correlated = torch.cat([z[:, :16], z[:, :16]], dim=1)
    assert vicreg_covariance(correlated) > 10 * vicreg_covariance(z)  # duplicated dimensions are penalised
    z.requires_grad_(True)
    vicreg(0.01 * z).backward()
    assert z.grad.abs().sum() > 0


def tiny_model(**kw) -> IJEPA:
    torch.manual_seed(0)
    return IJEPA(ViT(16, 4, 3, dim=32, depth=2, heads=2), predictor_dim=16, predictor_depth=1, **kw)


def batch():
    g = torch.Generator().manual_seed(0)
    context, targets = MultiBlockMasker((4, 4), min_keep=2).sample(8, g)
    return torch.randn(8, 3, 16, 16, generator=g), context, targets


def test_no_regulariser_leaves_the_loss_bit_identical_and_parts_add_up():
    x, context, targets = batch()
    plain = tiny_model()
    loss = plain(x, context, targets)
    parts = plain(x, context, targets, parts=True)
    assert torch.equal(parts["loss"], loss) and torch.equal(parts["pred_loss"], loss) and parts["reg"] == 0
    for reg, on in (("vicreg", "image"), ("sigreg", "image"), ("sigreg", "patch")):
        model = tiny_model(reg=reg, reg_weight=0.5, reg_on=on)
        torch.manual_seed(1)
        p = model(x, context, targets, parts=True)
        assert torch.equal(p["pred_loss"], loss)  # same weights, same prediction loss
        torch.testing.assert_close(p["loss"], p["pred_loss"] + 0.5 * p["reg"])
        assert p["reg"] > 0
    with pytest.raises(ValueError, match="reg must be one of"):
        tiny_model(reg="barlow")
    with pytest.raises(ValueError, match="reg_on"):
        tiny_model(reg="vicreg", reg_on="pixel")


def test_regularised_training_logs_both_parts_and_resumes_exactly(tmp_path, monkeypatch):
    cfg = tiny(steps=6, reg="sigreg", reg_weight=0.1)
    straight = train(cfg, tmp_path / "a", progress=False).state_dict()
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["reg"] > 0 and abs(r["loss"] - (r["pred_loss"] + 0.1 * r["reg"])) < 1e-5 for r in rows)
    resumed = interrupted_and_resumed(cfg, tmp_path / "b", 2, monkeypatch)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)  # SIGReg's directions replay too
    train(tiny(steps=2), tmp_path / "c", progress=False)
    plain = json.loads((tmp_path / "c" / "metrics.jsonl").read_text().splitlines()[0])
    assert "reg" not in plain  # unregularised runs log what they always logged


def test_momentum_zero_makes_the_target_the_context_encoder(tmp_path):
    """LeJEPA's setting: no EMA teacher, the target is the context encoder itself under stop-gradient."""
    model = train(tiny(steps=3, reg="vicreg", reg_weight=1.0, momentum=0.0, final_momentum=0.0), tmp_path,
                  progress=False)
    ctx, tgt = model.context_encoder.state_dict(), model.target_encoder.state_dict()
    assert all(torch.equal(ctx[k], tgt[k]) for k in ctx)
    assert all(not p.requires_grad for p in model.target_encoder.parameters())
