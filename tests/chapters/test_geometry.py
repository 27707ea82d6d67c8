"""Chapter 3's analysis on stacks whose geometry is known: a shared subspace tiled differently by each seed,
separate subspaces per seed, and planted feature groups; its summary and verdicts on hand-built inputs; `run` on a
tiny offline grid."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import make_tiny_model, tiny_grid_study
from helpers import planted_planes as planted

from saelib import subspace as sp
from saelib import train
from saelib.chapters import common, geometry, geometry_analysis, geometry_paper, grid
from saelib.chapters.grid import FeatureSplit
from saelib.groups import GroupConfig
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


def test_stack_tables_cached_and_summarized(monkeypatch, _artifacts_in_tmp):
    dirs, truth = planted(noise=6)
    label = torch.where(truth >= 0, UNSTABLE, STABLE).to(torch.int8)
    geo_cfg = geometry.GeometryConfig(rank_fractions=(2 / 32, 4 / 32), n_draws=1)
    tables = geometry.stack_tables(dirs, label, torch.eye(32), geo_cfg, name="planted")
    assert set(tables) == {
        "ranks",
        "spans",
        "coverage",
        "angles",
        "shares",
        "alignment",
        "groups",
        "members",
        "activations",
    }
    assert len(list((_artifacts_in_tmp / "geometry").glob("planted-*/result.pt"))) == 1  # one cached_result
    real = geometry_analysis._stack_tables  # where `stack_tables` looks it up
    monkeypatch.setattr(geometry_analysis, "_stack_tables", lambda *a: pytest.fail("recomputed cached tables"))
    again = geometry.stack_tables(dirs, label, torch.eye(32), geo_cfg, name="planted")
    assert again["spans"].equals(tables["spans"]) and again["groups"].equals(tables["groups"])
    monkeypatch.setattr(geometry_analysis, "_stack_tables", real)
    other = geometry.stack_tables(dirs, label.flip(1), torch.eye(32), geo_cfg, name="planted")  # new inputs: rebuilt
    assert not other["members"].equals(tables["members"])
    assert geometry.fixed_spec(tables) == "top-2" and geometry.fixed_spec(tables, fraction=1 / 8) == "top-4"
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


def test_example_members():
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


# --- study, summary and claims ------------------------------------------------------------------------------------


def test_study_presets_tie_groups_to_the_grids_threshold():
    for scale in ("smoke", "default", "gpu", "paper"):
        st = geometry.study(scale, "cpu")
        assert st.grid == grid.study(scale, "cpu")
        assert st.groups.min_share == st.grid.stability.threshold**2  # a cosine of tau to a span
        assert st.geometry == geometry.GeometryConfig()
    st = geometry.study("smoke", "cpu", fixed_fraction=0.1, geometry=None)
    assert st.fixed_fraction == 0.1 and st.geometry == geometry.GeometryConfig()
    with pytest.raises(ValueError, match="fixed_fraction"):
        geometry.study("smoke", "cpu", fixed_fraction=0.0)
    with pytest.raises(ValueError, match="SCALE"):
        geometry.study("huge")


def _split(label: torch.Tensor) -> FeatureSplit:
    S, F = label.shape
    return FeatureSplit(
        stability=torch.zeros(S, F),
        mean_max_cos=torch.zeros(S, F),
        max_cos=torch.zeros(S, S, F),
        label=label,
        threshold=0.7,
        frequency=(label != DEAD).float(),
        mean_activation=torch.ones(S, F),
        stable_at=0.8,
        unstable_at=0.2,
    )


def _result(shared: bool) -> geometry.GeometryResult:
    """The result of a one-point grid whose reference stack is `_stack(shared=shared)` (d = 48, fixed rank 4)."""
    st = geometry.study(
        "smoke",
        "cpu",
        geometry=geometry.GeometryConfig(rank_fractions=(2 / 48, 4 / 48), n_draws=1),
        groups=GroupConfig(min_share=0.49, n_draws=1),
        fixed_fraction=4 / 48,
    )
    dirs, label = _stack(shared=shared)
    tables = geometry.stack_tables(dirs, label, torch.eye(48), st.geometry, st.groups)
    split = _split(label)
    paper = geometry_paper.paper_tables(
        dirs,
        label,
        split.frequency,
        split.mean_activation,
        torch.ones(label.shape),
        geometry_paper.PaperConfig(ranks=(2, 4, 8), pairs="all", n_draws=2),
    )
    return geometry.assemble_result(st, split, {grid.reference_entry(st.grid): tables}, dirs, 1234, paper=paper)


def test_summary_of_a_shared_subspace():
    result = _result(shared=True)
    s = geometry.summary(result)
    assert all(type(v) in (float, int, str) for v in s.values()), {k: type(v) for k, v in s.items()}
    assert s["n_seeds"] == 3 and s["d_sae"] == 40 and s["d_in"] == 48 and s["entry"] == result.reference.name
    assert s["unstable_share"] == pytest.approx(8 / 39)  # 8 unstable of 39 alive latents per seed
    assert (s["fixed_rank"], s["fixed_ranks"], s["cov_tokens"]) == (4, "2, 4", "1,234")
    assert s["tau"] == 0.7 and s["min_share"] == 0.49 and s["n_draws"] == 1
    assert s["ref_overlap_fixed_unstable"] == pytest.approx(1.0, abs=1e-5)
    assert s["ref_rank_over_d_unstable"] == pytest.approx(4 / 48)
    assert s["cov_top1"] == pytest.approx(1 / 48) and s["cov_top10"] == pytest.approx(10 / 48)
    assert s["cmp_fixed_random"] == s["cmp_fixed_cov"] == "above" and s["cmp_rank_subset"] == "lower-rank"
    assert (s["n_points"], s["n_beat_cov"], s["n_beat_subset"], s["n_beat_random"]) == (1, 1, 1, 1)
    assert s["rank_min"] == s["rank_max"] == pytest.approx(4 / 48)
    # the tables the chapter shows: sets in SOURCES order, specs as energy then the fixed ranks ascending
    assert list(result.ranks.index) == list(geometry.SOURCES)
    assert list(result.overlaps.index) == list(result.coverage.index) == ["energy", "top-2", "top-4"]
    assert list(result.overlaps.columns) == [*geometry.SOURCES, "expected random"]
    assert result.overlaps.loc["top-4", "unstable"] == pytest.approx(1.0, abs=1e-5)
    assert result.overlaps.loc["top-4", "expected random"] == pytest.approx(4 / 48)
    assert list(result.angles.index) == ["energy", "top-2", "top-4"]
    assert list(result.angles["mean_angle_deg"].columns) == list(geometry.SOURCES)
    assert result.angles.loc["top-4", ("mean_angle_deg", "unstable")] < 1
    assert list(result.groups.n_features) == sorted(result.groups.n_features, reverse=True)
    assert list(result.points.columns[:3]) == ["layer", "variant", "d_sae"]
    assert set(geometry.POINT_COLUMNS) <= set(result.points.columns)
    # the paper's transfer at the headline rank (4, the fixed rank): every seed tiles the same rank-4 subspace
    assert (s["transfer_r"], s["transfer_pairs"], s["transfer_n_beat"]) == (4, 6, 6)
    assert s["transfer_unstable"] == pytest.approx(1.0, abs=1e-5) and s["transfer_subspace"] < 0.3
    assert all(isinstance(s[f"f1_{m}"], float) for m in geometry_paper.MODELS)
    verdicts = {c.claim: c.verdict for c in geometry.claims(s)}
    assert verdicts["The unstable span reproduces across seeds beyond random directions of the same rank"] == "holds"
    assert verdicts["Unstable features span a lower-rank space than as many random alive latents"] == "holds"
    rows = geometry.claims(s)
    assert _claim(rows, "Unstable latents span a reproducible low-rank subspace").verdict == "holds"
    assert rows[-1].claim.startswith("The unstable span beats the covariance null at every grid point")  # stays last


def test_summary_and_verdicts_flip_for_orthogonal_subspaces():
    s = geometry.summary(_result(shared=False))
    assert s["ref_overlap_fixed_unstable"] < 1e-6 and s["cmp_fixed_random"] == "below"
    assert s["transfer_unstable"] < 1e-6
    assert _claim(geometry.claims(s), "Unstable latents span a reproducible").verdict == "does not hold"
    assert s["n_beat_cov"] == 0 and s["n_beat_random"] == 0
    rows = {c.claim: c for c in geometry.claims(s)}
    assert rows["The unstable span reproduces across seeds beyond random directions of the same rank"].verdict == (
        "does not hold"
    )
    grid_row = rows["The unstable span beats the covariance null at every grid point (sizes, variants, layers)"]
    assert grid_row.verdict == "does not hold" and grid_row.ours == "0 of 1 grid points"


def _claim(rows, start):
    (row,) = [r for r in rows if r.claim.startswith(start)]
    return row


def test_claims_verdicts_flip_with_the_numbers_and_quote_the_paper():
    s = {
        "tau": 0.7,
        "ref_er_d_unstable": 0.3,
        "ref_er_d_stable": 0.6,
        "ref_overlap_fixed_unstable": 0.4,
        "ref_overlap_fixed_random": 0.1,
        "ref_group_mean_angle_deg": 20.0,
        "ref_group_mean_angle_covariance": 50.0,
        "n_points": 4,
        "n_beat_cov": 4,
    }
    rows = geometry.claims(s)
    assert {r.verdict for r in rows} <= set(common.VERDICTS) and len(common.claims_frame(rows)) == len(rows)
    rank = _claim(rows, "Unstable features have a lower normalised effective rank")
    assert rank.verdict == "holds" and rank.ours == "0.300 vs 0.600"
    assert "0.59-0.65" in rank.paper and "(reported, secondary source)" in rank.paper
    transfer = _claim(rows, "The unstable span reproduces across seeds beyond random")
    assert transfer.verdict == "holds" and "transfers" in transfer.paper and "secondary source" in transfer.paper
    assert _claim(rows, "Group spans agree").verdict == "holds"
    assert _claim(rows, "The unstable span beats the covariance null").verdict == "holds"
    assert _claim(rows, "... beyond covariance-drawn").verdict == "not measured"  # its baseline is missing
    assert _claim(rows, "... beyond covariance-drawn").paper == common.NOT_REPORTED
    assert "cosine < 0.7" in _claim(rows, "In groups").claim
    flipped = s | {
        "ref_er_d_unstable": 0.8,
        "ref_overlap_fixed_unstable": 0.05,
        "ref_group_mean_angle_deg": 60.0,
        "n_beat_cov": 3,
    }
    rows = geometry.claims(flipped)
    for start in (
        "Unstable features have a lower normalised effective rank",
        "The unstable span reproduces across",
        "Group spans agree",
        "The unstable span beats the covariance null",
    ):
        assert _claim(rows, start).verdict == "does not hold", start
    rows = geometry.claims(s | {"ref_overlap_fixed_unstable": math.nan, "n_points": 0})
    assert _claim(rows, "The unstable span reproduces across").verdict == "not measured"
    assert _claim(rows, "The unstable span beats the covariance null").verdict == "not measured"
    assert all(r.verdict == "not measured" for r in geometry.claims({}))


# --- run on a tiny grid --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_on_a_tiny_grid_caches_every_point(tmp_path, monkeypatch, _artifacts_in_tmp):
    folder = str(make_tiny_model(tmp_path / "gpt2", "gpt2", n_layers=3, d=32))
    tiny = tiny_grid_study(folder)
    st = geometry.study("smoke", "cpu", grid=tiny)
    result = geometry.run(st)
    entries = grid.grid_entries(tiny)
    assert set(result.tables) == set(entries) and len(result.points) == len(entries) == 4
    # the reference SAEs: the reference point trained in depth (4 seeds), its tables cached beside the grid's
    assert result.reference == grid.reference_entry(tiny) and result.split.label.shape == (4, 48)
    assert result.covariance.d.iloc[0] == 32 and result.covariance.n_tokens.iloc[0] > 0
    assert len(list((_artifacts_in_tmp / "geometry").glob("L*-topk-*/result.pt"))) == 6  # and the paper's tables
    assert len(list((_artifacts_in_tmp / "geometry").glob("L*-reference-paper-*/result.pt"))) == 1
    assert result.paper.anchor == 0 and result.paper.d_in == 32
    s = geometry.summary(result)
    assert all(type(v) in (float, int, str) for v in s.values())
    assert s["n_points"] == 4 and s["d_in"] == 32 and s["n_seeds"] == 4
    assert {c.verdict for c in geometry.claims(s)} <= set(common.VERDICTS)
    # a second run reads every table, SAE and split from the cache
    monkeypatch.setattr(geometry_analysis, "_stack_tables", lambda *a: pytest.fail("recomputed cached tables"))
    monkeypatch.setattr(geometry_paper, "analyze", lambda *a, **k: pytest.fail("recomputed the paper's tables"))
    monkeypatch.setattr(train, "train_saes", lambda *a, **k: pytest.fail("retrained a cached grid point"))
    again = geometry.run(st)
    assert again.points.equals(result.points)
    assert geometry.summary(again).keys() == s.keys()
    assert all(
        v == s[k] or (isinstance(v, float) and math.isnan(v) and math.isnan(s[k]))
        for k, v in geometry.summary(again).items()
    )


def test_effective_rank_table_known_answers():
    """ER/d of an orthonormal unstable set is 1 and of a rank-1 stable set 1/n; the control draws alive latents."""
    from saelib.stability import DEAD, STABLE, UNSTABLE

    d, F = 8, 12
    q = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))[0].float()
    dirs = torch.zeros(1, F, d)
    dirs[0, :4] = q[:4]  # unstable: orthonormal
    dirs[0, 4:8] = q[4] * torch.tensor([1.0, 2.0, 3.0, 4.0]).unsqueeze(1)  # stable: one direction, four times
    dirs[0, 8:] = torch.randn(4, d)  # intermediate and dead
    label = torch.tensor([[UNSTABLE] * 4 + [STABLE] * 4 + [1, 1, DEAD, DEAD]], dtype=torch.int8)
    split = SimpleNamespace(label=label, alive=label != DEAD)
    table = geometry.effective_rank_table(dirs, split, n_draws=3).set_index("group")
    assert table.loc["unstable", "er_d"] == pytest.approx(1.0) and table.loc["stable", "er_d"] == pytest.approx(0.25)
    assert (table.n == 4).all() and table.control_mean.between(0, 1).all()
