"""Predicting a latent's stability from one seed (arXiv 2606.12138, as reported by a secondary source: a logistic
regression trained on one seed's decoder vectors predicts other seeds' stability labels with F1 about 0.67-0.73).

- `labels_per_seed`: the paper's endpoint labels of every seed, each seed in turn the anchor.
- `latent_features`: per-latent feature matrices of every seed: the decoder vectors, cheap statistics (log firing
  frequency, mean activation, encoder-row norm) and the frequency alone.
- `predict_stability`: a logistic regression per feature set, trained on one seed's stable and unstable latents and
  scored by F1 on each other seed's; beside it the majority baseline (always the training seed's larger class).

Needs scikit-learn, an optional dependency: `pip install "saelib[analysis]"`. It is imported only when a model is
fitted, so the rest of `saelib` imports without it.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from saelib.stability import STABLE, UNSTABLE, anchor_stability

FREQUENCY_FLOOR = 1e-7
"""Firing frequencies are floored here before the log (a dead latent has frequency 0)."""


def _sklearn(module: str) -> Any:
    """`sklearn.<module>`, or an ImportError that says how to install it."""
    try:
        return importlib.import_module(f"sklearn.{module}")
    except ImportError as err:
        raise ImportError(
            "saelib.predict needs scikit-learn: pip install 'saelib[analysis]' (or scikit-learn==1.9.1)"
        ) from err


def latent_features(
    decoder: Tensor, frequency: Tensor, mean_activation: Tensor, encoder_norm: Tensor
) -> dict[str, Tensor]:
    """The feature sets the classifiers read, each `(S, d_sae, p)` float64.

    Args:
        decoder: `(S, d_sae, d_in)` decoder rows (`SAE.decoder_directions()`).
        frequency: `(S, d_sae)` firing frequency (`metrics.feature_activation_stats(...).frequency`).
        mean_activation: `(S, d_sae)` mean activation where the latent fires (NaN or 0 for dead latents: set to 0).
        encoder_norm: `(S, d_sae)` norm of each latent's encoder row (`sae.W_enc.norm(dim=1)`).

    Returns:
        `decoder` (p = d_in), `stats` (p = 3: log10 frequency, mean activation, encoder norm) and `frequency`
        (p = 1: log10 frequency).
    """
    S, F = frequency.shape
    if decoder.shape[:2] != (S, F) or mean_activation.shape != (S, F) or encoder_norm.shape != (S, F):
        raise ValueError(
            f"decoder {tuple(decoder.shape)}, mean_activation {tuple(mean_activation.shape)} and encoder_norm "
            f"{tuple(encoder_norm.shape)} must match frequency (S={S}, d_sae={F})"
        )
    log_freq = frequency.double().cpu().clamp_min(FREQUENCY_FLOOR).log10()
    stats = torch.stack(
        [log_freq, mean_activation.double().cpu().nan_to_num(0.0), encoder_norm.double().cpu()], dim=-1
    )  # (S, F, 3)
    return {"decoder": decoder.double().cpu(), "stats": stats, "frequency": log_freq.unsqueeze(-1)}


def labels_per_seed(
    directions: Tensor, *, threshold: float = 0.7, epsilon: float = 0.05, alive: Tensor | None = None
) -> Tensor:
    """`(S, F)` int8 endpoint labels of every seed, each seed in turn the anchor of the paper's estimator
    (`saelib.stability.anchor_stability`): the classifier's training labels and its test labels.

    Args:
        directions: `(S, F, d)` decoder rows.
        threshold, epsilon, alive: as in `anchor_stability`.
    """
    return torch.stack(
        [
            anchor_stability(directions, s, threshold=threshold, epsilon=epsilon, alive=alive).label.cpu()
            for s in range(len(directions))
        ]
    )


def _xy(features: Tensor, label: Tensor, seed: int, positive: int) -> tuple[Any, Any]:
    keep = (label[seed] == STABLE) | (label[seed] == UNSTABLE)
    return features[seed][keep].numpy(), (label[seed][keep] == positive).numpy().astype(int)


def predict_stability(
    features: Mapping[str, Tensor],
    label: Tensor,
    *,
    train_seed: int = 0,
    test_seeds: Sequence[int] | None = None,
    positive: int = UNSTABLE,
    C: float = 1.0,
    class_weight: str | None = "balanced",
) -> list[dict]:
    """Train a logistic regression on one seed's latents per feature set; score it on the other seeds' latents.

    Only latents labelled `STABLE` or `UNSTABLE` enter (intermediate and dead ones are left out, as the paper's
    endpoint labels do). Features are standardised on the training seed. The majority baseline predicts the training
    seed's larger class for every latent (its F1 is 0 when that class is the negative one).

    Args:
        features: name -> `(S, d_sae, p)` (`latent_features`).
        label: `(S, d_sae)` stability labels of every seed (e.g. `anchor_stability` run with each seed as anchor).
        train_seed: the seed trained on.
        test_seeds: the seeds scored (default every other seed).
        positive: the class whose F1 is reported (`UNSTABLE` or `STABLE`).
        C: inverse L2 regularisation strength.
        class_weight: `balanced` weighs the classes by their inverse frequency, None weighs latents equally.

    Returns:
        One row per (model, test seed): `model` (a feature set's name, or `majority`), `train_seed`, `test_seed`,
        `f1` (of the positive class), `macro_f1`, `accuracy`, `n_train`, `n_test`, `positive_share` (in the test
        seed).
    """
    if positive not in (STABLE, UNSTABLE):
        raise ValueError(f"positive={positive} must be STABLE ({STABLE}) or UNSTABLE ({UNSTABLE})")
    label = label.cpu()
    S = label.shape[0]
    test_seeds = [t for t in range(S) if t != train_seed] if test_seeds is None else list(test_seeds)
    if not 0 <= train_seed < S or any(not 0 <= t < S for t in test_seeds):
        raise ValueError(f"train_seed={train_seed} and test_seeds={test_seeds} must lie in [0, {S})")
    names = ("linear_model", "pipeline", "preprocessing", "metrics")
    linear, pipeline, preprocessing, metrics = (_sklearn(m) for m in names)
    rows = []
    for name, feats in features.items():
        if feats.shape[:2] != label.shape:
            raise ValueError(f"features[{name!r}] has shape {tuple(feats.shape)}, expected (S, d_sae, p)")
        x_train, y_train = _xy(feats.double().cpu(), label, train_seed, positive)
        if len(set(y_train.tolist())) < 2:
            raise ValueError(f"train_seed={train_seed} needs both stable and unstable latents")
        model = pipeline.make_pipeline(
            preprocessing.StandardScaler(),
            linear.LogisticRegression(C=C, class_weight=class_weight, max_iter=2000),
        ).fit(x_train, y_train)
        for t in test_seeds:
            x_test, y_test = _xy(feats.double().cpu(), label, t, positive)
            rows.append(_score(metrics, name, train_seed, t, model.predict(x_test), y_test, len(y_train)))
    y_train = _xy(label.unsqueeze(-1), label, train_seed, positive)[1]
    majority = int(2 * y_train.sum() > len(y_train))  # the training seed's larger class
    for t in test_seeds:
        y_test = _xy(label.unsqueeze(-1), label, t, positive)[1]
        rows.append(_score(metrics, "majority", train_seed, t, 0 * y_test + majority, y_test, len(y_train)))
    return rows


def _score(metrics: Any, model: str, train: int, test: int, pred: Any, truth: Any, n_train: int) -> dict:
    nan = math.nan
    empty = len(truth) == 0
    return {
        "model": model,
        "train_seed": train,
        "test_seed": test,
        "f1": nan if empty else float(metrics.f1_score(truth, pred, zero_division=0.0)),
        "macro_f1": nan if empty else float(metrics.f1_score(truth, pred, average="macro", zero_division=0.0)),
        "accuracy": nan if empty else float((pred == truth).mean()),
        "n_train": n_train,
        "n_test": len(truth),
        "positive_share": nan if empty else float(truth.mean()),
    }
