"""What a run is: its Config (every option, with its meaning and choices in OPTIONS), the presets, the check of
every option before anything is loaded, and the model and masker a config builds.

    preset_config("demo", steps=50)  the Config of a preset with overrides
    check_config(cfg)                a ValueError naming each bad option and what to do
    build_model(cfg), build_masker   the IJEPA (seeded with cfg.seed) and the masker of a run

`python -m minijepa.train --help` is generated from OPTIONS, and check_config validates the choices listed there,
so the two cannot drift.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .data import DATASETS
from .device import AMP_MODES
from .distractors import Distractor
from .ijepa import IJEPA
from .masks import MASKERS, Masker, make_masker
from .vit import ViT

# Fields that may change on --resume; nothing else may. `amp` is one of them because, like `device`, it says how the
# step is computed, not what is trained ("auto" already gives bf16 on one card and fp16 on another): a run begun on
# an A100 may go on on a T4 or a CPU. Only an uninterrupted device and precision make a resume exact to the bit.
RUNTIME_FIELDS = ("device", "amp", "compile", "log_every", "ckpt_every")


@dataclass
class Config:
    """One training run. Every field is an option of `python -m minijepa.train` (its meaning: OPTIONS below)."""
    # data
    data: str = "embedded"
    train_split: str = "train"
    img_size: int = 28
    crop_scale: tuple[float, float] = (0.3, 1.0)
    distractor: str = "none"
    # encoder (ViT) and predictor
    patch_size: int = 4
    dim: int = 192
    depth: int = 12
    heads: int = 3
    embed_init: str = "reference"
    predictor_dim: int = 96
    predictor_depth: int = 6
    target: str = "latent"
    loss: str = "l2"
    target_norm: bool = True
    reg: str = "none"
    reg_weight: float = 0.0
    reg_on: str = "image"
    # masking
    masking: str = "multiblock"
    n_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    min_keep: int = 4
    # optimisation
    batch_size: int = 128
    steps: int = 1000
    warmup_steps: int = 100
    lr: float = 1e-3
    start_lr: float = 2e-4
    final_lr: float = 1e-6
    wd: float = 0.04
    final_wd: float = 0.4
    momentum: float = 0.996
    final_momentum: float = 1.0
    clip_grad: float = 0.0
    seed: int = 0
    # runtime
    device: str = "auto"
    amp: str = "auto"
    compile: bool = False
    log_every: int = 10
    ckpt_every: int = 200


# name -> (meaning, choices or None). The one table behind --help and check_config's choice checks.
OPTIONS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "data": (f"dataset: {' | '.join(DATASETS)} (data.py)", None),
    "train_split": ("split to pretrain on (STL-10: unlabeled)", ("train", "test", "unlabeled")),
    "img_size": ("side of the square crops fed to the encoder, in pixels", None),
    "crop_scale": ("RandomResizedCrop area range LOW,HIGH, fractions of the image (paper App. A)", None),
    "distractor": ("unpredictable detail in every image: none | noise:S | clutter:S (distractors.py)", None),
    "patch_size": ("side of a ViT patch, in pixels (must divide --img-size)", None),
    "dim": ("encoder width D (divisible by 4 and by --heads)", None),
    "depth": ("encoder blocks", None),
    "heads": ("attention heads per encoder block", None),
    "embed_init": ("patch-embedding init: the reference code's trunc-normal 0.02, or MAE's xavier",
                   ("reference", "xavier")),
    "predictor_dim": ("predictor width (narrower than the encoder, paper §3)", None),
    "predictor_depth": ("predictor blocks", None),
    "target": ("what the predictor predicts: target-encoder features (I-JEPA) or normalised pixels (MAE-like)",
               ("latent", "pixels")),
    "loss": ("prediction loss: Eq. 1's L2, or the reference code's smooth L1", ("l2", "smooth_l1")),
    "target_norm": ("layer-norm latent targets / per-patch-normalise pixel targets (paper: true)", ("true", "false")),
    "reg": ("anti-collapse term on the context encoder's output (regularisers.py)", ("none", "vicreg", "sigreg")),
    "reg_weight": ("weight of that term in the loss", None),
    "reg_on": ("regularise each image's mean embedding, or every patch embedding", ("image", "patch")),
    "masking": ("mask strategy (paper Table 6; masks.py)", tuple(MASKERS)),
    "n_targets": ("target blocks per image (paper: 4)", None),
    "target_scale": ("target-block area range LOW,HIGH, fractions of the image (paper: 0.15,0.2)", None),
    "target_aspect": ("target-block aspect-ratio range LOW,HIGH (paper: 0.75,1.5)", None),
    "context_scale": ("context-block area range LOW,HIGH before target patches are removed (paper: 0.85,1.0)", None),
    "min_keep": ("fewest patches a context or target mask may keep", None),
    "batch_size": ("images per step, all processes together", None),
    "steps": ("optimizer steps in the whole schedule", None),
    "warmup_steps": ("steps of linear lr warm-up from --start-lr to --lr", None),
    "lr": ("peak learning rate (AdamW), then cosine decay to --final-lr", None),
    "start_lr": ("learning rate at step 0", None),
    "final_lr": ("learning rate at the last step", None),
    "wd": ("AdamW weight decay at step 0 (cosine schedule to --final-wd)", None),
    "final_wd": ("weight decay at the last step", None),
    "momentum": ("EMA momentum of the target encoder at step 0 (linear to --final-momentum)", None),
    "final_momentum": ("EMA momentum at the last step", None),
    "clip_grad": ("clip the gradient norm to this (0 = no clipping; the norm is logged either way)", None),
    "seed": ("random seed of the weights, batches, crops and masks", None),
    "device": ("the device: auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps", None),
    "amp": ("mixed precision: auto = bf16 or fp16 by card on CUDA, float32 elsewhere (device.py)", AMP_MODES),
    "compile": ("torch.compile the three networks (CUDA only: on a CPU it costs minutes, gains nothing)",
                ("true", "false")),
    "log_every": ("steps between metric flushes (one host sync each)", None),
    "ckpt_every": ("steps between checkpoints", None),
}

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


# ------------------------------------------------------------------------------------------------------- configs
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


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_config(cfg: Config) -> None:
    """Every option in range before anything is loaded or trained: a ValueError naming the option and what to do.
    Options with a fixed set of values (OPTIONS) must take one of them; sizes and counts must be positive; rates
    and decays non-negative, lr positive; momenta and crop scales in [0, 1]. The model and masker are then built on
    the "meta" device (shapes only, no memory), so their own checks run too: a patch size that does not divide the
    image, impossible target scales."""
    bad = [f"{flag(n)} must be one of {', '.join(choices)}, got {getattr(cfg, n)!r}"
           for n, (_, choices) in OPTIONS.items()
           if choices and not isinstance(getattr(cfg, n), bool) and getattr(cfg, n) not in choices]
    bad += [f"{flag(n)} must be a positive whole number, got {getattr(cfg, n)!r}" for n in POSITIVE
            if not isinstance(getattr(cfg, n), int) or getattr(cfg, n) < 1]
    bad += [f"{flag(n)} must be >= 0, got {getattr(cfg, n)!r}" for n in NON_NEGATIVE if not getattr(cfg, n) >= 0]
    if not cfg.lr > 0:
        bad.append(f"--lr must be > 0, got {cfg.lr!r}")
    bad += [f"{flag(n)} must be in [0, 1], got {getattr(cfg, n)!r}" for n in ("momentum", "final_momentum")
            if not 0 <= getattr(cfg, n) <= 1]
    if not 0 < cfg.crop_scale[0] <= cfg.crop_scale[1] <= 1:
        bad.append(f"--crop-scale must be two numbers with 0 < low <= high <= 1, got {cfg.crop_scale}")
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
