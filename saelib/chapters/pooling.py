"""Pooled SAEs scored against standard ones, and chapter 5's numbers and verdicts (PAPER.md, claim 5).

`score_stacks` measures each stack's explained variance, L0, dead fraction, per-feature stability between its seeds
(two pooled SAEs built from disjoint groups of seeds are compared as two seeds are) and, with a model, the CE score
of every SAE spliced in; `standard_table` puts chapter 1's grid point in the same table. `pair_stability` and
`max_cos_samples` give the distributions over seed pairs and latents; `seed_sweep` pools more and more seeds per
group. `summarize`, `sweep_summary` and `claims_table` turn the tables into the chapter's numbers and verdicts.
The pooled SAEs themselves are built by `saelib.pooling`.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from saelib import stability
from saelib.cache import cached_artifact
from saelib.config import PoolingConfig, StabilityConfig, TrainConfig, check_scale
from saelib.lm import splice
from saelib.metrics import evaluate_sae
from saelib.paths import atomic_write_json
from saelib.pooling import POOLING_VERSION, disjoint_groups, pool_groups, pooled_sae, pooled_sizes, seed_digests
from saelib.sae import SAE


def pooling_config(scale: str) -> PoolingConfig:
    """Chapter 5's pooling at a named scale (`smoke`, `default`, `gpu`, `paper`)."""
    check_scale(scale)
    if scale == "smoke":
        return PoolingConfig(mass_tokens=4_096, sweep=(1, 2))
    if scale == "default":
        return PoolingConfig()
    return PoolingConfig(mass_tokens=262_144, seeds_per_group=4 if scale == "paper" else 2)


PAPER_SAYS = "claimed, no number (abstract)"
"""What the paper reports for each pooling comparison: its abstract states claim 5 without numbers."""

EV_TOLERANCE = 0.01
"""Explained variance (and CE score) a pooled SAE may lose against the standard mean and still "preserve" it."""


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
        rows.append({"s": s, "t": t, "stability": float((m >= threshold).float().mean()),
                     "mean_max_cos": float(m.mean())})
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
    data_key: Any,
    lm: Any = None,
    n_ce_contexts: int = 0,
    progress: bool = False,
) -> StackScores:
    """Explained variance, L0, dead fraction, per-feature stability between the seeds of each stack (dead latents,
    never firing on `store.eval`, excluded), and the CE score on the first `n_ce_contexts` eval contexts (one
    `spliced_ce` pass for all stacks) when `lm` is given. Cached under `pooling/`."""
    use_ce = lm is not None and n_ce_contexts > 0
    key = {"stacks": {k: seed_digests(v) for k, v in stacks.items()}, "data": data_key, "stability": stab,
           "n_ce_contexts": n_ce_contexts if use_ce else 0, "version": POOLING_VERSION}

    def build(work: Path) -> None:
        rows, tensors = [], {}
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
            tensors[label] = mc.contiguous()
            for s in range(S):
                rows.append({"sae": label, "d_sae": sae.cfg.d_sae, "seed": s,
                             "explained_variance": float(ev.explained_variance[s]), "l0": float(ev.l0[s]),
                             "dead_fraction": float(ev.dead_fraction[s]), "stability": float(stab_s[s]),
                             "mean_max_cos": float(mean_s[s])})
        if use_ce:
            contexts = store.eval.contexts()[:n_ce_contexts]
            ce = splice.spliced_ce(lm, contexts, stacked_reconstructor(list(stacks.values())),
                                   layer=store.info["layer"], hook=store.info["hook"], progress=progress)
            for row, score, delta in zip(rows, ce.ce_loss_score.tolist(), ce.delta_loss.tolist(), strict=True):
                row["ce_loss_score"], row["delta_loss"] = score, delta
        save_file(tensors, str(work / "max_cos.safetensors"))
        atomic_write_json(work / "table.json", rows)

    folder = cached_artifact("pooling", "scores", key, build)
    table = pd.DataFrame(json.loads((folder / "table.json").read_text()))
    return StackScores(table, load_file(str(folder / "max_cos.safetensors")))


