"""Pretrain I-JEPA: `python -m minijepa.train --preset demo --out runs/demo [--steps N] [--resume] [--key value]`.

The whole loop is in `train()`, with no framework around it. Each step:
  1. a batch of images (kept in device memory), RandomResizedCrop as the only augmentation (paper App. A);
  2. fresh multi-block masks, drawn with a generator seeded by (seed, step, rank), so a resumed run replays
     exactly the same crops and masks as an uninterrupted one (and, with `--distractor`, the same noise or clutter
     from distractors.py);
  3. loss = IJEPA(images, context, targets); AdamW step on context encoder + predictor; EMA update of the target.
The run directory holds config.json, metrics.jsonl (one row per step), metrics.png and checkpoint.pt. Precision
(`--amp`: bf16 or fp16 by card on CUDA, float32 elsewhere) and compilation fit the device (device.py); bad
options are refused before anything is loaded (check_config).
Multi-GPU: `torchrun --nproc_per_node=N -m minijepa.train ...` (DDP; gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NoReturn

import torch
import torch.distributed as dist
from tqdm import tqdm

from . import schedules
from .data import DatasetNotFoundError, load_dataset, normalise, random_resized_crop
from .device import AMP_DTYPES, AMP_MODES, compile_networks, compile_problem, make_scaler, peak_memory_mb, \
    pick_device, resolve_amp
from .distractors import Distractor
from .ijepa import IJEPA
from .masks import Masker, make_masker
from .vit import ViT

CHECKPOINT_FORMAT = "minijepa-checkpoint-v1"
# Fields that may change on --resume; nothing else may. `amp` is one of them because, like `device`, it says how the
# step is computed, not what is trained ("auto" already gives bf16 on one card and fp16 on another): a run begun on
# an A100 may go on on a T4 or a CPU. Only an uninterrupted device and precision make a resume exact to the bit.
RUNTIME_FIELDS = ("device", "amp", "compile", "log_every", "ckpt_every")


@dataclass
class Config:
    # data
    data: str = "embedded"
    train_split: str = "train"  # stl10 pretrains on "unlabeled"
    img_size: int = 28
    crop_scale: tuple[float, float] = (0.3, 1.0)
    distractor: str = "none"  # "noise:S" | "clutter:S": unpredictable detail in every image (distractors.py)
    # encoder (ViT) and predictor
    patch_size: int = 4
    dim: int = 192
    depth: int = 12
    heads: int = 3
    embed_init: str = "reference"  # patch-embedding init: "reference" (trunc-normal 0.02) or "xavier" (MAE)
    predictor_dim: int = 96
    predictor_depth: int = 6
    target: str = "latent"  # or "pixels"
    loss: str = "l2"  # or "smooth_l1"
    target_norm: bool = True  # layer-norm latent targets / per-patch-normalise pixel targets (paper: yes)
    reg: str = "none"  # anti-collapse term on the context encoder's output: none | vicreg | sigreg
    reg_weight: float = 0.0
    reg_on: str = "image"  # regularise each image's mean embedding, or every patch embedding ("patch")
    # masking
    masking: str = "multiblock"  # multiblock | random | block | rasterized
    n_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    min_keep: int = 4
    # optimisation
    batch_size: int = 128  # global, split across DDP ranks
    steps: int = 1000
    warmup_steps: int = 100
    lr: float = 1e-3
    start_lr: float = 2e-4
    final_lr: float = 1e-6
    wd: float = 0.04
    final_wd: float = 0.4
    momentum: float = 0.996
    final_momentum: float = 1.0
    clip_grad: float = 0.0  # 0 = no clipping (the grad norm is logged either way)
    seed: int = 0
    # runtime
    device: str = "auto"  # auto = cuda > mps > cpu
    amp: str = "auto"  # mixed precision: auto | bf16 | fp16 | off (resolve_amp: what auto picks on each device)
    compile: bool = False  # torch.compile the three networks (CUDA only: on a CPU it costs minutes, gains nothing)
    log_every: int = 10
    ckpt_every: int = 200


PRESETS: dict[str, dict] = {
    # embedded Fashion-MNIST subset, laptop CPU, a few minutes
    "demo": dict(data="embedded", img_size=28, patch_size=4, dim=128, depth=6, heads=4, predictor_dim=64,
                 predictor_depth=4, batch_size=128, steps=500, warmup_steps=50, ckpt_every=100),
    # all of Fashion-MNIST on a 2-core CPU in under 30 minutes (1200 x 128 images: 2.6 epochs)
    "fashion-cpu": dict(data="fashion-mnist", img_size=28, patch_size=4, dim=128, depth=6, heads=4,
                        predictor_dim=64, predictor_depth=4, batch_size=128, steps=1200, warmup_steps=120),
    # CIFAR-10 on one GPU
    "cifar10-tiny": dict(data="cifar10", img_size=32, patch_size=4, dim=192, depth=12, heads=3, predictor_dim=96,
                         predictor_depth=6, batch_size=256, steps=20000, warmup_steps=1000, compile=True,
                         ckpt_every=1000),
    "cifar10-small": dict(data="cifar10", img_size=32, patch_size=4, dim=384, depth=12, heads=6, predictor_dim=192,
                          predictor_depth=8, batch_size=256, steps=40000, warmup_steps=2000, compile=True,
                          ckpt_every=1000),
    # Imagenette (ImageNet subset as an image folder) on one GPU, 128 px, 16 px patches (8x8 grid)
    "imagenette-small": dict(data="imagefolder:~/data/imagenette2-160", img_size=128, patch_size=16, dim=384,
                             depth=12, heads=6, predictor_dim=192, predictor_depth=8, batch_size=256, steps=20000,
                             warmup_steps=1000, compile=True, ckpt_every=1000),
}


class CheckpointError(RuntimeError):
    pass


class TrainingDiverged(RuntimeError):
    pass


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM stopped the run after saving a checkpoint; the CLI exits with 128 + the signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


# ----------------------------------------------------------------------------------------------------------- setup
def build_model(cfg: Config) -> IJEPA:
    torch.manual_seed(cfg.seed)
    in_chans = 1 if cfg.data in ("embedded", "fashion-mnist") else 3
    encoder = ViT(cfg.img_size, cfg.patch_size, in_chans, cfg.dim, cfg.depth, cfg.heads, embed_init=cfg.embed_init)
    return IJEPA(encoder, cfg.predictor_dim, cfg.predictor_depth, target=cfg.target, loss=cfg.loss,
                 target_norm=cfg.target_norm, reg=cfg.reg, reg_weight=cfg.reg_weight, reg_on=cfg.reg_on)


def build_masker(cfg: Config, grid_size: tuple[int, int]) -> Masker:
    if cfg.masking == "multiblock":
        return make_masker("multiblock", grid_size, n_targets=cfg.n_targets, target_scale=cfg.target_scale,
                           target_aspect=cfg.target_aspect, context_scale=cfg.context_scale, min_keep=cfg.min_keep)
    return make_masker(cfg.masking, grid_size)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, rank): crops and masks never depend on run history."""
    digest = hashlib.sha256(f"{seed}/{step}/{rank}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Global batch `step`: epochs walk through a fresh permutation of the n images (last partial batch dropped)."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the dataset ({n} images)")
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return perm[pos * batch_size:(pos + 1) * batch_size]


# ------------------------------------------------------------------------------------------------------- the step
def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               context: torch.Tensor, targets: list[torch.Tensor], momentum: float, amp: str = "off",
               clip_grad: float = 0.0, ema_model: IJEPA | None = None, parts: bool = False,
               scaler: torch.amp.GradScaler | None = None
               ) -> tuple[torch.Tensor | dict[str, torch.Tensor], torch.Tensor]:
    """One I-JEPA step: loss, backward, AdamW, EMA. Returns (loss, grad norm) as device tensors (no host sync);
    with `parts`, the loss is IJEPA's dict (loss, pred_loss, reg). `model` may be a DDP/compiled wrapper;
    `ema_model` is then the plain IJEPA inside it. `amp` is a resolved precision (resolve_amp): the forward pass
    runs under bf16 or fp16 autocast. fp16 wants a `scaler` (make_scaler): the loss is scaled before backward and
    the gradients unscaled before clipping; if they overflowed (inf/NaN), the scaler skips the AdamW step and lowers
    its scale, and the returned grad norm is non-finite. The EMA update runs either way, as in the reference code."""
    with torch.autocast(images.device.type, dtype=AMP_DTYPES.get(amp), enabled=amp != "off"):
        out = model(images, context, targets, parts=parts)
    loss = out["loss"] if parts else out
    optimizer.zero_grad(set_to_none=True)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if scaler is None:
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad if clip_grad > 0 else math.inf)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip and log the true gradients
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad if clip_grad > 0 else math.inf)
        scaler.step(optimizer)  # skipped if any gradient is inf/NaN
        scaler.update()
    (ema_model or model).update_target(momentum)
    return ({k: v.detach() for k, v in out.items()} if parts else loss.detach()), grad_norm


