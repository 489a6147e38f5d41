"""Read-outs of frozen features (the low-shot conventions of MSN and DINO; paper App. A): the linear probe, the
whitened probe kept as a diagnostic, weighted kNN, the low-shot label draws, and the margins a difference must clear.

Every function takes features (N, D) and labels (N,), so the same code reads out an encoder, its random
initialisation and the raw pixels (evaluate.py extracts the features and writes eval.json).
"""
from __future__ import annotations

import dataclasses
import statistics
from typing import Callable

import torch
import torch.nn.functional as F

# The linear probe. lambda multiplies ||W||^2 / 2 next to the *summed* cross-entropy (sklearn's C = 1 / lambda), so
# one grid fits 100 labels and 60,000 alike. On Fashion-MNIST the cross-validated lambda of the pretrained models and
# their baselines falls between 1e-7 (random init; smaller ones score the same) and 1e-1 (raw pixels, whose
# validation accuracy falls again at 1 and 10).
PROBE = dict(lambda_grid=tuple(10.0 ** e for e in range(-7, 3)), cv_folds=3, cv_folds_low_shot=5, cv_tolerance=1e-3,
             max_iter=40)
LOW_SHOT = dict(per_class=10, fraction=0.01, draws=5)  # draw d uses the labelled subset of seed + d
WHITENED_PROBE = dict(epochs=100, weight_decay=1e-3, eps=1e-5)  # linear_whitened, as the probe was before
CURVATURE = 0.1  # the probe's preconditioner assumes softmax curvature ~ this times the feature second moment


