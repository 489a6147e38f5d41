"""What did the encoder learn? `python -m minijepa.evaluate RUN_DIR [--layers 4]` -> RUN_DIR/eval.json, eval.png
(with `--layers 4`: eval-4layers.json, eval-4layers.png, so both read-outs of a run can sit side by side).

Protocol (paper App. A, with the low-shot conventions of MSN, DINO and MAE): freeze the **target encoder**,
average-pool its patch tokens (the last block, or the last 4 blocks concatenated, as the paper does for transfer),
and read out the labelled splits of the run's dataset:
    linear               multinomial logistic regression on features centred with the training mean and L2-normalised
                         per image (MSN); the L2 penalty lambda is picked from a log grid by stratified k-fold
                         cross-validation on the training labels alone (probes.py; DINO tries several lambdas too)
    knn                  k = 20 nearest neighbours, cosine similarity, votes weighted by exp(sim / 0.07) (DINO)
    linear_10_per_class  the linear probe with 10 labels per class, its own cross-validated lambda; mean of 5 draws
    linear_1pct          the same with 1 % of the labels of each class (the paper's ablation setting, Tables 6-7)
    finetune_1pct        the paper's 1 % result (Table 2) at our scale: a copy of the encoder and a linear head, every
                         weight trained on the 1 % labels, MAE-style (finetune.py: AdamW, warm-up + cosine, a 10x
                         smaller encoder lr); mean of 2 draws, the first two label sets of linear_1pct
    knn_10_per_class, knn_1pct  kNN with the low-shot label sets (the same draws)
    linear_whitened      diagnostic (also with the 10-per-class draws): a probe on PCA-whitened features. It scores z and A z alike for any invertible
                         A, so it says what is linearly decodable but is blind to which directions carry the variance,
                         which is what pretraining changes; the other probes are not.
Two baselines are read out identically: the same architecture at random initialisation (what pretraining must
beat), and the raw pixels themselves, normalised like the encoder's input and flattened (what any encoder must beat;
images larger than 32 x 32 are average-pooled to 32 x 32 first; there is nothing to fine-tune, so finetune_1pct is
null). A run trained with a distractor (distractors.py) is read out on train and test images corrupted the same way,
with a fixed seed, and also on the clean images (eval.json's "clean"). Without a run: `--raw-pixels DATA` reads out
the raw pixels of a dataset alone.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from .data import ImageDataset, load_dataset, normalise, prepare_images
from .distractors import EVAL_SEED, Distractor, corrupt_images
from .device import AMP_DTYPES, AMP_MODES, pick_device, resolve_amp
from .finetune import FINETUNE, finetune_readout
from .probes import LOW_SHOT, PROBE, WHITENED_PROBE, knn_accuracy, linear_probe, low_shot_draws, summary, whitened_probe
from .train import ArgumentParser, Config, build_model, load_run, user_errors
from .vit import ViT

METRICS = ("linear", "knn", "linear_10_per_class", "linear_1pct")  # the main read-outs (the studies' columns)
EXTRA_METRICS = ("finetune_1pct", "knn_10_per_class", "knn_1pct", "linear_whitened", "linear_whitened_10_per_class")
LOW_SHOT_METRICS = ("linear_10_per_class", "linear_1pct", "finetune_1pct", "knn_10_per_class", "knn_1pct",
                    "linear_whitened_10_per_class")
LABELS = {"ijepa": "I-JEPA", "random_init": "random init", "raw_pixels": "raw pixels"}
PIXELS_MAX_SIDE = 32  # raw-pixel features of larger images are average-pooled to this size


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
    Images go through `prepare_images` (scaled to [0, 1], resized to the encoder's size, normalised with mean/std).
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


# -------------------------------------------------------------------------------------------------- read-outs
def readouts(tr: torch.Tensor, ytr: torch.Tensor, te: torch.Tensor, yte: torch.Tensor, k: int = 20, seed: int = 0,
             draws: int = LOW_SHOT["draws"]) -> dict:
    """Every feature read-out of features tr (N, F) / te (M, F) with their labels: test accuracies (fractions) of
    METRICS and EXTRA_METRICS, low-shot ones as the mean over `draws` label draws, "finetune_1pct" None (it needs
    the encoder: evaluate_encoder fills it in), sizes, and "details": the chosen lambdas and every draw."""
    details: dict = {"linear": None, "finetune_1pct": None}
    full = linear_probe(tr, ytr, te, yte, seed=seed)
    details["linear"] = {"lambda": full["lambda"], "cv_accuracy": full["cv_accuracy"]}
    sizes = {}
    for name, subset in (("10_per_class", dict(per_class=LOW_SHOT["per_class"])),
                         ("1pct", dict(fraction=LOW_SHOT["fraction"]))):
        subsets = low_shot_draws(ytr, draws, seed, **subset)
        probes = [linear_probe(tr[i], ytr[i], te, yte, folds=PROBE["cv_folds_low_shot"], seed=seed + d,
                               unlabeled_x=tr) for d, i in enumerate(subsets)]
        details[f"linear_{name}"] = {**summary([p["accuracy"] for p in probes]),
                                     "lambda": [p["lambda"] for p in probes]}
        details[f"knn_{name}"] = summary([knn_accuracy(tr[i], ytr[i], te, yte, k=k) for i in subsets])
        if name == "10_per_class":  # the diagnostic where it misleads most: few labels
            details["linear_whitened_10_per_class"] = summary([whitened_probe(tr[i], ytr[i], te, yte, seed=seed + d,
                                                                              unlabeled_x=tr)
                                                               for d, i in enumerate(subsets)])
        sizes[f"n_{name}"] = len(subsets[0])
    out = {"linear": full["accuracy"], "knn": knn_accuracy(tr, ytr, te, yte, k=k)}
    out.update({m: details[m]["mean"] for m in ("linear_10_per_class", "linear_1pct")})
    out.update(finetune_1pct=None, knn_10_per_class=details["knn_10_per_class"]["mean"],
               knn_1pct=details["knn_1pct"]["mean"], linear_whitened=whitened_probe(tr, ytr, te, yte, seed=seed),
               linear_whitened_10_per_class=details["linear_whitened_10_per_class"]["mean"])
    return {**out, "feature_dim": tr.shape[1], "n_train": len(tr), "n_test": len(te), **sizes, "details": details}


def eval_splits(cfg: Config) -> tuple[ImageDataset, ImageDataset]:
    """The labeled train and test splits of the run's dataset (STL-10 pretrains on "unlabeled", evaluates here)."""
    return load_dataset(cfg.data, "train"), load_dataset(cfg.data, "test")


