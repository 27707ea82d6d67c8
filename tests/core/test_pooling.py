import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import assert_saelens_agrees, perturbed_sae, sparse_data

from saelib import pooling
from saelib.config import VARIANTS, PoolingConfig, SAEConfig, TrainConfig
from saelib.sae import SAE, load_sae, save_sae
from saelib.train import train_saes


def _perturbed(variant="topk", n_seeds=3, d_in=64, d_sae=48, k=4, seed=0):
    return perturbed_sae(SAEConfig(d_in=d_in, d_sae=d_sae, k=k, variant=variant, n_seeds=n_seeds, seed=seed))


def _copies(sae: SAE, n: int) -> SAE:
    """A stack of n identical copies of seed 0 of `sae`."""
    return sae.select([0] * n)


def _brute_force_merge(dirs: torch.Tensor, priority: torch.Tensor, tau: float) -> np.ndarray:
    """The leader clustering written the slow way, on the dense cosine matrix."""
    u = torch.nn.functional.normalize(dirs.double(), dim=-1)
    cos = (u @ u.T).numpy()
    reps: list[int] = []
    out = np.empty(len(dirs), dtype=np.int64)
    for i in sorted(range(len(dirs)), key=lambda i: (-float(priority[i]), i)):
        near = [r for r in reps if cos[i, r] >= tau]
        out[i] = max(near, key=lambda r: cos[i, r]) if near else i
        if not near:
            reps.append(i)
    return out


def _clustered_directions(n_centres=20, per_centre=4, d=32, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_centres, d, generator=g)
    dirs = centres.repeat_interleave(per_centre, 0) + noise * torch.randn(n_centres * per_centre, d, generator=g)
    return torch.nn.functional.normalize(dirs, dim=-1), torch.rand(len(dirs), generator=g)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pooling_identical_copies_gives_back_the_original(variant):
    sae = _perturbed(variant, n_seeds=1)
    dirs = sae.decoder_directions()[0]
    off = (dirs @ dirs.T).fill_diagonal_(0)
    assert off.max() < 0.7  # precondition: no near-duplicates inside the original
    S, F = 3, sae.cfg.d_sae
    stack = _copies(sae, S)
    mass = torch.rand(F).expand(S, -1).clone()
    pool = pooling.pool_features(stack, [0, 1, 2], mass, 0.7)
    assert len(pool.seed) == F and pool.n_pooled == S * F
    assert (pool.n_seeds == S).all() and (pool.n_members == S).all()
    assert sorted(pool.latent.tolist()) == list(range(F))
    assert (pool.mass[:-1] >= pool.mass[1:]).all()  # equal seed counts: ranked by mass
    pooled = pooling.build_pooled_sae(stack, [pool], F)
    # the same dictionary, up to the order of the latents
    torch.testing.assert_close(pooled.W_dec[0], sae.W_dec[0][pool.latent])
    x = torch.randn(40, sae.cfg.d_in)
    torch.testing.assert_close(pooled(x).x_hat, sae(x).x_hat, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled(x).latents[0], sae(x).latents[0][:, pool.latent], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9])
def test_merge_never_keeps_two_features_whose_cosine_passes_the_threshold(tau):
    dirs, priority = _clustered_directions()
    merge = pooling.merge_near_duplicates(dirs, priority, tau, chunk_size=7)  # several blocks
    reps = torch.nonzero(merge.is_representative).flatten()
    cos = dirs @ dirs.T
    kept = cos[reps][:, reps].fill_diagonal_(-1)
    assert kept.max() < tau
    assert 1 < len(reps) < len(dirs)  # the data has something to merge, and not everything
    members = ~merge.is_representative
    own = cos[torch.arange(len(dirs)), merge.representative]
    assert (own[members] >= tau).all()  # every member passes the threshold with its representative
    assert (priority[merge.representative] >= priority).all()  # the representative leads its cluster
    np.testing.assert_array_equal(merge.representative.numpy(), _brute_force_merge(dirs, priority, tau))


def test_merge_chain_keeps_both_ends():
    # cos(a, b) and cos(b, c) pass 0.7, cos(a, c) does not: a leads, b joins a, c leads its own cluster
    angle = np.deg2rad(40)
    a = torch.tensor([1.0, 0.0])
    b = torch.tensor([np.cos(angle), np.sin(angle)], dtype=torch.float32)
    c = torch.tensor([np.cos(2 * angle), np.sin(2 * angle)], dtype=torch.float32)
    merge = pooling.merge_near_duplicates(torch.stack([a, b, c]), torch.tensor([3.0, 2.0, 1.0]), 0.7)
    assert merge.representative.tolist() == [0, 0, 2]
    merge = pooling.merge_near_duplicates(torch.stack([a, b, c]), torch.tensor([1.0, 3.0, 2.0]), 0.7)
    assert merge.representative.tolist() == [1, 1, 1]  # b leads: both neighbours join it


