"""A synthetic activation model with isolated features and low-rank feature groups (book/methods.md, "The synthetic
model").

`generate` draws activations whose ground truth is known: isolated features (single directions, positive sparse
magnitudes) and groups whose code fills a low-rank subspace. `isolated_recovery` and `latent_assignment` relate a
trained stack's decoder rows to that truth; chapter 4 (`saelib.chapters.synthetic`) scores the stack against it per
latent and per subspace, and sweeps the generator's knobs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from saelib import subspace
from saelib.config import SyntheticConfig, derive_seed
from saelib.sae import SAE

GENERATOR_VERSION = 2
"""Bumped whenever `generate` would draw other samples from the same config (part of cached SAEs' keys)."""

ISOLATED, UNASSIGNED = -1, -2
"""Codes of `latent_assignment` besides group indices 0..G-1."""


class GroundTruth(NamedTuple):
    """The planted structure of a synthetic dataset."""

    isolated: Tensor
    """Isolated feature directions `(n_isolated, d_in)`, unit norm."""
    group_bases: Tensor
    """Orthonormal bases of the groups' subspaces `(n_groups, group_rank, d_in)`, mutually orthogonal when they fit."""
    group_features: Tensor | None
    """`overcomplete` mode: the groups' feature directions `(n_groups, features_per_group, d_in)`; else None."""


class SyntheticData(NamedTuple):
    """Samples and their ground truth."""

    x: Tensor
    """Activations `(n_samples, d_in)`."""
    truth: GroundTruth


def make_ground_truth(cfg: SyntheticConfig, generator: torch.Generator) -> GroundTruth:
    """Random isolated directions and group subspaces (orthogonal to each other when `n_groups * rank <= d_in`)."""
    d, G, r = cfg.d_in, cfg.n_groups, cfg.group_rank
    iso = torch.randn(cfg.n_isolated, d, generator=generator)
    iso = iso / iso.norm(dim=-1, keepdim=True)
    if G * r <= d:
        bases = subspace.random_subspace(d, G * r, generator).view(G, r, d)
    else:
        bases = torch.stack([subspace.random_subspace(d, r, generator) for _ in range(G)])
    feats = None
    if cfg.group_mode == "overcomplete" and G:
        coef = torch.randn(G, cfg.features_per_group, r, generator=generator)
        coef = coef / coef.norm(dim=-1, keepdim=True)
        feats = torch.einsum("gmr,grd->gmd", coef, bases)
    return GroundTruth(iso, bases, feats)


def generate(cfg: SyntheticConfig) -> SyntheticData:
    """Draw `cfg.n_samples` activations `(N, d_in)` and their ground truth, deterministically from `cfg.seed`."""
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "synthetic"))
    truth = make_ground_truth(cfg, gen)
    N, d = cfg.n_samples, cfg.d_in
    x = torch.zeros(N, d)
    if cfg.n_isolated:
        on = torch.rand(N, cfg.n_isolated, generator=gen) < cfg.p_isolated
        mag = 0.5 + torch.rand(N, cfg.n_isolated, generator=gen)  # magnitudes in [0.5, 1.5)
        x += (on * mag) @ truth.isolated
    if cfg.n_groups:
        active = torch.rand(N, cfg.n_groups, generator=gen) < cfg.p_group  # (N, G)
        if cfg.group_mode == "isotropic":
            # rotation-symmetric code inside each subspace, expected squared norm 1
            code = torch.randn(N, cfg.n_groups, cfg.group_rank, generator=gen) / cfg.group_rank**0.5
            x += torch.einsum("ng,ngr,grd->nd", active.float(), code, truth.group_bases)
        else:
            m = cfg.features_per_group
            on = torch.rand(N, cfg.n_groups, m, generator=gen) < cfg.p_group_feature
            mag = 0.5 + torch.rand(N, cfg.n_groups, m, generator=gen)
            x += torch.einsum("ng,ngm,gmd->nd", active.float(), on * mag, truth.group_features)
    x += cfg.noise_std * torch.randn(N, d, generator=gen)
    return SyntheticData(x, truth)


def isolated_recovery(sae: SAE, truth: GroundTruth) -> Tensor:
    """`(S, n_isolated)`: max cosine of each true isolated feature to each seed's decoder rows."""
    dec = sae.decoder_directions().cpu()
    return torch.einsum("nd,sfd->snf", truth.isolated, dec).amax(-1)


def latent_assignment(sae: SAE, truth: GroundTruth, *, isolated_cos: float = 0.9, group_share: float = 0.8) -> Tensor:
    """`(S, d_sae)` int: `ISOLATED` when a latent's decoder row has cosine >= `isolated_cos` with an isolated
    feature, else the index of the group whose subspace holds >= `group_share` of its squared norm, else
    `UNASSIGNED`."""
    dec = sae.decoder_directions().cpu()  # (S, F, d)
    out = torch.full(dec.shape[:2], UNASSIGNED, dtype=torch.long)
    if truth.group_bases.shape[0]:
        share = torch.einsum("sfd,grd->sfgr", dec, truth.group_bases).pow(2).sum(-1)  # (S, F, G)
        best = share.max(-1)
        out = torch.where(best.values >= group_share, best.indices, out)
    if truth.isolated.shape[0]:
        iso = torch.einsum("sfd,nd->sfn", dec, truth.isolated).amax(-1)
        out = torch.where(iso >= isolated_cos, torch.full_like(out, ISOLATED), out)
    return out
