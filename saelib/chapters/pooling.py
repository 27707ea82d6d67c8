"""Chapter 5, pooling unique cross-seed features: pooled SAEs scored against standard ones (the intro's claim 5).

`study(scale)` names the grid point pooled from (chapter 1's reference, `chapters.grid`) and how it is pooled
(`PoolingConfig`); `run(study)` pools two disjoint groups of its seeds (`saelib.pooling` builds and fine-tunes the
pooled SAEs), trains standard seeds at the larger pooled size, scores every stack with `score_stacks` (explained
variance, L0, dead fraction, per-feature stability between the stack's seeds: two pooled SAEs built from disjoint
groups are compared as two seeds are, and the CE score of every SAE spliced in), collects the pair stabilities and
best-match cosines (`pair_stability`, `max_cos_samples`) and pools more and more seeds per group (`seed_sweep`).
`summary` and `claims` turn the result into the chapter's numbers and verdicts.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saelib import stability
from saelib.cache import cached_result
from saelib.chapters import common, grid
from saelib.chapters.grid import FeatureSplit, GridStudy
from saelib.config import PoolingConfig, StabilityConfig, TrainConfig
from saelib.lm import splice
from saelib.lm.activations import load_model
from saelib.metrics import evaluate_sae
from saelib.pooling import (
    POOLING_VERSION,
    disjoint_groups,
    finetune_config,
    pool_groups,
    pool_summary,
    pooled_sae,
    pooled_sizes,
    seed_digests,
)
from saelib.sae import SAE
from saelib.train import TRAIN_VERSION, train_key

VERSION = 2
"""Bumped when this chapter's cached results (stack scores, the seed sweep) would come out differently; 2: they are
kept by `cached_result` (1 wrote the stack scores as JSON and safetensors)."""

EV_TOLERANCE = 0.01
"""Explained variance (and CE score) a pooled SAE may lose against the standard mean and still "preserve" it."""

PAPER_SAYS = "claimed, no number (reported, secondary source)"
"""The `paper` cell of the comparisons the paper makes: a secondary reading reports that the absence of a
stability/explained-variance trade-off holds for a pooled construction aggregating several SAEs, without numbers."""


# --- The study --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolingStudy:
    """Chapter 5's setting: the grid whose reference point is pooled from, and how it is pooled."""

    grid: GridStudy
    """Chapter 1's grid; its reference point (`grid.reference`) is the standard SAE, its seeds the pooled source."""
    pooling: PoolingConfig = field(default_factory=PoolingConfig)
    """How the seeds are pooled, merged, selected and fine-tuned, and the sweep over the seeds pooled per group."""

    @property
    def n_stack_seeds(self) -> int:
        """Seeds of the reference SAEs trained for pooling: the reference seeds, or more if pooling needs more."""
        return max(self.grid.reference_seeds, self.pooling.n_seeds_needed)


def study(scale: str = "default", device: str = "auto", **overrides: Any) -> PoolingStudy:
    """Chapter 5's study at a named scale (`smoke`, `default`, `gpu`, `paper`), its SAEs trained on `device`;
    `overrides` replace fields (`grid`, `pooling`; None keeps the scale's value)."""
    return common.preset(_preset, scale, device, **overrides)


def _preset(scale: str, device: str) -> PoolingStudy:
    if scale == "smoke":
        pooling = PoolingConfig(mass_tokens=4_096, sweep=(1, 2))
    elif scale == "default":
        pooling = PoolingConfig()
    else:
        pooling = PoolingConfig(mass_tokens=262_144, seeds_per_group=4 if scale == "paper" else 2)
    return PoolingStudy(grid.study(scale, device), pooling)


# --- Scoring: stability between seeds or pooled SAEs, and quality ----------------------------------------------------


