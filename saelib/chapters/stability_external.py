"""Chapter 1 on anyone's SAEs: the parts of `chapters.stability` that need only the SAEs' weights, run on folders that
`saelib.external` reads (SAELens, sparsify, dictionary_learning, saelib stacks), for the notebook parameter
`SAE_PATHS`.

Computed, exactly as the chapter computes them at its reference point (every SAE is a seed, each the anchor in
turn): per-feature stability and the paper's endpoint labels, the untrained null of the same shapes, the shape of the
distribution, the endpoint-vs-cut-off label table, the sweeps over the number of comparison seeds and over tau, the
whole-SAE scores (Hungarian shared fraction, PW-MCC, and their nulls) and the verdicts that need only these.
Not computed, because they need activations or training: the grid, the budget curve, explained variance, L0 and
CE-loss, dead latents (every latent counts as alive), firing frequency, the covariance null and the other-k
comparison. `summary` still gives every key the chapter's page glues (NaN for numbers, "n/a" for text), so the page
builds in both modes; `note` says at the top of the page which is which. Nothing here is cached: the folders may
change between runs, and scoring a few SAEs from their weights takes seconds to minutes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure

from saelib import external, matching
from saelib.chapters import stability as chapter
from saelib.chapters.common import Claim, claim
from saelib.chapters.stability import ReferenceNull, StabilityStudy
from saelib.config import resolve_device
from saelib.stability import INTERMEDIATE, LABEL_NAMES, STABLE, UNSTABLE, FeatureStability, feature_stability, null_sae

NOT_AVAILABLE = "n/a"
"""What the page shows for a text value that external SAEs cannot give (numbers are NaN)."""

SKIPPED_TABLES = {
    "activations": "the activations the book's SAEs are trained on",
    "table": "the grid: SAEs trained for the book at every layer, variant and size",
    "curve": "the budget curve: the reference point trained at several token budgets",
    "top_dimensions": "the activations' covariance",
    "by_k": "training the reference point at another k",
}
"""The chapter's tables that need activations or training, and what each needs."""

TEXT_KEYS = (
    "model",
    "layers",
    "sizes",
    "variants",
    "train_tokens",
    "ref_tokens",
    "ref_collected",
    "curve_tokens_lo",
    "curve_tokens_hi",
    "fit_mean_stability_bound",
    "fit_unstable_share_bound",
)
"""Text keys of `chapter.summary` that external SAEs leave at `NOT_AVAILABLE`."""
COUNT_KEYS = ("n_points", "n_budgets", "k_grid", "k_other", "n_above_null", "n_above_cov")
"""Integer keys of `chapter.summary` without a value here (`NOT_AVAILABLE`: the page quotes them unformatted)."""
FIT_KEYS = ("slope", "intercept", "r2", "last_slope", "at_value", "bound_tokens")
"""The keys of `chapter.log_fit`."""
NUMBER_KEYS = (
    "ref_epochs",
    "budget_span",
    *(f"curve_{c}_{end}" for c in chapter.CURVE_COLUMNS[2:] for end in ("lo", "hi")),
    *(f"fit_{c}_{k}" for c in chapter.FIT_COLUMNS for k in FIT_KEYS),
    *(f"ref_{k}" for k in chapter.REF_KEYS),
    "breadth_ref_mean_stability",
    "breadth_ref_stable_share",
    "ev_min",
    "ev_max",
    "ce_min",
    "ce_max",
    "stab_min",
    "stab_max",
    "null_stab_max",
    "null_cov_min",
    "null_cov_max",
    "size_trend_min",
    "size_trend_max",
    "top_dim_share_min",
    "top_dim_share_max",
    "freq_rho",
    "freq_stable",
    "freq_unstable",
    "stab_k_other",
    "ev_k_other",
)
"""Float keys of `chapter.summary`: NaN unless computed here (the `ref_` scores of the weights are)."""


