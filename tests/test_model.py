"""ViT, predictor, IJEPA and schedules: shapes, what depends on what, gradients, the EMA, learning, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minijepa import (IJEPA, MultiBlockMasker, Predictor, ViT, ema_momentum, learning_rate, param_groups,
                      patchify, pixel_targets, set_optimizer, sincos_pos_embed, vit_base, vit_small, vit_tiny,
                      weight_decay)


def tiny_vit(**kw) -> ViT:
    torch.manual_seed(0)
    return ViT(**{**dict(img_size=16, patch_size=4, in_chans=3, dim=32, depth=2, heads=2), **kw})


def tiny_ijepa(**kw) -> IJEPA:
    return IJEPA(tiny_vit(), predictor_dim=16, predictor_depth=1, predictor_heads=2, **kw)


# ------------------------------------------------------------------------------------------------------------ ViT
def test_patchify_layout():
    """Patch r * W + c holds exactly the pixels of that patch, row-major, channels last."""
    x = torch.randn(2, 3, 8, 12)
    p = patchify(x, 4)  # grid 2 x 3
    assert p.shape == (2, 6, 48)
    r, c = 1, 2
    assert torch.equal(p[:, r * 3 + c], x[:, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].permute(0, 2, 3, 1).flatten(1))


def test_sincos_positions_are_distinct_and_local():
    pos = sincos_pos_embed(64, (8, 8))
    assert pos.shape == (64, 64) and pos.abs().max() <= 1
    assert len(torch.unique(pos, dim=0)) == 64
    sim = F.cosine_similarity(pos[27][None], pos, dim=1)  # patch (3, 3)
    assert sim[28] > sim[31] and sim[35] > sim[59]  # neighbours more similar than far patches


def test_shapes_and_layers():
    vit = tiny_vit()
    x = torch.randn(3, 3, 16, 16)
    assert vit(x).shape == (3, 16, 32)
    keep = torch.tensor([[0, 5, 9]] * 3)
    assert vit(x, keep).shape == (3, 3, 32)
    layers = vit.forward_layers(x, keep)
    assert len(layers) == 2 and torch.allclose(layers[-1], vit(x, keep))


def test_dropped_patches_do_not_influence_the_context_encoder():
    """Positions are added before dropping; dropped pixels can't leak into the kept tokens."""
    vit = tiny_vit()
    x = torch.randn(1, 3, 16, 16)
    keep = torch.tensor([[0, 1, 4, 5]])  # the top-left 8x8 pixels
    y = x.clone()
    y[..., 8:, :] = torch.randn(1, 3, 8, 16)  # change only pixels of dropped patches
    y[..., :8, 8:] = 0
    assert torch.equal(vit(x, keep), vit(y, keep))
    y[..., 0, 0] += 1  # a kept patch changes: the output must change
    assert not torch.allclose(vit(x, keep), vit(y, keep))


def test_keep_order_permutes_tokens():
    """No [CLS] token, no order dependence: permuting `keep` permutes the output tokens."""
    vit = tiny_vit()
    x = torch.randn(2, 3, 16, 16)
    keep = torch.tensor([[3, 7, 1, 12]] * 2)
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.allclose(vit(x, keep)[:, perm], vit(x, keep[:, perm]), atol=1e-6)


@pytest.mark.parametrize("fn,dims", [(vit_tiny, (192, 12, 3)), (vit_small, (384, 12, 6)), (vit_base, (768, 12, 12))])
def test_presets_have_the_paper_sizes(fn, dims):
    vit = fn(img_size=32, patch_size=4)
    D, depth, heads = dims
    assert (vit.dim, vit.depth, vit.heads) == dims
    per_block = (3 * D * D + 3 * D) + (D * D + D) + (4 * D * D + 4 * D) + (4 * D * D + D) + 4 * D  # qkv,proj,mlp,2 LN
    expected = (48 * D + D) + depth * per_block + 2 * D  # patch embedding, blocks, final LN
    assert sum(p.numel() for p in vit.parameters()) == expected


