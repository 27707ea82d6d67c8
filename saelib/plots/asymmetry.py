"""Chapter 2's figures: feature cuts against their controls, statistics by stability label, single-latent ablations.

Each `plot_*` function draws on `ax` (a new figure when None) and returns the axes; the `figure_*` functions lay out
one figure of the chapter from the tables of `chapters.asymmetry.run` and return its axes, so that the notebook only
calls and captions.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes

from saelib.plots.theme import LABEL_ORDER, PALETTE, axes_or_new, stripplot


def plot_cut_bars(table: pd.DataFrame, metric: str, ax: Axes | None = None, ylabel: str | None = None) -> Axes:
    """One bar per cut (keep / remove the stable or unstable latents) beside its size- and mass-matched random
    controls (mean and standard deviation over draws); dashed lines mark the full SAE and the SAE with no latent.

    Args:
        table: `asymmetry.feature_cuts(...).table` with a `metric` column.
        metric: e.g. `ev` or `ce_loss_score`.
    """
    ax = axes_or_new(ax, figsize=(7.0, 4.0))
    df = table[table.group.isin(["stable", "unstable"])].copy()
    df["cut"] = df.op + " " + df.group
    df["subset"] = df.control.map({"group": "the group", "size": "size-matched random", "mass": "mass-matched random"})
    order = ["keep stable", "keep unstable", "remove stable", "remove unstable"]
    hue_order = ["the group", "size-matched random", "mass-matched random"]
    palette = {"the group": PALETTE["stable"], "size-matched random": "#bbbbbb", "mass-matched random": "#666666"}
    sns.barplot(
        df, x="cut", y=metric, hue="subset", order=order, hue_order=hue_order, palette=palette, errorbar="sd", ax=ax
    )
    for cut, style in (("full SAE", "--"), ("no latent", ":")):
        v = table.loc[table.cut == cut, metric]
        if len(v):
            ax.axhline(float(v.iloc[0]), c="k", ls=style, lw=0.9, label=cut)
    ax.set(xlabel="", ylabel=ylabel or metric)
    # One word a line, so that the labels do not run into each other in half a page's width.
    ax.set_xticks(range(len(order)), [c.replace(" ", "\n") for c in order])
    # Below the axes: inside, the legend sat on bars that reach from 0 to the full SAE's score.
    ax.legend(fontsize="small", title=None, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    return ax


def plot_by_stability_label(
    df: pd.DataFrame, column: str, ax: Axes | None = None, log: bool = True, ylabel: str | None = None
) -> Axes:
    """Distribution of a per-latent `column` for unstable, intermediate and stable latents (boxes, no outliers
    drawn beyond the whiskers' points)."""
    ax = axes_or_new(ax)
    d = df[df.label.isin(LABEL_ORDER)].dropna(subset=[column])
    if log:
        d = d[d[column] > 0]
    order = [lab for lab in LABEL_ORDER if lab in set(d.label)]
    sns.boxplot(
        d,
        x="label",
        y=column,
        order=order,
        hue="label",
        hue_order=order,
        palette={k: PALETTE[k] for k in order},
        fliersize=1.5,
        ax=ax,
        legend=False,
    )
    ax.set(xlabel="", ylabel=ylabel or column.replace("_", " "), yscale="log" if log else "linear")
    return ax


def plot_marginal_vs_stability(
    df: pd.DataFrame, y: str = "delta_loss_per_token", ax: Axes | None = None, ylabel: str | None = None
) -> Axes:
    """Loss change when one latent is ablated against that latent's stability: one point per latent (coloured by
    label, jittered along x), and the mean per stability level; symmetric log scale where the changes span more than
    two decades, linear otherwise."""
    ax = axes_or_new(ax)
    d = df.dropna(subset=[y, "stability"])
    rng = np.random.default_rng(0)
    for lab in [lab for lab in LABEL_ORDER if (d.label == lab).any()]:
        part = d[d.label == lab]
        ax.scatter(
            part.stability + rng.uniform(-0.02, 0.02, len(part)), part[y], s=14, alpha=0.75, c=PALETTE[lab], label=lab
        )
    means = d.groupby("stability")[y].mean()
    ax.plot(means.index, means.values, "-", c="k", lw=1, label="mean per level")
    nonzero = d[y].abs()[d[y] != 0]
    if len(nonzero) and nonzero.max() > 100 * nonzero.min():  # symlog only where the values span decades
        ax.set_yscale("symlog", linthresh=float(nonzero.min()))  # (on less, symlog draws no y tick at all)
    ax.set(xlabel="per-feature stability", ylabel=ylabel or y.replace("_", " "), xlim=(-0.05, 1.05))
    ax.legend(fontsize="small")
    return ax


def _panels(n: int, figsize: tuple[float, float], axes=None) -> np.ndarray:
    if axes is not None:
        axes = np.asarray(axes).ravel()
        if len(axes) != n:
            raise ValueError(f"expected {n} axes, got {len(axes)}")
        return axes
    fig, axes = plt.subplots(1, n, figsize=figsize)
    fig.set_layout_engine("tight")
    return np.asarray(axes).ravel()


def figure_activation_stats(latents: pd.DataFrame, axes=None) -> np.ndarray:
    """Firing frequency, mean activation where firing and max activation by stability label (three panels, log
    scale), from `AsymmetryResult.latents`."""
    axes = _panels(3, (11, 3.6), axes)
    plot_by_stability_label(latents, "frequency", ax=axes[0], ylabel="firing frequency")
    plot_by_stability_label(latents, "mean_activation", ax=axes[1], ylabel="mean activation when firing")
    plot_by_stability_label(latents, "max_activation", ax=axes[2], ylabel="max activation")
    return axes


def figure_ce_cuts(cuts: pd.DataFrame, axes=None) -> np.ndarray:
    """CE-loss score (left) and KL from the clean model (right) of each cut and its controls, from
    `AsymmetryResult.cuts`."""
    axes = _panels(2, (12, 4), axes)
    plot_cut_bars(cuts, "ce_loss_score", ax=axes[0], ylabel="CE-loss score")
    plot_cut_bars(cuts, "kl_div", ax=axes[1], ylabel="KL(clean || spliced), nats")
    return axes


def figure_marginal(marginal: pd.DataFrame, axes=None) -> np.ndarray:
    """Loss change of single-latent ablations against stability, per token (left) and per firing (right), from
    `AsymmetryResult.marginal`."""
    axes = _panels(2, (12, 4), axes)
    plot_marginal_vs_stability(marginal, "delta_loss_per_token", ax=axes[0], ylabel="loss change per token (nats)")
    plot_marginal_vs_stability(marginal, "delta_loss_per_firing", ax=axes[1], ylabel="loss change per firing (nats)")
    return axes


def figure_triggers(triggers: pd.DataFrame, axes=None) -> np.ndarray:
    """Share of a latent's top activations on its most common token string (left) and the entropy of its trigger
    strings (right) by stability label, from `AsymmetryResult.triggers`."""
    axes = _panels(2, (10, 3.8), axes)
    plot_by_stability_label(
        triggers, "top_share", ax=axes[0], log=False, ylabel="share of top activations on one token"
    )
    plot_by_stability_label(triggers, "entropy_bits", ax=axes[1], log=False, ylabel="entropy of trigger tokens (bits)")
    return axes


# --- The paper's analyses (`chapters.asymmetry_paper`) -------------------------------------------------------------

_REMOVED = {"group": "the group", "count": "count-matched random", "mass": "mass-matched random"}


def plot_masking(per_seed: pd.DataFrame, metric: str, ratio: int = 4, ax: Axes | None = None, ylabel=None) -> Axes:
    """What removing N stable latents and `ratio * N` unstable ones costs, beside random latents of the same count
    and of the same activation mass: bars are means over seeds, points the seeds (each a mean over draws).

    Args:
        per_seed: `asymmetry_paper.per_seed(table)`: `group`, `removed`, `seed` and the `metric` column.
        metric: `ev_loss` or `ce_loss`.
    """
    ax = axes_or_new(ax, figsize=(6.0, 4.0))
    df = per_seed.dropna(subset=[metric]).copy()
    if not len(df):  # not measured at this scale (no N, or no seed spliced)
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set(xticks=[], yticks=[], ylabel=ylabel or metric)
        return ax
    df["cut"] = df.group.map({"stable": "remove N stable", "unstable": f"remove {ratio}N unstable"})
    df["subset"] = df.removed.map(_REMOVED)
    order = ["remove N stable", f"remove {ratio}N unstable"]
    hue_order = list(_REMOVED.values())
    palette = {"the group": PALETTE["stable"], "count-matched random": "#bbbbbb", "mass-matched random": "#666666"}
    common = dict(x="cut", y=metric, hue="subset", order=order, hue_order=hue_order, ax=ax)
    sns.barplot(df, palette=palette, errorbar=None, **common)
    stripplot(df, palette={k: "k" for k in hue_order}, dodge=True, size=3.5, legend=False, **common)
    ax.axhline(0, c="k", lw=0.6)
    ax.set(xlabel="", ylabel=ylabel or metric)
    ax.legend(fontsize="small", title=None, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    return ax


def figure_masking(per_seed: pd.DataFrame, ratio: int = 4, axes=None) -> np.ndarray:
    """Explained variance lost (left) and CE-loss score lost (right) by the paper's masking and its controls."""
    axes = _panels(2, (12, 4.2), axes)
    plot_masking(per_seed, "ev_loss", ratio, ax=axes[0], ylabel="explained variance lost")
    plot_masking(per_seed, "ce_loss", ratio, ax=axes[1], ylabel="CE-loss score lost")
    return axes


def plot_firing_ecdf(latents: pd.DataFrame, reported: dict[str, float] | None = None, ax: Axes | None = None) -> Axes:
    """Empirical CDF of the firing rate (percent of tokens, log axis) of stable and unstable latents, their medians
    (dashed) and, when given, the reported rates (dotted, `{label: percent}`)."""
    ax = axes_or_new(ax, figsize=(6.0, 4.0))
    d = latents[latents.label.isin(["stable", "unstable"]) & (latents.frequency > 0)]
    d = d.assign(rate=100 * d.frequency)
    for lab in ("unstable", "stable"):
        part = d[d.label == lab]
        if not len(part):
            continue
        sns.ecdfplot(part, x="rate", color=PALETTE[lab], label=f"{lab} (n = {len(part)})", ax=ax)
        ax.axvline(float(part.rate.median()), c=PALETTE[lab], ls="--", lw=1)
        if reported and lab in reported:
            ax.axvline(reported[lab], c=PALETTE[lab], ls=":", lw=1.5)
    ax.set(xscale="log", xlabel="firing rate (% of tokens)", ylabel="share of latents at or below")
    ax.legend(fontsize="small")
    return ax
