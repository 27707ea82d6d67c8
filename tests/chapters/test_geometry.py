"""Chapter 3's analysis on stacks whose geometry is known: a shared subspace tiled differently by each seed,
separate subspaces per seed, and planted feature groups."""

from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import planted_planes as planted

from saelib import subspace as sp
from saelib.chapters import geometry
from saelib.stability import DEAD, INTERMEDIATE, STABLE, UNSTABLE


def _stack(d=48, S=3, F=40, r=4, n_unstable=8, n_stable=10, shared=True, seed=0):
    """Decoder directions of S seeds: identical stable rows; unstable rows are different orthonormal bases of one
    shared rank-r subspace (`shared`) or of a separate subspace per seed; the rest random (intermediate), the last
    row dead."""
    g = torch.Generator().manual_seed(seed)
    q = sp.random_subspace(d, d, g)
    stable = torch.randn(n_stable, d, generator=g)
    dirs = torch.randn(S, F, d, generator=g)
    label = torch.full((S, F), INTERMEDIATE, dtype=torch.int8)
    for s in range(S):
        basis = q[:r] if shared else q[r * s : r * (s + 1)]
        dirs[s, :n_stable], label[s, :n_stable] = stable, STABLE
        # a tight frame (rotated orthonormal bases of the subspace): every direction of it carries equal energy
        rot = torch.cat([torch.linalg.qr(torch.randn(r, r, generator=g))[0] for _ in range(n_unstable // r)])
        dirs[s, n_stable : n_stable + n_unstable] = rot @ basis
        label[s, n_stable : n_stable + n_unstable] = UNSTABLE
        label[s, -1] = DEAD
    return dirs, label


def test_geometry_of_a_shared_subspace_with_unmatched_features():
    d, r = 48, 4
    dirs, label = _stack(d=d, r=r)
    cfg = geometry.GeometryConfig(rank_fractions=(2 / 48, 4 / 48), n_draws=2)
    geo = geometry.analyze_geometry(dirs, label, torch.eye(d), cfg)
    spans = geo.spans.groupby(["spec", "source"]).overlap.mean()
    # the unstable rows of every seed span the same rank-4 subspace: overlap 1, angles 0 ...
    u = geo.spans[(geo.spans.source == "unstable") & (geo.spans.spec == "energy")]
    assert (u.rank_a == r).all() and u.overlap.min() > 0.999 and u.mean_angle_deg.max() < 1
    assert spans["top-4", "unstable"] > 0.999 and spans["top-4", "stable"] > 0.999
    # ... while per-vector matching fails: no unstable row has a cosine match >= 0.9 in another seed
    sets = geometry.split_sets(dirs, label)
    cos = (sets["unstable"][0] @ sets["unstable"][1].T).amax(1)
    assert cos.mean() < 0.9
    # baselines of the same rank sit near max(r_a, r_b) / d
    rnd = geo.spans[(geo.spans.source == "random") & (geo.spans.spec == "top-4")]
    assert rnd.overlap.mean() == pytest.approx(4 / d, abs=0.06)
    assert (geo.spans[geo.spans.spec == "energy"].groupby(["seed_a", "seed_b"]).rank_a.nunique() == 1).all()
    cover = geo.coverage[geo.coverage.spec == "energy"].groupby("source").mean_share.mean()
    assert cover["unstable"] > 0.999 and cover["random"] < 0.35
    ranks = geo.ranks[geo.ranks.source == "unstable"]
    assert (ranks.n == 8).all() and (ranks.energy_rank == r).all()
    np.testing.assert_allclose(ranks.participation_ratio, r, rtol=1e-5)
    summary = geometry.summarize_geometry(geo, d, spec="top-4")
    assert summary["overlap_fixed_unstable"] > 0.999 and summary["excess_fixed"] > 0.9
    assert summary["coverage_unstable"] == pytest.approx(cover["unstable"])


def test_geometry_of_orthogonal_unstable_subspaces():
    d, r = 48, 4
    dirs, label = _stack(d=d, r=r, shared=False)
    cfg = geometry.GeometryConfig(rank_fractions=(4 / 48,), n_draws=1)
    geo = geometry.analyze_geometry(dirs, label, torch.eye(d), cfg)
    u = geo.spans[(geo.spans.source == "unstable") & (geo.spans.spec == "energy")]
    assert u.overlap.max() < 1e-8 and u.mean_angle_deg.min() > 89.9
    cover = geo.coverage[(geo.coverage.source == "unstable") & (geo.coverage.spec == "energy")]
    assert cover.mean_share.max() < 1e-8
    assert geometry.summarize_geometry(geo, d, spec="top-4")["excess_energy"] < 0


def test_geometry_input_errors_and_config():
    dirs, label = _stack()
    with pytest.raises(ValueError, match="label"):
        geometry.analyze_geometry(dirs, label[:, :-1], torch.eye(48))
    with pytest.raises(ValueError, match="energy"):
        geometry.GeometryConfig(energy=0)
    with pytest.raises(ValueError, match="rank_fractions"):
        geometry.GeometryConfig(rank_fractions=(0.0,))
    with pytest.raises(ValueError, match="n_draws"):
        geometry.GeometryConfig(n_draws=0)
    assert geometry.GeometryConfig().ranks(640) == [8, 16, 32, 64, 128]
    with pytest.raises(ValueError, match="max_tokens"):
        sp.stream_covariance([torch.randn(4, 3)], max_tokens=1)
    with pytest.raises(ValueError, match="at least 2 rows"):
        sp.stream_covariance([torch.randn(1, 3)])
    assert geometry.excess(0.3, 0.3) == 0 and geometry.excess(1.0, 0.3) == pytest.approx(1.0)
    assert np.isnan(geometry.excess(1.0, 1.0))


def test_cached_frames_compute_once(tmp_path):
    calls = []

    def compute(x):
        calls.append(x)
        return {"a": pd.DataFrame({"x": [x, x + 1]})}

    first = geometry.cached_frames("geometry", "t", {"x": 1}, partial(compute, 1))
    second = geometry.cached_frames("geometry", "t", {"x": 1}, partial(compute, 1))
    assert calls == [1] and second["a"].equals(first["a"]) and first["a"].x.tolist() == [1, 2]
    geometry.cached_frames("geometry", "t", {"x": 2}, partial(compute, 2))
    assert calls == [1, 2]


def test_stack_tables_cached_and_summarized():
    dirs, truth = planted(noise=6)
    label = torch.where(truth >= 0, UNSTABLE, STABLE).to(torch.int8)
    geo_cfg = geometry.GeometryConfig(rank_fractions=(2 / 32, 4 / 32), n_draws=1)
    tables = geometry.stack_tables(dirs, label, torch.eye(32), geo_cfg, name="planted")
    assert {"ranks", "spans", "coverage", "angles", "shares", "groups", "members", "activations"} <= set(tables)
    again = geometry.stack_tables(dirs, label, torch.eye(32), geo_cfg, name="planted")
    assert again["spans"].equals(tables["spans"])
    other = geometry.stack_tables(dirs, label.flip(1), torch.eye(32), geo_cfg, name="planted")  # new inputs: rebuilt
    assert not other["members"].equals(tables["members"])
    assert geometry.fixed_spec(tables) == "top-2"
    summary = geometry.stack_summary(tables, spec="top-4")
    assert summary["n_groups"] == 2 and summary["grouped_share"] == 1.0
    assert summary["overlap_fixed_unstable"] == pytest.approx(1.0, abs=1e-5)  # both planes, every seed: rank 4
    assert summary["pr_over_d_activations"] == pytest.approx(1.0)
    assert summary["group_cos_to_span"] > 0.999 > 0.9 > summary["group_max_cos"]


def test_alignment_with_the_top_principal_components():
    d, r = 48, 4
    dirs, label = _stack(d=d, r=r)
    shared = sp.span_basis(geometry.split_sets(dirs, label)["unstable"][0], rank=r)
    cov = torch.eye(d) + 9 * shared.T @ shared  # the unstable subspace is where the data varies most
    geo = geometry.analyze_geometry(dirs, label, cov, geometry.GeometryConfig(rank_fractions=(r / d,), n_draws=1))
    al = geo.alignment[geo.alignment.spec == f"top-{r}"].groupby("source").overlap.mean()
    assert al["unstable"] == pytest.approx(1.0, abs=1e-5)
    assert al["random"] < 0.4 and al["stable"] < 0.6
    assert geometry.summarize_geometry(geo, d, spec=f"top-{r}")["pca_fixed_unstable"] == pytest.approx(al["unstable"])


def test_example_members_and_claims_table():
    dirs, truth = planted()
    label = torch.where(truth >= 0, UNSTABLE, STABLE).to(torch.int8)
    tables = geometry.stack_tables(dirs, label, torch.eye(32), geometry.GeometryConfig(n_draws=1))
    ex = geometry.example_members(dirs, tables)
    assert ex.group in (0, 1) and ex.seeds == [0, 1, 2] and [len(m) for m in ex.members] == [3, 3, 3]
    plane = sp.span_basis(torch.cat(ex.members), rank=2)
    assert sp.subspace_overlap(ex.basis, plane) == pytest.approx(1.0, abs=1e-5)
    cfg = geometry.GeometryConfig(n_draws=1)
    none = geometry.stack_tables(dirs, torch.full_like(label, STABLE), torch.eye(32), cfg)  # no unstable latent
    assert geometry.example_members(dirs, none).group == -1
    claims = geometry.claims_table({"rank_over_d_unstable": 0.1, "rank_over_d_subset": 0.3,
                                    "overlap_fixed_unstable": 0.2, "overlap_fixed_random": 0.5}, tau=0.7)
    verdicts = dict(zip(claims.measure + "|" + claims.baseline.astype(str), claims.verdict, strict=True))
    assert verdicts["90%-energy rank / d|0.3"] == "holds"
    assert verdicts["overlap, fixed rank|0.5"] == "does not hold"
    assert (claims.verdict == "not testable here").sum() == len(claims) - 2


def test_angle_spectra_ascend_and_match_principal_angles():
    dirs, label = _stack(shared=False, n_unstable=8, r=4)
    dirs[1, 10:18] = dirs[0, 10:18] + 0.3 * torch.randn(8, 48)  # seed 1 near seed 0: small and large angles
    geo = geometry.analyze_geometry(dirs, label, torch.eye(48), geometry.GeometryConfig(rank_fractions=(4 / 48,)))
    a = geo.angles[(geo.angles.source == "unstable") & (geo.angles.spec == "top-4")].sort_values("k").angle_deg
    assert (np.diff(a.to_numpy()) >= 0).all()
    sets = geometry.split_sets(dirs, label)["unstable"]
    ref = torch.rad2deg(sp.principal_angles(sp.span_basis(sets[0], rank=4), sp.span_basis(sets[1], rank=4)))
    np.testing.assert_allclose(a.to_numpy(), ref.numpy(), atol=1e-3)


def test_compare_words():
    assert geometry.compare(0.5, 0.2) == "above" and geometry.compare(0.1, 0.2, "more", "less") == "less"
    assert geometry.compare(float("nan"), 0.2) == "not comparable here"
