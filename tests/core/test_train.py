from dataclasses import replace

import pytest
import torch

from saelib.config import SAEConfig, TrainConfig
from saelib.metrics import evaluate_sae
from saelib.train import batch_stream, lr_factor, train_cached, train_saes


def _planted(n=8000, d=16, f=24, p=0.06, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(f, d, generator=g)
    D = D / D.norm(dim=-1, keepdim=True)
    codes = (torch.rand(n, f, generator=g) < p) * (0.5 + torch.rand(n, f, generator=g))
    return codes @ D, D


def _cfgs(variant="topk", n_seeds=3, seed=0, n_tokens=24_000):
    return (
        SAEConfig(
            d_in=16,
            d_sae=32,
            k=3,
            variant=variant,
            n_seeds=n_seeds,
            seed=seed,
            l1_coefficient=0.05,
            l0_coefficient=0.01,
        ),
        TrainConfig(n_tokens=n_tokens, batch_size=256, dead_after_tokens=2000, log_every=10, device="cpu"),
    )


def test_stacked_training_equals_single_seed_runs():
    x, _ = _planted()
    cfg, tc = _cfgs(n_seeds=3)
    stacked = train_saes(cfg, tc, x, progress=False).sae
    for s in range(3):
        one_cfg, _ = _cfgs(n_seeds=1, seed=s)
        single = train_saes(one_cfg, tc, x, progress=False).sae
        torch.testing.assert_close(stacked.W_dec[s], single.W_dec[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(stacked.b_enc[s], single.b_enc[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", [pytest.param("topk", marks=pytest.mark.slow), "batchtopk", "relu", "jumprelu"])
def test_training_learns_planted_features(variant):
    x, D = _planted(d=32)
    cfg = SAEConfig(
        d_in=32,
        d_sae=32,
        k=3,
        variant=variant,
        n_seeds=2,
        l1_coefficient=0.2,
        jumprelu_init_threshold=0.2,
        jumprelu_bandwidth=0.2,
        l0_coefficient=0.1,
    )
    tc = TrainConfig(n_tokens=40_000, batch_size=256, dead_after_tokens=2000, device="cpu")
    res = train_saes(cfg, tc, x, progress=False)
    ev = evaluate_sae(res.sae, x)
    assert (ev.explained_variance > 0.85).all(), ev.explained_variance
    assert (ev.l0 < 8).all(), ev.l0  # sparse: 1.4 true features per sample; a dense code would use ~32
    recovery = (res.sae.decoder_directions() @ D.T).amax(1)  # (S, f) best cosine per true feature
    rand = torch.randn(32, 32, generator=torch.Generator().manual_seed(123))  # not the stream that drew D
    null = (torch.nn.functional.normalize(rand, dim=-1) @ D.T).amax(0).mean()
    assert null < 0.6 and (recovery.mean(-1) > 0.75).all(), (recovery.mean(-1), null)
    torch.testing.assert_close(res.sae.W_dec.norm(dim=-1), torch.ones(2, 32))
    assert res.history["fvu"][-1][0] < res.history["fvu"][0][0]


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    x, _ = _planted()
    cfg, tc = _cfgs(n_seeds=2)
    full = train_saes(cfg, tc, x, progress=False).sae

    class Interrupt(Exception):
        pass

    class Flaky:
        """Serves the tensor's batches but fails at the 40th, as a crash or Ctrl-C would."""

        def __init__(self):
            self.served = 0

        def batches(self, batch_size, *, seed):
            for b in batch_stream(x, batch_size, seed):
                if self.served == 40:
                    raise Interrupt
                self.served += 1
                yield b
                if self.served % (x.shape[0] // batch_size) == 0:
                    return

    with pytest.raises(Interrupt):
        train_saes(cfg, tc, Flaky(), checkpoint_dir=tmp_path, progress=False)
    assert (tmp_path / "checkpoint.pt").is_file()
    resumed = train_saes(cfg, tc, x, checkpoint_dir=tmp_path, progress=False).sae
    torch.testing.assert_close(resumed.W_dec, full.W_dec, atol=1e-5, rtol=1e-4)


def test_checkpoint_for_other_config_is_refused(tmp_path):
    x, _ = _planted()
    cfg, tc = _cfgs(n_seeds=1, n_tokens=2560)
    train_saes(
        cfg,
        TrainConfig(n_tokens=2560, batch_size=256, checkpoint_every=5, device="cpu"),
        x,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    with pytest.raises(ValueError, match="another configuration"):
        train_saes(
            cfg, TrainConfig(n_tokens=5120, batch_size=256, device="cpu"), x, checkpoint_dir=tmp_path, progress=False
        )


def test_bad_data_is_named():
    cfg, tc = _cfgs(n_seeds=1)
    with pytest.raises(ValueError, match="d_in=16"):
        train_saes(cfg, tc, torch.randn(1000, 15), progress=False)
    bad = torch.randn(1000, 16)
    bad[3, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        train_saes(cfg, tc, bad, progress=False)
    with pytest.raises(TypeError, match="batches"):
        train_saes(cfg, tc, [1, 2, 3], progress=False)


def test_train_cached_hits_cache():
    x, _ = _planted()
    cfg, tc = _cfgs(n_seeds=2, n_tokens=2560)
    a, hist = train_cached("t", cfg, tc, x, data_key={"planted": 0}, progress=False)
    b, _ = train_cached("t", cfg, tc, x, data_key={"planted": 0}, progress=False)
    assert torch.equal(a.W_dec, b.W_dec) and hist["step"][-1] == tc.n_steps


def test_lr_schedule_shape():
    f = [lr_factor(s, 100, 0.1, 0.2) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[50] == 1.0
    assert f[80] == 1.0 and f[99] == pytest.approx(0.05) and all(a >= b for a, b in zip(f[80:], f[81:]))


@pytest.mark.slow
def test_normalized_training_on_large_activations():
    x, D = _planted(d=32)
    big = 1000.0 * x  # language-model-like scale
    cfg = SAEConfig(d_in=32, d_sae=32, k=3, n_seeds=2)
    tc = TrainConfig(n_tokens=40_000, batch_size=256, dead_after_tokens=2000, device="cpu", normalize_activations=True)
    res = train_saes(cfg, tc, big, progress=False)
    expected = (32 / big.pow(2).sum(-1).mean()).sqrt().item()
    assert res.history["input_scale"] == pytest.approx(expected, rel=0.1)
    ev = evaluate_sae(res.sae, big)  # the folded SAE takes raw activations
    assert (ev.explained_variance > 0.85).all(), ev.explained_variance
    assert ((res.sae.decoder_directions() @ D.T).amax(1).mean(-1) > 0.8).all()
    raw = train_saes(cfg, replace(tc, normalize_activations=False), x, progress=False)
    torch.testing.assert_close(evaluate_sae(raw.sae, x).explained_variance, ev.explained_variance, atol=0.03, rtol=0)


def test_the_dead_window_scales_with_the_run():
    assert TrainConfig(n_tokens=1_000_000, batch_size=1024).dead_after == 50_000
    assert TrainConfig(n_tokens=10_000_000, batch_size=1024).dead_after == 500_000
    assert TrainConfig(n_tokens=4_000, batch_size=1024).dead_after == 1024  # never under one batch
    assert TrainConfig(n_tokens=10_000_000, dead_after_tokens=7).dead_after == 7
    with pytest.raises(ValueError, match="dead_window"):
        TrainConfig(n_tokens=100, dead_window=0.0)


def test_auxk_acts_in_a_short_run():
    """With the window a fraction of the run, latents that stop firing get the AuxK loss even in a short run."""
    x = torch.randn(4096, 3) @ torch.randn(3, 16)  # rank-3 data: most of 128 latents never win the top 1
    cfg = SAEConfig(d_in=16, d_sae=128, k=1, n_seeds=2)
    res = train_saes(cfg, TrainConfig(n_tokens=20_000, batch_size=256, log_every=5, device="cpu"), x, progress=False)
    aux = torch.tensor(res.history["aux_loss"])
    assert (aux > 0).any(), "AuxK never ran"


@pytest.mark.parametrize("variant", ["topk", "batchtopk"])
def test_stacks_trained_one_after_another_equal_one_stack(variant):
    """The schedule (`TrainConfig.seeds_per_stack`) does not change the numbers beyond float rounding: seeds never
    interact. What rounds differently: AuxK's product runs over the most dead latents of any seed of the stack
    (padded), so its summation order depends on the stack (measured: at most 8e-5 on weights of order 0.1-1 after
    these 16 steps, BatchTopK; TopK here within 1e-6)."""
    x = torch.randn(2048, 16)
    cfg = SAEConfig(d_in=16, d_sae=32, variant=variant, k=4, n_seeds=5, seed=3)
    tc = TrainConfig(n_tokens=4096, batch_size=256, lr=3e-3, device="cpu")
    one = train_saes(cfg, replace(tc, seeds_per_stack=5), x, progress=False)
    split = train_saes(cfg, replace(tc, seeds_per_stack=2), x, progress=False)  # stacks of 2, 2 and 1 seeds
    assert split.sae.cfg == cfg
    for name, p in one.sae.state_dict().items():
        torch.testing.assert_close(split.sae.state_dict()[name], p, atol=5e-4, rtol=1e-3, equal_nan=True)
    torch.testing.assert_close(torch.tensor(split.history["fvu"]), torch.tensor(one.history["fvu"]), atol=1e-4, rtol=0)


def test_the_cpu_schedule_keeps_each_stack_within_the_cache_budget():
    from saelib.train import CPU_STACK_BYTES, stack_size

    cfg = SAEConfig(d_in=640, d_sae=4096, k=8, n_seeds=8)
    big, small = TrainConfig(n_tokens=1, batch_size=4096, device="cpu"), TrainConfig(n_tokens=1, batch_size=1024)
    assert stack_size(cfg, big) == CPU_STACK_BYTES // (4 * 4096 * 640) == 3  # 10 MiB per seed's batch
    assert stack_size(replace(cfg, n_seeds=9), replace(small, device="cpu")) == 9  # 2.5 MiB: the whole stack
    assert stack_size(cfg, replace(big, batch_size=2**20)) == 1  # never under one seed
    assert (
        stack_size(cfg, replace(big, seeds_per_stack=3)) == 3 and stack_size(cfg, replace(big, seeds_per_stack=99)) == 8
    )
    with pytest.raises(ValueError, match="seeds_per_stack"):
        TrainConfig(n_tokens=1, seeds_per_stack=0)
