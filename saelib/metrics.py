"""Metrics of SAEs on activations: explained variance about the mean, L0, feature frequency, dead fraction and
per-latent activation statistics; explained variance and next-token loss with only some latents kept (masks).

All functions take a stack of S SAEs and return values per seed. Language-model metrics with an SAE spliced into the
model (CE loss, KL) live in `saelib.lm.splice`; `masked_spliced_ce` runs them for many masks of latents at once, as
`masked_explained_variance` does for reconstruction. Chapter 2's cuts, controls and ablations
(`saelib.chapters.asymmetry`) build on them. Every streamed metric reads its tokens through `stream_chunks`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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


def stream_chunks(
    batches: Tensor | Iterable[Tensor], *, max_tokens: int | None = None, chunk: int = 2048
) -> Iterator[Tensor]:
    """The rows of `batches` in order, in chunks of at most `chunk` rows, the first `max_tokens` rows at most.

    The one streaming loop of the metrics below (and of `saelib.lm.interp.top_activations`): memory stays
    O(chunk) whatever the number of tokens, and an endless stream (`train.batch_stream`) stops at `max_tokens`.

    Args:
        batches: activations `(N, d_in)`, or an iterable of batches `(B, d_in)`.
        max_tokens: stop after this many rows.
        chunk: most rows per chunk.
    """
    if isinstance(batches, Tensor):
        batches = [batches]
    n = 0
    for batch in batches:
        for x in batch.split(chunk):
            if max_tokens is not None:
                x = x[: max_tokens - n]
            if len(x):
                yield x
                n += len(x)
            if max_tokens is not None and n >= max_tokens:
                return  # before pulling another batch from the stream


class _StreamSums:
    """Float64 running sums over a stream of activations `x (B, d_in)` and, optionally, their latents
    `z (S, B, d_sae)`: the token count, `sum x` and `sum ||x||^2` (the total variance about the mean), and per latent
    the tokens it fires on and its summed activation (its mass)."""

    def __init__(self, sae: SAE) -> None:
        dev, S, F = sae.W_dec.device, sae.n_seeds, sae.cfg.d_sae
        self.n = 0
        self.sum_x = torch.zeros(sae.cfg.d_in, dtype=torch.float64, device=dev)
        self.sum_sq = torch.zeros((), dtype=torch.float64, device=dev)
        self.fires = torch.zeros(S, F, dtype=torch.float64, device=dev)
        self.mass = torch.zeros(S, F, dtype=torch.float64, device=dev)

    def add(self, x: Tensor, z: Tensor | None = None) -> None:
        x64 = x.double()
        self.sum_x += x64.sum(0)
        self.sum_sq += x64.pow(2).sum()
        self.n += len(x)
        if z is not None:
            self.fires += (z != 0).sum(1).double()
            self.mass += z.sum(1).double()

    def explained_variance(self, sse: Tensor) -> Tensor:
        """`1 - sse / sum ||x - mean(x)||^2`, float32, for summed squared errors `sse` of any shape."""
        if self.n == 0:
            raise ValueError("batches hold no activations")
        return (1 - sse / (self.sum_sq - self.sum_x.pow(2).sum() / self.n)).float()


@torch.no_grad()
def evaluate_sae(sae: SAE, batches: Tensor | Iterable[Tensor], *, max_tokens: int | None = None) -> SAEEval:
    """Explained variance, L0, frequencies and dead fraction of every seed, streamed over `batches`.

    Args:
        sae: the stack.
        batches: an iterable of activation batches `(B, d_in)`, or one tensor `(N, d_in)`.
        max_tokens: stop after this many tokens.
    """
    was_training = sae.training
    sae.eval()
    dev = sae.W_dec.device
    sums = _StreamSums(sae)
    sse = torch.zeros(sae.n_seeds, dtype=torch.float64, device=dev)
    for x in stream_chunks(batches, max_tokens=max_tokens, chunk=4096):
        x = x.to(dev, torch.float32)
        out = sae(x)
        sse += (out.x_hat - x).pow(2).sum(dim=(1, 2)).double()
        sums.add(x, out.latents)
    sae.train(was_training)
    ev = sums.explained_variance(sse)
    fires, n = sums.fires, sums.n
    freq = (fires / n).float()
    mean_act = torch.where(fires > 0, sums.mass / fires.clamp_min(1), torch.zeros_like(fires)).float()
    return SAEEval(ev, 1 - ev, (fires.sum(-1) / n).float(), freq, mean_act, (fires == 0).float().mean(-1), n)


def sparse_latents(sae: SAE, x: Tensor) -> tuple[Tensor, Tensor]:
    """Active latents of x `(B, d_in)` as `(values, idx)`, each `(S, B, k_max)` (k_max: most active in a row;
    padding entries have value 0), so that `sae.decode_sparse(values, idx)` is the reconstruction."""
    z = sae.encode(x)  # (S, B, d_sae)
    k_max = max(int((z != 0).sum(-1).max()), 1)
    return z.topk(k_max, dim=-1, sorted=False)


class FeatureActivationStats(NamedTuple):
    """Activation statistics of every latent of every seed, over a set of tokens."""

    frequency: Tensor
    """`(S, d_sae)` share of tokens on which the latent fires."""
    mean_activation: Tensor
    """`(S, d_sae)` mean activation over the tokens where it fires (NaN if it never fires)."""
    max_activation: Tensor
    """`(S, d_sae)` largest activation (0 if it never fires)."""
    mass: Tensor
    """`(S, d_sae)` float64 total activation summed over the tokens (the latent's activation mass)."""
    mass_share: Tensor
    """`(S, d_sae)` the latent's share of its seed's total activation mass."""
    n_tokens: int
    """Tokens seen."""


@torch.no_grad()
def feature_activation_stats(
    sae: SAE, batches: Tensor | Iterable[Tensor], *, max_tokens: int | None = None
) -> FeatureActivationStats:
    """Firing frequency, mean and max activation and activation mass of every latent (claim 2's statistics).

    Args:
        sae: the stack (S seeds).
        batches: activations `(N, d_in)`, or an iterable of batches `(B, d_in)`.
        max_tokens: stop after this many tokens.
    """
    dev = sae.W_dec.device
    sums = _StreamSums(sae)
    peak = torch.zeros(sae.n_seeds, sae.cfg.d_sae, device=dev)
    for x in stream_chunks(batches, max_tokens=max_tokens):
        x = x.to(dev, torch.float32)
        z = sae.encode(x)  # (S, B, d_sae)
        sums.add(x, z)
        peak = torch.maximum(peak, z.amax(1))
    if sums.n == 0:
        raise ValueError("batches hold no activations")
    fires, mass = sums.fires, sums.mass
    mean = torch.where(fires > 0, mass / fires.clamp_min(1), torch.full_like(mass, torch.nan)).float()
    share = mass / mass.sum(-1, keepdim=True).clamp_min(1e-30)
    return FeatureActivationStats((fires / sums.n).float(), mean, peak, mass, share.float(), sums.n)


class MaskedEV(NamedTuple):
    """Explained variance of each seed with only some latents kept."""

    full: Tensor
    """`(S,)` explained variance of the whole SAE."""
    masked: Tensor
    """`(M, S)` explained variance keeping the latents of mask m (the others set to zero; `b_dec` kept)."""
    n_tokens: int
    """Tokens evaluated."""


def check_masks(masks: Tensor, S: int, F: int) -> Tensor:
    """`masks` as `(M, S, d_sae)` bool (one mask `(S, d_sae)` gains the leading axis); a one-line error otherwise."""
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[1:] != (S, F) or masks.dtype != torch.bool:
        raise ValueError(f"masks must be bool (M, S={S}, d_sae={F}), got {masks.dtype} {tuple(masks.shape)}")
    return masks


@torch.no_grad()
def masked_explained_variance(
    sae: SAE, batches: Tensor | Iterable[Tensor], masks: Tensor, *, max_tokens: int | None = None
) -> MaskedEV:
    """Explained variance (about the mean) when only the latents in each mask are kept (claim 2, reconstruction).

    Keeping a set of latents means decoding `z * mask`: the dropped latents are set to zero after encoding, the
    kept ones keep their values, `b_dec` stays. Decoding is sparse (only active latents), so many masks cost little.
    A mask of all ones gives exactly `full`; a mask of all zeros gives the explained variance of `b_dec` alone.

    Args:
        sae: the stack (S seeds).
        batches: activations `(N, d_in)` or an iterable of batches `(B, d_in)`.
        masks: `(M, S, d_sae)` bool, True for the latents kept (or one mask `(S, d_sae)`).
        max_tokens: stop after this many tokens.
    """
    dev = sae.W_dec.device
    S, F = sae.n_seeds, sae.cfg.d_sae
    masks = check_masks(masks, S, F).to(dev)
    flat = masks.reshape(len(masks), S * F).float()  # (M, S * d_sae)
    offsets = torch.arange(S, device=dev).view(S, 1, 1) * F
    sse = torch.zeros(len(masks) + 1, S, dtype=torch.float64, device=dev)
    sums = _StreamSums(sae)
    for x in stream_chunks(batches, max_tokens=max_tokens):
        x = x.to(dev, torch.float32)
        values, idx = sparse_latents(sae, x)  # (S, B, k)
        keep = flat[:, idx + offsets]  # (M, S, B, k): 1 where the active latent is kept
        sse[0] += (sae.decode_sparse(values, idx) - x).pow(2).sum(dim=(1, 2)).double()
        for m in range(len(masks)):
            sse[m + 1] += (sae.decode_sparse(values * keep[m], idx) - x).pow(2).sum(dim=(1, 2)).double()
        sums.add(x)
    ev = sums.explained_variance(sse)
    return MaskedEV(ev[0], ev[1:], sums.n)
