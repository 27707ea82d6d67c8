import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from saelib import stability as st
from saelib.config import SAEConfig, StabilityConfig
from saelib.sae import SAE


def _copies(sae1: SAE, n: int, permute: bool = False) -> SAE:
    """A stack of n exact (optionally latent-permuted) copies of the single SAE `sae1`."""
    cfg = SAEConfig(d_in=sae1.cfg.d_in, d_sae=sae1.cfg.d_sae, k=sae1.cfg.k, n_seeds=n)
    out = SAE(cfg)
    with torch.no_grad():
        for s in range(n):
            perm = torch.randperm(cfg.d_sae) if permute and s else torch.arange(cfg.d_sae)
            out.W_dec[s] = sae1.W_dec[0][perm]
            out.W_enc[s] = sae1.W_enc[0][:, perm]
    return out


@pytest.fixture
def one():
    return SAE(SAEConfig(d_in=24, d_sae=64, k=4, n_seeds=1, seed=7))


@pytest.mark.parametrize("permute", [False, True])
def test_copies_score_one_everywhere(one, permute):
    sae = _copies(one, 4, permute)
    fs = st.feature_stability(sae, StabilityConfig(threshold=0.99, similarity="min"))
    assert torch.all(fs.stability == 1) and torch.all(fs.label == st.STABLE)
    torch.testing.assert_close(fs.mean_max_cos, torch.ones(4, 64))
    assert st.pw_mcc(sae) == pytest.approx(1.0)
    assert np.allclose(st.pairwise_shared_fraction(sae), 1.0)


def test_independent_inits_score_near_the_null():
    sae = SAE(SAEConfig(d_in=24, d_sae=64, k=4, n_seeds=4, seed=3))
    fs = st.feature_stability(sae)
    null = st.feature_stability(st.null_sae(sae))
    assert fs.stability.mean() < 0.05 and null.stability.mean() < 0.05
    assert abs(fs.mean_max_cos.mean() - null.mean_max_cos.mean()) < 0.05
    assert st.pw_mcc(sae) < 0.5


def test_chunked_equals_unchunked_and_brute_force():
    dirs = torch.randn(3, 50, 10)
    a, ia = st.cross_seed_max_cosine(dirs, chunk_size=7)
    b, ib = st.cross_seed_max_cosine(dirs, chunk_size=1000)
    torch.testing.assert_close(a, b, equal_nan=True)
    assert torch.equal(ia, ib)
    unit = dirs / dirs.norm(dim=-1, keepdim=True)
    for s in range(3):
        for t in range(3):
            if s != t:
                torch.testing.assert_close(a[s, t], (unit[s] @ unit[t].T).amax(1))
    assert torch.isnan(a[0, 0]).all()


def test_dead_latents_are_excluded():
    dirs = torch.randn(2, 6, 5)
    dirs[1, 3] = dirs[0, 0]  # seed 1 latent 3 copies seed 0 latent 0 ...
    alive = torch.ones(2, 6, dtype=torch.bool)
    max_cos, _ = st.cross_seed_max_cosine(dirs, alive=alive)
    assert max_cos[0, 1, 0] == pytest.approx(1.0)
    alive[1, 3] = False  # ... but it is dead, so it is no match
    max_cos, _ = st.cross_seed_max_cosine(dirs, alive=alive)
    assert max_cos[0, 1, 0] < 0.999
    stab, _ = st.stability_from_max_cos(max_cos, 0.7, alive)
    assert torch.isnan(stab[1, 3]) and st.stability_labels(stab, StabilityConfig())[1, 3] == st.DEAD


def test_stability_counts_share_of_other_seeds():
    # seed 0's latent 0 reappears in seed 1 only; with S=3 its stability is 1/2
    dirs = torch.eye(6)[:, :6].repeat(3, 1, 1)
    dirs[1, 0] = torch.tensor([1.0, 0.1, 0, 0, 0, 0])
    dirs[2, 0] = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0]) + torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    dirs[2, 5] = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    dirs[2, 1] = torch.tensor([0.0, 1.0, -1.0, 0.0, 0.0, 0.0])
    max_cos, _ = st.cross_seed_max_cosine(dirs)
    stab, _ = st.stability_from_max_cos(max_cos, 0.9)
    assert stab[0, 0] == pytest.approx(0.5)


def test_hungarian_against_scipy_reference():
    a, b = torch.randn(30, 8), torch.randn(30, 8)
    rows, cols, cos = st.hungarian_match(a, b)
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    c = (an @ bn.T).numpy()
    r2, c2 = linear_sum_assignment(-c)
    assert c[r2, c2].sum() == pytest.approx(cos.sum(), rel=1e-6)
    # recovers a hidden permutation exactly
    perm = torch.randperm(30)
    rows, cols, cos = st.hungarian_match(a, a[perm])
    assert np.array_equal(perm.numpy()[cols], rows) and np.allclose(cos, 1.0, atol=1e-5)


def test_needs_two_seeds(one):
    with pytest.raises(ValueError, match="2 seeds"):
        st.feature_stability(one)
