"""What did the encoder learn? `python -m minijepa.evaluate RUN_DIR [--layers 4]` -> RUN_DIR/eval.json, eval.png.

Protocol (paper App. A): freeze the **target encoder**, average-pool its patch tokens (optionally the last 4 layers,
concatenated), and fit simple read-outs on labeled data:
    linear               multinomial logistic regression on all training labels
    knn                  k = 20 nearest neighbours, cosine similarity, votes weighted by exp(sim / 0.07)
    linear_10_per_class  the linear probe with 10 labels per class (low-shot)
    linear_1pct          the linear probe with 1% of the labels (the paper's ablation setting)
The same architecture at random initialisation is evaluated identically: the baseline that pretraining must beat.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import center_resize, load_dataset
from .train import CheckpointError, Config, build_model, load_run, pick_device
from .vit import ViT


@torch.no_grad()
def extract_features(encoder: ViT, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, layers: int = 1,
                     batch_size: int = 512, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> average-pooled features (N, D * layers), float32 on the CPU."""
    if not 1 <= layers <= encoder.depth:
        raise ValueError(f"cannot pool the last {layers} layers of a {encoder.depth}-block encoder")
    device = device or next(encoder.parameters()).device
    encoder.eval()
    mean, std = mean.view(-1, 1, 1).to(device), std.view(-1, 1, 1).to(device)
    feats = []
    for i in range(0, len(images), batch_size):
        x = (center_resize(images[i:i + batch_size].to(device), encoder.img_size[0]) - mean) / std
        outs = encoder.forward_layers(x)[-layers:] if layers > 1 else [encoder(x)]  # each (B, N, D)
        feats.append(torch.cat([h.mean(1) for h in outs], dim=1).float().cpu())  # (B, D * layers)
    return torch.cat(feats)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 steps: int = 300, weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Top-1 accuracy of a logistic-regression read-out, fitted full-batch with L-BFGS on standardised features."""
    mu, sigma = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_x, test_x = (train_x - mu) / sigma, (test_x - mu) / sigma
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    torch.manual_seed(seed)
    head = torch.nn.Linear(train_x.shape[1], n_classes)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=steps, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(train_x), train_y) + weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (head(test_x).argmax(1) == test_y).float().mean().item()


@torch.no_grad()
def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> float:
    """Weighted kNN on cosine similarity (as in DINO): each neighbour votes exp(sim / T) for its label."""
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    k = min(k, len(train_x))
    correct = 0
    for i in range(0, len(test_x), chunk):
        sim, idx = (test_x[i:i + chunk] @ train_x.T).topk(k, dim=1)  # (b, k)
        votes = torch.zeros(len(sim), n_classes).scatter_add_(1, train_y[idx], (sim / temperature).exp())
        correct += (votes.argmax(1) == test_y[i:i + chunk]).sum().item()
    return correct / len(test_x)


def low_shot_indices(labels: torch.Tensor, per_class: int | None = None, fraction: float | None = None,
                     seed: int = 0) -> torch.Tensor:
    """A class-balanced subset: `per_class` labels per class, or `fraction` of each class (at least 1)."""
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in labels.unique():
        members = (labels == c).nonzero()[:, 0]
        n = per_class if per_class is not None else max(1, round(fraction * len(members)))
        picked.append(members[torch.randperm(len(members), generator=g)[:n]])
    return torch.cat(picked).sort().values


def evaluate_encoder(encoder: ViT, cfg: Config, norm: dict, layers: int = 1, k: int = 20, seed: int = 0,
                     batch_size: int = 512) -> dict:
    """The four read-outs of one frozen encoder on the labeled train/test splits of the run's dataset."""
    train, test = load_dataset(cfg.data, "train"), load_dataset(cfg.data, "test")
    tr = extract_features(encoder, train.images, norm["mean"], norm["std"], layers, batch_size)  # (N, D)
    te = extract_features(encoder, test.images, norm["mean"], norm["std"], layers, batch_size)
    ten, onepct = low_shot_indices(train.labels, per_class=10, seed=seed), \
        low_shot_indices(train.labels, fraction=0.01, seed=seed)
    return dict(linear=linear_probe(tr, train.labels, te, test.labels, seed=seed),
                knn=knn_accuracy(tr, train.labels, te, test.labels, k=k),
                linear_10_per_class=linear_probe(tr[ten], train.labels[ten], te, test.labels, seed=seed),
                linear_1pct=linear_probe(tr[onepct], train.labels[onepct], te, test.labels, seed=seed),
                feature_dim=tr.shape[1], n_train=len(tr), n_test=len(te))


def evaluate_run(run_dir: str | Path, layers: int = 1, baseline: bool = True, k: int = 20, seed: int = 0,
                 device: str = "auto", batch_size: int = 512) -> dict:
    run_dir = Path(run_dir)
    device = pick_device(device)
    cfg, model, ckpt = load_run(run_dir, device)
    result = dict(run=str(run_dir), step=ckpt["step"], config=ckpt["config"],
                  protocol=dict(encoder="target", pooling="average", layers=layers, knn_k=k, seed=seed),
                  ijepa=evaluate_encoder(model.target_encoder, cfg, ckpt["norm"], layers, k, seed, batch_size))
    if baseline:
        random_init = build_model(cfg).to(device).target_encoder  # same architecture, same init seed, untrained
        result["random_init"] = evaluate_encoder(random_init, cfg, ckpt["norm"], layers, k, seed, batch_size)
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_eval(result, run_dir / "eval.png")
    return result


METRICS = ("linear", "knn", "linear_10_per_class", "linear_1pct")


def plot_eval(result: dict, out: Path) -> None:
    import matplotlib.pyplot as plt
    names = [n for n in ("ijepa", "random_init") if n in result]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [100 * result[name][m] for m in METRICS]
        bars = ax.bar([j + i * width for j in range(len(METRICS))], vals, width, label=name.replace("_", " "))
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(METRICS))], METRICS)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 105), title=f"{result['config']['data']}, step {result['step']}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--layers", type=int, default=1, choices=[1, 4], help="pool the last 1 or 4 blocks")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--no-baseline", action="store_true", help="skip the random-init baseline")
    args = p.parse_args(argv)
    try:
        r = evaluate_run(args.run_dir, args.layers, not args.no_baseline, args.k, args.seed, args.device,
                         args.batch_size)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    names = [n for n in ("ijepa", "random_init") if n in r]
    print(f"{'':22s}" + "".join(f"{n:>13s}" for n in names))
    for m in METRICS:
        print(f"{m:22s}" + "".join(f"{r[n][m]:13.3f}" for n in names))
    print(f"written: {Path(args.run_dir) / 'eval.json'}, {Path(args.run_dir) / 'eval.png'}")


if __name__ == "__main__":
    main()
