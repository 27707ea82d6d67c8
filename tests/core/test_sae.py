import pytest
import torch
from helpers import assert_saelens_agrees, perturbed_sae

from saelib.config import VARIANTS, SAEConfig
from saelib.sae import SAE, load_sae, save_sae


def _cfg(variant="topk", **kw):
    return SAEConfig(d_in=16, d_sae=48, k=4, variant=variant, n_seeds=3, **kw)


def _perturbed(variant):
    return perturbed_sae(_cfg(variant))


def test_each_seed_has_its_own_generator():
    a = SAE(SAEConfig(d_in=16, d_sae=48, k=4, n_seeds=3, seed=0))
    b = SAE(SAEConfig(d_in=16, d_sae=48, k=4, n_seeds=1, seed=2))
    assert torch.equal(a.W_dec[2], b.W_dec[0])
    assert not torch.allclose(a.W_dec[0], a.W_dec[1])
    torch.testing.assert_close(a.W_dec.norm(dim=-1), torch.ones(3, 48))


def test_topk_keeps_exactly_k_and_matches_manual():
    sae = _perturbed("topk")
    x = torch.randn(10, 16)
    out = sae(x)
    assert out.latents.shape == (3, 10, 48) and out.x_hat.shape == (3, 10, 16)
    assert ((out.latents != 0).sum(-1) <= 4).all()
    pre = (x - sae.b_dec[1]) @ sae.W_enc[1] + sae.b_enc[1]
    vals, idx = pre.topk(4, dim=-1)
    manual = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
    torch.testing.assert_close(out.latents[1], manual)
    torch.testing.assert_close(out.x_hat[1], manual @ sae.W_dec[1] + sae.b_dec[1])


def test_batchtopk_keeps_b_times_k_in_training():
    sae = SAE(_cfg("batchtopk")).train()
    z = sae.encode(torch.randn(32, 16))
    assert ((z != 0).sum(dim=(1, 2)) == 32 * 4).all()
    assert torch.isfinite(sae.threshold).all() and (sae.threshold > 0).all()


def test_per_seed_batches_and_shape_errors():
    sae = SAE(_cfg())
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(sae.encode(x)[2], sae.encode(x[2])[2])
    with pytest.raises(ValueError, match="d_in=16"):
        sae.encode(torch.randn(5, 15))
    with pytest.raises(ValueError, match="NaN or inf"):
        sae.encode(torch.tensor([[float("nan")] * 16]))
    with pytest.raises(ValueError, match="S=3"):
        sae.encode(torch.randn(2, 5, 16))


def test_jumprelu_threshold_gets_gradient():
    sae = SAE(_cfg("jumprelu", jumprelu_bandwidth=1.0)).train()
    out = sae(torch.randn(64, 16))
    (out.x_hat.pow(2).sum() + sae.l0_penalty_terms(out.pre).sum()).backward()
    assert sae.log_threshold.grad is not None and sae.log_threshold.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_load_roundtrip(tmp_path, variant):
    sae = _perturbed(variant)
    save_sae(sae, tmp_path / "sae")
    back = load_sae(tmp_path / "sae")
    x = torch.randn(20, 16)
    torch.testing.assert_close(back(x).x_hat, sae(x).x_hat)


@pytest.mark.parametrize("variant", VARIANTS)
def test_saelens_loads_our_folders_and_agrees(tmp_path, variant):
    sae = _perturbed(variant)
    save_sae(sae, tmp_path / "sae")
    assert_saelens_agrees(sae, tmp_path / "sae", torch.randn(50, 16))


def test_select_copies_seeds():
    sae = _perturbed("topk")
    sub = sae.select([2, 0])
    assert sub.cfg.n_seeds == 2 and torch.equal(sub.W_dec[0], sae.W_dec[2])
    with pytest.raises(ValueError, match="seeds"):
        sae.select([3])