class ExternalStabilityResult(NamedTuple):
    """What chapter 1 shows of external SAEs; the fields the page uses have the names of `StabilityResult`'s."""

    study: StabilityStudy
    """The chapter's study: its stability settings (tau, epsilon, cut-offs, thresholds, draws) are the ones used."""
    sources: pd.DataFrame
    """One row per SAE (seed): `seed`, `source`, `format`, `hook`, `k`."""
    d_in: int
    """Input width shared by the SAEs."""
    d_sae: int
    """Latents per SAE."""
    split: FeatureStability
    """Per-feature stability of every SAE against the others (no latent dead: that needs activations)."""
    null: ReferenceNull
    """The untrained null's per-latent stability, and the two halves of the shared rule of the real SAEs."""
    shape: dict[str, float]
    """`chapter.bimodality` of the stability."""
    by_threshold: pd.DataFrame
    """`chapter.threshold_sweep` over the study's thresholds."""
    by_reference_seeds: pd.DataFrame
    """`chapter.reference_seed_sweep`: labels against N = 1 .. S - 1 comparison seeds."""
    confusion: pd.DataFrame
    """`chapter.label_confusion`: the paper's endpoint labels against the all-pairs cut-offs."""
    whole: pd.DataFrame
    """One row: shared fraction and PW-MCC (means over pairs of SAEs) and their untrained nulls."""
    pairs: pd.DataFrame
    """`matching.seed_pair_scores` of every pair of SAEs, real (`kind == "sae"`) and null (`kind == "null"`)."""
    counts: pd.DataFrame
    """Latents per seed (rows) and label (columns)."""
    activations: pd.DataFrame
    """A one-row table saying it was not computed (as are `table`, `curve`, `top_dimensions` and `by_k`)."""
    table: pd.DataFrame
    curve: pd.DataFrame
    top_dimensions: pd.DataFrame
    by_k: pd.DataFrame


def parse_paths(paths: str | Path | Sequence[str | Path]) -> list[str]:
    """`SAE_PATHS` as a list: a list as it is, a string holding a JSON list (what `papermill -p` passes) parsed,
    any other string or path as the one path or glob it is."""
    if isinstance(paths, Path):
        return [str(paths)]
    if isinstance(paths, str):
        if paths.lstrip().startswith("["):
            try:
                parsed = json.loads(paths)
            except json.JSONDecodeError:
                raise ValueError(f"SAE_PATHS={paths!r} starts like a JSON list but is not one") from None
            return parse_paths(parsed)
        return [paths]
    out = [str(p) for p in paths]
    if not out:
        raise ValueError("SAE_PATHS is empty: give the SAEs' folders or a glob")
    return out


def skipped_table(what: str) -> pd.DataFrame:
    """The one-row table the page shows in place of a table that needs `what`."""
    return pd.DataFrame({"not computed for external SAEs": [f"needs {what}"]})


def run(paths: str | Sequence[str | Path], study: StabilityStudy) -> ExternalStabilityResult:
    """Chapter 1's weight-only analyses of the SAEs at `paths` (folders or globs in any format
    `saelib.external.read_sae` reads, one SAE per seed; a saelib stack counts as its seeds), with `study`'s
    stability settings, on `study.grid.train.device`.

    Args:
        paths: as for `saelib.external.load_stack`, or a string holding a JSON list of them (`parse_paths`).
        study: chapter 1's study (`chapter.study(scale, device)`); only its stability settings are used.
    """
    saes = external.read_saes(parse_paths(paths))
    sources = pd.DataFrame(
        [{"seed": i, "source": s.source, "format": s.format, "hook": s.hook, "k": s.k} for i, s in enumerate(saes)]
    )
    d_in, d_sae = saes[0].d_in, saes[0].d_sae
    stack = external.stack_saes(saes, resolve_device(study.grid.train.device))
    del saes
    g, cfg = study.grid, study.grid.stability
    split = feature_stability(stack, cfg)
    null_stack = null_sae(stack)
    null = feature_stability(null_stack, cfg)
    real_pairs = matching.seed_pair_scores(stack, cfg.threshold).assign(kind="sae")
    null_pairs = matching.seed_pair_scores(null_stack, cfg.threshold).assign(kind="null")
    del stack, null_stack
    split = split._replace(
        stability=split.stability.cpu(),
        mean_max_cos=split.mean_max_cos.cpu(),
        max_cos=split.max_cos.cpu(),
        label=split.label.cpu(),
    )
    whole = pd.DataFrame(
        [
            {
                "SAEs": len(sources),
                "d_sae": d_sae,
                "shared_fraction": float(real_pairs.shared_fraction.mean()),
                "null_shared_fraction": float(null_pairs.shared_fraction.mean()),
                "pw_mcc": float(real_pairs.matched_cosine.mean()),
                "null_pw_mcc": float(null_pairs.matched_cosine.mean()),
            }
        ]
    )
    names = [LABEL_NAMES[c] for c in (UNSTABLE, INTERMEDIATE, STABLE)]
    counts = pd.DataFrame(
        [[int((split.label[s] == c).sum()) for c in (UNSTABLE, INTERMEDIATE, STABLE)] for s in range(len(sources))],
        index=pd.Index(range(len(sources)), name="seed"),
        columns=pd.Index(names, name="label"),
    )
    return ExternalStabilityResult(
        study=study,
        sources=sources,
        d_in=d_in,
        d_sae=d_sae,
        split=split,
        null=ReferenceNull(
            null.stability.cpu(), float(real_pairs.decoder_shared.mean()), float(real_pairs.encoder_shared.mean())
        ),
        shape=chapter.bimodality(split.stability),
        by_threshold=chapter.threshold_sweep(split.max_cos, g.thresholds, cfg),
        by_reference_seeds=chapter.reference_seed_sweep(split.max_cos, cfg, None, study.n_draws),
        confusion=chapter.label_confusion(split.stability, cfg, replace(cfg, estimator="all_pairs")),
        whole=whole,
        pairs=pd.concat([real_pairs, null_pairs], ignore_index=True),
        counts=counts,
        **{name: skipped_table(what) for name, what in SKIPPED_TABLES.items()},
    )


