"""CE/KL with a spliced-in SAE, against direct computations with the unmodified model; all offline."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_sae

from saelib.lm import activations as A
from saelib.lm import corpus, splice


@pytest.fixture(scope="module")
def tiny(tiny_lm):
    return tiny_lm  # conftest.py's tiny GPT-2


@pytest.fixture(scope="module")
def contexts(tiny):
    docs = corpus.load_documents("fixture")
    ctx = corpus.tokenize_contexts(docs, tiny.tokenizer, context_len=24, min_tail=4)[:6].copy()
    ctx[-1, 15:] = tiny.pad_id  # one padded row
    return ctx


def direct_loss(lm, ctx):
    ids = torch.as_tensor(ctx, dtype=torch.long)
    labels = ids.clone()
    labels[~torch.from_numpy(A.valid_positions(ctx, lm.pad_id))] = -100
    with torch.no_grad():
        return lm.model(input_ids=ids, labels=labels).loss.item()


def identity(x):
    return x[None]


def test_identity_splice_gives_the_clean_loss_exactly(tiny, contexts):
    m = splice.spliced_ce(tiny, contexts, identity, layer=1, batch_size=4)
    assert m.spliced_loss[0].item() == m.clean_loss
    assert m.kl_div[0].item() == 0.0 and m.ce_loss_score[0].item() == 1.0
    assert m.clean_loss == pytest.approx(direct_loss(tiny, contexts), rel=1e-6)
    assert m.n_tokens == int(A.valid_positions(contexts, tiny.pad_id)[:, 1:].sum())


def test_zero_reconstruction_scores_zero_and_seeds_are_separate(tiny, contexts):
    m = splice.spliced_ce(
        tiny, contexts, lambda x: torch.stack([torch.zeros_like(x), x, 0.5 * x]), layer=0, hook="mlp_out", batch_size=3
    )
    assert m.spliced_loss.shape == (3,)
    assert m.spliced_loss[0].item() == pytest.approx(m.zero_ablation_loss, abs=1e-6)
    assert m.ce_loss_score[0].item() == pytest.approx(0.0, abs=1e-6)
    assert m.ce_loss_score[1].item() == 1.0 and m.kl_div[2] > 0
    assert m.delta_loss[1].item() == 0.0


def test_splice_at_the_last_block_matches_a_direct_computation(tiny, contexts):
    """Independent reference: replace the last block's output by hand and apply the final norm and LM head."""
    layer = tiny.n_layers - 1
    noise = lambda x: torch.stack([x + 0.3 * torch.sin(x * 7.0)])  # noqa: E731 - deterministic perturbation
    m = splice.spliced_ce(tiny, contexts, noise, layer=layer, batch_size=2)
    ids = torch.as_tensor(contexts, dtype=torch.long)
    valid = torch.from_numpy(A.valid_positions(contexts, tiny.pad_id))
    with torch.no_grad():
        h = tiny.activations(ids, layer)  # (N, T, d) before the final norm
        h_mod = h.clone()
        h_mod[valid] = noise(h[valid])[0]
        logits = tiny.model.lm_head(tiny.model.transformer.ln_f(h_mod))
        clean = tiny.model(ids).logits
    tmask = valid[:, 1:]
    logp = F.log_softmax(logits[:, :-1][tmask], -1)
    clean_logp = F.log_softmax(clean[:, :-1][tmask], -1)
    targets = ids[:, 1:][tmask]
    ce = -logp.gather(1, targets[:, None]).mean().item()
    kl = (clean_logp.exp() * (clean_logp - logp)).sum(-1).mean().item()
    assert m.spliced_loss[0].item() == pytest.approx(ce, rel=1e-5)
    assert m.kl_div[0].item() == pytest.approx(kl, rel=1e-4, abs=1e-7)


def test_ce_loss_score_definition():
    assert splice.ce_loss_score(2.0, 3.0, 6.0) == 0.75
    torch.testing.assert_close(splice.ce_loss_score(2.0, torch.tensor([2.0, 6.0]), 6.0), torch.tensor([1.0, 0.0]))


def test_sae_reconstructor_with_latent_masks():
    torch.manual_seed(0)
    S, d, k = 2, 8, 12
    W_enc, W_dec, b_dec = torch.randn(S, d, k), torch.randn(S, k, d), torch.randn(S, d)
    sae = SimpleNamespace(
        encode=lambda x: torch.relu(torch.einsum("bd,sdk->sbk", x, W_enc)),
        decode=lambda z: torch.einsum("sbk,skd->sbd", z, W_dec) + b_dec[:, None],
    )
    x = torch.randn(5, d)
    full = splice.sae_reconstructor(sae)(x)
    assert full.shape == (S, 5, d)
    torch.testing.assert_close(splice.sae_reconstructor(sae, torch.ones(S, k, dtype=torch.bool))(x), full)
    none = splice.sae_reconstructor(sae, torch.zeros(S, k, dtype=torch.bool))(x)
    torch.testing.assert_close(none, b_dec[:, None].expand(S, 5, d))
    kept = splice.sae_reconstructor(sae, torch.ones(S, k, dtype=torch.bool), keep_error=True)(x)
    torch.testing.assert_close(kept, x[None].expand(S, 5, d))