def pair_stability(max_cos: Tensor, threshold: float, alive: Tensor | None = None) -> pd.DataFrame:
    """Per ordered pair of seeds `s != t`: the share of seed s's alive latents with a match in t (cosine >=
    threshold; the 2-seed per-feature stability, averaged) and the mean of `m_i(s->t)`.

    Args:
        max_cos: `(S, S, F)` from `FeatureStability.max_cos`; NaN entries (dead latents) are left out.
        alive: `(S, F)` bool; all alive when None.
    """
    S, _, F = max_cos.shape
    alive = torch.ones(S, F, dtype=torch.bool) if alive is None else alive.cpu().bool()
    rows = []
    for s, t in itertools.permutations(range(S), 2):
        m = max_cos[s, t].cpu()[alive[s]]
        m = m[~torch.isnan(m)]
        rows.append(
            {"s": s, "t": t, "stability": float((m >= threshold).float().mean()), "mean_max_cos": float(m.mean())}
        )
    return pd.DataFrame(rows)


def max_cos_samples(max_cos: Tensor, alive: Tensor | None = None) -> np.ndarray:
    """Every `m_i(s->t)` with `s != t` and latent i of seed s alive (and not NaN), as one flat array."""
    S, _, F = max_cos.shape
    alive = torch.ones(S, F, dtype=torch.bool) if alive is None else alive.cpu().bool()
    keep = ~torch.eye(S, dtype=torch.bool).unsqueeze(-1) & alive.unsqueeze(1) & ~torch.isnan(max_cos.cpu())
    return max_cos.cpu()[keep].numpy()


def stacked_reconstructor(saes: list[SAE]) -> splice.Reconstruct:
    """One `reconstruct` for `splice.spliced_ce` out of several stacks: their seeds' reconstructions concatenated."""
    recs = [splice.sae_reconstructor(s) for s in saes]

    def reconstruct(x: Tensor) -> Tensor:
        return torch.cat([r(x) for r in recs])  # (sum of S, B, d_in)

    return reconstruct


class StackScores(NamedTuple):
    """What `score_stacks` returns."""

    table: pd.DataFrame
    """One row per (stack, seed): `sae`, `d_sae`, `seed`, `explained_variance`, `l0`, `dead_fraction`,
    `stability`, `mean_max_cos` (against the stack's other seeds), and `ce_loss_score`, `delta_loss` with a model."""
    max_cos: dict[str, Tensor]
    """Per stack `(S, S, d_sae)` `m_i(s->t)`, NaN on the diagonal and for latents dead on the eval set."""


def score_stacks(
    stacks: dict[str, SAE],
    store: Any,
    stab: StabilityConfig,
    *,
    lm: Any = None,
    n_ce_contexts: int = 0,
    progress: bool = False,
) -> StackScores:
    """Explained variance, L0, dead fraction, per-feature stability between the seeds of each stack (dead latents,
    never firing on `store.eval`, excluded), and the CE score on the first `n_ce_contexts` eval contexts (one
    `spliced_ce` pass for all stacks) when `lm` is given. Uncached: `run` caches it.

    Args:
        stacks: label -> stack of S seeds (S = 1 gets NaN stabilities).
        store: an `ActivationStore` (`eval.batches`, `eval.contexts`, `info["layer"]`, `info["hook"]`).
    """
    rows, max_cos = [], {}
    for label, sae in stacks.items():
        ev = evaluate_sae(sae, store.eval.batches(4096, seed=0))
        alive = ev.frequency > 0  # (S, F)
        S, F = alive.shape
        mc = torch.full((S, S, F), torch.nan)
        stab_s, mean_s = [torch.full((S,), torch.nan)] * 2
        if S >= 2:
            fs = stability.feature_stability(sae, stab, alive=alive)
            mc = fs.max_cos.cpu().masked_fill(~alive.cpu().unsqueeze(1), torch.nan)
            stab_s, mean_s = fs.stability.cpu().nanmean(-1), fs.mean_max_cos.cpu().nanmean(-1)
        max_cos[label] = mc.contiguous()
        for s in range(S):
            rows.append(
                {
                    "sae": label,
                    "d_sae": sae.cfg.d_sae,
                    "seed": s,
                    "explained_variance": float(ev.explained_variance[s]),
                    "l0": float(ev.l0[s]),
                    "dead_fraction": float(ev.dead_fraction[s]),
                    "stability": float(stab_s[s]),
                    "mean_max_cos": float(mean_s[s]),
                }
            )
    if lm is not None and n_ce_contexts > 0:
        contexts = store.eval.contexts()[:n_ce_contexts]
        ce = splice.spliced_ce(
            lm,
            contexts,
            stacked_reconstructor(list(stacks.values())),
            layer=store.info["layer"],
            hook=store.info["hook"],
            progress=progress,
        )
        for row, score, delta in zip(rows, ce.ce_loss_score.tolist(), ce.delta_loss.tolist(), strict=True):
            row["ce_loss_score"], row["delta_loss"] = score, delta
    return StackScores(pd.DataFrame(rows), max_cos)