def test_vit_errors():
    with pytest.raises(ValueError, match="not divisible by patch size 5"):
        ViT(img_size=28, patch_size=5)
    vit = tiny_vit()
    with pytest.raises(ValueError, match="3 channel"):
        vit(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="expected 16x16 images, got 32x32"):
        vit(torch.randn(1, 3, 32, 32))
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(TypeError, match="LongTensor"):
        vit(x, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="K >= 1"):
        vit(x, torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        vit(x, torch.tensor([[0, 16]] * 2))
    with pytest.raises(ValueError, match="outside"):
        vit(x, torch.tensor([[-1, 0]] * 2))
    with pytest.raises(ValueError, match="rows"):
        vit(x, torch.tensor([[0, 1]] * 3))


# ------------------------------------------------------------------------------------------------------ predictor
def test_predictor_shapes_and_shared_mask_token():
    torch.manual_seed(0)
    pred = Predictor((4, 4), encoder_dim=32, dim=16, depth=1, heads=2)
    ctx = torch.randn(2, 5, 32)
    cidx = torch.tensor([[0, 1, 2, 3, 4]] * 2)
    out_a = pred(ctx, cidx, torch.tensor([[10, 11]] * 2))
    out_b = pred(ctx, cidx, torch.tensor([[14, 15]] * 2))
    assert out_a.shape == (2, 2, 32)
    assert not torch.allclose(out_a, out_b)  # same mask token, different positions -> different predictions
    assert sum(p.numel() for n, p in pred.named_parameters() if "mask_token" in n) == 16  # one token
    out_a.sum().backward()
    assert pred.mask_token.grad is not None and pred.mask_token.grad.abs().sum() > 0
    assert Predictor((4, 4), 32, 16, 1, 2, out_dim=48)(ctx, cidx, torch.tensor([[9]] * 2)).shape == (2, 1, 48)


def test_target_blocks_do_not_see_each_other():
    """One predictor pass per target block: changing block 2 leaves block 1's prediction unchanged."""
    model = tiny_ijepa()
    x = torch.randn(2, 3, 16, 16)
    context = torch.tensor([[0, 1, 2, 4]] * 2)
    preds = []

    def grab(module, args, out):
        preds.append(out)
    handle = model.predictor.register_forward_hook(grab)
    model(x, context, [torch.tensor([[10, 11]] * 2), torch.tensor([[14, 15]] * 2)])
    model(x, context, [torch.tensor([[10, 11]] * 2), torch.tensor([[12, 13]] * 2)])
    handle.remove()
    assert torch.allclose(preds[0][:2], preds[1][:2])  # rows 0..B-1 are block 1
    assert not torch.allclose(preds[0][2:], preds[1][2:])


# ---------------------------------------------------------------------------------------------------------- IJEPA
def test_gradients_reach_context_encoder_and_predictor_never_the_target_encoder():
    model = tiny_ijepa()
    assert model.target_encoder is not model.context_encoder
    assert all(torch.equal(a, b) for a, b in zip(model.target_encoder.parameters(),
                                                 model.context_encoder.parameters()))
    context, targets = MultiBlockMasker((4, 4), min_keep=1).sample(4, torch.Generator().manual_seed(0))
    loss = model(torch.randn(4, 3, 16, 16), context, targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.context_encoder.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert all(not p.requires_grad and p.grad is None for p in model.target_encoder.parameters())


@pytest.mark.parametrize("loss", ["l2", "smooth_l1"])
def test_latent_loss_by_hand(loss):
    """Targets: layer-normed target-encoder output of the *whole* image, gathered at the target indices."""
    model = tiny_ijepa(loss=loss)
    x = torch.randn(2, 3, 16, 16)
    context, targets = torch.tensor([[0, 1, 2, 3, 4, 5]] * 2), [torch.tensor([[10, 11]] * 2),
                                                                 torch.tensor([[14, 15]] * 2)]
    h = F.layer_norm(model.target_encoder(x), (32,))
    z = model.context_encoder(x, context)
    dist = F.mse_loss if loss == "l2" else F.smooth_l1_loss
    expected = sum(dist(model.predictor(z, context, t), h[:, t[0]]) for t in targets) / 2
    assert torch.allclose(model(x, context, targets), expected, atol=1e-6)


def test_pixel_targets_and_loss_by_hand():
    x = torch.randn(2, 3, 16, 16)
    y = pixel_targets(x, 4)
    assert y.shape == (2, 16, 48)
    assert torch.allclose(y.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(y.var(-1), torch.ones(2, 16), atol=1e-3)
    model = tiny_ijepa(target="pixels")
    context, t = torch.tensor([[0, 1, 2, 3]] * 2), torch.tensor([[9, 10]] * 2)
    pred = model.predictor(model.context_encoder(x, context), context, t)
    assert pred.shape == (2, 2, 48)
    assert torch.allclose(model(x, context, [t]), F.mse_loss(pred, y[:, [9, 10]]), atol=1e-6)


@pytest.mark.parametrize("m", [0.0, 0.7, 0.996, 1.0])
def test_exact_ema_update(m):
    model = tiny_ijepa()
    with torch.no_grad():
        for p in model.context_encoder.parameters():
            p.add_(torch.randn_like(p))
    old = [p.clone() for p in model.target_encoder.parameters()]
    model.update_target(m)
    for o, t, c in zip(old, model.target_encoder.parameters(), model.context_encoder.parameters()):
        assert torch.allclose(t, m * o + (1 - m) * c, rtol=1e-6, atol=1e-7)
    if m == 1.0:
        assert all(torch.equal(o, t) for o, t in zip(old, model.target_encoder.parameters()))


def structured_images(n: int = 64) -> torch.Tensor:
    """Horizontal or vertical stripes: the context reveals what the hidden blocks look like."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    vertical = torch.randint(0, 2, (n, 1, 1), generator=g).bool()
    img = torch.where(vertical, torch.sin(5 * xx), torch.sin(5 * yy))
    return torch.stack([img, img, img], 1)  # (n, 3, 16, 16)


@pytest.mark.parametrize("target", ["latent", "pixels"])
def test_a_few_dozen_steps_lower_the_loss(target):
    model = tiny_ijepa(target=target)
    opt = torch.optim.AdamW(param_groups(model.context_encoder, model.predictor), lr=3e-3)
    masker = MultiBlockMasker((4, 4), n_targets=2, min_keep=2)
    data, g = structured_images(), torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        context, targets = masker.sample(len(data), g)
        loss = model(data, context, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_target(0.99)
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, f"{target}: loss {first:.3f} -> {last:.3f}"


def test_ijepa_errors():
    with pytest.raises(ValueError, match="latent"):
        tiny_ijepa(target="rgb")
    with pytest.raises(ValueError, match="smooth_l1"):
        tiny_ijepa(loss="l1")
    model, x, context = tiny_ijepa(), torch.randn(2, 3, 16, 16), torch.tensor([[0, 1]] * 2)
    with pytest.raises(ValueError, match="at least one target"):
        model(x, context, [])
    with pytest.raises(ValueError, match="same size"):
        model(x, context, [torch.tensor([[5, 6]] * 2), torch.tensor([[7]] * 2)])


# ------------------------------------------------------------------------------------------------------ schedules
def test_schedules():
    lrs = [learning_rate(s, 100, 10, lr=1e-3, start_lr=2e-4, final_lr=1e-6) for s in range(101)]
    assert lrs[0] == 2e-4 and lrs[10] == pytest.approx(1e-3) and lrs[100] == pytest.approx(1e-6)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # cosine decay is monotone
    assert weight_decay(0, 100) == pytest.approx(0.04) and weight_decay(100, 100) == pytest.approx(0.4)
    assert weight_decay(50, 100) == pytest.approx(0.22)
    assert ema_momentum(0, 100) == 0.996 and ema_momentum(50, 100) == pytest.approx(0.998)
    assert ema_momentum(100, 100) == 1.0 and ema_momentum(150, 100) == 1.0


def test_param_groups_and_set_optimizer():
    model = tiny_ijepa()
    groups = param_groups(model.context_encoder, model.predictor)
    decay, no_decay = groups[0]["params"], groups[1]["params"]
    trainable = list(model.context_encoder.parameters()) + list(model.predictor.parameters())
    assert len(decay) + len(no_decay) == len(trainable)
    assert {id(p) for p in decay + no_decay} == {id(p) for p in trainable}
    assert all(p.ndim == 2 for p in decay)  # weight matrices only
    assert any(p is model.predictor.mask_token for p in no_decay)
    opt = torch.optim.AdamW(groups, lr=1.0, weight_decay=0.04)
    set_optimizer(opt, lr=0.5, wd=0.3)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]
