"""Time the training of chapter 1's grid at a scale against the issue's budget (default: 20 minutes on 2 cores).

    HF_HUB_OFFLINE=1 python benchmarks/bench_grid.py                  # every grid point at 1/10 of its tokens
    HF_HUB_OFFLINE=1 python benchmarks/bench_grid.py --fraction 0.02  # quicker, noisier

Each grid point's seeds are trained (uncached) on `fraction` of the scale's training tokens from its layer's
activation store (collected first if missing, not timed); the table gives the measured seconds, the linear
extrapolation to the full token count, and each point's cost relative to the cheapest one. Scoring (spliced CE) and
the activation collection are not included.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace

import torch

from saelib import config, train
from saelib.chapters import grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="default", choices=config.SCALES)
    p.add_argument("--fraction", type=float, default=0.1, help="share of the training tokens actually run")
    p.add_argument("--budget-min", type=float, default=20.0, help="the target for the whole grid's training")
    args = p.parse_args()
    study = grid.study(args.scale, args.device)
    tr = replace(
        study.train, n_tokens=max(int(study.train.n_tokens * args.fraction), study.train.batch_size), device="cpu"
    )
    rows = []
    for entry in grid.grid_entries(study):
        store = grid.load_store(study, entry.layer, progress=False)
        cfg = grid.sae_config(study, entry, store.d_in)
        t0 = time.perf_counter()
        train.train_saes(cfg, tr, store, progress=False)
        rows.append((entry.name, time.perf_counter() - t0))
    scale_up = study.train.n_tokens / tr.n_tokens
    cheapest = min(t for _, t in rows)
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads; {study.n_seeds} seeds per point, {tr.n_tokens:,} of {study.train.n_tokens:,} tokens run"
    )
    print("| grid point | seconds measured | minutes extrapolated | x cheapest |\n|---|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.1f} | {t * scale_up / 60:.2f} | {t / cheapest:.1f} |")
    total = sum(t for _, t in rows) * scale_up / 60
    print(
        f"| **all** | {sum(t for _, t in rows):.1f} | {total:.1f} | budget {args.budget_min:.0f} min: "
        f"{total / args.budget_min:.2f}x |"
    )


if __name__ == "__main__":
    main()
