"""Chapter 1's grid: SAEs trained on a language model's activations over layers x variants x dictionary sizes, each
with `n_seeds` seeds, their evaluation, and the stable/unstable split that chapters 2, 3 and 5 reuse.

Everything here goes through the artifact cache:
- `load_store`: the activation store of one layer (`activations/`),
- `train_entry`: the stacked seeds of one grid point (`saes/`),
- `score_entry`: per-latent stability (PAPER.md, "Per-feature stability"), explained variance, L0, dead fraction,
  CE score with the SAE spliced in, whole-SAE scores (shared fraction, PW-MCC) and their null baselines
  (`grid/`). `load_split` reads the per-latent part of it: the split artifact later chapters use.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from saelib import splice, stability
from saelib.activations import LanguageModel, collect_activations, load_model, model_slug
from saelib.cache import artifact_dir, atomic_write_json, cached_artifact, verify_manifest
from saelib.config import SAEConfig, StabilityStudy
from saelib.metrics import evaluate_sae
from saelib.sae import SAE
from saelib.store import ActivationStore
from saelib.subspace import covariance_directions, load_covariance
from saelib.train import TRAIN_VERSION, _train_key, train_cached

log = logging.getLogger(__name__)

SCORE_VERSION = 1
"""Bumped when `score_entry`'s computation changes, so that cached scores are recomputed."""


class GridEntry(NamedTuple):
    """One point of the grid: `n_seeds` SAEs of one variant and size on one layer."""

    layer: int
    variant: str
    d_sae: int

    @property
    def name(self) -> str:
        return f"L{self.layer}-{self.variant}-{self.d_sae}"


def grid_entries(study: StabilityStudy) -> list[GridEntry]:
    """Every point of the grid, layer-major."""
    return [GridEntry(a.layer, v, d) for a in study.activations for v in study.variants for d in study.sizes]


def reference_entry(study: StabilityStudy) -> GridEntry:
    """The grid point that chapters 2, 3 and 5 study in depth (`study.reference`)."""
    return GridEntry(*study.reference)


def load_store(
    study: StabilityStudy, layer: int, *, device: str = "auto", progress: bool = True, lm: LanguageModel | None = None
) -> ActivationStore:
    """The activation store of `layer` (collected on first use, then read from the cache)."""
    return collect_activations(study.activations_at(layer), device=device, progress=progress, lm=lm)


def sae_config(study: StabilityStudy, entry: GridEntry, d_in: int, n_seeds: int | None = None) -> SAEConfig:
    """The `SAEConfig` of a grid point."""
    return SAEConfig(d_in=d_in, d_sae=entry.d_sae, variant=entry.variant, k=study.k, n_seeds=n_seeds or study.n_seeds)


def _sae_name(study: StabilityStudy, entry: GridEntry) -> str:
    return f"{model_slug(study.activations_at(entry.layer).model)}-{entry.name}"


def train_entry(
    study: StabilityStudy,
    entry: GridEntry,
    *,
    n_seeds: int | None = None,
    progress: bool = True,
    lm: LanguageModel | None = None,
) -> tuple[SAE, dict]:
    """Train (or load from the cache) the seeds of one grid point.

    Args:
        n_seeds: train this many seeds instead of `study.n_seeds`; seed i is initialised from `derive_seed(i)`
            whatever the stack size, so the first `study.n_seeds` of a larger stack start as the grid's do (and,
            as seeds never interact, train to the same SAEs up to float rounding).

    Returns:
        The stack (on `study.train.device`, inference mode) and its training history.
    """
    store = load_store(study, entry.layer, device=study.train.device, progress=progress, lm=lm)
    cfg = sae_config(study, entry, store.d_in, n_seeds)
    return train_cached(_sae_name(study, entry), cfg, study.train, store,
                        data_key=study.activations_at(entry.layer), progress=progress)


class FeatureSplit(NamedTuple):
    """Per-latent stability of one grid point and its stable / intermediate / unstable / dead labels."""

    stability: Tensor
    """`(S, d_sae)`: share of the other seeds with a latent of decoder cosine >= `threshold` (NaN if dead)."""
    mean_max_cos: Tensor
    """`(S, d_sae)`: mean over the other seeds of the max decoder cosine (NaN if dead)."""
    max_cos: Tensor
    """`(S, S, d_sae)`: `m_i(s->t)` (NaN on the diagonal and for dead latents)."""
    label: Tensor
    """`(S, d_sae)` int8: `stability.STABLE`, `INTERMEDIATE`, `UNSTABLE` or `DEAD`."""
    frequency: Tensor
    """`(S, d_sae)`: firing rate on the held-out tokens (dead: 0)."""
    mean_activation: Tensor
    """`(S, d_sae)`: mean activation where it fires."""
    threshold: float
    """The similarity threshold tau."""
    stable_at: float
    """Stability at or above which a latent is stable."""
    unstable_at: float
    """Stability at or below which a latent is unstable."""


