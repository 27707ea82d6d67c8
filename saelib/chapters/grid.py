"""Chapter 1's grid: SAEs trained on a language model's activations over layers x variants x dictionary sizes, each
with `n_seeds` seeds, their evaluation, and the stable/unstable split that chapters 2, 3 and 5 reuse.

Everything here goes through the artifact cache:
- `load_store`: the activation store of one layer (`activations/`),
- `train_entry`: the stacked seeds of one grid point (`saes/`),
- `score_entry`: per-latent stability (the book's methods page, "Stability"), explained variance, L0, dead fraction,
  CE score with the SAE spliced in, whole-SAE scores (shared fraction, PW-MCC) and their null baselines
  (`grid/`). `load_split` reads the per-latent part of it (a `FeatureSplit`): the split later chapters use.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from saelib import matching, stability
from saelib.cache import artifact_dir, cached_artifact, verify_manifest
from saelib.chapters.common import preset
from saelib.config import VARIANTS, SAEConfig, StabilityConfig, TrainConfig, check_fraction, check_positive
from saelib.lm import splice
from saelib.lm.activations import LanguageModel, collect_activations, load_model, model_slug
from saelib.lm.config import ACTIVATION_SCALES, ActivationConfig
from saelib.lm.store import ActivationStore, load_covariance
from saelib.metrics import evaluate_sae
from saelib.paths import atomic_write_json
from saelib.sae import SAE
from saelib.subspace import covariance_directions
from saelib.train import TRAIN_VERSION, train_cached, train_key

log = logging.getLogger(__name__)

SCORE_VERSION = 1
"""Bumped when `score_entry`'s computation changes, so that cached scores are recomputed."""


