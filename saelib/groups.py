"""Groups of unstable features whose spans match across seeds (chapter 3; book/methods.md, "Chapter 3: geometry").

A feature of seed s is *explained* by seed t when at most `max_atoms` of t's unstable features, with positive
weights, hold at least `min_share` of its squared norm (greedy non-negative orthogonal matching pursuit, `explain`).
With the default `min_share` = tau^2 (a cosine of tau to the span) an unstable feature, which has no single match in
another seed, needs two or more features to be explained: it lies near the span of a few features of the other
seed. Two features are linked when each explains the other (mutual, by default); the connected components of these
links over all ordered seed pairs that hold features of at least `min_seeds` seeds are the groups (`find_groups`).

`group_table` scores each group: its rank per seed and pooled over seeds, principal angles and overlap between the
seeds' spans against random and covariance-drawn subspaces of the same ranks, and for each feature its cosine to its
best single match in another seed beside its cosine to that seed's span (basis ambiguity: the first low, the second
high).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple, cast

import numpy as np
import pandas as pd
import scipy.sparse as sps
import torch
from scipy.sparse.csgraph import connected_components
from torch import Tensor

from saelib.subspace import (
    covariance_root,
    principal_angles,
    projection_share,
    random_subspace,
    rank_stats,
    single_threaded,
    span_basis,
    subspace_overlap,
    unit_rows,
)


@dataclass(frozen=True)
class GroupConfig:
    """How groups of unstable features are found and scored."""

    max_atoms: int = 3
    """Most features of another seed that may explain one feature."""
    min_share: float = 0.49
    """Share of a feature's squared norm they must explain: 0.49 is a cosine of 0.7 to their span, the threshold tau
    at which a single feature counts as reappearing (book/intro.md, "Definitions used throughout"), applied to a
    span instead."""
    mutual: bool = True
    """Link two features only when each is among the explainers of the other (as mutual nearest neighbours); one-way
    links chain most unstable latents into one giant component on real SAEs."""
    min_seeds: int = 2
    """A group must hold features of at least this many seeds."""
    energy: float = 0.9
    """Energy share kept by each seed's span of its group members."""
    n_draws: int = 5
    """Draws of the random and covariance baselines per pair of seeds in a group."""
    seed: int = 0
    """Seed of the baselines' generator."""

    def __post_init__(self) -> None:
        if self.max_atoms < 1:
            raise ValueError(f"GroupConfig.max_atoms={self.max_atoms} must be >= 1")
        if not 0 < self.min_share <= 1:
            raise ValueError(f"GroupConfig.min_share={self.min_share} must lie in (0, 1]")
        if self.min_seeds < 2:
            raise ValueError(f"GroupConfig.min_seeds={self.min_seeds} must be >= 2")
        if not 0 < self.energy <= 1:
            raise ValueError(f"GroupConfig.energy={self.energy} must lie in (0, 1]")
        if self.n_draws < 1:
            raise ValueError(f"GroupConfig.n_draws={self.n_draws} must be >= 1")


class Explanation(NamedTuple):
    """Which atoms explain each target (`explain`)."""

    atoms: Tensor
    """`(n, max_atoms)` long: indices of the explaining atoms, -1 padded (all -1 when unexplained)."""
    share: Tensor
    """`(n,)`: share of the target's squared norm explained (by the accepted atoms, else by all atoms tried)."""
    explained: Tensor
    """`(n,)` bool: some prefix of the greedy path reaches `min_share` with all weights positive."""