def standard_table(split: FeatureSplit, scores: dict, label: str = "standard") -> pd.DataFrame:
    """`score_stacks`'s table for a grid point of chapter 1 (`grid.score_entry`'s split and scores)."""
    S, F = split.stability.shape
    ce = scores.get("ce", {})
    return pd.DataFrame(
        {
            "sae": label,
            "d_sae": F,
            "seed": np.arange(S),
            "explained_variance": scores["explained_variance"],
            "l0": scores["l0"],
            "dead_fraction": scores["dead_fraction"],
            "stability": split.stability.nanmean(-1).numpy(),
            "mean_max_cos": split.mean_max_cos.nanmean(-1).numpy(),
            "ce_loss_score": ce.get("ce_loss_score", [np.nan] * S),
            "delta_loss": ce.get("delta_loss", [np.nan] * S),
        }
    )


def seed_sweep(
    sae: SAE,
    cfg: PoolingConfig,
    train: TrainConfig,
    store: Any,
    stab: StabilityConfig,
    *,
    d_sae: int,
    data_key: Any,
    progress: bool = True,
) -> pd.DataFrame:
    """Pooled SAEs of (at most) `d_sae` latents from two disjoint groups of n seeds, for n in `cfg.sweep` (the pools
    and pooled SAEs come from `saelib.pooling`'s cache; their scores are computed here).

    Returns:
        One row per n: `seeds_per_group`, `d_sae` (the size reached), `multi_seed_share` (share of kept clusters
        holding at least two of the group's seeds), and the means over the two pooled SAEs of `stability`,
        `mean_max_cos`, `explained_variance`, `l0`, `dead_fraction` (on `store.eval`).
    """
    if 2 * max(cfg.sweep) > sae.n_seeds:
        raise ValueError(f"cfg.sweep={cfg.sweep} needs {2 * max(cfg.sweep)} seeds; the stack has {sae.n_seeds}")
    rows = []
    for n in tqdm(cfg.sweep, desc="pooled seeds", disable=not progress):
        pools = pool_groups(sae, disjoint_groups(n), cfg, store, data_key=data_key)
        size = pooled_sizes(pools, d_sae, cfg)["same"]
        pooled = pooled_sae(sae, pools, size, cfg, train, store, data_key=data_key, progress=False).sae
        ev = evaluate_sae(pooled, store.eval.batches(4096, seed=0))
        fs = stability.feature_stability(pooled, stab, alive=ev.frequency > 0)
        multi = float(np.mean([(p.n_seeds[:size] >= 2).float().mean() for p in pools]))
        rows.append(
            {
                "seeds_per_group": n,
                "d_sae": size,
                "multi_seed_share": multi,
                "stability": float(fs.stability.nanmean()),
                "mean_max_cos": float(fs.mean_max_cos.nanmean()),
                "explained_variance": float(ev.explained_variance.mean()),
                "l0": float(ev.l0.mean()),
                "dead_fraction": float(ev.dead_fraction.mean()),
            }
        )
    return pd.DataFrame(rows)


QUALITY_COLUMNS = ("d_sae", "explained_variance", "l0", "ce_loss_score", "dead_fraction", "stability")
"""The columns of the quality table, in its order."""


