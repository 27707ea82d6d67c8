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
# # Feature stability across seeds
#
# The paper's first claim (PAPER.md, claim 1): for every SAE feature one can estimate the probability that a similar
# feature reappears in an independently trained SAE, and this per-feature score separates stable from unstable
# features. We train a grid of SAEs on a language model's residual stream, several seeds per grid point (same data,
# same batch order, different initialisation), over layers, dictionary sizes and SAE variants, and score every latent.
# Every number on this page is computed when the page is built; the stable/unstable split it produces is what
# chapters 2, 3 and 5 study.

# %% tags=["parameters"]
SCALE = "default"  # smoke | default | gpu | paper
DEVICE = "auto"  # auto | cpu | cuda
COMPARE_K = 32  # also train the reference grid point at this k, to show how sparsity moves stability (0: skip)

# %%
from dataclasses import replace

import matplotlib.pyplot as plt
import pandas as pd
from myst_nb import glue

from saelib import plots, stability
from saelib.chapters import grid
from saelib.chapters import stability as chapter

plots.set_theme()
pd.set_option("display.max_colwidth", None)
pd.set_option("display.precision", 3)
study = grid.study(SCALE, DEVICE)
acts = study.activations_at(study.layers[0])
glue("model", acts.model, display=False)
glue("layers", ", ".join(str(layer) for layer in study.layers), display=False)
glue("sizes", ", ".join(str(d) for d in study.sizes), display=False)
glue("variants", ", ".join(study.variants), display=False)
glue("n_seeds", study.n_seeds, display=False)
glue("train_tokens", f"{study.train.n_tokens:,}", display=False)
glue("n_points", len(grid.grid_entries(study)), display=False)
glue("tau", study.stability.threshold, display=False)
glue("stable_at", study.stability.stable_at, display=False)
glue("unstable_at", study.stability.unstable_at, display=False)
pd.DataFrame([{"layer": a.layer, "hook": a.hook, "train tokens collected": a.n_train_tokens,
               "held-out contexts": a.n_eval_contexts} for a in study.activations])

# %% [markdown]
# ## The grid
#
# Model {glue:text}`model`, residual stream after blocks {glue:text}`layers`; SAE variants {glue:text}`variants`;
# dictionary sizes {glue:text}`sizes`; {glue:text}`n_seeds` seeds per grid point, each trained on
# {glue:text}`train_tokens` tokens ({glue:text}`n_points` grid points in all). Training, scoring and the split are
# cached (`saelib.grid`), so that re-rendering this page takes seconds. For every SAE we measure, on held-out
# contexts, the explained variance, L0, the dead fraction and the CE-loss score with the SAE spliced into the model
# (1 = the clean model's loss, 0 = zero-ablation of the layer), and for every latent its **per-feature stability**:
# the share of the other seeds that hold a latent whose decoder direction has cosine at least
# $\tau$ = {glue:text}`tau` with it. Latents at stability $\ge$ {glue:text}`stable_at` are *stable*, at
# $\le$ {glue:text}`unstable_at` *unstable*; dead latents are left out. The nulls are the same scores between
# untrained SAEs of the same shape, and between random directions drawn from the activation covariance.

# %%
table, splits, scores = grid.run_grid(study)
entry = grid.reference_entry(study)
ref = table.set_index(["layer", "variant", "d_sae"]).loc[tuple(entry)].to_dict() | entry._asdict()
split = splits[entry]
for key in ("explained_variance", "l0", "dead_fraction", "ce_loss_score", "mean_stability", "stable_share",
            "unstable_share", "shared_fraction", "pw_mcc", "null_stability", "null_cov_stability",
            "null_shared_fraction", "null_pw_mcc"):
    glue(f"ref_{key}", float(ref[key]), display=False)
glue("ref_name", entry.name, display=False)
glue("ev_min", float(table.explained_variance.min()), display=False)
glue("ev_max", float(table.explained_variance.max()), display=False)
glue("ce_min", float(table.ce_loss_score.min()), display=False)
glue("ce_max", float(table.ce_loss_score.max()), display=False)
table

# %% [markdown]
# **Table 1.** Every grid point, means over seeds: quality (explained variance, L0, dead fraction, CE-loss score),
# per-feature stability (mean, and shares of stable and unstable latents), whole-SAE scores (shared fraction, PW-MCC),
# and the nulls.
#
# Explained variance ranges over {glue:text}`ev_min:.3f`-{glue:text}`ev_max:.3f` and the CE-loss score over
# {glue:text}`ce_min:.2f`-{glue:text}`ce_max:.2f`. Chapters 2, 3 and 5 study the grid point
# {glue:text}`ref_name` (explained variance {glue:text}`ref_explained_variance:.3f`, L0 {glue:text}`ref_l0:.1f`,
# CE-loss score {glue:text}`ref_ce_loss_score:.2f`).

# %% [markdown]
# ## Is per-feature stability bimodal?

# %%
shape = chapter.bimodality(split.stability)
for key, value in shape.items():
    glue(f"shape_{key}", float(value), display=False)