def describe(result: ExternalStabilityResult) -> str:
    """A short name for the SAEs, as the page's prose uses `ref_name`: `3 SAELens SAEs (24 latents)`."""
    formats = set(result.sources.format)
    fmt = next(iter(formats)).replace("saelens", "SAELens") if len(formats) == 1 else "external"
    return f"{len(result.sources)} {fmt} SAEs ({result.d_sae:,} latents)"


def summary(result: ExternalStabilityResult) -> dict[str, float | int | str]:
    """Every key `chapter.summary` gives (so that the chapter's page glues in both modes): the numbers the weights
    determine computed as the chapter computes them, the others NaN (numbers) or `NOT_AVAILABLE` (text); plus
    `n_saes`, `d_in`, `d_sae` and `sources`."""
    cfg, S = result.study.grid.stability, len(result.sources)
    stab, label, nullstab = result.split.stability, result.split.label, result.null.null_stability
    conf, tau, seeds = result.confusion, result.by_threshold, result.by_reference_seeds
    pairs = result.pairs
    real, null = pairs[pairs.kind == "sae"], pairs[pairs.kind == "null"]
    out: dict[str, float | int | str] = {k: NOT_AVAILABLE for k in (*TEXT_KEYS, *COUNT_KEYS)}
    out |= {k: math.nan for k in NUMBER_KEYS}
    n_alive = max(int((label >= 0).sum()), 1)
    out |= {
        "n_seeds": S,
        "tau": cfg.threshold,
        "stable_at": cfg.stable_cut,
        "unstable_at": cfg.unstable_cut,
        "estimator": cfg.estimator,
        "epsilon": cfg.epsilon,
        "all_pairs_stable_at": cfg.stable_at,
        "all_pairs_unstable_at": cfg.unstable_at,
        "ref_seeds": S,
        "ref_n_comparisons": S - 1,
        "ref_tokens": "an unknown number of",
        "ref_name": describe(result),
        "label_agreement": sum(int(conf.iloc[i, i]) for i in range(len(conf))) / max(int(conf.values.sum()), 1),
        "ref_mean_stability": float(stab.nanmean()),
        "ref_stable_share": int((label == STABLE).sum()) / n_alive,
        "ref_unstable_share": int((label == UNSTABLE).sum()) / n_alive,
        "ref_shared_fraction": float(real.shared_fraction.mean()),
        "ref_pw_mcc": float(real.matched_cosine.mean()),
        "ref_null_stability": float(nullstab.nanmean()),
        "ref_null_shared_fraction": float(null.shared_fraction.mean()),
        "ref_null_pw_mcc": float(null.matched_cosine.mean()),
        "ref_null_share_zero": float((nullstab[~torch.isnan(nullstab)] == 0).double().mean()),
        "ref_decoder_shared": result.null.decoder_shared,
        "ref_encoder_shared": result.null.encoder_shared,
        **{f"shape_{k}": float(v) for k, v in result.shape.items()},
        **chapter.sweep_summary(tau, seeds),
        "n_saes": S,
        "d_in": result.d_in,
        "d_sae": result.d_sae,
        "sources": "; ".join(result.sources.source),
    }
    return out


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def claims(s: dict[str, Any]) -> list[Claim]:
    """The verdicts of chapter 1 that the weights alone decide (criteria as in `chapter.claims`, at the SAEs given
    instead of the reference point): bimodality, above the untrained null, and the comparisons with related work."""
    bc, mean, null = s["shape_bimodality_coefficient"], s["ref_mean_stability"], s["ref_null_stability"]
    sf, mcc = s["ref_shared_fraction"], s["ref_pw_mcc"]
    return [
        claim(
            "A per-feature score separates stable from unstable features: its distribution has two modes",
            f"Sarle's bimodality coefficient of the SAEs' stability > 5/9 = {chapter.BIMODAL_ABOVE:.2f} (the "
            "uniform distribution's)",
            f"{bc:.2f} ({s['shape_share_zero']:.0%} of latents at 0, {s['shape_share_one']:.0%} at 1)",
            bc > chapter.BIMODAL_ABOVE if _finite(bc) else None,
        ),
        claim(
            "Trained features reappear across seeds more often than chance (untrained SAEs)",
            "mean stability of the SAEs above that of untrained SAEs of the same shapes",
            f"{mean:.2f} vs {null:.2f}",
            mean > null if _finite(mean, null) else None,
        ),
        claim(
            "Our shared fraction is comparable to related work's (matched decoder and encoder cosines > 0.7)",
            f"within {chapter.SHARED_TOLERANCE * 100:.0f} percentage points of {chapter.PAULO_BELROSE_SHARED:.1%}",
            f"{sf:.1%} (untrained {s['ref_null_shared_fraction']:.1%})",
            abs(sf - chapter.PAULO_BELROSE_SHARED) < chapter.SHARED_TOLERANCE if _finite(sf) else None,
            paper=f"{chapter.PAULO_BELROSE_SHARED:.1%}: related work, not this paper (Paulo & Belrose 2025; "
            "Pythia-160M layer 6 MLP, 32k latents, k = 32)",
        ),
        claim(
            "Our PW-MCC is comparable to related work's (mean Hungarian-matched decoder cosine)",
            f"within {chapter.PW_MCC_TOLERANCE:.2f} of {chapter.SONG_PW_MCC:.2f}",
            f"{mcc:.2f} (untrained {s['ref_null_pw_mcc']:.2f})",
            abs(mcc - chapter.SONG_PW_MCC) < chapter.PW_MCC_TOLERANCE if _finite(mcc) else None,
            paper=f"{chapter.SONG_PW_MCC:.2f}: related work, not this paper (Song et al. 2025; TopK SAEs on LLMs)",
        ),
    ]


