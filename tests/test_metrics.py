import torch

from saelib.config import SAEConfig
from saelib.metrics import evaluate_sae, explained_variance, l0
from saelib.sae import SAE


def test_explained_variance_against_torch_var():
    x = torch.randn(500, 8) * 3 + 1
    x_hat = torch.stack([x + 0.5 * torch.randn_like(x), x.mean(0).expand_as(x), x])
    expected = torch.stack([1 - (x - xh).pow(2).sum() / (torch.var(x, dim=0, unbiased=False).sum() * 500)
                            for xh in x_hat])
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
