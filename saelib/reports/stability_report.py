# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Per-feature stability of your SAEs
# Which latents of the anchor SAE reappear in the other seeds? Each anchor latent is matched in each of the N other
# SAEs by its best decoder cosine (many-to-one); its stability `p` is the share of the N seeds where that cosine
# reaches the threshold (the estimator of "Unstable Features, Reproducible Subspaces", arXiv 2606.12138). Untrained
# SAEs of the same shapes give the null. Written by `python -m saelib stability` (`saelib.external.score_saes`).

# %% tags=["parameters"]
REPORT_DIR = "."

# %% tags=["remove-cell"]
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

folder = Path(REPORT_DIR)
summary = json.loads((folder / "summary.json").read_text())
features = pd.read_parquet(folder / "features.parquet")
thresholds = pd.read_csv(folder / "thresholds.csv")
sweep = pd.read_csv(folder / "n_sweep.csv")
pairs = pd.read_csv(folder / "pairs.csv")

# %%
display(
    Markdown(
        f"**{summary['n_saes']} SAEs** of {summary['d_sae']} latents on d_in = {summary['d_in']}; anchor: SAE "
        f"{summary['anchor']} (`{summary['sources'][summary['anchor']]['source']}`); threshold tau = "
        f"{summary['threshold']}, endpoints epsilon = {summary['epsilon']}. Mean p = {summary['mean_p']:.3f}; "
        f"stable {summary['stable_fraction']:.1%}, unstable {summary['unstable_fraction']:.1%} of the anchor's latents."
    )
)
pd.DataFrame(summary["sources"]).rename_axis("SAE")

# %% [markdown]
# ## Stability of the anchor's latents
# The histogram of `p`: mass at 1 means features that every seed learns; mass at 0, features of this seed alone.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
n = summary["n_saes"] - 1
ax.hist(features["p"].dropna(), bins=[(i - 0.5) / n for i in range(n + 2)], color="#4477aa", edgecolor="white")
ax.set(xlabel="stability p (share of the other seeds with a match)", ylabel="anchor latents", xlim=(-0.05, 1.05))
plt.show()

# %% [markdown]
# ## Threshold sweep
# The share of stable and unstable latents as the cosine threshold moves, against the untrained null (dashed).

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
colors = {("sae", "stable"): "#228833", ("sae", "unstable"): "#ee6677"}
colors |= {("null", "stable"): "#88bb99", ("null", "unstable"): "#bbbbbb"}
for (kind, col), color in colors.items():
    rows = thresholds[thresholds["kind"] == kind]
    if len(rows):
        ax.plot(rows["threshold"], rows[col], "--" if kind == "null" else "-", label=f"{col} ({kind})", color=color)
ax.axvline(summary["threshold"], color="grey", lw=0.8)
ax.set(xlabel="cosine threshold tau", ylabel="share of anchor latents", ylim=(-0.02, 1.02))
ax.legend(frameon=False, fontsize=8)
plt.show()

# %% [markdown]
# ## How many seeds? The N sweep
# The estimator on the first n of the N other SAEs: when the curves flatten, more seeds would not change the labels.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(sweep["n"], sweep["stable"], "o-", label="stable", color="#228833")
ax.plot(sweep["n"], sweep["unstable"], "o-", label="unstable", color="#ee6677")
ax.plot(sweep["n"], sweep["mean_p"], "o-", label="mean p", color="#4477aa")
ax.set(xlabel="comparison seeds n", ylabel="share / mean", ylim=(-0.02, 1.02))
ax.legend(frameon=False, fontsize=8)
plt.show()

# %% [markdown]
# ## Whole-SAE scores
# Hungarian one-to-one matching of each pair: the shared fraction (decoder and encoder cosines both above tau, Paulo
# & Belrose 2025) and the mean matched decoder cosine (its mean is PW-MCC, Song et al. 2025), against the null.

# %%
pairs.groupby("kind")[["shared_fraction", "matched_cosine"]].agg(["mean", "min", "max"]).round(3)

# %% [markdown]
# ## The least and the most stable latents
# Every latent's row, with its best match in each other SAE, is in `features.csv` / `features.parquet`.

# %%
cols = ["feature", "p", "label", "mean_max_cos"] + (
    ["all_pairs_stability"] if "all_pairs_stability" in features else []
)
pd.concat([features.nlargest(5, "mean_max_cos")[cols], features.nsmallest(5, "mean_max_cos")[cols]]).round(3)
