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


# --- Chapter 1: the stability study ---------------------------------------------------------------------------------


def plot_grid_stability(table: pd.DataFrame, y: str = "mean_stability", null: str | None = "null_stability",
                        ax: Axes | None = None) -> Axes:
    """A score of every grid point against dictionary size: one line per (layer, variant), the null dotted."""
    ax = _ax(ax)
    styles = dict(zip(sorted(table.variant.unique()), ["-o", "--s", "-.^", ":D"]))
    colors = dict(zip(sorted(table.layer.unique()), sns.color_palette("colorblind", table.layer.nunique())))
    for (layer, variant), df in table.sort_values("d_sae").groupby(["layer", "variant"]):
        ax.plot(df.d_sae, df[y], styles[variant], c=colors[layer], label=f"layer {layer}, {variant}")
    if null is not None and null in table:
        nulls = table.groupby("d_sae")[null].mean()
        ax.plot(nulls.index, nulls.values, ":", c=PALETTE["null"], label="null (untrained)")
    ax.set(xscale="log", xlabel="dictionary size d_sae", ylabel=y.replace("_", " "))
    ax.set_xticks(sorted(table.d_sae.unique()), [str(d) for d in sorted(table.d_sae.unique())])
    ax.minorticks_off()
    ax.legend(fontsize="small")
    return ax


def plot_threshold_sweep(df: pd.DataFrame, tau: float | None = None, ax: Axes | None = None) -> Axes:
    """Mean stability and the stable / unstable shares against the similarity threshold tau."""
    ax = _ax(ax)
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
    ax = _ax(ax)
    ax.plot(df.n_reference, df.stable_share, "-s", c=PALETTE["stable"], label="share stable")
    ax.plot(df.n_reference, df.unstable_share, "-^", c=PALETTE["unstable"], label="share unstable")
    ax.plot(df.n_reference, df.label_agreement, "--o", c="k", label="label = all-seed label")
    ax.set(xlabel="reference seeds", ylabel="share of alive latents", ylim=(-0.02, 1.02))
    ax.set_xticks(df.n_reference)
    ax.legend(fontsize="small")
    return ax