def tabulate_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per kind of SAE (`sae` column, first-seen order): mean, min and max over its ordered pairs of `stability`
    and `mean_max_cos` (`pair_stability` rows)."""
    return pairs.groupby("sae", sort=False)[["stability", "mean_max_cos"]].agg(["mean", "min", "max"])


def tabulate_quality(table: pd.DataFrame) -> pd.DataFrame:
    """Per kind of SAE (`sae` column, first-seen order): the mean over its SAEs of each of `QUALITY_COLUMNS` that
    `table` has."""
    return table.groupby("sae", sort=False)[[c for c in QUALITY_COLUMNS if c in table]].mean()


# --- Running the chapter ----------------------------------------------------------------------------------------------


class PoolingResult(NamedTuple):
    """Everything chapter 5 shows (`run`)."""

    setup: dict
    """The settings the prose quotes: `ref_name`, `model`, `d_sae`, `k`, `n_grid_seeds`, `n_stack_seeds`, `tau`,
    `seeds_per_group`, `large_factor`, `rank_by`, `mass_tokens`, `finetune_tokens`, `train_tokens` (token counts as
    text with thousands separators), `train_decoder` (`"also"` / `"not"`), `n_ce_contexts`, `n_large_standard`,
    `ev_tolerance`."""
    pools: pd.DataFrame
    """`pooling.pool_summary` of the two pools: latents pooled, clusters, clusters by the seeds they hold."""
    sizes: dict
    """`same` and `large`: the pooled SAEs' sizes (`pooling.pooled_sizes`)."""
    table: pd.DataFrame
    """One row per SAE (`score_stacks`' columns): chapter 1's standard seeds (`sae` = `standard`), then `pooled`,
    `pooled large` and `standard large`."""
    pairs: pd.DataFrame
    """`pair_stability` rows of every kind (`sae` column): the standard seeds' pairs, then each stack's."""
    pair_table: pd.DataFrame
    """`tabulate_pairs(pairs)`."""
    quality: pd.DataFrame
    """`tabulate_quality(table)`, indexed by kind."""
    samples: dict
    """`max_cos_samples` per kind of SAE pair: `standard seeds`, `pooled SAEs`, `pooled large SAEs`,
    `standard large SAEs`."""
    sweep: pd.DataFrame
    """`seed_sweep`: one row per number of seeds pooled per group."""


