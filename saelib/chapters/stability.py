"""Chapter 1, feature stability across seeds: the grid of `chapters.grid` scored, and how the per-feature score
behaves at its reference point.

`run` reads (or trains and scores) every grid point, then at the reference point: the distribution of stability
against the untrained null (its bimodality), its sweeps over the threshold tau and over the number of reference seeds,
its correlation with firing frequency, the same point at another k, and the two halves of the shared-latent rule.
`summary` gives the numbers the chapter's prose quotes, `claims` its verdicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from saelib import matching, stability
from saelib.cache import cached_result
from saelib.chapters import grid
from saelib.chapters.common import Claim, claim, preset
from saelib.chapters.grid import FeatureSplit, GridEntry, GridStudy
from saelib.config import StabilityConfig, check_positive
from saelib.stability import DEAD, INTERMEDIATE, STABLE, UNSTABLE, stability_from_max_cos, stability_labels

VERSION = 1
"""Bumped when what `run` caches at the reference point (`reference_null`) changes."""


@dataclass(frozen=True)
class StabilityStudy:
    """Chapter 1: the grid of SAEs, and what is measured beyond it at its reference point."""

    grid: GridStudy
    """The grid of SAEs (layers x variants x sizes, several seeds each) and how they are scored."""
    compare_k: int = 32
    """The reference point is also trained at this k, to show how sparsity moves stability (0: skip)."""
    n_draws: int = 20
    """Random subsets of reference seeds per seed and subset size in the reference-seed sweep."""
    n_top_dimensions: int = 2
    """Coordinates of largest variance listed per layer (the covariance null's caveat)."""

    def __post_init__(self) -> None:
        check_positive("StabilityStudy", n_draws=self.n_draws, n_top_dimensions=self.n_top_dimensions)
        if self.compare_k < 0 or self.compare_k >= min(self.grid.sizes):
            raise ValueError(
                f"StabilityStudy.compare_k={self.compare_k} must be 0 (skip) or in [1, "
                f"{min(self.grid.sizes)}) (below every dictionary size of the grid)"
            )


def study(scale: str = "default", device: str = "auto", **overrides) -> StabilityStudy:
    """Chapter 1's study at a named scale (`smoke`, `default`, `gpu`, `paper`); `overrides` replace its fields
    (None keeps the scale's value)."""
    return preset(_preset, scale, device, **overrides)


def _preset(scale: str, device: str) -> StabilityStudy:
    # The grid uses k = 8 on CPU, 32 on GPU and the paper's reported 64 at paper scale: compare with 32, 64 and 32.
    g = grid.study(scale, device)
    return StabilityStudy(g, compare_k=64 if g.k == 32 else 32)


# --- Sweeps and shapes of one grid point's stability ------------------------------------------------------------------


def threshold_sweep(max_cos: Tensor, thresholds, cfg: StabilityConfig, alive: Tensor | None = None) -> pd.DataFrame:
    """How the stability picture moves with tau: per threshold, the mean stability of alive latents and the shares
    labelled stable and unstable (with `cfg`'s cut-offs).

    Args:
        max_cos: `(S, S, F)` from `FeatureStability.max_cos` or `FeatureSplit.max_cos`.
        alive: `(S, F)` bool; None: the latents whose `max_cos` row is not all NaN (dead ones are NaN rows in
            `FeatureStability` and `FeatureSplit`).
    """
    rows = []
    for tau in thresholds:
        stab, _ = stability_from_max_cos(max_cos, float(tau), alive)
        label = stability_labels(stab, cfg)
        n_alive = max(int((label != DEAD).sum()), 1)
        rows.append(
            {
                "threshold": float(tau),
                "mean_stability": float(stab.nanmean()),
                "stable_share": float((label == STABLE).sum()) / n_alive,
                "unstable_share": float((label == UNSTABLE).sum()) / n_alive,
            }
        )
    return pd.DataFrame(rows)


def reference_seed_sweep(
    max_cos: Tensor, cfg: StabilityConfig, alive: Tensor | None = None, n_draws: int = 20, seed: int = 0
) -> pd.DataFrame:
    """Sensitivity to the number of reference seeds: per n in 1..S-1, each latent's stability is estimated against a
    random subset of n of the other seeds (`n_draws` subsets per seed), and compared with the estimate from all S-1.

    Args:
        max_cos: `(S, S, F)`; alive: as in `threshold_sweep`.

    Returns:
        One row per n: `n_reference`, `mean_stability`, `stable_share`, `unstable_share` (cfg's cut-offs, pooled
        over draws), and `label_agreement`, the share of alive latents whose label equals their all-seed label.
    """
    S = max_cos.shape[0]
    if S < 2:
        raise ValueError("reference_seed_sweep needs at least 2 seeds")
    full, _ = stability_from_max_cos(max_cos, cfg.threshold, alive)
    full_label = stability_labels(full, cfg)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for n in range(1, S):
        stab_sum, counts, agree, total = 0.0, torch.zeros(3), 0, 0
        for _ in range(n_draws):
            for s in range(S):
                others = torch.tensor([t for t in range(S) if t != s])
                refs = others[torch.randperm(S - 1, generator=gen)[:n]]
                hits = (max_cos[s, refs] >= cfg.threshold).float().mean(0)  # (F,)
                ok = ~torch.isnan(full[s])
                label = stability_labels(hits[ok], cfg)
                stab_sum += float(hits[ok].sum())
                counts += torch.stack([(label == c).sum() for c in (UNSTABLE, INTERMEDIATE, STABLE)]).float()
                agree += int((label == full_label[s][ok]).sum())
                total += int(ok.sum())
        rows.append(
            {
                "n_reference": n,
                "mean_stability": stab_sum / max(total, 1),
                "stable_share": float(counts[2]) / max(total, 1),
                "unstable_share": float(counts[0]) / max(total, 1),
                "label_agreement": agree / max(total, 1),
            }
        )
    return pd.DataFrame(rows)


def bimodality(stability: Tensor) -> dict[str, float]:
    """Shape of a stability distribution (NaN = dead, ignored): shares at exactly 0 and 1, the share in the middle
    (strictly between the extreme values), and Sarle's bimodality coefficient `(skew^2 + 1) / kurtosis` (above 5/9,
    the uniform distribution's value, suggests bimodality)."""
    v = stability[~torch.isnan(stability)].double()
    if v.numel() < 4:
        raise ValueError("bimodality needs at least 4 alive latents")
    c = v - v.mean()
    var = c.pow(2).mean()
    skew = c.pow(3).mean() / var.pow(1.5) if var > 0 else torch.tensor(0.0)
    kurt = c.pow(4).mean() / var.pow(2) if var > 0 else torch.tensor(float("inf"))
    return {
        "share_zero": float((v == 0).double().mean()),
        "share_one": float((v == 1).double().mean()),
        "share_between": float(((v > 0) & (v < 1)).double().mean()),
        "bimodality_coefficient": float((skew**2 + 1) / kurt),
    }


def frequency_correlation(stability: Tensor, frequency: Tensor) -> float:
    """Spearman rank correlation between per-feature stability and firing frequency over alive latents (both
    `(S, d_sae)`; NaN stability = dead, left out). Positive: rarer features are less stable. NaN (undefined) when
    either is constant over the alive latents, e.g. when no latent matches across seeds."""
    from scipy.stats import spearmanr

    ok = ~torch.isnan(stability) & (frequency > 0)
    if int(ok.sum()) < 3:
        raise ValueError("frequency_correlation needs at least 3 alive latents")
    x, y = stability[ok], frequency[ok]
    if bool((x == x[0]).all()) or bool((y == y[0]).all()):
        return float("nan")
    return float(spearmanr(x.numpy(), y.numpy()).statistic)


def label_confusion(values: Tensor, cfg: StabilityConfig, other: StabilityConfig) -> pd.DataFrame:
    """How two labelings of the same per-feature stability `values` agree: counts of alive latents (NaN = dead,
    left out), `cfg`'s labels (rows) against `other`'s (columns), over `unstable`, `intermediate`, `stable`."""
    names = [stability.LABEL_NAMES[c] for c in (UNSTABLE, INTERMEDIATE, STABLE)]
    ok = ~torch.isnan(values)
    a = stability_labels(values[ok], cfg).numpy()
    b = stability_labels(values[ok], other).numpy()
    table = pd.crosstab(
        pd.Categorical([stability.LABEL_NAMES[int(c)] for c in a], categories=names),
        pd.Categorical([stability.LABEL_NAMES[int(c)] for c in b], categories=names),
        dropna=False,
    )
    return table.rename_axis(index=_label_rule(cfg), columns=_label_rule(other))


def _label_rule(cfg: StabilityConfig) -> str:
    if cfg.estimator == "anchor":
        return f"endpoints (epsilon = {cfg.epsilon:g})"
    return f"cut-offs {cfg.stable_at:g} / {cfg.unstable_at:g}"


CURVE_COLUMNS = [
    "tokens",
    "epochs",
    "mean_stability",
    "stable_share",
    "unstable_share",
    "shared_fraction",
    "pw_mcc",
    "explained_variance",
    "dead_fraction",
    "ce_loss_score",
]
"""The columns of `StabilityResult.curve`."""


def budget_curve(study: GridStudy, *, progress: bool = True) -> pd.DataFrame:
    """The reference point's scores against training tokens: one row per budget of `study.budgets`, each trained
    and scored with the grid's `n_seeds` seeds (the deepest budget is the reference stack, scored on its first
    `n_seeds` seeds, so that every point compares the same number of seeds). `epochs`: tokens over those collected."""
    entry = grid.reference_entry(study)
    deep = grid.reference_study(study)
    collected = study.activations_at(entry.layer).n_train_tokens
    rows = []
    for n_tokens in study.budgets:
        point = deep if n_tokens == max(study.budgets) else grid.budget_study(study, n_tokens)
        split, scores = grid.first_seeds(
            *grid.score_entry(point, entry, progress=progress), study.n_seeds, study.stability
        )
        row = grid.summary_row(entry, split, scores)
        rows.append(row | {"tokens": n_tokens, "epochs": n_tokens / collected})
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=CURVE_COLUMNS)