@torch.no_grad()
@single_threaded
def explain(targets: Tensor, atoms: Tensor, max_atoms: int = 3, min_share: float = 0.8) -> Explanation:
    """Greedy non-negative matching pursuit of each unit target `(n, d)` by unit atoms `(m, d)`.

    At each step every target takes the atom most positively correlated with its residual and is refitted by least
    squares on the atoms taken; a target is explained by the shortest prefix whose fit holds `min_share` of its
    squared norm with every weight positive.
    """
    if targets.ndim != 2 or atoms.ndim != 2 or targets.shape[1] != atoms.shape[1]:
        raise ValueError(f"targets {tuple(targets.shape)} and atoms {tuple(atoms.shape)} must be (n, d) and (m, d)")
    n, m = len(targets), len(atoms)
    K = min(max_atoms, m)
    if n == 0 or K == 0:
        return Explanation(torch.full((n, max_atoms), -1), torch.zeros(n), torch.zeros(n, dtype=torch.bool))
    T, A = unit_rows(targets.double()), unit_rows(atoms.double())
    ta, aa = T @ A.T, A @ A.T  # (n, m), (m, m): the residual's correlations follow from these, no (n, d) work
    idx = torch.full((n, K), -1, dtype=torch.long)
    rows = torch.arange(n).unsqueeze(1)
    corr, oks, shares = ta.clone(), [], []
    for k in range(K):
        if k:
            corr.scatter_(1, idx[:, :k], -math.inf)  # each atom once
        idx[:, k] = corr.argmax(1)
        sel = idx[:, : k + 1]  # (n, k+1)
        gram = aa[sel.unsqueeze(2), sel.unsqueeze(1)] + 1e-9 * torch.eye(k + 1, dtype=torch.float64)
        rhs = ta[rows, sel]  # (n, k+1)
        coef = torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)  # least squares on the atoms taken
        share = (coef * rhs).sum(-1)  # ||P t||^2 = c . (A_k t) for the least-squares fit of a unit t
        shares.append(share)
        oks.append((share >= min_share) & (coef > 0).all(-1))
        corr = ta.clone()  # <t - A_k^T c, a_j> for every atom j
        for i in range(k + 1):
            corr -= coef[:, i : i + 1] * aa[sel[:, i]]
    ok, share = torch.stack(oks, 1), torch.stack(shares, 1)  # (n, K)
    explained = ok.any(1)
    first = torch.where(explained, ok.long().argmax(1), K - 1)  # the accepted prefix (or the whole path)
    keep = torch.arange(K).unsqueeze(0) <= first.unsqueeze(1)
    out = torch.full((n, max_atoms), -1, dtype=torch.long)
    out[:, :K] = torch.where(keep & explained.unsqueeze(1), idx, -1)
    return Explanation(out, share.gather(1, first.unsqueeze(1)).squeeze(1).float(), explained)


class FeatureGroups(NamedTuple):
    """The groups found among the member latents of a stack of seeds, one row per member."""

    seed: Tensor
    """`(N,)` seed of each member latent."""
    latent: Tensor
    """`(N,)` its index in that seed."""
    group: Tensor
    """`(N,)` its group (0 = the largest), or -1 when in none."""
    n_groups: int


@single_threaded
def find_groups(directions: Tensor, members: Tensor, cfg: GroupConfig | None = None) -> FeatureGroups:
    """Group the member latents (e.g. the unstable ones) of all seeds by cross-seed explanations (module docstring).

    Args:
        directions: `(S, d_sae, d)` decoder directions.
        members: `(S, d_sae)` bool, the latents to group.
    """
    cfg = cfg or GroupConfig()
    if directions.shape[:2] != members.shape:
        raise ValueError(f"members shape {tuple(members.shape)} must match directions {tuple(directions.shape[:2])}")
    S = len(directions)
    latents = [torch.nonzero(members[s].cpu()).flatten() for s in range(S)]
    sets = [directions[s].detach().cpu()[latents[s]] for s in range(S)]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in sets])])
    N = int(offsets[-1])
    src, dst = [], []
    for s, t in itertools.permutations(range(S), 2):
        ex = explain(sets[s], sets[t], cfg.max_atoms, cfg.min_share)
        i, k = torch.nonzero(ex.atoms >= 0, as_tuple=True)
        src.append(offsets[s] + i.numpy())
        dst.append(offsets[t] + ex.atoms[i, k].numpy())
    src, dst = (np.concatenate(x) if x else np.zeros(0, dtype=int) for x in (src, dst))
    graph = sps.coo_matrix((np.ones(len(src)), (src, dst)), shape=(N, N)).tocsr()
    graph.data[:] = 1.0  # (a feature explained twice by the same atom counts once)
    if cfg.mutual:
        graph = graph.multiply(graph.T)  # i -> j and j -> i
    _, comp = connected_components(graph, directed=False)
    seed = np.concatenate([np.full(len(x), s) for s, x in enumerate(sets)]) if N else np.zeros(0, dtype=int)
    df = pd.DataFrame({"comp": comp, "seed": seed})
    stats = df.groupby("comp").agg(n_seeds=("seed", "nunique"), size=("seed", "size"))
    kept = stats.loc[stats["n_seeds"] >= cfg.min_seeds].sort_values("size", ascending=False, kind="stable")
    relabel = {c: g for g, c in enumerate(kept.index)}
    group = np.array([relabel.get(c, -1) for c in comp], dtype=np.int64)
    return FeatureGroups(
        torch.from_numpy(seed).long(),
        torch.cat(latents) if N else torch.zeros(0, dtype=torch.long),
        torch.from_numpy(group),
        len(kept),
    )


