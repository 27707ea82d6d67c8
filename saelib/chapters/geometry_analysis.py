"""Chapter 3's analysis of one stack of seeds (`saelib.chapters.geometry`): how two seeds' sets of directions are
compared, every table of a stack (cached) and the tables the chapter shows.

- `analyze_geometry` takes each seed's unstable latents and measures (1) the effective rank of their decoder
  directions, (2) how well one seed's unstable span matches another's (principal angles and overlap, at each seed's
  90%-energy rank and at fixed ranks far below `d`), (3) how much of one seed's features lies inside another seed's
  unstable span, and how much each span aligns with the activations' top principal components. Every number has
  nulls of the same size and rank: random alive latents of the same seed (`subset`), directions drawn from the
  activation covariance (`covariance`) and isotropic directions (`random`), beside the stable set.
  `summarize_geometry` reduces its tables to headline numbers.
- `stack_tables` adds the feature groups of `saelib.groups` and caches everything for one stack of seeds;
  `stack_summary` reduces it to one row.
- `rank_table`, `overlap_table`, `angle_table`, `coverage_table`: the reference point's tables the chapter shows;
  `example_members`: the group it draws.

`saelib.chapters.geometry` re-exports every name here and assembles them over the grid (`run`).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import pandas as pd
import torch
from torch import Tensor

from saelib.cache import cached_result
from saelib.groups import (
    FeatureGroups,
    GroupConfig,
    example_group,
    find_groups,
    group_members,
    group_table,
    summarize_groups,
)
from saelib.subspace import (
    covariance_root,
    ordered_basis,
    single_threaded,
    span_basis,
    spectrum_rank_stats,
    subspace_overlap,
    unit_rows,
)

VERSION = 2
"""Bumped when `stack_tables`' computation or stored format changes (it is in its cache key). 2: the tables of a
stack are kept by `cache.cached_result` (one `result.pt`) instead of one parquet file per table."""


# --- How two seeds' sets of directions are compared ---------------------------------------------------------------


@dataclass(frozen=True)
class GeometryConfig:
    """How chapter 3 compares the spans of feature sets across seeds."""

    energy: float = 0.9
    """Share of squared singular values a set's span keeps (book/methods.md, chapter 3)."""
    rank_fractions: tuple[float, ...] = (1 / 80, 1 / 40, 1 / 20, 1 / 10, 1 / 5)
    """Fixed ranks, as fractions of `d_in`, at which each set's top principal directions are also compared (8 to 128
    at width 640): far below `d_in`, where an overlap cannot be high just because the span fills the space."""
    n_draws: int = 2
    """Independent draws of every random baseline (each draw gives every seed its own null set; at these sizes the
    baselines barely vary between draws)."""
    seed: int = 0
    """Seed of the baselines' generator."""

    def __post_init__(self) -> None:
        if not 0 < self.energy <= 1:
            raise ValueError(f"GeometryConfig.energy={self.energy} must lie in (0, 1]")
        if not self.rank_fractions or not all(0 < f <= 1 for f in self.rank_fractions):
            raise ValueError(f"GeometryConfig.rank_fractions={self.rank_fractions} must be non-empty, in (0, 1]")
        if self.n_draws < 1:
            raise ValueError(f"GeometryConfig.n_draws={self.n_draws} must be >= 1")

    def ranks(self, d: int) -> list[int]:
        """The fixed ranks at width `d`."""
        return sorted({max(1, round(f * d)) for f in self.rank_fractions})


SOURCES = ("unstable", "stable", "subset", "covariance", "random")
"""Direction sets of `analyze_geometry`: the two observed sets, then the nulls (random alive features of the same
seed, directions drawn from N(0, cov), isotropic directions), each of the unstable set's size in every seed."""


