"""Chapter 2: the functional asymmetry of stable and unstable latents (claim 2 of Gerasimov et al. 2026; book/intro.md).

The chapter's contract (`saelib.chapters.common`): `study(scale, device)` -> `AsymmetryStudy`, `run(study)` ->
`AsymmetryResult` (every expensive step cached through `cache.cached_result`), `summary(result)` (the numbers the
prose glues) and `claims(summary)` (the chapter's verdicts).

The pieces `run` assembles live in `saelib.chapters.asymmetry_cuts` (the cuts, their random controls and tables,
`table_summary`), `saelib.chapters.asymmetry_latents` (per-latent statistics, single-latent ablations, surface forms
and examples) and `saelib.chapters.asymmetry_paper` (the paper's own analyses); this module re-exports their names.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from saelib import masking, metrics
from saelib.cache import cached_result
from saelib.chapters import asymmetry_paper, common, grid
from saelib.chapters.asymmetry_cuts import CUT_METRICS as CUT_METRICS  # re-exported
from saelib.chapters.asymmetry_cuts import LABELS, cut_summary, cut_table, feature_cuts, table_summary
from saelib.chapters.asymmetry_cuts import FeatureCuts as FeatureCuts  # re-exported
from saelib.chapters.asymmetry_latents import (
    EXPLANATION_COLUMNS,
    LABEL_ORDER,
    choose_examples,
    choose_explained,
    eligible_latents,
    feature_ablation_effects,
    firing_contexts,
    label_table,
    latent_stats_table,
    marginal_table,
    sample_per_bin,
)
from saelib.chapters.asymmetry_latents import example_html as example_html  # re-exported
from saelib.chapters.asymmetry_paper import PAPER_FREQUENCY
from saelib.chapters.asymmetry_paper import SECONDARY as SECONDARY  # the marker of reported numbers, re-exported
from saelib.chapters.grid import FeatureSplit, GridEntry, GridStudy
from saelib.config import check_positive
from saelib.lm import explainer, interp, splice
from saelib.lm.activations import load_model, model_slug
from saelib.masking import mass_matched_subset as mass_matched_subset  # re-exported (the controls' draws)
from saelib.masking import random_subset as size_matched_subset  # noqa: F401 (re-exported)

VERSION = 1
"""Bumped when a cached chapter-2 result would be computed differently (it is in every key, `asymmetry_key`)."""


# --- The study ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AsymmetryStudy:
    """The SAEs studied (chapter 1's reference grid point) and the budgets of the chapter's experiments
    (book/methods.md, chapter 2)."""

    grid: GridStudy
    """Chapter 1's grid; its `reference` point's seeds and stable/unstable split are studied."""
    control_draws: int = 5
    """Random control subsets drawn per (group, control kind) for explained variance (cheap)."""
    ce_control_draws: int = 2
    """How many of those draws are also spliced into the model (each costs a forward pass per context)."""
    mass_tolerance: float = 0.05
    """A mass-matched control's total activation mass lies within this relative distance of its group's."""
    control_pool: str = "complement"
    """Where controls are drawn from: `complement` (alive latents outside the group; all alive latents when the
    complement cannot match the group) or `all` (all alive latents)."""
    ce_seeds: int = 1
    """Seeds (the first ones of the stack) spliced into the model for the CE experiments."""
    ce_context_len: int | None = None
    """Tokens kept of each CE and ablation context (None: all); the model is causal, so a prefix is a shorter
    context."""
    marginal_per_bin: int = 6
    """Latents of seed 0 per stability level ablated one at a time."""
    marginal_contexts: int = 2
    """Held-out contexts (among those where the latent fires) per ablated latent."""
    n_top: int = 20
    """Top-activating tokens kept per latent (surface-form statistics, explanations)."""
    top_max_tokens: int | None = 300_000
    """Training-split tokens scanned for top activations (None: all)."""
    interp_seeds: int = 1
    """Seeds whose latents get top contexts and trigger statistics."""
    n_random: int = 500
    """Random tokens whose latents are recorded, as non-activating examples for explanation scoring."""
    n_examples: int = 3
    """Latents per label whose top contexts are shown (seed 0)."""
    explain_per_bin: int = 5
    """Latents per label (stable, unstable) explained and scored, when an explainer endpoint is configured."""
    mask_ratio: int = 4
    """The paper's masking: unstable latents removed per stable one (`masking.removal_cuts`)."""
    mask_n: int | None = None
    """N, the stable latents removed per seed (None: `masking.largest_n`, the most every seed allows)."""
    mask_draws: int = 5
    """Random draws of each masking cut and of its count- and mass-matched controls (explained variance); the first
    `ce_control_draws` of them are spliced into the model."""
    mask_ce_seeds: int | None = 2
    """Seeds (the first ones) whose masking cuts are spliced into the model for CE (None: all)."""
    seed: int = 0
    """Seed of every random draw of the chapter."""

    def __post_init__(self) -> None:
        check_positive(
            "AsymmetryStudy",
            control_draws=self.control_draws,
            ce_seeds=self.ce_seeds,
            marginal_per_bin=self.marginal_per_bin,
            marginal_contexts=self.marginal_contexts,
            n_top=self.n_top,
            interp_seeds=self.interp_seeds,
            n_random=self.n_random,
            n_examples=self.n_examples,
            explain_per_bin=self.explain_per_bin,
            mask_ratio=self.mask_ratio,
            mask_draws=self.mask_draws,
        )
        for name in ("mask_n", "mask_ce_seeds"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"AsymmetryStudy.{name}={getattr(self, name)} must be None or >= 1")
        if self.ce_control_draws > self.mask_draws:
            raise ValueError(f"AsymmetryStudy.ce_control_draws={self.ce_control_draws} must be <= mask_draws")
        if not 1 <= self.ce_control_draws <= self.control_draws:
            raise ValueError(f"AsymmetryStudy.ce_control_draws={self.ce_control_draws} must lie in [1, control_draws]")
        if not 0 < self.mass_tolerance < 1:
            raise ValueError(f"AsymmetryStudy.mass_tolerance={self.mass_tolerance} must lie in (0, 1)")
        if self.control_pool not in ("complement", "all"):
            raise ValueError(f"AsymmetryStudy.control_pool={self.control_pool!r} must be 'complement' or 'all'")
        for name in ("ce_context_len", "top_max_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                raise ValueError(f"AsymmetryStudy.{name}={getattr(self, name)} must be None or >= 2")


_SCALES: dict[str, dict] = {
    "smoke": dict(
        control_draws=2,
        ce_control_draws=1,
        ce_context_len=12,
        marginal_per_bin=1,
        marginal_contexts=1,
        n_top=8,
        top_max_tokens=None,
        n_random=100,
        explain_per_bin=1,
        mask_draws=2,
        mask_ce_seeds=None,
    ),
    "default": {},
    "gpu": dict(
        control_draws=10,
        ce_control_draws=5,
        ce_seeds=5,
        marginal_per_bin=32,
        marginal_contexts=4,
        top_max_tokens=None,
        interp_seeds=5,
        explain_per_bin=25,
        mask_draws=10,
        mask_ce_seeds=5,
    ),
    "paper": dict(
        control_draws=20,
        ce_control_draws=10,
        ce_seeds=5,
        marginal_per_bin=64,
        marginal_contexts=8,
        top_max_tokens=None,
        interp_seeds=5,
        explain_per_bin=50,
        mask_draws=20,
        mask_ce_seeds=None,
    ),
}
"""Each scale's budgets (fields not named keep `AsymmetryStudy`'s defaults, the `default` scale's)."""


def study(scale: str = "default", device: str = "auto", **overrides) -> AsymmetryStudy:
    """The chapter at a named scale (`smoke`, `default`, `gpu`, `paper`): the grid's study at that scale plus the
    chapter's budgets; `overrides` replace fields (None keeps the scale's value)."""
    return common.preset(_preset, scale, device, **overrides)


def _preset(scale: str, device: str) -> AsymmetryStudy:
    return AsymmetryStudy(grid.study(scale, device), **_SCALES[scale])


def asymmetry_key(grid_study: GridStudy, entry: GridEntry, **params) -> dict:
    """Cache key of one chapter-2 step on a grid point: the grid point's own key (its SAEs and split) and `params`."""
    return {"grid": grid.score_key(grid_study, entry), "params": params, "version": VERSION}


def cut_params(study: AsymmetryStudy) -> dict:
    """Every field of `study` that changes `feature_cuts`' masks, for the keys of the results measured on them."""
    return {
        "control_draws": study.control_draws,
        "mass_tolerance": study.mass_tolerance,
        "control_pool": study.control_pool,
        "seed": study.seed,
    }


# --- run ----------------------------------------------------------------------------------------------------------


class AsymmetryResult(NamedTuple):
    """Everything chapter 2 computed on the reference grid point."""

    study: AsymmetryStudy
    """The study that produced it."""
    entry: GridEntry
    """The grid point studied."""
    split: FeatureSplit
    """Its per-latent stability and labels."""
    latents: pd.DataFrame
    """One row per alive latent of every seed (`latent_stats_table`)."""
    by_label: pd.DataFrame
    """Latent counts, mass share and median statistics per label (`label_table`)."""
    n_eval_tokens: int
    """Held-out tokens of the activation statistics and explained variance."""
    cuts: pd.DataFrame
    """Every cut and control draw with its `ev` and, for the spliced draws, `ce_loss_score`, `delta_loss`,
    `kl_div` (`cut_table`)."""
    ev_by_cut: pd.DataFrame
    """`cut_summary(cuts, "ev")`."""
    ce_by_cut: pd.DataFrame
    """`cut_summary(cuts, "ce_loss_score")`."""
    ce: splice.MaskedSplice
    """The spliced-CE measurement of the cuts (clean and zero-ablation loss, tokens, seeds)."""
    n_ce_contexts: int
    """Held-out contexts spliced."""
    marginal: pd.DataFrame
    """One row per ablated latent of seed 0 (`marginal_table`)."""
    marginal_by_level: pd.DataFrame
    """Mean `n_firing`, `delta_loss_per_firing`, `delta_loss_per_token` per stability level."""
    triggers: pd.DataFrame
    """`interp.trigger_stats` of the interpreted seeds joined with `latents`."""
    triggers_by_label: pd.DataFrame
    """Mean and count of `top_share`, `entropy_bits`, `n_distinct` per label."""
    n_top_rows: int
    """Training tokens scanned for top activations."""
    interp_seeds: int
    """Seeds whose latents got top activations."""
    examples: dict[str, pd.DataFrame]
    """Per label, `interp.top_contexts_table` (HTML contexts) of the example latents."""
    explanations: pd.DataFrame
    """One row per explained latent (`explainer.explain_and_score` plus `label`); empty without an endpoint."""
    explainer: str | None
    """The explainer's model name; None when no endpoint was configured."""
    masking: pd.DataFrame | None = None
    """The paper's masking, one row per (cut, seed) (`asymmetry_paper.masking_table`); None when not measured."""
    firing: dict | None = None
    """`masking.firing_rate_summary` of the stable and unstable latents (all seeds); None when not measured."""


def run(study: AsymmetryStudy, *, progress: bool = False) -> AsymmetryResult:
    """All of chapter 2 on the grid's reference point; every expensive step goes through the cache.

    Loads the language model (for the store, the splices and the tokenizer), reads chapter 1's SAEs and split (trained
    and scored first when not cached), then: activation statistics (`stats`), explained variance of every cut (`ev`),
    spliced CE of the first `ce_control_draws` draws (`ce`), single-latent ablations (`marginal`), top activations
    (`top`) and, when `explainer.ExplainerConfig.from_env()` names an endpoint, explanations (`explanations-<label>`).
    """
    g = grid.reference_study(study.grid)  # the reference SAEs: the reference point trained in depth
    entry = grid.reference_entry(g)
    lm = load_model(g.activations_at(entry.layer).model, device=g.train.device)
    store = grid.load_store(g, entry.layer, lm=lm, progress=progress)
    sae, _ = grid.train_entry(g, entry, lm=lm, progress=progress)
    split = grid.load_split(g, entry, lm=lm)
    layer, hook = store.info["layer"], store.info["hook"]
    name = f"{model_slug(lm.name)}-{entry.name}"
    x_eval = functools.cache(store.eval.load_all)  # read only when a step is computed

    def cached(artifact: str, compute, **params):  # the names and keys of the notebook this replaced
        return cached_result("asymmetry", f"{name}-{artifact}", asymmetry_key(g, entry, **params), compute)

    # Activation statistics per latent (held-out tokens).
    stats = cached("stats", lambda: metrics.feature_activation_stats(sae, x_eval()), step="stats")
    latents = latent_stats_table(entry, split, stats)

    # Reconstruction and prediction with each cut.
    cuts = feature_cuts(
        split.label,
        stats.mass.cpu(),
        control_draws=study.control_draws,
        mass_tolerance=study.mass_tolerance,
        control_pool=study.control_pool,
        seed=study.seed,
    )
    ev = cached(
        "ev",
        lambda: metrics.masked_explained_variance(sae, x_eval(), cuts.masks),
        step="ev",
        cuts=cuts.table.to_dict("list"),
        **cut_params(study),
    )
    eval_contexts = store.eval.contexts()
    ce_contexts = eval_contexts[: g.n_ce_contexts, : study.ce_context_len]
    ce_seeds = list(range(min(study.ce_seeds, sae.n_seeds)))
    ce_rows = np.flatnonzero(cuts.table.draw < study.ce_control_draws)
    ce = cached(
        "ce",
        lambda: splice.masked_spliced_ce(
            lm, ce_contexts, sae, cuts.masks[ce_rows], layer=layer, hook=hook, seeds=ce_seeds, progress=progress
        ),
        step="ce",
        cuts=cuts.table.iloc[ce_rows].to_dict("list"),
        seeds=ce_seeds,
        context_len=study.ce_context_len,
        **cut_params(study),
    )
    table = cut_table(cuts.table, ev.masked, ce, ce_rows)

    # The paper's masking (N stable vs ratio * N unstable latents removed) and firing rates: `asymmetry_paper`.
    mask_rows = asymmetry_paper.run_masking(
        study,
        sae,
        x_eval,
        split.label,
        stats.mass.cpu(),
        cached,
        functools.partial(splice.masked_spliced_ce, lm, ce_contexts, sae, layer=layer, hook=hook, progress=progress),
        context_len=study.ce_context_len,
    )

    # Single-latent ablations of seed 0, sampled per stability level.
    sample = sample_per_bin(split.stability[0].numpy(), study.marginal_per_bin, np.random.default_rng(study.seed))
    features = np.concatenate(list(sample.values())).tolist()
    ctx_len = study.ce_context_len or eval_contexts.shape[1]

    def ablations() -> pd.DataFrame:
        meta = store.eval.metadata()
        near = meta.position < ctx_len  # rows inside the (possibly shortened) contexts
        firing = firing_contexts(sae, x_eval()[near], meta.context[near], features, seed=0)
        return feature_ablation_effects(
            lm,
            eval_contexts[:, :ctx_len],
            sae,
            firing,
            layer=layer,
            hook=hook,
            seed=0,
            n_contexts=study.marginal_contexts,
            rng_seed=study.seed,
            progress=progress,
        )

    effects = cached(
        "marginal",
        ablations,
        step="marginal",
        features=features,
        n=study.marginal_contexts,
        context_len=ctx_len,
        seed=study.seed,
    )
    marginal = marginal_table(effects, latents, seed=0)

    # Surface forms: top activations over the training split, their trigger tokens, example contexts.
    interp_sae = sae.select(range(min(study.interp_seeds, sae.n_seeds)))
    top = cached(
        "top",
        lambda: interp.top_activations(
            interp_sae,
            store,
            n_top=study.n_top,
            max_rows=study.top_max_tokens,
            n_random=study.n_random,
            seed=study.seed,
        ),
        step="top",
        seeds=interp_sae.n_seeds,
        n_top=study.n_top,
        max_rows=study.top_max_tokens,
        n_random=study.n_random,
        seed=study.seed,
    )
    meta, contexts = store.metadata(), store.contexts()
    triggers = interp.trigger_stats(top, meta.token_id, lm.tokenizer).merge(latents, on=["seed", "latent"])
    eligible = eligible_latents(triggers, seed=0)
    window = {"pad_id": lm.pad_id, "bos_id": lm.bos_id}
    examples = {
        lab: interp.top_contexts_table(top, meta, contexts, lm.tokenizer, 0, feats, n=4, **window)
        for lab, feats in choose_examples(eligible, study.n_examples, study.seed).items()
    }

    # Explanations, when an endpoint is configured.
    ecfg = explainer.ExplainerConfig.from_env()
    parts = []
    if ecfg is not None:
        for lab, feats in choose_explained(eligible, study.explain_per_bin, study.seed).items():
            if feats:
                parts.append(
                    cached(
                        f"explanations-{lab}",
                        functools.partial(
                            explainer.explain_and_score, ecfg, top, meta, contexts, lm.tokenizer, 0, feats, **window
                        ),
                        step="explain",
                        explainer=ecfg.cache_key(),
                        features=feats,
                        top=(study.n_top, study.top_max_tokens, study.n_random, study.seed),
                    ).assign(label=lab)
                )
    explanations = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EXPLANATION_COLUMNS)

    return AsymmetryResult(
        study=study,
        entry=entry,
        split=split,
        latents=latents,
        by_label=label_table(latents, sae.n_seeds),
        n_eval_tokens=int(stats.n_tokens),
        cuts=table,
        ev_by_cut=cut_summary(table, "ev"),
        ce_by_cut=cut_summary(table, "ce_loss_score"),
        ce=ce,
        n_ce_contexts=len(ce_contexts),
        marginal=marginal,
        marginal_by_level=marginal.groupby("stability")[
            ["n_firing", "delta_loss_per_firing", "delta_loss_per_token"]
        ].mean(),
        triggers=triggers,
        triggers_by_label=triggers.groupby("label")[["top_share", "entropy_bits", "n_distinct"]]
        .agg(["mean", "count"])
        .reindex(list(LABEL_ORDER)),
        n_top_rows=int(top.n_rows),
        interp_seeds=interp_sae.n_seeds,
        examples=examples,
        explanations=explanations,
        explainer=None if ecfg is None else ecfg.model,
        masking=mask_rows,
        firing=masking.firing_rate_summary(stats.frequency.cpu(), split.label.cpu()),
    )


# --- The chapter's numbers and verdicts ---------------------------------------------------------------------------


def summary(result: AsymmetryResult) -> dict[str, float | int | str]:
    """Every number the chapter's prose glues: the grid point and budgets, and `table_summary` of its tables
    (plain Python floats, ints and strings; NaN where a part was not measured)."""
    st, split, ce = result.study, result.split, result.ce
    explained = result.explainer is not None
    out: dict[str, float | int | str] = {
        "entry": result.entry.name,
        "n_seeds": int(split.stability.shape[0]),
        "ref_tokens": f"{grid.reference_study(st.grid).train.n_tokens:,}",
        "d_sae": int(result.entry.d_sae),
        "stable_at": float(split.stable_at),
        "unstable_at": float(split.unstable_at),
        "tau": float(split.threshold),
        "n_eval_tokens": int(result.n_eval_tokens),
        "mass_tol_pct": 100 * float(st.mass_tolerance),
        "control_draws": int(st.control_draws),
        "ce_control_draws": int(st.ce_control_draws),
        "n_ce_contexts": int(result.n_ce_contexts),
        "n_ce_tokens": int(ce.n_tokens),
        "ce_seeds": ", ".join(map(str, ce.seeds)),
        "clean_loss": float(ce.clean_loss),
        "zero_loss": float(ce.zero_ablation_loss),
        "marginal_per_bin": int(st.marginal_per_bin),
        "marginal_contexts": int(st.marginal_contexts),
        "interp_seeds": int(result.interp_seeds),
        "n_top": int(st.n_top),
        "top_tokens": f"{result.n_top_rows:,}",
        "explainer_status": (
            f"Explainer model `{result.explainer}`; {st.explain_per_bin} latents per label."
            if explained
            else "No endpoint was configured when this page was built, so this step "
            "was skipped and the table below is empty."
        ),
    }
    out |= table_summary(
        result.cuts, result.latents, result.marginal, result.triggers, result.explanations if explained else None
    )
    out |= asymmetry_paper.summary(result.masking, result.firing, result.explanations if explained else None, st)
    for name in LABELS:  # one schema with or without an endpoint
        out[f"frequency_median_pct_{name}"] = 100 * out.get(f"frequency_median_{name}", math.nan)
        out.setdefault(f"detection_{name}", math.nan)
        out.setdefault(f"surface_share_{name}", math.nan)
        out.setdefault(f"explained_n_{name}", 0)
    errors = result.explanations["error"].dropna() if "error" in result.explanations else pd.Series(dtype=str)
    out["explanation_failures"] = len(errors)
    out["explanation_failure_note"] = (
        f" {len(errors)} of {len(result.explanations)} latents could not be explained or scored (most common reason: "
        f"{errors.astype(str).value_counts().index[0]}); they are left out of these numbers."
        if len(errors)
        else ""
    )
    out["explanation_sentence"] = (
        f"The explainer tagged {out['surface_share_unstable']:.2f} of the unstable latents' explanations as surface "
        f"forms and {out['surface_share_stable']:.2f} of the stable ones'; detection balanced accuracy "
        f"{out['detection_unstable']:.2f} for unstable and {out['detection_stable']:.2f} for stable latents (0.5 is "
        "chance)." + out["explanation_failure_note"]
        if explained
        else "No explainer endpoint was configured, so this part was not measured."
    )
    return {
        k: (v if isinstance(v, str) else int(v) if isinstance(v, (int, np.integer)) else float(v))
        for k, v in out.items()
    }


def _pair(stable: float, unstable: float, fmt: str = "{:.3g}") -> str:
    """`stable <value>, unstable <value>`, `n/a` for a value not measured."""
    shown = ["n/a" if not math.isfinite(v) else fmt.format(v) for v in (stable, unstable)]
    return f"stable {shown[0]}, unstable {shown[1]}"


def claims(summary: dict) -> list[common.Claim]:
    """Each part of claim 2, the numbers that test it for stable and unstable latents, and its verdict.

    A part is `not measured` when one of its two numbers is NaN (e.g. the explanations without an endpoint) or when
    its stable or unstable group is empty (`share_*` of 0). The `paper` column quotes the paper's reported number
    where a secondary source gives one (firing frequency, "substring" in explanations). The paper's own analyses
    (masking N stable vs 4N unstable latents, mean firing rates, keyword shares of explanations) follow, from
    `asymmetry_paper.claims`.
    """
    g = summary.get
    nan = math.nan
    empty = {name: g(f"share_{name}", 1.0) == 0 for name in LABELS}

    def row(claim, criterion, stable, unstable, stable_wins, paper=common.NOT_REPORTED, fmt="{:.3g}"):
        stable, unstable = (nan if empty["stable"] else stable), (nan if empty["unstable"] else unstable)
        measured = math.isfinite(stable) and math.isfinite(unstable)
        holds = None if not measured else (stable > unstable if stable_wins else unstable > stable)
        return common.claim(claim, criterion, _pair(stable, unstable, fmt), holds, paper)

    def diff(a, b):
        return g(a, nan) - g(b, nan)

    rows = [
        row(
            "Stable latents carry more of the reconstruction than unstable ones.",
            "explained variance keeping only the group: stable > unstable",
            g("ev_keep_stable", nan),
            g("ev_keep_unstable", nan),
            True,
        ),
        row(
            "Stable latents carry more of the reconstruction than their activation mass explains, more so than "
            "unstable ones.",
            "explained variance keeping the group minus its mass-matched random control: stable > unstable",
            diff("ev_keep_stable", "ev_keep_mass_stable"),
            diff("ev_keep_unstable", "ev_keep_mass_unstable"),
            True,
        ),
        row(
            "Removing the stable latents hurts reconstruction more than removing the unstable ones.",
            "explained variance lost when the group is removed: stable > unstable",
            diff("ev_full", "ev_remove_stable"),
            diff("ev_full", "ev_remove_unstable"),
            True,
        ),
        row(
            "Stable latents carry more of the prediction signal than unstable ones.",
            "CE-loss score with only the group spliced in: stable > unstable",
            g("ce_loss_score_keep_stable", nan),
            g("ce_loss_score_keep_unstable", nan),
            True,
        ),
        row(
            "Stable latents carry more of the prediction signal than their activation mass explains, more so than "
            "unstable ones.",
            "CE-loss score keeping the group minus its mass-matched random control: stable > unstable",
            diff("ce_loss_score_keep_stable", "ce_loss_score_keep_mass_stable"),
            diff("ce_loss_score_keep_unstable", "ce_loss_score_keep_mass_unstable"),
            True,
        ),
        row(
            "Unstable latents have weak marginal impact.",
            "mean loss increase per token when one latent is ablated (nats): unstable < stable",
            g("marginal_per_token_stable", nan),
            g("marginal_per_token_unstable", nan),
            True,
        ),
        row(
            "Unstable latents are low-frequency.",
            "median firing frequency: unstable < stable",
            100 * g("frequency_median_stable", nan),
            100 * g("frequency_median_unstable", nan),
            True,
            PAPER_FREQUENCY,
            fmt="{:.3g}% of tokens",
        ),
        row(
            "Unstable latents are dominated by surface-form triggers.",
            "mean share of a latent's top activations on its most common token string: unstable > stable",
            g("top_share_stable", nan),
            g("top_share_unstable", nan),
            False,
        ),
        row(
            "Unstable latents are dominated by surface forms in automatic explanations too.",
            "share of explanations the explainer tags as a surface form (TOKEN:): unstable > stable",
            g("surface_share_stable", nan),
            g("surface_share_unstable", nan),
            False,
        ),  # the explainer's own tag, not the paper's keyword count: that row (with 38.9% vs 11.3%) comes below
    ]
    if g("explained_n_stable", 0) + g("explained_n_unstable", 0) == 0:  # no explanations: say why, and what stands in
        rows[-1] = rows[-1]._replace(
            ours=f"{rows[-1].ours} (not measured: no explainer endpoint; the top-token share row stands in)"
        )
    return rows + asymmetry_paper.claims(summary)
