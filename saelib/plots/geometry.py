"""Chapter 3's figures: effective rank, span overlaps, principal angles, coverage and cross-seed groups.

Each function draws on `ax` (a new figure when None) and returns the axes, so that notebooks only call and caption.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes

from saelib.plots.theme import PALETTE, axes_or_new, plot_group_latents

SOURCE_PALETTE = {
    "unstable": PALETTE["unstable"],
    "stable": PALETTE["stable"],
    "subset": "#029e73",
    "covariance": "#cc78bc",
    "random": PALETTE["random"],
}
"""Colours of the direction sets of chapter 3 (`saelib.chapters.geometry.SOURCES`)."""


SOURCE_LABELS = {
    "unstable": "unstable",
    "stable": "stable",
    "subset": "random alive latents",
    "covariance": "drawn from covariance",
    "random": "isotropic random",
}
"""Legend names of the direction sets."""


def _sources(df: pd.DataFrame) -> list[str]:
    present = set(df["source"])
    return [s for s in SOURCE_PALETTE if s in present]


def plot_effective_rank(ranks: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Participation ratio and 90%-energy rank of each direction set, over d_in (bars: means over seeds and draws;
    whiskers: their standard deviation). Sets with no members are left out."""
    ax = axes_or_new(ax)
    df = ranks[ranks.n > 0].melt(id_vars=["source"], value_vars=["pr_over_d", "rank_over_d"], var_name="measure")
    df["measure"] = df["measure"].map({"pr_over_d": "participation ratio / d", "rank_over_d": "90%-energy rank / d"})
    order = _sources(df)
    sns.barplot(df, x="measure", y="value", hue="source", hue_order=order, palette=SOURCE_PALETTE, errorbar="sd", ax=ax)
    ax.set(xlabel=None, ylabel="effective rank / d_in", ylim=(0, 1))
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [SOURCE_LABELS.get(x, x) for x in labels], fontsize="small", title=None)
    return ax