def run(study: PoolingStudy, *, progress: bool = True) -> PoolingResult:
    """Pool, fine-tune, train the larger standard baseline, score and sweep; every step cached.

    The grid point, its extra seeds, the pools and the pooled SAEs come from the caches of `chapters.grid` and
    `saelib.pooling`; the stack scores and the seed sweep are kept by `cached_result` (`pooling/scores-*`,
    `pooling/sweep-*`). The language model is loaded only when something must be computed with it.
    """
    g, cfg = grid.reference_study(study.grid), study.pooling  # pooled from the reference SAEs
    entry = grid.reference_entry(g)
    acts = g.activations_at(entry.layer)
    device = g.train.device
    lm = None if grid.is_scored(g, entry) else load_model(acts.model, device=device)
    store = grid.load_store(g, entry.layer, device=device, progress=progress, lm=lm)
    split, grid_scores = grid.score_entry(g, entry, lm=lm, progress=progress)
    sae, _ = grid.train_entry(g, entry, n_seeds=study.n_stack_seeds, progress=progress, lm=lm)

    pools = pool_groups(sae, disjoint_groups(cfg.seeds_per_group), cfg, store, data_key=acts)
    sizes = pooled_sizes(pools, entry.d_sae, cfg)
    pooled = {
        label: pooled_sae(sae, pools, size, cfg, g.train, store, data_key=acts, progress=progress).sae
        for label, size in sizes.items()
    }
    large_entry = grid.GridEntry(entry.layer, entry.variant, sizes["large"])
    large, _ = grid.train_entry(g, large_entry, n_seeds=cfg.n_large_standard, progress=progress, lm=lm)
    stacks = {"pooled": pooled["same"], "pooled large": pooled["large"], "standard large": large}

    score_key = {
        "stacks": {k: seed_digests(v) for k, v in stacks.items()},
        "data": acts,
        "stability": g.stability,
        "n_ce_contexts": g.n_ce_contexts,
        "version": POOLING_VERSION,
        "chapter_version": VERSION,
    }
    scores = cached_result(
        "pooling",
        "scores",
        score_key,
        lambda: score_stacks(
            stacks,
            store,
            g.stability,
            lm=lm if lm is not None else load_model(acts.model, device=device),
            n_ce_contexts=g.n_ce_contexts,
            progress=progress,
        ),
    )
    sweep_key = {
        "source": seed_digests(sae),
        "d_sae": entry.d_sae,
        "pooling": cfg,
        "train": train_key(g.train),
        "data": acts,
        "stability": g.stability,
        "train_version": TRAIN_VERSION,
        "version": POOLING_VERSION,
        "chapter_version": VERSION,
    }
    sweep = cached_result(
        "pooling",
        "sweep",
        sweep_key,
        lambda: seed_sweep(sae, cfg, g.train, store, g.stability, d_sae=entry.d_sae, data_key=acts, progress=progress),
    )

    alive = split.label != stability.DEAD
    tau = g.stability.threshold
    table = pd.concat([standard_table(split, grid_scores), scores.table], ignore_index=True)
    pairs = pd.concat(
        [pair_stability(split.max_cos, tau, alive).assign(sae="standard")]
        + [pair_stability(mc, tau).assign(sae=label) for label, mc in scores.max_cos.items()],
        ignore_index=True,
    )
    samples = {"standard seeds": max_cos_samples(split.max_cos, alive)}
    samples |= {f"{label} SAEs": max_cos_samples(mc) for label, mc in scores.max_cos.items()}
    tune = finetune_config(g.train, cfg)
    setup = {
        "ref_name": entry.name,
        "model": acts.model,
        "d_sae": entry.d_sae,
        "k": g.k,
        "n_grid_seeds": g.n_seeds,
        "n_stack_seeds": sae.n_seeds,
        "tau": cfg.threshold,
        "seeds_per_group": cfg.seeds_per_group,
        "large_factor": cfg.large_factor,
        "rank_by": cfg.rank_by,
        "mass_tokens": f"{cfg.mass_tokens:,}",
        "finetune_tokens": f"{tune.n_tokens:,}",
        "train_tokens": f"{g.train.n_tokens:,}",
        "train_decoder": "also" if cfg.train_decoder else "not",
        "n_ce_contexts": g.n_ce_contexts,
        "n_large_standard": cfg.n_large_standard,
        "ev_tolerance": EV_TOLERANCE,
    }
    return PoolingResult(
        setup,
        pool_summary(pools),
        dict(sizes),
        table,
        pairs,
        tabulate_pairs(pairs),
        tabulate_quality(table),
        samples,
        sweep,
    )


# --- The chapter's numbers and verdicts -------------------------------------------------------------------------------

_SCORES = ("explained_variance", "l0", "dead_fraction", "stability", "mean_max_cos", "ce_loss_score", "d_sae")


