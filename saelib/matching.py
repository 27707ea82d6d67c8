"""Whole-SAE consistency of two seeds by one-to-one (Hungarian) matching of their latents.

- `hungarian_match`: dense (`scipy.optimize.linear_sum_assignment`) or, for large dictionaries, sparse on each latent's
  k nearest neighbours (`sparse_hungarian_match`).
- `shared_fraction`, `seed_pair_scores`: Paulo & Belrose 2025 (arXiv 2501.16615): a latent is shared when its
  matched decoder and encoder cosines both exceed 0.7.
- `pw_mcc`: mean Hungarian-matched decoder cosine averaged over seed pairs (Song et al. 2025, arXiv 2505.20254).
"""

from __future__ import annotations

import itertools
import logging
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from torch import Tensor

from saelib.sae import SAE
from saelib.subspace import unit_rows

log = logging.getLogger(__name__)


SPARSE_MATCH_ABOVE = 4096
"""`method="auto"` matches densely up to this many latents and sparsely (k-nearest-neighbour graph) above. On a
2-core CPU the dense assignment takes ~1.5 s at 4k latents and ~35 s (and a 2 GB float64 matrix) at 16k; the
sparse one with k=16 takes 0.3 s and 4.4 s and agrees on 90-97% of the matches (benchmarks/bench_stability.py)."""


