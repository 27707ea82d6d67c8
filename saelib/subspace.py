"""Subspaces spanned by groups of feature directions, and how two of them compare (book/methods.md, "Subspaces").

A group's subspace is the span of its unit directions truncated to the rank that holds `energy` (default 90%) of
their squared singular values. Two subspaces are compared by their principal angles and by the overlap
`||P_A P_B||_F^2 / min(r_A, r_B)`, which is 1 when the smaller lies inside the larger and `max(r_A, r_B) / d` on
average for random subspaces. Baselines: uniformly random subspaces, and directions drawn from the activation
covariance (the harder null: real features live where the data has variance).

`stream_covariance` gives the activation covariance for that null (`saelib.lm.store.load_covariance` caches it for a
store); `rank_stats` and `ordered_basis` give a set's effective rank and, from one decomposition, its span at every
rank. The paper's own geometry measures (arXiv 2606.12138, as reported by a secondary source):
`normalized_effective_rank` (ER/d) with its size-matched control `random_subset_effective_rank`, and
`top_subspace_transfer` with its controls `random_latent_transfer` and `random_subspace_transfer`. Chapter 3's
analysis of the stable / unstable split built on these lives in `saelib.chapters.geometry`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, ParamSpec, TypeVar

import torch
from torch import Tensor

P = ParamSpec("P")
R = TypeVar("R")


def single_threaded(fn: Callable[P, R]) -> Callable[P, R]:
    """Run `fn` with one torch CPU thread, restoring the count after (GPU work is unaffected). Dense linear algebra at
    these sizes (d ~ 10^3) gains little from threads, and on a shared CPU, LAPACK on two contended threads ran
    10-150x slower than on one (a 640 x 640 float64 `eigh`: 9.5 s against 0.06 s). Every decomposition in this
    module, `saelib.groups` and `saelib.chapters.geometry` runs under it."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(n)

    return wrapper


def unit_rows(v: Tensor) -> Tensor:
    """`v` scaled to unit norm along its last axis (a zero vector stays zero)."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@single_threaded
def energy_rank(vectors: Tensor, energy: float = 0.9) -> int:
    """Smallest r whose top-r singular values hold `energy` of the squared singular values of `vectors (n, d)`."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy={energy} must lie in (0, 1]")
    return _rank_holding(torch.linalg.svdvals(vectors.double()).pow(2), energy)


def _rank_holding(s2: Tensor, energy: float) -> int:
    """Smallest r whose top-r entries of the descending `s2` hold `energy` of its sum (0 when it sums to 0)."""
    if s2.numel() == 0 or s2.sum() == 0:
        return 0
    cum = s2.cumsum(0) / s2.sum()
    return min(int((cum < energy - 1e-12).sum().item()) + 1, s2.numel())


@single_threaded
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
    v = unit_rows(vectors.double()) if unit else vectors.double()
    r = rank if rank is not None else energy_rank(v, energy)
    if not 1 <= r <= min(v.shape):
        raise ValueError(f"rank={r} must lie in [1, {min(v.shape)}]")
    _, _, vh = torch.linalg.svd(v, full_matrices=False)
    return vh[:r].to(vectors.dtype if vectors.is_floating_point() else torch.float32)


@single_threaded
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
    v = unit_rows(vectors.double())
    return (v @ basis.double().T).pow(2).sum(-1).to(torch.float32)


@single_threaded
def participation_ratio(vectors: Tensor) -> float:
    """Effective rank `(sum l)^2 / sum l^2` of the eigenvalues l of the Gram matrix of the unit rows of `vectors`."""
    s2 = torch.linalg.svdvals(unit_rows(vectors.double())).pow(2)
    return float(s2.sum().pow(2) / s2.pow(2).sum())


