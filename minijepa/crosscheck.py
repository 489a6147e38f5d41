"""Cross-check minijepa against the reference I-JEPA code, number by number:

    python -m minijepa.crosscheck --reference DIR [--reference-commit HASH] [--json OUT] [--markdown OUT]

DIR is a clone of https://github.com/facebookresearch/ijepa. Both code bases build the same small models, the
reference's weights are copied into minijepa through one mapping (`RENAMES`, `convert`), and both get the same images
and masks. Then every intermediate result is compared: the encoders' outputs, the predictor's, the loss (smooth L1 as
in the reference code, and the paper's L2), every gradient, the weights after one AdamW step and one EMA update, and
the loss and weights after each of three consecutive training steps.

"Equal to round-off". A float32 number carries 24 significant bits: two evaluations of the same formula can differ by
about one part in 2^23 (machine epsilon, 1.2e-7) as soon as their additions run in a different order, and the two
code bases do order them differently (a Conv2d against a Linear on patchified pixels, a fused attention kernel against
an explicit softmax). Each layer adds its own rounding to the rounding it was handed, so differences can grow with
depth; in these small models they stay below 1e-6 of a tensor's size. A real difference (a wrong index, a missing
scale, another reduction) shows up at 1e-3 or more. One rule decides every comparison of a tensor `ours` with the
reference's `ref`:

    max |ours - ref|  <=  RTOL * max |ref|,   RTOL = 1e-5      (the ratio is the "max rel diff" column)

Forward passes, losses and gradients are compared in float32. The training steps are compared in float64 too: in
float32 one AdamW step magnifies the rounding of any gradient that is close to zero (note 4 in NOTES), so there the
float32 weights are held to the bound that this magnification allows, and the float64 run holds three whole steps to
the rule. Where the two code bases differ on purpose (NOTES 1-3), the row says "differs" and the next row checks that
the difference is exactly the one described; such rows do not fail the check.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib
import inspect
import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from . import schedules
from .train import ArgumentParser, Config, build_masker, build_model, preset_config, step_generator, train_step, \
    user_errors

RTOL = 1e-5
RULE = f"pass if max|ours - ref| <= {RTOL:g} * max|ref|, on the CPU"
BATCH, STEPS = 8, 3  # images per batch; consecutive training steps compared
CONFIGS = {  # (a) the `demo` preset (7 x 7 grid, 1 channel); (b) another grid (4 x 4), depth, width, channel count
    "demo": preset_config("demo"),
    "narrow": preset_config("demo", data="cifar10", img_size=32, patch_size=8, dim=96, depth=3, heads=3,
                            predictor_dim=48, predictor_depth=2, steps=200, warmup_steps=20),
}
NOTES = {
    1: "Position embeddings: minijepa codes the patch's row in the first half of the channels and its column in the "
       "second; the reference, the other way round (np.meshgrid(grid_w, grid_h), 'w goes first'). Swapping the halves "
       "makes them equal: a fixed relabelling of channels that training cannot tell apart. The other rows run "
       "minijepa with the reference's tables.",
    2: "Weight decay: minijepa does not decay the predictor's mask token (schedules.param_groups); the reference does "
       "(its groups exempt only biases and 1-d tensors, and the token is (1, 1, d)). The training steps use the "
       "reference's groups on both sides.",
    3: "Schedule index: the reference calls scheduler.step() before its first update, so update k uses the learning "
       "rate and weight decay of step k (k = 1, 2, ...), while minijepa's loop uses step k - 1 (its first update runs "
       "at start_lr). The curves agree; the training steps evaluate minijepa's schedules at the reference's index.",
    4: "Precision of the training steps: in float32 the forward passes, losses and gradients agree to round-off, but "
       "the weights after an AdamW step need not. Adam's first update of a weight is lr * g / (|g| + 1e-8): where a "
       "gradient is near zero it turns the gradient's rounding noise into a step up to lr / 1e-8 times that noise "
       "(the attention's key biases have an exactly zero gradient in exact arithmetic, since softmax ignores a shift "
       "shared by all keys). The next row checks that the float32 weights differ by no more than that; the steps are "
       "then compared in float64, where rounding is about 1e-16 of a value.",
}
PINNED = "commit 52c1ae9 of facebookresearch/ijepa"
HINT = "clone https://github.com/facebookresearch/ijepa and pass its folder"


class ReferenceCodeError(ValueError):
    """The --reference folder is missing, is not the reference code, or its API moved."""


# ------------------------------------------------------------------------------------------- the weight mapping
# minijepa's parameter names -> the reference's, per network: a rule starting with "." renames a part inside a name,
# the others a prefix; the names no rule touches are the same on both sides (attn.qkv, attn.proj, norm1, norm2, the
# encoder's final norm, mask_token). The one change of layout: the reference embeds patches with a Conv2d, weight
# (D, C, P, P); minijepa with a Linear on patchified pixels, weight (D, P*P*C), each patch flattened in (p1 p2 c) order
# (vit.patchify).
RENAMES = {
    "encoder": [("patch_embed.", "patch_embed.proj."), (".mlp.0.", ".mlp.fc1."), (".mlp.2.", ".mlp.fc2.")],
    "predictor": [("embed.", "predictor_embed."), ("blocks.", "predictor_blocks."), ("norm.", "predictor_norm."),
                  ("head.", "predictor_proj."), (".mlp.0.", ".mlp.fc1."), (".mlp.2.", ".mlp.fc2.")],
}
FIXED = ("pos_embed", "predictor_pos_embed")  # the reference's fixed sin-cos tables: compared, never copied


def rename(name: str, part: str, to_reference: bool) -> str:
    """One parameter name of `part` in the other code base's naming."""
    for ours, ref in RENAMES[part]:
        old, new = (ours, ref) if to_reference else (ref, ours)
        if old.startswith("."):
            name = name.replace(old, new)
        elif name.startswith(old):
            name = new + name[len(old):]
    return name