@dataclass(frozen=True)
class GridStudy:
    """The grid of SAEs chapter 1 trains (layers x variants x dictionary sizes, `n_seeds` seeds each) and how they are
    scored. Chapters 2, 3 and 5 reuse its SAEs and its stable/unstable split, mostly those of `reference`."""

    activations: tuple[ActivationConfig, ...]
    """One activation store per layer studied (same model and corpus; later layers may collect fewer tokens)."""
    variants: tuple[str, ...] = ("topk", "batchtopk")
    """SAE variants trained at every layer and size (`VARIANTS`)."""
    sizes: tuple[int, ...] = (1024, 2048, 4096)
    """Dictionary sizes `d_sae`."""
    k: int = 32
    """Active latents per token (TopK, BatchTopK)."""
    n_seeds: int = 5
    """Independently initialised seeds per grid point (same data, same batch order)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(n_tokens=200_000))
    """Training of every SAE of the grid (its `n_tokens`: the grid's small budget, breadth over depth)."""
    reference_seeds: int = 9
    """Seeds trained at the reference point in depth: the anchor and N = reference_seeds - 1 comparison seeds (the
    paper's reported setting: 96, one anchor against 95)."""
    budgets: tuple[int, ...] = (200_000, 400_000, 800_000, 2_000_000)
    """Training tokens of the budget curve at the reference point, increasing; the largest trains the reference
    SAEs that chapters 2, 3 and 5 study (`reference_study`). Budgets beyond the tokens collected are epochs."""
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    """Threshold tau and stable/unstable cut-offs."""
    reference: tuple[int, str, int] = (6, "topk", 4096)
    """(layer, variant, d_sae) of the SAEs that chapters 2, 3 and 5 study in depth."""
    n_ce_contexts: int = 8
    """Held-out contexts on which CE with the SAE spliced in is measured (about 100 tokens/s on a 2-core CPU)."""
    thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    """The tau values of the threshold-sensitivity view."""

    def __post_init__(self) -> None:
        if not self.activations:
            raise ValueError("GridStudy.activations is empty; give one ActivationConfig per layer")
        layers = [a.layer for a in self.activations]
        if len(set(layers)) != len(layers):
            raise ValueError(f"GridStudy.activations has repeated layers {layers}")
        if len({(a.model, a.hook, a.corpus) for a in self.activations}) != 1:
            raise ValueError("GridStudy.activations must share model, hook and corpus (they differ by layer)")
        bad = [v for v in self.variants if v not in VARIANTS]
        if not self.variants or bad:
            raise ValueError(f"GridStudy.variants={self.variants!r} must be non-empty, from {', '.join(VARIANTS)}")
        if not self.sizes or min(self.sizes) <= self.k:
            raise ValueError(f"GridStudy.sizes={self.sizes!r} must be non-empty and each larger than k={self.k}")
        if self.n_seeds < 2:
            raise ValueError(f"GridStudy.n_seeds={self.n_seeds} must be >= 2 (stability compares seeds)")
        if self.reference_seeds < max(self.n_seeds, 2):
            raise ValueError(
                f"GridStudy.reference_seeds={self.reference_seeds} must be >= n_seeds={self.n_seeds} and >= 2"
            )
        if not self.budgets or any(b <= 0 for b in self.budgets) or list(self.budgets) != sorted(set(self.budgets)):
            raise ValueError(f"GridStudy.budgets={self.budgets!r} must be positive token counts, strictly increasing")
        layer, variant, d_sae = self.reference
        if layer not in layers or variant not in self.variants or d_sae not in self.sizes:
            raise ValueError(f"GridStudy.reference={self.reference!r} is not a point of the grid")
        check_positive("GridStudy", n_ce_contexts=self.n_ce_contexts)
        check_fraction("GridStudy", lo_open=True, **{f"thresholds[{i}]": t for i, t in enumerate(self.thresholds)})

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers studied, in the order of `activations`."""
        return tuple(a.layer for a in self.activations)

    def activations_at(self, layer: int) -> ActivationConfig:
        """The `ActivationConfig` of `layer`."""
        for a in self.activations:
            if a.layer == layer:
                return a
        raise ValueError(f"layer={layer} is not studied; layers are {self.layers}")


def study(scale: str = "default", device: str = "auto", **overrides) -> GridStudy:
    """The grid at a named scale (`smoke`, `default`, `gpu`, `paper`), its SAEs trained on `device`; `overrides`
    replace fields of the study (None keeps the scale's value)."""
    return preset(_preset, scale, device, **overrides)


def _preset(scale: str, device: str) -> GridStudy:
    study = _scale_preset(scale)
    return replace(study, train=replace(study.train, device=device))


def _scale_preset(scale: str) -> GridStudy:
    base = ACTIVATION_SCALES[scale]
    if scale == "smoke":
        acts = (replace(base, layer=3), base)
        train = TrainConfig(n_tokens=8_192, batch_size=512, lr=2e-3, normalize_activations=True)
        return GridStudy(
            acts,
            sizes=(128, 256),
            k=8,
            n_seeds=3,
            train=train,
            reference=(6, "topk", 256),
            reference_seeds=4,
            budgets=(8_192, 16_384),
            n_ce_contexts=1,
            thresholds=(0.5, 0.7, 0.9),
        )
    if scale == "default":
        # Breadth at a small budget (every grid point, 5 seeds, one pass over DEFAULT_TRAIN_TOKENS), depth at the
        # reference point: an anchor and 8 comparison seeds trained 10x longer, over the 1M tokens collected at its
        # layer (epochs beyond that). k = 8: at these budgets k = 32 leaves almost every latent unmatched.
        acts = (
            replace(base, layer=3, n_train_tokens=DEFAULT_TRAIN_TOKENS),
            replace(base, layer=6, n_train_tokens=1_000_000),
        )
        train = TrainConfig(n_tokens=DEFAULT_TRAIN_TOKENS, batch_size=1024, lr=2e-3, normalize_activations=True)
        return GridStudy(
            acts,
            sizes=(512, 1024, 2048),
            k=8,
            train=train,
            reference=(6, "topk", 1024),
            reference_seeds=9,
            budgets=(DEFAULT_TRAIN_TOKENS, 400_000, 800_000, 2_000_000),
            n_ce_contexts=4,
        )
    # gpu: hub models, bigger dictionaries, more seeds and tokens (several epochs of the capped corpus).
    if scale == "gpu":
        acts = tuple(replace(base, layer=layer) for layer in (3, 6, 9))
        train = TrainConfig(n_tokens=20_000_000, batch_size=4096, normalize_activations=True)
        return GridStudy(
            acts,
            sizes=(4096, 8192, 16384),
            n_seeds=5,
            train=train,
            reference=(6, "topk", 16384),
            reference_seeds=17,
            budgets=(20_000_000, 50_000_000, 100_000_000, 200_000_000),
            n_ce_contexts=64,
        )
    # paper: the setup a third-party reading of arXiv 2606.12138 reports: GPT-2 small, residual stream after block 7,
    # TopK with 16,384 latents and k = 64, 1B FineWeb tokens, 96 seeds (an anchor against 95); the grid around it spans
    # layers, sizes and variants at a tenth of the budget.
    acts = tuple(replace(base, layer=layer) for layer in (3, 7, 10))
    train = TrainConfig(n_tokens=100_000_000, batch_size=4096, normalize_activations=True)
    return GridStudy(
        acts,
        variants=("topk", "batchtopk", "relu", "jumprelu"),
        sizes=(4096, 16384, 65536),
        k=64,
        n_seeds=8,
        train=train,
        reference=(7, "topk", 16384),
        reference_seeds=96,
        budgets=(100_000_000, 250_000_000, 500_000_000, 1_000_000_000),
        n_ce_contexts=128,
    )


DEFAULT_TRAIN_TOKENS = 200_000
"""Training tokens per SAE of the default grid's breadth (2-core CPU budget; chapter 1's budget curve shows what
depth changes)."""


class GridEntry(NamedTuple):
    """One point of the grid: `n_seeds` SAEs of one variant and size on one layer."""

    layer: int
    variant: str
    d_sae: int

    @property
    def name(self) -> str:
        return f"L{self.layer}-{self.variant}-{self.d_sae}"


def grid_entries(study: GridStudy) -> list[GridEntry]:
    """Every point of the grid, layer-major."""
    return [GridEntry(a.layer, v, d) for a in study.activations for v in study.variants for d in study.sizes]


def reference_entry(study: GridStudy) -> GridEntry:
    """The grid point that chapters 2, 3 and 5 study in depth (`study.reference`)."""
    return GridEntry(*study.reference)


def budget_study(study: GridStudy, n_tokens: int, n_seeds: int | None = None) -> GridStudy:
    """The grid with every SAE trained on `n_tokens` tokens (and `n_seeds` seeds; None keeps the grid's)."""
    return replace(study, n_seeds=n_seeds or study.n_seeds, train=replace(study.train, n_tokens=n_tokens))


def all_points(study: GridStudy) -> list[tuple[GridStudy, GridEntry]]:
    """Every (study, grid point) that chapter 1 trains and scores: the grid's points, then the reference point at each
    of `budgets` (the last with `reference_seeds` seeds: the reference SAEs), without repeats."""
    points = [(study, e) for e in grid_entries(study)]
    entry = reference_entry(study)
    points += [(budget_study(study, n), entry) for n in study.budgets[:-1]] + [(reference_study(study), entry)]
    seen, out = set(), []
    for point, e in points:
        key = json.dumps(score_key(point, e), sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append((point, e))
    return out


def reference_study(study: GridStudy) -> GridStudy:
    """The grid as it trains its reference point in depth: `reference_seeds` seeds on the largest of `budgets`.
    `train_entry`, `score_entry` and `load_split` of `reference_entry` on it give the reference SAEs that chapters 2,
    3 and 5 study (the anchor is `study.stability.anchor`)."""
    return budget_study(study, max(study.budgets), study.reference_seeds)


def load_store(
    study: GridStudy, layer: int, *, device: str = "auto", progress: bool = True, lm: LanguageModel | None = None
) -> ActivationStore:
    """The activation store of `layer` (collected on first use, then read from the cache)."""
    return collect_activations(study.activations_at(layer), device=device, progress=progress, lm=lm)


def sae_config(study: GridStudy, entry: GridEntry, d_in: int, n_seeds: int | None = None) -> SAEConfig:
    """The `SAEConfig` of a grid point."""
    return SAEConfig(d_in=d_in, d_sae=entry.d_sae, variant=entry.variant, k=study.k, n_seeds=n_seeds or study.n_seeds)


def sae_name(study: GridStudy, entry: GridEntry) -> str:
    """The artifact name of a grid point's SAEs and scores: `<model>-L<layer>-<variant>-<d_sae>`."""
    return f"{model_slug(study.activations_at(entry.layer).model)}-{entry.name}"


def train_entry(
    study: GridStudy,
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
    return train_cached(
        sae_name(study, entry), cfg, study.train, store, data_key=study.activations_at(entry.layer), progress=progress
    )


class FeatureSplit(NamedTuple):
    """`stability.FeatureStability` of one grid point with its dead latents NaN throughout, plus what later chapters
    read beside it: firing statistics on the held-out tokens and the label cut-offs.

    The first five fields are `FeatureStability`'s, same names and meaning (`as_feature_stability` gives it back);
    the cache stores the tensors in `split.safetensors` and the numbers in `split.json`, by field name.
    """

    stability: Tensor
    """`(S, d_sae)`: share of the other seeds with a latent of decoder cosine >= `threshold` (NaN if dead)."""
    mean_max_cos: Tensor
    """`(S, d_sae)`: mean over the other seeds of the max decoder cosine (NaN if dead)."""
    max_cos: Tensor
    """`(S, S, d_sae)`: `m_i(s->t)` (NaN on the diagonal, and in the rows `max_cos[s, :, i]` of dead latents)."""
    label: Tensor
    """`(S, d_sae)` int8: `stability.STABLE`, `INTERMEDIATE`, `UNSTABLE` or `DEAD`."""
    threshold: float
    """The similarity threshold tau."""
    frequency: Tensor
    """`(S, d_sae)`: firing rate on the held-out tokens (dead: 0)."""
    mean_activation: Tensor
    """`(S, d_sae)`: mean activation where it fires."""
    stable_at: float
    """Stability at or above which a latent is stable (`StabilityConfig.stable_cut`)."""
    unstable_at: float
    """Stability at or below which a latent is unstable (`StabilityConfig.unstable_cut`)."""

    @classmethod
    def from_stability(
        cls, fs: stability.FeatureStability, frequency: Tensor, mean_activation: Tensor, cfg: StabilityConfig
    ) -> FeatureSplit:
        """The split of `fs` (computed with `alive = frequency > 0`, so that its dead latents are NaN), on CPU."""
        if not torch.equal((fs.label == stability.DEAD).cpu(), (frequency == 0).cpu()):
            raise ValueError("FeatureSplit: the dead latents of `fs` must be those with frequency 0")
        return cls(
            *(v.cpu() if torch.is_tensor(v) else v for v in fs),
            frequency.cpu(),
            mean_activation.cpu(),
            cfg.stable_cut,
            cfg.unstable_cut,
        )

    @property
    def alive(self) -> Tensor:
        """`(S, d_sae)` bool: latents that fire on the held-out tokens."""
        return self.label != stability.DEAD

    def as_feature_stability(self) -> stability.FeatureStability:
        """The `FeatureStability` part of the split."""
        return stability.FeatureStability(*self[: len(stability.FeatureStability._fields)])


def score_key(study: GridStudy, entry: GridEntry) -> dict:
    """The cache key of a grid point: everything that changes its SAEs, its split or its scores. Later chapters put
    it in their own keys, so that their cached results follow the grid point's."""
    return {
        "entry": entry._asdict(),
        "k": study.k,
        "n_seeds": study.n_seeds,
        "train": train_key(study.train),
        "activations": study.activations_at(entry.layer),
        "stability": study.stability,
        "n_ce_contexts": study.n_ce_contexts,
        "train_version": TRAIN_VERSION,
        "score_version": SCORE_VERSION,
    }


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
    study: GridStudy,
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
    split = FeatureSplit.from_stability(fs, ev.frequency, ev.mean_activation, cfg)
    out = {
        "explained_variance": ev.explained_variance.tolist(),
        "l0": ev.l0.tolist(),
        "dead_fraction": ev.dead_fraction.tolist(),
        "n_eval_tokens": ev.n_tokens,
        "pairs": matching.seed_pair_scores(sae, cfg.threshold).to_dict("records"),
    }
    null = stability.null_sae(sae)
    null_fs = stability.feature_stability(null, cfg)
    out["null_untrained"] = {
        "mean_stability": float(null_fs.stability.nanmean()),
        "mean_max_cos": float(null_fs.mean_max_cos.nanmean()),
        "pairs": matching.seed_pair_scores(null, cfg.threshold).to_dict("records"),
    }
    gen = torch.Generator().manual_seed(0)
    cov = activation_covariance(store)
    dirs = covariance_directions(cov, sae.n_seeds * sae.cfg.d_sae, gen).view(sae.n_seeds, sae.cfg.d_sae, -1)
    cov_fs = stability.direction_stability(dirs, cfg)
    out["null_covariance"] = {
        "mean_stability": float(cov_fs.stability.nanmean()),
        "mean_max_cos": float(cov_fs.mean_max_cos.nanmean()),
    }
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
    study: GridStudy, entry: GridEntry, *, lm: LanguageModel | None = None, progress: bool = True
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

    folder = cached_artifact("grid", sae_name(study, entry), score_key(study, entry), build)
    return _read_split(folder), json.loads((folder / "scores.json").read_text())


def is_scored(study: GridStudy, entry: GridEntry) -> bool:
    """Whether `score_entry` would read a grid point from the cache (nothing to train or compute)."""
    folder = artifact_dir("grid", sae_name(study, entry), score_key(study, entry))
    return folder.is_dir() and verify_manifest(folder)


def load_split(study: GridStudy, entry: GridEntry, *, lm: LanguageModel | None = None) -> FeatureSplit:
    """The stable/unstable split of a grid point (computed and cached on first use)."""
    return score_entry(study, entry, lm=lm)[0]


def first_seeds(split: FeatureSplit, scores: dict, n: int, cfg: StabilityConfig) -> tuple[FeatureSplit, dict]:
    """A grid point's split and scores as if it had trained only its first `n` seeds: stability and labels
    recomputed among them (from `max_cos`), per-seed scores and seed pairs restricted to them. Seeds never interact
    in training, so these are the scores of an `n`-seed stack (this lets a budget curve compare its points at one
    number of seeds while the deepest point trains more)."""
    S = split.stability.shape[0]
    if not 2 <= n <= S:
        raise ValueError(f"n={n} must lie in [2, {S}] (the seeds of the split)")
    max_cos = split.max_cos[:n, :n]
    alive = split.alive[:n]
    stab, mean = stability.stability_from_max_cos(max_cos, cfg.threshold, alive)
    sub = split._replace(
        stability=stab,
        mean_max_cos=mean,
        max_cos=max_cos,
        label=stability.stability_labels(stab, cfg),
        frequency=split.frequency[:n],
        mean_activation=split.mean_activation[:n],
    )
    out = dict(scores)
    for key in ("explained_variance", "l0", "dead_fraction"):
        out[key] = scores[key][:n]
    out["pairs"] = [p for p in scores["pairs"] if p["s"] < n and p["t"] < n]
    if "ce" in scores:
        out["ce"] = {k: v[:n] if isinstance(v, list) and len(v) == S else v for k, v in scores["ce"].items()}
    return sub, out


def summary_row(entry: GridEntry, split: FeatureSplit, scores: dict) -> dict:
    """One row of the grid table: means over seeds of every score of a grid point."""
    label = split.label
    alive = label != stability.DEAD
    n_alive = max(int(alive.sum()), 1)
    pairs = pd.DataFrame(scores["pairs"])
    null_pairs = pd.DataFrame(scores["null_untrained"]["pairs"])
    row = {
        "layer": entry.layer,
        "variant": entry.variant,
        "d_sae": entry.d_sae,
        "explained_variance": float(np.mean(scores["explained_variance"])),
        "l0": float(np.mean(scores["l0"])),
        "dead_fraction": float(np.mean(scores["dead_fraction"])),
        "mean_stability": float(split.stability.nanmean()),
        "mean_max_cos": float(split.mean_max_cos.nanmean()),
        "stable_share": int((label == stability.STABLE).sum()) / n_alive,
        "unstable_share": int((label == stability.UNSTABLE).sum()) / n_alive,
        "shared_fraction": float(pairs.shared_fraction.mean()),
        "pw_mcc": float(pairs.matched_cosine.mean()),
        "null_stability": scores["null_untrained"]["mean_stability"],
        "null_cov_stability": scores["null_covariance"]["mean_stability"],
        "null_shared_fraction": float(null_pairs.shared_fraction.mean()),
        "null_pw_mcc": float(null_pairs.matched_cosine.mean()),
    }
    if "ce" in scores:
        row["ce_loss_score"] = float(np.mean(scores["ce"]["ce_loss_score"]))
        row["delta_loss"] = float(np.mean(scores["ce"]["delta_loss"]))
    return row


def run_grid(
    study: GridStudy, *, lm: LanguageModel | None = None, progress: bool = True
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


def run_all(study: GridStudy, *, lm: LanguageModel | None = None, progress: bool = True) -> pd.DataFrame:
    """`run_grid`, then the reference point at every budget (the budget curve and the reference SAEs): everything
    chapter 1 trains (`all_points`), each cached. Returns the grid table."""
    table, _, _ = run_grid(study, lm=lm, progress=progress)
    for point, entry in all_points(study)[len(grid_entries(study)) :]:
        if lm is None and not is_scored(point, entry):
            lm = load_model(point.activations_at(entry.layer).model, device=point.train.device)
        score_entry(point, entry, lm=lm, progress=progress)
    return table


def latent_table(entry: GridEntry, split: FeatureSplit) -> pd.DataFrame:
    """One row per alive latent of every seed: `seed`, `latent`, `stability`, `mean_max_cos`, `frequency`,
    `mean_activation`, `label` (name), plus the grid point's `layer`, `variant`, `d_sae`."""
    S, F = split.stability.shape
    seed, latent = np.meshgrid(np.arange(S), np.arange(F), indexing="ij")
    df = pd.DataFrame(
        {
            "seed": seed.ravel(),
            "latent": latent.ravel(),
            "stability": split.stability.numpy().ravel(),
            "mean_max_cos": split.mean_max_cos.numpy().ravel(),
            "frequency": split.frequency.numpy().ravel(),
            "mean_activation": split.mean_activation.numpy().ravel(),
            "label": [stability.LABEL_NAMES[int(c)] for c in split.label.numpy().ravel()],
        }
    )
    df = df[df.label != "dead"].reset_index(drop=True)
    return df.assign(layer=entry.layer, variant=entry.variant, d_sae=entry.d_sae)
