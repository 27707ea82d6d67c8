"""Chapter 2, the paper's own analyses (issue 14, items 1, 2 and 6), beside the chapter's own (`chapters.asymmetry`).

As a third-party reading of arXiv 2606.12138 reports them (secondary source):
- **masking**: removing 4N unstable latents costs little explained variance, removing N stable ones costs much;
  we also measure the CE-loss score lost, and random controls of the same count and of the same activation mass
  (`saelib.masking.removal_cuts`; N is `masking.largest_n` unless the study names one);
- **firing rates**: unstable latents fire on about 0.18% of tokens, stable ones on about 0.44%
  (`saelib.masking.firing_rate_summary`);
- **explanations**: the word "substring" appears in 38.9% of unstable latents' explanations against 11.3% of stable
  ones' (`saelib.lm.interp.surface_form_share`; without an explainer endpoint, not measured).

`asymmetry.run` calls `run_masking` and `firing_rate_summary`; `asymmetry.summary` adds `summary`'s keys and
`asymmetry.claims` appends `claims`' rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from saelib import masking
from saelib.chapters import common
from saelib.lm import interp
from saelib.sae import SAE

SECONDARY = "(reported, secondary source)"
"""How a number the paper reports, as read by a third party, is marked in the claims table (`asymmetry` imports
it and the `PAPER_*` texts from here)."""

PAPER_MASKING = f"removing 4N unstable latents costs little explained variance, removing N stable ones much {SECONDARY}"
PAPER_FREQUENCY = f"unstable about 0.18% vs stable about 0.44% of tokens {SECONDARY}"
PAPER_SUBSTRING = f'"substring" in 38.9% of unstable vs 11.3% of stable latents\' explanations {SECONDARY}'

REMOVED = ("group", "count", "mass")
"""What a masking cut removes: the group's own latents, or random alive latents of the same count or mass."""

METRICS = ("ev_loss", "ce_loss")
"""The losses of a masking cut: explained variance lost, CE-loss score lost."""

REPORTED_FIRING_PCT = {"unstable": 0.18, "stable": 0.44}
"""The reported firing rates, percent of tokens (secondary source), for the firing-rate figure."""

_POOL = {"complement": "complement", "all": "alive"}
"""The chapter's `control_pool` in `masking.removal_cuts`' words."""


# --- Masking ------------------------------------------------------------------------------------------------------


def mask_params(study, n: int | None = None) -> dict[str, Any]:
    """Every parameter of `study` (`AsymmetryStudy`) that changes the masking cuts, for their cache keys; `n` is the
    N actually used (`RemovalCuts.n`) when the study leaves it to `masking.largest_n`."""
    return {
        "n": study.mask_n if n is None else n,
        "ratio": study.mask_ratio,
        "draws": study.mask_draws,
        "pool": _POOL[study.control_pool],
        "mass_tolerance": study.mass_tolerance,
        "seed": study.seed,
    }


def ce_seed_list(study, n_seeds: int) -> list[int]:
    """The seed positions whose masking cuts are spliced into the model: the first `study.mask_ce_seeds` (all when
    None) of the stack's `n_seeds`."""
    return list(range(n_seeds if study.mask_ce_seeds is None else min(study.mask_ce_seeds, n_seeds)))


def ce_rows(cuts: masking.RemovalCuts, ce_draws: int) -> np.ndarray:
    """Indices of the cuts spliced into the model: the full SAE and the first `ce_draws` draws of every cut."""
    return np.flatnonzero(np.asarray(cuts.draw) < ce_draws)


def masking_cuts(label: Tensor, mass: Tensor, study) -> masking.RemovalCuts | None:
    """`masking.removal_cuts` with the study's parameters, or None when some seed lacks a stable latent or
    `mask_ratio` unstable ones (N would be 0)."""
    if masking.largest_n(label, study.mask_ratio) < 1:
        return None
    p = mask_params(study)
    return masking.removal_cuts(
        label,
        mass,
        p["n"],
        ratio=p["ratio"],
        draws=p["draws"],
        pool=p["pool"],
        mass_tolerance=p["mass_tolerance"],
        seed=p["seed"],
    )