@single_threaded
def random_subspace(d: int, rank: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniformly random orthonormal basis `(rank, d)` (QR of a Gaussian matrix)."""
    if not 1 <= rank <= d:
        raise ValueError(f"rank={rank} must lie in [1, d={d}]")
    q, r = torch.linalg.qr(torch.randn(d, rank, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q.T.to(torch.float32)


@single_threaded
def covariance_directions(cov: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """`n` unit vectors `(n, d)` drawn from `N(0, cov)`: random directions weighted by the data's variance."""
    root = covariance_root(cov)
    z = torch.randn(n, cov.shape[0], generator=generator, dtype=torch.float64)
    return unit_rows(z @ root.T).to(torch.float32)


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


@single_threaded
def random_overlap_baseline(d: int, r_a: int, r_b: int, n_draws: int = 100, seed: int = 0) -> RandomBaseline:
    """Overlap and principal angles between independent random subspaces of ranks `r_a`, `r_b` in `R^d`."""
    gen = torch.Generator().manual_seed(seed)
    pairs = [(random_subspace(d, r_a, gen), random_subspace(d, r_b, gen)) for _ in range(n_draws)]
    overlaps = torch.tensor([subspace_overlap(a, b) for a, b in pairs])
    angles = torch.stack([torch.rad2deg(principal_angles(a, b)) for a, b in pairs])  # (n_draws, min(r_a, r_b))
    std = float(overlaps.std()) if n_draws > 1 else math.nan
    return RandomBaseline(float(overlaps.mean()), std, float(angles.amax(1).mean()), float(angles.mean()))


# --- The activation covariance (the harder null) ---------------------------------------------------------------------


class Covariance(NamedTuple):
    """Mean and covariance of a stream of activations."""

    mean: Tensor
    """`(d,)` float64."""
    cov: Tensor
    """`(d, d)` float64, unbiased (divided by `n_tokens - 1`)."""
    n_tokens: int


def stream_covariance(batches: Iterable[Tensor], max_tokens: int | None = None) -> Covariance:
    """Mean and covariance of the rows of `(B, d)` batches, the first `max_tokens` rows at most.

    Sums are taken around the first batch's mean (so float32 products of centred rows lose nothing that matters) and
    accumulated in float64.
    """
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"max_tokens={max_tokens} must be >= 2")
    shift: Tensor | None = None
    s1 = s2 = torch.zeros(0, dtype=torch.float64)  # sized by the first batch
    n = 0
    for x in batches:
        x = x[: max_tokens - n] if max_tokens is not None else x
        if len(x) == 0:
            break
        if shift is None:
            shift = x.double().mean(0).float()
            s1 = torch.zeros(x.shape[1], dtype=torch.float64)
            s2 = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
        c = x.float() - shift  # (B, d)
        s1 += c.sum(0).double()
        s2 += (c.T @ c).double()
        n += len(x)
    if shift is None or n < 2:
        raise ValueError("batches must hold at least 2 rows")
    m = s1 / n
    return Covariance(shift.double() + m, (s2 - n * torch.outer(m, m)) / (n - 1), n)


# --- Effective rank, and one decomposition for every rank -----------------------------------------------------------


class RankStats(NamedTuple):
    """Effective rank of a set of directions."""

    n: int
    participation_ratio: float
    """`(sum l)^2 / sum l^2` over the eigenvalues of the Gram matrix of the unit rows."""
    energy_rank: int
    """Smallest rank holding the configured share of the squared singular values."""


def spectrum_rank_stats(s2: Tensor, energy: float = 0.9) -> RankStats:
    """`RankStats` from the descending squared singular values `s2` of a set of unit rows (`ordered_basis`)."""
    if s2.numel() == 0:
        return RankStats(0, math.nan, 0)
    return RankStats(len(s2), float(s2.sum().pow(2) / s2.pow(2).sum()), _rank_holding(s2, energy))


@single_threaded
def rank_stats(vectors: Tensor, energy: float = 0.9) -> RankStats:
    """`RankStats` of the unit rows of `vectors (n, d)` (one SVD); `(0, nan, 0)` for an empty set."""
    if len(vectors) == 0:
        return RankStats(0, math.nan, 0)
    s2 = torch.linalg.svdvals(unit_rows(vectors.double())).pow(2)
    return spectrum_rank_stats(s2, energy)._replace(n=len(vectors))


