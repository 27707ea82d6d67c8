"""Training S seeds at once against S sequential single-seed runs of the same code on the same data.

    python benchmarks/bench_train.py [--seeds 8] [--d-in 256] [--d-sae 2048] [--k 32] [--batch 1024] [--steps 30]

Prints a table of wall-clock time and tokens x seeds per second for both, and their ratio, measured in this run.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace

import torch

from saelib.config import SAEConfig, TrainConfig
from saelib.train import train_saes


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--d-in", type=int, default=256)
    p.add_argument("--d-sae", type=int, default=2048)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--variant", default="topk")
    p.add_argument("--device", default="auto")
    a = p.parse_args()

    x = torch.randn(a.batch * a.steps, a.d_in)
    cfg = SAEConfig(d_in=a.d_in, d_sae=a.d_sae, k=a.k, variant=a.variant, n_seeds=a.seeds)
    train = TrainConfig(n_tokens=a.batch * a.steps, batch_size=a.batch, device=a.device, log_every=10**9)
    warm = replace(train, n_tokens=a.batch * 2)
    train_saes(cfg, warm, x, progress=False)  # warm-up: imports, allocator, thread pools

    stacked = _time(lambda: train_saes(cfg, train, x, progress=False))
    sequential = _time(lambda: [
        train_saes(replace(cfg, n_seeds=1, seed=s), train, x, progress=False) for s in range(a.seeds)
    ])
    work = a.batch * a.steps * a.seeds
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {train.device}")
    print(f"{a.variant} d_in={a.d_in} d_sae={a.d_sae} k={a.k} batch={a.batch} steps={a.steps} seeds={a.seeds}\n")
    print(f"| {'run':<30} | {'seconds':>8} | {'tokens x seeds / s':>18} | {'ratio':>6} |")
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 20}|{'-' * 8}|")
    rows = [(f"{a.seeds} sequential single-seed runs", sequential), (f"{a.seeds} seeds at once", stacked)]
    for name, seconds in rows:
        print(f"| {name:<30} | {seconds:8.2f} | {work / seconds:18,.0f} | {sequential / seconds:6.2f} |")


if __name__ == "__main__":
    main()
