"""Chapter 2: the functional asymmetry of stable and unstable latents (claim 2 of Gerasimov et al. 2026; book/intro.md).

The chapter's contract (`saelib.chapters.common`): `study(scale, device)` -> `AsymmetryStudy`, `run(study)` ->
`AsymmetryResult` (every expensive step cached through `cache.cached_result`), `summary(result)` (the numbers the
prose glues) and `claims(summary)` (the chapter's verdicts).

The pieces `run` assembles:
- `latent_stats_table`, `label_table`: per-latent activation statistics on the held-out tokens (frequency, mean and
  max activation, and activation mass as `metrics.FeatureActivationStats` defines it: `mass` is the sum of a latent's
  activations over the tokens, `mass_share` its share of its seed's total mass; a set of latents' `mass_share` is
  the sum of its members').
- `feature_cuts`: the masks of the experiments: keep or remove the stable / unstable latents, beside random controls
  of each matched in size (`size_matched_subset`) or in mass (`mass_matched_subset`);
  `metrics.masked_explained_variance` and `splice.masked_spliced_ce` measure every cut at once, `cut_table` and
  `cut_summary` tabulate them.
- `feature_ablation_effects`: the loss change when a single latent is removed (`splice.spliced_ce` with
  `splice.latent_ablation_reconstructor`), on the contexts where it fires (`firing_contexts`), for latents drawn per
  stability level by `sample_per_bin`; `marginal_table` adds the expected change per token.
- `eligible_latents`, `choose_examples`, `choose_explained`: which latents' top contexts are shown and explained.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saelib import masking, metrics
from saelib.cache import cached_result
from saelib.chapters import asymmetry_paper, common, grid
from saelib.chapters.asymmetry_paper import PAPER_FREQUENCY
from saelib.chapters.asymmetry_paper import SECONDARY as SECONDARY  # the marker of reported numbers, re-exported
from saelib.chapters.grid import FeatureSplit, GridEntry, GridStudy
from saelib.config import check_positive
from saelib.lm import explainer, interp, splice
from saelib.lm.activations import load_model, model_slug
from saelib.masking import mass_matched_subset
from saelib.masking import random_subset as size_matched_subset
from saelib.sae import SAE
from saelib.stability import DEAD, STABLE, UNSTABLE

VERSION = 1
"""Bumped when a cached chapter-2 result would be computed differently (it is in every key, `asymmetry_key`)."""

LABELS = ("stable", "unstable")
"""The two groups the chapter compares."""

LABEL_ORDER = ("unstable", "intermediate", "stable")
"""Row order of the per-label tables (as `plots.theme.LABEL_ORDER`)."""


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


# --- Cuts and their random controls -----------------------------------------------------------------------------


class FeatureCuts(NamedTuple):
    """The masks of the asymmetry experiments and what each one is."""

    masks: Tensor
    """`(M, S, d_sae)` bool, True for the latents kept."""
    table: pd.DataFrame
    """One row per mask: `cut` (name), `op` (keep / remove), `group` (stable / unstable / all / none), `control`
    (group / size / mass), `draw`, `pool` (where the control was drawn from, per seed), `n_latents` (kept) and
    `mass_share` (the kept latents' share of their seed's activation mass); both means over seeds."""


def feature_cuts(
    label: Tensor,
    mass: Tensor,
    *,
    control_draws: int = 5,
    mass_tolerance: float = 0.05,
    control_pool: str = "complement",
    seed: int = 0,
) -> FeatureCuts:
    """Full and empty SAE; keep or remove the stable / unstable latents; and random controls for each of the four.

    A control of a group is a random set of alive latents of the same size, or of the same total activation mass
    (within `mass_tolerance`); "remove control" removes it, as "remove stable" removes the stable latents. Every
    seed draws its own controls. Labels are `saelib.stability` codes; dead latents are never drawn.

    Args:
        label: `(S, d_sae)` stability labels (`STABLE`, `INTERMEDIATE`, `UNSTABLE`, `DEAD`).
        mass: `(S, d_sae)` activation mass of each latent (`metrics.feature_activation_stats(...).mass`).
        control_draws: draws per (group, control kind).
        mass_tolerance: relative tolerance of the mass-matched controls.
        control_pool: `complement` (alive latents outside the group, all alive latents when it cannot match) or
            `all`.
        seed: seed of the draws.
    """
    label, mass = label.cpu(), mass.double().cpu()
    S, F = label.shape
    gen = torch.Generator().manual_seed(seed)
    alive = label != DEAD
    rows: list[dict] = []
    masks: list[Tensor] = []

    def add(cut, op, group, control, draw, keep, pool="-"):
        masks.append(keep)
        share = (mass * keep).sum(-1) / mass.sum(-1).clamp_min(1e-30)  # (S,) mass share of the kept latents
        rows.append(
            {
                "cut": cut,
                "op": op,
                "group": group,
                "control": control,
                "draw": draw,
                "pool": pool,
                "n_latents": float(keep.sum(-1).double().mean()),
                "mass_share": float(share.mean()),
            }
        )

    add("full SAE", "keep", "all", "group", 0, torch.ones(S, F, dtype=torch.bool))
    add("no latent", "keep", "none", "group", 0, torch.zeros(S, F, dtype=torch.bool))
    for name, code in (("stable", STABLE), ("unstable", UNSTABLE)):
        group = label == code
        add(f"keep {name}", "keep", name, "group", 0, group)
        add(f"remove {name}", "remove", name, "group", 0, ~group)
        for control in ("size", "mass"):
            for d in range(control_draws):
                subset, pools = torch.zeros(S, F, dtype=torch.bool), []
                for s in range(S):
                    pool = alive[s] & ~group[s] if control_pool == "complement" else alive[s]
                    try:
                        subset[s] = _draw_control(control, group[s], mass[s], pool, gen, mass_tolerance)
                        pools.append(control_pool)
                    except ValueError:  # the complement is too small or too light: draw from all alive latents
                        subset[s] = _draw_control(control, group[s], mass[s], alive[s], gen, mass_tolerance)
                        pools.append("all")
                pool = pools[0] if len(set(pools)) == 1 else "+".join(sorted(set(pools)))
                add(f"keep {control}-matched to {name}", "keep", name, control, d, subset, pool)
                add(f"remove {control}-matched to {name}", "remove", name, control, d, ~subset, pool)
    return FeatureCuts(torch.stack(masks), pd.DataFrame(rows))


def _draw_control(control: str, group: Tensor, mass: Tensor, pool: Tensor, gen: torch.Generator, tol: float):
    if control == "size":
        return size_matched_subset(int(group.sum()), pool, gen)
    return mass_matched_subset(mass, float(mass[group].sum()), pool, gen, tol=tol)


CUT_METRICS = ("ev", "ce_loss_score", "delta_loss", "kl_div")
"""Columns of a cut table that `summary` reads (when present)."""


def cut_table(
    cuts: pd.DataFrame, ev: Tensor, ce: splice.MaskedSplice | None = None, ce_rows: np.ndarray | None = None
) -> pd.DataFrame:
    """`cuts` (`FeatureCuts.table`) with the mean over seeds of each cut's explained variance and, for the rows
    `ce_rows` that were spliced into the model, of its CE-loss score, CE increase and KL (NaN for the other rows).

    Args:
        cuts: `(M,)` rows.
        ev: `(M, S)` explained variance per cut and seed (`MaskedEV.masked`).
        ce: `masked_spliced_ce` of the masks `ce_rows`, fields `(len(ce_rows), S')`.
        ce_rows: indices of the rows of `cuts` that `ce` measured.
    """
    out = cuts.assign(ev=ev.double().mean(1).cpu().numpy())
    if ce is not None:
        out = out.join(
            pd.DataFrame(
                {
                    "ce_loss_score": ce.ce_loss_score.mean(1).numpy(),
                    "delta_loss": ce.delta_loss.mean(1).numpy(),
                    "kl_div": ce.kl_div.mean(1).numpy(),
                },
                index=ce_rows,
            )
        )
    return out


def cut_summary(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """`metric` per (op, group) for the group itself and the mean (and std) of its size- and mass-matched controls."""
    t = table[table.group.isin(LABELS)]
    mean = t.pivot_table(index=["op", "group"], columns="control", values=metric, aggfunc="mean")
    std = t[t.control != "group"].pivot_table(index=["op", "group"], columns="control", values=metric, aggfunc="std")
    out = mean.reindex(columns=["group", "size", "mass"])
    for c in ("size", "mass"):
        out[f"{c} (std)"] = std[c] if c in std else np.nan
    return out


# --- Per-latent statistics ----------------------------------------------------------------------------------------


def latent_stats_table(entry: GridEntry, split: FeatureSplit, stats: metrics.FeatureActivationStats) -> pd.DataFrame:
    """`grid.latent_table` (one row per alive latent of every seed) with its `max_activation` and `mass_share`
    (share of its seed's activation mass) from `stats`, all on the held-out tokens."""
    latents = grid.latent_table(entry, split)
    latents["max_activation"] = stats.max_activation.cpu().numpy()[latents.seed, latents.latent]
    latents["mass_share"] = stats.mass_share.cpu().numpy()[latents.seed, latents.latent]
    return latents


def label_table(latents: pd.DataFrame, n_seeds: int) -> pd.DataFrame:
    """Per stability label (rows `LABEL_ORDER`): `latents` (summed over seeds), `share_of_latents` (of the alive
    latents), `mass_share` (the label's share of its seed's activation mass, mean over the `n_seeds` seeds) and the
    medians of frequency, mean and max activation."""
    out = (
        latents.groupby("label")
        .agg(
            latents=("latent", "size"),
            mass_share=("mass_share", "sum"),
            median_frequency=("frequency", "median"),
            median_mean_activation=("mean_activation", "median"),
            median_max_activation=("max_activation", "median"),
        )
        .reindex(list(LABEL_ORDER))
    )
    out.insert(1, "share_of_latents", out.latents / len(latents))
    out["mass_share"] /= n_seeds
    return out


# --- Single-latent ablations --------------------------------------------------------------------------------------


def firing_contexts(sae: SAE, x: Tensor, context: np.ndarray, features, seed: int = 0) -> dict[int, np.ndarray]:
    """The contexts in which each of `features` of seed `seed` fires at least once.

    Args:
        sae: the stack.
        x: activations `(N, d_in)` of a store split (`store.eval.load_all()`).
        context: `(N,)` context index of each row (`store.eval.metadata().context`).
        features: latent indices.
        seed: seed position.
    """
    feats = torch.as_tensor(list(features), dtype=torch.long)
    one = sae.select([seed])
    hits = []
    with torch.no_grad():
        for xb in x.split(4096):
            z = one.encode(xb.to(one.W_dec.device, torch.float32))[0]  # (B, d_sae)
            hits.append((z[:, feats.to(z.device)] > 0).cpu())
    fired = torch.cat(hits).numpy()  # (N, n_features)
    return {int(f): np.unique(np.asarray(context)[fired[:, j]]) for j, f in enumerate(feats.tolist())}


def sample_per_bin(
    bins: np.ndarray, n_per_bin: int, rng: np.random.Generator, eligible: np.ndarray | None = None
) -> dict:
    """Up to `n_per_bin` random indices for every distinct value of `bins` `(F,)` (NaN bins and ineligible left out)."""
    bins = np.asarray(bins, dtype=float)
    ok = ~np.isnan(bins) if eligible is None else (~np.isnan(bins) & np.asarray(eligible, dtype=bool))
    out = {}
    for b in np.unique(bins[ok]):
        idx = np.flatnonzero(ok & (bins == b))
        out[float(b)] = np.sort(rng.choice(idx, size=min(n_per_bin, len(idx)), replace=False))
    return out


def _choose_contexts(firing: dict[int, np.ndarray], n: int, rng: np.random.Generator) -> dict[int, list[int]]:
    """Up to n firing contexts per latent, preferring contexts already chosen for another one (fewer clean passes)."""
    chosen: dict[int, list[int]] = {}
    used: set[int] = set()
    for f, ctxs in firing.items():
        ctxs = rng.permutation(np.asarray(ctxs, dtype=int))
        shared = [c for c in ctxs if c in used][:n]
        pick = shared + [c for c in ctxs if c not in shared][: n - len(shared)]
        chosen[f] = [int(c) for c in pick]
        used.update(chosen[f])
    return chosen


def feature_ablation_effects(
    lm,
    contexts,
    sae: SAE,
    firing: dict[int, np.ndarray],
    *,
    layer: int,
    hook: str = "resid_post",
    seed: int = 0,
    n_contexts: int = 2,
    rng_seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Marginal effect of single latents: the loss change when one latent's contribution is removed from the model.

    For latent f of seed `seed` the activation at every real position becomes `x - z_f(x) d_f` (the SAE's error and
    every other latent are kept: `splice.latent_ablation_reconstructor`), on up to `n_contexts` contexts in which f
    fires; since the model is causal and f is silent elsewhere, other contexts are unchanged. Each context is spliced
    once (`splice.spliced_ce`), with every latent chosen for it as one variant, so its clean pass is shared.

    Args:
        lm: the language model.
        contexts: `(N, T)` token ids (`store.eval.contexts()`).
        sae: the stack.
        firing: latent -> contexts where it fires (`firing_contexts`); latents with none get zero effect.
        layer, hook: where the SAE reads the model.
        seed: seed position of the latents.
        n_contexts: contexts per latent.
        rng_seed: seed of the context choice.
        progress: show a tqdm bar.

    Returns:
        One row per latent: `feature`, `n_contexts`, `n_firing` (tokens where it fires in them), `n_tokens`
        (predicted tokens in them), `delta_loss_sum` and `kl_sum` (summed over those tokens), and
        `delta_loss_per_firing` (`delta_loss_sum / n_firing`, NaN when it never fires).
    """
    ctx = np.asarray(contexts)
    one = sae.select([seed]).to(lm.device)
    chosen = _choose_contexts(firing, n_contexts, np.random.default_rng(rng_seed))
    by_ctx: dict[int, list[int]] = {}
    for f, cs in chosen.items():
        for c in cs:
            by_ctx.setdefault(c, []).append(f)
    acc = {f: np.zeros(5) for f in firing}  # n_contexts, n_firing, n_tokens, delta_sum, kl_sum
    for c, feats in tqdm(sorted(by_ctx.items()), desc="ablations", disable=not progress, leave=False):
        ablate = splice.latent_ablation_reconstructor(one, feats)
        fired: dict[str, list[int]] = {}

        def reconstruct(x: Tensor, ablate=ablate, fired=fired, feats=feats) -> Tensor:
            fired["n"] = (one.encode(x)[0][:, feats] > 0).sum(0).tolist()  # firings of each latent in the context
            return ablate(x)  # (len(feats), n_real, d_in)

        m = splice.spliced_ce(lm, ctx[c : c + 1], reconstruct, layer=layer, hook=hook, batch_size=1)
        for j, f in enumerate(feats):
            acc[f] += [
                1,
                fired["n"][j],
                m.n_tokens,
                float(m.delta_loss[j]) * m.n_tokens,
                float(m.kl_div[j]) * m.n_tokens,
            ]
    df = pd.DataFrame(
        [[f, *v] for f, v in acc.items()],
        columns=["feature", "n_contexts", "n_firing", "n_tokens", "delta_loss_sum", "kl_sum"],
    )
    df = df.astype({"feature": int, "n_contexts": int, "n_firing": int, "n_tokens": int})
    df["delta_loss_per_firing"] = df.delta_loss_sum / df.n_firing.where(df.n_firing > 0)
    return df


def marginal_table(effects: pd.DataFrame, latents: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """`feature_ablation_effects` joined with the latents' rows of seed `seed` (`latent_stats_table`), plus
    `delta_loss_per_token`: the loss change per firing times the firing frequency (0 for a latent that never fired
    in its contexts), the expected loss change per token of removing the latent."""
    out = effects.merge(latents[latents.seed == seed], left_on="feature", right_on="latent")
    out["delta_loss_per_token"] = out.delta_loss_per_firing.fillna(0.0) * out.frequency
    return out


# --- Surface forms and explanations -------------------------------------------------------------------------------


def eligible_latents(triggers: pd.DataFrame, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Per label (`LABELS`), the rows of `triggers` of seed `seed` with trigger statistics (enough activations)."""
    return {
        lab: triggers[(triggers.seed == seed) & (triggers.label == lab)].dropna(subset=["top_share"]) for lab in LABELS
    }


def choose_examples(eligible: dict[str, pd.DataFrame], n: int, seed: int = 0) -> dict[str, list[int]]:
    """Up to `n` random latents per label whose top contexts the chapter shows (`DataFrame.sample`, `seed`)."""
    return {lab: df.sample(min(n, len(df)), random_state=seed).latent.tolist() for lab, df in eligible.items()}


def choose_explained(eligible: dict[str, pd.DataFrame], n: int, seed: int = 0) -> dict[str, list[int]]:
    """Up to `n` random latents per label to explain, sorted; one random stream over the labels in order."""
    rng = np.random.default_rng(seed)
    return {lab: sorted(df.latent.to_numpy()[rng.permutation(len(df))[:n]].tolist()) for lab, df in eligible.items()}


EXPLANATION_COLUMNS = ["latent", "label", "explanation", "surface_form", "balanced_accuracy"]
"""Columns of the explanations table when no latent was explained."""


def example_html(result: AsymmetryResult, label: str) -> str:
    """HTML of the top contexts of the example latents of `label` (trigger highlighted), or a one-line note when
    no latent of that label had enough activations."""
    table = result.examples[label]
    if not len(table):
        return f"<p><em>No {label} latent with enough activations at this scale.</em></p>"
    return interp.html_table(table)


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


def table_summary(
    cuts: pd.DataFrame,
    latents: pd.DataFrame,
    marginal: pd.DataFrame | None = None,
    triggers: pd.DataFrame | None = None,
    explanations: pd.DataFrame | None = None,
) -> dict:
    """The chapter's headline numbers from its tables, as a flat dict of plain floats and ints.

    Keys: `<metric>_<cut>` for the cuts themselves (`ev_full`, `ev_none`, `ev_keep_stable`, `ce_loss_score_remove_
    unstable`, ...), `<metric>_<op>_<control>_<group>` for the mean of their controls (`ev_keep_mass_stable`), and per
    label `mass_share_<label>` (the group's share of the activation mass, mean over seeds), `share_<label>` (of the
    alive latents), `<column>_median_<label>`, `marginal_*`, `top_share_*`, `entropy_*`, `trigger_n_*`,
    `detection_*`, `surface_share_*`, `explained_n_*` (NaN or 0 where a table is missing or empty).

    Args:
        cuts: `cut_table(...)` (means over seeds), with any of `CUT_METRICS`.
        latents: one row per alive latent: `label`, `frequency`, `mean_activation`, `max_activation`, `mass_share`.
        marginal: one row per ablated latent: `label`, `delta_loss_per_token`, `delta_loss_per_firing`.
        triggers: one row per latent with statistics: `label`, `top_share`, `entropy_bits`.
        explanations: one row per explained latent: `label`, `explanation`, `surface_form`, `balanced_accuracy`.
    """
    out: dict = {}
    for metric in CUT_METRICS:
        if metric not in cuts:
            continue
        for cut, v in cuts[cuts.control == "group"].groupby("cut")[metric].mean().items():
            out[f"{metric}_{cut.replace(' ', '_').replace('_SAE', '').replace('no_latent', 'none')}"] = float(v)
        ctrl = cuts[cuts.control != "group"].groupby(["op", "control", "group"])[metric].mean()
        for (op, control, group), v in ctrl.items():
            out[f"{metric}_{op}_{control}_{group}"] = float(v)
    for name in LABELS:
        row = cuts[(cuts.cut == f"keep {name}")]
        if len(row):
            out[f"mass_share_{name}"] = float(row.mass_share.iloc[0])
        lat = latents[latents.label == name]
        out[f"share_{name}"] = len(lat) / max(len(latents), 1)
        for col in ("frequency", "mean_activation", "max_activation", "mass_share"):
            if col in lat:
                out[f"{col}_median_{name}"] = float(lat[col].median())
        if marginal is not None:
            m = marginal[marginal.label == name]
            out[f"marginal_per_token_{name}"] = float(m.delta_loss_per_token.mean())
            out[f"marginal_per_firing_{name}"] = float(m.delta_loss_per_firing.mean())
            out[f"marginal_n_{name}"] = len(m)
        if triggers is not None:
            t = triggers[(triggers.label == name)].dropna(subset=["top_share"])
            out[f"top_share_{name}"] = float(t.top_share.mean())
            out[f"entropy_{name}"] = float(t.entropy_bits.mean())
            out[f"trigger_n_{name}"] = len(t)
        if explanations is not None:
            e = explanations[explanations.label == name]
            out[f"detection_{name}"] = float(e.balanced_accuracy.astype(float).mean())
            tagged = e.surface_form.dropna().astype(float)
            out[f"surface_share_{name}"] = float(tagged.mean()) if len(tagged) else math.nan
            out[f"explained_n_{name}"] = len(e.dropna(subset=["explanation"]))
    return out


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