def corrupted_splits(splits: tuple[ImageDataset, ImageDataset], distractor: Distractor) -> tuple[ImageDataset, ...]:
    """The evaluation splits with the distractor applied once, with its fixed seed (float images in [0, 1] units)."""
    return tuple(dataclasses.replace(d, images=corrupt_images(d.images, distractor, split))
                 for d, split in zip(splits, ("train", "test")))


def evaluate_encoder(encoder: ViT, cfg: Config, norm: dict, layers: int = 1, k: int = 20, seed: int = 0,
                     batch_size: int = 512, device: torch.device | str | None = None,
                     splits: tuple[ImageDataset, ImageDataset] | None = None, amp: str = "off",
                     finetune: bool = True, draws: int = LOW_SHOT["draws"],
                     recipe: dict = FINETUNE) -> dict:
    """Every read-out of one encoder (see the module docstring); `norm` = {"mean": (C,), "std": (C,)}. The frozen
    read-outs use its pooled features (`readouts`); with `finetune`, a copy of it is also fine-tuned on the 1 %
    labels (`finetune_readout`, last layer, float32); without, finetune_1pct stays None."""
    train, test = splits or eval_splits(cfg)
    tr = extract_features(encoder, train.images, norm["mean"], norm["std"], layers, batch_size, device, amp)  # (N, F)
    te = extract_features(encoder, test.images, norm["mean"], norm["std"], layers, batch_size, device, amp)  # (M, F)
    out = readouts(tr, train.labels, te, test.labels, k, seed, draws)
    if finetune:
        ft = finetune_readout(encoder, (train, test), norm, recipe, seed, device, batch_size)
        out["finetune_1pct"], out["details"]["finetune_1pct"] = ft["mean"], ft
    return out


def evaluate_pixels(norm: dict, splits: tuple[ImageDataset, ImageDataset], k: int = 20, seed: int = 0,
                    draws: int = LOW_SHOT["draws"]) -> dict:
    """The read-outs of the raw-pixel baseline (`pixel_features`) on the given train and test splits (nothing to
    fine-tune: finetune_1pct is None)."""
    train, test = splits
    tr, te = (pixel_features(d.images, norm["mean"], norm["std"]) for d in splits)
    return readouts(tr, train.labels, te, test.labels, k, seed, draws)