def centre_normalise(ref: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The linear probe's input map, fitted on features ref (N, D): subtract ref's mean, then scale each feature
    vector to unit length. Directions keep their relative variances, so a penalty on the weights favours the
    directions in which the features vary most. Returns x (M, D) -> (M, D)."""
    mu = ref.mean(0)
    return lambda x: F.normalize(x - mu, dim=1)


def stratified_folds(labels: torch.Tensor, folds: int, seed: int = 0) -> torch.Tensor:
    """A fold number in [0, folds) for each of labels (N,): each class is shuffled (seeded) and dealt out in turn,
    so every fold holds about the same share of every class."""
    g = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(labels), dtype=torch.long)
    for c in labels.unique():
        members = (labels == c).nonzero()[:, 0]
        fold[members[torch.randperm(len(members), generator=g)]] = torch.arange(len(members)) % folds
    return fold


def fit_logistic(x: torch.Tensor, y: torch.Tensor, lambdas: tuple[float, ...], masks: torch.Tensor, n_classes: int,
                 max_iter: int = PROBE["max_iter"]) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression for every lambda and every row of `masks` (K, N) at once: problem (g, k)
    minimises sum_i masks[k, i] * CE(x_i W + b, y_i) + lambdas[g] / 2 * ||W||^2 (the bias is not penalised).
    Returns W (G, K, D, C) and b (G, K, C), in the order of `lambdas`.

    Full-batch L-BFGS (at most max_iter iterations per lambda), walking the grid from the largest lambda down, each
    solution the start of the next. The K problems of one lambda are summed into one objective (they share no
    weights, so its minimum is theirs). For speed the fit runs in the principal axes of x (a rotation, which the
    penalty ||W||^2 does not notice; axes along which x does not vary at all are dropped, their weights being 0 at
    the minimum) with each axis rescaled by 1 / sqrt(CURVATURE * variance + lambda / n): this changes the path of
    the optimiser, never the minimum, so unlike a whitened probe the result depends on which directions of x carry
    the variance."""
    evals, evecs = torch.linalg.eigh((x.T @ x / len(x)).double())  # (D,), (D, D)
    keep = evals > 1e-9 * evals.max()  # axes along which x does not vary get no weight at the optimum: drop them
    evals, evecs = evals[keep].float(), evecs[:, keep].float()  # (R,), (D, R): R <= min(N, D)
    z = x @ evecs  # (N, R): x in its principal axes
    zt = z.T.contiguous()  # (R, N): logits are laid out (K, C, N), which makes the softmax over C fast
    onehot = F.one_hot(y, n_classes).T.float()  # (C, N)
    n_k = masks.sum(1).clamp_min(1)  # (K,) training images of each problem
    w = (masks / n_k[:, None]).float()[:, None, :]  # (K, 1, N): the objective divided by n_k (same minimum): a
    K = len(masks)  # mean cross-entropy, and lambda / n_k as the penalty
    W_all, b_all = [None] * len(lambdas), [None] * len(lambdas)
    W = torch.zeros(K, len(evals), n_classes)  # (K, R, C), in the principal axes
    b = torch.zeros(K, n_classes)
    for g in sorted(range(len(lambdas)), key=lambda j: -lambdas[j]):
        lam = (lambdas[g] / n_k).float()[:, None, None]  # (K, 1, 1)
        scale = (CURVATURE * evals[None, :, None] + lam).rsqrt()  # (K, R, 1): W = scale * V
        V = (W / scale).requires_grad_()  # the previous solution, in this lambda's coordinates
        b = b.detach().clone().requires_grad_()
        opt = torch.optim.LBFGS([V, b], lr=1, max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-6, tolerance_change=1e-9)

        def closure(scale: torch.Tensor = scale, V: torch.Tensor = V, b: torch.Tensor = b,
                    lam: torch.Tensor = lam) -> torch.Tensor:  # loss and gradient by hand: no autograd graph
            with torch.no_grad():
                Wc = scale * V  # (K, R, C)
                logits = Wc.transpose(1, 2) @ zt + b[:, :, None]  # (K, C, N)
                top = logits.amax(1, keepdim=True)
                e = (logits - top).exp_()
                total = e.sum(1, keepdim=True)
                ce = (top + total.log()).squeeze(1) - (logits * onehot).sum(1)  # (K, N)
                r = (e / total - onehot) * w  # (K, C, N): d loss / d logits
                V.grad = (scale * ((r @ z).transpose(1, 2) + lam * Wc)).contiguous()
                b.grad = r.sum(2)
                return (ce * w.squeeze(1)).sum() + 0.5 * (lam * Wc.square()).sum()

        opt.step(closure)
        with torch.no_grad():
            W, b = scale * V, b.detach()
        W_all[g], b_all[g] = evecs @ W, b  # back to the axes of x: (K, D, C)
    return torch.stack(W_all), torch.stack(b_all)


@dataclasses.dataclass
class ProbeFit:
    """A fitted linear probe: weight (D, C), bias (C,), the chosen lambda and the cross-validation behind it."""
    weight: torch.Tensor
    bias: torch.Tensor
    lam: float
    cv_accuracy: list[float]  # pooled validation accuracy of each lambda of the grid

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.weight + self.bias).argmax(1)


