"""Chapter 1's figures: the distribution of per-feature stability against its null, stability across the grid, its
sensitivity to tau and to the reference seeds, and stability against frequency.

Each function draws on `ax` (a new figure when None) and returns the axes, so that notebooks only call and caption.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from torch import Tensor

from saelib.plots.theme import LABEL_ORDER, PALETTE, axes_or_new, plot_stability_hist
from saelib.stability import LABEL_NAMES


def plot_stability_distribution(
    stability: Tensor, label: Tensor, null: Tensor | None = None, ax: Axes | None = None
) -> Axes:
    """Share of all alive latents at each stability value, stacked by label, with the null's shares beside.

    Args:
        stability: `(S, d_sae)` per-latent stability (NaN: dead, left out).
        label: `(S, d_sae)` integer labels (`saelib.stability.LABEL_NAMES`).
        null: per-latent stability of the untrained null, any shape.
    """
    names = [LABEL_NAMES[int(c)] for c in label.flatten()]
    levels = np.linspace(0, 1, stability.shape[0])  # the S values stability takes with S seeds
    return plot_stability_hist(
        stability.flatten(), names, null=None if null is None else null.flatten(), ax=ax, normalize="all", levels=levels
    )


def plot_grid_stability(
    table: pd.DataFrame, y: str = "mean_stability", null: str | None = "null_stability", ax: Axes | None = None
) -> Axes:
    """A score in [0, 1] of every grid point against dictionary size: one line per (layer, variant), the null
    dotted."""
    ax = axes_or_new(ax)
    styles = dict(zip(sorted(table.variant.unique()), ["-o", "--s", "-.^", ":D"]))
    colors = dict(zip(sorted(table.layer.unique()), sns.color_palette("colorblind", table.layer.nunique())))
    for (layer, variant), df in table.sort_values("d_sae").groupby(["layer", "variant"]):
        ax.plot(df.d_sae, df[y], styles[variant], c=colors[layer], label=f"layer {layer}, {variant}")
    if null is not None and null in table:
        nulls = table.groupby("d_sae")[null].mean()
        ax.plot(nulls.index, nulls.values, ":", c=PALETTE["null"], label="null (untrained)")
    ax.set(xscale="log", xlabel="dictionary size d_sae", ylabel=y.replace("_", " "), ylim=(-0.02, 1.02))
    ax.set_xticks(sorted(table.d_sae.unique()), [str(d) for d in sorted(table.d_sae.unique())])
    ax.minorticks_off()
    ax.legend(fontsize="small")
    return ax


def plot_threshold_sweep(df: pd.DataFrame, tau: float | None = None, ax: Axes | None = None) -> Axes:
    """Mean stability and the stable / unstable shares against the similarity threshold tau."""
    ax = axes_or_new(ax)
    ax.plot(df.threshold, df.mean_stability, "-o", c="k", label="mean stability")
    ax.plot(df.threshold, df.stable_share, "-s", c=PALETTE["stable"], label="share stable")
    ax.plot(df.threshold, df.unstable_share, "-^", c=PALETTE["unstable"], label="share unstable")
    if tau is not None:
        ax.axvline(tau, ls="--", c="0.5", lw=0.8)
    ax.set(xlabel="similarity threshold tau", ylabel="share of alive latents", ylim=(-0.02, 1.02))
    ax.legend(fontsize="small")
    return ax


def plot_reference_sweep(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Stability estimated from n reference seeds: shares and agreement with the all-seed labels against n."""
    ax = axes_or_new(ax)
    ax.plot(df.n_reference, df.stable_share, "-s", c=PALETTE["stable"], label="share stable")
    ax.plot(df.n_reference, df.unstable_share, "-^", c=PALETTE["unstable"], label="share unstable")
    ax.plot(df.n_reference, df.label_agreement, "--o", c="k", label="label = all-seed label")
    ax.set(xlabel="comparison seeds N", ylabel="share of alive latents", ylim=(-0.02, 1.02))
    ax.set_xticks(df.n_reference)
    ax.legend(fontsize="small")
    return ax


def plot_stability_vs_frequency(latents: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Per-feature stability against firing frequency (log), latents as points coloured by label (in the legend),
    the binned mean as a line."""
    ax = axes_or_new(ax)
    df = latents[latents.frequency > 0]
    jitter = np.random.default_rng(0).uniform(-0.02, 0.02, len(df))
    colors = df.label.map(lambda k: PALETTE.get(k, "#333333"))
    ax.scatter(df.frequency, df.stability + jitter, s=3, alpha=0.25, c=colors, rasterized=True)
    bins = np.logspace(np.log10(df.frequency.min()), np.log10(df.frequency.max()), 12)
    mid = pd.cut(df.frequency, bins, include_lowest=True)
    binned = df.groupby(mid, observed=True).stability.mean()
    centers = [np.sqrt(iv.left * iv.right) if iv.left > 0 else iv.right for iv in binned.index]
    ax.plot(centers, binned.values, "-o", c="k", label="mean per frequency bin")
    for lab in [lab for lab in LABEL_ORDER if (df.label == lab).any()]:  # a key for the points' colours
        ax.scatter([], [], s=12, c=PALETTE[lab], label=lab)
    ax.set(
        xscale="log", xlabel="firing frequency (held-out tokens)", ylabel="per-feature stability", ylim=(-0.05, 1.05)
    )
    ax.legend(fontsize="small", loc="upper left")
    return ax


CURVE_PANELS = (
    (
        "per-feature stability",
        {"mean_stability": "mean stability", "stable_share": "share stable", "unstable_share": "share unstable"},
    ),
    ("whole-SAE matching", {"shared_fraction": "shared fraction", "pw_mcc": "PW-MCC"}),
    (
        "quality",
        {
            "explained_variance": "explained variance",
            "ce_loss_score": "CE-loss score",
            "dead_fraction": "dead fraction",
        },
    ),
)
"""The panels of `plot_budget_curve`: a title and the curve's columns each draws, with their legend names."""


def plot_budget_curve(curve: pd.DataFrame, fit: dict[str, dict[str, float]] | None = None, axes=None):
    """The reference point's scores against training tokens (log axis), one panel per `CURVE_PANELS` entry; where
    `fit` holds a column's `log_fit`, its line is drawn dashed over the measured range.

    Returns:
        The three axes.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(15, 4), sharex=True)
    colors = sns.color_palette("colorblind", 3)
    special = {"mean_stability": "k", "stable_share": PALETTE["stable"], "unstable_share": PALETTE["unstable"]}
    x = curve.tokens.to_numpy(dtype=float)
    xs = np.geomspace(x.min(), x.max(), 50)
    for ax, (title, columns) in zip(axes, CURVE_PANELS):
        for (column, name), marker, color in zip(columns.items(), "osd", colors):
            if column not in curve or curve[column].isna().all():
                continue
            c = special.get(column, color)
            ax.plot(x, curve[column], "-" + marker, c=c, label=name)
            if fit is not None and column in fit:
                f = fit[column]
                ax.plot(xs, f["slope"] * np.log10(xs) + f["intercept"], "--", c=c, lw=0.8)
        ax.set(xscale="log", xlabel="training tokens per SAE", title=title, ylim=(-0.02, 1.02))
        ax.set_xticks(x, [f"{t / 1e6:g}M" for t in x])
        ax.minorticks_off()
        ax.legend(fontsize="small")
    axes[0].set_ylabel("score")
    return axes