def eval_path(run_dir: str | Path, layers: int = 1, suffix: str = ".json") -> Path:
    """Where evaluate_run writes its result: RUN_DIR/eval.json for the last layer, eval-4layers.json for 4."""
    return Path(run_dir) / (f"eval{suffix}" if layers == 1 else f"eval-{layers}layers{suffix}")


def protocol_of(layers: int, k: int, seed: int, draws: int, finetune: bool, amp: str = "off", data: str | None = None,
                distractor: Distractor | None = None) -> dict:
    """eval.json's "protocol": every setting behind the numbers."""
    return dict(
        encoder="target", pooling="average over patches", layers=layers, data=data, splits=["train", "test"],
        knn=dict(k=k, temperature=0.07, center=True, low_shot="the same on each draw's labelled images"),
        linear=dict(features="centred with the mean of all training features, L2-normalised per image",
                    model="multinomial logistic regression, bias not penalised",
                    objective="sum of cross-entropies + lambda / 2 * ||W||^2", lambda_grid=list(PROBE["lambda_grid"]),
                    cv_folds=PROBE["cv_folds"], cv_folds_low_shot=PROBE["cv_folds_low_shot"],
                    cv_tolerance=PROBE["cv_tolerance"],
                    selection="stratified folds of the training labels only; the largest lambda whose pooled "
                              "validation accuracy is within cv_tolerance of the best; then refitted on all training "
                              "labels",
                    optimizer="L-BFGS, full batch, preconditioned, warm-started down the grid",
                    max_iter=PROBE["max_iter"]),
        low_shot=dict(per_class=LOW_SHOT["per_class"], fraction=LOW_SHOT["fraction"], draws=draws,
                      seeds=[seed + d for d in range(draws)]),
        finetune=dict(FINETUNE, layers=1, precision="float32", optimizer="AdamW, weight decay on weight matrices only",
                      head="BatchNorm without affine + zero-initialised Linear on the average-pooled last layer",
                      schedule="linear warm-up, then cosine to 0 (per step)", encoder_lr="lr * encoder_lr_scale * "
                      "layer_decay ** (blocks above)", labels=f"the first {FINETUNE['draws']} draws of linear_1pct",
                      augmentation="none" if FINETUNE["crop_scale"] is None and not FINETUNE["hflip"] else
                      "random_resized_crop(crop_scale) / horizontal flips") if finetune else None,
        linear_whitened=dict(optimizer="L-BFGS, full batch", whitening="PCA, all train features", **WHITENED_PROBE),
        seed=seed, amp=amp, threads=torch.get_num_threads(),  # another thread count can round the sums differently
        torch=torch.__version__,
        raw_pixels=f"normalised, flattened, average-pooled to at most {PIXELS_MAX_SIDE} px",
        distractor=None if distractor is None else dict(spec=str(distractor), seed=EVAL_SEED))


def evaluate_run(run_dir: str | Path, layers: int = 1, baseline: bool = True, k: int = 20, seed: int = 0,
                 device: str = "auto", batch_size: int = 512, amp: str | None = None, finetune: bool = True,
                 draws: int = LOW_SHOT["draws"]) -> dict:
    """Evaluate a run's target encoder and, with `baseline`, the same ViT at its random initialisation (build_model
    seeds with cfg.seed, so these are the very weights the run started from) and the raw pixels. A run trained with
    a distractor is read out on corrupted images, and again on clean ones (result["clean"]). Writes
    eval_path(run_dir, layers) and its plot (eval.json / eval.png for the last layer). Features are extracted in
    the precision `amp` gives on `device` (default: the run's own setting, e.g. bf16 on a card with native bf16);
    fine-tuning (skipped without `finetune`) runs on `device` in float32."""
    run_dir = Path(run_dir)
    device = pick_device(device)
    cfg, model, ckpt = load_run(run_dir, device)
    amp = resolve_amp(amp or cfg.amp, device)
    if layers > cfg.depth:  # fail before loading any data
        raise ValueError(f"cannot pool the last {layers} layers: the encoder has only {cfg.depth} blocks")
    distractor = Distractor.parse(cfg.distractor)
    protocol = protocol_of(layers, k, seed, draws, finetune, amp, cfg.data, distractor)
    clean = eval_splits(cfg)
    random_init = build_model(cfg).to(device).target_encoder if baseline else None

    def read_out(splits: tuple[ImageDataset, ImageDataset]) -> dict:
        args = dict(layers=layers, k=k, seed=seed, batch_size=batch_size, splits=splits, amp=amp, finetune=finetune,
                    draws=draws)
        out = dict(ijepa=evaluate_encoder(model.target_encoder, cfg, ckpt["norm"], **args))
        if baseline:
            out["random_init"] = evaluate_encoder(random_init, cfg, ckpt["norm"], **args)
            out["raw_pixels"] = evaluate_pixels(ckpt["norm"], splits, k, seed, draws)
        return out

    result = dict(run=str(run_dir), step=ckpt["step"], config=ckpt["config"], protocol=protocol)
    result.update(read_out(clean if distractor is None else corrupted_splits(clean, distractor)))
    if distractor is not None:
        result["clean"] = read_out(clean)
    eval_path(run_dir, layers).write_text(json.dumps(result, indent=2) + "\n")
    plot_eval(result, eval_path(run_dir, layers, ".png"))
    return result


