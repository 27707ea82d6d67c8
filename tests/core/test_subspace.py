import numpy as np
import pytest
import scipy.linalg
import torch

from saelib import subspace as sp


def test_identical_and_orthogonal_subspaces():
    q = sp.random_subspace(10, 6, torch.Generator().manual_seed(0))
    a, b = q[:3], q[3:]
    assert torch.allclose(sp.principal_angles(a, a), torch.zeros(3), atol=1e-3)
    torch.testing.assert_close(torch.rad2deg(sp.principal_angles(a, b)), torch.full((3,), 90.0))
    assert sp.subspace_overlap(a, a) == pytest.approx(1.0)
    assert sp.subspace_overlap(a, b) == pytest.approx(0.0, abs=1e-10)


def test_angles_agree_with_scipy():
    g = torch.Generator().manual_seed(1)
    a, b = sp.random_subspace(12, 4, g), sp.random_subspace(12, 3, g)
    ours = sp.principal_angles(a, b).numpy()
    ref = np.sort(scipy.linalg.subspace_angles(a.T.double().numpy(), b.T.double().numpy()))
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_rotation_inside_subspace_keeps_overlap_but_breaks_matching():
    g = torch.Generator().manual_seed(2)
    basis = sp.random_subspace(32, 4, g)
    feats = torch.randn(8, 4, generator=g) @ basis  # 8 features in a rank-4 subspace
    rot, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
    rotated = (feats @ basis.T) @ rot @ basis  # the same features, rotated inside the subspace
    assert sp.subspace_overlap(sp.span_basis(feats, rank=4), sp.span_basis(rotated, rank=4)) == pytest.approx(1.0)
    fn = feats / feats.norm(dim=1, keepdim=True)
    rn = rotated / rotated.norm(dim=1, keepdim=True)
    assert (fn @ rn.T).amax(1).mean() < 0.95  # per-vector matching drops
    torch.testing.assert_close(sp.projection_share(rotated, basis), torch.ones(8))


def test_energy_rank_and_participation_ratio():
    v = torch.zeros(5, 8)
    v[:, :3] = torch.eye(3).repeat(2, 1)[:5]
    assert sp.energy_rank(v, 0.99) == 3
    assert sp.participation_ratio(torch.eye(4)) == pytest.approx(4.0)
    assert sp.participation_ratio(torch.ones(5, 3)) == pytest.approx(1.0)
    assert sp.span_basis(v, energy=0.9).shape == (3, 8)


def test_random_overlap_baseline_matches_expectation():
    base = sp.random_overlap_baseline(40, 4, 4, n_draws=400)
    assert base.overlap_mean == pytest.approx(sp.expected_random_overlap(40, 4, 4), rel=0.1)
    assert 45 < base.mean_angle_deg < base.max_angle_deg < 90


def test_covariance_directions_reproduce_spectrum():
    g = torch.Generator().manual_seed(3)
    q = sp.random_subspace(6, 6, g)
    evals = torch.tensor([9.0, 4.0, 1.0, 0.25, 0.04, 0.01])
    cov = q.T @ torch.diag(evals) @ q
    z = sp.covariance_directions(cov, 100_000, g)
    # unit directions of N(0, cov): their second moment has the same eigenvectors, in the same order
    m = z.T.double() @ z.double() / z.shape[0]
    w, v = torch.linalg.eigh(m)
    top = v[:, -1]
    assert abs(float(top @ q[0].double())) > 0.99
    assert torch.all(w.flip(0)[:-1] >= w.flip(0)[1:])


# --- chapter 3: covariance, ranks, cross-seed geometry ----------------------------------------------------------------


