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
# The paper's first claim ({cite}`gerasimov2026unstable`; claim 1 in the {doc}`../intro`): for every SAE feature one
# can estimate the probability that a similar feature reappears in an independently trained SAE, and this
# per-feature score separates stable from unstable features. We train a grid of SAEs on a language model's residual
# stream, several seeds per grid point (same data, same batch order, different initialisation), over layers,
# dictionary sizes and SAE variants, and score every latent. Every number on this page is computed when the page is
# built; the stable/unstable split it produces is what chapters 2, 3 and 5 study.

# %% tags=["parameters"]
SCALE = "default"  # smoke | default | gpu | paper
DEVICE = "auto"  # auto | cpu | cuda
COMPARE_K = None  # also train the reference grid point at this k (None: the scale's, 32 on CPU; 0: skip)

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
import pandas as pd
from myst_nb import glue

from saelib import plots
from saelib.chapters import common
from saelib.chapters import stability as chapter

plots.set_theme()
pd.set_option("display.max_colwidth", None)
pd.set_option("display.precision", 3)
study = chapter.study(SCALE, DEVICE, compare_k=COMPARE_K)
result = chapter.run(study)
for key, value in chapter.summary(result).items():
    glue(key, value, display=False)

# %% [markdown]
# ## The grid
#
# Model {glue:text}`model`, residual stream after blocks {glue:text}`layers`; SAE variants {glue:text}`variants`;
# dictionary sizes {glue:text}`sizes`; {glue:text}`n_seeds` seeds per grid point, each trained on
# {glue:text}`train_tokens` tokens ({glue:text}`n_points` grid points in all). Training, scoring and the split are
# cached (`saelib.chapters.grid`), so that re-rendering this page takes seconds. For every SAE we measure, on held-out
# contexts, the explained variance, L0, the dead fraction and the CE-loss score with the SAE spliced into the model
# (1 = the clean model's loss, 0 = zero-ablation of the layer), and for every latent its **per-feature stability**:
# the share of the other seeds that hold a latent whose decoder direction has cosine at least
# $\tau$ = {glue:text}`tau` with it. Latents at stability $\ge$ {glue:text}`stable_at` are *stable*, at
# $\le$ {glue:text}`unstable_at` *unstable*; dead latents are left out. The nulls are the same scores between
# untrained SAEs of the same shape, and between random directions drawn from the activation covariance (the
# {doc}`../methods` page lists every choice and its parameter).

# %%
result.activations

# %% [markdown]
# **Table 1.** The activations the grid is trained on: one store per layer, its hook, the training tokens collected
# and the held-out contexts every score is measured on.

# %%
result.table

# %% [markdown]
# **Table 2.** Every grid point, means over seeds: quality (explained variance, L0, dead fraction, CE-loss score),
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
ax = plots.stability.plot_stability_distribution(result.split.stability, result.split.label, result.null.null_stability)
_ = ax.set_title(f"{result.reference.name}, {study.grid.n_seeds} seeds")

# %% [markdown]
# **Figure 1.** Share of all alive latents of {glue:text}`ref_name` (every seed) at each stability value (with S
# seeds, stability takes the values 0, 1/(S-1), ..., 1), the bars stacked by label so that they sum to 1; beside them
# the same shares for untrained SAEs of the same shape.
#
# {glue:text}`shape_share_zero:.0%` of the latents have no match in any other seed, {glue:text}`shape_share_one:.0%`
# have one in every other seed, and {glue:text}`shape_share_between:.0%` lie in between (of untrained latents,
# {glue:text}`ref_null_share_zero:.0%` have no match); Sarle's bimodality coefficient is
# {glue:text}`shape_bimodality_coefficient:.2f` (values above 5/9 = 0.56, the uniform distribution's, suggest two
# modes). The mean stability is {glue:text}`ref_mean_stability:.2f`, against {glue:text}`ref_null_stability:.2f` for
# untrained SAEs and {glue:text}`ref_null_cov_stability:.2f` for random directions drawn from the activation
# covariance.

# %%
result.top_dimensions

# %% [markdown]
# **Table 3.** The coordinates of each layer's activations with the largest variance, and their share of it.
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
plots.stability.plot_grid_stability(result.table, "mean_stability", ax=axes[0])
plots.stability.plot_grid_stability(result.table, "stable_share", null=None, ax=axes[1])
plots.stability.plot_grid_stability(result.table, "unstable_share", null=None, ax=axes[2])
fig.tight_layout()