def split_sets(directions: Tensor, label: Tensor) -> dict[str, list[Tensor]]:
    """Per seed, the unit decoder rows of the `unstable`, `stable` and `alive` latents.

    Args:
        directions: `(S, d_sae, d)` decoder directions.
        label: `(S, d_sae)` codes of `saelib.stability` (`UNSTABLE`, `STABLE`, `DEAD`, ...).
    """
    from saelib.stability import DEAD, STABLE, UNSTABLE

    if directions.shape[:2] != label.shape:
        raise ValueError(f"label shape {tuple(label.shape)} must match directions {tuple(directions.shape[:2])}")
    d = unit_rows(directions.detach().float().cpu())
    label = label.cpu()
    return {
        name: [d[s][label[s] == c] if c != DEAD else d[s][label[s] != DEAD] for s in range(len(d))]
        for name, c in (("unstable", UNSTABLE), ("stable", STABLE), ("alive", DEAD))
    }


def null_sets(sizes: Sequence[int], alive: Sequence[Tensor], root: Tensor, generator: torch.Generator):
    """One draw of the null direction sets, `sizes[s]` unit rows for seed s: `subset` (random alive latents of that
    seed), `covariance` (N(0, cov) with `cov = root @ root.T`) and `random` (isotropic)."""
    d = root.shape[0]
    out = {"subset": [], "covariance": [], "random": []}
    for n, pool in zip(sizes, alive, strict=True):
        out["subset"].append(pool[torch.randperm(len(pool), generator=generator)[: min(n, len(pool))]])
        draws = torch.randn(n, d, generator=generator, dtype=torch.float64)
        out["covariance"].append(unit_rows(draws @ root.T).float())
        out["random"].append(unit_rows(torch.randn(n, d, generator=generator)))
    return out


class Geometry(NamedTuple):
    """`analyze_geometry`'s tables (one stack of seeds)."""

    ranks: pd.DataFrame
    """Item 1, one row per (source, draw, seed): `n`, `participation_ratio`, `energy_rank`, and both over `d`."""
    spans: pd.DataFrame
    """Item 2, one row per (source, draw, seed pair, rank spec): `rank_a`, `rank_b`, `overlap`, `mean_angle_deg`,
    `median_angle_deg`, `expected_random` (`max(r_a, r_b) / d`). Spec `energy` uses each seed's 90%-energy rank of
    its unstable set for every source (rank-matched), `top-r` the fixed rank r."""
    coverage: pd.DataFrame
    """Item 3, one row per (source, draw, ordered seed pair, rank spec): `mean_share` and `median_share` of the
    source's directions of seed b inside seed a's unstable span of rank `rank_a`, and `expected_random` (`rank_a/d`)."""
    angles: pd.DataFrame
    """For seeds 0 and 1 and the first draw: every principal angle (`k`, `angle_deg`) per source and rank spec."""
    shares: pd.DataFrame
    """For seeds 0 (span) and 1 (directions), spec `energy`, first draw: each direction's `share`, per source."""
    alignment: pd.DataFrame
    """One row per (source, draw, seed, rank spec): `overlap` of the set's span with the top principal components
    of the activations at the same rank (is the span just where the data has most variance?), `expected_random`."""


