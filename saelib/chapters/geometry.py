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

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd
from torch import Tensor
from tqdm.auto import tqdm

from saelib.chapters import geometry_paper, grid
from saelib.chapters.common import NOT_REPORTED, Claim, claim, preset
from saelib.chapters.geometry_analysis import POINT_COLUMNS as POINT_COLUMNS  # re-exported
from saelib.chapters.geometry_analysis import SOURCES as SOURCES  # re-exported
from saelib.chapters.geometry_analysis import VERSION as VERSION  # re-exported
from saelib.chapters.geometry_analysis import Geometry as Geometry  # re-exported
from saelib.chapters.geometry_analysis import (
    GeometryConfig,
    GroupExample,
    angle_table,
    coverage_table,
    example_members,
    fixed_spec,
    overlap_table,
    rank_table,
    stack_summary,
    stack_tables,
)
from saelib.chapters.geometry_analysis import analyze_geometry as analyze_geometry  # re-exported
from saelib.chapters.geometry_analysis import excess as excess  # re-exported
from saelib.chapters.geometry_analysis import null_sets as null_sets  # re-exported
from saelib.chapters.geometry_analysis import split_sets as split_sets  # re-exported
from saelib.chapters.geometry_analysis import summarize_geometry as summarize_geometry  # re-exported
from saelib.chapters.grid import FeatureSplit, GridEntry, GridStudy
from saelib.config import check_fraction
from saelib.groups import GroupConfig
from saelib.lm.store import load_covariance
from saelib.subspace import group_effective_rank

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