def plot_overlap_by_rank(spans: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Overlap of two seeds' spans against the rank r of the top principal directions kept (lines), and at each
    seed's 90%-energy rank of its unstable set (stars), per direction set; means over seed pairs and draws."""
    ax = axes_or_new(ax)
    fixed = spans[spans.spec.str.startswith("top-")].groupby(["source", "rank_a"]).overlap.mean().reset_index()
    energy = spans[spans.spec == "energy"].groupby("source")[["rank_a", "overlap"]].mean()
    for s in _sources(spans):
        f = fixed[fixed.source == s]
        ax.plot(f.rank_a, f.overlap, "-o", c=SOURCE_PALETTE[s], ms=4, label=SOURCE_LABELS[s])
        if s in energy.index:
            ax.plot(
                energy.loc[s, "rank_a"], energy.loc[s, "overlap"], "*", c=SOURCE_PALETTE[s], ms=13, mec="k", mew=0.5
            )
    ax.plot([], [], "*", c="w", mec="k", ms=11, label="at the 90%-energy rank")
    ax.set(xscale="log", xlabel="rank r of each seed's span", ylabel="overlap between two seeds' spans", ylim=(0, 1.02))
    ax.legend(fontsize="small")
    return ax


def plot_angle_spectra(angles: pd.DataFrame, spec: str = "energy", ax: Axes | None = None) -> Axes:
    """All principal angles, ascending, between seed 0's and seed 1's spans of each direction set at one rank spec."""
    ax = axes_or_new(ax)
    df = angles[angles.spec == spec]
    for s in _sources(df):
        a = df[df.source == s].sort_values("k")
        ax.plot(a.k + 1, a.angle_deg, c=SOURCE_PALETTE[s], lw=1.6, label=SOURCE_LABELS[s])
    ax.set(xlabel="principal angle (ascending)", ylabel="angle (degrees)", ylim=(0, 92))
    ax.legend(fontsize="small")
    return ax


def plot_angle_panels(angles: pd.DataFrame, spec: str, axes=None):
    """`plot_angle_spectra` side by side at the 90%-energy rank (left) and at the fixed rank `spec` (`top-r`, right).

    Returns:
        The two axes.
    """
    if axes is None:
        axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")[1]
    plot_angle_spectra(angles, "energy", ax=axes[0])
    plot_angle_spectra(angles, spec, ax=axes[1])
    axes[0].set_title("at the 90%-energy rank")
    axes[1].set_title(f"top {spec.removeprefix('top-')} directions")
    return axes


def plot_coverage(shares: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Cumulative distribution, per direction set of seed 1, of each direction's share of squared norm inside seed
    0's unstable span."""
    ax = axes_or_new(ax)
    order = _sources(shares)
    sns.ecdfplot(shares, x="share", hue="source", hue_order=order, palette=SOURCE_PALETTE, ax=ax)
    ax.set(
        xlabel="share of a direction inside the other seed's unstable span",
        ylabel="cumulative share of directions",
        xlim=(0, 1),
    )
    legend = ax.get_legend()
    if legend is not None:
        for text in legend.get_texts():
            text.set_text(SOURCE_LABELS.get(text.get_text(), text.get_text()))
        legend.set_title(None)
    return ax


def plot_group_cosines(directions: list[torch.Tensor], labels: list[str] | None = None, ax: Axes | None = None) -> Axes:
    """Decoder cosines between the members of one feature group, ordered by seed (lines separate the seeds).

    Args:
        directions: per seed shown, its unit member rows `(n_s, d_in)`.
    """
    ax = axes_or_new(ax, figsize=(4.8, 4.2))
    rows = torch.cat([d.double() for d in directions])
    sns.heatmap(
        (rows @ rows.T).numpy(),
        vmin=-1,
        vmax=1,
        cmap="vlag",
        square=True,
        ax=ax,
        cbar_kws={"label": "decoder cosine", "shrink": 0.8},
        xticklabels=False,
        yticklabels=False,
    )
    edges = np.cumsum([0] + [len(d) for d in directions])
    for e in edges[1:-1]:
        ax.axhline(e, c="k", lw=1)
        ax.axvline(e, c="k", lw=1)
    centres = (edges[:-1] + edges[1:]) / 2
    names = labels or [f"seed {i}" for i in range(len(directions))]
    ax.set_xticks(centres, names, rotation=0, fontsize="small")
    ax.set_yticks(centres, names, rotation=90, va="center", fontsize="small")
    return ax


def plot_geometry_by_size(
    table: pd.DataFrame,
    y: str,
    baselines: dict[str, str] | None = None,
    ax: Axes | None = None,
    ylabel: str | None = None,
) -> Axes:
    """One chapter-3 number against the dictionary size, a line per (variant, layer), with baselines (columns of
    `table` named by source, e.g. `{"covariance": "overlap_fixed_covariance"}`) as dashed lines averaged over
    variants and layers."""
    ax = axes_or_new(ax)
    sns.lineplot(
        table,
        x="d_sae",
        y=y,
        hue="variant",
        style="layer",
        markers=True,
        dashes=False,
        ax=ax,
        palette=sns.color_palette("dark", table["variant"].nunique()),
        errorbar=None,
    )
    for source, col in (baselines or {}).items():
        b = table.groupby("d_sae")[col].mean()
        ax.plot(b.index, b.values, "--", c=SOURCE_PALETTE.get(source, "k"), lw=1.2, label=SOURCE_LABELS.get(source))
    ax.set(xscale="log", xlabel="dictionary size d_sae", ylabel=ylabel or y.replace("_", " "))
    ax.set_xticks(sorted(table.d_sae.unique()), [str(d) for d in sorted(table.d_sae.unique())])
    ax.minorticks_off()
    ax.legend(fontsize="x-small", ncol=2, loc="best")
    return ax


def plot_group_example(example, axes=None):
    """One feature group across a few seeds (a `saelib.groups.GroupExample`): its members as arrows in the plane of
    their top two principal directions (left) and their decoder cosines, ordered by seed (right)."""
    if axes is None:
        axes = plt.subplots(1, 2, figsize=(9.6, 4.4), layout="constrained")[1]
    if not example.members:
        for ax in axes:
            ax.text(0.5, 0.5, "no group at this scale", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        return axes
    labels = [f"seed {s}" for s in example.seeds]
    plot_group_latents(example.members, example.basis, ax=axes[0], labels=labels)
    axes[0].set(xlabel="group axis 1", ylabel="group axis 2")
    plot_group_cosines(example.members, labels, ax=axes[1])
    return axes


def plot_group_scores(table: pd.DataFrame, axes=None):
    """Per group: a member's cosine to its best single match in another seed, to that seed's span, and covariance
    draws' cosine to it (left); the mean principal angle between two seeds' spans against random and
    covariance-drawn spans of the same ranks (right)."""
    if axes is None:
        axes = plt.subplots(1, 2, figsize=(10.4, 4.0), layout="constrained")[1]
    panels = [
        (
            {
                "max_cos": "best single\nmatch",
                "cos_to_span": "span of the\nother seed",
                "cos_to_span_covariance": "covariance\ndraws",
            },
            "cosine",
            (0, 1.02),
            [PALETTE["random"], PALETTE["unstable"], SOURCE_PALETTE["covariance"]],
        ),
        (
            {
                "mean_angle_deg": "two seeds'\nspans",
                "mean_angle_random": "random\nspans",
                "mean_angle_covariance": "covariance\nspans",
            },
            "mean principal angle (deg)",
            (0, 92),
            [PALETTE["unstable"], PALETTE["random"], SOURCE_PALETTE["covariance"]],
        ),
    ]
    for ax, (cols, ylabel, ylim, colors) in zip(axes, panels, strict=True):
        if table.empty:
            ax.text(0.5, 0.5, "no group at this scale", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        df = table[list(cols)].rename(columns=cols).melt(var_name="score")
        sns.boxplot(df, x="score", y="value", hue="score", palette=colors, ax=ax, fliersize=2, legend=False)
        ax.set(xlabel=None, ylabel=ylabel, ylim=ylim)
    return axes


def plot_grid_geometry(points: pd.DataFrame, spec: str, axes=None):
    """Three numbers of every grid point against the dictionary size (`plot_geometry_by_size`): the overlap of two
    seeds' unstable spans at the fixed rank `spec` with its three baselines, the 90%-energy rank of the unstable set
    beside that of as many random alive latents, and the share of unstable latents in a group.

    Args:
        points: one row per grid point (`saelib.chapters.geometry.GeometryResult.points`).

    Returns:
        The three axes.
    """
    if axes is None:
        axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")[1]
    baselines = {s: f"overlap_fixed_{s}" for s in ("covariance", "subset", "random")}
    plot_geometry_by_size(
        points,
        "overlap_fixed_unstable",
        baselines,
        ax=axes[0],
        ylabel=f"overlap of unstable spans, rank {spec.removeprefix('top-')}",
    )
    plot_geometry_by_size(
        points,
        "rank_over_d_unstable",
        {"subset": "rank_over_d_subset"},
        ax=axes[1],
        ylabel="90%-energy rank of the unstable set / d",
    )
    plot_geometry_by_size(points, "grouped_share", ax=axes[2], ylabel="share of unstable latents in a group")
    axes[0].set_ylim(0, 1.02)  # an overlap and a share: in [0, 1]
    axes[2].set_ylim(-0.02, 1.02)
    return axes


TRANSFER_CURVES = {
    "transfer": ("unstable latents", PALETTE["unstable"], "-o"),
    "random_latents": ("random alive latents (same counts)", SOURCE_PALETTE["subset"], "-s"),
    "random_source": ("random alive latents of s into t's unstable", SOURCE_PALETTE["subset"], ":D"),
    "random_subspace": ("random r-dim subspace", PALETTE["random"], "-^"),
    "ceiling": ("target's own top-r subspace (ceiling)", "k", "--"),
}
"""Columns of `saelib.chapters.geometry_paper.PaperResult.transfer` drawn by `plot_subspace_transfer`: legend
name, colour, line style."""


def plot_subspace_transfer(transfer: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """The paper's top-subspace transfer against the rank r: the share of seed t's unstable decoder energy inside
    the top-r singular subspace of seed s's unstable latents, beside its controls and ceiling (lines: means over seed
    pairs; bands: min to max over pairs).

    Args:
        transfer: one row per (source, target, r) (`geometry_paper.PaperResult.transfer`).
    """
    ax = axes_or_new(ax)
    if transfer.empty:
        ax.text(0.5, 0.5, "no unstable latents at this scale", ha="center", va="center", transform=ax.transAxes)
        return ax
    g = transfer.groupby("r")
    for col, (label, colour, style) in TRANSFER_CURVES.items():
        mean, lo, hi = g[col].mean(), g[col].min(), g[col].max()
        ax.plot(mean.index, mean, style, c=colour, ms=4, label=label)
        ax.fill_between(mean.index, lo, hi, color=colour, alpha=0.2, lw=0)
    ax.set(xscale="log", xlabel="rank r", ylabel="share of seed t's unstable energy captured", ylim=(0, 1.02))
    ax.set_xticks(sorted(set(transfer.r)), [str(r) for r in sorted(set(transfer.r))])  # the ranks evaluated
    ax.minorticks_off()
    ax.legend(fontsize="small")
    return ax