def test_bad_reconstruction_shape_and_layer(tiny, contexts):
    with pytest.raises(ValueError, match="reconstruct must map"):
        splice.spliced_ce(tiny, contexts, lambda x: x, layer=1)
    with pytest.raises(ValueError, match="out of range"):
        splice.spliced_ce(tiny, contexts, identity, layer=5)


@pytest.mark.slow
def test_packaged_gemma_identity_splice_equals_direct_loss(gemma):
    lm = gemma
    docs = corpus.load_documents("fixture")
    ctx = corpus.tokenize_contexts(docs, lm.tokenizer, context_len=24)[:2]
    m = splice.spliced_ce(lm, ctx, lambda x: torch.stack([x, torch.zeros_like(x)]), layer=6)
    assert m.spliced_loss[0].item() == m.clean_loss
    assert m.clean_loss == pytest.approx(direct_loss(lm, ctx), rel=1e-5)
    assert m.spliced_loss[1].item() == pytest.approx(m.zero_ablation_loss, rel=1e-6)
    assert 1.0 < m.clean_loss < 6.0 and m.zero_ablation_loss > m.clean_loss
    assert np.isclose(m.ce_loss_score[0].item(), 1.0)


# --- With a tiny language model (offline) ---------------------------------------------------------------------------


# `tiny_lm` and `tiny_contexts` are fixtures of conftest.py.


def test_masked_spliced_ce_keeps_all_exactly_and_none_is_zero_ablation(tiny_lm, tiny_contexts):
    sae = tiny_sae(zero_bias=True)
    S, F = 2, 48
    subset = torch.rand(S, F) < 0.5
    masks = torch.stack([torch.ones(S, F, dtype=torch.bool), torch.zeros(S, F, dtype=torch.bool), subset])
    out = splice.masked_spliced_ce(tiny_lm, tiny_contexts, sae, masks, layer=1, batch_size=5)
    full = splice.spliced_ce(tiny_lm, tiny_contexts, splice.sae_reconstructor(sae), layer=1, batch_size=5)
    assert out.spliced_loss.shape == (3, 2) and out.seeds == [0, 1]
    assert torch.equal(out.spliced_loss[0], full.spliced_loss)  # all latents kept: the full SAE's CE, exactly
    assert torch.equal(out.kl_div[0], full.kl_div) and out.clean_loss == full.clean_loss
    assert (out.spliced_loss[1] == out.zero_ablation_loss).all()  # none kept (b_dec = 0): zero ablation
    assert (out.ce_loss_score[1] == 0).all()
    part = splice.spliced_ce(tiny_lm, tiny_contexts, splice.sae_reconstructor(sae, subset), layer=1, batch_size=5)
    torch.testing.assert_close(out.spliced_loss[2], part.spliced_loss)
    one = splice.masked_spliced_ce(tiny_lm, tiny_contexts, sae, masks[2:], layer=1, seeds=[1], batch_size=5)
    torch.testing.assert_close(one.spliced_loss[0, 0], out.spliced_loss[2, 1])


def test_masked_spliced_ce_none_kept_is_the_bias_alone(tiny_lm, tiny_contexts):
    sae = tiny_sae()
    masks = torch.zeros(1, 2, 48, dtype=torch.bool)
    out = splice.masked_spliced_ce(tiny_lm, tiny_contexts, sae, masks, layer=1)
    ref = splice.spliced_ce(tiny_lm, tiny_contexts, lambda x: sae.b_dec[:, None].expand(2, len(x), 32), layer=1)
    torch.testing.assert_close(out.spliced_loss[0], ref.spliced_loss)


def test_latent_ablation_reconstructor_removes_one_latent_at_a_time():
    """Known answer: the masked reconstruction with the error kept, each latent dropped alone; silent latents change
    nothing."""
    sae = tiny_sae()
    torch.manual_seed(3)
    x = torch.randn(40, 32) * 3
    with torch.no_grad():
        z = sae.encode(x)  # (2, 40, 48)
        fires = (z[1] > 0).any(0)
        on, off = int(fires.nonzero()[0]), int((~fires).nonzero()[0])  # this draw leaves 2 latents silent
        latents = [on, (on + 1) % 48, off]
        out = splice.latent_ablation_reconstructor(sae, latents, seed=1)(x)
        assert out.shape == (len(latents), 40, 32)
        for j, f in enumerate(latents):
            keep = torch.ones(2, 48, dtype=torch.bool)
            keep[1, f] = False
            ref = splice.sae_reconstructor(sae, keep, keep_error=True)(x)[1]
            torch.testing.assert_close(out[j], ref, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(x - out[j], z[1, :, f, None] * sae.W_dec[1, f])
        assert not torch.equal(out[0], x)  # a firing latent changes the activation
        assert torch.equal(out[-1], x)  # a silent latent leaves it exactly unchanged