@single_threaded
def analyze_geometry(directions: Tensor, label: Tensor, cov: Tensor, cfg: GeometryConfig | None = None) -> Geometry:
    """Effective ranks, cross-seed span comparisons and coverage of the unstable set of a stack, with baselines.

    Args:
        directions: `(S, d_sae, d)` decoder directions of the seeds.
        label: `(S, d_sae)` stability labels (`saelib.stability` codes).
        cov: `(d, d)` activation covariance, for the `covariance` null.
    """
    cfg = cfg or GeometryConfig()
    sets = split_sets(directions, label)
    S, d = len(sets["unstable"]), directions.shape[-1]
    sizes = [len(u) for u in sets["unstable"]]
    spectra_u = [ordered_basis(u) for u in sets["unstable"]]
    energy_ranks = [spectrum_rank_stats(s2, cfg.energy).energy_rank for s2, _ in spectra_u]
    bases_u = [vh for _, vh in spectra_u]
    specs = {"energy": energy_ranks} | {f"top-{r}": [r] * S for r in cfg.ranks(d)}
    gen, root = torch.Generator().manual_seed(cfg.seed), covariance_root(cov)
    pcs = torch.linalg.eigh(cov.double()).eigenvectors.flip(1).T  # (d, d) principal components, by variance
    draws = [(0, {k: sets[k] for k in ("unstable", "stable")})]
    draws += [(i, null_sets(sizes, sets["alive"], root, gen)) for i in range(cfg.n_draws)]
    rank_rows, span_rows, cover_rows, angle_rows, share_rows, align_rows = [], [], [], [], [], []
    for draw, group in draws:
        for source, vecs in group.items():
            spectra = spectra_u if vecs is sets["unstable"] else [ordered_basis(v) for v in vecs]  # serves every rank
            for s, (s2, vh) in enumerate(spectra):
                st = spectrum_rank_stats(s2, cfg.energy)._replace(n=len(vecs[s]))
                rank_rows.append(
                    {"source": source, "draw": draw, "seed": s}
                    | st._asdict()
                    | {"pr_over_d": st.participation_ratio / d, "rank_over_d": st.energy_rank / d}
                )
                for sp, r in specs.items():
                    if 1 <= r[s] <= len(vh):
                        align_rows.append(
                            {
                                "source": source,
                                "draw": draw,
                                "seed": s,
                                "spec": sp,
                                "rank": r[s],
                                "overlap": subspace_overlap(vh[: r[s]], pcs[: r[s]]),
                                "expected_random": r[s] / d,
                            }
                        )
            for a, b in itertools.permutations(range(S), 2):
                key = {"source": source, "draw": draw, "seed_a": a, "seed_b": b}
                ok = {sp: r for sp, r in specs.items() if 1 <= r[a] <= len(bases_u[a])}
                if ok and len(vecs[b]):  # coverage: shares at every rank from one product
                    top = max(r[a] for r in ok.values())
                    cum = (unit_rows(vecs[b].double()) @ bases_u[a][:top].double().T).pow(2).cumsum(1)  # (n_b, top)
                    if (a, b, draw) == (0, 1, 0) and "energy" in ok:
                        share = cum[:, ok["energy"][a] - 1]
                        share_rows += [{"source": source, "share": float(x)} for x in share]
                    for sp, r in ok.items():
                        share = cum[:, r[a] - 1]
                        cover_rows.append(
                            key
                            | {
                                "spec": sp,
                                "rank_a": r[a],
                                "n_b": len(vecs[b]),
                                "mean_share": float(share.mean()),
                                "median_share": float(share.median()),
                                "expected_random": r[a] / d,
                            }
                        )
                ba, bb = spectra[a][1], spectra[b][1]
                ok = {sp: r for sp, r in specs.items() if 1 <= r[a] <= len(ba) and 1 <= r[b] <= len(bb)}
                if a > b or not ok:
                    continue
                m = ba[: max(r[a] for r in ok.values())].double() @ bb[: max(r[b] for r in ok.values())].double().T
                for sp, r in ok.items():  # principal angles at every rank from one product
                    cos = torch.linalg.svdvals(m[: r[a], : r[b]]).clamp(0, 1)
                    ang = torch.rad2deg(torch.arccos(cos))  # ascending, as the cosines descend
                    if (a, b, draw) == (0, 1, 0):
                        angle_rows += [
                            {"source": source, "spec": sp, "k": k, "angle_deg": float(x)} for k, x in enumerate(ang)
                        ]
                    span_rows.append(
                        key
                        | {
                            "spec": sp,
                            "rank_a": r[a],
                            "rank_b": r[b],
                            "overlap": float(cos.pow(2).sum() / min(r[a], r[b])),
                            "mean_angle_deg": float(ang.mean()),
                            "median_angle_deg": float(ang.median()),
                            "expected_random": max(r[a], r[b]) / d,
                        }
                    )
    frames = (rank_rows, span_rows, cover_rows, angle_rows, share_rows, align_rows)
    return Geometry(*(pd.DataFrame(rows) for rows in frames))