def log_fit(tokens, values, at: float) -> dict[str, float]:
    """Least-squares line of `values` (shares, in [0, 1]) against log10(tokens): `slope` (change per 10x tokens),
    `intercept`, `r2`, `last_slope` (per 10x between the last two points), `at_value`, the line at `at` tokens
    clipped to [0, 1] (an extrapolation when `at` lies beyond the data), and `bound_tokens`, the tokens at which the
    line leaves [0, 1] (reaches 1 rising or 0 falling; inf when flat): where a straight line in log tokens must
    have bent."""
    x, y = np.log10(np.asarray(tokens, dtype=float)), np.asarray(values, dtype=float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        raise ValueError("log_fit needs at least 2 finite points")
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss = float(((y - y.mean()) ** 2).sum())
    edge = 1.0 if slope > 0 else 0.0
    return {
        "slope": float(slope),
        "intercept": float(intercept),
        "r2": 1 - float((resid**2).sum()) / ss if ss > 0 else float("nan"),
        "last_slope": float((y[-1] - y[-2]) / (x[-1] - x[-2])),
        "at_value": float(np.clip(slope * np.log10(at) + intercept, 0.0, 1.0)),
        "bound_tokens": float(10 ** ((edge - intercept) / slope)) if slope != 0 else float("inf"),
    }


# --- The chapter: run, summary, claims --------------------------------------------------------------------------------


class ReferenceNull(NamedTuple):
    """What chapter 1 computes from the reference point's SAEs beyond `grid.score_entry` (cached)."""

    null_stability: Tensor
    """`(S, d_sae)`: per-feature stability of the untrained null (`stability.null_sae`; its mean is the grid
    table's `null_stability`)."""
    decoder_shared: float
    """Mean over seed pairs of the share of Hungarian-matched pairs whose decoder cosine passes tau."""
    encoder_shared: float
    """The same for the encoder cosine (the other half of the shared-latent rule)."""


def reference_null(study: GridStudy, entry: GridEntry) -> ReferenceNull:
    """The untrained null's per-latent stability and the two halves of the shared rule at `entry` (cached under
    `stability/`, keyed by the grid point's own key)."""

    def compute() -> ReferenceNull:
        sae, _ = grid.train_entry(study, entry, progress=False)
        null = stability.feature_stability(stability.null_sae(sae), study.stability).stability.cpu()
        pairs = matching.seed_pair_scores(sae, study.stability.threshold)
        return ReferenceNull(null, float(pairs.decoder_shared.mean()), float(pairs.encoder_shared.mean()))

    key = {"grid": grid.score_key(study, entry), "version": VERSION}
    return cached_result("stability", grid.sae_name(study, entry), key, compute)


class StabilityResult(NamedTuple):
    """Everything chapter 1 shows."""

    study: StabilityStudy
    """The study that produced it."""
    activations: pd.DataFrame
    """One row per layer: `layer`, `hook`, `train tokens collected`, `held-out contexts`."""
    table: pd.DataFrame
    """The grid table at the grid's small budget: one `grid.summary_row` per grid point."""
    reference: GridEntry
    """The reference grid point."""
    ref_row: dict
    """`grid.summary_row` of the reference SAEs: the reference point trained in depth (`grid.reference_study`)."""
    split: FeatureSplit
    """Their per-latent stability and labels."""
    null: ReferenceNull
    """Their untrained null's per-latent stability, and the halves of the shared rule."""
    shape: dict[str, float]
    """`bimodality` of their stability."""
    top_dimensions: pd.DataFrame
    """Per layer, the coordinates of largest variance: `layer`, `rank`, `dimension`, `variance_share`."""
    by_threshold: pd.DataFrame
    """`threshold_sweep` of the reference SAEs over `grid.thresholds`."""
    by_reference_seeds: pd.DataFrame
    """`reference_seed_sweep` of the reference SAEs: labels against N = 1 .. reference_seeds - 1 comparison seeds."""
    confusion: pd.DataFrame
    """`label_confusion` of the reference SAEs: the paper's endpoint labels against the all-pairs cut-offs."""
    latents: pd.DataFrame
    """`grid.latent_table` of the reference SAEs (alive latents of every seed)."""
    frequency_rho: float
    """`frequency_correlation` of the reference SAEs."""
    by_k: pd.DataFrame
    """The reference point's scores at the grid's k and at `compare_k` (grid budget), indexed by `k`."""
    whole: pd.DataFrame
    """Whole-SAE scores per grid point: shared fraction and PW-MCC, and their untrained nulls."""
    counts: pd.DataFrame
    """Latents per seed (rows) and label (columns) of the reference SAEs, dead excluded."""
    curve: pd.DataFrame
    """`budget_curve`: the reference point's scores against training tokens."""
    curve_fit: dict[str, dict[str, float]]
    """`log_fit` of each score of `curve` against log10 tokens, extrapolated to `PAPER_TOKENS`."""


K_COLUMNS = [
    "explained_variance",
    "l0",
    "dead_fraction",
    "ce_loss_score",
    "mean_stability",
    "stable_share",
    "unstable_share",
    "pw_mcc",
]
"""The columns of `StabilityResult.by_k`."""
WHOLE_COLUMNS = ["layer", "variant", "d_sae", "shared_fraction", "null_shared_fraction", "pw_mcc", "null_pw_mcc"]
"""The columns of `StabilityResult.whole`."""


PAPER_TOKENS = 1_000_000_000
"""Training tokens per SAE in the paper's reported setting (secondary source): the budget curve's extrapolation."""
FIT_COLUMNS = ("mean_stability", "stable_share", "unstable_share", "shared_fraction", "pw_mcc", "explained_variance")
"""The scores of the budget curve fitted against log tokens."""


def run(study: StabilityStudy, *, progress: bool = True) -> StabilityResult:
    """Train and score the grid (cached per grid point), the reference point in depth and its budget curve, then
    everything chapter 1 shows about the reference SAEs."""
    g = study.grid
    table, _, _ = grid.run_grid(g, progress=progress)
    entry = grid.reference_entry(g)
    deep = grid.reference_study(g)
    split, scores = grid.score_entry(deep, entry, progress=progress)
    breadth_row = table.set_index(["layer", "variant", "d_sae"]).loc[tuple(entry)].to_dict() | entry._asdict()
    k_rows = [breadth_row | {"k": g.k}]
    if study.compare_k:
        other = replace(g, k=study.compare_k)
        k_rows.append(
            grid.summary_row(entry, *grid.score_entry(other, entry, progress=progress)) | {"k": study.compare_k}
        )
    dims = pd.concat(
        {
            layer: grid.top_dimension_share(grid.load_store(g, layer, progress=False), study.n_top_dimensions)
            for layer in g.layers
        },
        names=["layer", "rank"],
    ).reset_index()
    latents = grid.latent_table(entry, split)
    activations = pd.DataFrame(
        [
            {
                "layer": a.layer,
                "hook": a.hook,
                "train tokens collected": a.n_train_tokens,
                "held-out contexts": a.n_eval_contexts,
            }
            for a in g.activations
        ]
    )
    curve = budget_curve(g, progress=progress)
    all_pairs = replace(g.stability, estimator="all_pairs")
    return StabilityResult(
        study=study,
        activations=activations,
        table=table,
        reference=entry,
        ref_row=grid.summary_row(entry, split, scores),
        split=split,
        null=reference_null(deep, entry),
        shape=bimodality(split.stability),
        top_dimensions=dims,
        by_threshold=threshold_sweep(split.max_cos, g.thresholds, g.stability, split.alive),
        by_reference_seeds=reference_seed_sweep(split.max_cos, g.stability, split.alive, study.n_draws),
        confusion=label_confusion(split.stability, g.stability, all_pairs),
        latents=latents,
        frequency_rho=frequency_correlation(split.stability, split.frequency),
        by_k=pd.DataFrame(k_rows).set_index("k")[K_COLUMNS],
        whole=table[WHOLE_COLUMNS],
        counts=latents.groupby(["seed", "label"]).size().unstack(fill_value=0),
        curve=curve,
        curve_fit={c: log_fit(curve.tokens, curve[c], PAPER_TOKENS) for c in FIT_COLUMNS},
    )


REF_KEYS = (
    "explained_variance",
    "l0",
    "dead_fraction",
    "ce_loss_score",
    "mean_stability",
    "stable_share",
    "unstable_share",
    "shared_fraction",
    "pw_mcc",
    "null_stability",
    "null_cov_stability",
    "null_shared_fraction",
    "null_pw_mcc",
)
"""Columns of the grid table that `summary` gives for the reference point, as `ref_<column>`."""


def sweep_summary(tau: pd.DataFrame, seeds: pd.DataFrame) -> dict[str, float]:
    """The threshold and seed-count sweeps' numbers the page glues: mean stability at the lowest and highest tau,
    and the label agreement with one comparison seed and with all but one."""
    return {
        "tau_lo": float(tau.threshold.iloc[0]),
        "tau_hi": float(tau.threshold.iloc[-1]),
        "stab_tau_lo": float(tau.mean_stability.iloc[0]),
        "stab_tau_hi": float(tau.mean_stability.iloc[-1]),
        "agree_one_ref": float(seeds.label_agreement.iloc[0]),
        "agree_last_but_one": float(seeds.label_agreement.iloc[-2]) if len(seeds) > 1 else 1.0,
    }


def summary(result: StabilityResult) -> dict[str, float | int | str]:
    """Every number chapter 1's prose quotes and its claims compare (plain floats, ints and strings)."""
    g, table, entry = result.study.grid, result.table, result.reference
    ref = result.ref_row
    nan = float("nan")
    curve, fit, conf = result.curve, result.curve_fit, result.confusion
    agree = sum(int(conf.iloc[i, i]) for i in range(len(conf))) / max(int(conf.values.sum()), 1)
    by_size = table.sort_values("d_sae").groupby(["layer", "variant"]).mean_stability
    trend = by_size.last() - by_size.first() if table.d_sae.nunique() > 1 else pd.Series([nan])
    top = result.top_dimensions[result.top_dimensions["rank"] == 0].variance_share
    tau, seeds = result.by_threshold, result.by_reference_seeds
    freq = result.latents.groupby("label").frequency.median()
    null = result.null.null_stability
    out: dict[str, float | int | str] = {
        "model": g.activations[0].model,
        "layers": ", ".join(str(layer) for layer in g.layers),
        "sizes": ", ".join(str(d) for d in g.sizes),
        "variants": ", ".join(g.variants),
        "n_seeds": g.n_seeds,
        "train_tokens": f"{g.train.n_tokens:,}",
        "n_points": len(table),
        "tau": g.stability.threshold,
        "stable_at": g.stability.stable_cut,
        "unstable_at": g.stability.unstable_cut,
        "estimator": g.stability.estimator,
        "epsilon": g.stability.epsilon,
        "all_pairs_stable_at": g.stability.stable_at,
        "all_pairs_unstable_at": g.stability.unstable_at,
        "ref_seeds": g.reference_seeds,
        "ref_n_comparisons": g.reference_seeds - 1,
        "ref_tokens": f"{max(g.budgets):,}",
        "ref_epochs": float(curve.epochs.iloc[-1]),
        "ref_collected": f"{g.activations_at(entry.layer).n_train_tokens:,}",
        "label_agreement": agree,
        "n_budgets": len(curve),
        "budget_span": float(curve.tokens.iloc[-1] / curve.tokens.iloc[0]),
        "curve_tokens_lo": f"{int(curve.tokens.iloc[0]):,}",
        "curve_tokens_hi": f"{int(curve.tokens.iloc[-1]):,}",
        **{f"curve_{c}_lo": float(curve[c].iloc[0]) for c in CURVE_COLUMNS[2:]},
        **{f"curve_{c}_hi": float(curve[c].iloc[-1]) for c in CURVE_COLUMNS[2:]},
        **{f"fit_{c}_{k}": v for c, f in fit.items() for k, v in f.items()},
        "fit_mean_stability_bound": _tokens_text(fit["mean_stability"]["bound_tokens"]),
        "fit_unstable_share_bound": _tokens_text(fit["unstable_share"]["bound_tokens"]),
        "ref_name": entry.name,
        **{f"ref_{k}": float(ref.get(k, nan)) for k in REF_KEYS},
        **{f"breadth_ref_{k}": float(result.by_k[k].iloc[0]) for k in ("mean_stability", "stable_share")},
        "ref_null_share_zero": float((null[~torch.isnan(null)] == 0).double().mean()),
        "ev_min": float(table.explained_variance.min()),
        "ev_max": float(table.explained_variance.max()),
        "ce_min": float(table.get("ce_loss_score", pd.Series([nan])).min()),
        "ce_max": float(table.get("ce_loss_score", pd.Series([nan])).max()),
        "stab_min": float(table.mean_stability.min()),
        "stab_max": float(table.mean_stability.max()),
        "null_stab_max": float(table.null_stability.max()),
        "null_cov_min": float(table.null_cov_stability.min()),
        "null_cov_max": float(table.null_cov_stability.max()),
        "n_above_null": int((table.mean_stability > table.null_stability).sum()),
        "n_above_cov": int((table.mean_stability > table.null_cov_stability).sum()),
        "size_trend_min": float(trend.min()),
        "size_trend_max": float(trend.max()),
        **{f"shape_{k}": float(v) for k, v in result.shape.items()},
        "top_dim_share_min": float(top.min()),
        "top_dim_share_max": float(top.max()),
        **sweep_summary(tau, seeds),
        "freq_rho": float(result.frequency_rho),
        "freq_stable": float(freq.get("stable", nan)),
        "freq_unstable": float(freq.get("unstable", nan)),
        "k_grid": g.k,
        "k_other": int(result.by_k.index[-1]),
        "stab_k_other": float(result.by_k.mean_stability.iloc[-1]),
        "ev_k_other": float(result.by_k.explained_variance.iloc[-1]),
        "ref_decoder_shared": result.null.decoder_shared,
        "ref_encoder_shared": result.null.encoder_shared,
    }
    return out


BIMODAL_ABOVE = 5 / 9
"""Sarle's bimodality coefficient of the uniform distribution: values above it suggest two modes."""
FREQUENCY_RHO_ABOVE = 0.1
"""Spearman correlation of stability with frequency above which "rarer features are less stable" holds."""
PAULO_BELROSE_SHARED = 0.416
"""Paulo & Belrose 2025 (related work): shared fraction of a 32k-latent, k = 32 TopK SAE on Pythia-160M layer 6 MLP
(seeds 1, 2)."""
SONG_PW_MCC = 0.80
"""Song et al. 2025 (related work): PW-MCC of TopK SAEs on LLM activations."""
SHARED_TOLERANCE, PW_MCC_TOLERANCE = 0.10, 0.10
"""How far our shared fraction and PW-MCC may be from related work's and still count as comparable."""


def _tokens_text(n: float) -> str:
    """A token count as the prose reads it: `3.2M`, `45B`, or `never` (inf)."""
    if not math.isfinite(n):
        return "never"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2g}{unit}"
    return f"{n:.0f}"


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def claims(s: dict[str, float | int | str]) -> list[Claim]:
    """Chapter 1's verdicts from `summary`'s numbers: the paper's statements (and two comparisons with related work,
    whose numbers are not the paper's), each with its criterion."""
    bc, n, lo, hi = s["shape_bimodality_coefficient"], s["n_points"], s["size_trend_min"], s["size_trend_max"]
    fs, fu, rho = s["freq_stable"], s["freq_unstable"], s["freq_rho"]
    sf, mcc = s["ref_shared_fraction"], s["ref_pw_mcc"]
    return [
        claim(
            "A per-feature score separates stable from unstable features: its distribution has two modes",
            f"Sarle's bimodality coefficient of the reference point's stability > 5/9 = {BIMODAL_ABOVE:.2f} (the "
            "uniform distribution's)",
            f"{bc:.2f} ({s['shape_share_zero']:.0%} of alive latents at 0, {s['shape_share_one']:.0%} at 1)",
            bc > BIMODAL_ABOVE if _finite(bc) else None,
        ),
        claim(
            "Trained features reappear across seeds more often than chance (untrained SAEs)",
            "mean stability above the untrained null's at every grid point",
            f"{s['n_above_null']} of {n} points (mean stability {s['stab_min']:.2f}-{s['stab_max']:.2f}, "
            f"null at most {s['null_stab_max']:.2f})",
            s["n_above_null"] == n,
        ),
        claim(
            "... and more often than random directions drawn from the activation covariance",
            "mean stability above the covariance null's at every grid point",
            f"{s['n_above_cov']} of {n} points (null {s['null_cov_min']:.2f}-{s['null_cov_max']:.2f})",
            s["n_above_cov"] == n,
        ),
        claim(
            "Stability moves with dictionary size",
            "largest minus smallest size's mean stability has one sign at every layer and variant (not measured "
            "with one size)",
            f"{lo:+.2f} to {hi:+.2f}" if _finite(lo, hi) else "one size",
            (hi < 0 or lo > 0) if _finite(lo, hi) else None,
        ),
        claim(
            "Unstable features are low-frequency",
            "median firing frequency of unstable latents below that of stable ones at the reference point",
            f"unstable {fu:.3%} vs stable {fs:.3%} of tokens" if _finite(fu, fs) else "no stable or unstable latents",
            fu < fs if _finite(fu, fs) else None,
            paper="unstable fire on about 0.18% of tokens, stable on about 0.44% (reported, secondary source)",
        ),
        claim(
            "Rarer features are less stable",
            f"Spearman correlation of stability with firing frequency > {FREQUENCY_RHO_ABOVE} at the reference point",
            float(rho),
            rho > FREQUENCY_RHO_ABOVE if _finite(rho) else None,
        ),
        claim(
            "Our shared fraction is comparable to related work's (matched decoder and encoder cosines > 0.7)",
            f"within {SHARED_TOLERANCE * 100:.0f} percentage points of {PAULO_BELROSE_SHARED:.1%} at the reference "
            "point",
            f"{sf:.1%} (untrained {s['ref_null_shared_fraction']:.1%})",
            abs(sf - PAULO_BELROSE_SHARED) < SHARED_TOLERANCE if _finite(sf) else None,
            paper=f"{PAULO_BELROSE_SHARED:.1%}: related work, not this paper (Paulo & Belrose 2025; Pythia-160M "
            "layer 6 MLP, 32k latents, k = 32)",
        ),
        claim(
            "Our PW-MCC is comparable to related work's (mean Hungarian-matched decoder cosine)",
            f"within {PW_MCC_TOLERANCE:.2f} of {SONG_PW_MCC:.2f} at the reference point",
            f"{mcc:.2f} (untrained {s['ref_null_pw_mcc']:.2f})",
            abs(mcc - SONG_PW_MCC) < PW_MCC_TOLERANCE if _finite(mcc) else None,
            paper=f"{SONG_PW_MCC:.2f}: related work, not this paper (Song et al. 2025; TopK SAEs on LLMs)",
        ),
    ]
