import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from saelib import matching
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
    assert matching.pw_mcc(sae) == pytest.approx(1.0)
    assert np.allclose(matching.pairwise_shared_fraction(sae), 1.0)


def test_independent_inits_score_near_the_null():
    sae = SAE(SAEConfig(d_in=24, d_sae=64, k=4, n_seeds=4, seed=3))
    fs = st.feature_stability(sae)
    null = st.feature_stability(st.null_sae(sae))
    assert fs.stability.mean() < 0.05 and null.stability.mean() < 0.05
    assert abs(fs.mean_max_cos.mean() - null.mean_max_cos.mean()) < 0.05
    assert matching.pw_mcc(sae) < 0.5


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


def test_dead_latents_are_nan_in_every_per_latent_field(one):
    sae = _copies(one, 3)
    alive = torch.ones(3, 64, dtype=torch.bool)
    alive[1, [2, 5]] = False
    fs = st.feature_stability(sae, alive=alive)
    for field in (fs.stability[1], fs.mean_max_cos[1], fs.max_cos[1].T):  # (d_sae, ...) rows of seed 1
        assert torch.isnan(field[[2, 5]]).all()
    assert torch.isnan(fs.stability).sum() == 2 and (fs.label == st.DEAD).sum() == 2
    # Copies of a latent whose twin in seed 1 is dead still match their twin in seed 2: stability 1/2.
    assert fs.stability[0, 2] == 0.5 and fs.stability[2, 5] == 0.5 and fs.stability[0, 0] == 1
    # Without `alive`, a row with no comparison left (all NaN, as above) is NaN too, never 0.
    stab, mean = st.stability_from_max_cos(fs.max_cos, 0.7)
    assert torch.equal(torch.isnan(stab), ~alive) and torch.equal(torch.isnan(mean), ~alive)
    stab, _ = st.stability_from_max_cos(fs.max_cos[:, [0]], 0.7)  # seed 0 alone as reference: none for its own rows
    assert torch.isnan(stab[0]).all() and stab[2, 0] == 1


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
    rows, cols, cos = matching.hungarian_match(a, b)
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    c = (an @ bn.T).numpy()
    r2, c2 = linear_sum_assignment(-c)
    assert c[r2, c2].sum() == pytest.approx(cos.sum(), rel=1e-6)
    # recovers a hidden permutation exactly
    perm = torch.randperm(30)
    rows, cols, cos = matching.hungarian_match(a, a[perm])
    assert np.array_equal(perm.numpy()[cols], rows) and np.allclose(cos, 1.0, atol=1e-5)


def test_needs_two_seeds(one):
    with pytest.raises(ValueError, match="2 seeds"):
        st.feature_stability(one)


