"""Chapter 2's per-latent analyses (`saelib.chapters.asymmetry`): statistics, single-latent ablations, surface forms.

- `latent_stats_table`, `label_table`: per-latent activation statistics on the held-out tokens (frequency, mean and
  max activation, and activation mass as `metrics.FeatureActivationStats` defines it: `mass` is the sum of a latent's
  activations over the tokens, `mass_share` its share of its seed's total mass; a set of latents' `mass_share` is
  the sum of its members').
- `feature_ablation_effects`: the loss change when a single latent is removed (`splice.spliced_ce` with
  `splice.latent_ablation_reconstructor`), on the contexts where it fires (`firing_contexts`), for latents drawn per
  stability level by `sample_per_bin`; `marginal_table` adds the expected change per token.
- `eligible_latents`, `choose_examples`, `choose_explained`: which latents' top contexts are shown and explained;
  `example_html` shows them.

`saelib.chapters.asymmetry` re-exports every name here; its `run` caches what these compute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saelib import metrics
from saelib.chapters import grid
from saelib.chapters.asymmetry_cuts import LABELS
from saelib.chapters.grid import FeatureSplit, GridEntry
from saelib.lm import interp, splice
from saelib.sae import SAE

if TYPE_CHECKING:  # the chapter module imports this one
    from saelib.chapters.asymmetry import AsymmetryResult

LABEL_ORDER = ("unstable", "intermediate", "stable")
"""Row order of the per-label tables (as `plots.theme.LABEL_ORDER`)."""


# --- Per-latent statistics ----------------------------------------------------------------------------------------


def latent_stats_table(entry: GridEntry, split: FeatureSplit, stats: metrics.FeatureActivationStats) -> pd.DataFrame:
    """`grid.latent_table` (one row per alive latent of every seed) with its `max_activation` and `mass_share`
    (share of its seed's activation mass) from `stats`, all on the held-out tokens."""
    latents = grid.latent_table(entry, split)
    latents["max_activation"] = stats.max_activation.cpu().numpy()[latents.seed, latents.latent]
    latents["mass_share"] = stats.mass_share.cpu().numpy()[latents.seed, latents.latent]
    return latents


def label_table(latents: pd.DataFrame, n_seeds: int) -> pd.DataFrame:
    """Per stability label (rows `LABEL_ORDER`): `latents` (summed over seeds), `share_of_latents` (of the alive
    latents), `mass_share` (the label's share of its seed's activation mass, mean over the `n_seeds` seeds) and the
    medians of frequency, mean and max activation."""
    out = (
        latents.groupby("label")
        .agg(
            latents=("latent", "size"),
            mass_share=("mass_share", "sum"),
            median_frequency=("frequency", "median"),
            median_mean_activation=("mean_activation", "median"),
            median_max_activation=("max_activation", "median"),
        )
        .reindex(list(LABEL_ORDER))
    )
    out.insert(1, "share_of_latents", out.latents / len(latents))
    out["mass_share"] /= n_seeds
    return out


# --- Single-latent ablations --------------------------------------------------------------------------------------


def firing_contexts(sae: SAE, x: Tensor, context: np.ndarray, features, seed: int = 0) -> dict[int, np.ndarray]:
    """The contexts in which each of `features` of seed `seed` fires at least once.

    Args:
        sae: the stack.
        x: activations `(N, d_in)` of a store split (`store.eval.load_all()`).
        context: `(N,)` context index of each row (`store.eval.metadata().context`).
        features: latent indices.
        seed: seed position.
    """
    feats = torch.as_tensor(list(features), dtype=torch.long)
    one = sae.select([seed])
    hits = []
    with torch.no_grad():
        for xb in x.split(4096):
            z = one.encode(xb.to(one.W_dec.device, torch.float32))[0]  # (B, d_sae)
            hits.append((z[:, feats.to(z.device)] > 0).cpu())
    fired = torch.cat(hits).numpy()  # (N, n_features)
    return {int(f): np.unique(np.asarray(context)[fired[:, j]]) for j, f in enumerate(feats.tolist())}


def sample_per_bin(
    bins: np.ndarray, n_per_bin: int, rng: np.random.Generator, eligible: np.ndarray | None = None
) -> dict:
    """Up to `n_per_bin` random indices for every distinct value of `bins` `(F,)` (NaN bins and ineligible left out)."""
    bins = np.asarray(bins, dtype=float)
    ok = ~np.isnan(bins) if eligible is None else (~np.isnan(bins) & np.asarray(eligible, dtype=bool))
    out = {}
    for b in np.unique(bins[ok]):
        idx = np.flatnonzero(ok & (bins == b))
        out[float(b)] = np.sort(rng.choice(idx, size=min(n_per_bin, len(idx)), replace=False))
    return out


def _choose_contexts(firing: dict[int, np.ndarray], n: int, rng: np.random.Generator) -> dict[int, list[int]]:
    """Up to n firing contexts per latent, preferring contexts already chosen for another one (fewer clean passes)."""
    chosen: dict[int, list[int]] = {}
    used: set[int] = set()
    for f, ctxs in firing.items():
        ctxs = rng.permutation(np.asarray(ctxs, dtype=int))
        shared = [c for c in ctxs if c in used][:n]
        pick = shared + [c for c in ctxs if c not in shared][: n - len(shared)]
        chosen[f] = [int(c) for c in pick]
        used.update(chosen[f])
    return chosen


def feature_ablation_effects(
    lm,
    contexts,
    sae: SAE,
    firing: dict[int, np.ndarray],
    *,
    layer: int,
    hook: str = "resid_post",
    seed: int = 0,
    n_contexts: int = 2,
    rng_seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Marginal effect of single latents: the loss change when one latent's contribution is removed from the model.

    For latent f of seed `seed` the activation at every real position becomes `x - z_f(x) d_f` (the SAE's error and
    every other latent are kept: `splice.latent_ablation_reconstructor`), on up to `n_contexts` contexts in which f
    fires; since the model is causal and f is silent elsewhere, other contexts are unchanged. Each context is spliced
    once (`splice.spliced_ce`), with every latent chosen for it as one variant, so its clean pass is shared.

    Args:
        lm: the language model.
        contexts: `(N, T)` token ids (`store.eval.contexts()`).
        sae: the stack.
        firing: latent -> contexts where it fires (`firing_contexts`); latents with none get zero effect.
        layer, hook: where the SAE reads the model.
        seed: seed position of the latents.
        n_contexts: contexts per latent.
        rng_seed: seed of the context choice.
        progress: show a tqdm bar.

    Returns:
        One row per latent: `feature`, `n_contexts`, `n_firing` (tokens where it fires in them), `n_tokens`
        (predicted tokens in them), `delta_loss_sum` and `kl_sum` (summed over those tokens), and
        `delta_loss_per_firing` (`delta_loss_sum / n_firing`, NaN when it never fires).
    """
    ctx = np.asarray(contexts)
    one = sae.select([seed]).to(lm.device)
    chosen = _choose_contexts(firing, n_contexts, np.random.default_rng(rng_seed))
    by_ctx: dict[int, list[int]] = {}
    for f, cs in chosen.items():
        for c in cs:
            by_ctx.setdefault(c, []).append(f)
    acc = {f: np.zeros(5) for f in firing}  # n_contexts, n_firing, n_tokens, delta_sum, kl_sum
    for c, feats in tqdm(sorted(by_ctx.items()), desc="ablations", disable=not progress, leave=False):
        ablate = splice.latent_ablation_reconstructor(one, feats)
        fired: dict[str, list[int]] = {}

        def reconstruct(x: Tensor, ablate=ablate, fired=fired, feats=feats) -> Tensor:
            fired["n"] = (one.encode(x)[0][:, feats] > 0).sum(0).tolist()  # firings of each latent in the context
            return ablate(x)  # (len(feats), n_real, d_in)

        m = splice.spliced_ce(lm, ctx[c : c + 1], reconstruct, layer=layer, hook=hook, batch_size=1)
        for j, f in enumerate(feats):
            acc[f] += [
                1,
                fired["n"][j],
                m.n_tokens,
                float(m.delta_loss[j]) * m.n_tokens,
                float(m.kl_div[j]) * m.n_tokens,
            ]
    df = pd.DataFrame(
        [[f, *v] for f, v in acc.items()],
        columns=["feature", "n_contexts", "n_firing", "n_tokens", "delta_loss_sum", "kl_sum"],
    )
    df = df.astype({"feature": int, "n_contexts": int, "n_firing": int, "n_tokens": int})
    df["delta_loss_per_firing"] = df.delta_loss_sum / df.n_firing.where(df.n_firing > 0)
    return df


def marginal_table(effects: pd.DataFrame, latents: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """`feature_ablation_effects` joined with the latents' rows of seed `seed` (`latent_stats_table`), plus
    `delta_loss_per_token`: the loss change per firing times the firing frequency (0 for a latent that never fired
    in its contexts), the expected loss change per token of removing the latent."""
    out = effects.merge(latents[latents.seed == seed], left_on="feature", right_on="latent")
    out["delta_loss_per_token"] = out.delta_loss_per_firing.fillna(0.0) * out.frequency
    return out


# --- Surface forms and explanations -------------------------------------------------------------------------------


def eligible_latents(triggers: pd.DataFrame, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Per label (`LABELS`), the rows of `triggers` of seed `seed` with trigger statistics (enough activations)."""
    return {
        lab: triggers[(triggers.seed == seed) & (triggers.label == lab)].dropna(subset=["top_share"]) for lab in LABELS
    }


def choose_examples(eligible: dict[str, pd.DataFrame], n: int, seed: int = 0) -> dict[str, list[int]]:
    """Up to `n` random latents per label whose top contexts the chapter shows (`DataFrame.sample`, `seed`)."""
    return {lab: df.sample(min(n, len(df)), random_state=seed).latent.tolist() for lab, df in eligible.items()}


def choose_explained(eligible: dict[str, pd.DataFrame], n: int, seed: int = 0) -> dict[str, list[int]]:
    """Up to `n` random latents per label to explain, sorted; one random stream over the labels in order."""
    rng = np.random.default_rng(seed)
    return {lab: sorted(df.latent.to_numpy()[rng.permutation(len(df))[:n]].tolist()) for lab, df in eligible.items()}


EXPLANATION_COLUMNS = ["latent", "label", "explanation", "surface_form", "balanced_accuracy"]
"""Columns of the explanations table when no latent was explained."""


def example_html(result: AsymmetryResult, label: str) -> str:
    """HTML of the top contexts of the example latents of `label` (trigger highlighted), or a one-line note when
    no latent of that label had enough activations."""
    table = result.examples[label]
    if not len(table):
        return f"<p><em>No {label} latent with enough activations at this scale.</em></p>"
    return interp.html_table(table)