def summary(result: PoolingResult) -> dict[str, float | int | str]:
    """Every number the chapter's prose glues (plain Python values).

    Keys: the `setup` entries; per kind of SAE (`sae` column, spaces as underscores) the means of every score,
    `<kind>_<score>`, and the range of its pair stabilities, `<kind>_pair_min` / `<kind>_pair_max`; the sweep's
    fewest and most seeds per group and the pooled stability at each, `sweep_{first,last}_n`,
    `sweep_{first,last}_stability`; `n_clusters` (the fewest clusters of a pool), `size_same`, `size_large`;
    `pooled_gain` and `pooled_ev_change` (pooled minus standard stability and explained variance).
    """
    out: dict[str, float | int | str] = {
        k: (v.item() if isinstance(v, np.generic) else v) for k, v in result.setup.items()
    }
    for kind, df in result.table.groupby("sae", sort=False):
        for col in _SCORES:
            if col in df:
                out[f"{kind.replace(' ', '_')}_{col}"] = float(df[col].mean())
    for kind, df in result.pairs.groupby("sae", sort=False):
        k = kind.replace(" ", "_")
        out[f"{k}_pair_min"], out[f"{k}_pair_max"] = float(df.stability.min()), float(df.stability.max())
    for end, i in (("first", 0), ("last", -1)):
        out[f"sweep_{end}_n"] = int(result.sweep.seeds_per_group.iloc[i])
        out[f"sweep_{end}_stability"] = float(result.sweep.stability.iloc[i])
    out["n_clusters"] = int(result.pools.clusters.min())
    out["size_same"], out["size_large"] = int(result.sizes["same"]), int(result.sizes["large"])
    nan = math.nan
    out["pooled_gain"] = float(out.get("pooled_stability", nan)) - float(out.get("standard_stability", nan))
    out["pooled_ev_change"] = float(out.get("pooled_explained_variance", nan)) - float(
        out.get("standard_explained_variance", nan)
    )
    return out


CLAIMS = (
    (
        "Pooled SAEs are more stable than standard SAEs of the same size",
        "mean per-feature stability, pooled vs standard seed pairs",
        "pooled_stability",
        "standard_pair_max",
        "above",
        PAPER_SAYS,
    ),
    (
        "... while preserving explained variance",
        "explained variance, pooled vs standard mean",
        "pooled_explained_variance",
        "standard_explained_variance",
        "keeps",
        PAPER_SAYS,
    ),
    (
        "... and the CE score",
        "CE loss score, pooled vs standard mean",
        "pooled_ce_loss_score",
        "standard_ce_loss_score",
        "keeps",
        common.NOT_REPORTED,
    ),
    (
        "The larger pooled SAEs are more stable than standard SAEs of their size",
        "mean per-feature stability, larger pooled vs standard pairs of that size",
        "pooled_large_stability",
        "standard_large_pair_max",
        "above",
        PAPER_SAYS,
    ),
    (
        "... while preserving explained variance",
        "explained variance, larger pooled vs standard of that size",
        "pooled_large_explained_variance",
        "standard_large_explained_variance",
        "keeps",
        PAPER_SAYS,
    ),
    (
        "Stability grows with the number of seeds pooled",
        "pooled stability, most vs fewest seeds per group",
        "sweep_last_stability",
        "sweep_first_stability",
        "grows",
        common.NOT_REPORTED,
    ),
)
"""The comparisons of `claims`: (claim, measured as, our key, reference key, criterion kind, paper's value)."""


def claims(summary: dict[str, float | int | str]) -> list[common.Claim]:
    """The intro's claim 5, split into the comparisons this chapter makes (`CLAIMS`): our number, the criterion
    with the reference it is compared against, and the verdict (`not measured` when a number is missing or NaN).

    Criteria: `above`, more stable than every standard seed pair (above their maximum); `keeps`, at most
    `EV_TOLERANCE` below the standard mean; `grows`, higher with the most seeds pooled than with the fewest.
    """
    rows = []
    for text, measured, ours_key, ref_key, kind, paper in CLAIMS:
        x, r = float(summary.get(ours_key, math.nan)), float(summary.get(ref_key, math.nan))
        criterion, holds = {
            "above": (f"> every standard seed pair (max {r:.3f})", x > r),
            "keeps": (f">= {r:.3f} - {EV_TOLERANCE}", x >= r - EV_TOLERANCE),
            "grows": (f"> {r:.3f} (at {summary.get('sweep_first_n', '?')} per group)", x > r),
        }[kind]
        measured_both = not (math.isnan(x) or math.isnan(r))
        rows.append(common.claim(text, f"{measured}: {criterion}", x, holds if measured_both else None, paper))
    return rows
