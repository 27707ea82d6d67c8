"""Next-token loss with an SAE spliced into the model (the "downstream" half of the functional asymmetry, claim 2).

For held-out contexts we run the language model several times: clean; with the activation at (layer, hook)
replaced by zeros (zero ablation); and once per seed with it replaced by that seed's reconstruction (optionally
built from a chosen subset of latents only). BOS (position 0) and padding keep their original activation in every
variant: the SAEs never saw them. Reported per seed: the spliced loss, SAELens's `ce_loss_score`
`(L_zero - L_spliced) / (L_zero - L_clean)`, and the KL divergence of the spliced from the clean next-token
distribution, all averaged over every predicted real token.

The splice needs only a callable `reconstruct(x (B, d_in)) -> (S, B, d_in)`; `sae_reconstructor` makes one from a
stacked SAE (anything with `encode(x) -> (S, B, d_sae)` and `decode(z) -> (S, B, d_in)`) and a latent mask.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from saelib.lm.activations import LanguageModel, valid_positions
from saelib.metrics import check_masks
from saelib.sae import SAE

Reconstruct = Callable[[torch.Tensor], torch.Tensor]
"""`x (B, d_in) -> x_hat (S, B, d_in)`."""


class SpliceMetrics(NamedTuple):
    """Losses with a spliced-in SAE, averaged over predicted tokens (nats per token)."""

    clean_loss: float
    """Cross-entropy of the unmodified model."""
    zero_ablation_loss: float
    """Cross-entropy with the activation set to zero at every real position."""
    spliced_loss: torch.Tensor
    """`(S,)` float64 cross-entropy with each seed's reconstruction spliced in."""
    ce_loss_score: torch.Tensor
    """`(S,)` `(zero - spliced) / (zero - clean)`, as SAELens defines it (1: lossless, 0: no better than zero)."""
    delta_loss: torch.Tensor
    """`(S,)` `spliced - clean`."""
    kl_div: torch.Tensor
    """`(S,)` mean KL(clean || spliced) of the next-token distributions."""
    n_tokens: int
    """Predicted tokens the means run over."""


def ce_loss_score(clean_loss, spliced_loss, zero_ablation_loss):
    """SAELens's CE loss score: `(L_zero - L_spliced) / (L_zero - L_clean)` (works on floats and tensors)."""
    return (zero_ablation_loss - spliced_loss) / (zero_ablation_loss - clean_loss)


def sae_reconstructor(sae, latent_mask: torch.Tensor | None = None, *, keep_error: bool = False) -> Reconstruct:
    """A `reconstruct` callable from a stacked SAE, optionally keeping only some latents.

    Args:
        sae: has `encode(x (B, d_in)) -> (S, B, d_sae)` and `decode(z (S, B, d_sae)) -> (S, B, d_in)`.
        latent_mask: `(S, d_sae)` bool, True for the latents kept; None keeps all.
        keep_error: add the full reconstruction's error `x - x_hat`, so that only the dropped latents'
            contribution is removed (the marginal effect of those latents) instead of also losing the error term.
    """

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        z = sae.encode(x)  # (S, B, d_sae)
        if latent_mask is None:
            return sae.decode(z)
        mask = latent_mask.to(device=z.device, dtype=z.dtype)[:, None, :]  # (S, 1, d_sae)
        x_hat = sae.decode(z * mask)  # (S, B, d_in)
        if keep_error:
            x_hat = x_hat + (x[None] - sae.decode(z))
        return x_hat

    return reconstruct


def _token_losses(logits: torch.Tensor, ids: torch.Tensor, target_mask: torch.Tensor):
    """Log-probs `(n, V)` and CE `(n,)` of the next token at every position whose target is a real token."""
    logp = F.log_softmax(logits[:, :-1][target_mask].float(), dim=-1)  # (n, V)
    targets = ids[:, 1:][target_mask]  # (n,)
    return logp, -logp.gather(1, targets[:, None])[:, 0]


