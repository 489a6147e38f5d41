"""`make demo`: the whole pipeline on the embedded data, offline, on a CPU in a few minutes.

    1. pretrain I-JEPA (preset "demo") into runs/demo  -- resumed if a previous demo was interrupted
    2. evaluate it against the same ViT at random initialisation and the raw pixels (linear probe, kNN, low-shot,
       1 % fine-tuning)
    3. draw the masks on sample images, the training curves and the probe table
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from .data import load_dataset, load_photos
from .evaluate import evaluate_run
from .masks import MultiBlockMasker
from .plots import plot_masks
from .train import PRESETS, Config, load_checkpoint, train


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    args = p.parse_args(argv)
    out = Path(args.out)
    cfg = Config(**{**dataclasses.asdict(Config()), **PRESETS["demo"]})
    if args.steps:
        cfg.steps = args.steps

    ckpt = out / "checkpoint.pt"
    done = ckpt.exists() and load_checkpoint(ckpt)["step"] >= cfg.steps
    if done:
        print(f"[1/3] {ckpt} is complete; delete {out} to train again")
    else:
        print(f"[1/3] pretraining I-JEPA on the embedded Fashion-MNIST subset ({cfg.steps} steps) -> {out}")
        train(cfg, out, resume=ckpt.exists())

    print("[2/3] evaluating the target encoder vs. the same ViT at random initialisation and the raw pixels")
    result = evaluate_run(out)

    print("[3/3] drawing masks")
    generator = torch.Generator().manual_seed(0)
    photos = torch.stack([img for _, img in load_photos(224)])  # (P, 3, 224, 224): the paper's 14x14 grid
    context, targets = MultiBlockMasker((14, 14)).sample(len(photos), generator)
    plot_masks(photos, context, targets, (14, 14), n=len(photos), out=out / "masks_photos.png",
               title="multi-block masks at 224 px / patch 16 (blue: context, colours: 4 targets)")
    fashion = load_dataset("embedded", "test").images[:6]
    grid = (cfg.img_size // cfg.patch_size,) * 2
    context, targets = MultiBlockMasker(grid, min_keep=cfg.min_keep).sample(len(fashion), generator)
    plot_masks(fashion, context, targets, grid, n=6, out=out / "masks_fashion.png",
               title=f"the demo's masks: 28 px / patch {cfg.patch_size} = {grid[0]}x{grid[1]} grid")

    print("\nresults (accuracy on the embedded test split):")
    print(f"  {'':22s}{'I-JEPA':>8s}{'random init':>13s}{'raw pixels':>12s}")
    show = lambda value, width: f"{value:{width}.3f}" if value is not None else f"{'n/a':>{width}s}"
    for key in ("linear", "knn", "linear_10_per_class", "linear_1pct", "finetune_1pct"):  # raw pixels: no fine-tuning
        print(f"  {key:22s}{show(result['ijepa'][key], 8)}{show(result['random_init'][key], 13)}"
              f"{show(result['raw_pixels'][key], 12)}")
    print(f"\nfigures and files in {out}/: metrics.png (training curves), eval.png (probe table), "
          f"masks_photos.png, masks_fashion.png, eval.json, metrics.jsonl, checkpoint.pt")


if __name__ == "__main__":
    main()