def raw_pixel_baseline(data: str, distractor: str = "none", k: int = 20, seed: int = 0,
                       draws: int = LOW_SHOT["draws"]) -> dict:
    """The raw-pixel read-outs of a dataset on its own (no run needed), normalised with the training split's
    statistics as a run would be; with a distractor spec, on the corrupted splits (the evaluation's fixed seed)."""
    clean = load_dataset(data, "train"), load_dataset(data, "test")
    mean, std = clean[0].mean_std()
    parsed = Distractor.parse(distractor)
    return evaluate_pixels(dict(mean=mean, std=std), clean if parsed is None else corrupted_splits(clean, parsed),
                           k, seed, draws)


def spread_of(r: dict, metric: str) -> float | None:
    """The std over label draws of a low-shot read-out in result row r, or None (one fit, or not recorded)."""
    detail = r.get("details", {}).get(metric)
    return detail.get("std") if isinstance(detail, dict) else None


def plot_eval(result: dict, out: str | Path) -> None:
    """Grouped bars: test accuracy of each read-out, I-JEPA next to the random-init and raw-pixel baselines; low-shot
    bars carry the std over label draws, a read-out that does not apply (fine-tuning pixels) is marked n/a."""
    names = [n for n in LABELS if n in result]
    metrics = [m for m in METRICS + EXTRA_METRICS if any(m in result[n] for n in names)]
    fig, ax = plt.subplots(figsize=(12, 4.2))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(metrics))]
        values = [result[name].get(m) for m in metrics]
        heights = [100 * v if v is not None else 0.0 for v in values]
        spreads = [spread_of(result[name], m) for m in metrics]
        errs = [100 * e if e is not None else float("nan") for e in spreads]  # nan: no error bar
        bars = ax.bar(xs, heights, width, yerr=errs, capsize=2, label=LABELS[name], color=f"C{i}",
                      error_kw=dict(lw=0.8))
        ax.bar_label(bars, labels=[f"{h:.1f}" if v is not None else "n/a" for h, v in zip(heights, values)],
                     fontsize=7, padding=2)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(metrics))], metrics, rotation=15, fontsize=8)
    layers = result["protocol"]["layers"]
    ax.set(xlabel="read-out (low-shot: mean and std over label draws)", ylabel="test accuracy (%)", ylim=(0, 110),
           title=f"{result['config']['data']}, step {result['step']}, target encoder, "
                 f"last {'layer' if layers == 1 else f'{layers} layers'}")
    ax.legend(loc="upper right", fontsize=8, ncol=len(names))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def cell(r: dict, metric: str) -> str:
    """One table entry: the accuracy, "± std" over label draws for low-shot read-outs, "n/a" where it is absent."""
    value = r.get(metric)
    if value is None:
        return "n/a"
    std = spread_of(r, metric)
    return f"{value:.3f}" + (f" ± {std:.3f}" if std is not None and metric in LOW_SHOT_METRICS else "")