@torch.no_grad()
def collapse_stats(features: torch.Tensor) -> tuple[float, float]:
    """Collapse signals of (B, D) image features: mean per-dimension std across images (collapse to a point drives
    it to 0) and effective rank, exp(entropy of the normalised singular values) (Roy & Vetterli 2007; collapse into
    a few directions drives it towards 1). The rank ignores scale: read the two together (notebook 04)."""
    x = features.float() - features.float().mean(0)
    s = torch.linalg.svdvals(x)
    p = s / s.sum().clamp_min(1e-12)
    erank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
    return x.std(0).mean().item(), erank.item()


# -------------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, **state) -> None:
    """Atomic write: a crash mid-save leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train first (python -m minijepa.train --out {path.parent})")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)  # never runs pickled code
    except Exception as e:
        raise CheckpointError(f"{path} is corrupt or not a PyTorch file ({type(e).__name__}: {e}); delete it and "
                              f"train again, or resume from a backup") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a minijepa checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return ckpt


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Config, IJEPA, dict]:
    """Rebuild a trained model from a run directory: (config, model in eval mode, checkpoint dict)."""
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    cfg = config_from_dict(ckpt["config"])
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    return cfg, model.to(device).eval(), ckpt


def preset_config(preset: str = "demo", **overrides) -> Config:
    """The Config of a named preset, with field overrides: `preset_config("demo", steps=50)`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return config_from_dict({**dataclasses.asdict(Config()), **PRESETS[preset], **overrides})