def convert(state: dict[str, torch.Tensor], part: str, patch_size: int,
            to_reference: bool) -> dict[str, torch.Tensor]:
    """Map a state dict (or gradients) of `part` ("encoder" or "predictor") from one naming and layout to the other."""
    out = {}
    for name, t in state.items():
        if name in FIXED:
            continue
        name = rename(name, part, to_reference)
        if name == "patch_embed.proj.weight":  # (D, P*P*C) -> (D, C, P, P)
            t = rearrange(t, "d (p1 p2 c) -> d c p1 p2", p1=patch_size, p2=patch_size)
        elif name == "patch_embed.weight":  # (D, C, P, P) -> (D, P*P*C)
            t = rearrange(t, "d c p1 p2 -> d (p1 p2 c)")
        out[name] = t
    return out


def as_ours(ref: SimpleNamespace, grads: bool = False) -> dict[str, torch.Tensor]:
    """The reference's networks' weights (or the gradients of the trained two) under minijepa's IJEPA names."""
    nets = [("context_encoder", "encoder", ref.encoder), ("predictor", "predictor", ref.predictor)]
    nets += [] if grads else [("target_encoder", "encoder", ref.target_encoder)]
    out = {}
    for ours, part, net in nets:
        state = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None} if grads \
            else net.state_dict()
        out |= {f"{ours}.{n}": t for n, t in convert(state, part, ref.patch_size, to_reference=False).items()}
    return out