def standard_table(split: Any, scores: dict, label: str = "standard") -> pd.DataFrame:
    """`score_stacks`'s table for a grid point of chapter 1 (`grid.score_entry`'s split and scores)."""
    S, F = split.stability.shape
    ce = scores.get("ce", {})
    return pd.DataFrame({
        "sae": label, "d_sae": F, "seed": np.arange(S), "explained_variance": scores["explained_variance"],
        "l0": scores["l0"], "dead_fraction": scores["dead_fraction"],
        "stability": split.stability.nanmean(-1).numpy(), "mean_max_cos": split.mean_max_cos.nanmean(-1).numpy(),
        "ce_loss_score": ce.get("ce_loss_score", [np.nan] * S), "delta_loss": ce.get("delta_loss", [np.nan] * S),
    })


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
    """Pooled SAEs of (at most) `d_sae` latents from two disjoint groups of n seeds, for n in `cfg.sweep`.

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
        rows.append({"seeds_per_group": n, "d_sae": size, "multi_seed_share": multi,
                     "stability": float(fs.stability.nanmean()), "mean_max_cos": float(fs.mean_max_cos.nanmean()),
                     "explained_variance": float(ev.explained_variance.mean()), "l0": float(ev.l0.mean()),
                     "dead_fraction": float(ev.dead_fraction.mean())})
    return pd.DataFrame(rows)


# --- The chapter's numbers and verdicts -------------------------------------------------------------------------------


def summarize(table: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, float]:
    """Headline numbers: per SAE kind (`sae` column) the means of every score, `<kind>_<score>` (spaces become
    underscores), and the range of each kind's pair stabilities (`pairs`: `pair_stability` rows with an `sae`
    column), `<kind>_pair_min` and `<kind>_pair_max`."""
    out: dict[str, float] = {}
    cols = ["explained_variance", "l0", "dead_fraction", "stability", "mean_max_cos", "ce_loss_score", "d_sae"]
    for kind, df in table.groupby("sae"):
        for col in cols:
            if col in df:
                out[f"{kind.replace(' ', '_')}_{col}"] = float(df[col].mean())
    for kind, df in pairs.groupby("sae"):
        k = kind.replace(" ", "_")
        out[f"{k}_pair_min"], out[f"{k}_pair_max"] = float(df.stability.min()), float(df.stability.max())
    return out


def sweep_summary(sweep: pd.DataFrame) -> dict[str, float]:
    """The sweep's fewest and most seeds per group and the pooled stability at each: `sweep_{first,last}_n`,
    `sweep_{first,last}_stability`."""
    out: dict[str, float] = {}
    for end, i in (("first", 0), ("last", -1)):
        out[f"sweep_{end}_n"] = int(sweep.seeds_per_group.iloc[i])
        out[f"sweep_{end}_stability"] = float(sweep.stability.iloc[i])
    return out


CLAIMS = (
    ("pooled SAEs are more stable than standard SAEs of the same size",
     "mean per-feature stability, pooled vs standard seed pairs", "pooled_stability", "standard_pair_max", "above"),
    ("... while preserving explained variance", "explained variance, pooled vs standard mean",
     "pooled_explained_variance", "standard_explained_variance", "keeps"),
    ("... and the CE score", "CE loss score, pooled vs standard mean", "pooled_ce_loss_score",
     "standard_ce_loss_score", "keeps"),
    ("the larger pooled SAEs are more stable than standard SAEs of their size",
     "mean per-feature stability, larger pooled vs standard pairs of that size", "pooled_large_stability",
     "standard_large_pair_max", "above"),
    ("... while preserving explained variance", "explained variance, larger pooled vs standard of that size",
     "pooled_large_explained_variance", "standard_large_explained_variance", "keeps"),
    ("stability grows with the number of seeds pooled", "pooled stability at the most seeds per group",
     "sweep_last_stability", "sweep_first_stability", "grows"),
)
"""The comparisons of `claims_table`: (claim, measured as, our key, reference key, criterion kind)."""


def claims_table(s: dict[str, float]) -> pd.DataFrame:
    """PAPER.md's claim 5, split into the comparisons this chapter makes (`CLAIMS`), each with our number, the
    criterion and whether it holds; comparisons whose numbers are missing (no CE, no larger standard) are left out.

    Criteria: `above`, more stable than every standard seed pair; `keeps`, at most `EV_TOLERANCE` below the standard
    mean; `grows`, higher with the most seeds pooled than with the fewest.
    """
    rows = []
    for claim, measured, ours, ref, kind in CLAIMS:
        if ours not in s or ref not in s or np.isnan(s[ours]) or np.isnan(s[ref]):
            continue
        x, r = s[ours], s[ref]
        criterion, holds = {"above": (f"> every standard pair (max {r:.3f})", x > r),
                            "keeps": (f">= {r:.3f} - {EV_TOLERANCE}", x >= r - EV_TOLERANCE),
                            "grows": (f"> {r:.3f} (at {s['sweep_first_n']} per group)", x > r)}[kind]
        rows.append((claim, PAPER_SAYS, measured, x, criterion, bool(holds)))
    return pd.DataFrame(rows, columns=["claim", "paper", "measured as", "ours", "criterion", "holds"])
