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