# --------------------------------------------------------------------------------------------------- comparing
def compare(quantity: str, ours: torch.Tensor | dict[str, torch.Tensor], ref: torch.Tensor | dict[str, torch.Tensor],
            note: int | None = None) -> dict:
    """One row of the table. A dict of tensors is judged by its worst tensor, named in `detail`."""
    row = dict(quantity=quantity, abs=None, rel=None, tol=RTOL, result="FAIL", detail="")
    if isinstance(ours, dict):
        if ours.keys() != ref.keys():
            return row | dict(detail=f"names differ: {sorted(ours.keys() ^ ref.keys())[:4]}")
        rows = [compare(k, ours[k], ref[k], note) for k in ref]
        worst = max(rows, key=lambda r: math.inf if r["rel"] is None else r["rel"])
        return worst | dict(quantity=f"{quantity} ({len(rows)} tensors)", detail=f"worst: {worst['quantity']}")
    if ours.shape != ref.shape:
        return row | dict(detail=f"shapes {tuple(ours.shape)} and {tuple(ref.shape)}")
    diff = (ours.double() - ref.double()).abs().max().item()
    scale = ref.double().abs().max().item()
    passed = diff <= RTOL * scale
    result = "pass" if passed else "FAIL" if note is None else f"differs (note {note})"
    return row | dict(abs=diff, rel=diff / scale if scale else (0.0 if passed else math.inf), result=result)


def swap_halves(pos: torch.Tensor) -> torch.Tensor:  # (1, N, D): [first half | second half] -> [second | first]
    return torch.cat(pos.chunk(2, dim=-1)[::-1], dim=-1)


# ------------------------------------------------------------------------------------------- the reference code
API = {"src.models.vision_transformer": ("VisionTransformer", "VisionTransformerPredictor"),
       "src.masks.utils": ("apply_masks",), "src.utils.tensors": ("repeat_interleave_batch",),
       "src.utils.distributed": ("AllReduce",), "src.helper": ("init_opt",)}
SIGNATURES = {"VisionTransformer": ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads"),
              "VisionTransformerPredictor": ("num_patches", "embed_dim", "predictor_embed_dim", "depth", "num_heads"),
              "init_opt": ("encoder", "predictor", "iterations_per_epoch", "start_lr", "ref_lr", "warmup",
                           "num_epochs", "wd", "final_wd", "final_lr", "ipe_scale")}


def load_reference(folder: Path) -> SimpleNamespace:
    """Import the names the check needs from the reference checkout, and only their modules; nothing is stubbed."""
    if not folder.is_dir():
        raise ReferenceCodeError(f"--reference {folder}: no such folder; {HINT}")
    if not (folder / "src" / "models" / "vision_transformer.py").is_file():
        raise ReferenceCodeError(f"--reference {folder} is not a checkout of facebookresearch/ijepa (it has no "
                                 f"src/models/vision_transformer.py); {HINT}")
    path, api = str(folder.resolve()), {}
    sys.path.insert(0, path)
    try:
        for module, names in API.items():
            mod = importlib.import_module(module)
            api |= {n: getattr(mod, n) for n in names}
    except (ImportError, AttributeError) as e:
        expected = ", ".join(f"{m}.{n}" for m, names in API.items() for n in names)
        raise ReferenceCodeError(f"cannot import the reference code from {folder} ({type(e).__name__}: {e}); "
                                 f"expected {expected}, as in {PINNED}") from None
    finally:
        sys.path.remove(path)
    for name, params in SIGNATURES.items():
        missing = sorted(set(params) - set(inspect.signature(api[name]).parameters))
        if missing:
            raise ReferenceCodeError(f"the reference's {name} in {folder} takes no {missing} any more: its API moved; "
                                     f"use {PINNED}")
    return SimpleNamespace(**api)


@contextlib.contextmanager
def reference_api() -> Iterator[None]:
    """Around calls of the reference's constructors: an error there means that its API moved (one clear line, not a
    traceback), and its INFO logging is muted (src/helper.py sends it to stdout, e.g. "Using AdamW")."""
    logging.disable(logging.INFO)
    try:
        yield
    except (TypeError, AttributeError, KeyError, AssertionError) as e:
        raise ReferenceCodeError(f"the reference code does not run as {PINNED} does ({type(e).__name__}: {e})") \
            from None
    finally:
        logging.disable(logging.NOTSET)