def test_init_stream_is_not_the_global_seed_stream():
    """Seed s must not start from `torch.manual_seed(s)`'s stream, which data generators also use: a planted ground
    truth drawn with seed 0 would otherwise sit in SAE seed 0's initial decoder."""
    sae = SAE(SAEConfig(d_in=16, d_sae=48, k=4, n_seeds=1, seed=0))
    plain = torch.randn(48, 16, generator=torch.Generator().manual_seed(0))
    plain = plain / plain.norm(dim=-1, keepdim=True)
    assert (sae.W_dec[0] @ plain.T).abs().max() < 0.99


def test_sparse_decode_equals_dense_decode_with_gradients():
    sae = _perturbed("topk").train()
    x = torch.randn(64, 16)
    pre = sae.pre_acts(x)
    values, idx = pre.topk(4, dim=-1)
    values = values.relu()
    sparse = sae.decode_sparse(values, idx)
    dense = sae.decode(torch.zeros_like(pre).scatter(-1, idx, values))
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)
    g_sparse = torch.autograd.grad(sparse.pow(2).sum(), [sae.W_dec, sae.W_enc, sae.b_dec], retain_graph=True)
    g_dense = torch.autograd.grad(dense.pow(2).sum(), [sae.W_dec, sae.W_enc, sae.b_dec])
    for a, b in zip(g_sparse, g_dense):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sae(x).x_hat, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["topk", "batchtopk"])
@pytest.mark.parametrize("shared_batch", [True, False])
def test_sparse_step_matches_dense_forward_and_gradients(shared_batch, variant):
    """The sparse training step (sparse decoder, sparse encoder gradient, AuxK over the dead columns only) gives
    the dense path's reconstructions, AuxK reconstructions and gradients."""
    from saelib.train import _dense_aux_hat

    sae = _perturbed(variant).train()
    x = torch.randn(40, 16) if shared_batch else torch.randn(3, 40, 16)
    dead = torch.rand(3, 48) < 0.3
    dead[1] = False  # a seed without dead latents
    dead[2, :2] = True  # fewer dead latents than aux_k on some seeds: padded entries must not leak gradient
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]

    fast = sae.sparse_step(x, dead, aux_k=20)
    loss_fast = fast.x_hat.pow(2).sum() + fast.aux_hat.pow(3).sum()
    g_fast = torch.autograd.grad(loss_fast, params)

    dense = sae(x)
    aux_hat = _dense_aux_hat(sae, dense.pre, dead, 20)
    loss_dense = dense.x_hat.pow(2).sum() + aux_hat.pow(3).sum()
    g_dense = torch.autograd.grad(loss_dense, params)

    torch.testing.assert_close(fast.x_hat, dense.x_hat, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.aux_hat, aux_hat, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fast, g_dense):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert torch.all(fast.token[:, 1:] >= fast.token[:, :-1])
    n_selected = (fast.values > 0).sum(-1)
    assert torch.equal(n_selected, (dense.latents > 0).sum((1, 2)))
    no_aux = sae.sparse_step(x)
    assert no_aux.aux_hat is None and torch.allclose(no_aux.x_hat, fast.x_hat)


def test_aux_uses_at_most_the_dead_latents():
    sae = _perturbed("topk").train()
    dead = torch.zeros(3, 48, dtype=torch.bool)
    dead[0, :5] = True
    dead[2, 7] = True
    out = sae.sparse_step(torch.randn(10, 16), dead, aux_k=256)
    assert out.aux_hat is not None
    # seed 1 has no dead latent: its AuxK reconstruction is exactly zero
    assert torch.all(out.aux_hat[1] == 0) and out.aux_hat[0].abs().sum() > 0
    with pytest.raises(ValueError, match="sparse_step"):
        _perturbed("relu").sparse_step(torch.randn(4, 16))


@pytest.mark.parametrize("variant", VARIANTS)
def test_fold_input_scale_makes_the_sae_take_raw_inputs(variant):
    sae = _perturbed(variant)
    x, c = torch.randn(30, 16), 0.01
    expected = sae(c * x)
    sae.fold_input_scale_(c)
    out = sae(x)
    torch.testing.assert_close(out.x_hat, expected.x_hat / c, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(out.latents, expected.latents / c, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(3, 48))