@torch.inference_mode()
def spliced_ce(
    lm: LanguageModel,
    contexts: np.ndarray | torch.Tensor,
    reconstruct: Reconstruct,
    *,
    layer: int,
    hook: str = "resid_post",
    batch_size: int = 2,
    progress: bool = False,
) -> SpliceMetrics:
    """Clean, zero-ablated and per-seed spliced next-token loss on `contexts`, with KL to the clean logits.

    Args:
        lm: the model (`activations.load_model`).
        contexts: `(N, T)` token ids, BOS first, trailing padding allowed (e.g. `store.eval.contexts()`).
        reconstruct: `x (B, d_in) -> (S, B, d_in)` (see `sae_reconstructor`); the identity gives the clean loss.
        layer, hook: where the SAE was trained (`store.info["layer"]`, `store.info["hook"]`).
        batch_size: contexts per forward pass (the full vocabulary's logits are large: 2 x 128 x 262k floats).
        progress: show a tqdm bar.
    """
    lm.check_layer(layer, hook)
    ctx = torch.as_tensor(np.asarray(contexts), dtype=torch.long)
    valid = torch.from_numpy(valid_positions(ctx.numpy(), lm.pad_id))  # (N, T) real tokens after BOS
    sums: dict[str, torch.Tensor] = {}
    n_total = 0
    for b0 in tqdm(range(0, len(ctx), batch_size), desc="spliced CE", disable=not progress, leave=False):
        ids = ctx[b0 : b0 + batch_size].to(lm.device)
        mask = valid[b0 : b0 + batch_size].to(lm.device)  # (B, T) where activations are replaced
        target_mask = mask[:, 1:]  # (B, T-1): predictions of real tokens
        n = int(target_mask.sum())
        if n == 0:
            continue
        captured: dict[str, torch.Tensor] = {}

        def capture(act: torch.Tensor, captured=captured, mask=mask) -> torch.Tensor:
            captured["x"] = act[mask]  # (n_real, d)
            return act

        clean_logp, clean_ce = _token_losses(lm.logits(ids, layer, hook, edit=capture), ids, target_mask)
        x = captured["x"]
        x_hat = reconstruct(x.float()).to(x.dtype)  # (S, n_real, d)
        if x_hat.ndim != 3 or x_hat.shape[1:] != x.shape:
            raise ValueError(f"reconstruct must map x {tuple(x.shape)} to (S, *x.shape); got {tuple(x_hat.shape)}")

        def splice(values: torch.Tensor, mask=mask):
            def edit(act: torch.Tensor) -> torch.Tensor:
                act = act.clone()
                act[mask] = values
                return act

            return edit

        variants = {"zero": torch.zeros_like(x)} | {f"seed{s}": x_hat[s] for s in range(len(x_hat))}
        for key, values in variants.items():
            logp, ce = _token_losses(lm.logits(ids, layer, hook, edit=splice(values)), ids, target_mask)
            kl = (clean_logp.exp() * (clean_logp - logp)).sum(-1)  # (n,) KL(clean || spliced)
            sums[key] = sums.get(key, torch.zeros(2, dtype=torch.float64)) + torch.tensor(
                [ce.double().sum().item(), kl.double().sum().item()], dtype=torch.float64
            )
            del logp
        sums["clean"] = sums.get("clean", torch.zeros(2, dtype=torch.float64)) + clean_ce.double().sum().cpu()
        n_total += n
    if n_total == 0:
        raise ValueError("no token to predict: contexts hold only BOS and padding")
    n_seeds = len([k for k in sums if k.startswith("seed")])
    clean = float(sums["clean"][0] / n_total)
    zero = float(sums["zero"][0] / n_total)
    spliced = torch.tensor([float(sums[f"seed{s}"][0] / n_total) for s in range(n_seeds)], dtype=torch.float64)
    kl = torch.tensor([float(sums[f"seed{s}"][1] / n_total) for s in range(n_seeds)], dtype=torch.float64)
    return SpliceMetrics(
        clean_loss=clean,
        zero_ablation_loss=zero,
        spliced_loss=spliced,
        ce_loss_score=ce_loss_score(clean, spliced, zero),
        delta_loss=spliced - clean,
        kl_div=kl,
        n_tokens=n_total,
    )


ce_metrics = spliced_ce
"""Alias: `splice.ce_metrics(lm, contexts, reconstruct, layer=..., hook=...)`."""