def masking_table(
    cuts: masking.RemovalCuts,
    ev_loss: Tensor,
    ce_loss: Tensor | None = None,
    rows: np.ndarray | None = None,
    seeds: list[int] | None = None,
) -> pd.DataFrame:
    """One row per (cut, seed): `cut`, `group`, `removed` (`REMOVED`), `draw`, `seed`, `n_removed`, `mass_removed`
    (share of the seed's activation mass), `ev_loss` and `ce_loss` (NaN where not spliced); the full SAE left out.

    Args:
        cuts: the cuts, `M` of them, the full SAE first.
        ev_loss: `(M, S)` explained variance lost (`masking.MaskingEffects.ev_loss`).
        ce_loss: `(len(rows), len(seeds))` CE-loss score lost, for the cuts `rows` and seed positions `seeds`.
        rows, seeds: which cuts and seeds `ce_loss` measured.
    """
    M, S = cuts.mass_removed.shape
    if ev_loss.shape != (M, S):
        raise ValueError(f"ev_loss has shape {tuple(ev_loss.shape)}, expected ({M}, {S})")
    ce = np.full((M, S), np.nan)
    if ce_loss is not None:
        if rows is None or seeds is None or ce_loss.shape != (len(rows), len(seeds)):
            raise ValueError("ce_loss needs rows and seeds of its shape")
        ce[np.ix_(np.asarray(rows), np.asarray(seeds))] = ce_loss.double().cpu().numpy()
    counts = cuts.removed.sum(-1).numpy()  # (M, S)
    m, s = np.meshgrid(np.arange(M), np.arange(S), indexing="ij")
    df = pd.DataFrame(
        {
            "cut": np.asarray(cuts.cut, dtype=object)[m.ravel()],
            "group": np.asarray(cuts.group, dtype=object)[m.ravel()],
            "removed": np.asarray(cuts.control, dtype=object)[m.ravel()],
            "draw": np.asarray(cuts.draw)[m.ravel()],
            "seed": s.ravel(),
            "n_removed": counts.ravel(),
            "mass_removed": cuts.mass_removed.numpy().ravel(),
            "ev_loss": ev_loss.double().cpu().numpy().ravel(),
            "ce_loss": ce.ravel(),
        }
    )
    return df[df.group != "none"].reset_index(drop=True)


def masking_by_cut(table: pd.DataFrame | None) -> pd.DataFrame:
    """Per cut (rows in the table's order): latents and mass share removed (means), and the mean, standard
    deviation and count over draws and seeds of each of `METRICS` (NaN rows, cuts not spliced, left out); empty
    when the masking was not measured (None)."""
    if table is None:
        return pd.DataFrame(columns=["group", "removed", "n_removed", "mass_removed"]).rename_axis("cut")
    g = table.groupby("cut", sort=False)
    out = g[["group", "removed"]].first().join(g[["n_removed", "mass_removed"]].mean())
    for metric in METRICS:
        out = out.join(g[metric].agg(["mean", "std", "count"]).add_prefix(f"{metric}_"))
    return out


def per_seed(table: pd.DataFrame | None) -> pd.DataFrame:
    """Mean over draws per (group, removed, seed) of `METRICS`: the points of the masking figure (empty when the
    masking was not measured)."""
    if table is None:
        return pd.DataFrame(columns=["group", "removed", "seed", *METRICS])
    return table.groupby(["group", "removed", "seed"], sort=False)[list(METRICS)].mean().reset_index()