def build_reference(api: SimpleNamespace, cfg: Config, in_chans: int) -> SimpleNamespace:
    """Encoder, target encoder (a deep copy, src/train.py L169) and predictor, built as the reference's vit_tiny and
    vit_predictor presets build them (src/models/vision_transformer.py), at cfg's sizes."""
    norm = functools.partial(nn.LayerNorm, eps=1e-6)
    encoder = api.VisionTransformer(img_size=[cfg.img_size], patch_size=cfg.patch_size, in_chans=in_chans,
                                    embed_dim=cfg.dim, depth=cfg.depth, num_heads=cfg.heads, mlp_ratio=4,
                                    qkv_bias=True, norm_layer=norm)
    predictor = api.VisionTransformerPredictor(num_patches=encoder.patch_embed.num_patches, embed_dim=cfg.dim,
                                               predictor_embed_dim=cfg.predictor_dim, depth=cfg.predictor_depth,
                                               num_heads=cfg.heads, mlp_ratio=4, qkv_bias=True, norm_layer=norm)
    return SimpleNamespace(encoder=encoder, predictor=predictor, target_encoder=copy.deepcopy(encoder),
                           patch_size=cfg.patch_size, grads={})


def reference_optimizer(api: SimpleNamespace, ref: SimpleNamespace, cfg: Config) -> tuple:
    """src/helper.py init_opt, with one iteration per epoch so that its schedules count steps, and the momentum
    generator of src/train.py L228-229: (AdamW, lr scheduler, wd scheduler, momentum generator)."""
    with reference_api():
        opt, _, lr_sched, wd_sched = api.init_opt(
            encoder=ref.encoder, predictor=ref.predictor, iterations_per_epoch=1, start_lr=cfg.start_lr,
            ref_lr=cfg.lr, warmup=cfg.warmup_steps, num_epochs=cfg.steps, wd=cfg.wd, final_wd=cfg.final_wd,
            final_lr=cfg.final_lr, ipe_scale=1.0)
    ema, ipe, num_epochs, ipe_scale = (cfg.momentum, cfg.final_momentum), 1, cfg.steps, 1.0
    momentum_scheduler = (ema[0] + i*(ema[1]-ema[0])/(ipe*num_epochs*ipe_scale)
                          for i in range(int(ipe*num_epochs*ipe_scale)+1))
    return opt, lr_sched, wd_sched, momentum_scheduler


def reference_step(api: SimpleNamespace, ref: SimpleNamespace, optimizer: torch.optim.Optimizer, scheduler,
                   wd_scheduler, momentum_scheduler: Iterator[float], imgs: torch.Tensor,
                   masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor], loss_name: str) -> torch.Tensor:
    """The reference's training step, restated line by line from `train_step()` inside `main()` of src/train.py
    (L290-336, commit 52c1ae9) without bf16 and DDP. Two additions: the loss may be MSE (the paper's Eq. 1) instead
    of smooth L1, and the gradients are kept in `ref.grads` before `optimizer.zero_grad()` drops them."""
    encoder, predictor, target_encoder = ref.encoder, ref.predictor, ref.target_encoder
    scheduler.step()  # L291-292
    wd_scheduler.step()
    with torch.no_grad():  # L295-303, forward_target
        h = target_encoder(imgs)  # (B, N, D)
        h = F.layer_norm(h, (h.size(-1),))  # normalize over feature-dim
        B = len(h)
        h = api.apply_masks(h, masks_pred)  # (M*B, Kt, D): block m of image b is row m*B + b
        h = api.repeat_interleave_batch(h, B, repeat=len(masks_enc))
    z = encoder(imgs, masks_enc)  # L305-308, forward_context: (B, Kc, D)
    z = predictor(z, masks_enc, masks_pred)  # (M*B, Kt, D)
    loss = F.smooth_l1_loss(z, h) if loss_name == "smooth_l1" else F.mse_loss(z, h)  # L310-313, loss_fn
    loss = api.AllReduce.apply(loss)  # the identity on one process
    loss.backward()  # L327-330
    optimizer.step()
    ref.grads = as_ours(ref, grads=True)
    optimizer.zero_grad()
    with torch.no_grad():  # L333-336, momentum update of target encoder
        m = next(momentum_scheduler)
        for param_q, param_k in zip(encoder.parameters(), target_encoder.parameters()):
            param_k.data.mul_(m).add_((1.-m) * param_q.detach().data)
    return loss.detach()


