"""Subspaces spanned by groups of feature directions, and how two of them compare (PAPER.md, "Geometry").

A group's subspace is the span of its unit directions truncated to the rank that holds `energy` (default 90%) of
their squared singular values. Two subspaces are compared by their principal angles and by the overlap
`||P_A P_B||_F^2 / min(r_A, r_B)`, which is 1 when the smaller lies inside the larger and `max(r_A, r_B) / d` on
average for random subspaces. Baselines: uniformly random subspaces, and directions drawn from the activation
covariance (the harder null: real features live where the data has variance).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def energy_rank(vectors: Tensor, energy: float = 0.9) -> int:
    """Smallest r whose top-r singular values hold `energy` of the squared singular values of `vectors (n, d)`."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy={energy} must lie in (0, 1]")
    s2 = torch.linalg.svdvals(vectors.double()).pow(2)
    if s2.sum() == 0:
        return 0
    cum = s2.cumsum(0) / s2.sum()
    return int((cum < energy - 1e-12).sum().item()) + 1


def span_basis(vectors: Tensor, *, energy: float = 0.9, rank: int | None = None, unit: bool = True) -> Tensor:
    """Orthonormal basis `(r, d)` of the span of `vectors (n, d)`, truncated by `energy` or to a given `rank`.

    Args:
        vectors: the group's directions, one per row.
        energy: keep the smallest rank holding this share of the squared singular values (ignored if `rank`).
        rank: keep exactly this many top singular directions.
        unit: normalise the rows first, so that every feature weighs the same.
    """
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"vectors must be a non-empty (n, d) matrix, got shape {tuple(vectors.shape)}")
    v = _unit(vectors.double()) if unit else vectors.double()
    r = rank if rank is not None else energy_rank(v, energy)
    if not 1 <= r <= min(v.shape):
        raise ValueError(f"rank={r} must lie in [1, {min(v.shape)}]")
    _, _, vh = torch.linalg.svd(v, full_matrices=False)
    return vh[:r].to(vectors.dtype if vectors.is_floating_point() else torch.float32)


def principal_angles(a: Tensor, b: Tensor) -> Tensor:
    """Principal angles in radians, ascending, between the row spaces of orthonormal `a (r_a, d)` and `b (r_b, d)`.

    There are `min(r_a, r_b)` of them: 0 for shared directions, pi/2 for orthogonal ones (agrees with
    `scipy.linalg.subspace_angles`, which returns them descending).
    """
    sv = torch.linalg.svdvals(a.double() @ b.double().T).clamp(-1.0, 1.0)
    return torch.arccos(sv).flip(0).to(torch.float32).sort().values


def subspace_overlap(a: Tensor, b: Tensor) -> float:
    """`||P_A P_B||_F^2 / min(r_A, r_B)` for orthonormal bases `a (r_A, d)`, `b (r_B, d)`: 1 when one subspace
    contains the other, 0 when they are orthogonal."""
    return float((a.double() @ b.double().T).pow(2).sum() / min(a.shape[0], b.shape[0]))


def projection_share(vectors: Tensor, basis: Tensor) -> Tensor:
    """Share `||P v||^2 / ||v||^2` of each row of `vectors (n, d)` inside the span of orthonormal `basis (r, d)`."""
    v = _unit(vectors.double())
    return (v @ basis.double().T).pow(2).sum(-1).to(torch.float32)


def participation_ratio(vectors: Tensor) -> float:
    """Effective rank `(sum l)^2 / sum l^2` of the eigenvalues l of the Gram matrix of the unit rows of `vectors`."""
    s2 = torch.linalg.svdvals(_unit(vectors.double())).pow(2)
    return float(s2.sum().pow(2) / s2.pow(2).sum())


def random_subspace(d: int, rank: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniformly random orthonormal basis `(rank, d)` (QR of a Gaussian matrix)."""
    if not 1 <= rank <= d:
        raise ValueError(f"rank={rank} must lie in [1, d={d}]")
    q, r = torch.linalg.qr(torch.randn(d, rank, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q.T.to(torch.float32)


def covariance_directions(cov: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """`n` unit vectors `(n, d)` drawn from `N(0, cov)`: random directions weighted by the data's variance."""
    evals, evecs = torch.linalg.eigh(cov.double())
    root = evecs * evals.clamp_min(0).sqrt().unsqueeze(0)  # cov = root @ root.T
    z = torch.randn(n, cov.shape[0], generator=generator, dtype=torch.float64)
    return _unit(z @ root.T).to(torch.float32)


def expected_random_overlap(d: int, r_a: int, r_b: int) -> float:
    """Mean overlap of two independent uniformly random subspaces: `max(r_a, r_b) / d`."""
    return max(r_a, r_b) / d


class RandomBaseline(NamedTuple):
    """Scores of pairs of uniformly random subspaces."""

    overlap_mean: float
    overlap_std: float
    max_angle_deg: float
    """Mean largest principal angle, in degrees."""
    mean_angle_deg: float
    """Mean of the mean principal angle, in degrees."""


def random_overlap_baseline(d: int, r_a: int, r_b: int, n_draws: int = 100, seed: int = 0) -> RandomBaseline:
    """Overlap and principal angles between independent random subspaces of ranks `r_a`, `r_b` in `R^d`."""
    gen = torch.Generator().manual_seed(seed)
    pairs = [(random_subspace(d, r_a, gen), random_subspace(d, r_b, gen)) for _ in range(n_draws)]
    overlaps = torch.tensor([subspace_overlap(a, b) for a, b in pairs])
    angles = torch.stack([torch.rad2deg(principal_angles(a, b)) for a, b in pairs])  # (n_draws, min(r_a, r_b))
    std = float(overlaps.std()) if n_draws > 1 else math.nan
    return RandomBaseline(float(overlaps.mean()), std, float(angles.amax(1).mean()), float(angles.mean()))
