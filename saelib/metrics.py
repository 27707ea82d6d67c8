"""Metrics of SAEs on activations: explained variance about the mean, L0, feature frequency, dead fraction.

All functions take a stack of S SAEs and return one value per seed. Language-model metrics with an SAE spliced
into the model (CE loss, KL) live in `saelib.splice`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from saelib.sae import SAE


def _per_seed(x: Tensor, S: int) -> Tensor:
    return x.unsqueeze(0).expand(S, -1, -1) if x.ndim == 2 else x


def explained_variance(x: Tensor, x_hat: Tensor) -> Tensor:
    """`1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2` per seed `(S,)`.

    Args:
        x: activations `(B, d_in)` (shared by the seeds) or `(S, B, d_in)`.
        x_hat: reconstructions `(S, B, d_in)`.
    """
    x = _per_seed(x, x_hat.shape[0]).to(torch.float64)
    err = (x - x_hat.to(torch.float64)).pow(2).sum(dim=(1, 2))
    total = (x - x.mean(dim=1, keepdim=True)).pow(2).sum(dim=(1, 2))
    return (1 - err / total).to(torch.float32)


def l0(latents: Tensor) -> Tensor:
    """Mean number of active latents per token `(S,)` from latents `(S, B, d_sae)`."""
    return (latents != 0).sum(-1).to(torch.float32).mean(-1)


class SAEEval(NamedTuple):
    """Streaming evaluation of a stack of SAEs on held-out activations."""

    explained_variance: Tensor
    """Explained variance about the mean `(S,)`."""
    fvu: Tensor
    """Fraction of variance unexplained `(S,)` = 1 - explained variance."""
    l0: Tensor
    """Mean active latents per token `(S,)`."""
    frequency: Tensor
    """Fraction of tokens on which each latent fires `(S, d_sae)`."""
    mean_activation: Tensor
    """Mean activation of each latent over the tokens where it fires `(S, d_sae)` (0 for dead latents)."""
    dead_fraction: Tensor
    """Fraction of latents that never fire on the evaluation tokens `(S,)`."""
    n_tokens: int
    """Tokens evaluated."""


@torch.no_grad()
def evaluate_sae(sae: SAE, batches, *, max_tokens: int | None = None) -> SAEEval:
    """Explained variance, L0, frequencies and dead fraction of every seed, streamed over `batches`.

    Args:
        sae: the stack.
        batches: an iterable of activation batches `(B, d_in)`, or one tensor `(N, d_in)`.
        max_tokens: stop after this many tokens.
    """
    if isinstance(batches, Tensor):
        batches = batches.split(4096)
    was_training = sae.training
    sae.eval()
    dev = sae.W_dec.device
    S, F = sae.n_seeds, sae.cfg.d_sae
    sse = torch.zeros(S, dtype=torch.float64, device=dev)
    sum_x = torch.zeros(sae.cfg.d_in, dtype=torch.float64, device=dev)
    sum_sq = torch.zeros((), dtype=torch.float64, device=dev)
    fires = torch.zeros(S, F, dtype=torch.float64, device=dev)
    mass = torch.zeros(S, F, dtype=torch.float64, device=dev)
    n = 0
    for x in batches:
        if max_tokens is not None and n >= max_tokens:
            break
        if max_tokens is not None:
            x = x[: max_tokens - n]
        x = x.to(dev, torch.float32)
        out = sae(x)
        sse += (out.x_hat - x).pow(2).sum(dim=(1, 2)).double()
        x64 = x.double()
        sum_x += x64.sum(0)
        sum_sq += x64.pow(2).sum()
        fires += (out.latents != 0).sum(1).double()
        mass += out.latents.sum(1).double()
        n += x.shape[0]
    sae.train(was_training)
    if n == 0:
        raise ValueError("evaluate_sae got no activations")
    total = sum_sq - sum_x.pow(2).sum() / n
    ev = (1 - sse / total).float()
    freq = (fires / n).float()
    mean_act = torch.where(fires > 0, mass / fires.clamp_min(1), torch.zeros_like(mass)).float()
    return SAEEval(ev, 1 - ev, (fires.sum(-1) / n).float(), freq, mean_act, (fires == 0).float().mean(-1), n)