def fit_probe(x: torch.Tensor, y: torch.Tensor, lambdas: tuple[float, ...] = PROBE["lambda_grid"],
              folds: int = PROBE["cv_folds"], seed: int = 0, max_iter: int = PROBE["max_iter"],
              tolerance: float = PROBE["cv_tolerance"]) -> ProbeFit:
    """Pick lambda by stratified `folds`-fold cross-validation on the labelled features x (N, D), y (N,) alone, then
    fit the probe on all of x with it. The pick: the largest lambda whose validation accuracy (pooled over the folds)
    is within `tolerance` of the best one: where the folds cannot tell lambdas apart (all labels of a large dataset
    hardly need a penalty), the simpler probe. No test data reaches this function."""
    n_classes = int(y.max()) + 1
    fold = stratified_folds(y, folds, seed)
    held_out = fold[None] == torch.arange(folds)[:, None]  # (K, N)
    masks = torch.cat([~held_out, torch.ones(1, len(y), dtype=torch.bool)]).float()  # K fold fits + the final one
    W, b = fit_logistic(x, y, lambdas, masks, n_classes, max_iter)  # (G, K + 1, D, C), (G, K + 1, C)
    pred = (torch.einsum("nd,gkdc->gknc", x, W[:, :folds]) + b[:, :folds, None]).argmax(3)  # (G, K, N)
    accuracy = [round(a, 6) for a in (((pred == y) & held_out).sum((1, 2)).float() / len(y)).tolist()]  # (G,)
    best = max(range(len(lambdas)), key=lambda g: (accuracy[g] >= max(accuracy) - tolerance, lambdas[g]))
    return ProbeFit(W[best, -1], b[best, -1], float(lambdas[best]), accuracy)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 lambdas: tuple[float, ...] = PROBE["lambda_grid"], folds: int = PROBE["cv_folds"], seed: int = 0,
                 unlabeled_x: torch.Tensor | None = None, max_iter: int = PROBE["max_iter"]) -> dict:
    """The linear probe: features centred with the mean of `unlabeled_x` (default: train_x; low-shot probes pass all
    training features, which uses no labels) and L2-normalised, lambda cross-validated on the training labels
    (`fit_probe`). Returns {"accuracy": top-1 test accuracy, "lambda": chosen, "cv_accuracy": one per lambda}."""
    prep = centre_normalise(train_x if unlabeled_x is None else unlabeled_x)
    fit = fit_probe(prep(train_x), train_y, lambdas, folds, seed, max_iter)
    accuracy = (fit.predict(prep(test_x)) == test_y).float().mean().item()
    return {"accuracy": accuracy, "lambda": fit.lam, "cv_accuracy": fit.cv_accuracy}


def pca_whitener(ref: torch.Tensor, eps: float = WHITENED_PROBE["eps"]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The whitened probe's input map, fitted on features ref (N, D): standardise each dimension, then rotate onto
    the principal axes and divide each by its std (eigenvalue + eps). Every direction then has unit variance, the
    large common one and the faint ones alike. Returns x (M, D) -> whitened (M, D)."""
    mu, sigma = ref.mean(0), ref.std(0).clamp_min(1e-6)  # (D,)
    z = ((ref - mu) / sigma).double()
    evals, evecs = torch.linalg.eigh(z.T @ z / len(z))  # (D,), (D, D)
    whiten = (evecs / (evals.clamp_min(0) + eps).sqrt()).to(ref.dtype)  # (D, D)
    return lambda x: ((x - mu) / sigma) @ whiten


def whitened_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   epochs: int = WHITENED_PROBE["epochs"], weight_decay: float = WHITENED_PROBE["weight_decay"],
                   eps: float = WHITENED_PROBE["eps"], seed: int = 0,
                   unlabeled_x: torch.Tensor | None = None) -> float:
    """The diagnostic `linear_whitened`: top-1 test accuracy of multinomial logistic regression (one nn.Linear) on
    PCA-whitened features (`pca_whitener`, statistics of `unlabeled_x`, default train_x), fitted full-batch with
    L-BFGS (at most `epochs` iterations) and a fixed L2 penalty. Whitening makes every direction equally cheap, so
    the accuracy is (nearly) the same for features z and A z, any invertible A: it measures what is linearly
    decodable at all, not whether the features make it easy."""
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


def low_shot_draws(labels: torch.Tensor, draws: int, seed: int = 0, per_class: int | None = None,
                   fraction: float | None = None) -> list[torch.Tensor]:
    """`draws` independent low-shot subsets (low_shot_indices); draw d uses seed + d, so every read-out that uses
    the first n draws of a setting sees the same labelled images."""
    return [low_shot_indices(labels, per_class, fraction, seed + d) for d in range(draws)]


def summary(values: list[float]) -> dict:
    """Mean, sample std (0 for one value) and the values themselves, as eval.json keeps a low-shot read-out."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "draws": list(values)}
