"""What did the encoder learn? `python -m minijepa.evaluate RUN_DIR [--layers 4]` -> RUN_DIR/eval.json, eval.png
(with `--layers 4`: eval-4layers.json, eval-4layers.png, so both read-outs of a run can sit side by side).

Protocol (paper App. A): freeze the **target encoder**, average-pool its patch tokens (the last block, or the last 4
blocks concatenated, as the paper does for transfer), and fit simple read-outs on the labeled splits of the run's
dataset, with no augmentation:
    linear               multinomial logistic regression on every training label
    knn                  k = 20 nearest neighbours, cosine similarity, votes weighted by exp(sim / 0.07)
    linear_10_per_class  the linear probe with 10 labels per class (low-shot)
    linear_1pct          the linear probe with 1% of the labels per class (the paper's ablation setting, Tables 6-7)
Two baselines are read out identically: the same architecture at random initialisation (what pretraining must
beat), and the raw pixels themselves, normalised like the encoder's input and flattened (what any encoder must beat;
images larger than 32 x 32 are average-pooled to 32 x 32 first, so that the probe's whitening stays small).
A run trained with a distractor (distractors.py) is read out on train and test images corrupted the same way, with a
fixed seed, and also on the clean images (eval.json's "clean"). Without a run: `--raw-pixels DATA` reads out the
raw pixels of a dataset alone.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from .data import ImageDataset, center_resize, load_dataset, normalise
from .distractors import EVAL_SEED, Distractor, corrupt_images
from .device import AMP_DTYPES, AMP_MODES, pick_device, resolve_amp
from .train import ArgumentParser, Config, build_model, load_run, user_errors
from .vit import ViT

METRICS = ("linear", "knn", "linear_10_per_class", "linear_1pct")
LABELS = {"ijepa": "I-JEPA", "random_init": "random init", "raw_pixels": "raw pixels"}
PROBE = dict(epochs=100, weight_decay=1e-3, eps=1e-5)  # linear_probe defaults, also recorded in eval.json
PIXELS_MAX_SIDE = 32  # raw-pixel features of larger images are average-pooled to this size


def prepare_images(images: torch.Tensor, img_size: int, mean: torch.Tensor, std: torch.Tensor,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """The encoder's evaluation input: uint8 or [0, 1] float images (B, C, H, W) -> scaled to [0, 1], resized to
    img_size x img_size if they differ (no crop), normalised with mean/std (C,): float32 (B, C, S, S) on `device`."""
    return normalise(center_resize(images.to(device) if device is not None else images, img_size), mean, std)


@torch.no_grad()
def pixel_features(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   max_side: int = PIXELS_MAX_SIDE) -> torch.Tensor:
    """The raw-pixel baseline's features: uint8 or [0, 1] float images (N, C, H, W) -> normalised pixels, flattened,
    (N, C * H * W); images larger than max_side are average-pooled down to at most max_side x max_side first."""
    x = normalise(images, mean, std)  # (N, C, H, W)
    if max(x.shape[-2:]) > max_side:
        x = F.adaptive_avg_pool2d(x, max_side)
    return x.flatten(1)


@torch.no_grad()
def extract_features(encoder: ViT, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, layers: int = 1,
                     batch_size: int = 512, device: torch.device | str | None = None,
                     amp: str = "off") -> torch.Tensor:
    """uint8 images (N, C, H, W) -> average-pooled patch tokens (N, D * layers), float32 on the CPU.
    Images are scaled to [0, 1], resized to the encoder's size if they differ, and normalised with mean/std (C,).
    `amp` is a resolved precision (device.resolve_amp): "bf16" or "fp16" run the encoder under autocast."""
    if not 1 <= layers <= encoder.depth:
        raise ValueError(f"cannot pool the last {layers} layers of a {encoder.depth}-block encoder")
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    mean, std = torch.as_tensor(mean).to(device), torch.as_tensor(std).to(device)
    feats = []
    for batch in images.split(batch_size):
        x = prepare_images(batch, encoder.img_size[0], mean, std, device)  # (B, C, S, S)
        with torch.autocast(device.type, dtype=AMP_DTYPES.get(amp), enabled=amp != "off"):
            outs = encoder.forward_layers(x)[-layers:] if layers > 1 else [encoder(x)]  # layers x (B, N, D)
        feats.append(torch.cat([h.mean(1) for h in outs], dim=1).float().cpu())  # (B, D * layers)
    encoder.train(was_training)
    return torch.cat(feats)


def pca_whitener(ref: torch.Tensor, eps: float = PROBE["eps"]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The linear probe's input map, fitted on features ref (N, D): standardise each dimension, then rotate onto the
    principal axes and divide each by its std (eigenvalue + eps). Every direction then has unit variance, the large
    common one and the faint ones alike. Returns x (M, D) -> whitened (M, D)."""
    mu, sigma = ref.mean(0), ref.std(0).clamp_min(1e-6)  # (D,)
    z = ((ref - mu) / sigma).double()
    evals, evecs = torch.linalg.eigh(z.T @ z / len(z))  # (D,), (D, D)
    whiten = (evecs / (evals.clamp_min(0) + eps).sqrt()).to(ref.dtype)  # (D, D)
    return lambda x: ((x - mu) / sigma) @ whiten


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 epochs: int = PROBE["epochs"], weight_decay: float = PROBE["weight_decay"], eps: float = PROBE["eps"],
                 seed: int = 0, unlabeled_x: torch.Tensor | None = None) -> float:
    """Top-1 test accuracy of multinomial logistic regression (one nn.Linear), fitted full-batch with L-BFGS
    (`epochs` = at most that many iterations, each one pass over the data) and an L2 penalty on the weights.

    Features are standardised and then decorrelated (PCA whitening, eigenvalues + eps) with statistics of
    `unlabeled_x` (default: train_x); a linear map before a linear classifier keeps it a linear probe. Average-pooled
    ViT features share one large common direction (pairwise cosine ~0.99 for small models), so per-dimension
    standardisation alone leaves the problem so ill-conditioned that L-BFGS stops far from the optimum. Low-shot
    probes pass all training features as `unlabeled_x`: image statistics use no labels (as in the 1% setting)."""
    whiten = pca_whitener(train_x if unlabeled_x is None else unlabeled_x, eps)
    train_x, test_x = whiten(train_x), whiten(test_x)
    n_classes = int(torch.cat([train_y, test_y]).max()) + 1
    with torch.random.fork_rng(devices=[]):  # a seeded initialisation that leaves the global RNG alone
        torch.manual_seed(seed)
        head = torch.nn.Linear(train_x.shape[1], n_classes).to(train_x.device)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=epochs, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(train_x), train_y) + 0.5 * weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (head(test_x).argmax(1) == test_y).float().mean().item()