def hungarian_match(
    a: Tensor, b: Tensor, method: str = "dense", k: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of rows of `a (n, d)` to rows of `b (m, d)` maximising total cosine.

    Args:
        method: `dense` (`scipy.optimize.linear_sum_assignment` on the full cosine matrix, exact), `sparse`
            (`sparse_hungarian_match` with `k` neighbours) or `auto` (sparse above `SPARSE_MATCH_ABOVE` latents).

    Returns:
        `(rows, cols, cosines)` as from `scipy.optimize.linear_sum_assignment` on the negated cosine matrix.
    """
    if method == "auto":
        method = "sparse" if min(len(a), len(b)) > SPARSE_MATCH_ABOVE else "dense"
    if method == "sparse":
        return sparse_hungarian_match(a, b, k=k)
    if method != "dense":
        raise ValueError(f"method={method!r} must be dense, sparse or auto")
    cos = (unit_rows(a.float()) @ unit_rows(b.float()).T).cpu().numpy()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return rows, cols, cos[rows, cols]


@torch.no_grad()
def knn_cosine_graph(a: Tensor, b: Tensor, k: int = 16, chunk_size: int = 1024, col_chunk: int = 4096) -> sp.csr_matrix:
    """Sparse `(n, m)` matrix of cosines between rows of `a (n, d)` and `b (m, d)` keeping, for every row, its `k`
    most similar columns and, for every column, its `k` most similar rows (so no vertex is left without an edge).

    Computed in blocks of `chunk_size` rows x `col_chunk` columns (memory O(chunk_size * col_chunk) whatever n and
    m are), each block's top k merged into running top-k lists of rows and columns; every stored cosine is an
    explicit entry, including zeros, so the caller must shift them away from zero before treating the matrix as a
    weighted graph.
    """
    if chunk_size < 1 or col_chunk < 1:
        raise ValueError(f"chunk_size={chunk_size} and col_chunk={col_chunk} must be >= 1")
    a, b = unit_rows(a.float()), unit_rows(b.float())
    n, m = len(a), len(b)
    kr, kc = min(k, m), min(k, n)
    rows, cols, vals = [], [], []
    col_val = torch.full((kc, m), -torch.inf, device=a.device)  # running top-k rows of every column
    col_idx = torch.zeros((kc, m), dtype=torch.long, device=a.device)
    for i0 in range(0, n, chunk_size):
        block = a[i0 : i0 + chunk_size]  # (ci, d)
        row_val = torch.full((len(block), kr), -torch.inf, device=a.device)  # running top-k columns of its rows
        row_idx = torch.zeros((len(block), kr), dtype=torch.long, device=a.device)
        for j0 in range(0, m, col_chunk):
            j1 = min(m, j0 + col_chunk)
            sim = block @ b[j0:j1].T  # (ci, cj)
            v, j = sim.topk(min(kr, j1 - j0), dim=1)
            row_val, pos = torch.cat([row_val, v], 1).topk(kr, dim=1)
            row_idx = torch.cat([row_idx, j + j0], 1).gather(1, pos)
            v, i = sim.topk(min(kc, len(sim)), dim=0)  # (<=kc, cj)
            v, pos = torch.cat([col_val[:, j0:j1], v]).topk(kc, dim=0)
            col_idx[:, j0:j1] = torch.cat([col_idx[:, j0:j1], i + i0]).gather(0, pos)
            col_val[:, j0:j1] = v
        rows.append(torch.arange(i0, i0 + len(block), device=a.device).repeat_interleave(kr))
        cols.append(row_idx.flatten())
        vals.append(row_val.flatten())
    rows.append(col_idx.flatten())
    cols.append(torch.arange(m, device=a.device).repeat(kc))
    vals.append(col_val.flatten())
    r, c, v = (torch.cat(x).cpu().numpy() for x in (rows, cols, vals))
    _, first = np.unique(r.astype(np.int64) * m + c, return_index=True)  # an edge found from both sides, once
    return sp.csr_matrix((v[first], (r[first], c[first])), shape=(n, m))


def sparse_hungarian_match(a: Tensor, b: Tensor, k: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`hungarian_match` restricted to the `knn_cosine_graph` of `a` and `b`: the best one-to-one matching among
    each latent's `k` nearest neighbours (`scipy.sparse.csgraph.min_weight_full_bipartite_matching` on the cost
    `2 - cos`, which is positive as that function requires). Equal to the dense matching whenever the dense one uses
    only graph edges, as when two SAEs share their directions up to noise. When the graph has no full matching it
    logs a warning and returns the dense matching.

    Returns:
        `(rows, cols, cosines)`, rows sorted, as `hungarian_match`.
    """
    graph = knn_cosine_graph(a, b, k)
    cost = graph.copy()
    cost.data = 2.0 - cost.data
    try:
        rows, cols = min_weight_full_bipartite_matching(cost)
    except ValueError:
        log.warning(
            "the %d-nearest-neighbour graph of %d x %d latents has no full matching; matching densely",
            k,
            len(a),
            len(b),
        )
        return hungarian_match(a, b, method="dense")
    return rows, cols, np.asarray(graph[rows, cols]).ravel()


class MatchedPair(NamedTuple):
    """Two seeds' latents matched one to one by decoder cosine (Hungarian), with both cosines of every match."""

    decoder_cos: np.ndarray
    """`(d_sae,)` decoder cosine of each matched pair."""
    encoder_cos: np.ndarray
    """`(d_sae,)` encoder cosine of the same pairs."""

    def shared(self, threshold: float) -> np.ndarray:
        """`(d_sae,)` bool: the shared-feature rule of Paulo & Belrose 2025 (arXiv 2501.16615), a matched pair is
        shared when its decoder and its encoder cosines both exceed `threshold`."""
        return (self.decoder_cos > threshold) & (self.encoder_cos > threshold)


def match_seed_pair(decoder: Tensor, encoder: Tensor, s: int, t: int, method: str = "auto") -> MatchedPair:
    """Hungarian matching of seed s's latents to seed t's by decoder cosine, with the matched encoder cosines.

    Args:
        decoder, encoder: unit directions `(S, d_sae, d_in)` (`SAE.decoder_directions()`, `encoder_directions()`),
            computed once by the caller for all its pairs.
        method: as in `hungarian_match` (`auto`: dense up to `SPARSE_MATCH_ABOVE` latents).
    """
    rows, cols, dec_cos = hungarian_match(decoder[s], decoder[t], method)
    enc_cos = (encoder[s][rows] * encoder[t][cols]).sum(-1).cpu().numpy()
    return MatchedPair(np.asarray(dec_cos), enc_cos)


def shared_fraction(sae: SAE, s: int, t: int, threshold: float = 0.7, method: str = "auto") -> float:
    """Share of seed s's latents shared with seed t (Paulo & Belrose 2025): `MatchedPair.shared` over the
    `match_seed_pair` matching. `method` as in `hungarian_match`."""
    pair = match_seed_pair(sae.decoder_directions(), sae.encoder_directions(), s, t, method)
    return float(pair.shared(threshold).sum() / sae.cfg.d_sae)


def pairwise_shared_fraction(sae: SAE, threshold: float = 0.7, method: str = "auto") -> np.ndarray:
    """`(S, S)` matrix of `shared_fraction` over seed pairs (symmetric; 1 on the diagonal)."""
    S = sae.n_seeds
    out = np.eye(S)
    for s, t in itertools.combinations(range(S), 2):
        out[s, t] = out[t, s] = shared_fraction(sae, s, t, threshold, method)
    return out


def pw_mcc(sae: SAE, method: str = "auto") -> float:
    """Pairwise mean matched cosine (Song et al. 2025): the mean Hungarian-matched decoder cosine, averaged over
    all pairs of seeds. `method` as in `hungarian_match`."""
    dec = sae.decoder_directions()
    pairs = list(itertools.combinations(range(sae.n_seeds), 2))
    if not pairs:
        raise ValueError("pw_mcc needs at least 2 seeds")
    return float(np.mean([hungarian_match(dec[s], dec[t], method)[2].mean() for s, t in pairs]))


def seed_pair_scores(sae: SAE, threshold: float = 0.7, method: str = "auto") -> pd.DataFrame:
    """Whole-SAE consistency of every pair of seeds from one Hungarian matching per pair: the shared fraction (Paulo
    & Belrose 2025: matched decoder and encoder cosines both above `threshold`) and the mean matched decoder cosine
    (its mean over pairs is `pw_mcc`, Song et al. 2025).

    Returns:
        One row per pair `s < t`: `s`, `t`, `shared_fraction`, `matched_cosine`, and the two halves of the
        shared rule on their own: `decoder_shared` and `encoder_shared` (matched pairs whose decoder, resp. encoder,
        cosine exceeds `threshold`).
    """
    dec, enc = sae.decoder_directions(), sae.encoder_directions()
    rows_out = []
    for s, t in itertools.combinations(range(sae.n_seeds), 2):
        pair = match_seed_pair(dec, enc, s, t, method)
        rows_out.append(
            {
                "s": s,
                "t": t,
                "shared_fraction": float(pair.shared(threshold).sum() / sae.cfg.d_sae),
                "matched_cosine": float(pair.decoder_cos.mean()),
                "decoder_shared": float((pair.decoder_cos > threshold).mean()),
                "encoder_shared": float((pair.encoder_cos > threshold).mean()),
            }
        )
    if not rows_out:
        raise ValueError("seed_pair_scores needs at least 2 seeds")
    return pd.DataFrame(rows_out)
