"""Pretrain I-JEPA: `python -m minijepa.train --preset demo --out runs/demo [--steps N] [--resume] [--key value]`.

`train()` reads top to bottom: set up (device, processes, data, model, optimizer), resume or start, the loop, finish.
Each step of the loop is notebook 05's hand-written step:
  1. a batch of images (kept in device memory), RandomResizedCrop as the only augmentation (paper App. A);
  2. fresh multi-block masks, drawn with a generator seeded by (seed, step, rank), so a resumed run replays
     exactly the same crops and masks as an uninterrupted one (and, with `--distractor`, the same noise or clutter
     from distractors.py);
  3. the schedules' lr, weight decay and EMA momentum for this step;
  4. loss = IJEPA(images, context, targets); AdamW step on context encoder + predictor; EMA update of the target;
  5. log (MetricsLog: one host sync per window, with the divergence checks) and checkpoint.
The run directory holds config.json, metrics.jsonl (one row per step), metrics.png and checkpoint.pt; one process
at a time may train into it (checkpoint.RunLock). Precision (`--amp`: bf16 or fp16 by card on CUDA, float32
elsewhere) and compilation fit the device (device.py); bad options are refused before anything is loaded
(check_config). Every option, its choices and its meaning: `python -m minijepa.train --help` (from OPTIONS below).
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
import warnings
from pathlib import Path
from typing import Iterator, NoReturn

import torch
import torch.distributed as dist
from tqdm import tqdm

from . import schedules
from .checkpoint import CheckpointError, DiskFullError, RunDirectoryBusy, RunLock, load_checkpoint, save_checkpoint
from .config import (OPTIONS, PRESETS, RUNTIME_FIELDS, Config, build_masker, build_model, check_config,
                     config_from_dict, flag, preset_config)
from .data import DatasetNotFoundError, load_dataset, normalise, random_resized_crop
from .device import AMP_DTYPES, make_scaler, compile_networks, compile_problem, peak_memory_mb, pick_device, \
    resolve_amp
from .distractors import Distractor
from .ijepa import IJEPA

class TrainingDiverged(RuntimeError):
    pass


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM stopped the run after saving a checkpoint; the CLI exits with 128 + the signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


# ----------------------------------------------------------------------------------------------------------- setup
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


def init_processes(cfg: Config) -> tuple[torch.device, int, int]:
    """(device, rank, world size). Under torchrun (RANK and WORLD_SIZE set) joins the process group: nccl with one
    GPU per process on CUDA, gloo on the CPU. A single process is rank 0 of 1."""
    device = pick_device(cfg.device)
    if not ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
        return device, 0, 1
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the number of processes ({world})")
    return device, rank, world


def wrap_for_device(model: IJEPA, cfg: Config, device: torch.device, rank: int, world: int) -> torch.nn.Module:
    """The network the step calls: compiled where torch.compile works (a stated fallback elsewhere, never a failure
    deep inside the first step), wrapped in DDP when there are several processes."""
    if cfg.compile:
        why = f"it is used on CUDA only, this run is on {device.type}" if device.type != "cuda" \
            else compile_problem(device)
        if why is None:
            compile_networks(model)
        elif rank == 0:
            print(f"note: training without torch.compile ({why})", file=sys.stderr)
    if world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                     else None)


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


# How the course names a run's collapse, from its feature std (collapse_stats, logged every `log_every` steps). Every
# run of the studies starts near 0.06; each of their runs that ended below 0.02 and was read out beside its random
# initialisation ended below it on kNN (tests/test_train.py checks the committed results).
COLLAPSED_STD = 0.02        # the feature std at the end of the run below this: collapsed
NEAR_COLLAPSE_STD = 0.04    # below this at any logged step, but not at the end: came near collapse


def collapse_state(feat_std: list[float]) -> str:
    """"collapsed", "near collapse" or "clear of collapse": a run's feature std over its logged steps against
    COLLAPSED_STD (at the end) and NEAR_COLLAPSE_STD (at any step)."""
    if not feat_std:
        raise ValueError("no feature std logged: the run has no collapse signals yet")
    if feat_std[-1] < COLLAPSED_STD:
        return "collapsed"
    return "near collapse" if min(feat_std) < NEAR_COLLAPSE_STD else "clear of collapse"


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


class MetricsLog:
    """metrics.jsonl, one row per step, written once per log window (one host sync), with the run's health checks:
    a non-finite loss, or fp16 gradients that overflow even with the loss scale below 1, stop the run
    (TrainingDiverged). The last row of a window also carries speed, memory and the collapse signals of the target
    encoder on the latest batch. All processes average their losses; rank 0 writes."""

    def __init__(self, path: Path, cfg: Config, model: IJEPA, scaler: torch.amp.GradScaler | None, amp: str,
                 device: torch.device, rank: int, world: int, start: int, ckpt_path: Path, progress: bool):
        self.path, self.cfg, self.model, self.scaler, self.amp = path, cfg, model, scaler, amp
        self.device, self.rank, self.world, self.ckpt_path = device, rank, world, ckpt_path
        self.pending: list[tuple[int, float, float, float, dict[str, torch.Tensor], torch.Tensor]] = []
        self.bar = tqdm(total=cfg.steps, initial=start, disable=not progress or rank != 0, dynamic_ncols=True,
                        desc=f"{device.type} {amp if amp != 'off' else 'fp32'}")
        self.t_flush = time.perf_counter()

    def add(self, step: int, lr: float, wd: float, m: float, losses: dict[str, torch.Tensor],
            grad_norm: torch.Tensor) -> None:
        self.pending.append((step, lr, wd, m, losses, grad_norm))

    def flush(self, x: torch.Tensor) -> None:
        """Write the pending rows; x (B, C, H, W) is the latest training batch, for the collapse signals."""
        if not self.pending:
            return
        vals = torch.stack([torch.stack([out["loss"], gn, out["pred_loss"], out["reg"]])
                            for *_, out, gn in self.pending]).float()  # (n, 4)
        if self.world > 1:
            dist.all_reduce(vals)
            vals /= self.world
        vals = vals.cpu()
        self.check(vals)
        now = time.perf_counter()
        img_s = len(self.pending) * self.cfg.batch_size / (now - self.t_flush)
        with torch.no_grad():
            feat_std, erank = collapse_stats(self.model.target_encoder(x).mean(1))  # pooled target-encoder features
        rows = [dict(step=s, loss=v[0].item(), grad_norm=v[1].item(), lr=lr, wd=wd, momentum=m)
                for (s, lr, wd, m, *_), v in zip(self.pending, vals)]
        if self.scaler is not None:  # steps the scaler skipped (their gradients overflowed: the grad norm is inf/NaN)
            for r in rows:
                if not math.isfinite(r["grad_norm"]):
                    r["skipped"] = True
            rows[-1]["loss_scale"] = self.scaler.get_scale()
        if self.cfg.reg != "none":  # the two parts of the loss, logged separately
            for r, v in zip(rows, vals):
                r.update(pred_loss=v[2].item(), reg=v[3].item())
        rows[-1].update(img_per_s=img_s, feat_std=feat_std, erank=erank, peak_mem_mb=peak_memory_mb(self.device),
                        amp=self.amp)
        if self.rank == 0:
            with self.path.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        self.bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", lr=f"{rows[-1]['lr']:.2e}",
                             m=f"{rows[-1]['momentum']:.4f}", img_s=f"{img_s:.0f}", refresh=False)
        self.bar.update(len(self.pending))
        self.pending.clear()
        self.t_flush = time.perf_counter()

    def check(self, vals: torch.Tensor) -> None:
        """Stop a run that diverged; vals (n, 4) holds the window's loss, grad norm, prediction loss and reg."""
        kept = f"the last good checkpoint is kept in {self.ckpt_path}" if self.ckpt_path.exists() \
            else "no checkpoint yet"
        if not torch.isfinite(vals[:, 0]).all():  # the forward pass itself: no loss scale can fix that
            bad = self.pending[int((~torch.isfinite(vals[:, 0])).nonzero()[0])][0]
            raise TrainingDiverged(f"loss became non-finite at step {bad} ({kept}). Lower --lr or raise "
                                   f"--warmup-steps, then --resume or start again.")
        # fp16: a step whose gradients overflow is skipped by the scaler, which halves its scale (from 2^16): that
        # is routine, not divergence. Only gradients that overflow even at a scale below 1 mean the run diverged.
        if self.scaler is not None and self.scaler.get_scale() < 1:
            raise TrainingDiverged(f"fp16 gradients overflow even with the loss scale at {self.scaler.get_scale():.2g}"
                                   f" (steps up to {self.pending[-1][0]}; {kept}). Lower --lr, or use --amp bf16 "
                                   f"(cards with native bf16) or --amp off, then --resume or start again.")

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def stop_requests() -> Iterator[dict]:
    """Ctrl-C / SIGTERM during the block only set stop["signal"]: the loop finishes its step, saves and exits."""
    stop = {"signal": None}
    handler = lambda signum, frame: stop.update(signal=signum)  # noqa: E731
    old_handlers = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)