def config_from_dict(d: dict) -> Config:
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}")
    if isinstance(d.get("amp"), bool):  # saved before the precision modes: true meant bf16 on CUDA (auto still gives
        d = {**d, "amp": "auto" if d["amp"] else "off"}  # it on cards with native bf16) and nothing elsewhere
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


POSITIVE = ("img_size", "patch_size", "dim", "depth", "heads", "predictor_dim", "predictor_depth", "n_targets",
            "min_keep", "batch_size", "steps", "log_every", "ckpt_every")
NON_NEGATIVE = ("warmup_steps", "start_lr", "final_lr", "wd", "final_wd", "clip_grad", "reg_weight")


def check_config(cfg: Config) -> None:
    """Every option in range before anything is loaded or trained: a ValueError naming the option and what to do.
    Sizes and counts must be positive; rates and decays non-negative, lr positive; momenta and crop scales in [0, 1].
    The model and masker are then built on the "meta" device (shapes only, no memory), so their own checks run too:
    a patch size that does not divide the image, an unknown target or masking, impossible target scales."""
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    bad = [f"{flag(n)} must be a positive whole number, got {getattr(cfg, n)!r}" for n in POSITIVE
           if not isinstance(getattr(cfg, n), int) or getattr(cfg, n) < 1]
    bad += [f"{flag(n)} must be >= 0, got {getattr(cfg, n)!r}" for n in NON_NEGATIVE if not getattr(cfg, n) >= 0]
    if not cfg.lr > 0:
        bad.append(f"--lr must be > 0, got {cfg.lr!r}")
    bad += [f"{flag(n)} must be in [0, 1], got {getattr(cfg, n)!r}" for n in ("momentum", "final_momentum")
            if not 0 <= getattr(cfg, n) <= 1]
    if not 0 < cfg.crop_scale[0] <= cfg.crop_scale[1] <= 1:
        bad.append(f"--crop-scale must be two numbers with 0 < low <= high <= 1, got {cfg.crop_scale}")
    if cfg.amp not in AMP_MODES:
        bad.append(f"--amp must be one of {', '.join(AMP_MODES)}, got {cfg.amp!r}")
    if bad:
        raise ValueError("; ".join(bad))
    bad = [f"{flag(n)} must be divisible by 4 (sin-cos positions) and by --heads ({cfg.heads}), got {getattr(cfg, n)}"
           for n in ("dim", "predictor_dim") if getattr(cfg, n) % 4 or getattr(cfg, n) % cfg.heads]
    if bad:
        raise ValueError("; ".join(bad))
    if cfg.device != "auto":
        try:
            torch.device(cfg.device)
        except RuntimeError:
            raise ValueError(f"--device {cfg.device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    Distractor.parse(cfg.distractor)
    with torch.device("meta"), torch.random.fork_rng(devices=[]):  # build_model seeds torch: leave its RNG alone
        grid = build_model(cfg).context_encoder.grid_size
    build_masker(cfg, grid)


# ---------------------------------------------------------------------------------------------------------- loop
def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True) -> IJEPA:
    check_config(cfg)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    device = pick_device(cfg.device)
    if distributed:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the number of processes ({world})")
    local_batch, amp = cfg.batch_size // world, resolve_amp(cfg.amp, device)
    scaler = make_scaler(amp, device)
    out = Path(out)  # bad options and a missing device have been refused: now the run directory may be made
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, metrics_path = out / "checkpoint.pt", out / "metrics.jsonl"

    distractor = Distractor.parse(cfg.distractor)  # None, or the detail added to every training batch
    data = load_dataset(cfg.data, cfg.train_split)
    mean, std = data.mean_std()
    images = data.images.to(device)  # (N, C, H, W) uint8: small datasets live on the device
    norm_mean, norm_std = mean.to(device), std.to(device)  # (C,), moved once, not every step

    model = build_model(cfg).to(device)
    masker = build_masker(cfg, model.context_encoder.grid_size)
    optimizer = torch.optim.AdamW(schedules.param_groups(model.context_encoder, model.predictor), lr=cfg.lr,
                                  betas=(0.9, 0.999), weight_decay=cfg.wd)
    start = 0
    if resume:
        ckpt = load_checkpoint(ckpt_path, device)
        saved, now = (json.loads(json.dumps(dataclasses.asdict(c)))  # fields added since: defaults; tuples: lists
                      for c in (config_from_dict(ckpt["config"]), cfg))
        if {k: v for k, v in saved.items() if k not in RUNTIME_FIELDS} != {
                k: v for k, v in now.items() if k not in RUNTIME_FIELDS}:
            raise CheckpointError(f"{ckpt_path} was trained with a different config; resume with the same options "
                                  f"(see {out / 'config.json'}) or use a new --out")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and "scaler" in ckpt:  # fp16 before and now: go on with the same loss scale
            scaler.load_state_dict(ckpt["scaler"])
        start = ckpt["step"]
    elif ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
    if rank == 0:
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        rows = metrics_path.read_text().splitlines() if resume and metrics_path.exists() else []
        metrics_path.write_text("".join(r + "\n" for r in rows if json.loads(r)["step"] < start))

    if cfg.compile:  # a stated fallback, never a failure deep inside the first step
        why = f"it is used on CUDA only, this run is on {device.type}" if device.type != "cuda" \
            else compile_problem(device)
        if why is None:
            compile_networks(model)
        elif rank == 0:
            print(f"note: training without torch.compile ({why})", file=sys.stderr)
    net = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)

    stop = {"signal": None}  # Ctrl-C / SIGTERM: finish the step, save, exit
    handler = lambda signum, frame: stop.update(signal=signum)  # noqa: E731
    old_handlers = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    pending: list[tuple[int, float, float, float, dict[str, torch.Tensor], torch.Tensor]] = []
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress or rank != 0, dynamic_ncols=True,
               desc=f"{device.type} {amp if amp != 'off' else 'fp32'}")
    t_flush, step = time.perf_counter(), start

    def flush() -> None:  # one host sync per log window: write metrics, check for divergence
        nonlocal t_flush
        if not pending:
            return
        vals = torch.stack([torch.stack([out["loss"], gn, out["pred_loss"], out["reg"]])
                            for *_, out, gn in pending]).float()  # (n, 4)
        if distributed:
            dist.all_reduce(vals)
            vals /= world
        vals = vals.cpu()
        kept = f"the last good checkpoint is kept in {ckpt_path}" if ckpt_path.exists() else "no checkpoint yet"
        if not torch.isfinite(vals[:, 0]).all():  # the forward pass itself: no loss scale can fix that
            bad = pending[int((~torch.isfinite(vals[:, 0])).nonzero()[0])][0]
            raise TrainingDiverged(f"loss became non-finite at step {bad} ({kept}). Lower --lr or raise "
                                   f"--warmup-steps, then --resume or start again.")
        # fp16: a step whose gradients overflow is skipped by the scaler, which halves its scale (from 2^16): that
        # is routine, not divergence. Only gradients that overflow even at a scale below 1 mean the run diverged.
        if scaler is not None and scaler.get_scale() < 1:
            raise TrainingDiverged(f"fp16 gradients overflow even with the loss scale at {scaler.get_scale():.2g} "
                                   f"(steps up to {pending[-1][0]}; {kept}). Lower --lr, or use --amp bf16 (cards "
                                   f"with native bf16) or --amp off, then --resume or start again.")
        now = time.perf_counter()
        img_s = len(pending) * cfg.batch_size / (now - t_flush)
        with torch.no_grad():  # x: the latest training batch
            feat_std, erank = collapse_stats(model.target_encoder(x).mean(1))  # pooled target-encoder features
        rows = [dict(step=s, loss=v[0].item(), grad_norm=v[1].item(), lr=lr, wd=wd, momentum=m)
                for (s, lr, wd, m, *_), v in zip(pending, vals)]
        if scaler is not None:  # steps the scaler skipped (their gradients overflowed: the grad norm is inf/NaN)
            for r in rows:
                if not math.isfinite(r["grad_norm"]):
                    r["skipped"] = True
            rows[-1]["loss_scale"] = scaler.get_scale()
        if cfg.reg != "none":  # the two parts of the loss, logged separately
            for r, v in zip(rows, vals):
                r.update(pred_loss=v[2].item(), reg=v[3].item())
        rows[-1].update(img_per_s=img_s, feat_std=feat_std, erank=erank, peak_mem_mb=peak_memory_mb(device),
                        amp=amp)
        if rank == 0:
            with metrics_path.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", lr=f"{rows[-1]['lr']:.2e}", m=f"{rows[-1]['momentum']:.4f}",
                        img_s=f"{img_s:.0f}", refresh=False)
        bar.update(len(pending))
        pending.clear()
        t_flush = time.perf_counter()

    def checkpoint() -> None:
        flush()
        if rank == 0:
            save_checkpoint(ckpt_path, config=dataclasses.asdict(cfg), step=step, model=model.state_dict(),
                            optimizer=optimizer.state_dict(), norm=dict(mean=mean, std=std), amp=amp,
                            **({"scaler": scaler.state_dict()} if scaler is not None else {}))

    try:
        for step in range(start, cfg.steps):
            g = step_generator(cfg.seed, step, rank)
            idx = batch_indices(len(images), cfg.batch_size, cfg.seed, step)[rank::world]
            x = random_resized_crop(images[idx.to(device)], cfg.img_size, scale=cfg.crop_scale, generator=g)
            context, targets = masker.sample(local_batch, g)
            context, targets = context.to(device), [t.to(device) for t in targets]
            if distractor is not None:  # drawn after the masks: with and without it, crops and masks are the same
                x = distractor(x, g)
            x = normalise(x, norm_mean, norm_std)  # (B, C, H, W)
            if cfg.reg == "sigreg":  # its random directions come from torch's generator: seed it from this step
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))
            lr = schedules.learning_rate(step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.start_lr, cfg.final_lr)
            wd = schedules.weight_decay(step, cfg.steps, cfg.wd, cfg.final_wd)
            m = schedules.ema_momentum(step, cfg.steps, cfg.momentum, cfg.final_momentum)
            schedules.set_optimizer(optimizer, lr, wd)
            losses, grad_norm = train_step(net, optimizer, x, context, targets, m, amp, cfg.clip_grad, model,
                                           parts=True, scaler=scaler)
            pending.append((step, lr, wd, m, losses, grad_norm))
            step += 1  # `step` now counts completed steps
            if step % cfg.ckpt_every == 0 or step == cfg.steps or stop["signal"] is not None:
                checkpoint()
            elif step % cfg.log_every == 0:
                flush()
            if stop["signal"] is not None:
                break
    finally:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    if rank == 0:
        from .plots import plot_metrics
        plot_metrics(metrics_path, out / "metrics.png")
    if distributed:
        check_in_sync(model)
        dist.destroy_process_group()
    if stop["signal"] is not None:
        raise TrainingInterrupted(stop["signal"], f"interrupted: saved step {step} to {ckpt_path}; continue with "
                                                  f"--resume")
    return model


