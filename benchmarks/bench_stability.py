"""Per-feature stability of S seeds against the bare matmuls it needs, and dense against sparse Hungarian matching.

    python benchmarks/bench_stability.py [--seeds 8] [--d-in 640] [--sizes 4096] [--repeats 3]
                                         [--dead 0.1] [--match-sizes 4096] [--ks 8 16 32]

1. `stability.cross_seed_max_cosine` (the whole per-feature stability of S seeds: max cosine and argmax of every
   latent to every other seed) against its lower bound, the S*(S-1)/2 plain `torch.matmul`s of
   `(d_sae, d_in) x (d_in, d_sae)` in float32 that it needs (into a preallocated output, so the bound pays no
   allocation). Rows with all latents alive and with a share `--dead` of dead latents.
2. Hungarian matching of one seed pair: dense `scipy.optimize.linear_sum_assignment` against
   `matching.sparse_hungarian_match` on the k-nearest-neighbour graph, on random unit directions and on a "shared"
   pair (80% of the second seed's directions are the first seed's, permuted, plus noise; the rest are new).
   Agreement is the share of rows matched to the same column by both.

Both sides of every ratio are timed in the same run, interleaved, best of `--repeats`. 16k latents at 8 seeds take
several minutes on a 2-core CPU, hence the default of 4k only: `--sizes 4096 16384 --match-sizes 4096 16384`.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import platform
import time

import numpy as np
import torch

from saelib import matching, stability


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


class _Count(logging.Handler):
    """Counts the warnings `sparse_hungarian_match` logs when it falls back to the dense matching."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.n += 1


def bench_stability(a: argparse.Namespace) -> None:
    print(
        f"| {'d_sae':>6} | {'seeds':>5} | {'dead':>5} | {'matmuls (bound) s':>17} | "
        f"{'cross_seed_max_cosine s':>23} | {'ratio':>5} |"
    )
    print(f"|{'-' * 8}|{'-' * 7}|{'-' * 7}|{'-' * 19}|{'-' * 25}|{'-' * 7}|")
    for F in a.sizes:
        gen = torch.Generator().manual_seed(F)
        dirs = _unit(torch.randn(a.seeds, F, a.d_in, generator=gen))  # (S, d_sae, d_in)
        alive = torch.rand(a.seeds, F, generator=gen) >= a.dead
        out = torch.empty(F, F)
        pairs = list(itertools.combinations(range(a.seeds), 2))

        def bound(dirs=dirs, out=out, pairs=pairs):
            for s, t in pairs:
                torch.matmul(dirs[s], dirs[t].T, out=out)

        cases = [(0.0, None)] + ([(a.dead, alive)] if a.dead > 0 else [])
        stability.cross_seed_max_cosine(dirs[:2, :256])  # warm-up: thread pools, allocator
        best_bound, best = float("inf"), [float("inf")] * len(cases)
        for _ in range(a.repeats):  # interleaved, best of repeats
            best_bound = min(best_bound, _time(bound))
            for c, (_, al) in enumerate(cases):
                best[c] = min(best[c], _time(lambda al=al, d=dirs: stability.cross_seed_max_cosine(d, alive=al)))
        for (dead, _), seconds in zip(cases, best):
            print(
                f"| {F:>6} | {a.seeds:>5} | {dead:>5.0%} | {best_bound:>17.2f} | {seconds:>23.2f} | "
                f"{seconds / best_bound:>5.2f} |",
                flush=True,
            )


def _pair(F: int, d_in: int, case: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(F + 1)
    x = _unit(torch.randn(F, d_in, generator=gen))
    y = _unit(torch.randn(F, d_in, generator=gen))
    if case == "shared":  # 80% shared up to noise (cosine ~0.9), in another order; 20% new directions
        n = int(0.8 * F)
        y[:n] = _unit(x[:n] + 0.5 * torch.randn(n, d_in, generator=gen) / d_in**0.5)
        y = y[torch.randperm(F, generator=gen)]
    return x, y


def bench_matching(a: argparse.Namespace) -> None:
    count = _Count()
    logging.getLogger("saelib.matching").addHandler(count)
    print(
        f"| {'pair':<6} | {'d_sae':>6} | {'k':>3} | {'dense s':>7} | {'sparse s':>8} | {'speedup':>7} | "
        f"{'agreement':>9} | {'mean cos dense':>14} | {'mean cos sparse':>15} | {'fallback':>8} |"
    )
    print(f"|{'-' * 8}|{'-' * 8}|{'-' * 5}|{'-' * 9}|{'-' * 10}|{'-' * 9}|{'-' * 11}|{'-' * 16}|{'-' * 17}|{'-' * 10}|")
    for F, case in itertools.product(a.match_sizes, ("random", "shared")):
        x, y = _pair(F, a.d_in, case)
        t_dense, t_sparse, res = float("inf"), dict.fromkeys(a.ks, float("inf")), {}
        fallbacks = dict.fromkeys(a.ks, 0)
        for _ in range(a.repeats):  # interleaved, best of repeats
            t = time.perf_counter()
            dense = matching.hungarian_match(x, y, method="dense")
            t_dense = min(t_dense, time.perf_counter() - t)
            for k in a.ks:
                before = count.n
                t = time.perf_counter()
                res[k] = matching.sparse_hungarian_match(x, y, k=k)
                t_sparse[k] = min(t_sparse[k], time.perf_counter() - t)
                fallbacks[k] += count.n - before
        for k in a.ks:
            agree = float((res[k][1] == dense[1]).mean())
            print(
                f"| {case:<6} | {F:>6} | {k:>3} | {t_dense:>7.2f} | {t_sparse[k]:>8.2f} | "
                f"{t_dense / t_sparse[k]:>7.1f} | {agree:>9.3f} | {dense[2].mean():>14.4f} | "
                f"{np.mean(res[k][2]):>15.4f} | {'yes' if fallbacks[k] else 'no':>8} |",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--d-in", type=int, default=640)
    p.add_argument("--sizes", type=int, nargs="*", default=[4096], help="d_sae of the stability table")
    p.add_argument("--dead", type=float, default=0.1, help="share of dead latents in the second row (0: no row)")
    p.add_argument("--match-sizes", type=int, nargs="*", default=[4096], help="d_sae of the matching table")
    p.add_argument("--ks", type=int, nargs="+", default=[8, 16, 32], help="neighbours per latent, sparse matching")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, float32, d_in={a.d_in}, best of {a.repeats}\n"
    )
    if a.sizes:
        bench_stability(a)
        print()
    if a.match_sizes:
        bench_matching(a)


if __name__ == "__main__":
    main()