def run_masking(
    study,
    sae: SAE,
    x_eval: Callable[[], Tensor],
    label: Tensor,
    mass: Tensor,
    cached: Callable[..., Any],
    splice_ce: Callable[..., Any],
    *,
    context_len: int | None = None,
) -> pd.DataFrame | None:
    """The paper's masking on the chapter's SAEs, every measurement cached; None when N would be 0.

    Args:
        study: the chapter's `AsymmetryStudy` (`mask_*` fields, `mass_tolerance`, `control_pool`, `seed`,
            `ce_control_draws`).
        sae: the stack.
        x_eval: returns the held-out activations `(N, d_in)` (called only on a cache miss).
        label, mass: `(S, d_sae)` stability labels and activation mass.
        cached: `cached(artifact, compute, **key)` (the chapter's `cache.cached_result` with its grid point's key).
        splice_ce: `splice_ce(keep_masks, seeds=...)` -> `splice.MaskedSplice` (the chapter's contexts, layer, hook).
        context_len: tokens kept of each CE context (in the CE key).

    Returns:
        `masking_table` of every cut, EV on every seed, CE on `ce_seed_list` for the first `ce_control_draws` draws.
    """
    cuts = masking_cuts(label, mass, study)
    if cuts is None:
        return None
    params = mask_params(study, cuts.n)
    effects = cached("mask-ev", lambda: masking.masking_effects(sae, x_eval(), cuts.removed), step="mask-ev", **params)
    rows, seeds = ce_rows(cuts, study.ce_control_draws), ce_seed_list(study, sae.n_seeds)
    ce = cached(
        "mask-ce",
        lambda: splice_ce(~cuts.removed[torch.as_tensor(rows)], seeds=seeds),
        step="mask-ce",
        **params,
        ce_draws=study.ce_control_draws,
        ce_seeds=seeds,
        context_len=context_len,
    )
    score = ce.ce_loss_score.double()  # (len(rows), S'), the full SAE first
    return masking_table(cuts, effects.ev_loss, score[:1] - score, rows, seeds)


# --- Firing rates and explanations --------------------------------------------------------------------------------


def explanation_shares(explanations: pd.DataFrame | None) -> dict[str, float]:
    """Per label (stable, unstable), `surface_form_share` of its explanations: `substring_word_<label>` (share
    containing the word "substring", the paper's count), `surface_any_<label>` (share in any surface-form category)
    and `surface_n_<label>`; NaN shares (and 0) without explanations."""
    out: dict[str, float] = {}
    for name in ("stable", "unstable"):
        texts = (
            []
            if explanations is None or not len(explanations)
            else explanations.explanation[explanations.label == name].tolist()
        )
        share = interp.surface_form_share(texts)
        out[f"substring_word_{name}"] = float(share["substring (word)"])
        out[f"surface_any_{name}"] = float(share["any"])
        out[f"surface_n_{name}"] = int(share["n"])
    return out


# --- Summary and claims -------------------------------------------------------------------------------------------


def _key(group: str, removed: str) -> str:
    return group if removed == "group" else f"{removed}_{group}"


