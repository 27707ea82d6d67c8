"""Chapter 4's figures: training curves, recovery of the planted features, principal angles and the sweep.

Each function draws on `ax` (a new figure when None) and returns the axes, so that notebooks only call and caption.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.ticker import EngFormatter

from saelib.plots.theme import PALETTE, axes_or_new, stripplot


def plot_training_curves(history: dict, ax: Axes | None = None) -> Axes:
    """Fraction of variance unexplained on training batches against tokens, one line per seed."""
    ax = axes_or_new(ax)
    fvu = np.asarray(history["fvu"])  # (n_logs, S)
    for s in range(fvu.shape[1]):
        ax.plot(history["tokens"], fvu[:, s], lw=1.2, label=f"seed {s}")
    ax.set(xlabel="training tokens", ylabel="FVU (train batch)", yscale="log")
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.legend(fontsize="small", ncol=2)
    return ax


def plot_max_cosine_to_truth(recovery: torch.Tensor, ax: Axes | None = None) -> Axes:
    """Per seed, the max cosine of each true feature to that seed's decoder rows (a strip per seed)."""
    ax = axes_or_new(ax)
    r = recovery.detach().cpu().numpy()
    df = pd.DataFrame({"seed": np.repeat(np.arange(r.shape[0]), r.shape[1]), "max cosine": r.ravel()})
    stripplot(df, x="seed", y="max cosine", ax=ax, size=3, alpha=0.6, color=PALETTE["isolated"], jitter=0.3)
    ax.axhline(0.9, ls="--", c="k", lw=0.8)
    ax.set(ylim=(min(0.5, float(r.min()) - 0.02), 1.01), ylabel="max cosine to a true isolated feature")
    return ax


def plot_principal_angles(groups: pd.DataFrame, random_angle_deg: float | None = None, ax: Axes | None = None) -> Axes:
    """Largest principal angle between each seed's recovered span and the true subspace, per group."""
    ax = axes_or_new(ax)
    df = groups.dropna(subset=["max_angle_deg"])
    stripplot(df, x="group", y="max_angle_deg", hue="seed", ax=ax, dodge=True, size=5, palette="crest")
    if random_angle_deg is not None:
        ax.axhline(random_angle_deg, c=PALETTE["random"], ls="--", label="random subspace")
    ax.set(ylabel="largest principal angle to truth (deg)", ylim=(0, 92))
    ax.legend(fontsize="small", ncol=3, title="seed")
    return ax


def plot_sweep(df: pd.DataFrame, knob: str, ax: Axes | None = None) -> Axes:
    """How per-latent identifiability and subspace recovery move with one knob of the synthetic model."""
    ax = axes_or_new(ax, figsize=(6.4, 4.2))
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
    ax.set(xlabel=knob.replace("_", " "), ylabel="score", ylim=(-0.02, 1.05), xticks=list(df[knob]))
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a line
    return ax