def _plain_max_cosine(dirs: list[torch.Tensor], alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain reference: whole cosine matrices of every ordered pair, dead columns masked, max and argmax."""
    unit = [d / d.norm(dim=-1, keepdim=True) for d in dirs]
    S, F, _ = dirs[0].shape
    best = torch.full((S, S, F), torch.nan)
    arg = torch.full((S, S, F), -1, dtype=torch.long)
    for s in range(S):
        for t in range(S):
            if s != t:
                sim = torch.stack([u[s] @ u[t].T for u in unit]).amin(0).masked_fill(~alive[t], -torch.inf)
                best[s, t], arg[s, t] = sim.max(1)
    return best, arg


@pytest.mark.parametrize("n_sets", [1, 2])
@pytest.mark.parametrize("chunk_size,cpu_block", [(7, 1024), (64, 1024), (4096, 16), (4096, 1024)])
def test_fast_max_cosine_equals_plain_reference(monkeypatch, n_sets, chunk_size, cpu_block):
    monkeypatch.setattr(st, "CPU_BLOCK", cpu_block)
    dirs = [torch.randn(3, 50, 12) for _ in range(n_sets)]
    alive = torch.rand(3, 50) > 0.3
    alive[2, :20] = False  # a whole block of dead latents
    for al in (None, alive):
        ref, ref_arg = _plain_max_cosine(dirs, torch.ones(3, 50, dtype=torch.bool) if al is None else al)
        got, got_arg = st.cross_seed_max_cosine(dirs if n_sets > 1 else dirs[0], alive=al, chunk_size=chunk_size)
        torch.testing.assert_close(got, ref, equal_nan=True)
        assert torch.equal(got_arg, ref_arg)


def test_sparse_matching_recovers_hidden_permutation_exactly():
    a = torch.randn(300, 16)
    perm = torch.randperm(300)
    b = a[perm] + 0.05 * torch.randn(300, 16)
    dense = matching.hungarian_match(a, b)
    for k in (4, 16):
        sparse = matching.sparse_hungarian_match(a, b, k=k)
        assert np.array_equal(sparse[0], dense[0]) and np.array_equal(sparse[1], dense[1])
        assert np.array_equal(perm.numpy()[sparse[1]], sparse[0])
        np.testing.assert_allclose(sparse[2], dense[2], atol=1e-5)
    assert np.array_equal(matching.hungarian_match(a, b, method="sparse")[1], dense[1])


def test_sparse_matching_rectangular_equals_dense():
    a = torch.randn(40, 16)
    b = torch.cat([a[torch.randperm(40)], torch.randn(25, 16)]) + 0.01 * torch.randn(65, 16)
    dense, sparse = matching.hungarian_match(a, b), matching.sparse_hungarian_match(a, b, k=8)
    assert np.array_equal(sparse[0], dense[0]) and np.array_equal(sparse[1], dense[1])


def test_sparse_matching_on_random_directions_is_close_to_dense():
    a, b = torch.randn(400, 24), torch.randn(400, 24)
    _, cols, cos = matching.hungarian_match(a, b)
    _, cols_s, cos_s = matching.sparse_hungarian_match(a, b, k=16)
    agreement = (cols == cols_s).mean()
    assert cos_s.sum() >= 0.95 * cos.sum(), (cos_s.sum(), cos.sum())
    assert cos_s.sum() <= cos.sum() + 1e-4  # dense is optimal
    assert agreement > 0.7, f"agreement of sparse with dense matches: {agreement:.3f}"
    assert len(np.unique(cols_s)) == 400  # one-to-one


@pytest.mark.parametrize("chunk,col", [(7, 3), (13, 16), (50, 1), (1, 70)])
def test_knn_graph_tiled_over_rows_and_columns_equals_a_brute_force_graph(chunk, col):
    a, b, k = torch.randn(50, 8), torch.randn(70, 8), 5
    graph = matching.knn_cosine_graph(a, b, k=k, chunk_size=chunk, col_chunk=col).tocoo()
    cos = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T  # (50, 70), whole
    edges = {(i, int(j)) for i in range(50) for j in cos[i].topk(k).indices}
    edges |= {(int(i), j) for j in range(70) for i in cos[:, j].topk(k).indices}
    assert set(zip(graph.row.tolist(), graph.col.tolist())) == edges and graph.nnz == len(edges)
    np.testing.assert_allclose(graph.data, cos[graph.row, graph.col].numpy(), atol=1e-6)


def test_sparse_matching_without_full_matching_falls_back_to_dense(caplog):
    # A hub: every row's nearest column is column 0, and every other column's nearest row is row 0, so with k=1 rows
    # 1..n-1 share a single neighbour and the graph has no full matching.
    n = 5
    h, e, f = torch.eye(1 + 2 * n)[0], torch.eye(1 + 2 * n)[1 : 1 + n], torch.eye(1 + 2 * n)[1 + n :]
    a = torch.stack([h + 0.1 * e[0]] + [h + 0.3 * e[0] + 0.3 * f[i] for i in range(1, n)])
    b = torch.stack([h + 0.5 * e[j] for j in range(n)])
    graph = matching.knn_cosine_graph(a, b, k=1)
    assert graph[:, 1:].nnz == n - 1 and graph[1:, 1:].nnz == 0
    with caplog.at_level("WARNING", logger="saelib.matching"):
        rows, cols, cos = matching.sparse_hungarian_match(a, b, k=1)
    assert "no full matching" in caplog.text
    dense = matching.hungarian_match(a, b)
    assert np.array_equal(rows, dense[0]) and np.array_equal(cols, dense[1]) and np.allclose(cos, dense[2])


def test_matching_method_auto_and_scores(one, monkeypatch):
    sae = _copies(one, 3, permute=True)
    for method in ("dense", "sparse", "auto"):
        assert matching.pw_mcc(sae, method) == pytest.approx(1.0)
        assert np.allclose(matching.pairwise_shared_fraction(sae, method=method), 1.0)
    monkeypatch.setattr(matching, "SPARSE_MATCH_ABOVE", 10)
    calls = []
    monkeypatch.setattr(
        matching, "sparse_hungarian_match", lambda a, b, k: calls.append(k) or matching.hungarian_match(a, b)
    )
    matching.pw_mcc(sae)
    assert calls == [16, 16, 16]
    with pytest.raises(ValueError, match="method"):
        matching.hungarian_match(torch.randn(3, 2), torch.randn(3, 2), method="greedy")


def test_seed_pair_scores_match_the_single_pair_functions(one):
    sae = SAE(SAEConfig(d_in=24, d_sae=64, k=4, n_seeds=3, seed=5))
    df = matching.seed_pair_scores(sae, 0.3)
    assert list(zip(df.s, df.t)) == [(0, 1), (0, 2), (1, 2)]
    for r in df.itertuples():
        assert r.shared_fraction == pytest.approx(matching.shared_fraction(sae, r.s, r.t, 0.3))
    assert df.matched_cosine.mean() == pytest.approx(matching.pw_mcc(sae))
    copies = matching.seed_pair_scores(_copies(one, 3, permute=True))
    assert np.allclose(copies.shared_fraction, 1) and np.allclose(copies.matched_cosine, 1)


def test_shared_needs_both_decoder_and_encoder_above_threshold(one):
    pair = matching.MatchedPair(np.array([0.9, 0.9, 0.5, 0.71]), np.array([0.9, 0.5, 0.9, 0.71]))
    assert pair.shared(0.7).tolist() == [True, False, False, True]
    assert pair.shared(0.71).tolist() == [True, False, False, False]  # strictly above
    # A seed whose encoder is another seed's but whose decoder is random: every decoder match fails the rule.
    sae = _copies(one, 2)
    with torch.no_grad():
        sae.W_dec[1] = torch.randn_like(sae.W_dec[1])
    assert matching.shared_fraction(sae, 0, 1) == 0
    scores = matching.seed_pair_scores(sae)
    assert scores.shared_fraction[0] == 0 and scores.decoder_shared[0] < 0.2


def test_direction_stability_of_copies_and_of_random_draws():
    base = torch.randn(1, 40, 16)
    copies = st.direction_stability(base.expand(3, -1, -1) * 2.0)
    assert torch.all(copies.stability == 1)
    random = st.direction_stability(torch.randn(3, 40, 256))
    assert random.stability.max() == 0