def score_key(study: StabilityStudy, entry: GridEntry) -> dict:
    """The cache key of a grid point: everything that changes its SAEs, its split or its scores. Later chapters put
    it in their own keys, so that their cached results follow the grid point's."""
    return {"entry": entry._asdict(), "k": study.k, "n_seeds": study.n_seeds, "train": _train_key(study.train),
            "activations": study.activations_at(entry.layer), "stability": study.stability,
            "n_ce_contexts": study.n_ce_contexts, "train_version": TRAIN_VERSION, "score_version": SCORE_VERSION}


def activation_covariance(store: ActivationStore, max_tokens: int = 200_000) -> Tensor:
    """`(d_in, d_in)` float64 covariance of the first `max_tokens` activations of `store` (cached; chapter 3's
    covariance baseline uses the same one)."""
    return load_covariance(store, max_tokens).cov


def top_dimension_share(store: ActivationStore, n: int = 2, max_tokens: int = 200_000) -> pd.DataFrame:
    """The `n` coordinates of the activations with the largest variance and their share of the total variance
    (large shares mark "massive activation" dimensions, which dominate random draws from the covariance)."""
    var = activation_covariance(store, max_tokens).diagonal()
    top = var.argsort(descending=True)[:n]
    return pd.DataFrame({"dimension": top.tolist(), "variance_share": (var[top] / var.sum()).tolist()})


def score_sae(
    sae: SAE,
    store: ActivationStore,
    study: StabilityStudy,
    *,
    lm: LanguageModel | None = None,
    progress: bool = False,
) -> tuple[FeatureSplit, dict]:
    """Every chapter-1 score of one stack of seeds (uncached; `score_entry` caches it).

    Returns:
        The per-latent split, and a JSON-able dict of per-seed and whole-SAE scores: `explained_variance`, `l0`,
        `dead_fraction`, `ce` (clean, zero-ablation and spliced losses, CE score, KL; absent when `lm` is None),
        `pairs` (shared fraction and matched cosine per seed pair), and the same for the nulls: `null_untrained`
        (independently initialised untrained SAEs) and `null_covariance` (random directions from the activation
        covariance), each with its mean per-feature stability.
    """
    cfg = study.stability
    ev = evaluate_sae(sae, store.eval.batches(4096, seed=0))
    alive = ev.frequency > 0
    fs = stability.feature_stability(sae, cfg, alive=alive)
    max_cos = fs.max_cos.masked_fill(~alive.unsqueeze(1), torch.nan)  # dead latents: NaN rows, as documented
    split = FeatureSplit(fs.stability.cpu(), fs.mean_max_cos.cpu(), max_cos.cpu(), fs.label.cpu(),
                         ev.frequency.cpu(), ev.mean_activation.cpu(), cfg.threshold, cfg.stable_at, cfg.unstable_at)
    out = {"explained_variance": ev.explained_variance.tolist(), "l0": ev.l0.tolist(),
           "dead_fraction": ev.dead_fraction.tolist(), "n_eval_tokens": ev.n_tokens,
           "pairs": stability.seed_pair_scores(sae, cfg.threshold).to_dict("records")}
    null = stability.null_sae(sae)
    null_fs = stability.feature_stability(null, cfg)
    out["null_untrained"] = {"mean_stability": float(null_fs.stability.nanmean()),
                             "mean_max_cos": float(null_fs.mean_max_cos.nanmean()),
                             "pairs": stability.seed_pair_scores(null, cfg.threshold).to_dict("records")}
    gen = torch.Generator().manual_seed(0)
    cov = activation_covariance(store)
    dirs = covariance_directions(cov, sae.n_seeds * sae.cfg.d_sae, gen).view(sae.n_seeds, sae.cfg.d_sae, -1)
    cov_fs = stability.direction_stability(dirs, cfg)
    out["null_covariance"] = {"mean_stability": float(cov_fs.stability.nanmean()),
                              "mean_max_cos": float(cov_fs.mean_max_cos.nanmean())}
    if lm is not None:
        contexts = store.eval.contexts()[: study.n_ce_contexts]
        layer, hook = store.info["layer"], store.info["hook"]
        ce = splice.spliced_ce(lm, contexts, splice.sae_reconstructor(sae), layer=layer, hook=hook, progress=progress)
        out["ce"] = {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in ce._asdict().items()}
    return split, out


