import pytest
import torch

from saelib import metrics
from saelib.config import SAEConfig
from saelib.metrics import evaluate_sae, explained_variance, l0
from saelib.sae import SAE


def test_explained_variance_against_torch_var():
    x = torch.randn(500, 8) * 3 + 1
    x_hat = torch.stack([x + 0.5 * torch.randn_like(x), x.mean(0).expand_as(x), x])
    expected = torch.stack(
        [1 - (x - xh).pow(2).sum() / (torch.var(x, dim=0, unbiased=False).sum() * 500) for xh in x_hat]
    )
    torch.testing.assert_close(explained_variance(x, x_hat), expected)
    assert explained_variance(x, x_hat)[1].abs() < 1e-6  # predicting the mean explains nothing
    assert explained_variance(x, x_hat)[2] == 1


def test_streaming_eval_equals_one_batch():
    sae = SAE(SAEConfig(d_in=8, d_sae=20, k=3, n_seeds=2)).eval()
    with torch.no_grad():
        sae.b_dec.normal_()
    x = torch.randn(1000, 8)
    full = evaluate_sae(sae, [x])
    streamed = evaluate_sae(sae, x.split(97))
    torch.testing.assert_close(full.explained_variance, streamed.explained_variance)
    out = sae(x)
    torch.testing.assert_close(full.explained_variance, explained_variance(x, out.x_hat))
    torch.testing.assert_close(full.l0, l0(out.latents))
    torch.testing.assert_close(full.frequency, (out.latents != 0).float().mean(1))
    torch.testing.assert_close(full.dead_fraction, (full.frequency == 0).float().mean(-1))
    assert evaluate_sae(sae, x.split(100), max_tokens=250).n_tokens == 250


# --- Masked explained variance and per-latent statistics (chapter 2 builds on them) -----------------------------------


def _sae(variant="topk", S=2, d_in=8, d_sae=24, k=3, seed=0):
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, variant=variant, k=k, n_seeds=S, seed=seed)).eval()
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.3)
    return sae


@pytest.mark.parametrize("variant", ["topk", "relu"])
def test_masked_explained_variance_full_none_and_dense_reference(variant):
    sae = _sae(variant)
    x = torch.randn(600, 8) * 2 + 0.5
    S, F = sae.n_seeds, sae.cfg.d_sae
    subset = torch.rand(S, F) < 0.4
    masks = torch.stack([torch.ones(S, F, dtype=torch.bool), torch.zeros(S, F, dtype=torch.bool), subset])
    out = metrics.masked_explained_variance(sae, x.split(77), masks)
    assert out.masked.shape == (3, S) and out.n_tokens == 600
    assert torch.equal(out.masked[0], out.full)  # keeping every latent is the full SAE, bit for bit
    torch.testing.assert_close(out.full, evaluate_sae(sae, x).explained_variance, atol=1e-5, rtol=0)
    with torch.no_grad():  # independent references: dense decoding and torch.var
        z = sae.encode(x)
        ref_subset = explained_variance(x, sae.decode(z * subset[:, None]))
        ref_none = explained_variance(x, sae.b_dec[:, None].expand(S, 600, 8))
    torch.testing.assert_close(out.masked[2], ref_subset, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.masked[1], ref_none, atol=1e-5, rtol=0)  # no latent: b_dec alone


def test_masked_explained_variance_rejects_bad_masks():
    sae = _sae()
    with pytest.raises(ValueError, match="masks must be bool"):
        metrics.masked_explained_variance(sae, torch.randn(10, 8), torch.ones(2, 24))


def test_feature_activation_stats_against_direct_computation():
    sae = _sae("relu")
    x = torch.randn(300, 8)
    st = metrics.feature_activation_stats(sae, x.split(64), max_tokens=250)
    with torch.no_grad():
        z = sae.encode(x[:250])
    torch.testing.assert_close(st.frequency, (z > 0).float().mean(1))
    torch.testing.assert_close(st.max_activation, z.amax(1))
    torch.testing.assert_close(st.mass, z.double().sum(1))
    fired = (z > 0).sum(1)
    torch.testing.assert_close(st.mean_activation[fired > 0], (z.sum(1) / fired.clamp_min(1))[fired > 0])
    assert torch.isnan(st.mean_activation[fired == 0]).all()
    torch.testing.assert_close(st.mass_share.sum(-1), torch.ones(2))
    assert st.n_tokens == 250


def test_stream_chunks_keeps_order_caps_rows_and_stops_an_endless_stream():
    x = torch.arange(10.0).view(10, 1)
    chunks = list(metrics.stream_chunks([x[:7], x[7:7], x[7:]], chunk=3))
    assert [len(c) for c in chunks] == [3, 3, 1, 3]  # the empty batch is skipped, not the end
    assert torch.equal(torch.cat(chunks), x)
    assert [len(c) for c in metrics.stream_chunks(x, max_tokens=5, chunk=4)] == [4, 1]

    pulled = []

    def endless():
        while True:
            pulled.append(1)
            yield x

    assert sum(len(c) for c in metrics.stream_chunks(endless(), max_tokens=25)) == 25
    assert len(pulled) == 3  # stops as soon as the cap is reached, without draining the stream


@pytest.mark.parametrize("fn", [evaluate_sae, metrics.feature_activation_stats])
def test_streamed_metrics_reject_an_empty_stream(fn):
    with pytest.raises(ValueError, match="no activations"):
        fn(_sae(), [torch.zeros(0, 8)])