def group_members(directions: Tensor, groups: FeatureGroups, g: int) -> list[Tensor]:
    """Per seed, the unit decoder rows `(n_s, d)` of group `g`'s members (empty where the seed has none)."""
    if not 0 <= g < groups.n_groups:
        raise ValueError(f"g={g} must lie in [0, {groups.n_groups})")
    inside = groups.group == g
    d = directions.detach().cpu()
    return [unit_rows(d[s][groups.latent[inside & (groups.seed == s)]].float()) for s in range(len(d))]


@single_threaded
def group_table(directions: Tensor, groups: FeatureGroups, cov: Tensor, cfg: GroupConfig | None = None) -> pd.DataFrame:
    """One row per group, means over the ordered pairs of seeds present in it.

    Columns: `group`, `n_features`, `n_seeds`, `features_per_seed`, `rank_seed` (mean energy rank of a seed's
    members), `rank_pooled` (of all members together; equal to `rank_seed` when the seeds span the same subspace),
    `overlap` and `mean_angle_deg` / `max_angle_deg` between two seeds' spans, the same for random subspaces of the
    same ranks (`*_random`) and for spans of as many directions drawn from N(0, cov) (`*_covariance`), `max_cos`
    (a member's cosine to its best single match among the other seed's members), `cos_to_span` (its cosine to the
    whole span of the other seed's members, never below `max_cos`) and `cos_to_span_covariance` (that of
    covariance-drawn directions).
    """
    cfg = cfg or GroupConfig()
    gen, d = torch.Generator().manual_seed(cfg.seed), directions.shape[-1]
    pool = unit_rows(torch.randn(4096, d, generator=gen, dtype=torch.float64) @ covariance_root(cov).T).float()
    baselines: dict[tuple[int, int, int, int], dict[str, float]] = {}  # by (n_a, n_b, r_a, r_b): drawn once
    rows = []
    for g in range(groups.n_groups):
        members = group_members(directions, groups, g)
        present = [s for s, m in enumerate(members) if len(m)]
        bases = {s: span_basis(members[s], energy=cfg.energy) for s in present}
        full = {s: span_basis(members[s], energy=1.0) for s in present}  # the whole span, for cos_to_span
        pair = []
        for a, b in itertools.permutations(present, 2):
            shape = (len(members[a]), len(members[b]), len(bases[a]), len(bases[b]))
            if shape not in baselines:
                baselines[shape] = _pair_baseline(*shape, pool, gen, cfg.n_draws)
            ang = torch.rad2deg(principal_angles(bases[a], bases[b]))
            draw = pool[torch.randint(len(pool), (cfg.n_draws * shape[1],), generator=gen)]
            pair.append(
                baselines[shape]
                | {
                    "overlap": subspace_overlap(bases[a], bases[b]),
                    "mean_angle_deg": float(ang.mean()),
                    "max_angle_deg": float(ang.max()),
                    "max_cos": float((members[b] @ members[a].T).amax(1).mean()),
                    "cos_to_span": float(projection_share(members[b], full[a]).sqrt().mean()),
                    "cos_to_span_covariance": float(projection_share(draw, full[a]).sqrt().mean()),
                }
            )
        n = [len(members[s]) for s in present]
        rows.append(
            {
                "group": g,
                "n_features": sum(n),
                "n_seeds": len(present),
                "features_per_seed": float(np.mean(n)),
                "rank_seed": float(np.mean([len(bases[s]) for s in present])),
                "rank_pooled": rank_stats(torch.cat([members[s] for s in present]), cfg.energy).energy_rank,
            }
            | pd.DataFrame(pair).mean().to_dict()
        )
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)