# ---------------------------------------------------------------------------------------------- the cross-check
def build_pair(api: SimpleNamespace, cfg: Config) -> tuple[nn.Module, SimpleNamespace]:
    """minijepa's IJEPA and the reference's networks, with the same weights (the reference's)."""
    model = build_model(cfg)  # seeds torch with cfg.seed, so the reference's random init is the same every run
    with reference_api():
        ref = build_reference(api, cfg, model.context_encoder.in_chans)
    try:
        model.load_state_dict(as_ours(ref))  # strict: every tensor on both sides is accounted for
    except RuntimeError as e:
        raise ReferenceCodeError(f"the reference's networks no longer map onto minijepa's "
                                 f"({' '.join(str(e).split())[:300]}); use {PINNED}") from None
    return model, ref


def use_reference_tables(model: nn.Module, ref: SimpleNamespace) -> None:
    """Note 1: minijepa runs with the reference's position tables, so that the other rows compare everything else."""
    for ours, theirs in [(model.context_encoder, ref.encoder.pos_embed), (model.target_encoder, ref.encoder.pos_embed),
                         (model.predictor, ref.predictor.predictor_pos_embed)]:
        ours.pos_embed.copy_(theirs)


def batch(cfg: Config, model: nn.Module, step: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Random images (B, C, H, W), a context (B, Kc) and M target blocks (B, Kt) drawn by minijepa's masker. The
    reference takes the same index tensors as lists: masks_enc = [context], masks_pred = targets."""
    g, enc = step_generator(cfg.seed, step), model.context_encoder
    images = torch.randn(BATCH, enc.in_chans, cfg.img_size, cfg.img_size, generator=g)
    return (images, *build_masker(cfg, enc.grid_size).sample(BATCH, g))


def check_setup(api: SimpleNamespace, cfg: Config) -> list[dict]:
    """What does not depend on the loss: position tables, weight-decay groups, schedules, the forward passes."""
    model, ref = build_pair(api, cfg)
    rows = []
    for name, ours, theirs in [("encoder", model.context_encoder.pos_embed, ref.encoder.pos_embed),
                               ("predictor", model.predictor.pos_embed, ref.predictor.predictor_pos_embed)]:
        rows += [compare(f"{name} position embedding", ours, theirs, note=1),
                 compare(f"{name} position embedding, halves swapped", swap_halves(ours), theirs)]
    use_reference_tables(model, ref)
    opt, lr_sched, wd_sched, momentum = reference_optimizer(api, ref, cfg)
    ref_decay = {names(ref)[id(p)]: not g.get("WD_exclude", False) for g in opt.param_groups for p in g["params"]
                 if p.requires_grad}
    ours = {id(p): n for n, p in model.named_parameters()}
    our_decay = {ours[id(p)]: g["decay"] for g in schedules.param_groups(model.context_encoder, model.predictor)
                 for p in g["params"]}
    differ = sorted(n for n in our_decay.keys() | ref_decay.keys() if our_decay.get(n) != ref_decay.get(n))
    rows.append(dict(quantity="weight-decay groups: tensors placed differently", abs=len(differ), rel=None, tol="0",
                     result="differs (note 2)" if differ == ["predictor.mask_token"] else "FAIL" if differ
                     else "pass", detail=", ".join(differ)))
    T, as_tensor = cfg.steps, functools.partial(torch.tensor, dtype=torch.float64)
    ref_lr, ref_wd = [lr_sched.step() for _ in range(T)], [wd_sched.step() for _ in range(T)]
    lr = [schedules.learning_rate(k, T, cfg.warmup_steps, cfg.lr, cfg.start_lr, cfg.final_lr) for k in range(T + 1)]
    wd = [schedules.weight_decay(k, T, cfg.wd, cfg.final_wd) for k in range(T + 1)]
    m = [schedules.ema_momentum(k, T, cfg.momentum, cfg.final_momentum) for k in range(T)]
    rows += [compare(f"learning rate, steps 1-{T}", as_tensor(lr[1:]), as_tensor(ref_lr)),
             compare(f"weight decay, steps 1-{T}", as_tensor(wd[1:]), as_tensor(ref_wd)),
             compare(f"EMA momentum, steps 0-{T - 1}", as_tensor(m), as_tensor(list(momentum)[:T])),
             compare("learning rate of the first update", as_tensor(lr[0]), as_tensor(ref_lr[0]), note=3),
             compare("weight decay of the first update", as_tensor(wd[0]), as_tensor(ref_wd[0]), note=3)]

    images, context, targets = batch(cfg, model, 0)
    with torch.no_grad():
        layers = []  # each reference block's output, through the final norm (as ViT.forward_layers does)
        hooks = [b.register_forward_hook(lambda mod, args, out: layers.append(ref.target_encoder.norm(out)))
                 for b in ref.target_encoder.blocks]
        ref.target_encoder(images)
        for hook in hooks:
            hook.remove()
        for i, (a, b) in enumerate(zip(model.target_encoder.forward_layers(images), layers), start=1):
            rows.append(compare(f"target encoder, all patches, block {i}/{cfg.depth}", a, b))  # (B, N, D)
        z, z_ref = model.context_encoder(images, keep=context), ref.encoder(images, [context])  # (B, Kc, D)
        rows.append(compare("context encoder, kept patches", z, z_ref))
        M = len(targets)
        pred = model.predictor(z.repeat(M, 1, 1), context.repeat(M, 1), torch.cat(targets))  # (M*B, Kt, D)
        rows.append(compare(f"predictor, {M} target blocks", pred, ref.predictor(z_ref, [context], targets)))
    return rows


def check_training(api: SimpleNamespace, cfg: Config, loss: str, dtype: torch.dtype) -> list[dict]:
    """Training steps on both sides, minijepa's with its own train_step: in float32 one step (loss, gradients, the
    AdamW step: note 4), in float64 STEPS steps (loss, gradients, AdamW, EMA, then all weights after each step)."""
    model, ref = build_pair(api, dataclasses.replace(cfg, loss=loss))
    use_reference_tables(model, ref)
    for net in (model, ref.encoder, ref.predictor, ref.target_encoder):
        net.to(dtype)
    ref_opt, lr_sched, wd_sched, momentum = reference_optimizer(api, ref, cfg)
    params, ref_names = dict(model.named_parameters()), names(ref)
    groups = [{"params": [params[ref_names[id(p)]] for p in g["params"] if p.requires_grad],  # note 2
               "decay": not g.get("WD_exclude", False), "weight_decay": g["weight_decay"]}
              for g in ref_opt.param_groups]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.wd)  # as train.train()
    tag, rows = str(dtype).removeprefix("torch."), []
    for k in range(1, (STEPS if dtype == torch.float64 else 1) + 1):  # update k, schedules at the reference's index
        images, context, targets = batch(cfg, model, k - 1)
        schedules.set_optimizer(optimizer, schedules.learning_rate(k, cfg.steps, cfg.warmup_steps, cfg.lr,
                                                                   cfg.start_lr, cfg.final_lr),
                                schedules.weight_decay(k, cfg.steps, cfg.wd, cfg.final_wd))
        m = schedules.ema_momentum(k - 1, cfg.steps, cfg.momentum, cfg.final_momentum)
        loss_ours, _ = train_step(model, optimizer, images.to(dtype), context, targets, m)
        loss_ref = reference_step(api, ref, ref_opt, lr_sched, wd_sched, momentum, images.to(dtype), [context],
                                  targets, loss)
        rows.append(compare(f"{tag} · step {k}: loss", loss_ours, loss_ref))
        state, ref_state = model.state_dict(), as_ours(ref)
        if k > 1:
            rows.append(compare(f"{tag} · step {k}: all weights", state, ref_state))
            continue
        grads = {n: p.grad for n, p in params.items() if p.grad is not None}
        trained = ({n: s[n] for n in grads} for s in (state, ref_state))
        rows.append(compare(f"{tag} · step 1: gradients", grads, ref.grads))
        if dtype == torch.float64:
            target = ({n: t for n, t in s.items() if n.startswith("target_encoder.")} for s in (state, ref_state))
            rows += [compare(f"{tag} · step 1: weights after AdamW", *trained),
                     compare(f"{tag} · step 1: target encoder after EMA", *target)]
        else:
            ours, theirs = trained
            rows += [compare(f"{tag} · step 1: weights after AdamW", ours, theirs, note=4),
                     adam_bound(f"{tag} · step 1: weights after AdamW, allowing for Adam's division", ours, theirs,
                                grads, ref.grads, optimizer.param_groups[0]["lr"], optimizer.defaults["eps"])]
    return rows


def adam_bound(quantity: str, ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor],
               grads: dict[str, torch.Tensor], ref_grads: dict[str, torch.Tensor], lr: float, eps: float) -> dict:
    """Note 4. Adam's first update of a weight is lr * g / (|g| + eps), which moves by at most lr/eps times a change
    of g: the weights may differ by that much times the gradients' difference, on top of the usual rule."""
    worst, share, outside = 0.0, 0.0, []
    for n in ref:
        diff = (ours[n].double() - ref[n].double()).abs()
        allowed = lr / eps * (grads[n].double() - ref_grads[n].double()).abs() + RTOL * ref[n].double().abs().max()
        worst, share = max(worst, diff.max().item()), max(share, (diff / allowed).max().item())
        outside += [n] if (diff > allowed).any() else []
    return dict(quantity=quantity, abs=worst, rel=None, tol=f"(lr/eps)·|Δgrad| + {RTOL:g} × max|ref|",
                result="FAIL" if outside else "pass",
                detail=f"outside: {', '.join(outside)}" if outside else f"uses {share:.0%} of the allowance")


