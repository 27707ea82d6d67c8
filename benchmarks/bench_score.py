"""Per-feature stability of anyone's SAEs at scale: the paper's anchor estimator with each latent's best match
(`external.anchor_matches`, what `python -m saelib stability` runs first) against the bare matmuls it needs.

    python benchmarks/bench_score.py                        # 16 SAEs x 65,536 latents x d_in 768 (long on a CPU)
    python benchmarks/bench_score.py --sizes 4096 16384     # smaller dictionaries
    python benchmarks/bench_score.py --sizes 4096 --pipeline   # also the whole score_saes on saved folders
    python benchmarks/bench_score.py --bare-pairs 1         # time the bound on one pair and multiply by N

For each size: random unit decoder rows `(S, d_sae, d_in)` (the weights' values do not change the cost), then
1. the anchor estimator only (no all-pairs, no Hungarian): N = S - 1 products `(d_sae, d_in) x (d_in, d_sae)` in
   blocks of `--chunk` x `--col-chunk` cosines (tiled over both seeds' latents), each block reduced to its row
   maxima and argmax;
2. its lower bound in the same run: the same block products into one preallocated buffer, no reduction, over all N
   pairs, or over the first `--bare-pairs` pairs and multiplied by N / bare-pairs (the table says which);
3. peak memory: the process's peak resident set (`resource.getrusage`, includes the weights themselves:
   `S * d_sae * d_in * 4` bytes), the extra it grew by during the estimator, and the one block's bytes.
With `--pipeline`, `external.score_saes` end to end (reading saelib-format folders, all-pairs, Hungarian matching of
the anchor pairs, the untrained null; no HTML) at each size.
"""

from __future__ import annotations

import argparse
import logging
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from saelib import external
from saelib.config import SAEConfig
from saelib.sae import SAE, save_sae


def peak_rss_gib() -> float:
    """The process's peak resident set so far, in GiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


def random_directions(S: int, F: int, d: int, device: str) -> torch.Tensor:
    """`(S, F, d)` random unit rows, made one seed at a time (no second full-size temporary)."""
    g = torch.Generator(device=device).manual_seed(0)
    out = torch.empty(S, F, d, device=device)
    for s in range(S):
        out[s] = torch.nn.functional.normalize(torch.randn(F, d, generator=g, device=device), dim=-1)
    return out


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bare_matmuls(dirs: torch.Tensor, anchor: int, chunk: int, col_chunk: int, n_pairs: int, progress: bool) -> float:
    """Seconds of the block products the estimator needs for the first `n_pairs` comparison seeds, into one buffer,
    nothing else."""
    S, F, _ = dirs.shape
    rb, cb = min(chunk, F), min(col_chunk, F)
    buf = torch.empty(rb * cb, device=dirs.device)
    sync()
    t0 = time.perf_counter()
    for t in tqdm([t for t in range(S) if t != anchor][:n_pairs], desc="bare matmuls", disable=not progress):
        for i0 in range(0, F, rb):
            a = dirs[anchor, i0 : i0 + rb]
            for j0 in range(0, F, cb):
                b = dirs[t, j0 : j0 + cb]
                torch.mm(a, b.T, out=buf[: len(a) * len(b)].view(len(a), len(b)))
    sync()
    return time.perf_counter() - t0


def time_estimator(dirs: torch.Tensor, anchor: int, chunk: int, col_chunk: int, progress: bool) -> float:
    sync()
    t0 = time.perf_counter()
    external.anchor_matches(dirs, anchor, chunk, progress, col_chunk=col_chunk)
    sync()
    return time.perf_counter() - t0


def time_pipeline(S: int, F: int, d: int, device: str) -> tuple[float, float]:
    """Seconds and peak RSS (GiB) of `score_saes` on S random SAEs saved in saelib's layout."""
    with tempfile.TemporaryDirectory() as tmp:
        save_sae(SAE(SAEConfig(d_in=d, d_sae=F, n_seeds=S, k=32)), Path(tmp) / "saes")
        t0 = time.perf_counter()
        external.score_saes([Path(tmp) / "saes"], device=device, progress=True)
        return time.perf_counter() - t0, peak_rss_gib()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[65536], help="d_sae values (default 65536)")
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--d-in", type=int, default=768)
    p.add_argument("--chunk", type=int, default=4096, help="anchor rows per block (score_saes's chunk_size)")
    p.add_argument("--col-chunk", type=int, default=None, help="other seed's latents per block (default --chunk)")
    p.add_argument(
        "--bare-pairs", type=int, default=None, help="time the bound on this many pairs and scale to N (default all)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--pipeline", action="store_true", help="also time score_saes end to end")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args()
    logging.disable(logging.WARNING)
    progress = not a.no_progress
    col_chunk = a.chunk if a.col_chunk is None else a.col_chunk
    n_other = a.seeds - 1
    n_bare = n_other if a.bare_pairs is None else max(1, min(a.bare_pairs, n_other))
    print(
        f"machine: {platform.machine()} {platform.processor()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {a.device}; S={a.seeds} d_in={a.d_in} chunk={a.chunk} "
        f"col_chunk={col_chunk}; bound timed on {n_bare} of {n_other} pairs\n",
        flush=True,
    )
    head = (
        "| d_sae | S | weights GiB | estimator s | bare matmuls s | ratio | GFLOP/s | peak RSS GiB | extra GiB "
        "| block MiB |"
    )
    rows = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    for F in a.sizes:
        dirs = random_directions(a.seeds, F, a.d_in, a.device)
        before = peak_rss_gib()
        est = time_estimator(dirs, 0, a.chunk, col_chunk, progress)
        extra = peak_rss_gib() - before
        bare = bare_matmuls(dirs, 0, a.chunk, col_chunk, n_bare, progress) * n_other / n_bare
        flop = 2 * n_other * F * F * a.d_in
        block = external.block_elements(F, a.chunk, col_chunk) * 4 / 2**20
        scaled = "" if n_bare == n_other else f" ({n_bare} pair{'s' * (n_bare > 1)} x {n_other / n_bare:g})"
        rows.append(
            f"| {F} | {a.seeds} | {dirs.numel() * 4 / 2**30:.2f} | {est:.1f} | {bare:.1f}{scaled} | {est / bare:.2f} "
            f"| {flop / bare / 1e9:.0f} | {peak_rss_gib():.2f} | {extra:.2f} | {block:.0f} |"
        )
        print(rows[-1], flush=True)
        del dirs
        if a.pipeline:
            secs, peak = time_pipeline(a.seeds, F, a.d_in, a.device)
            print(f"score_saes end to end, d_sae={F}: {secs:.1f} s, peak RSS {peak:.2f} GiB", flush=True)
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
