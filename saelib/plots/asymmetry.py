"""Chapter 2's figures: feature cuts against their controls, statistics by stability label, single-latent ablations.

Each function draws on `ax` (a new figure when None) and returns the axes, so that notebooks only call and caption.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes

from saelib.plots.theme import LABEL_ORDER, PALETTE, axes_or_new


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
    df["subset"] = df.control.map({"group": "the group", "size": "size-matched random",
                                   "mass": "mass-matched random"})
    order = ["keep stable", "keep unstable", "remove stable", "remove unstable"]
    hue_order = ["the group", "size-matched random", "mass-matched random"]
    palette = {"the group": PALETTE["stable"], "size-matched random": "#bbbbbb", "mass-matched random": "#666666"}
    sns.barplot(df, x="cut", y=metric, hue="subset", order=order, hue_order=hue_order, palette=palette,
                errorbar="sd", ax=ax)
    for cut, style in (("full SAE", "--"), ("no latent", ":")):
        v = table.loc[table.cut == cut, metric]
        if len(v):
            ax.axhline(float(v.iloc[0]), c="k", ls=style, lw=0.9, label=cut)
    ax.set(xlabel="", ylabel=ylabel or metric)
    ax.legend(fontsize="small", title=None, loc="best")
    return ax


def plot_by_stability_label(df: pd.DataFrame, column: str, ax: Axes | None = None, log: bool = True,
                            ylabel: str | None = None) -> Axes:
    """Distribution of a per-latent `column` for unstable, intermediate and stable latents (boxes, no outliers
    drawn beyond the whiskers' points)."""
    ax = axes_or_new(ax)
    d = df[df.label.isin(LABEL_ORDER)].dropna(subset=[column])
    if log:
        d = d[d[column] > 0]
    order = [lab for lab in LABEL_ORDER if lab in set(d.label)]
    sns.boxplot(d, x="label", y=column, order=order, hue="label", hue_order=order,
                palette={k: PALETTE[k] for k in order}, fliersize=1.5, ax=ax, legend=False)
    ax.set(xlabel="", ylabel=ylabel or column.replace("_", " "), yscale="log" if log else "linear")
    return ax


def plot_marginal_vs_stability(df: pd.DataFrame, y: str = "delta_loss_per_token", ax: Axes | None = None,
                               ylabel: str | None = None) -> Axes:
    """Loss change when one latent is ablated against that latent's stability: one point per latent (coloured by
    label, jittered along x), and the mean per stability level."""
    ax = axes_or_new(ax)
    d = df.dropna(subset=[y, "stability"])
    rng = np.random.default_rng(0)
    for lab in [lab for lab in LABEL_ORDER if (d.label == lab).any()]:
        part = d[d.label == lab]
        ax.scatter(part.stability + rng.uniform(-0.02, 0.02, len(part)), part[y], s=14, alpha=0.75,
                   c=PALETTE[lab], label=lab)
    means = d.groupby("stability")[y].mean()
    ax.plot(means.index, means.values, "-", c="k", lw=1, label="mean per level")
    nonzero = d[y].abs()[d[y] != 0]
    ax.set_yscale("symlog", linthresh=float(nonzero.min()) if len(nonzero) else 1e-6)
    ax.set(xlabel="per-feature stability", ylabel=ylabel or y.replace("_", " "), xlim=(-0.05, 1.05))
    ax.legend(fontsize="small")
    return ax