def names(ref: SimpleNamespace) -> dict[int, str]:
    """id of each reference parameter -> its minijepa name (the fixed tables excepted)."""
    return {id(p): f"{ours}.{rename(n, part, to_reference=False)}"
            for ours, part, net in [("context_encoder", "encoder", ref.encoder), ("predictor", "predictor",
                                                                                  ref.predictor)]
            for n, p in net.named_parameters() if n not in FIXED}


# ---------------------------------------------------------------------------------------------- report and CLI
def run(folder: Path, commit: str | None = None) -> dict:
    """The whole cross-check: a JSON-ready report (rows grouped in sections, `passed`)."""
    api = load_reference(folder)
    if (folder / ".git").exists():
        git = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
        found = git.stdout.strip() if git.returncode == 0 else None
        if found and commit and not found.startswith(commit):
            raise ReferenceCodeError(f"--reference-commit {commit}, but {folder} is at {found}")
        commit = found or commit
    sections = []
    for name, cfg in CONFIGS.items():
        sections.append(dict(config=name, loss=None, rows=check_setup(api, cfg)))
        for loss in ("smooth_l1", "l2"):
            rows = check_training(api, cfg, loss, torch.float32) + check_training(api, cfg, loss, torch.float64)
            sections.append(dict(config=name, loss=loss, rows=rows))
    keep = ("data", "img_size", "patch_size", "dim", "depth", "heads", "predictor_dim", "predictor_depth",
            "n_targets", "min_keep", "steps", "warmup_steps", "lr", "start_lr", "final_lr", "wd", "final_wd",
            "momentum", "final_momentum", "seed")
    return dict(reference="https://github.com/facebookresearch/ijepa", reference_commit=commit or "unknown",
                torch=torch.__version__, rule=RULE, rtol=RTOL, batch=BATCH, steps=STEPS,
                configs={n: {k: getattr(c, k) for k in keep} for n, c in CONFIGS.items()},
                notes={str(k): v for k, v in NOTES.items()}, sections=sections,
                passed=all(r["result"] != "FAIL" for s in sections for r in s["rows"]))