kind = [stability.LABEL_NAMES[int(c)] for c in split.label.flatten()]
ax = plots.theme.plot_stability_hist(split.stability.flatten(), kind=kind)
ax.set_title(f"{entry.name}, {study.n_seeds} seeds")

# %% [markdown]
# **Figure 1.** Share of alive latents at each stability value for {glue:text}`ref_name` (with S seeds, stability
# takes the values 0, 1/(S-1), ..., 1), coloured by label.
#
# {glue:text}`shape_share_zero:.0%` of the latents have no match in any other seed, {glue:text}`shape_share_one:.0%`
# have one in every other seed, and {glue:text}`shape_share_between:.0%` lie in between; Sarle's bimodality
# coefficient is {glue:text}`shape_bimodality_coefficient:.2f` (values above 5/9 = 0.56, the uniform distribution's,
# suggest two modes). The mean stability is {glue:text}`ref_mean_stability:.2f`, against
# {glue:text}`ref_null_stability:.2f` for untrained SAEs and {glue:text}`ref_null_cov_stability:.2f` for random
# directions drawn from the activation covariance.

# %%
dims = pd.concat({layer: grid.top_dimension_share(grid.load_store(study, layer, progress=False))
                  for layer in study.layers}, names=["layer", "rank"]).reset_index()
top = dims[dims["rank"] == 0].set_index("layer").variance_share
glue("top_dim_share_min", float(top.min()), display=False)
glue("top_dim_share_max", float(top.max()), display=False)
dims

# %% [markdown]
# **Table 2.** The two coordinates of each layer's activations with the largest variance, and their share of it.
#
# A caveat on the covariance null: a single coordinate holds {glue:text}`top_dim_share_min:.0%` to
# {glue:text}`top_dim_share_max:.0%` of the variance (Gemma 3's "massive activation" dimensions). Random directions
# drawn from $N(0, \Sigma)$ then mostly point along the same few coordinates and match each other, so where that
# share is large the covariance null is high for a reason that has nothing to do with features; the untrained null
# is the cleaner chance level here.

# %% [markdown]
# ## How stability moves with dictionary size, variant and layer

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
plots.stability.plot_grid_stability(table, "mean_stability", ax=axes[0])
plots.stability.plot_grid_stability(table, "stable_share", null=None, ax=axes[1])
plots.stability.plot_grid_stability(table, "unstable_share", null=None, ax=axes[2])
fig.tight_layout()

# %% [markdown]
# **Figure 2.** Mean per-feature stability (left; the untrained null dotted) and the shares of stable (middle) and
# unstable (right) latents, against dictionary size; one line per layer and variant.

# %% [markdown]
# ## Sensitivity to the threshold and to the number of reference seeds

# %%
alive = split.label != stability.DEAD
sweep_tau = chapter.threshold_sweep(split.max_cos, study.thresholds, study.stability, alive)
sweep_ref = chapter.reference_seed_sweep(split.max_cos, study.stability, alive)
glue("tau_lo", float(sweep_tau.threshold.iloc[0]), display=False)
glue("tau_hi", float(sweep_tau.threshold.iloc[-1]), display=False)
glue("stab_tau_lo", float(sweep_tau.mean_stability.iloc[0]), display=False)
glue("stab_tau_hi", float(sweep_tau.mean_stability.iloc[-1]), display=False)
glue("agree_one_ref", float(sweep_ref.label_agreement.iloc[0]), display=False)
glue("agree_last_but_one", float(sweep_ref.label_agreement.iloc[-2] if len(sweep_ref) > 1 else 1.0), display=False)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
plots.stability.plot_threshold_sweep(sweep_tau, study.stability.threshold, ax=axes[0])
plots.stability.plot_reference_sweep(sweep_ref, ax=axes[1])
fig.tight_layout()

# %% [markdown]
# **Figure 3.** Left: mean stability and the stable / unstable shares of {glue:text}`ref_name` against the threshold
# $\tau$ (dashed: the default). Right: stability estimated from fewer reference seeds (random subsets of the other
# seeds), and the share of latents whose label then equals the label from all of them.
#
# Mean stability falls from {glue:text}`stab_tau_lo:.2f` at $\tau$ = {glue:text}`tau_lo` to
# {glue:text}`stab_tau_hi:.2f` at $\tau$ = {glue:text}`tau_hi`: where one draws the line matters, so the split is
# always reported with its threshold. With a single reference seed, {glue:text}`agree_one_ref:.0%` of latents get
# their all-seed label (one seed can only say "matched" or "not"); with one seed fewer than all,
# {glue:text}`agree_last_but_one:.0%`.

# %% [markdown]
# ## Stability against feature frequency

# %%
latents = grid.latent_table(entry, split)
freq_rho = chapter.frequency_correlation(split.stability, split.frequency)
glue("freq_rho", float(freq_rho), display=False)
by_label = latents.groupby("label").frequency.median()
glue("freq_stable", float(by_label.get("stable", float("nan"))), display=False)
glue("freq_unstable", float(by_label.get("unstable", float("nan"))), display=False)
ax = plots.stability.plot_stability_vs_frequency(latents)