def test_ranking_by_seeds_then_mass():
    sae = _perturbed(n_seeds=2, d_sae=6, k=2)
    with torch.no_grad():  # latents 0-2 of seed 1 copy those of seed 0; the rest are unrelated
        sae.W_dec[1, :3] = sae.W_dec[0, :3]
    mass = torch.tensor([[1.0, 2.0, 3.0, 9.0, 8.0, 0.5], [1.0, 2.0, 3.0, 7.0, 6.0, 0.1]])
    alive = torch.ones(2, 6, dtype=torch.bool)
    alive[1, 5] = False
    pool = pooling.pool_features(sae, [0, 1], mass, 0.7, alive=alive)
    assert pool.n_pooled == 11 and len(pool.seed) == 8
    assert pool.n_seeds.tolist() == [2, 2, 2, 1, 1, 1, 1, 1]
    assert pool.latent[:3].tolist() == [2, 1, 0]  # shared, by mass (summed over the two seeds)
    assert list(zip(pool.seed[3:].tolist(), pool.latent[3:].tolist())) == [(0, 3), (0, 4), (1, 3), (1, 4), (0, 5)]
    by_mass = pooling.pool_features(sae, [0, 1], mass, 0.7, alive=alive, rank_by="mass")
    assert (by_mass.mass[:-1] >= by_mass.mass[1:]).all()
    assert by_mass.latent[0].item() == 3


def test_build_keeps_every_latents_pre_activation():
    sae = _perturbed("jumprelu", n_seeds=4)
    pools = [pooling.pool_features(sae, g, torch.rand(4, 48), 0.7) for g in ([0, 1], [2, 3])]
    pooled = pooling.build_pooled_sae(sae, pools, 40)
    x = torch.randn(30, sae.cfg.d_in)
    pre, src = pooled.pre_acts(x), sae.pre_acts(x)  # (2, B, 40), (4, B, 48)
    for g, pool in enumerate(pools):
        torch.testing.assert_close(pre[g], src[pool.seed[:40], :, pool.latent[:40]].T, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pooled.b_dec[g], sae.b_dec[list(pool.group)].mean(0))
    torch.testing.assert_close(pooled.W_dec.norm(dim=-1), torch.ones(2, 40))
    with pytest.raises(ValueError, match="d_sae"):
        pooling.build_pooled_sae(sae, pools, 10_000)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pooled_sae_saves_and_loads_in_the_saelens_layout(tmp_path, variant):
    sae = _perturbed(variant, n_seeds=4, d_in=16)
    pools = [pooling.pool_features(sae, g, torch.rand(4, 48), 0.7) for g in pooling.disjoint_groups(2)]
    size = pooling.pooled_sizes(pools, 40, PoolingConfig())["same"]
    pooled = pooling.build_pooled_sae(sae, pools, size)
    save_sae(pooled, tmp_path / "pooled")
    x = torch.randn(50, 16)
    torch.testing.assert_close(load_sae(tmp_path / "pooled")(x).x_hat, pooled(x).x_hat)
    assert_saelens_agrees(pooled, tmp_path / "pooled", x)


def test_finetune_from_init_with_frozen_decoder():
    x = sparse_data()
    sae = _perturbed(n_seeds=2, d_in=16, d_sae=32, k=3)
    tc = TrainConfig(n_tokens=2048, batch_size=256, lr=1e-12, normalize_activations=True, device="cpu")
    # a vanishing learning rate gives back the start, whatever the input scale: the fold is undone exactly
    same = train_saes(sae.cfg, tc, x, progress=False, init=sae, train_decoder=False).sae
    torch.testing.assert_close(same(x[:64]).x_hat, sae(x[:64]).x_hat, atol=1e-4, rtol=1e-4)
    tuned = train_saes(sae.cfg, replace(tc, lr=1e-2), x, progress=False, init=sae, train_decoder=False).sae
    torch.testing.assert_close(tuned.W_dec, sae.W_dec, atol=1e-6, rtol=1e-6)  # frozen
    assert not torch.allclose(tuned.W_enc, sae.W_enc)
    free = train_saes(sae.cfg, replace(tc, lr=1e-2), x, progress=False, init=sae).sae
    assert not torch.allclose(free.W_dec, sae.W_dec)
    with pytest.raises(ValueError, match="init.cfg"):
        train_saes(replace(sae.cfg, d_sae=16), tc, x, progress=False, init=sae)


def test_identical_groups_pool_to_perfectly_stable_saes():
    sae = _perturbed(n_seeds=1)
    stack = _copies(sae, 4)
    pools = [pooling.pool_features(stack, g, torch.rand(4, 48), 0.7) for g in pooling.disjoint_groups(2)]
    pooled = pooling.build_pooled_sae(stack, pools, 48)
    from saelib.stability import feature_stability

    assert feature_stability(pooled).stability.eq(1).all()


def test_pooling_config_rejects_bad_values():
    for bad in (
        {"threshold": 0.0},
        {"large_factor": 1.0},
        {"rank_by": "random"},
        {"sweep": ()},
        {"sweep": (0, 2)},
        {"n_large_standard": 1},
        {"n_large_standard": 0},
        {"mass_tokens": 0},
        {"finetune_frac": 1.5},
        {"finetune_lr": -1.0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PoolingConfig(**bad)
    PoolingConfig(threshold=1.0, n_large_standard=2, sweep=(1,), finetune_frac=1.0)  # the boundaries are valid


def test_bad_groups_are_rejected():
    sae = _perturbed(n_seeds=2)
    for group in ([], [0, 0], [0, 2]):
        with pytest.raises(ValueError, match="group"):
            pooling.pool_features(sae, group, torch.rand(2, 48), 0.7)
    assert list(itertools.chain(*pooling.disjoint_groups(3))) == list(range(6))