def _known_gaussian(d=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    q = sp.random_subspace(d, d, g).double()
    evals = torch.tensor([9.0, 4.0, 1.0, 0.25, 0.04, 0.01], dtype=torch.float64)[:d]
    return q.T @ torch.diag(evals) @ q, evals, g


def test_stream_covariance_recovers_a_known_gaussian_and_matches_numpy():
    cov, evals, g = _known_gaussian()
    root = sp.covariance_root(cov)
    torch.testing.assert_close(root @ root.T, cov)
    mean = torch.arange(6, dtype=torch.float64) * 10  # a large mean: the shifted sums must not lose precision
    x = (mean + torch.randn(50_000, 6, generator=g, dtype=torch.float64) @ root.T).float()
    c = sp.stream_covariance(x.split(999), max_tokens=40_000)
    assert c.n_tokens == 40_000
    np.testing.assert_allclose(c.cov.numpy(), np.cov(x[:40_000].double().numpy(), rowvar=False), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(c.mean.numpy(), x[:40_000].double().mean(0).numpy(), atol=1e-5)
    est = torch.linalg.eigvalsh(c.cov).flip(0)
    np.testing.assert_allclose(est.numpy(), evals.numpy(), rtol=0.05)  # the spectrum of the covariance


def test_covariance_null_reproduces_the_covariance_spectrum():
    cov, evals, g = _known_gaussian()
    z = sp.covariance_directions(cov, 20_000, g)
    assert torch.allclose(z.norm(dim=1), torch.ones(len(z)))
    # Undo the normalisation with the norms a N(0, cov) draw would have: the same draws, unnormalised, have
    # second moment cov; here: their principal directions are cov's eigenvectors, ranked as its eigenvalues.
    s2, vh = sp.ordered_basis(z)
    _, evecs = torch.linalg.eigh(cov)
    top = evecs.flip(1).T[:3].float()
    assert torch.rad2deg(sp.principal_angles(vh[:3], top)).max() < 3
    assert torch.all(s2[:-1] >= s2[1:])
    iso = sp.ordered_basis(sp.unit_rows(torch.randn(20_000, 6, generator=g)))[1]
    assert torch.rad2deg(sp.principal_angles(iso[:3], top)).max() > 20  # isotropic draws prefer no direction


def test_ordered_basis_matches_span_basis_on_both_paths():
    g = torch.Generator().manual_seed(4)
    for n in (5, 40):  # n < d: SVD; n >= d: Gram eigendecomposition
        v = torch.randn(n, 12, generator=g)
        s2, vh = sp.ordered_basis(v)
        ref = torch.linalg.svdvals(v / v.norm(dim=1, keepdim=True)).pow(2)
        torch.testing.assert_close(s2.float(), ref, rtol=1e-4, atol=1e-5)
        for r in (1, 3, 5):
            assert sp.subspace_overlap(vh[:r], sp.span_basis(v, rank=r)) == pytest.approx(1.0, abs=1e-4)
        torch.testing.assert_close(vh @ vh.T, torch.eye(len(vh)), atol=1e-5, rtol=0)


def test_rank_stats_known_answers():
    st = sp.rank_stats(torch.eye(8)[:5], energy=0.9)
    assert st == sp.RankStats(5, pytest.approx(5.0), 5)
    v = torch.randn(30, 10)
    st = sp.rank_stats(v, 0.9)
    assert st.participation_ratio == pytest.approx(sp.participation_ratio(v), rel=1e-6)
    assert st.energy_rank == sp.energy_rank(v / v.norm(dim=1, keepdim=True), 0.9)
    assert sp.rank_stats(torch.zeros(0, 10)).n == 0


def test_ordered_basis_of_a_rank_deficient_set_keeps_only_its_span():
    v = torch.randn(2, 20).repeat(3, 1)  # 6 rows spanning 2 dimensions
    s2, vh = sp.ordered_basis(v)
    assert len(s2) == 6 and len(vh) == 2
    torch.testing.assert_close(vh @ vh.T, torch.eye(2), atol=1e-5, rtol=0)
    assert sp.subspace_overlap(vh, sp.span_basis(v, rank=2)) == pytest.approx(1.0, abs=1e-6)