def note(result: ExternalStabilityResult):
    """The note at the top of the page (an `IPython.display.Markdown`): which SAEs were scored, what was computed
    from their weights and what was not."""
    from IPython.display import Markdown

    rows = "\n".join(  # a list, not a table: the book renders outputs' Markdown as CommonMark, which has no tables
        f"- seed {r.seed}: `{r.source}` ({r.format}, hook {r.hook or 'not recorded'}, k {r.k or 'not recorded'})"
        for r in result.sources.itertuples()
    )
    return Markdown(
        f"**This page was rendered on external SAEs** (the notebook parameter `SAE_PATHS`), not on SAEs trained for "
        f"this book: {describe(result)}, d_in = {result.d_in:,}. Each counts as one seed, and each is the anchor "
        "in turn, as the book's reference SAEs are.\n\n"
        f"{rows}\n\n"
        "**Computed from their weights:** per-feature stability and its labels, its distribution against untrained "
        "SAEs of the same shapes, the label table, the sweeps over the number of comparison seeds and over the "
        "threshold, the whole-SAE scores (shared fraction, PW-MCC) and the verdicts that need only these.\n\n"
        "**Not computed, because they need activations or training:** the grid and its figure, the budget curve "
        "(its figure, table and fit), explained variance, L0 and CE-loss score, firing frequency and its figure, "
        "the covariance null and its table, the other k. Every latent counts as alive (finding dead latents needs "
        "activations). Their tables and figures below say so, and their numbers in the prose read nan or n/a; the "
        "prose about the book's own training (tokens, scales) describes the book's SAEs, not these."
    )


def skipped_figure(what: str) -> Figure:
    """A small figure that says the figure in its place was not computed, and what it needs."""
    fig, ax = plt.subplots(figsize=(8, 1.2))  # an axes, not only text: IPython does not render a figure without one
    ax.axis("off")
    ax.text(0.5, 0.5, f"Not computed for external SAEs: needs {what}.", ha="center", va="center", wrap=True)
    return fig
