"""Chapter 3: unstable features are individually non-reproducible but span reproducible subspaces (claim 3 of
{cite}`gerasimov2026unstable`; the measures and nulls are ours, book/methods.md, chapter 3).

The chapter's contract (`saelib.chapters.common`): `study(scale, device)` -> `GeometryStudy`, `run(study)` ->
`GeometryResult` (the tables of every grid point cached through `cache.cached_result`), `summary(result)` (the
numbers the prose glues) and `claims(summary)` (the chapter's verdicts).

The pieces `run` assembles:
- `analyze_geometry` takes each seed's unstable latents and measures (1) the effective rank of their decoder
  directions, (2) how well one seed's unstable span matches another's (principal angles and overlap, at each seed's
  90%-energy rank and at fixed ranks far below `d`), (3) how much of one seed's features lies inside another seed's
  unstable span, and how much each span aligns with the activations' top principal components. Every number has
  nulls of the same size and rank: random alive latents of the same seed (`subset`), directions drawn from the
  activation covariance (`covariance`) and isotropic directions (`random`), beside the stable set.
- `stack_tables` adds the feature groups of `saelib.groups` and caches everything for one stack of seeds;
  `stack_summary` reduces it to one row (one per grid point in `GeometryResult.points`).
- `rank_table`, `overlap_table`, `angle_table`, `coverage_table`: the reference point's tables the chapter shows;
  `example_members`: the group it draws.
- The paper's own transfer and stability-prediction analyses of the reference SAEs live in
  `saelib.chapters.geometry_paper` (`run` caches them, `summary` and `claims` include theirs).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saelib.cache import cached_result
from saelib.chapters import geometry_paper, grid
from saelib.chapters.common import NOT_REPORTED, Claim, claim, preset
from saelib.chapters.grid import FeatureSplit, GridEntry, GridStudy
from saelib.config import check_fraction
from saelib.groups import (
    FeatureGroups,
    GroupConfig,
    example_group,
    find_groups,
    group_members,
    group_table,
    summarize_groups,
)
from saelib.lm.store import load_covariance
from saelib.subspace import (
    covariance_root,
    group_effective_rank,
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


# --- The study ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeometryStudy:
    """The SAEs studied (chapter 1's grid, its reference point in depth) and how their spans are compared
    (book/methods.md, chapter 3)."""

    grid: GridStudy
    """Chapter 1's grid: the unstable set of every point is analysed, that of its `reference` point in depth."""
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    """Energy share, fixed ranks and null draws of `analyze_geometry`."""
    groups: GroupConfig = field(default_factory=GroupConfig)
    """How groups of unstable features are found and scored. The presets set `min_share` to tau^2 of the grid's
    threshold: a cosine of tau to a span, the stability test applied to a span instead of a single feature."""
    fixed_fraction: float = 1 / 20
    """The headline fixed rank is the rank of `geometry.ranks(d)` nearest this fraction of `d` (`fixed_spec`); the
    headline rank of the paper's transfer is the one evaluated nearest it too."""
    paper: geometry_paper.PaperConfig = field(default_factory=geometry_paper.PaperConfig)
    """The paper's own analyses of the reference SAEs: top-subspace transfer and predicting stability from one seed
    (`saelib.chapters.geometry_paper`)."""

    def __post_init__(self) -> None:
        check_fraction("GeometryStudy", lo_open=True, fixed_fraction=self.fixed_fraction)


def study(scale: str = "default", device: str = "auto", **overrides) -> GeometryStudy:
    """The chapter at a named scale (`smoke`, `default`, `gpu`, `paper`): the grid's study at that scale plus how its
    spans are compared; `overrides` replace fields (None keeps the scale's value)."""
    return preset(_preset, scale, device, **overrides)


def _preset(scale: str, device: str) -> GeometryStudy:
    g = grid.study(scale, device)
    # tau^2 as computed (0.7**2 = 0.48999999999999994, not 0.49): it is hashed into the cache keys of the tables
    return GeometryStudy(g, GeometryConfig(), GroupConfig(min_share=g.stability.threshold**2))


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


# --- Run ------------------------------------------------------------------------------------------------------------


class GeometryResult(NamedTuple):
    """Everything chapter 3 shows (`run`)."""

    study: GeometryStudy
    """The study computed."""
    reference: GridEntry
    """The grid point studied in depth."""
    split: FeatureSplit
    """The stable / unstable split of its reference SAEs (`grid.reference_study`)."""
    tables: dict[GridEntry, dict[str, pd.DataFrame]]
    """`stack_tables` of every grid point (at the grid's budget)."""
    spec: str
    """The headline fixed-rank spec (`top-r`): `fixed_spec` of the reference point at `study.fixed_fraction`."""
    points: pd.DataFrame
    """One row per grid point: `layer`, `variant`, `d_sae` and its `stack_summary` at `spec`."""
    ranks: pd.DataFrame
    """`rank_table` of the reference point."""
    overlaps: pd.DataFrame
    """`overlap_table` of the reference point."""
    angles: pd.DataFrame
    """`angle_table` of the reference point."""
    coverage: pd.DataFrame
    """`coverage_table` of the reference point."""
    groups: pd.DataFrame
    """`group_table` of the reference point's unstable latents, largest group first."""
    example: GroupExample
    """`example_members` of the reference point."""
    covariance: pd.DataFrame
    """One row on the reference layer's activation covariance: `d`, `participation_ratio`, `top1_share`,
    `top10_share` and `n_tokens` (tokens it was estimated from)."""
    reference_tables: dict[str, pd.DataFrame]
    """`stack_tables` of the reference SAEs (the reference point trained in depth, `grid.reference_study`)."""
    effective_rank: pd.DataFrame
    """The paper's normalised effective rank (ER/d) of each seed's unstable and stable decoder sub-matrices beside
    size-matched random alive latents (`effective_rank_table`)."""
    paper: geometry_paper.PaperResult
    """The paper's top-subspace transfer and stability prediction on the reference SAEs (`geometry_paper`)."""


def run(study: GeometryStudy, *, progress: bool = False) -> GeometryResult:
    """Chapter 3: `stack_tables` of every grid point (each cached; the grid's SAEs, splits and the covariance of
    each layer come from chapter 1's cache, computed there first when missing), then `assemble_result`."""
    g = study.grid
    _, splits, _ = grid.run_grid(g, progress=progress)
    covariances = {layer: load_covariance(grid.load_store(g, layer, progress=progress)) for layer in g.layers}
    reference = grid.reference_entry(g)
    tables = {}
    for entry in tqdm(grid.grid_entries(g), desc="geometry", disable=not progress):
        dirs = grid.train_entry(g, entry, progress=progress)[0].decoder_directions().detach().cpu()
        tables[entry] = stack_tables(
            dirs, splits[entry].label, covariances[entry.layer].cov, study.geometry, study.groups, name=entry.name
        )
    deep = grid.reference_study(g)
    sae = grid.train_entry(deep, reference, progress=progress)[0]
    directions = sae.decoder_directions().detach().cpu()
    split = grid.load_split(deep, reference)
    paper = geometry_paper.paper_tables(
        directions,
        split.label,
        split.frequency,
        split.mean_activation,
        sae.W_enc.detach().norm(dim=1).cpu(),  # (S, d_sae): each latent's encoder row
        study.paper,
        anchor=g.stability.anchor,
        name=f"{reference.name}-reference",
    )
    ref_tables = stack_tables(
        directions,
        split.label,
        covariances[reference.layer].cov,
        study.geometry,
        study.groups,
        name=f"{reference.name}-reference",
    )
    return assemble_result(
        study,
        split,
        tables,
        directions,
        covariances[reference.layer].n_tokens,
        reference_tables=ref_tables,
        paper=paper,
    )


ER_CONTROL_DRAWS = 20
"""Random subsets of alive latents per seed and group in the ER/d control."""


def effective_rank_table(directions: Tensor, split: FeatureSplit, n_draws: int = ER_CONTROL_DRAWS) -> pd.DataFrame:
    """ER/d (`subspace.normalized_effective_rank`: the entropy effective rank of the singular values over
    min(n, d)) of every seed's unstable and stable latents, each beside `n_draws` random sets of as many alive
    latents of the same seed: one row per group and seed, `group`, `seed`, `n`, `er_d`, `control_mean`,
    `control_std` (no row for a seed without latents in the group)."""
    from saelib.stability import STABLE, UNSTABLE

    frames = []
    for name, code in (("unstable", UNSTABLE), ("stable", STABLE)):
        rows = group_effective_rank(directions, split.label == code, split.alive, n_draws=n_draws)
        frames.append(
            pd.DataFrame(rows, columns=["seed", "n", "er_d", "control_mean", "control_std"]).assign(group=name)
        )
    return pd.concat(frames, ignore_index=True)[["group", "seed", "n", "er_d", "control_mean", "control_std"]]


def assemble_result(
    study: GeometryStudy,
    split: FeatureSplit,
    tables: dict[GridEntry, dict[str, pd.DataFrame]],
    directions: Tensor,
    cov_tokens: int,
    reference_tables: dict[str, pd.DataFrame] | None = None,
    paper: geometry_paper.PaperResult | None = None,
) -> GeometryResult:
    """The `GeometryResult` of computed tables (no cache, no model): the reference point's tables and example, and
    one `stack_summary` row per grid point.

    Args:
        study: the study; `tables` must hold its grid's reference point.
        split: the reference point's split.
        tables: `stack_tables` per grid point.
        directions: `(S, d_sae, d)` decoder directions of the reference point (for its example group).
        cov_tokens: tokens the reference layer's covariance was estimated from.
        reference_tables: `stack_tables` of the reference SAEs; None: `tables`'s reference point's.
        paper: `geometry_paper.paper_tables` of the reference SAEs; None: nothing measured.
    """
    reference = grid.reference_entry(study.grid)
    ref = tables[reference] if reference_tables is None else reference_tables
    spec = fixed_spec(ref, study.fixed_fraction)
    points = pd.DataFrame([e._asdict() | stack_summary(t, spec) for e, t in tables.items()])
    groups = ref["groups"].sort_values("n_features", ascending=False, kind="stable").reset_index(drop=True)
    return GeometryResult(
        study,
        reference,
        split,
        tables,
        spec,
        points,
        rank_table(ref["ranks"]),
        overlap_table(ref["spans"]),
        angle_table(ref["spans"], ref["alignment"]),
        coverage_table(ref["coverage"]),
        groups,
        example_members(directions, ref),
        ref["activations"].assign(n_tokens=int(cov_tokens)),
        ref,
        effective_rank_table(directions, split),
        paper or geometry_paper.empty_result(directions.shape[-1], study.grid.stability.anchor),
    )


# --- Summary and claims -------------------------------------------------------------------------------------------


def compare(
    ours: float, baseline: float, higher: str = "above", lower: str = "below", missing: str = "not comparable here"
) -> str:
    """A word for prose: `higher` when `ours > baseline`, `lower` when not, `missing` when either is NaN."""
    if math.isnan(ours) or math.isnan(baseline):
        return missing
    return higher if ours > baseline else lower


def summary(result: GeometryResult) -> dict[str, float | int | str]:
    """Every number chapter 3's prose glues (plain Python values; NaN where a set is empty at this scale).

    Keys: `ref_<k>` for every `stack_summary` key of the reference point at the headline rank; the setting (`entry`,
    `n_seeds`, `d_sae`, `d_in`, `tau`, `stable_at`, `unstable_at`, `unstable_share`, `energy`, `n_draws`,
    `fixed_rank`, `fixed_ranks`, `max_atoms`, `min_share`, `min_seeds`); the covariance (`cov_tokens`, `cov_top1`,
    `cov_top10`); the prose's comparisons (`cmp_*`, words or sentences); the example group (`example_group`,
    `example_seeds`); and the grid (`n_points`, `n_beat_cov`, `n_beat_subset`, `n_beat_random`, `rank_min`,
    `rank_max`, `grouped_min`, `grouped_max`); the paper's transfer and stability prediction on the reference SAEs
    (`transfer_*`, `predict_*`, `f1_*`, `macro_f1_*`: `geometry_paper.summary`).
    """
    from saelib.stability import DEAD, UNSTABLE

    st, split, pts = result.study, result.split, result.points
    ref = stack_summary(result.reference_tables, result.spec)
    cov = result.covariance.iloc[0]
    d_in = int(cov.d)
    alive = int((split.label != DEAD).sum())
    out: dict[str, float | int | str] = {f"ref_{k}": float(v) for k, v in ref.items()}
    out |= {
        "entry": result.reference.name,
        "n_seeds": int(split.label.shape[0]),
        "ref_tokens": f"{grid.reference_study(st.grid).train.n_tokens:,}",
        "grid_tokens": f"{st.grid.train.n_tokens:,}",
        "d_sae": int(split.label.shape[1]),
        "d_in": d_in,
        "tau": float(split.threshold),
        "stable_at": float(split.stable_at),
        "unstable_at": float(split.unstable_at),
        "unstable_share": int((split.label == UNSTABLE).sum()) / max(alive, 1),
        "energy": float(st.geometry.energy),
        "n_draws": int(st.geometry.n_draws),
        "fixed_rank": int(result.spec.removeprefix("top-")),
        "fixed_ranks": ", ".join(str(r) for r in st.geometry.ranks(d_in)),
        "max_atoms": int(st.groups.max_atoms),
        "min_share": float(st.groups.min_share),
        "min_seeds": int(st.groups.min_seeds),
        "cov_tokens": f"{int(cov.n_tokens):,}",
        "cov_top1": float(cov.top1_share),
        "cov_top10": float(cov.top10_share),
    }
    out["cmp_rank_subset"] = compare(
        ref["rank_over_d_subset"], ref["rank_over_d_unstable"], "lower-rank", "not lower-rank"
    )
    out["cmp_fixed_random"] = compare(ref["overlap_fixed_unstable"], ref["overlap_fixed_random"])
    out["cmp_fixed_cov"] = compare(ref["overlap_fixed_unstable"], ref["overlap_fixed_covariance"])
    out["cmp_pca"] = compare(
        abs(ref["pca_fixed_unstable"] - ref["pca_fixed_random"]),
        abs(ref["pca_fixed_unstable"] - ref["pca_fixed_covariance"]),
        "closer to the covariance draws' value than to the isotropic one",
        "closer to the isotropic value than to the covariance draws' one",
    )
    out["cmp_cover_stable"] = compare(
        ref["coverage_unstable"],
        ref["coverage_stable"],
        "Unstable features of another seed lie inside it more than its stable features do.",
        "Unstable features of another seed lie inside it no more than its stable features do.",
        "There are no stable latents to compare with at this scale.",
    )
    out |= {
        "example_group": int(result.example.group),
        "example_seeds": ", ".join(str(s) for s in result.example.seeds) or "none",
    }
    er = result.effective_rank.groupby("group")[["er_d", "control_mean", "n"]].mean()
    for group in ("unstable", "stable"):
        row = er.loc[group] if group in er.index else pd.Series({"er_d": math.nan, "control_mean": math.nan})
        out[f"ref_er_d_{group}"] = float(row["er_d"])
        out[f"ref_er_d_{group}_control"] = float(row["control_mean"])
    out |= geometry_paper.summary(result.paper, st.fixed_fraction)
    out |= {
        "n_points": len(pts),
        "n_beat_cov": int((pts.overlap_fixed_unstable > pts.overlap_fixed_covariance).sum()),
        "n_beat_subset": int((pts.overlap_fixed_unstable > pts.overlap_fixed_subset).sum()),
        "n_beat_random": int((pts.overlap_fixed_unstable > pts.overlap_fixed_random).sum()),
        "rank_min": float(pts.rank_over_d_unstable.min()),
        "rank_max": float(pts.rank_over_d_unstable.max()),
        "grouped_min": float(pts.grouped_share.min()),
        "grouped_max": float(pts.grouped_share.max()),
    }
    return out


SECONDARY = "(reported, secondary source)"
"""How the paper's numbers are marked: read by a third party, not verified."""
PAPER_RANK = f"ER/d about 0.59-0.65 for unstable vs 0.80-0.81 for stable features {SECONDARY}"
"""The paper's normalised effective rank of the decoder sub-matrices."""
PAPER_TRANSFER = f"the top singular subspace of one seed's unstable features transfers to other seeds {SECONDARY}"
"""The paper's statement on the unstable span across seeds (no number reported)."""


def _versus(s: dict, ours: str, base: str, want: str, fmt: str = ".3f") -> tuple[str, bool | None]:
    """`"<ours> vs <base>"` from `s` and whether `ours` is `want` (`lower` / `higher`) than `base` (None when
    either is missing or NaN)."""
    a, b = (float(s.get(k, math.nan)) for k in (ours, base))
    if math.isnan(a) or math.isnan(b):
        return f"{a:{fmt}} vs {b:{fmt}}", None
    return f"{a:{fmt}} vs {b:{fmt}}", (a < b if want == "lower" else a > b)


def claims(summary: dict[str, float | int | str]) -> list[Claim]:
    """Chapter 3's verdicts from `summary`'s numbers (reference point; the last row over the whole grid): each
    observed number against its null of the same size or rank, then the paper's transfer and prediction rows
    (`geometry_paper.claims`). The paper's reported values are quoted where it has them (`PAPER_RANK`,
    `PAPER_TRANSFER`)."""
    s, tau = summary, float(summary.get("tau", math.nan))
    rows = [
        (
            "Unstable features span a lower-rank space than as many random alive latents",
            "90%-energy rank / d: unstable below random alive latents",
            "rank_over_d_unstable",
            "rank_over_d_subset",
            "lower",
            ".3f",
            NOT_REPORTED,
        ),
        (
            "... also by participation ratio",
            "participation ratio / d: unstable below random alive latents",
            "pr_over_d_unstable",
            "pr_over_d_subset",
            "lower",
            ".3f",
            NOT_REPORTED,
        ),
        (
            "Unstable features have a lower normalised effective rank than stable ones",
            "ER/d, the paper's measure (entropy effective rank of the decoder sub-matrix's singular values over "
            "min(n, d)), mean over seeds: unstable below stable",
            "er_d_unstable",
            "er_d_stable",
            "lower",
            ".3f",
            PAPER_RANK,
        ),
        (
            "... and lower than as many random alive latents",
            "ER/d, mean over seeds: unstable below size-matched random alive latents of the same seed",
            "er_d_unstable",
            "er_d_unstable_control",
            "lower",
            ".3f",
            NOT_REPORTED,
        ),
        (
            "The unstable span reproduces across seeds beyond random directions of the same rank",
            "overlap of two seeds' spans at the fixed rank: unstable above isotropic random",
            "overlap_fixed_unstable",
            "overlap_fixed_random",
            "higher",
            ".3f",
            PAPER_TRANSFER,
        ),
        (
            "... beyond covariance-drawn directions of the same rank",
            "overlap at the fixed rank: unstable above covariance draws",
            "overlap_fixed_unstable",
            "overlap_fixed_covariance",
            "higher",
            ".3f",
            NOT_REPORTED,
        ),
        (
            "... beyond random alive latents of the same number",
            "overlap at the fixed rank: unstable above random alive latents",
            "overlap_fixed_unstable",
            "overlap_fixed_subset",
            "higher",
            ".3f",
            NOT_REPORTED,
        ),
        (
            "... also at the 90%-energy rank, against the covariance null",
            "overlap at each seed's 90%-energy rank: unstable above covariance draws",
            "overlap_energy_unstable",
            "overlap_energy_covariance",
            "higher",
            ".3f",
            NOT_REPORTED,
        ),
        (
            "One seed's unstable features lie in another's unstable span more than its stable features do",
            "mean share inside the span: unstable above stable",
            "coverage_unstable",
            "coverage_stable",
            "higher",
            ".3f",
            NOT_REPORTED,
        ),
        (
            "... and more than covariance-drawn directions do",
            "mean share inside the span: unstable above covariance draws",
            "coverage_unstable",
            "coverage_covariance",
            "higher",
            ".3f",
            NOT_REPORTED,
        ),
        (
            "In groups, a feature lies in the other seed's span though no single feature matches it "
            f"(cosine < {tau:g})",
            "a member's cosine to the other seed's span above its best single match",
            "group_cos_to_span",
            "group_max_cos",
            "higher",
            ".3f",
            NOT_REPORTED,
        ),
        (
            "Group spans agree across seeds beyond covariance-drawn spans of the same ranks",
            "mean principal angle (degrees): two seeds' spans below covariance-drawn spans",
            "group_mean_angle_deg",
            "group_mean_angle_covariance",
            "lower",
            ".1f",
            NOT_REPORTED,
        ),
    ]
    out = []
    for text, criterion, ours, base, want, fmt, paper in rows:
        shown, holds = _versus(s, f"ref_{ours}", f"ref_{base}", want, fmt)
        out.append(claim(text, criterion, shown, holds, paper))
    out += geometry_paper.claims(s)  # the paper's transfer and stability prediction (reference SAEs)
    n, beat = int(s.get("n_points", 0)), int(s.get("n_beat_cov", 0))
    out.append(
        claim(
            "The unstable span beats the covariance null at every grid point (sizes, variants, layers)",
            "grid points where the overlap at the fixed rank is above covariance draws'",
            f"{beat} of {n} grid points",
            beat == n if n else None,
        )
    )
    return out
