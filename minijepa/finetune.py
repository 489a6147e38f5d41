"""The paper's 1 % fine-tuning (Table 2, MAE's protocol) at our scale: a copy of the encoder plus a linear head,
every weight trained on 1 % of the labels with one short, fixed recipe (FINETUNE), for a pretrained encoder and its
random initialisation alike. evaluate.py reports the result as `finetune_1pct`.
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import schedules
from .data import ImageDataset, center_resize, normalise, prepare_images, random_resized_crop
from .probes import low_shot_draws, summary
from .vit import ViT

# The recipe was chosen once, on the fashion-cpu latent-target model and its random initialisation, with 600 labels
# and 2,500 held-out *training* images as the validation set (never the test split): an encoder lr of 0.1 x the
# head's beat 0.01-0.03 x; random crops (even scale (0.9, 1)), flips and layer-wise lr decay 0.75 all lowered the
# validation accuracy at this length; more epochs gained nothing, fewer lost. The same recipe serves every encoder.
# crop_scale = (lo, hi) turns random_resized_crop on, hflip the flips (both off).
FINETUNE = dict(fraction=0.01, draws=2, epochs=15, batch_size=50, lr=1e-2, encoder_lr_scale=0.1, layer_decay=1.0,
                weight_decay=0.05, warmup_epochs=2, label_smoothing=0.1, crop_scale=None, hflip=False)


def layer_of(name: str, depth: int) -> int:
    """A ViT parameter's depth for layer-wise lr decay: 0 patch embedding, 1..depth the blocks, depth + 1 the norm."""
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1 if name.startswith("norm.") else 0


def batch_and_steps(n: int, recipe: dict = FINETUNE) -> tuple[int, int]:
    """The recipe's batch size on n labelled images, and its optimizer steps per epoch (the recipe is fixed in
    epochs: 60 labels give 1 step an epoch)."""
    batch = min(recipe["batch_size"], n)
    return batch, n // batch


def finetune_accuracy(encoder: ViT, images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
                      test_labels: torch.Tensor, norm: dict, recipe: dict = FINETUNE, seed: int = 0,
                      device: torch.device | str | None = None, batch_size: int = 512) -> float:
    """Top-1 test accuracy after fine-tuning a copy of `encoder` (the original is not touched) with a linear head on
    its average-pooled tokens, every weight trained on the labelled uint8 images (N, C, H, W) with `recipe`:
    AdamW, linear warm-up then cosine to 0, encoder lr = head lr * encoder_lr_scale (* layer_decay per block from
    the top), weight decay on weight matrices only, label smoothing. Each step: a batch from a shuffled epoch, the
    whole images (`prepare_images`), or with crop_scale = (lo, hi) random_resized_crop, and with hflip random
    horizontal flips; evaluation on the whole test images. The head is a BatchNorm without affine (MAE's probe
    head) and a zero-initialised Linear. Runs on `device` (default: the encoder's) in float32; all randomness comes
    from `seed`, so on a CPU the result is the same every time."""
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    g = torch.Generator().manual_seed(seed)  # batches, crops and flips
    n_classes = int(torch.cat([labels, test_labels]).max()) + 1
    model = copy.deepcopy(encoder).to(device).float().train().requires_grad_(True)
    head = nn.Sequential(nn.BatchNorm1d(model.dim, affine=False), nn.Linear(model.dim, n_classes)).to(device)
    nn.init.zeros_(head[1].weight)
    nn.init.zeros_(head[1].bias)
    groups = [dict(params=[p], lr_scale=recipe["encoder_lr_scale"] *
                   recipe["layer_decay"] ** (model.depth + 1 - layer_of(name, model.depth)),
                   weight_decay=recipe["weight_decay"] if p.ndim > 1 else 0.0)
              for name, p in model.named_parameters()]
    groups += [dict(params=[p], lr_scale=1.0, weight_decay=recipe["weight_decay"] if p.ndim > 1 else 0.0)
               for p in head.parameters()]
    opt = torch.optim.AdamW(groups, lr=recipe["lr"])
    mean, std = torch.as_tensor(norm["mean"]).to(device), torch.as_tensor(norm["std"]).to(device)
    size, n = model.img_size[0], len(images)
    batch, per_epoch = batch_and_steps(n, recipe)
    total, warmup = recipe["epochs"] * per_epoch, recipe["warmup_epochs"] * per_epoch
    step = 0
    for _ in range(recipe["epochs"]):
        order = torch.randperm(n, generator=g)
        for i in range(per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            x = images[idx].to(device)
            x = center_resize(x, size) if recipe["crop_scale"] is None else \
                random_resized_crop(x, size, tuple(recipe["crop_scale"]), generator=g)  # [0, 1] units
            if recipe["hflip"]:
                flip = (torch.rand(len(idx), generator=g) < 0.5).to(device)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            lr = schedules.learning_rate(step, total, warmup, recipe["lr"])
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"]
            logits = head(model(normalise(x, mean, std)).mean(1))  # (B, classes)
            loss = F.cross_entropy(logits, labels[idx].to(device), label_smoothing=recipe["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    model.eval()
    head.eval()
    correct = 0
    with torch.no_grad():
        for xb, yb in zip(test_images.split(batch_size), test_labels.split(batch_size)):
            pred = head(model(prepare_images(xb, size, mean, std, device)).mean(1)).argmax(1)
            correct += (pred.cpu() == yb).sum().item()
    return correct / len(test_images)


def finetune_readout(encoder: ViT, splits: tuple[ImageDataset, ImageDataset], norm: dict, recipe: dict = FINETUNE,
                     seed: int = 0, device: torch.device | str | None = None, batch_size: int = 512) -> dict:
    """`finetune_1pct`: finetune_accuracy on recipe["draws"] label draws of recipe["fraction"] of each class (the
    first draws of linear_1pct: the same labelled images). Returns summary() plus n_labels (per draw) and seconds
    (the wall-clock time of all draws, with the test evaluations: what the read-out costs on this machine)."""
    train, test = splits
    draws = low_shot_draws(train.labels, recipe["draws"], seed, fraction=recipe["fraction"])
    start = time.perf_counter()
    accs = [finetune_accuracy(encoder, train.images[idx], train.labels[idx], test.images, test.labels, norm, recipe,
                              seed + d, device, batch_size) for d, idx in enumerate(draws)]
    return {**summary(accs), "n_labels": len(draws[0]), "seconds": round(time.perf_counter() - start, 1)}