def excess(observed: float, baseline: float) -> float:
    """`(observed - baseline) / (1 - baseline)`: 0 at the baseline, 1 for identical subspaces (NaN if baseline = 1)."""
    return (observed - baseline) / (1 - baseline) if baseline < 1 else math.nan


def summarize_geometry(geo: Geometry, d: int, spec: str = "top-32") -> dict[str, float]:
    """Headline numbers of one `Geometry` (means over seeds, pairs and draws): ranks over `d`, overlap at the energy
    rank and at the fixed rank `spec`, coverage at the energy rank and overlap with the top principal components at
    rank `spec` (`pca_fixed_*`), per source; `excess_*` against the covariance null. Every key is present, NaN
    where a set is empty."""
    out: dict[str, float] = {
        f"{m}_{s}": math.nan
        for s in SOURCES
        for m in (
            "n",
            "pr_over_d",
            "rank_over_d",
            "overlap_energy",
            "angle_energy",
            "overlap_fixed",
            "angle_fixed",
            "coverage",
            "pca_fixed",
        )
    }
    out |= {k: math.nan for k in ("excess_energy", "excess_fixed", "excess_coverage")}
    rk = geo.ranks.groupby("source")[["n", "pr_over_d", "rank_over_d"]].mean()
    for source, row in rk.iterrows():
        out |= {
            f"n_{source}": row["n"],
            f"pr_over_d_{source}": row["pr_over_d"],
            f"rank_over_d_{source}": row["rank_over_d"],
        }
    for sp, tag in (("energy", "energy"), (spec, "fixed")):
        ov = geo.spans[geo.spans.spec == sp].groupby("source")[["overlap", "mean_angle_deg"]].mean()
        for source, row in ov.iterrows():
            out |= {f"overlap_{tag}_{source}": row["overlap"], f"angle_{tag}_{source}": row["mean_angle_deg"]}
        if {"unstable", "covariance"} <= set(ov.index):
            out[f"excess_{tag}"] = excess(ov.loc["unstable", "overlap"], ov.loc["covariance", "overlap"])
    al = geo.alignment[geo.alignment.spec == spec].groupby("source")["overlap"].mean()
    out |= {f"pca_fixed_{source}": v for source, v in al.items()}
    cov_ = geo.coverage[geo.coverage.spec == "energy"].groupby("source")["mean_share"].mean()
    out |= {f"coverage_{source}": v for source, v in cov_.items()}
    if {"unstable", "covariance"} <= set(cov_.index):
        out["excess_coverage"] = excess(cov_["unstable"], cov_["covariance"])
    return {k: float(v) for k, v in out.items()}


# --- One stack of seeds: every table, cached ----------------------------------------------------------------------


@single_threaded
def _stack_tables(
    directions: Tensor, label: Tensor, cov: Tensor, geo_cfg: GeometryConfig, group_cfg: GroupConfig
) -> dict[str, pd.DataFrame]:
    from saelib.stability import UNSTABLE

    out = analyze_geometry(directions, label, cov, geo_cfg)._asdict()
    fg = find_groups(directions, label == UNSTABLE, group_cfg)
    out["groups"] = group_table(directions, fg, cov, group_cfg)
    out["members"] = pd.DataFrame({"seed": fg.seed.numpy(), "latent": fg.latent.numpy(), "group": fg.group.numpy()})
    ev = torch.linalg.eigvalsh(cov.double()).flip(0).clamp_min(0)
    out["activations"] = pd.DataFrame(
        [
            {
                "d": len(ev),
                "participation_ratio": float(ev.sum() ** 2 / ev.pow(2).sum()),
                "top1_share": float(ev[0] / ev.sum()),
                "top10_share": float(ev[:10].sum() / ev.sum()),
            }
        ]
    )
    return out


