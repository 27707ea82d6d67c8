from dataclasses import replace

import torch

from saelib import config, synthetic


def test_generator_is_deterministic_and_has_the_planted_structure():
    cfg = config.SyntheticConfig(d_in=32, n_isolated=10, n_groups=3, group_rank=4, n_samples=5000, noise_std=0.0)
    a, b = synthetic.generate(cfg), synthetic.generate(cfg)
    assert torch.equal(a.x, b.x)
    t = a.truth
    torch.testing.assert_close(t.isolated.norm(dim=-1), torch.ones(10))
    flat = t.group_bases.reshape(12, 32)
    torch.testing.assert_close(flat @ flat.T, torch.eye(12), atol=1e-5, rtol=0)  # orthonormal, groups orthogonal
    # with only groups active, every sample lies inside the union of group subspaces
    only_groups = synthetic.generate(replace(cfg, n_isolated=0))
    flat = only_groups.truth.group_bases.reshape(12, 32)
    resid = only_groups.x - (only_groups.x @ flat.T) @ flat
    assert resid.abs().max() < 1e-4


def test_overcomplete_mode_features_live_in_their_subspace():
    cfg = config.SyntheticConfig(
        d_in=16, n_groups=2, group_rank=2, group_mode="overcomplete", features_per_group=5, n_samples=100
    )
    t = synthetic.generate(cfg).truth
    share = torch.einsum("gmd,grd->gmr", t.group_features, t.group_bases).pow(2).sum(-1)
    torch.testing.assert_close(share, torch.ones(2, 5))