def summary(
    masking_rows: pd.DataFrame | None,
    firing: dict[str, dict[str, float]] | None,
    explanations: pd.DataFrame | None,
    study,
) -> dict[str, float | int | str]:
    """The numbers the chapter's prose glues for the paper's analyses, one schema whether or not they were measured.

    Keys: `mask_n`, `mask_n_unstable`, `mask_ratio`, `mask_draws`, `mask_ce_draws`, `mask_ce_seeds` (text),
    `mask_<metric>_<cut>` and `mask_<metric>_std_<cut>` for `<metric>` in `METRICS` and `<cut>` in `stable`,
    `unstable`, `count_stable`, `mass_stable`, `count_unstable`, `mass_unstable` (the mean over draws and seeds),
    `mask_mass_pct_<cut>` (percent of the activation mass removed), `firing_<median|mean>_pct_<label>` (percent of
    tokens, pooled over seeds), `firing_n_<label>`, `active_pct` (k / d_sae of the reference SAEs, percent: the
    mean firing rate over all latents), the sentences `mask_reading` and `firing_reading`, and the keys of
    `explanation_shares`.

    Args:
        masking_rows: `masking_table` (None: not measured).
        firing: `masking.firing_rate_summary` (None: not measured).
        explanations: the chapter's explanations (None or empty without an endpoint).
        study: the chapter's `AsymmetryStudy`.
    """
    nan = math.nan
    out: dict[str, float | int | str] = {
        "mask_ratio": int(study.mask_ratio),
        "mask_draws": int(study.mask_draws),
        "mask_ce_draws": int(study.ce_control_draws),
    }
    by = None if masking_rows is None or not len(masking_rows) else masking_by_cut(masking_rows)
    n = nan if by is None else float(by.n_removed[(by.group == "stable") & (by.removed == "group")].iloc[0])
    out["mask_n"] = int(n) if math.isfinite(n) else 0
    out["mask_n_unstable"] = out["mask_n"] * int(study.mask_ratio)
    seeds = [] if masking_rows is None else sorted(masking_rows.seed[masking_rows.ce_loss.notna()].unique())
    out["mask_ce_seeds"] = ", ".join(map(str, seeds)) or "none"
    for group in ("stable", "unstable"):
        for removed in REMOVED:
            key = _key(group, removed)
            found = None if by is None else by[(by.group == group) & (by.removed == removed)]
            row = found.iloc[0] if found is not None and len(found) else pd.Series(dtype=float)
            out[f"mask_mass_pct_{key}"] = 100 * float(row.get("mass_removed", nan))
            for metric in METRICS:
                out[f"mask_{metric}_{key}"] = float(row.get(f"{metric}_mean", nan))
                out[f"mask_{metric}_std_{key}"] = float(row.get(f"{metric}_std", nan))
    for name in ("stable", "unstable"):
        f = (firing or {}).get(name, {})
        out[f"firing_median_pct_{name}"] = 100 * float(f.get("median", nan))
        out[f"firing_mean_pct_{name}"] = 100 * float(f.get("mean", nan))
        out[f"firing_n_{name}"] = int(f.get("n", 0))
    out |= explanation_shares(explanations)
    # TopK: every token activates k of the d_sae latents, so the mean firing rate over all latents is k / d_sae.
    out["active_pct"] = 100 * study.grid.k / study.grid.reference[2]
    out["mask_reading"] = mask_reading(out)
    out["firing_reading"] = firing_reading(out)
    return out


def mask_reading(s: dict) -> str:
    """One sentence for the prose: does each removed group cost more or less than random latents of its activation
    mass, in explained variance and in CE-loss score (from `summary`'s keys; a note when not measured)."""
    parts = []
    for group, title in (
        ("stable", "the N stable latents"),
        ("unstable", f"the {s.get('mask_ratio', 4)}N unstable ones"),
    ):
        cmp = []
        for metric, what in (("ev_loss", "explained variance"), ("ce_loss", "CE-loss score")):
            own, ctrl = s.get(f"mask_{metric}_{group}", math.nan), s.get(f"mask_{metric}_mass_{group}", math.nan)
            if math.isfinite(own) and math.isfinite(ctrl):
                word = "more" if own > ctrl else "less"
                cmp.append(f"{word} {what} ({own:.3g} against {ctrl:.3g})")
        if cmp:
            parts.append(f"{title} cost {' and '.join(cmp)}")
    if not parts:
        return (
            f"The paper's masking was not measured at this scale (some seed lacks a stable latent or "
            f"{s.get('mask_ratio', 4)}N unstable ones)."
        )
    return "Against random latents of the same activation mass, " + "; ".join(parts) + "."


