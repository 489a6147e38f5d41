"""Anti-collapse by design: explicit regularisers on a batch of embeddings Z (N, D), for latent targets.

I-JEPA avoids collapse only through its asymmetry (a predictor on one side, a slowly moving EMA target on the other,
paper §3); at small scale that is not always enough (notebooks 04 and 07, docs/results.md). Later joint-embedding work adds
an explicit term that keeps the embeddings' variance up:

    vicreg   (Bardes et al. 2022, used by C-JEPA, Mo & Tong 2024)
             v(Z) = mean_j max(0, 1 - sqrt(Var(z_j) + 1e-4))         every dimension keeps a std of at least 1
             c(Z) = (1/D) sum_{i != j} Cov(Z)_ij^2                  dimensions carry different information
             vicreg(Z) = v(Z) + cov_weight * c(Z)                    (VICReg weighs them 25 : 1, cov_weight 0.04)

    sigreg   (LeJEPA, Balestriero & LeCun 2025) pushes Z towards an isotropic Gaussian N(0, I) along K random unit
             directions a_k (redrawn every step): the projections s_n = a_k . z_n should be N(0, 1). The Epps-Pulley
             statistic compares their empirical characteristic function phi(t) = mean_n exp(i t s_n) with the
             Gaussian's exp(-t^2 / 2):  integral over t of w(t) |phi(t) - exp(-t^2/2)|^2 dt,  w(t) = exp(-t^2/2),
             on [-t_max, t_max] (trapezoid rule on `knots` points of [0, t_max], doubled by symmetry), averaged
             over the directions. As a test statistic it is multiplied by N; as a loss we leave N out, so that a
             weight means the same thing at every batch size.

Both are plain differentiable functions of Z; `IJEPA` applies the chosen one to the context encoder's output.
"""
from __future__ import annotations

import torch

REGULARISERS = ("none", "vicreg", "sigreg")
VICREG = dict(cov_weight=0.04, eps=1e-4)  # VICReg's variance : covariance weights are 25 : 1
SIGREG = dict(directions=256, knots=17, t_max=3.0)  # LeJEPA's defaults


def vicreg_variance(z: torch.Tensor, eps: float = VICREG["eps"]) -> torch.Tensor:
    """v(Z): a hinge on every dimension's std across the batch; 0 once each std is at least 1. z (N, D)."""
    return torch.relu(1 - (z.var(0) + eps).sqrt()).mean()


def vicreg_covariance(z: torch.Tensor) -> torch.Tensor:
    """c(Z): the squared off-diagonal covariances, summed and divided by D. z (N, D)."""
    N, D = z.shape
    x = z - z.mean(0)
    cov = x.T @ x / (N - 1)  # (D, D)
    return (cov.square().sum() - cov.diagonal().square().sum()) / D


def vicreg(z: torch.Tensor, cov_weight: float = VICREG["cov_weight"]) -> torch.Tensor:
    return vicreg_variance(z) + cov_weight * vicreg_covariance(z)


def sigreg(z: torch.Tensor, directions: int = SIGREG["directions"], knots: int = SIGREG["knots"],
           t_max: float = SIGREG["t_max"], generator: torch.Generator | None = None) -> torch.Tensor:
    """The Epps-Pulley distance of Z (N, D) from N(0, I) along `directions` random unit vectors, averaged (no
    factor N). Directions come from `generator` if given, else from torch's global generator on z's device."""
    N, D = z.shape
    a = torch.randn(D, directions, generator=generator, device=None if generator else z.device)  # (D, K)
    a = (a / a.norm(dim=0)).to(z)
    s = z @ a  # (N, K): one projection per image and direction
    t = torch.linspace(0, t_max, knots, device=z.device, dtype=z.dtype)  # (T,)
    st = s.unsqueeze(-1) * t  # (N, K, T)
    gauss = torch.exp(-t.square() / 2)  # the characteristic function of N(0, 1), and the weight w(t)
    err = (st.cos().mean(0) - gauss).square() + st.sin().mean(0).square()  # (K, T): |phi(t) - exp(-t^2/2)|^2
    integral = 2 * torch.trapezoid(err * gauss, t, dim=-1)  # (K,): [-t_max, t_max], the integrand is even in t
    return integral.mean()


def regulariser(name: str, z: torch.Tensor) -> torch.Tensor:
    """The named regulariser (with its defaults) of embeddings z (N, D)."""
    if name == "vicreg":
        return vicreg(z)
    if name == "sigreg":
        return sigreg(z)
    raise ValueError(f"unknown regulariser {name!r}; choose one of {', '.join(REGULARISERS)}")
