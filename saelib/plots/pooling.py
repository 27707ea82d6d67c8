"""Chapter 5's figures: per-feature match survival, stability against explained variance, the pooling sweep.

Each function draws on `ax` (a new figure when None) and returns the axes, so that notebooks only call and caption.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes

from saelib.plots.theme import PALETTE, axes_or_new


def plot_match_survival(samples: dict[str, np.ndarray], tau: float | None = None, ax: Axes | None = None) -> Axes:
    """Share of latents whose best match in the other SAE has cosine at least x (one line per kind of SAE pair);
    at x = tau the curve is the mean per-feature stability between two SAEs."""
    ax = axes_or_new(ax)
    colors = sns.color_palette("colorblind", len(samples))
    styles = ["-", "-.", ":", (0, (3, 1, 1, 1, 1, 1))]  # besides colour (orange and vermilion are close); tau: dashed
    for i, ((label, v), c) in enumerate(zip(samples.items(), colors, strict=True)):
        v = np.sort(np.asarray(v, dtype=float)[~np.isnan(v)])
        ax.step(v, 1 - np.arange(len(v)) / len(v), where="post", c=c, ls=styles[i % len(styles)], label=label)
    if tau is not None:
        ax.axvline(tau, ls="--", c="k", lw=0.8, label=f"tau = {tau}")
    ax.set(
        xlabel="max cosine to the other SAE's decoder rows",
        ylabel="share of latents at least this similar",
        xlim=(0, 1.01),
        ylim=(0, 1.02),
    )
    ax.legend(fontsize="small", loc="upper right")  # curves fall from (0, 1): the upper right stays empty
    return ax


def plot_stability_vs_ev(table: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Mean per-feature stability against explained variance, one point per SAE (seed), coloured by kind (`sae`)."""
    ax = axes_or_new(ax)
    sns.scatterplot(
        table, x="explained_variance", y="stability", hue="sae", style="sae", s=70, ax=ax, palette="colorblind"
    )
    ax.set(xlabel="explained variance (held-out tokens)", ylabel="mean per-feature stability", ylim=(-0.02, 1.02))
    # Outside the axes: briefly trained SAEs sit at stability 0, all along the bottom, where a legend inside would fall.
    ax.legend(fontsize="small", title=None, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def plot_pooling_sweep(
    sweep: pd.DataFrame, standard: Mapping[str, float] | pd.Series | None = None, ax: Axes | None = None
) -> Axes:
    """Pooled SAEs' stability and explained variance against the seeds pooled per SAE; `standard` (a mapping or a
    row of a table, e.g. the standard SAEs' row of chapter 5's quality table) draws its `stability` and
    `explained_variance` as dashed lines."""
    ax = axes_or_new(ax)
    for col, c in (("stability", PALETTE["stable"]), ("explained_variance", PALETTE["group"])):
        ax.plot(sweep["seeds_per_group"], sweep[col], "-o", c=c, label=f"pooled: {col.replace('_', ' ')}")
        if standard is not None and col in standard:
            ax.axhline(standard[col], ls="--", c=c, lw=1, label=f"standard: {col.replace('_', ' ')}")
    ax.set(xlabel="seeds pooled per SAE", ylabel="score", ylim=(-0.02, 1.02), xticks=list(sweep["seeds_per_group"]))
    ax.legend(fontsize="small", loc="best")
    return ax