@single_threaded
def ordered_basis(vectors: Tensor) -> tuple[Tensor, Tensor]:
    """Squared singular values `(min(n, d),)` and right singular vectors `(k, d)` of the unit rows of
    `vectors (n, d)`, by descending singular value: the first r rows are `span_basis(vectors, rank=r)`, so one
    decomposition serves every rank (when n < d, only the k directions with non-zero singular value)."""
    if len(vectors) == 0:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, vectors.shape[-1])
    v = unit_rows(vectors.double())  # (n, d)
    # Eigendecomposition of the smaller Gram matrix: several times faster than the SVD.
    if len(v) >= v.shape[1]:
        evals, evecs = torch.linalg.eigh(v.T @ v)  # (d, d)
        return evals.flip(0).clamp_min(0), evecs.flip(1).T.contiguous().float()
    evals, u = torch.linalg.eigh(v @ v.T)  # (n, n)
    s2, u = evals.flip(0), u.flip(1)
    keep = s2 > 1e-12 * s2[0]  # directions with no energy have no defined right singular vector: left out
    vh = (u[:, keep].T @ v) / s2[keep].sqrt().unsqueeze(1)
    return s2.clamp_min(0), vh.float()


@single_threaded
def covariance_root(cov: Tensor) -> Tensor:
    """`(d, d)` float64 `R` with `R @ R.T = cov` (eigendecomposition, negative eigenvalues clipped): `z @ R.T` for
    standard normal rows `z` is drawn from N(0, cov)."""
    evals, evecs = torch.linalg.eigh(cov.double())
    return evecs * evals.clamp_min(0).sqrt().unsqueeze(0)


# --- The paper's geometry analyses: normalised effective rank and top-subspace transfer -----------------------------
# As a third-party reading of arXiv 2606.12138 reports it (secondary source): ER/d of unstable latents' decoder
# sub-matrix is about 0.59-0.65 against 0.80-0.81 for stable ones, and the top singular subspace of one seed's unstable
# latents transfers to other seeds.


def _ranks(ranks: int | Sequence[int]) -> list[int]:
    out = [ranks] if isinstance(ranks, int) else list(ranks)
    if not out or any(r < 1 for r in out):
        raise ValueError(f"ranks={ranks} must be positive integers")
    return out


@single_threaded
def normalized_effective_rank(directions: Tensor, *, unit: bool = True) -> float:
    """Entropy effective rank of `directions (n, d)` divided by the largest it can be, `min(n, d)`.

    The effective rank is `exp(H(p))` with `p = s / sum(s)` over the singular values `s` (Roy & Vetterli 2007), the
    measure the paper's ER/d uses (arXiv 2606.12138, as reported by a secondary source). 1 for an orthonormal set,
    `1 / min(n, d)` for a rank-1 set; NaN for an empty set.

    Args:
        directions: the group's decoder rows, one per row.
        unit: normalise the rows first (decoder rows already have unit norm).
    """
    if directions.ndim != 2:
        raise ValueError(f"directions must be an (n, d) matrix, got shape {tuple(directions.shape)}")
    if len(directions) == 0:
        return math.nan
    v = unit_rows(directions.double()) if unit else directions.double()
    s = torch.linalg.svdvals(v)  # (min(n, d),)
    if s.sum() == 0:
        return math.nan
    p = s / s.sum()
    entropy = -(p * p.clamp_min(1e-300).log()).sum()  # 0 log 0 = 0
    return float(entropy.exp() / min(v.shape))


def random_subset_effective_rank(
    directions: Tensor, candidates: Tensor, size: int, *, n_draws: int = 20, seed: int = 0
) -> Tensor:
    """Control of `normalized_effective_rank`: ER/d of `n_draws` uniformly random subsets of `size` rows of
    `directions (F, d)` among `candidates (F,)` bool (the alive latents), `(n_draws,)` float64.

    A group's ER/d depends on its size (a smaller set of random unit vectors is closer to orthonormal), so a group is
    compared with random sets of alive latents of the same size, drawn from the same seed.
    """
    pool = candidates.nonzero()[:, 0].cpu()
    if not 1 <= size <= len(pool):
        raise ValueError(f"size={size} must lie in [1, {len(pool)}] (the candidates)")
    gen = torch.Generator().manual_seed(seed)
    return torch.tensor(
        [
            normalized_effective_rank(directions[pool[torch.randperm(len(pool), generator=gen)[:size]]])
            for _ in range(n_draws)
        ],
        dtype=torch.float64,
    )


