"""Chapter 2's cuts (`saelib.chapters.asymmetry`): which latents each experiment keeps, their random controls, tables.

- `feature_cuts`: the masks of the experiments: keep or remove the stable / unstable latents, beside random controls
  of each matched in size (`size_matched_subset`) or in mass (`mass_matched_subset`);
  `metrics.masked_explained_variance` and `splice.masked_spliced_ce` measure every cut at once, `cut_table` and
  `cut_summary` tabulate them.
- `table_summary`: the chapter's headline numbers from its tables (the cuts', and the per-latent tables of
  `saelib.chapters.asymmetry_latents`).

`saelib.chapters.asymmetry` re-exports every name here; its `run` caches the measurements of these cuts.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from saelib.lm import splice
from saelib.masking import mass_matched_subset
from saelib.masking import random_subset as size_matched_subset
from saelib.stability import DEAD, STABLE, UNSTABLE

LABELS = ("stable", "unstable")
"""The two groups the chapter compares."""


# --- Cuts and their random controls ------------------------------------------------------------------------------


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


# --- The chapter's numbers from its tables ------------------------------------------------------------------------


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