class MaskedSplice(NamedTuple):
    """Next-token loss with each masked reconstruction spliced into the model (nats per predicted token)."""

    clean_loss: float
    """Cross-entropy of the unmodified model."""
    zero_ablation_loss: float
    """Cross-entropy with the activation set to zero."""
    spliced_loss: Tensor
    """`(M, S')` float64 cross-entropy with mask m of seed s spliced in."""
    ce_loss_score: Tensor
    """`(M, S')` `(zero - spliced) / (zero - clean)`."""
    delta_loss: Tensor
    """`(M, S')` `spliced - clean`: the CE increase."""
    kl_div: Tensor
    """`(M, S')` mean KL(clean || spliced)."""
    seeds: list[int]
    """The seed positions S' evaluated."""
    n_tokens: int
    """Predicted tokens."""


def masked_spliced_ce(
    lm,
    contexts,
    sae: SAE,
    masks: Tensor,
    *,
    layer: int,
    hook: str = "resid_post",
    seeds: list[int] | None = None,
    keep_error: bool = False,
    batch_size: int = 2,
    progress: bool = False,
) -> MaskedSplice:
    """`spliced_ce` of every (mask, seed) at once: the clean and zero-ablated passes run once.

    Each mask's reconstruction is `sae_reconstructor(sae, mask, keep_error=keep_error)`, so a mask of all
    ones gives exactly the full SAE's spliced loss, and with `b_dec = 0` a mask of all zeros gives exactly the
    zero-ablation loss.

    Args:
        lm: the language model (`activations.load_model`).
        contexts: `(N, T)` token ids, BOS first.
        sae: the stack.
        masks: `(M, S, d_sae)` bool, True for the latents kept.
        layer, hook: where the SAE reads the model.
        seeds: seed positions to evaluate (default all).
        keep_error: add each seed's reconstruction error back (only the dropped latents' contribution is removed).
        batch_size, progress: as in `spliced_ce`.
    """
    S, F = sae.n_seeds, sae.cfg.d_sae
    masks = check_masks(masks, S, F)
    seeds = list(range(S)) if seeds is None else list(seeds)
    sub = sae.select(seeds)
    masks = masks[:, seeds].to(sub.W_dec.device)  # (M, S', d_sae)
    M, Sp = len(masks), len(seeds)
    recons = [sae_reconstructor(sub, masks[m], keep_error=keep_error) for m in range(M)]

    def reconstruct(x: Tensor) -> Tensor:
        return torch.cat([r(x) for r in recons])  # (M * S', B, d_in), mask-major

    with torch.no_grad():
        out = spliced_ce(lm, contexts, reconstruct, layer=layer, hook=hook, batch_size=batch_size, progress=progress)
    shape = (M, Sp)
    return MaskedSplice(
        out.clean_loss,
        out.zero_ablation_loss,
        out.spliced_loss.view(shape),
        out.ce_loss_score.view(shape),
        out.delta_loss.view(shape),
        out.kl_div.view(shape),
        seeds,
        out.n_tokens,
    )


def latent_ablation_reconstructor(sae, latents, *, seed: int = 0) -> Reconstruct:
    """One latent's contribution removed at a time (its marginal effect), for `spliced_ce`.

    Row j of the output is `x - z_j(x) d_j` for latent `latents[j]` of seed `seed`: the SAE's error and every other
    latent are kept. It equals `sae_reconstructor(sae, mask, keep_error=True)` with only that latent dropped, without
    decoding twice; a latent that is silent on a token leaves it exactly unchanged.

    Args:
        sae: has `encode(x (B, d_in)) -> (S, B, d_sae)` and `W_dec (S, d_sae, d_in)`.
        latents: latent indices of seed `seed`, one output row each.
        seed: seed position in the stack.

    Returns:
        `x (B, d_in) -> (len(latents), B, d_in)`.
    """
    idx = torch.as_tensor(list(latents), dtype=torch.long)

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        i = idx.to(x.device)
        z = sae.encode(x)[seed][:, i]  # (B, L)
        d = sae.W_dec[seed, i].to(x.dtype)  # (L, d_in)
        return x[None] - z.T[:, :, None] * d[:, None, :]  # (L, B, d_in)

    return reconstruct