def stack_tables(
    directions: Tensor,
    label: Tensor,
    cov: Tensor,
    geo_cfg: GeometryConfig | None = None,
    group_cfg: GroupConfig | None = None,
    *,
    name: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Chapter 3's tables for one stack of seeds, cached under `geometry/<name>-<hash>` when `name` is given (the
    hash covers the inputs' bytes, both configs and `VERSION`).

    Args:
        directions: `(S, d_sae, d)` decoder directions.
        label: `(S, d_sae)` stability labels (`saelib.stability` codes).
        cov: `(d, d)` activation covariance.
        geo_cfg, group_cfg: how spans are compared and groups found (defaults when None).
        name: the artifact's name (e.g. the grid point's `GridEntry.name`); None computes without caching.

    Returns:
        `analyze_geometry`'s tables (`ranks`, `spans`, `coverage`, `angles`, `shares`, `alignment`), `groups`
        (`group_table` of the unstable latents), `members` (`seed`, `latent`, `group` of every unstable latent) and
        `activations` (one row: `d`, the covariance's participation ratio and the variance share of its top 1 and
        10 directions).
    """
    geo_cfg, group_cfg = geo_cfg or GeometryConfig(), group_cfg or GroupConfig()
    directions, label, cov = directions.detach().float().cpu(), label.cpu(), cov.cpu()
    compute = partial(_stack_tables, directions, label, cov, geo_cfg, group_cfg)
    if name is None:
        return compute()
    digest = hashlib.sha256()
    for t in (directions, label, cov):
        digest.update(t.contiguous().numpy().tobytes())
    key = {"inputs": digest.hexdigest(), "geometry": geo_cfg, "groups": group_cfg, "version": VERSION}
    return cached_result("geometry", name, key, compute)


def fixed_spec(tables: dict[str, pd.DataFrame], fraction: float = 1 / 20) -> str:
    """The fixed-rank spec (`top-r`) of `stack_tables` whose rank is nearest `fraction * d`."""
    d = int(tables["activations"].d.iloc[0])
    ranks = sorted({int(sp[4:]) for sp in tables["spans"].spec.unique() if sp.startswith("top-")})
    if not ranks:
        raise ValueError("tables hold no fixed-rank comparison")
    return f"top-{min(ranks, key=lambda r: abs(r - fraction * d))}"


def stack_summary(tables: dict[str, pd.DataFrame], spec: str | None = None) -> dict[str, float]:
    """One row of headline numbers from `stack_tables`: `summarize_geometry` (at fixed rank `spec`, by default
    `fixed_spec`), `summarize_groups`, and the covariance's participation ratio over d."""
    geo = Geometry(**{k: tables[k] for k in Geometry._fields})
    act = tables["activations"].iloc[0]
    spec = spec or fixed_spec(tables)
    return (
        summarize_geometry(geo, int(act.d), spec)
        | summarize_groups(tables["groups"], tables["members"].group)
        | {"pr_over_d_activations": float(act.participation_ratio / act.d)}
    )


class GroupExample(NamedTuple):
    """One group drawn across a few seeds (`example_members`)."""

    group: int
    """Its index, -1 when the stack has no group."""
    seeds: list[int]
    """The seeds shown."""
    members: list[Tensor]
    """Per seed shown, its unit member rows `(n_s, d)`."""
    basis: Tensor
    """`(2, d)`: the top two principal directions of all members shown (zeros when there is no group)."""


