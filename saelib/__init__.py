"""saelib: the library behind the companion to "Unstable Features, Reproducible Subspaces" (arXiv 2606.12138).

The core (this package's top-level modules) imports with torch, numpy, scipy, pandas, safetensors and tqdm only
(`tests/core/test_imports.py` checks it, and that it never imports the layers above it):
`config` (frozen configs), `sae` (S stacked SAEs), `train` (all seeds at once), `stability` (per-feature stability,
the paper's anchor estimator, nulls), `matching` (Hungarian matching, shared fraction, PW-MCC), `subspace`
(principal angles, overlap, effective rank), `groups` (cross-seed groups), `synthetic` (the planted-feature
generator), `pooling` (pooled SAEs), `metrics`, `cache` and `paths`.

Above it: `saelib.lm` (language models: activations, corpus, store, spliced CE, interpretation; adds transformers),
`saelib.chapters` (one module per chapter of the book) and `saelib.plots` (its figures; adds matplotlib and seaborn).
Imports point down: chapters -> lm -> core.
"""

from saelib.config import SAEConfig, StabilityConfig, SyntheticConfig, TrainConfig
from saelib.matching import pairwise_shared_fraction, pw_mcc
from saelib.metrics import evaluate_sae, explained_variance
from saelib.pooling import pool_features
from saelib.sae import SAE, load_sae, save_sae
from saelib.stability import FeatureStability, cross_seed_max_cosine, feature_stability, null_sae
from saelib.subspace import principal_angles, span_basis, subspace_overlap
from saelib.synthetic import generate
from saelib.train import TrainResult, train_saes

__version__ = "0.1.0"

__all__ = [
    "SAE",
    "FeatureStability",
    "SAEConfig",
    "StabilityConfig",
    "SyntheticConfig",
    "TrainConfig",
    "TrainResult",
    "cross_seed_max_cosine",
    "evaluate_sae",
    "explained_variance",
    "feature_stability",
    "generate",
    "load_sae",
    "null_sae",
    "pairwise_shared_fraction",
    "pool_features",
    "principal_angles",
    "pw_mcc",
    "save_sae",
    "span_basis",
    "subspace_overlap",
    "train_saes",
]