# %% [markdown]
# **Figure 4.** Per-feature stability of every alive latent of {glue:text}`ref_name` (all seeds) against its firing
# frequency on held-out tokens, with the mean per frequency bin.
#
# The Spearman correlation between stability and frequency is {glue:text}`freq_rho:.2f`; the median frequency of
# stable latents is {glue:text}`freq_stable:.2e` and of unstable ones {glue:text}`freq_unstable:.2e`.

# %% [markdown]
# ## Sparsity: the same grid point at another k
#
# The grid uses the scale's k for every SAE. To show how much that choice matters, the reference grid point is also
# trained at k = `COMPARE_K` (same data, seeds and steps) and scored the same way.

# %%
k_rows = [ref | {"k": study.k}]
if COMPARE_K:
    other = replace(study, k=COMPARE_K)
    other_split, other_scores = grid.score_entry(other, entry)
    k_rows.append(grid.summary_row(entry, other_split, other_scores) | {"k": COMPARE_K})
by_k = pd.DataFrame(k_rows).set_index("k")[["explained_variance", "l0", "dead_fraction", "ce_loss_score",
                                           "mean_stability", "stable_share", "unstable_share", "pw_mcc"]]
glue("k_grid", study.k, display=False)
glue("k_other", COMPARE_K or study.k, display=False)
glue("stab_k_other", float(by_k.mean_stability.iloc[-1]), display=False)
glue("ev_k_other", float(by_k.explained_variance.iloc[-1]), display=False)
by_k

# %% [markdown]
# **Table 3.** The reference grid point at the grid's k and at k = {glue:text}`k_other`.
#
# At k = {glue:text}`k_other` the mean stability is {glue:text}`stab_k_other:.2f` (explained variance
# {glue:text}`ev_k_other:.3f`), against {glue:text}`ref_mean_stability:.2f` (explained variance
# {glue:text}`ref_explained_variance:.3f`) at the grid's k = {glue:text}`k_grid`: at this training budget denser codes
# reconstruct better but reappear across seeds far less, which is why the default grid uses the sparser k.

# %% [markdown]
# ## Whole-SAE views: shared fraction and PW-MCC

# %%
ref_sae, _ = grid.train_entry(study, entry, progress=False)
halves = stability.seed_pair_scores(ref_sae, study.stability.threshold)[["decoder_shared", "encoder_shared"]].mean()
glue("ref_decoder_shared", float(halves.decoder_shared), display=False)
glue("ref_encoder_shared", float(halves.encoder_shared), display=False)
whole = table[["layer", "variant", "d_sae", "shared_fraction", "null_shared_fraction", "pw_mcc", "null_pw_mcc"]]
whole

# %% [markdown]
# **Table 4.** Hungarian matching of every pair of seeds (Paulo & Belrose 2025: a latent is shared when its matched
# decoder and encoder cosines both exceed 0.7) and PW-MCC (Song et al. 2025: the mean matched decoder cosine), means
# over seed pairs, with the same scores between untrained SAEs.
#
# At {glue:text}`ref_name`, {glue:text}`ref_shared_fraction:.1%` of latents are shared between two seeds (untrained:
# {glue:text}`ref_null_shared_fraction:.1%`) and PW-MCC is {glue:text}`ref_pw_mcc:.2f` (untrained:
# {glue:text}`ref_null_pw_mcc:.2f`). The two halves of the shared rule on their own: {glue:text}`ref_decoder_shared:.1%`
# of matched pairs pass on the decoder cosine, {glue:text}`ref_encoder_shared:.1%` on the encoder cosine: our
# briefly trained encoders, not the decoders, are what keeps the shared fraction near zero. Paulo & Belrose report
# 41.6% shared for a 32k-latent TopK SAE on Pythia-160M trained on far more tokens, and Song et al. a PW-MCC of 0.80
# for TopK SAEs on LLMs: see the verdicts below.

# %% [markdown]
# ## The split later chapters use
#
# Per grid point, the cache holds the stability of every latent, its label and the threshold used
# (`grid.load_split(study, entry)`: a `FeatureSplit` with `stability`, `label`, `max_cos`, `frequency`, `threshold`,
# `stable_at`, `unstable_at`; on disk `data/artifacts/grid/<model>-<point>-<hash>/split.safetensors` and
# `split.json`).

# %%
counts = latents.groupby(["seed", "label"]).size().unstack(fill_value=0)
counts

# %% [markdown]
# **Table 5.** Latents per label and seed at {glue:text}`ref_name` (dead latents excluded).

# %% [markdown]
# ## Verdicts
#
# Each statement, the number the paper or related work gives, ours, and whether it holds at this scale.

# %%
chapter.claims_table(table, ref, shape, freq_rho)

# %% [markdown]
# **Table 6.** Computed verdicts. At the default scale the SAEs are small and trained on few tokens (a 2-core CPU
# budget): what they show is how stability behaves *early* and at small width, which is not the paper's regime. The
# `gpu` and `paper` scales run the same code on hub models with bigger dictionaries and longer training.