def format_table(result: dict) -> str:
    """The printed summary: one row per read-out, one column per encoder, and the full-label probe's lambda."""
    names = [n for n in LABELS if n in result]
    metrics = [m for m in METRICS + EXTRA_METRICS if any(m in result[n] for n in names)]
    r = result["ijepa"]
    lines = [f"{result['run']}: step {result['step']}, {r['feature_dim']}-d features, "
             f"{r['n_train']} train / {r['n_test']} test images",
             f"{'':22s}" + "".join(f"{LABELS[n]:>17s}" for n in names)]
    rows = lambda part: [f"{m:22s}" + "".join(f"{cell(part[n], m):>17s}" for n in names) for m in metrics]
    lines += rows(result)
    lams = [f"{LABELS[n]} {result[n]['details']['linear']['lambda']:.0e}" for n in names
            if (result[n].get("details") or {}).get("linear")]
    if lams:
        lines.append("lambda of the linear probe (cross-validated): " + ", ".join(lams))
    if "clean" in result:  # a distractor run: the rows above are on corrupted images, these on clean ones
        lines[0] += f", distractor {result['protocol']['distractor']['spec']}"
        lines += ["clean images:"] + rows(result["clean"])
    return "\n".join(lines)


def markdown_table(columns: dict[str, dict], metrics: tuple[str, ...] = METRICS + EXTRA_METRICS) -> str:
    """Read-outs side by side as a markdown table (for IPython.display.Markdown): one row per read-out, one column
    per {label: result row}, accuracies in %, "± std" over label draws for low-shot read-outs, n/a where absent."""
    def entry(r: dict, m: str) -> str:
        value, std = r.get(m), spread_of(r, m)
        if value is None:
            return "n/a"
        return f"{100 * value:.1f}" + (f" ± {100 * std:.1f}" if std is not None and m in LOW_SHOT_METRICS else "")
    lines = ["| read-out | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| `{m}` | " + " | ".join(entry(r, m) for r in columns.values()) + " |" for m in metrics]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", nargs="?", help="a run directory (or use --raw-pixels DATA)")
    p.add_argument("--raw-pixels", metavar="DATA", help="no run: read out the raw pixels of DATA (e.g. embedded, "
                                                         "fashion-mnist) and print them")
    p.add_argument("--distractor", default="none", help="with --raw-pixels: corrupt the splits first (none, noise:S, "
                                                        "clutter:S)")
    p.add_argument("--layers", type=int, default=1, choices=[1, 4], help="frozen read-outs pool the last block (1) "
                                                                         "or the last 4 concatenated (4)")
    p.add_argument("--device", default="auto", help="for features and fine-tuning: auto (cuda > mps > cpu), cpu, "
                                                    "cuda, mps")
    p.add_argument("--amp", default=None, choices=AMP_MODES, help="precision of feature extraction (default: the "
                                                                   "run's setting)")
    p.add_argument("--batch-size", type=int, default=512, help="images per forward pass when extracting features")
    p.add_argument("--k", type=int, default=20, help="neighbours for kNN")
    p.add_argument("--seed", type=int, default=0, help="first seed of the label draws (draw d uses seed + d), folds "
                                                       "and fine-tuning")
    p.add_argument("--draws", type=int, default=LOW_SHOT["draws"], help="label draws averaged by the low-shot "
                                                                        "probes and kNN")
    p.add_argument("--no-finetune", action="store_true", help="skip the 1 %% fine-tuning, the slowest read-out "
                                                              "(finetune_1pct is then null)")
    p.add_argument("--no-baseline", action="store_true", help="skip the random-init and raw-pixel baselines")
    args = p.parse_args(argv)
    if (args.run_dir is None) == (args.raw_pixels is None):
        p.error("give a run directory or --raw-pixels DATA (one of them)")
    if args.batch_size < 1 or args.k < 1:
        p.error(f"--batch-size and --k must be >= 1, got {args.batch_size} and {args.k}")
    if args.draws < 1:
        p.error(f"--draws must be >= 1, got {args.draws}")
    with user_errors():
        if args.raw_pixels:
            r = raw_pixel_baseline(args.raw_pixels, args.distractor, args.k, args.seed, args.draws)
            print(f"raw pixels of {args.raw_pixels} ({r['feature_dim']} features, {r['n_train']} train / "
                  f"{r['n_test']} test images, distractor {args.distractor}):")
            print("\n".join(f"{m:22s}{cell(r, m):>17s}" for m in METRICS + EXTRA_METRICS))
            return
        result = evaluate_run(args.run_dir, args.layers, not args.no_baseline, args.k, args.seed, args.device,
                              args.batch_size, args.amp, not args.no_finetune, args.draws)
    print(format_table(result))
    print(f"written: {eval_path(args.run_dir, args.layers)}, {eval_path(args.run_dir, args.layers, '.png')}")


if __name__ == "__main__":
    main()