GROUP_COLUMNS = [
    "group",
    "n_features",
    "n_seeds",
    "features_per_seed",
    "rank_seed",
    "rank_pooled",
    "overlap",
    "overlap_random",
    "overlap_covariance",
    "mean_angle_deg",
    "mean_angle_random",
    "mean_angle_covariance",
    "max_angle_deg",
    "max_angle_random",
    "max_angle_covariance",
    "max_cos",
    "cos_to_span",
    "cos_to_span_covariance",
]
"""The columns of `group_table` (present even when there is no group)."""


def _pair_baseline(na: int, nb: int, ra: int, rb: int, pool: Tensor, gen: torch.Generator, n_draws: int):
    """Overlap and angles of random subspaces of ranks (ra, rb), and of the rank-(ra, rb) spans of na and nb
    covariance-drawn directions (rows of `pool`), averaged over `n_draws`."""
    d, out = pool.shape[1], {}
    for name in ("random", "covariance"):
        stats = []
        for _ in range(n_draws):
            if name == "random":
                x, y = random_subspace(d, ra, gen), random_subspace(d, rb, gen)
            else:
                z = pool[torch.randperm(len(pool), generator=gen)[: na + nb]]
                x, y = span_basis(z[:na], rank=ra), span_basis(z[na:], rank=rb)
            ang = torch.rad2deg(principal_angles(x, y))
            stats.append((subspace_overlap(x, y), float(ang.mean()), float(ang.max())))
        m = np.mean(stats, axis=0)
        out |= {f"overlap_{name}": m[0], f"mean_angle_{name}": m[1], f"max_angle_{name}": m[2]}
    return out


def example_group(table: pd.DataFrame, max_per_seed: float = 6) -> int:
    """The group that shows basis ambiguity best: two to `max_per_seed` features and rank at least 2 per seed, the
    largest gap between a feature's cosine to the other seed's span and to its best single match (without a group
    that small, any with rank 2; the largest group if none qualifies)."""
    if table.empty:
        raise ValueError("table has no groups")
    ok = table.loc[(table["features_per_seed"] >= 2) & (table["rank_seed"] >= 2)]
    if (ok["features_per_seed"] <= max_per_seed).any():
        ok = ok.loc[ok["features_per_seed"] <= max_per_seed]
    if ok.empty:
        return int(table.sort_values("n_features", ascending=False)["group"].iloc[0])
    return int(ok.assign(gap=ok["cos_to_span"] - ok["max_cos"]).sort_values("gap", ascending=False)["group"].iloc[0])


def summarize_groups(table: pd.DataFrame, group: Tensor | np.ndarray) -> dict[str, float]:
    """Headline numbers: how many groups, the share of member latents inside one (`group`: each member's group, -1
    for none, as in `FeatureGroups.group`), and the means of `group_table`'s columns."""
    group = np.asarray(group)
    out = {"n_groups": float(len(table)), "grouped_share": float((group >= 0).mean()) if len(group) else math.nan}
    cols = [
        "features_per_seed",
        "rank_seed",
        "rank_pooled",
        "overlap",
        "overlap_random",
        "overlap_covariance",
        "mean_angle_deg",
        "mean_angle_random",
        "mean_angle_covariance",
        "max_cos",
        "cos_to_span",
        "cos_to_span_covariance",
    ]
    for c in cols:
        out[f"group_{c}"] = float(cast(float, table[c].mean())) if c in table and len(table) else math.nan
    return out