def _save_split(split: FeatureSplit, folder: Path) -> None:
    tensors = {k: v.contiguous() for k, v in split._asdict().items() if torch.is_tensor(v)}
    save_file(tensors, str(folder / "split.safetensors"))
    atomic_write_json(folder / "split.json", {k: v for k, v in split._asdict().items() if not torch.is_tensor(v)})


def _read_split(folder: Path) -> FeatureSplit:
    tensors = load_file(str(folder / "split.safetensors"))
    return FeatureSplit(**tensors, **json.loads((folder / "split.json").read_text()))


def score_entry(
    study: StabilityStudy, entry: GridEntry, *, lm: LanguageModel | None = None, progress: bool = True
) -> tuple[FeatureSplit, dict]:
    """`score_sae` of a grid point through the cache (`grid/<model>-<entry>-<hash>/`); trains it first if needed.

    Args:
        lm: the model for spliced CE; loaded here (once) when a score must be computed and `lm` is None.
    """

    def build(work: Path) -> None:
        model = lm or load_model(study.activations_at(entry.layer).model, device=study.train.device)
        sae, _ = train_entry(study, entry, progress=progress, lm=model)
        store = load_store(study, entry.layer, progress=progress, lm=model)
        split, scores = score_sae(sae, store, study, lm=model, progress=progress)
        _save_split(split, work)
        atomic_write_json(work / "scores.json", scores)

    folder = cached_artifact("grid", _sae_name(study, entry), score_key(study, entry), build)
    return _read_split(folder), json.loads((folder / "scores.json").read_text())


def is_scored(study: StabilityStudy, entry: GridEntry) -> bool:
    """Whether `score_entry` would read a grid point from the cache (nothing to train or compute)."""
    folder = artifact_dir("grid", _sae_name(study, entry), score_key(study, entry))
    return folder.is_dir() and verify_manifest(folder)


def load_split(study: StabilityStudy, entry: GridEntry, *, lm: LanguageModel | None = None) -> FeatureSplit:
    """The stable/unstable split of a grid point (computed and cached on first use)."""
    return score_entry(study, entry, lm=lm)[0]


def summary_row(entry: GridEntry, split: FeatureSplit, scores: dict) -> dict:
    """One row of the grid table: means over seeds of every score of a grid point."""
    label = split.label
    alive = label != stability.DEAD
    n_alive = max(int(alive.sum()), 1)
    pairs = pd.DataFrame(scores["pairs"])
    null_pairs = pd.DataFrame(scores["null_untrained"]["pairs"])
    row = {"layer": entry.layer, "variant": entry.variant, "d_sae": entry.d_sae,
           "explained_variance": float(np.mean(scores["explained_variance"])), "l0": float(np.mean(scores["l0"])),
           "dead_fraction": float(np.mean(scores["dead_fraction"])),
           "mean_stability": float(split.stability.nanmean()), "mean_max_cos": float(split.mean_max_cos.nanmean()),
           "stable_share": int((label == stability.STABLE).sum()) / n_alive,
           "unstable_share": int((label == stability.UNSTABLE).sum()) / n_alive,
           "shared_fraction": float(pairs.shared_fraction.mean()), "pw_mcc": float(pairs.matched_cosine.mean()),
           "null_stability": scores["null_untrained"]["mean_stability"],
           "null_cov_stability": scores["null_covariance"]["mean_stability"],
           "null_shared_fraction": float(null_pairs.shared_fraction.mean()),
           "null_pw_mcc": float(null_pairs.matched_cosine.mean())}
    if "ce" in scores:
        row["ce_loss_score"] = float(np.mean(scores["ce"]["ce_loss_score"]))
        row["delta_loss"] = float(np.mean(scores["ce"]["delta_loss"]))
    return row


def run_grid(
    study: StabilityStudy, *, lm: LanguageModel | None = None, progress: bool = True
) -> tuple[pd.DataFrame, dict[GridEntry, FeatureSplit], dict[GridEntry, dict]]:
    """Train and score every grid point (each cached), loading the model at most once.

    Returns:
        The grid table (one `summary_row` per point), and the splits and raw scores keyed by `GridEntry`.
    """
    entries = grid_entries(study)
    splits, scores, rows = {}, {}, []
    for entry in tqdm(entries, desc="grid", disable=not progress):
        if lm is None and not is_scored(study, entry):
            lm = load_model(study.activations_at(entry.layer).model, device=study.train.device)
        splits[entry], scores[entry] = score_entry(study, entry, lm=lm, progress=progress)
        rows.append(summary_row(entry, splits[entry], scores[entry]))
    return pd.DataFrame(rows), splits, scores