def firing_reading(s: dict) -> str:
    """One sentence for the prose: how far each group's mean firing rate lies from its median (a mean well above the
    median marks a heavy tail: a few latents that fire on many tokens)."""
    parts, ratios = [], []
    for name in ("unstable", "stable"):
        med, mean = s.get(f"firing_median_pct_{name}", math.nan), s.get(f"firing_mean_pct_{name}", math.nan)
        if math.isfinite(med) and math.isfinite(mean) and med > 0:
            parts.append(f"the {name} latents' mean is {mean / med:.1f} times their median")
            ratios.append(mean / med)
    if not parts:
        return ""
    tail = " (a heavy tail: a few latents fire on many tokens)" if max(ratios) >= 1.5 else ""
    return "Within each group, " + " and ".join(parts) + tail + "."


def _fmt(v: float, fmt: str) -> str:
    return "n/a" if not math.isfinite(v) else fmt.format(v)


def claims(summary: dict) -> list[common.Claim]:
    """The paper's analyses as rows of the chapter's claims table (`common.Claim`), each with the reported value.

    Masking holds when removing N stable latents costs more than removing `ratio * N` unstable ones (EV, and CE
    score); firing rates when the unstable latents' mean rate is below the stable ones'; explanations when the word
    "substring" (any surface-form category) is more common in unstable latents' explanations. A row is `not
    measured` when a number is NaN (no cut possible, no CE seed, no explainer endpoint).
    """
    g = summary.get
    nan = math.nan
    ratio = int(g("mask_ratio", 4))
    rows = []
    for metric, what in (("ev_loss", "explained variance"), ("ce_loss", "CE-loss score")):
        s, u = g(f"mask_{metric}_stable", nan), g(f"mask_{metric}_unstable", nan)
        controls = ", ".join(
            f"{removed}-matched to N stable {_fmt(g(f'mask_{metric}_{removed}_stable', nan), '{:.3g}')}, to "
            f"{ratio}N unstable {_fmt(g(f'mask_{metric}_{removed}_unstable', nan), '{:.3g}')}"
            for removed in ("count", "mass")
        )
        measured = math.isfinite(s) and math.isfinite(u)
        rows.append(
            common.claim(
                f"Removing {ratio}N unstable latents costs less {what} than removing N stable ones.",
                f"{what} lost (N = {g('mask_n', 0)}): N stable > {ratio}N unstable",
                f"N stable {_fmt(s, '{:.3g}')}, {ratio}N unstable {_fmt(u, '{:.3g}')} (random controls: {controls})",
                s > u if measured else None,
                PAPER_MASKING if metric == "ev_loss" else common.NOT_REPORTED,
            )
        )
    ms, mu = g("firing_mean_pct_stable", nan), g("firing_mean_pct_unstable", nan)
    rows.append(
        common.claim(
            "Unstable latents are low-frequency (mean firing rate).",
            "mean firing frequency: unstable < stable",
            f"stable {_fmt(ms, '{:.3g}%')}, unstable {_fmt(mu, '{:.3g}%')} of tokens",
            mu < ms if math.isfinite(ms) and math.isfinite(mu) else None,
            PAPER_FREQUENCY,
        )
    )
    none = g("surface_n_stable", 0) + g("surface_n_unstable", 0) == 0
    for key, what in (("substring_word", 'the word "substring"'), ("surface_any", "a surface-form category")):
        s, u = g(f"{key}_stable", nan), g(f"{key}_unstable", nan)
        ours = (
            "not measured: no explanations (no explainer endpoint); the top-token share row stands in"
            if none
            else f"stable {_fmt(s, '{:.2f}')}, unstable {_fmt(u, '{:.2f}')}"
        )
        rows.append(
            common.claim(
                f"Unstable latents' explanations name {what} more often than stable latents'.",
                f"share of explanations with {what} (keyword rules, `surface_form_share`): unstable > stable",
                ours,
                u > s if math.isfinite(s) and math.isfinite(u) else None,
                PAPER_SUBSTRING if key == "substring_word" else common.NOT_REPORTED,
            )
        )
    return rows