# -------------------------------------------------------------------------------------------------- checkpoints
def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Config, IJEPA, dict]:
    """Rebuild a trained model from a run directory: (config, model in eval mode, checkpoint dict)."""
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    cfg = config_from_dict(ckpt["config"])
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    return cfg, model.to(device).eval(), ckpt


def resume_or_start(cfg: Config, out: Path, model: IJEPA, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, resume: bool, device: torch.device, rank: int) -> int:
    """The step to start from. A new run refuses to overwrite a checkpoint and starts at 0; `resume` loads the
    checkpoint's model, optimizer and loss scale after checking that it was trained with the same config (only
    RUNTIME_FIELDS may change), and warns if a CPU run resumes with another thread count (no longer bit-exact).
    Rank 0 then writes config.json and cuts metrics.jsonl back to the steps before it."""
    ckpt_path, metrics_path = out / "checkpoint.pt", out / "metrics.jsonl"
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
        threads = torch.get_num_threads()
        if device.type == "cpu" and ckpt.get("threads", threads) != threads:  # another split of every sum
            warnings.warn(f"{ckpt_path} was trained with {ckpt['threads']} CPU threads and resumes with {threads}: "
                          f"the run goes on, but no longer bit for bit as it would have without the interruption "
                          f"(OMP_NUM_THREADS={ckpt['threads']} resumes it exactly)", stacklevel=2)
    elif ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
    if rank == 0:
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        rows = metrics_path.read_text().splitlines() if resume and metrics_path.exists() else []
        metrics_path.write_text("".join(r + "\n" for r in rows if json.loads(r)["step"] < start))
    return start