# %% [markdown]
# **Figure 2.** Mean per-feature stability (left; the untrained null dotted) and the shares of stable (middle) and
# unstable (right) latents, against dictionary size; one line per layer and variant.

# %% [markdown]
# ## Sensitivity to the threshold and to the number of reference seeds

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
plots.stability.plot_threshold_sweep(result.by_threshold, study.grid.stability.threshold, ax=axes[0])
plots.stability.plot_reference_sweep(result.by_reference_seeds, ax=axes[1])
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
ax = plots.stability.plot_stability_vs_frequency(result.latents)

# %% [markdown]
# **Figure 4.** Per-feature stability of every alive latent of {glue:text}`ref_name` (all seeds, coloured by label)
# against its firing frequency on held-out tokens (log scale), with the mean per frequency bin.
#
# The Spearman correlation between stability and frequency is {glue:text}`freq_rho:.2f`; the median frequency of
# stable latents is {glue:text}`freq_stable:.2e` and of unstable ones {glue:text}`freq_unstable:.2e`.

# %% [markdown]
# ## Sparsity: the same grid point at another k
#
# The grid uses the scale's k for every SAE. To show how much that choice matters, the reference grid point is also
# trained at k = {glue:text}`k_other` (same data, seeds and steps; the parameter `COMPARE_K`) and scored the same way.

# %%
result.by_k

# %% [markdown]
# **Table 4.** The reference grid point at the grid's k and at k = {glue:text}`k_other`.
#
# At k = {glue:text}`k_other` the mean stability is {glue:text}`stab_k_other:.2f` (explained variance
# {glue:text}`ev_k_other:.3f`), against {glue:text}`ref_mean_stability:.2f` (explained variance
# {glue:text}`ref_explained_variance:.3f`) at the grid's k = {glue:text}`k_grid`: at this training budget denser codes
# reconstruct better but reappear across seeds far less, which is why the default grid uses the sparser k.

# %% [markdown]
# ## Whole-SAE views: shared fraction and PW-MCC

# %%
result.whole

# %% [markdown]
# **Table 5.** Hungarian matching of every pair of seeds (a latent is shared when its matched decoder and encoder
# cosines both exceed 0.7 {cite}`paulo2025sparse`) and PW-MCC (the mean matched decoder cosine
# {cite}`song2025position`), means over seed pairs, with the same scores between untrained SAEs.
#
# At {glue:text}`ref_name`, {glue:text}`ref_shared_fraction:.1%` of latents are shared between two seeds (untrained:
# {glue:text}`ref_null_shared_fraction:.1%`) and PW-MCC is {glue:text}`ref_pw_mcc:.2f` (untrained:
# {glue:text}`ref_null_pw_mcc:.2f`). The two halves of the shared rule on their own: {glue:text}`ref_decoder_shared:.1%`
# of matched pairs pass on the decoder cosine, {glue:text}`ref_encoder_shared:.1%` on the encoder cosine: our
# briefly trained encoders, not the decoders, are what keeps the shared fraction near zero. Paulo & Belrose report
# 41.6% shared for a 32k-latent TopK SAE on Pythia-160M trained on far more tokens, and Song et al. a PW-MCC of 0.80
# for TopK SAEs on LLMs (related work, not the paper's own numbers): see the verdicts below.

# %% [markdown]
# ## The split later chapters use
#
# Per grid point, the cache holds the stability of every latent, its label and the threshold used
# (`grid.load_split(study, entry)`: a `FeatureSplit`, the fields of `saelib.stability.FeatureStability` plus
# `frequency`, `mean_activation`, `stable_at`, `unstable_at`; on disk
# `data/artifacts/grid/<model>-<point>-<hash>/split.safetensors` and `split.json`).

# %%
result.counts

# %% [markdown]
# **Table 6.** Latents per label and seed at {glue:text}`ref_name` (dead latents excluded).

# %% [markdown]
# ## Verdicts
#
# Each statement, the criterion it is held to, our number, the number the paper reports (or related work, marked so)
# and whether it holds at this scale.

# %%
common.claims_frame(chapter.claims(chapter.summary(result)))

# %% [markdown]
# **Table 7.** Computed verdicts. At the default scale the SAEs are small and trained on few tokens (a 2-core CPU
# budget): what they show is how stability behaves *early* and at small width, which is not the paper's regime. The
# `gpu` and `paper` scales run the same code on hub models with bigger dictionaries and longer training.