def check_in_sync(model: torch.nn.Module) -> None:
    """DDP sanity check: every rank must hold the same weights (else gradients were not all-reduced)."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    if not torch.equal(flat, ref):
        raise RuntimeError(f"rank {dist.get_rank()} diverged from rank 0 (max diff {(flat - ref).abs().max():.3g})")


# ----------------------------------------------------------------------------------------------------------- CLI
USER_ERRORS = (ValueError, FileExistsError, DatasetNotFoundError, CheckpointError, TrainingDiverged)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """For every command line: the package's own errors (bad options, missing data or checkpoint, a diverged run) and
    running out of GPU memory end the command with `error: <message>` on stderr and exit status 1, no traceback."""
    try:
        yield
    except USER_ERRORS as e:
        raise SystemExit(f"error: {e}") from None
    except torch.cuda.OutOfMemoryError as e:
        raise SystemExit(f"error: out of memory ({str(e).splitlines()[0]}); lower --batch-size") from None


class ArgumentParser(argparse.ArgumentParser):
    """argparse, whose own errors (unknown option, bad choice) also end in one line starting with `error:`."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n")


def parse_args(argv: list[str] | None = None) -> tuple[Config, Path, bool, bool]:
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--out", required=True, help="run directory (config.json, metrics, checkpoint.pt)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly")
    p.add_argument("--no-progress", action="store_true")
    for f in dataclasses.fields(Config):
        p.add_argument("--" + f.name.replace("_", "-"), "--" + f.name, dest=f.name, default=None, metavar=f.name.upper(),
                       help=f"default {f.default} (or the preset's)")
    args = p.parse_args(argv)
    values = dataclasses.asdict(preset_config(args.preset))
    for f in dataclasses.fields(Config):
        raw = getattr(args, f.name)
        if raw is not None:
            values[f.name] = parse_value(raw, type(values[f.name]), f.name)
    if args.resume and (Path(args.out) / "config.json").exists():  # resume the run as configured
        values = {**json.loads((Path(args.out) / "config.json").read_text()), **{
            f.name: values[f.name] for f in dataclasses.fields(Config)
            if getattr(args, f.name) is not None and f.name in RUNTIME_FIELDS}}
    return config_from_dict(values), Path(args.out), args.resume, args.no_progress


def parse_value(raw: str, kind: type, name: str):
    try:
        if kind is bool:
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if kind is tuple:
            values = tuple(float(v) for v in raw.split(","))
            if len(values) != 2:
                raise ValueError(raw)
            return values
        return kind(raw)
    except ValueError:
        raise SystemExit(f"error: --{name.replace('_', '-')}: cannot read {raw!r} as {kind.__name__}"
                         + (" (write two numbers like 0.15,0.2)" if kind is tuple else "")) from None


def main(argv: list[str] | None = None) -> None:
    with user_errors():
        cfg, out, resume, no_progress = parse_args(argv)
        try:
            train(cfg, out, resume, progress=not no_progress)
        except TrainingInterrupted as e:
            print(e, file=sys.stderr)
            raise SystemExit(128 + e.signum) from None  # like a shell: scripts stop at an interrupted run
    print(f"done: {out}/checkpoint.pt, metrics in {out}/metrics.jsonl and {out}/metrics.png")


if __name__ == "__main__":
    main()