def save_training_state(path: Path, cfg: Config, step: int, model: IJEPA, optimizer: torch.optim.Optimizer,
                        scaler: torch.amp.GradScaler | None, amp: str, norm: tuple[torch.Tensor, torch.Tensor],
                        saved: int) -> None:
    """checkpoint.pt after `step` completed steps: everything an exact resume needs. If the save fails (a full disk),
    the previous checkpoint, of step `saved`, is intact: the error says so, and how to go on."""
    try:
        save_checkpoint(path, config=dataclasses.asdict(cfg), step=step, model=model.state_dict(),
                        optimizer=optimizer.state_dict(), norm=dict(mean=norm[0], std=norm[1]), amp=amp,
                        threads=torch.get_num_threads(),
                        **({"scaler": scaler.state_dict()} if scaler is not None else {}))
    except CheckpointError as e:
        fix = "free some space, then" if isinstance(e, DiskFullError) else "once a checkpoint can be saved there,"
        then = f"--resume continues from step {saved}" if path.exists() else "start again"
        raise type(e)(f"{e}. The run stopped at step {step}: {fix} {then}") from None


# ---------------------------------------------------------------------------------------------------------- loop
def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True) -> IJEPA:
    # set up: device and processes, the run directory (locked), data, model, masker, optimizer
    check_config(cfg)
    device, rank, world = init_processes(cfg)
    amp = resolve_amp(cfg.amp, device)
    scaler = make_scaler(amp, device)
    out = Path(out)  # bad options and a missing device have been refused: now the run directory may be made
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out) if rank == 0 else contextlib.nullcontext():
        distractor = Distractor.parse(cfg.distractor)  # None, or the detail added to every training batch
        data = load_dataset(cfg.data, cfg.train_split)
        mean, std = data.mean_std()
        images = data.images.to(device)  # (N, C, H, W) uint8: small datasets live on the device
        norm_mean, norm_std = mean.to(device), std.to(device)  # (C,), moved once, not every step
        model = build_model(cfg).to(device)
        masker = build_masker(cfg, model.context_encoder.grid_size)
        optimizer = torch.optim.AdamW(schedules.param_groups(model.context_encoder, model.predictor), lr=cfg.lr,
                                      betas=(0.9, 0.999), weight_decay=cfg.wd)
        start = resume_or_start(cfg, out, model, optimizer, scaler, resume, device, rank)
        net = wrap_for_device(model, cfg, device, rank, world)
        ckpt_path, local_batch, saved = out / "checkpoint.pt", cfg.batch_size // world, start
        log = MetricsLog(out / "metrics.jsonl", cfg, model, scaler, amp, device, rank, world, start, ckpt_path,
                         progress)

        # the loop: notebook 05's step, plus logging and checkpoints
        step = start
        with stop_requests() as stop, contextlib.closing(log):
            for step in range(start, cfg.steps):
                g = step_generator(cfg.seed, step, rank)  # 1. crops and masks of this step
                idx = batch_indices(len(images), cfg.batch_size, cfg.seed, step)[rank::world]  # (B,)
                x = random_resized_crop(images[idx.to(device)], cfg.img_size, scale=cfg.crop_scale, generator=g)
                context, targets = masker.sample(local_batch, g)  # 2. (B, Kc), n_targets x (B, Kt)
                context, targets = context.to(device), [t.to(device) for t in targets]
                if distractor is not None:  # drawn after the masks: with and without it, crops and masks are equal
                    x = distractor(x, g)
                x = normalise(x, norm_mean, norm_std)  # (B, C, H, W)
                if cfg.reg == "sigreg":  # its random directions come from torch's generator: seed it from this step
                    torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))
                lr = schedules.learning_rate(step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.start_lr, cfg.final_lr)
                wd = schedules.weight_decay(step, cfg.steps, cfg.wd, cfg.final_wd)  # 3. this step's schedules
                m = schedules.ema_momentum(step, cfg.steps, cfg.momentum, cfg.final_momentum)
                schedules.set_optimizer(optimizer, lr, wd)
                losses, grad_norm = train_step(net, optimizer, x, context, targets, m, amp, cfg.clip_grad, model,
                                               parts=True, scaler=scaler)  # 4. loss, AdamW, EMA
                log.add(step, lr, wd, m, losses, grad_norm)  # 5. log and checkpoint
                step += 1  # `step` now counts completed steps
                if step % cfg.log_every == 0 or step % cfg.ckpt_every == 0 or step == cfg.steps or stop["signal"]:
                    log.flush(x)
                if (step % cfg.ckpt_every == 0 or step == cfg.steps or stop["signal"]) and rank == 0:
                    save_training_state(ckpt_path, cfg, step, model, optimizer, scaler, amp, (mean, std), saved)
                    saved = step
                if stop["signal"]:
                    break

        # finish: the metrics figure, a DDP consistency check, and the exit an interrupted run owes its caller
        if rank == 0:
            from .plots import plot_metrics
            plot_metrics(out / "metrics.jsonl", out / "metrics.png")
    if world > 1:
        check_in_sync(model)
        dist.destroy_process_group()
    if stop["signal"]:
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
USER_ERRORS = (ValueError, FileExistsError, DatasetNotFoundError, CheckpointError, RunDirectoryBusy,
               TrainingDiverged)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """For every command line: the package's own errors (bad options, missing data or checkpoint, a diverged run, a
    busy run directory, a failed save) and running out of GPU memory end the command with `error: <message>` on
    stderr and exit status 1, no traceback."""
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