@single_threaded
def top_subspace_transfer(dirs_s: Tensor, dirs_t: Tensor, ranks: int | Sequence[int]) -> Tensor:
    """Share of seed t's decoder energy captured by the top-r right singular subspace of seed s's decoder rows.

    For each r: `||D_t V_r^T||_F^2 / ||D_t||_F^2`, where `V_r (r, d)` spans the top r right singular vectors of the
    unit rows of `dirs_s` and `D_t` holds the unit rows of `dirs_t` (every latent weighs the same). 1 when both
    sets span the same space; `r / d` on average for a uniformly random r-dimensional subspace
    (`random_subspace_transfer`).

    Args:
        dirs_s: `(n_s, d)` the source group (e.g. seed s's unstable latents).
        dirs_t: `(n_t, d)` the target group (e.g. seed t's unstable latents).
        ranks: one r or several.

    Returns:
        `(R,)` float64, the captured share for each r, in the order given.
    """
    rs = _ranks(ranks)
    if len(dirs_s) == 0 or len(dirs_t) == 0:
        raise ValueError("dirs_s and dirs_t must hold at least one row each")
    _, basis = ordered_basis(dirs_s)  # (k, d) by descending singular value
    if max(rs) > len(basis):
        raise ValueError(f"ranks={rs} exceed the {len(basis)} directions spanned by dirs_s")
    coords = (unit_rows(dirs_t.double()) @ basis.double().T).pow(2)  # (n_t, k)
    captured = coords.sum(0).cumsum(0) / len(dirs_t)  # the rows have unit norm: ||D_t||_F^2 = n_t
    return captured[torch.tensor(rs) - 1]


def random_latent_transfer(
    dirs_s: Tensor,
    candidates_s: Tensor,
    size_s: int,
    dirs_t: Tensor,
    candidates_t: Tensor,
    size_t: int,
    ranks: int | Sequence[int],
    *,
    n_draws: int = 20,
    seed: int = 0,
) -> Tensor:
    """Control of `top_subspace_transfer`: the same computation with random alive latents in place of the groups.

    Each draw takes `size_s` random latents of seed s among `candidates_s` and `size_t` of seed t among
    `candidates_t` (size-matched to the groups compared) and measures the transfer between them.

    Args:
        dirs_s, dirs_t: `(F, d)` all decoder rows of seeds s and t.
        candidates_s, candidates_t: `(F,)` bool, the latents that may be drawn (alive).
        size_s, size_t: the sizes of the groups being matched.
        ranks: one r or several (at most `min(size_s, d)`).
        n_draws: random draws.
        seed: seed of the draws.

    Returns:
        `(n_draws, R)` float64.
    """
    rs = _ranks(ranks)
    pool_s, pool_t = candidates_s.nonzero()[:, 0].cpu(), candidates_t.nonzero()[:, 0].cpu()
    if not 1 <= size_s <= len(pool_s) or not 1 <= size_t <= len(pool_t):
        raise ValueError(f"size_s={size_s}, size_t={size_t} must lie in [1, {len(pool_s)}], [1, {len(pool_t)}]")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_draws):
        a = dirs_s[pool_s[torch.randperm(len(pool_s), generator=gen)[:size_s]]]
        b = dirs_t[pool_t[torch.randperm(len(pool_t), generator=gen)[:size_t]]]
        out.append(top_subspace_transfer(a, b, rs))
    return torch.stack(out)


@single_threaded
def random_subspace_transfer(dirs_t: Tensor, ranks: int | Sequence[int], *, n_draws: int = 20, seed: int = 0) -> Tensor:
    """Control of `top_subspace_transfer`: the share of `dirs_t (n_t, d)`'s energy in uniformly random
    r-dimensional subspaces, `(n_draws, R)` float64 (its expectation is exactly `r / d`)."""
    rs = _ranks(ranks)
    d = dirs_t.shape[-1]
    if max(rs) > d:
        raise ValueError(f"ranks={rs} exceed d={d}")
    gen = torch.Generator().manual_seed(seed)
    v = unit_rows(dirs_t.double())
    out = []
    for _ in range(n_draws):
        q = random_subspace(d, max(rs), gen).double()  # (r_max, d): its first r rows are a random r-subspace
        captured = (v @ q.T).pow(2).sum(0).cumsum(0) / len(v)
        out.append(captured[torch.tensor(rs) - 1])
    return torch.stack(out)


