"""The book's figures: `set_theme()`, one palette, and one `plot_*(..., ax=None)` function per figure kind.

Each function draws on `ax` (a new figure when None) and returns the axes, so that notebooks only call and caption.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.ticker import EngFormatter

PALETTE = {
    "isolated": "#0173b2", "stable": "#0173b2", "group": "#de8f05", "unstable": "#de8f05",
    "intermediate": "#029e73", "unassigned": "#949494", "null": "#7f7f7f", "random": "#7f7f7f", "dead": "#cc78bc",
}
"""Colours by feature kind, shared by every chapter (seaborn's colorblind palette)."""


def set_theme() -> None:
    """The seaborn theme of every figure in the book."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", rc={"figure.dpi": 110,
                  "axes.titlesize": "medium", "figure.figsize": (6.4, 4.0)})


def _ax(ax: Axes | None, figsize=None) -> Axes:
    return ax if ax is not None else plt.subplots(figsize=figsize)[1]


def plot_training_curves(history: dict, ax: Axes | None = None) -> Axes:
    """Fraction of variance unexplained on training batches against tokens, one line per seed."""
    ax = _ax(ax)
    fvu = np.asarray(history["fvu"])  # (n_logs, S)
    for s in range(fvu.shape[1]):
        ax.plot(history["tokens"], fvu[:, s], lw=1.2, label=f"seed {s}")
    ax.set(xlabel="training tokens", ylabel="FVU (train batch)", yscale="log")
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.legend(fontsize="small", ncol=2)
    return ax


def plot_max_cosine_to_truth(recovery: torch.Tensor, ax: Axes | None = None) -> Axes:
    """Per seed, the max cosine of each true feature to that seed's decoder rows (a strip per seed)."""
    ax = _ax(ax)
    r = recovery.detach().cpu().numpy()
    df = pd.DataFrame({"seed": np.repeat(np.arange(r.shape[0]), r.shape[1]), "max cosine": r.ravel()})
    sns.stripplot(df, x="seed", y="max cosine", ax=ax, size=3, alpha=0.6, color=PALETTE["isolated"], jitter=0.3)
    ax.axhline(0.9, ls="--", c="k", lw=0.8)
    ax.set(ylim=(min(0.5, float(r.min()) - 0.02), 1.01), ylabel="max cosine to a true isolated feature")
    return ax


def plot_stability_hist(stability, kind=None, null=None, ax: Axes | None = None) -> Axes:
    """Share of latents at each stability value (stability takes S values for S seeds), one bar per kind.

    Args:
        stability: per-latent stability (NaN for dead latents, which are left out).
        kind: per-latent group name (e.g. `isolated` / `group`, or `stable` / `unstable`).
        null: stability of the null baseline (untrained SAEs), drawn as its own kind.
    """
    ax = _ax(ax)
    df = pd.DataFrame({"stability": np.asarray(stability, dtype=float),
                       "kind": np.asarray(kind) if kind is not None else "all"})
    if null is not None:
        null = np.asarray(null, dtype=float).ravel()
        df = pd.concat([df, pd.DataFrame({"stability": null, "kind": "null (untrained)"})])
    df = df.dropna()
    df["level"] = df["stability"].round(2)
    share = df.groupby("kind")["level"].value_counts(normalize=True).rename("share").reset_index()
    levels = sorted(share["level"].unique())
    palette = {k: PALETTE.get(k.split(" ")[0], "#333333") for k in share["kind"].unique()}
    sns.barplot(share, x="level", y="share", hue="kind", order=levels, palette=palette, ax=ax)
    ax.set(xlabel="per-feature stability (share of other seeds with a match)", ylabel="share of latents in kind")
    ax.legend(fontsize="small", title=None)
    return ax


def plot_principal_angles(groups: pd.DataFrame, random_angle_deg: float | None = None, ax: Axes | None = None) -> Axes:
    """Largest principal angle between each seed's recovered span and the true subspace, per group."""
    ax = _ax(ax)
    df = groups.dropna(subset=["max_angle_deg"])
    sns.stripplot(df, x="group", y="max_angle_deg", hue="seed", ax=ax, dodge=True, size=5, palette="crest")
    if random_angle_deg is not None:
        ax.axhline(random_angle_deg, c=PALETTE["random"], ls="--", label="random subspace")
    ax.set(ylabel="largest principal angle to truth (deg)", ylim=(0, 92))
    ax.legend(fontsize="small", ncol=3, title="seed")
    return ax


def plot_group_latents(directions: list[torch.Tensor], basis: torch.Tensor, ax: Axes | None = None,
                       labels: list[str] | None = None) -> Axes:
    """Latents of one group from several seeds, as arrows in the plane of the first two axes of the true subspace.

    Args:
        directions: per seed, the unit decoder rows `(n_s, d_in)` assigned to the group.
        basis: the group's orthonormal basis `(r, d_in)`; the first two rows span the drawn plane.
    """
    ax = _ax(ax, figsize=(4.6, 4.6))
    colors = sns.color_palette("colorblind", len(directions))
    for i, dirs in enumerate(directions):
        xy = (dirs.double() @ basis[:2].double().T).numpy()
        for u, v in xy:
            ax.annotate("", xy=(u, v), xytext=(0, 0),
                        arrowprops={"arrowstyle": "-|>", "color": colors[i], "lw": 1.6, "alpha": 0.85})
        ax.plot([], [], c=colors[i], label=labels[i] if labels else f"seed {i}")
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), c="0.8", lw=0.8)
    ax.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), aspect="equal", xlabel="true axis 1", ylabel="true axis 2")
    ax.legend(fontsize="small", loc="upper right")
    return ax


def plot_sweep(df: pd.DataFrame, knob: str, ax: Axes | None = None) -> Axes:
    """How per-latent identifiability and subspace recovery move with one knob of the synthetic model."""
    ax = _ax(ax, figsize=(6.4, 4.2))
    series = [
        ("stability_isolated", "stability, isolated latents", PALETTE["isolated"], "-o"),
        ("stability_group", "stability, group latents", PALETTE["group"], "-o"),
        ("matched_cos_group", "Hungarian matched cosine, group latents", PALETTE["group"], "--s"),
        ("overlap_cross_seed", "subspace overlap across seeds", PALETTE["intermediate"], "-^"),
        ("overlap_random", "random-subspace overlap", PALETTE["random"], ":"),
    ]
    for col, label, color, style in series:
        if col in df:
            ax.plot(df[knob], df[col], style, c=color, label=label)
    ax.set(xlabel=knob.replace("_", " "), ylabel="score", ylim=(-0.02, 1.05))
    ax.legend(fontsize="small", loc="lower left")
    return ax
