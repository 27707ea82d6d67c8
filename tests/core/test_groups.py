import numpy as np
import pytest
import torch
from helpers import planted_planes

from saelib import groups as gr


def test_explain_known_answers():
    atoms = torch.eye(6)[:5]
    targets = torch.stack(
        [
            torch.tensor([2.0, 1, 0, 0, 0, 0]),  # a positive mix of atoms 0 and 1
            torch.tensor([1.0, -1, 0, 0, 0, 0]),  # needs a negative weight: not explained
            torch.tensor([0.0, 0, 1, 0, 0, 0]),  # atom 2 itself
            torch.tensor([0.0, 0, 0, 0, 0, 1]),  # outside the atoms' span
        ]
    )
    ex = gr.explain(targets, atoms, max_atoms=3, min_share=0.8)
    assert ex.explained.tolist() == [True, False, True, False]
    assert sorted(ex.atoms[0][ex.atoms[0] >= 0].tolist()) == [0, 1]
    assert ex.atoms[2].tolist() == [2, -1, -1] and (ex.atoms[1] == -1).all()
    torch.testing.assert_close(ex.share[[0, 2, 3]], torch.tensor([1.0, 1.0, 0.0]))


def test_explain_share_matches_least_squares():
    g = torch.Generator().manual_seed(0)
    atoms, targets = torch.randn(12, 8, generator=g), torch.randn(40, 8, generator=g)
    ex = gr.explain(targets, atoms, max_atoms=3, min_share=0.3)
    assert ex.explained.sum() > 10
    a, t = atoms / atoms.norm(dim=1, keepdim=True), targets / targets.norm(dim=1, keepdim=True)
    for i in torch.nonzero(ex.explained).flatten():
        sel = ex.atoms[i][ex.atoms[i] >= 0]
        coef = torch.linalg.lstsq(a[sel].T.double(), t[i].double().unsqueeze(1)).solution.squeeze(1)
        share = 1 - (t[i].double() - a[sel].T.double() @ coef).pow(2).sum()
        assert float(ex.share[i]) == pytest.approx(float(share), abs=1e-5)
        assert (coef > 0).all() and share >= 0.3
    with pytest.raises(ValueError, match="targets"):
        gr.explain(targets, atoms[:, :5])


def test_find_groups_recovers_planted_planes():
    dirs, truth = planted_planes()
    fg = gr.find_groups(dirs, torch.ones(truth.shape, dtype=torch.bool))
    assert fg.n_groups == 2
    got = fg.group.view(truth.shape)
    assert (got[truth == -1] == -1).all()  # the random features join no group
    for p in range(2):  # each plane is one group holding its features from every seed, and nothing else
        assert len(set(got[truth == p].tolist())) == 1 and (got[truth == p] >= 0).all()
    assert got[truth == 0][0] != got[truth == 1][0]
    assert torch.equal(fg.seed, torch.arange(3).repeat_interleave(truth.shape[1]))
    # only the member latents are grouped
    sub = gr.find_groups(dirs, truth == 0)
    assert sub.n_groups == 1 and len(sub.latent) == 9 and (sub.group == 0).all()


def test_group_table_shows_basis_ambiguity():
    dirs, truth = planted_planes()
    fg = gr.find_groups(dirs, torch.ones(truth.shape, dtype=torch.bool))
    tab = gr.group_table(dirs, fg, torch.eye(dirs.shape[-1]), gr.GroupConfig(n_draws=3))
    assert len(tab) == 2 and (tab.n_features == 9).all() and (tab.n_seeds == 3).all()
    assert (tab.rank_seed == 2).all() and (tab.rank_pooled == 2).all()  # three seeds, one plane
    np.testing.assert_allclose(tab.overlap, 1.0, atol=1e-5)
    assert (tab.mean_angle_deg < 0.5).all() and (tab.mean_angle_random > 60).all()
    assert (tab.overlap_random < 0.3).all() and (tab.overlap_covariance < 0.3).all()
    assert (tab.max_cos < 0.9).all() and (tab.cos_to_span > 0.999).all()  # no single match, yet inside the span
    assert (tab.cos_to_span_covariance < 0.6).all()
    assert gr.example_group(tab) in (0, 1)
    summary = gr.summarize_groups(tab, fg.group)
    assert summary["n_groups"] == 2 and summary["grouped_share"] == pytest.approx(18 / 30)
    members = gr.group_members(dirs, fg, 0)
    assert [len(m) for m in members] == [3, 3, 3]
    with pytest.raises(ValueError, match="g="):
        gr.group_members(dirs, fg, 2)


def test_group_errors_and_edge_cases():
    dirs, truth = planted_planes()
    with pytest.raises(ValueError, match="members"):
        gr.find_groups(dirs, torch.ones(3, 5, dtype=torch.bool))
    for kw in ({"max_atoms": 0}, {"min_share": 0}, {"min_seeds": 1}, {"energy": 1.5}, {"n_draws": 0}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            gr.GroupConfig(**kw)
    none = gr.find_groups(dirs, torch.zeros(truth.shape, dtype=torch.bool))
    assert none.n_groups == 0 and len(none.group) == 0
    with pytest.raises(ValueError, match="no groups"):
        gr.example_group(gr.group_table(dirs, none, torch.eye(32)))


def test_mutual_links_need_explanations_both_ways():
    e = torch.eye(8)
    dirs = torch.stack([torch.stack([e[0], e[1], e[5]]), torch.stack([(e[0] + e[1]) / 2**0.5, e[3], e[6]])])
    members = torch.ones(2, 3, dtype=torch.bool)
    # seed 1's first feature lies in the span of seed 0's first two, but neither of those is explained by seed 1
    one_way = gr.find_groups(dirs, members, gr.GroupConfig(min_share=0.6, mutual=False))
    assert one_way.n_groups == 1 and one_way.group.tolist() == [0, 0, -1, 0, -1, -1]
    assert gr.find_groups(dirs, members, gr.GroupConfig(min_share=0.6)).n_groups == 0
    # at min_share 0.45 one feature suffices both ways (cosine 0.71): seed 1's first is explained by seed 0's first
    # alone (the shortest explanation is kept), which it explains in turn; seed 0's second is left out
    assert gr.find_groups(dirs, members, gr.GroupConfig(min_share=0.45)).group.tolist() == [0, -1, -1, 0, -1, -1]