def plot_stability_vs_frequency(latents: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Per-feature stability against firing frequency (log), latents as points, the binned mean as a line."""
    ax = _ax(ax)
    df = latents[latents.frequency > 0]
    jitter = np.random.default_rng(0).uniform(-0.02, 0.02, len(df))
    colors = df.label.map(lambda k: PALETTE.get(k, "#333333"))
    ax.scatter(df.frequency, df.stability + jitter, s=3, alpha=0.25, c=colors, rasterized=True)
    bins = np.logspace(np.log10(df.frequency.min()), np.log10(df.frequency.max()), 12)
    mid = pd.cut(df.frequency, bins, include_lowest=True)
    binned = df.groupby(mid, observed=True).stability.mean()
    centers = [np.sqrt(iv.left * iv.right) if iv.left > 0 else iv.right for iv in binned.index]
    ax.plot(centers, binned.values, "-o", c="k", label="mean per frequency bin")
    ax.set(xscale="log", xlabel="firing frequency (held-out tokens)", ylabel="per-feature stability",
           ylim=(-0.05, 1.05))
    ax.legend(fontsize="small", loc="upper left")
    return ax


# --- Chapter 5: pooling ----------------------------------------------------------------------------------------------


def plot_match_survival(samples: dict[str, np.ndarray], tau: float | None = None, ax: Axes | None = None) -> Axes:
    """Share of latents whose best match in the other SAE has cosine at least x (one line per kind of SAE pair);
    at x = tau the curve is the mean per-feature stability between two SAEs."""
    ax = _ax(ax)
    colors = sns.color_palette("colorblind", len(samples))
    for (label, v), c in zip(samples.items(), colors, strict=True):
        v = np.sort(np.asarray(v, dtype=float)[~np.isnan(v)])
        ax.step(v, 1 - np.arange(len(v)) / len(v), where="post", c=c, label=label)
    if tau is not None:
        ax.axvline(tau, ls="--", c="k", lw=0.8, label=f"tau = {tau}")
    ax.set(xlabel="max cosine to the other SAE's decoder rows", ylabel="share of latents at least this similar",
           xlim=(0, 1.01), ylim=(0, 1.02))
    ax.legend(fontsize="small", loc="lower left")
    return ax


def plot_stability_vs_ev(table: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Mean per-feature stability against explained variance, one point per SAE (seed), coloured by kind (`sae`)."""
    ax = _ax(ax)
    sns.scatterplot(table, x="explained_variance", y="stability", hue="sae", style="sae", s=70, ax=ax,
                    palette="colorblind")
    ax.set(xlabel="explained variance (held-out tokens)", ylabel="mean per-feature stability", ylim=(-0.02, 1.02))
    ax.legend(fontsize="small", title=None, loc="lower right")
    return ax


def plot_pooling_sweep(sweep: pd.DataFrame, standard: dict[str, float] | None = None, ax: Axes | None = None) -> Axes:
    """Pooled SAEs' stability and explained variance against the seeds pooled per SAE; `standard` draws the
    standard SAEs' `stability` and `explained_variance` as dashed lines."""
    ax = _ax(ax)
    for col, c in (("stability", PALETTE["stable"]), ("explained_variance", PALETTE["group"])):
        ax.plot(sweep["seeds_per_group"], sweep[col], "-o", c=c, label=f"pooled: {col.replace('_', ' ')}")
        if standard is not None and col in standard:
            ax.axhline(standard[col], ls="--", c=c, lw=1, label=f"standard: {col.replace('_', ' ')}")
    ax.set(xlabel="seeds pooled per SAE", ylabel="score", ylim=(-0.02, 1.02),
           xticks=list(sweep["seeds_per_group"]))
    ax.legend(fontsize="small", loc="best")
    return ax


# --- Chapter 2: functional asymmetry ----------------------------------------------------------------------------------

LABEL_ORDER = ["unstable", "intermediate", "stable"]
"""Stability labels from least to most stable (dead latents are left out of chapter 2's figures)."""


def plot_cut_bars(table: pd.DataFrame, metric: str, ax: Axes | None = None, ylabel: str | None = None) -> Axes:
    """One bar per cut (keep / remove the stable or unstable latents) beside its size- and mass-matched random
    controls (mean and standard deviation over draws); dashed lines mark the full SAE and the SAE with no latent.

    Args:
        table: `asymmetry.feature_cuts(...).table` with a `metric` column.
        metric: e.g. `ev` or `ce_loss_score`.
    """
    ax = _ax(ax, figsize=(7.0, 4.0))
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
    ax = _ax(ax)
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
    ax = _ax(ax)
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


# --- Chapter 3: geometry of the unstable features ---------------------------------------------------------------------

SOURCE_PALETTE = {"unstable": PALETTE["unstable"], "stable": PALETTE["stable"], "subset": "#029e73",
                  "covariance": "#cc78bc", "random": PALETTE["random"]}
"""Colours of the direction sets of chapter 3 (`saelib.subspace.SOURCES`)."""
SOURCE_LABELS = {"unstable": "unstable", "stable": "stable", "subset": "random alive latents",
                 "covariance": "drawn from covariance", "random": "isotropic random"}


def _sources(df: pd.DataFrame) -> list[str]:
    present = set(df["source"])
    return [s for s in SOURCE_PALETTE if s in present]


def plot_effective_rank(ranks: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Participation ratio and 90%-energy rank of each direction set, over d_in (bars: means over seeds and draws;
    whiskers: their standard deviation). Sets with no members are left out."""
    ax = _ax(ax)
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
    ax = _ax(ax)
    fixed = spans[spans.spec.str.startswith("top-")].groupby(["source", "rank_a"]).overlap.mean().reset_index()
    energy = spans[spans.spec == "energy"].groupby("source")[["rank_a", "overlap"]].mean()
    for s in _sources(spans):
        f = fixed[fixed.source == s]
        ax.plot(f.rank_a, f.overlap, "-o", c=SOURCE_PALETTE[s], ms=4, label=SOURCE_LABELS[s])
        if s in energy.index:
            ax.plot(energy.loc[s, "rank_a"], energy.loc[s, "overlap"], "*", c=SOURCE_PALETTE[s], ms=13, mec="k",
                    mew=0.5)
    ax.plot([], [], "*", c="w", mec="k", ms=11, label="at the 90%-energy rank")
    ax.set(xscale="log", xlabel="rank r of each seed's span", ylabel="overlap between two seeds' spans", ylim=(0, 1.02))
    ax.legend(fontsize="small")
    return ax


def plot_angle_spectra(angles: pd.DataFrame, spec: str = "energy", ax: Axes | None = None) -> Axes:
    """All principal angles, ascending, between seed 0's and seed 1's spans of each direction set at one rank spec."""
    ax = _ax(ax)
    df = angles[angles.spec == spec]
    for s in _sources(df):
        a = df[df.source == s].sort_values("k")
        ax.plot(a.k + 1, a.angle_deg, c=SOURCE_PALETTE[s], lw=1.6, label=SOURCE_LABELS[s])
    ax.set(xlabel="principal angle (ascending)", ylabel="angle (degrees)", ylim=(0, 92))
    ax.legend(fontsize="small")
    return ax


def plot_coverage(shares: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Cumulative distribution, per direction set of seed 1, of each direction's share of squared norm inside seed
    0's unstable span."""
    ax = _ax(ax)
    order = _sources(shares)
    sns.ecdfplot(shares, x="share", hue="source", hue_order=order, palette=SOURCE_PALETTE, ax=ax)
    ax.set(xlabel="share of a direction inside the other seed's unstable span", ylabel="cumulative share of directions",
           xlim=(0, 1))
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
    ax = _ax(ax, figsize=(4.8, 4.2))
    rows = torch.cat([d.double() for d in directions])
    sns.heatmap((rows @ rows.T).numpy(), vmin=-1, vmax=1, cmap="vlag", square=True, ax=ax,
                cbar_kws={"label": "decoder cosine", "shrink": 0.8}, xticklabels=False, yticklabels=False)
    edges = np.cumsum([0] + [len(d) for d in directions])
    for e in edges[1:-1]:
        ax.axhline(e, c="k", lw=1)
        ax.axvline(e, c="k", lw=1)
    centres = (edges[:-1] + edges[1:]) / 2
    names = labels or [f"seed {i}" for i in range(len(directions))]
    ax.set_xticks(centres, names, rotation=0, fontsize="small")
    ax.set_yticks(centres, names, rotation=90, va="center", fontsize="small")
    return ax


def plot_geometry_by_size(table: pd.DataFrame, y: str, baselines: dict[str, str] | None = None,
                          ax: Axes | None = None, ylabel: str | None = None) -> Axes:
    """One chapter-3 number against the dictionary size, a line per (variant, layer), with baselines (columns of
    `table` named by source, e.g. `{"covariance": "overlap_fixed_covariance"}`) as dashed lines averaged over
    variants and layers."""
    ax = _ax(ax)
    sns.lineplot(table, x="d_sae", y=y, hue="variant", style="layer", markers=True, dashes=False, ax=ax,
                 palette=sns.color_palette("dark", table["variant"].nunique()), errorbar=None)
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
    panels = [({"max_cos": "best single\nmatch", "cos_to_span": "span of the\nother seed",
                "cos_to_span_covariance": "covariance\ndraws"}, "cosine", (0, 1.02),
               [PALETTE["random"], PALETTE["unstable"], SOURCE_PALETTE["covariance"]]),
              ({"mean_angle_deg": "two seeds'\nspans", "mean_angle_random": "random\nspans",
                "mean_angle_covariance": "covariance\nspans"}, "mean principal angle (deg)", (0, 92),
               [PALETTE["unstable"], PALETTE["random"], SOURCE_PALETTE["covariance"]])]
    for ax, (cols, ylabel, ylim, colors) in zip(axes, panels, strict=True):
        if table.empty:
            ax.text(0.5, 0.5, "no group at this scale", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        df = table[list(cols)].rename(columns=cols).melt(var_name="score")
        sns.boxplot(df, x="score", y="value", hue="score", palette=colors, ax=ax, fliersize=2, legend=False)
        ax.set(xlabel=None, ylabel=ylabel, ylim=ylim)
    return axes
