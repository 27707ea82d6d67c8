"""The paper's anchor estimator: known answers on copies, random directions and planted partial matches."""

import math

import pytest
import torch

from saelib import stability as st


def test_exact_copies_give_p_one_and_stable():
    base = torch.randn(1, 30, 16)
    out = st.anchor_stability(base.expand(5, -1, -1) * 3.0, anchor=2)
    assert out.comparisons == [0, 1, 3, 4] and out.max_cos.shape == (4, 30)
    assert torch.all(out.p == 1) and torch.all(out.label == st.STABLE)


def test_independent_random_directions_sit_at_the_null():
    out = st.anchor_stability(torch.randn(9, 64, 256))  # random unit vectors in 256-d: cosines ~ 0.06
    assert out.p.max() == 0 and torch.all(out.label == st.UNSTABLE)


def test_planted_partial_matches_give_the_exact_share():
    # Anchor latent i has an exact copy in the first i comparison seeds and nothing near it in the others.
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(128, 128, generator=g))  # orthonormal: unused rows have cosine 0
    N, F = 8, 9
    anchor = q[:F]
    seeds = [anchor]
    for n in range(N):  # comparison seed n keeps anchor latent i when i > n, else an orthogonal direction
        seeds.append(torch.stack([anchor[i] if i > n else q[F + n * F + i] for i in range(F)]))
    out = st.anchor_stability(torch.stack(seeds), anchor=0, threshold=0.7, epsilon=0.05)
    expected = torch.tensor([min(i, N) / N for i in range(F)])
    torch.testing.assert_close(out.p, expected)
    assert out.label[0] == st.UNSTABLE and out.label[-1] == st.STABLE
    assert torch.all(out.label[1:-1] == st.INTERMEDIATE)


def test_many_to_one_matching_lets_two_anchor_latents_share_a_partner():
    d = torch.eye(4)
    anchor = torch.stack([d[0], (d[0] + 0.1 * d[1]) / math.hypot(1, 0.1)])
    other = torch.stack([d[0], d[2]])
    out = st.anchor_stability(torch.stack([anchor, other]))
    assert torch.all(out.p == 1)  # Hungarian matching would leave one of them unmatched


def test_epsilon_edges_and_dead_latents():
    p = torch.tensor([0.0, 0.05, 0.0500001, 0.5, 0.9499999, 0.95, 1.0, float("nan")])
    label = st.endpoint_labels(p, 0.05)
    U, I, S, D = st.UNSTABLE, st.INTERMEDIATE, st.STABLE, st.DEAD
    assert label.tolist() == [U, U, I, I, I, S, S, D]
    with pytest.raises(ValueError, match="epsilon"):
        st.endpoint_labels(p, 0.5)
    dirs = torch.randn(1, 6, 8).expand(3, -1, -1).clone()
    alive = torch.ones(3, 6, dtype=torch.bool)
    alive[0, 1] = False  # a dead anchor latent: NaN, DEAD
    alive[1, 2] = False  # a dead partner is never a match
    out = st.anchor_stability(dirs, alive=alive)
    assert math.isnan(out.p[1]) and out.label[1] == st.DEAD and out.p[2] == 0.5


def test_chunking_does_not_change_the_answer():
    x = torch.randn(4, 50, 12)
    a, b = st.anchor_stability(x, chunk_size=7), st.anchor_stability(x, chunk_size=4096)
    torch.testing.assert_close(a.max_cos, b.max_cos)
    # and the anchor's row of the all-pairs max cosine agrees
    full, _ = st.cross_seed_max_cosine(x)
    torch.testing.assert_close(a.max_cos, full[0, 1:], rtol=1e-5, atol=1e-6)