def latent_table(entry: GridEntry, split: FeatureSplit) -> pd.DataFrame:
    """One row per alive latent of every seed: `seed`, `latent`, `stability`, `mean_max_cos`, `frequency`,
    `mean_activation`, `label` (name), plus the grid point's `layer`, `variant`, `d_sae`."""
    S, F = split.stability.shape
    seed, latent = np.meshgrid(np.arange(S), np.arange(F), indexing="ij")
    df = pd.DataFrame({"seed": seed.ravel(), "latent": latent.ravel(),
                       "stability": split.stability.numpy().ravel(), "mean_max_cos": split.mean_max_cos.numpy().ravel(),
                       "frequency": split.frequency.numpy().ravel(),
                       "mean_activation": split.mean_activation.numpy().ravel(),
                       "label": [stability.LABEL_NAMES[int(c)] for c in split.label.numpy().ravel()]})
    df = df[df.label != "dead"].reset_index(drop=True)
    return df.assign(layer=entry.layer, variant=entry.variant, d_sae=entry.d_sae)


PAULO_BELROSE_SHARED = 0.416
"""Paulo & Belrose 2025: shared fraction of a 32k-latent, k = 32 TopK SAE on Pythia-160M layer 6 MLP (seeds 1, 2)."""
SONG_PW_MCC = 0.80
"""Song et al. 2025: PW-MCC of TopK SAEs on LLM activations."""


def claims_table(table: pd.DataFrame, reference: dict, shape: dict, freq_rho: float) -> pd.DataFrame:
    """Chapter 1's verdicts, computed: each of the paper's (and related work's) statements beside our number.

    Args:
        table: `run_grid`'s table.
        reference: its row for the reference grid point.
        shape: `stability.bimodality` of the reference point's stability.
        freq_rho: `stability.frequency_correlation` of the reference point.
    """
    above_null = (table.mean_stability > table.null_stability).all()
    above_cov = table.mean_stability > table.null_cov_stability
    by_size = table.sort_values("d_sae").groupby(["layer", "variant"]).mean_stability
    trend = by_size.last() - by_size.first()
    rows = [
        ("A per-feature score separates stable from unstable features (a bimodal distribution)",
         "claimed (no number in the abstract)",
         f"{shape['share_zero']:.0%} of latents at 0, {shape['share_one']:.0%} at 1; bimodality coefficient "
         f"{shape['bimodality_coefficient']:.2f} (> 0.56 suggests two modes)",
         "holds" if shape["bimodality_coefficient"] > 5 / 9 else "does not hold at this scale"),
        ("Trained features reappear more often than untrained ones", "implied",
         f"mean stability {table.mean_stability.min():.2f}-{table.mean_stability.max():.2f} vs "
         f"{table.null_stability.max():.2f} at most for untrained SAEs",
         "holds at every grid point" if above_null else "does not hold everywhere"),
        ("... and more often than random directions drawn from the activation covariance", "implied",
         f"null {table.null_cov_stability.min():.2f}-{table.null_cov_stability.max():.2f}; trained SAEs above it at "
         f"{int(above_cov.sum())} of {len(table)} grid points",
         "holds at every grid point" if above_cov.all() else
         "does not hold everywhere (see the covariance null's caveat above)"),
        ("Stability moves with dictionary size", "studied (no number in the abstract)",
         f"largest minus smallest size: {trend.min():+.2f} to {trend.max():+.2f} in mean stability",
         "larger dictionaries are less stable" if (trend < 0).all() else
         "larger dictionaries are more stable" if (trend > 0).all() else "mixed across layers and variants"),
        ("Unstable features are rare (low frequency)", "claimed (chapter 2 tests it further)",
         f"Spearman correlation of stability with frequency {freq_rho:+.2f}",
         "holds" if freq_rho > 0.1 else "does not hold at this scale"),
        ("Shared fraction (Paulo & Belrose: matched decoder and encoder cos > 0.7)",
         f"{PAULO_BELROSE_SHARED:.1%} (Pythia-160M, 32k latents, long training)",
         f"{reference['shared_fraction']:.1%} (null {reference['null_shared_fraction']:.1%})",
         "comparable" if abs(reference["shared_fraction"] - PAULO_BELROSE_SHARED) < 0.1 else "differs"),
        ("PW-MCC (Song et al.)", f"{SONG_PW_MCC:.2f} (TopK SAEs on LLMs; random init about 0.30)",
         f"{reference['pw_mcc']:.2f} (null {reference['null_pw_mcc']:.2f})",
         "comparable" if abs(reference["pw_mcc"] - SONG_PW_MCC) < 0.1 else "differs"),
    ]
    return pd.DataFrame(rows, columns=["statement", "paper / related work", "this run", "verdict"])
