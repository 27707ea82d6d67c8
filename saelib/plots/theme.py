"""The book's look: `set_theme()`, one palette, the label order, a figure-or-axes helper, and the stability
histogram that chapters 1 and 4 share.

Each function draws on `ax` (a new figure when None) and returns the axes, so that notebooks only call and caption.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes

PALETTE = {
    "isolated": "#0173b2",
    "stable": "#0173b2",
    "group": "#de8f05",
    "unstable": "#de8f05",
    "intermediate": "#029e73",
    "unassigned": "#949494",
    "null": "#7f7f7f",
    "random": "#7f7f7f",
    "dead": "#cc78bc",
}
"""Colours by feature kind, shared by every chapter (seaborn's colorblind palette)."""


LABEL_ORDER = ["unstable", "intermediate", "stable"]
"""Stability labels from least to most stable (dead latents are left out of chapter 2's figures)."""


def set_theme() -> None:
    """The seaborn theme of every figure in the book."""
    sns.set_theme(
        context="notebook",
        style="whitegrid",
        palette="colorblind",
        rc={"figure.dpi": 110, "axes.titlesize": "medium", "figure.figsize": (6.4, 4.0)},
    )


def stripplot(*args, seed: int = 0, **kwargs) -> Axes:
    """`seaborn.stripplot` with reproducible jitter: seaborn draws it from NumPy's global random state, which is set
    to `seed` for the call and restored after, so that a re-executed chapter gives the same figure byte for byte."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return sns.stripplot(*args, **kwargs)
    finally:
        np.random.set_state(state)


def axes_or_new(ax: Axes | None, figsize=None) -> Axes:
    """`ax`, or the axes of a new figure."""
    return ax if ax is not None else plt.subplots(figsize=figsize)[1]


def plot_stability_hist(
    stability, kind=None, null=None, ax: Axes | None = None, normalize: str = "kind", levels=None
) -> Axes:
    """Share of latents at each stability value (stability takes S values for S seeds), the null's beside them.

    Args:
        stability: per-latent stability (NaN for dead latents, which are left out).
        kind: per-latent group name (e.g. `isolated` / `group`, or the labels `stable` / `unstable`).
        null: stability of the null baseline (untrained SAEs), drawn as its own bar, as shares of its own latents.
        normalize: `kind`: each kind's bars are shares of that kind's latents, kinds side by side (for kinds that
            are not a function of stability, e.g. isolated vs group); `all`: shares of all (alive) latents, kinds
            stacked in one bar per value, so that the bars sum to 1 (for the stable/unstable labels, whose per-kind
            shares would be 1 by construction).
        levels: stability values to show even where no latent has them (e.g. the S values of S seeds).
    """
    if normalize not in ("kind", "all"):
        raise ValueError(f"normalize={normalize!r} must be kind or all")
    ax = axes_or_new(ax)
    df = pd.DataFrame(
        {
            "stability": np.asarray(stability, dtype=float).ravel(),
            "kind": np.asarray(kind).ravel() if kind is not None else "all",
        }
    ).dropna()
    df["level"] = df["stability"].round(2)
    kinds = [k for k in LABEL_ORDER if k in set(df.kind)] + sorted(set(df.kind) - set(LABEL_ORDER))
    counts = df.groupby(["kind", "level"]).size()
    shares = {k: counts[k] / (counts[k].sum() if normalize == "kind" else len(df)) for k in kinds}
    bars = [[k] for k in kinds] if normalize == "kind" else [kinds]  # the kinds drawn in each bar of a value
    if null is not None:
        shares[NULL_KIND] = (
            pd.Series(np.asarray(null, dtype=float).ravel()).dropna().round(2).value_counts(normalize=True)
        )
        bars.append([NULL_KIND])
    shares = pd.DataFrame(shares).T  # (kind, level)
    extra = [] if levels is None else np.round(np.asarray(levels, dtype=float), 2)
    shares = shares.reindex(columns=sorted(set(shares.columns) | set(extra))).fillna(0.0)
    x, width = np.arange(shares.shape[1]), 0.8 / len(bars)
    for i, stack in enumerate(bars):
        bottom = np.zeros(len(x))
        for k in stack:
            h = shares.loc[k].to_numpy()
            ax.bar(
                x + (i - (len(bars) - 1) / 2) * width,
                h,
                width,
                bottom=bottom,
                label=k,
                color=PALETTE.get(k.split(" ")[0], "#333333"),
            )
            bottom += h
    ax.set_xticks(x, [f"{v:.2f}" for v in shares.columns])
    ylabel = "share of latents in kind" if normalize == "kind" else "share of alive latents"
    ax.set(xlabel="per-feature stability (share of other seeds with a match)", ylabel=ylabel)
    ax.legend(fontsize="small", title=None)
    return ax


NULL_KIND = "null (untrained)"
"""The legend label of the null's bars in `plot_stability_hist`."""


def plot_group_latents(
    directions: list[torch.Tensor], basis: torch.Tensor, ax: Axes | None = None, labels: list[str] | None = None
) -> Axes:
    """Latents of one group from several seeds, as arrows in the plane of the first two axes of the true subspace.

    Args:
        directions: per seed, the unit decoder rows `(n_s, d_in)` assigned to the group.
        basis: the group's orthonormal basis `(r, d_in)`; the first two rows span the drawn plane.
    """
    ax = axes_or_new(ax, figsize=(4.6, 4.6))
    colors = sns.color_palette("colorblind", len(directions))
    for i, dirs in enumerate(directions):
        xy = (dirs.double() @ basis[:2].double().T).numpy()
        for u, v in xy:
            ax.annotate(
                "",
                xy=(u, v),
                xytext=(0, 0),
                arrowprops={"arrowstyle": "-|>", "color": colors[i], "lw": 1.6, "alpha": 0.85},
            )
        ax.plot([], [], c=colors[i], label=labels[i] if labels else f"seed {i}")
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), c="0.8", lw=0.8)
    ax.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), aspect="equal", xlabel="true axis 1", ylabel="true axis 2")
    ax.legend(fontsize="small", loc="upper right")
    return ax