def example_members(directions: Tensor, tables: dict[str, pd.DataFrame], max_seeds: int = 3) -> GroupExample:
    """`example_group` of a `stack_tables` result, with its members in the `max_seeds` seeds that hold most of them.

    Args:
        directions: `(S, d_sae, d)` decoder directions of the stack the tables were computed on.
    """
    d = directions.shape[-1]
    if tables["groups"].empty:
        return GroupExample(-1, [], [], torch.zeros(2, d))
    g = example_group(tables["groups"])
    m = tables["members"]
    fg = FeatureGroups(
        torch.tensor(m.seed.to_numpy()),
        torch.tensor(m.latent.to_numpy()),
        torch.tensor(m.group.to_numpy()),
        len(tables["groups"]),
    )
    members = group_members(directions, fg, g)
    seeds = sorted(sorted(range(len(members)), key=lambda s: -len(members[s]))[:max_seeds])
    seeds = [s for s in seeds if len(members[s])]
    shown = [members[s] for s in seeds]
    return GroupExample(g, seeds, shown, span_basis(torch.cat(shown), rank=min(2, sum(len(x) for x in shown))))


# --- The tables the chapter shows (one stack) -----------------------------------------------------------------------


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    """`df` (index: spec, columns: source) with its sources in `SOURCES` order and its specs as `energy`, then the
    fixed ranks ascending."""
    cols = [s for s in SOURCES if s in df.columns.get_level_values(-1)]
    df = df.reindex(columns=cols, level=-1) if df.columns.nlevels > 1 else df.reindex(columns=cols)
    specs = sorted(df.index, key=lambda sp: (sp != "energy", int(sp[4:]) if sp.startswith("top-") else 0))
    return df.reindex(specs)


def rank_table(ranks: pd.DataFrame) -> pd.DataFrame:
    """Table 1: per direction set (rows, `SOURCES` order), the means over seeds and draws of `n`,
    `participation_ratio`, `pr_over_d`, `energy_rank`, `rank_over_d` (`Geometry.ranks`)."""
    cols = ["n", "participation_ratio", "pr_over_d", "energy_rank", "rank_over_d"]
    out = ranks.groupby("source")[cols].mean()
    return out.reindex([s for s in SOURCES if s in out.index])


def overlap_table(spans: pd.DataFrame) -> pd.DataFrame:
    """Table 2: mean overlap between two seeds' spans, one row per rank spec (`energy`, then `top-r`), one column
    per direction set, and `expected random` (`max(r_A, r_B) / d` of the unstable spans)."""
    out = _ordered(spans.pivot_table(index="spec", columns="source", values="overlap", aggfunc="mean"))
    out["expected random"] = spans[spans.source == "unstable"].groupby("spec").expected_random.mean()
    return out


def angle_table(spans: pd.DataFrame, alignment: pd.DataFrame) -> pd.DataFrame:
    """Table 3: per rank spec, the mean principal angle (degrees, rounded to 0.1) between two seeds' spans of each
    direction set, and each set's span's mean overlap with the activations' top principal components of the same
    rank (`overlap with top PCs`)."""
    angles = spans.groupby(["spec", "source"])[["mean_angle_deg"]].mean().unstack("source").round(1)
    pcs = alignment.groupby(["spec", "source"])[["overlap"]].mean().unstack("source")
    return pd.concat([_ordered(angles), _ordered(pcs.rename(columns={"overlap": "overlap with top PCs"}))], axis=1)


def coverage_table(coverage: pd.DataFrame) -> pd.DataFrame:
    """Table 4: mean share of a direction of seed B inside seed A's unstable span, over ordered seed pairs and
    draws, one row per rank spec of A's span, one column per direction set of B."""
    return _ordered(coverage.pivot_table(index="spec", columns="source", values="mean_share", aggfunc="mean"))


POINT_COLUMNS = [
    "layer",
    "variant",
    "d_sae",
    "n_unstable",
    "rank_over_d_unstable",
    "rank_over_d_subset",
    "overlap_fixed_unstable",
    "overlap_fixed_subset",
    "overlap_fixed_covariance",
    "overlap_energy_unstable",
    "overlap_energy_covariance",
    "coverage_unstable",
    "coverage_covariance",
    "n_groups",
    "grouped_share",
]
"""The columns of `GeometryResult.points` that Table 6 shows."""