@torch.no_grad()
def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 k: int = 20, temperature: float = 0.07, center: bool = True) -> float:
    """Weighted kNN (Wu et al. 2018; DINO): the k most cosine-similar training features each vote exp(sim / T) for
    their label. `center` first subtracts the training mean, which removes the direction that all pooled features
    share (otherwise every cosine is ~0.99). Similarities are computed for a chunk of test rows at a time (<= 64 MB)."""
    if center:
        mu = train_x.mean(0)
        train_x, test_x = train_x - mu, test_x - mu
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    n_classes = int(torch.cat([train_y, test_y]).max()) + 1
    k, rows = min(k, len(train_x)), max(1, 2 ** 24 // len(train_x))
    correct = 0
    for x, y in zip(test_x.split(rows), test_y.split(rows)):
        sim, idx = (x @ train_x.T).topk(k, dim=1)  # (b, k)
        votes = torch.zeros(len(x), n_classes, device=x.device).scatter_add_(1, train_y[idx], (sim / temperature).exp())
        correct += (votes.argmax(1) == y).sum().item()
    return correct / len(test_x)


def noise_margin(a: float, b: float, n_test: int) -> float:
    """Two binomial standard errors of one accuracy (the larger of a and b) measured on n_test test images. Two
    accuracies closer than this may differ by test-set sampling alone; seeds and probe subsets add more spread."""
    p = max(a, b)
    return 2 * (p * (1 - p) / n_test) ** 0.5


def spread_margin(a: float, b: float, std_a: float, std_b: float, n_test: int) -> float:
    """How far apart two mean accuracies a and b (with seed stds std_a, std_b; 0 for one seed) must be to count as
    a difference: twice their combined seed std, and at least `noise_margin`. All as fractions."""
    return max(2 * (std_a ** 2 + std_b ** 2) ** 0.5, noise_margin(a, b, n_test))


def low_shot_indices(labels: torch.Tensor, per_class: int | None = None, fraction: float | None = None,
                     seed: int = 0) -> torch.Tensor:
    """A class-balanced labeled subset (sorted indices): `per_class` images of each class, or `fraction` of each
    class (at least 1). Unlabeled images (label -1) are never picked. The same seed gives the same subset."""
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class and fraction")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in labels[labels >= 0].unique():
        members = (labels == c).nonzero()[:, 0]
        n = per_class if per_class is not None else max(1, round(fraction * len(members)))
        if n > len(members):
            raise ValueError(f"class {int(c)} has {len(members)} labeled images, fewer than per_class={n}")
        picked.append(members[torch.randperm(len(members), generator=g)[:n]])
    return torch.cat(picked).sort().values


def eval_splits(cfg: Config) -> tuple[ImageDataset, ImageDataset]:
    """The labeled train and test splits of the run's dataset (STL-10 pretrains on "unlabeled", evaluates here)."""
    return load_dataset(cfg.data, "train"), load_dataset(cfg.data, "test")


def corrupted_splits(splits: tuple[ImageDataset, ImageDataset], distractor: Distractor) -> tuple[ImageDataset, ...]:
    """The evaluation splits with the distractor applied once, with its fixed seed (float images in [0, 1] units)."""
    return tuple(dataclasses.replace(d, images=corrupt_images(d.images, distractor, split))
                 for d, split in zip(splits, ("train", "test")))


def evaluate_encoder(encoder: ViT, cfg: Config, norm: dict, layers: int = 1, k: int = 20, seed: int = 0,
                     batch_size: int = 512, device: torch.device | str | None = None,
                     splits: tuple[ImageDataset, ImageDataset] | None = None, amp: str = "off") -> dict:
    """The four read-outs of one frozen encoder (see the module docstring); `norm` = {"mean": (C,), "std": (C,)}."""
    train, test = splits or eval_splits(cfg)
    tr = extract_features(encoder, train.images, norm["mean"], norm["std"], layers, batch_size, device, amp)  # (N, F)
    te = extract_features(encoder, test.images, norm["mean"], norm["std"], layers, batch_size, device, amp)  # (M, F)
    return readouts(tr, train.labels, te, test.labels, k, seed)


def evaluate_pixels(norm: dict, splits: tuple[ImageDataset, ImageDataset], k: int = 20, seed: int = 0) -> dict:
    """The four read-outs of the raw-pixel baseline (`pixel_features`) on the given train and test splits."""
    train, test = splits
    tr, te = (pixel_features(d.images, norm["mean"], norm["std"]) for d in splits)
    return readouts(tr, train.labels, te, test.labels, k, seed)


def readouts(tr: torch.Tensor, ytr: torch.Tensor, te: torch.Tensor, yte: torch.Tensor, k: int = 20,
             seed: int = 0) -> dict:
    """Linear, kNN, 10-per-class and 1 % test accuracies of features tr (N, F) / te (M, F) with their labels."""
    ten = low_shot_indices(ytr, per_class=10, seed=seed)
    pct = low_shot_indices(ytr, fraction=0.01, seed=seed)
    return dict(linear=linear_probe(tr, ytr, te, yte, seed=seed),
                knn=knn_accuracy(tr, ytr, te, yte, k=k),
                linear_10_per_class=linear_probe(tr[ten], ytr[ten], te, yte, seed=seed, unlabeled_x=tr),
                linear_1pct=linear_probe(tr[pct], ytr[pct], te, yte, seed=seed, unlabeled_x=tr),
                feature_dim=tr.shape[1], n_train=len(tr), n_test=len(te), n_10_per_class=len(ten), n_1pct=len(pct))


def eval_path(run_dir: str | Path, layers: int = 1, suffix: str = ".json") -> Path:
    """Where evaluate_run writes its result: RUN_DIR/eval.json for the last layer, eval-4layers.json for 4."""
    return Path(run_dir) / (f"eval{suffix}" if layers == 1 else f"eval-{layers}layers{suffix}")


def evaluate_run(run_dir: str | Path, layers: int = 1, baseline: bool = True, k: int = 20, seed: int = 0,
                 device: str = "auto", batch_size: int = 512, amp: str | None = None) -> dict:
    """Evaluate a run's target encoder and, with `baseline`, the same ViT at its random initialisation (build_model
    seeds with cfg.seed, so these are the very weights the run started from) and the raw pixels. A run trained with
    a distractor is read out on corrupted images, and again on clean ones (result["clean"]). Writes
    eval_path(run_dir, layers) and its plot (eval.json / eval.png for the last layer). Features are extracted in
    the precision `amp` gives on `device` (default: the run's own setting, e.g. bf16 on a card with native bf16)."""
    run_dir = Path(run_dir)
    device = pick_device(device)
    cfg, model, ckpt = load_run(run_dir, device)
    amp = resolve_amp(amp or cfg.amp, device)
    if layers > cfg.depth:  # fail before loading any data
        raise ValueError(f"cannot pool the last {layers} layers: the encoder has only {cfg.depth} blocks")
    distractor = Distractor.parse(cfg.distractor)
    protocol = dict(encoder="target", pooling="average over patches", layers=layers, data=cfg.data,
                    splits=["train", "test"], knn=dict(k=k, temperature=0.07, center=True),
                    linear=dict(optimizer="L-BFGS, full batch", whitening="PCA, all train features", **PROBE),
                    low_shot=dict(per_class=10, fraction=0.01), seed=seed, amp=amp,
                    raw_pixels=f"normalised, flattened, average-pooled to at most {PIXELS_MAX_SIDE} px",
                    distractor=None if distractor is None else dict(spec=str(distractor), seed=EVAL_SEED))
    clean = eval_splits(cfg)
    random_init = build_model(cfg).to(device).target_encoder if baseline else None

    def read_out(splits: tuple[ImageDataset, ImageDataset]) -> dict:
        args = dict(layers=layers, k=k, seed=seed, batch_size=batch_size, splits=splits, amp=amp)
        out = dict(ijepa=evaluate_encoder(model.target_encoder, cfg, ckpt["norm"], **args))
        if baseline:
            out["random_init"] = evaluate_encoder(random_init, cfg, ckpt["norm"], **args)
            out["raw_pixels"] = evaluate_pixels(ckpt["norm"], splits, k, seed)
        return out

    result = dict(run=str(run_dir), step=ckpt["step"], config=ckpt["config"], protocol=protocol)
    result.update(read_out(clean if distractor is None else corrupted_splits(clean, distractor)))
    if distractor is not None:
        result["clean"] = read_out(clean)
    eval_path(run_dir, layers).write_text(json.dumps(result, indent=2) + "\n")
    plot_eval(result, eval_path(run_dir, layers, ".png"))
    return result


def raw_pixel_baseline(data: str, distractor: str = "none", k: int = 20, seed: int = 0) -> dict:
    """The raw-pixel read-outs of a dataset on its own (no run needed), normalised with the training split's
    statistics as a run would be; with a distractor spec, on the corrupted splits (the evaluation's fixed seed)."""
    clean = load_dataset(data, "train"), load_dataset(data, "test")
    mean, std = clean[0].mean_std()
    parsed = Distractor.parse(distractor)
    return evaluate_pixels(dict(mean=mean, std=std), clean if parsed is None else corrupted_splits(clean, parsed),
                           k, seed)


def plot_eval(result: dict, out: str | Path) -> None:
    """Grouped bars: test accuracy of each read-out, I-JEPA next to the random-init and raw-pixel baselines."""
    names = [n for n in LABELS if n in result]
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        bars = ax.bar([j + i * width for j in range(len(METRICS))], [100 * result[name][m] for m in METRICS], width,
                      label=LABELS[name], color=f"C{i}")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(METRICS))], METRICS)
    layers = result["protocol"]["layers"]
    ax.set(ylabel="test accuracy (%)", ylim=(0, 110), title=f"{result['config']['data']}, step {result['step']}, "
           f"target encoder, last {'layer' if layers == 1 else f'{layers} layers'}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def format_table(result: dict) -> str:
    """The printed summary: one row per read-out, one column per encoder."""
    names = [n for n in LABELS if n in result]
    r = result["ijepa"]
    lines = [f"{result['run']}: step {result['step']}, {r['feature_dim']}-d features, "
             f"{r['n_train']} train / {r['n_test']} test images",
             f"{'':22s}" + "".join(f"{LABELS[n]:>13s}" for n in names)]
    lines += [f"{m:22s}" + "".join(f"{result[n][m]:13.3f}" for n in names) for m in METRICS]
    if "clean" in result:  # a distractor run: the rows above are on corrupted images, these on clean ones
        lines[0] += f", distractor {result['protocol']['distractor']['spec']}"
        lines += ["clean images:"] + [f"{m:22s}" + "".join(f"{result['clean'][n][m]:13.3f}" for n in names)
                                      for m in METRICS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", nargs="?", help="a run directory (or use --raw-pixels DATA)")
    p.add_argument("--raw-pixels", metavar="DATA", help="no run: read out the raw pixels of DATA (e.g. embedded, "
                                                         "fashion-mnist) and print them")
    p.add_argument("--distractor", default="none", metavar="SPEC", help="with --raw-pixels: corrupt the splits "
                   "first: none | noise:S | clutter:S (default none)")
    p.add_argument("--layers", type=int, default=1, choices=[1, 4], help="pool the last block, or the last 4 "
                   "concatenated (default 1)")
    p.add_argument("--device", default="auto", metavar="NAME", help="for feature extraction: auto (cuda > mps > "
                   "cpu) | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--amp", default=None, choices=AMP_MODES, help="precision of feature extraction (default: the "
                                                                   "run's setting)")
    p.add_argument("--batch-size", type=int, default=512, metavar="N", help="images per forward pass of feature "
                   "extraction (default 512; lower it if memory runs out)")
    p.add_argument("--k", type=int, default=20, metavar="N", help="neighbours for kNN (default 20)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed of the low-shot label subsets "
                   "and the probe's initialisation (default 0)")
    p.add_argument("--no-baseline", action="store_true", help="skip the random-init and raw-pixel baselines")
    args = p.parse_args(argv)
    if (args.run_dir is None) == (args.raw_pixels is None):
        p.error("give a run directory or --raw-pixels DATA (one of them)")
    if args.batch_size < 1 or args.k < 1:
        p.error(f"--batch-size and --k must be >= 1, got {args.batch_size} and {args.k}")
    with user_errors():
        if args.raw_pixels:
            r = raw_pixel_baseline(args.raw_pixels, args.distractor, args.k, args.seed)
            print(f"raw pixels of {args.raw_pixels} ({r['feature_dim']} features, {r['n_train']} train / "
                  f"{r['n_test']} test images, distractor {args.distractor}):")
            print("\n".join(f"{m:22s}{r[m]:13.3f}" for m in METRICS))
            return
        result = evaluate_run(args.run_dir, args.layers, not args.no_baseline, args.k, args.seed, args.device,
                              args.batch_size, args.amp)
    print(format_table(result))
    print(f"written: {eval_path(args.run_dir, args.layers)}, {eval_path(args.run_dir, args.layers, '.png')}")


if __name__ == "__main__":
    main()
