"""Training-step benchmark: `python -m minijepa.bench [--preset NAME] [--device cuda] [--amp fp16] [--compile]`.

Times the real training step (`train.train_step`: forward, backward, AdamW, EMA) on synthetic images with the
usual masks, and prints images/s, ms/step, model FLOPs per step, achieved FLOP/s, MFU (on a GPU with a known
peak) and peak memory. Precision and compilation are the training loop's own (`device.resolve_amp`: bf16 or fp16 by
card on CUDA, float32 elsewhere; `device.compile_networks`). The default "bench" configuration is the one quoted in
the README: 32x32 RGB, patch 4 (8x8 grid), ViT-Tiny (192/12/3), predictor 96 wide x 6 deep, 4 targets, batch 64.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import schedules
from .config import OPTIONS
from .device import AMP_MODES, compile_networks, compile_problem, make_scaler, peak_memory_mb, pick_device, resolve_amp
from .train import (PRESETS, ArgumentParser, Config, build_masker, build_model, check_config, step_generator,
                    train_step, user_errors)

BENCH = dict(data="cifar10", img_size=32, patch_size=4, dim=192, depth=12, heads=3, predictor_dim=96,
             predictor_depth=6, n_targets=4, batch_size=64)
# Dense 16-bit tensor-core peaks (TFLOP/s, vendor datasheets: bf16, or fp16 on cards without bf16) for the MFU
# column, which is always against this peak (also when the step runs in float32); override with --peak-tflops.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "RTX 4090": 165.0, "V100": 125.0,
               "T4": 65.0}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def main(argv: list[str] | None = None) -> dict:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="bench", choices=["bench", *PRESETS], help="model and batch to time: bench "
                   "(32 px RGB, ViT-Tiny 192 x 12, batch 64) or a training preset (python -m minijepa.train --help)")
    p.add_argument("--device", default="auto", metavar="NAME", help=OPTIONS["device"][0])
    p.add_argument("--amp", default="auto", choices=AMP_MODES, help=OPTIONS["amp"][0] + " (default auto)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="images per step (default: the preset's)")
    p.add_argument("--steps", type=int, default=20, metavar="N", help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=3, metavar="N", help="untimed steps first, compilation included "
                                                                     "(default 3)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks, as training does on CUDA")
    p.add_argument("--peak-tflops", type=float, default=None, metavar="X", help="the device's peak TFLOP/s, for "
                   "MFU (default: looked up for known GPUs, else no MFU)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: torch's choice)")
    p.add_argument("--json", metavar="FILE", help="also write the result to FILE")
    args = p.parse_args(argv)
    with user_errors():
        return bench(args)


def bench(args: argparse.Namespace) -> dict:
    if args.steps < 1 or args.warmup < 0:
        raise ValueError(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")
    if (args.threads is not None and args.threads < 1) or (args.peak_tflops is not None and args.peak_tflops <= 0):
        raise ValueError(f"--threads must be >= 1 and --peak-tflops > 0, got {args.threads} and {args.peak_tflops}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Config(**{**dataclasses.asdict(Config()), **(BENCH if args.preset == "bench" else PRESETS[args.preset]),
                    "amp": args.amp, "device": args.device})
    if args.batch_size is not None:
        cfg.batch_size = args.batch_size
    check_config(cfg)
    device = pick_device(args.device)
    amp = resolve_amp(args.amp, device)
    scaler = make_scaler(amp, device)
    model = build_model(cfg).to(device)
    masker = build_masker(cfg, model.context_encoder.grid_size)
    optimizer = torch.optim.AdamW(schedules.param_groups(model.context_encoder, model.predictor), lr=1e-4,
                                  fused=device.type == "cuda")
    compiled = False
    if args.compile:  # a stated fallback, never a failure deep inside the first step
        why = compile_problem(device)
        if why is None:
            compile_networks(model)
            compiled = True
        else:
            print(f"note: benchmarking without torch.compile ({why})", file=sys.stderr)
    in_chans = model.context_encoder.in_chans
    images = torch.randn(cfg.batch_size, in_chans, cfg.img_size, cfg.img_size, generator=torch.Generator()
                         .manual_seed(0)).to(device)
    masks = []  # a fixed sequence of masks, the same in every run, drawn before timing
    for i in range(args.warmup + args.steps):
        context, targets = masker.sample(cfg.batch_size, step_generator(0, i))
        masks.append((context.to(device), [t.to(device) for t in targets]))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for i, (context, targets) in enumerate(masks):
        if i == args.warmup:
            sync()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
        train_step(model, optimizer, images, context, targets, momentum=0.996, amp=amp, scaler=scaler)
    sync()
    seconds = time.perf_counter() - t0

    # Model FLOPs (forward + backward; the target encoder forward only) of each timed step, counted on a copy of
    # the model on the "meta" device: shapes only, no arithmetic. They vary with each batch's mask sizes.
    meta_model = build_model(cfg).to("meta")
    flops = 0
    for context, targets in masks[args.warmup:]:
        with FlopCounterMode(display=False) as counter:
            meta_model(images.to("meta"), context.to("meta"), [t.to("meta") for t in targets]).backward()
        flops += counter.get_total_flops() / args.steps  # mean per step
    mean_context = sum(c.shape[1] for c, _ in masks[args.warmup:]) / args.steps

    step_ms = 1000 * seconds / args.steps
    result = dict(preset=args.preset, device=torch.cuda.get_device_name(device) if device.type == "cuda"
                  else f"cpu ({torch.get_num_threads()} threads)", batch=cfg.batch_size, amp=amp,
                  compile=compiled, img_per_s=cfg.batch_size * args.steps / seconds, ms_per_step=step_ms,
                  gflop_per_step=flops / 1e9, tflop_per_s=flops / (step_ms / 1000) / 1e12,
                  mean_context=mean_context)
    peak = args.peak_tflops or peak_tflops(device)
    if peak:
        result["mfu"] = result["tflop_per_s"] / peak
    result["peak_mem_mb"] = peak_memory_mb(device)  # CUDA: allocated tensors; CPU: the process's max RSS
    print("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