def group_effective_rank(
    directions: Tensor, group: Tensor, alive: Tensor, *, n_draws: int = 20, seed: int = 0
) -> list[dict]:
    """ER/d of one group's decoder sub-matrix in every seed, beside size-matched random subsets of alive latents.

    Args:
        directions: `(S, F, d)` decoder rows.
        group: `(S, F)` bool, the group (e.g. `label == UNSTABLE`).
        alive: `(S, F)` bool, the latents the control may draw.
        n_draws: control draws per seed.
        seed: seed of the draws.

    Returns:
        One row per seed holding the group: `seed`, `n`, `er_d` (the group's ER/d), `control_mean`, `control_std`.
    """
    if group.shape != directions.shape[:2] or alive.shape != group.shape:
        raise ValueError(f"group and alive must be (S, F) = {tuple(directions.shape[:2])}")
    rows = []
    for s in range(len(directions)):
        n = int(group[s].sum())
        if n == 0:
            continue
        ctrl = random_subset_effective_rank(directions[s], alive[s], n, n_draws=n_draws, seed=seed + s)
        std = float(ctrl.std()) if n_draws > 1 else math.nan
        er = normalized_effective_rank(directions[s][group[s].to(directions.device)])
        rows.append({"seed": s, "n": n, "er_d": er, "control_mean": float(ctrl.mean()), "control_std": std})
    return rows


def group_transfer(
    directions: Tensor,
    group: Tensor,
    alive: Tensor,
    ranks: Sequence[int],
    *,
    pairs: Sequence[tuple[int, int]] | None = None,
    n_draws: int = 20,
    seed: int = 0,
) -> list[dict]:
    """`top_subspace_transfer` of one group from seed s to seed t, with both controls, for every pair and rank.

    Args:
        directions: `(S, F, d)` decoder rows.
        group: `(S, F)` bool, the group (e.g. `label == UNSTABLE`).
        alive: `(S, F)` bool, the latents the random-latent control may draw.
        ranks: the r to evaluate (those above a group's span are left out).
        pairs: ordered `(s, t)` pairs (default every ordered pair of distinct seeds).
        n_draws: draws of each control.
        seed: seed of the draws.

    Returns:
        One row per (s, t, r): `source`, `target`, `r`, `transfer` (the group's), `random_latents` (mean of the
        size-matched random alive latents' transfer, random in both seeds), `random_source` (mean transfer from
        as many random alive latents of seed s into seed t's group itself), `random_subspace` (mean share of the
        target group's energy in random r-dimensional subspaces, about r / d).
    """
    if group.shape != directions.shape[:2] or alive.shape != group.shape:
        raise ValueError(f"group and alive must be (S, F) = {tuple(directions.shape[:2])}")
    S = len(directions)
    pairs = [(s, t) for s in range(S) for t in range(S) if s != t] if pairs is None else list(pairs)
    group = group.to(directions.device)
    rows = []
    for s, t in pairs:
        a, b = directions[s][group[s]], directions[t][group[t]]
        if len(a) == 0 or len(b) == 0:
            continue
        rs = [r for r in _ranks(ranks) if r <= len(ordered_basis(a)[1])]
        if not rs:
            continue
        ours = top_subspace_transfer(a, b, rs)
        rand_lat = random_latent_transfer(
            directions[s], alive[s], len(a), directions[t], alive[t], len(b), rs, n_draws=n_draws, seed=seed
        ).mean(0)
        rand_src = random_latent_transfer(  # random source, the same target group (drawn whole: a permutation)
            directions[s], alive[s], len(a), directions[t], group[t], len(b), rs, n_draws=n_draws, seed=seed
        ).mean(0)
        rand_sub = random_subspace_transfer(b, rs, n_draws=n_draws, seed=seed).mean(0)
        for i, r in enumerate(rs):
            rows.append(
                {
                    "source": s,
                    "target": t,
                    "r": r,
                    "transfer": float(ours[i]),
                    "random_latents": float(rand_lat[i]),
                    "random_source": float(rand_src[i]),
                    "random_subspace": float(rand_sub[i]),
                }
            )
    return rows