def title(section: dict) -> str:
    what = "setup and forward passes, float32" if section["loss"] is None else f"training, loss={section['loss']}"
    return f"{section['config']}: {what}"


def cells(row: dict) -> list[str]:
    fmt = lambda x: "—" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)  # noqa: E731
    tol = row["tol"] if isinstance(row["tol"], str) else f"{row['tol']:g} × max|ref|"
    return [row["quantity"], fmt(row["abs"]), fmt(row["rel"]), tol, row["result"], row["detail"]]


HEADER = ["quantity", "max abs diff", "max rel diff", "tolerance", "result", "where"]


def markdown_table(section: dict) -> str:
    """One section's rows as a markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in section["rows"]]
    return "\n".join(lines)


def markdown(report: dict) -> str:
    outcome = "pass" if report["passed"] else "FAIL"
    out = ["# minijepa against the reference I-JEPA code\n",
           f"Written by `python -m minijepa.crosscheck --reference DIR --markdown docs/crosscheck.md`, DIR being a "
           f"clone of {report['reference']} at commit `{report['reference_commit']}`; torch {report['torch']}, "
           f"batches of {report['batch']} images. Rule: {report['rule']}. Result: **{outcome}**. A \"differs\" row "
           f"is a deliberate difference, explained in the notes at the end, next to a row that checks it is exactly "
           f"that.\n"]
    for s in report["sections"]:
        out += [f"\n## {title(s)}\n", markdown_table(s)]
    out += ["\n## Notes\n"] + [f"{k}. {v}" for k, v in report["notes"].items()]
    return "\n".join(out) + "\n"


def text_table(section: dict) -> str:
    rows = [HEADER] + [cells(r) for r in section["rows"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return "\n".join([title(section)] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows])


def main(argv: list[str] | None = None) -> dict:
    p = ArgumentParser(description=__doc__.split("\n")[0].rstrip(":"))
    p.add_argument("--reference", required=True, type=Path, metavar="DIR",
                   help="a clone of https://github.com/facebookresearch/ijepa")
    p.add_argument("--reference-commit", metavar="HASH", help="the commit DIR holds, when it is not a git checkout")
    p.add_argument("--json", default="docs/crosscheck.json", metavar="OUT", help="the report (default: %(default)s)")
    p.add_argument("--markdown", metavar="OUT", help="also write the tables as markdown")
    args = p.parse_args(argv)
    with user_errors():
        report = run(args.reference, args.reference_commit)
    for section in report["sections"]:
        print(text_table(section) + "\n")
    print("\n".join(f"note {k}: {v}" for k, v in report["notes"].items()))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(report))
    failed = [f"{title(s)}: {r['quantity']}" for s in report["sections"] for r in s["rows"] if r["result"] == "FAIL"]
    if failed:
        raise SystemExit(f"FAILED: {len(failed)} comparison(s) outside the rule: " + "; ".join(failed))
    print(f"\nall comparisons pass ({RULE}); report in {args.json}")
    return report


if __name__ == "__main__":
    main()