def option_help(name: str) -> str:
    """An option's --help line, from OPTIONS: its meaning, its value under the default preset, and the presets that
    set it otherwise."""
    def show(v) -> str:
        return ",".join(f"{x:g}" for x in v) if isinstance(v, tuple) else str(v).lower() if isinstance(v, bool) \
            else f"{v:g}" if isinstance(v, float) else str(v)

    values = {p: show(getattr(preset_config(p), name)) for p in PRESETS}
    others = [f"{p} {v}" for p, v in values.items() if v != values["demo"]]
    return f"{OPTIONS[name][0]} (default {values['demo']}" + (f"; {', '.join(others)}" if others else "") + ")"


def parse_args(argv: list[str] | None = None) -> tuple[Config, Path, bool, bool]:
    p = ArgumentParser(description=__doc__.split("\n")[0], epilog="presets: " + "; ".join(
        f"{name}: {o['data']}, {o['img_size']} px, dim {o['dim']} x {o['depth']} blocks, {o['steps']} steps"
        for name, o in PRESETS.items()))
    p.add_argument("--preset", choices=list(PRESETS), default="demo", help="the starting configuration (listed "
                                                                             "below); the options here override it")
    p.add_argument("--out", required=True, help="run directory (config.json, metrics, checkpoint.pt)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for f in dataclasses.fields(Config):
        _, choices = OPTIONS[f.name]
        p.add_argument(flag(f.name), dest=f.name, default=None, help=option_help(f.name),
                       metavar="{" + ",".join(choices) + "}" if choices else
                       "LOW,HIGH" if f.type.startswith("tuple") else {"int": "N", "float": "X"}.get(f.type, "NAME"))
        if "_" in f.name:  # also accepted as spelled in config.json
            p.add_argument("--" + f.name, dest=f.name, default=None, help=argparse.SUPPRESS)
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
        raise SystemExit(f"error: {flag(name)}: cannot read {raw!r} as {kind.__name__}"
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
