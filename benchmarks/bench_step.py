"""One training step of S stacked SAEs, as `train_saes` runs it (sparse forward and backward, fused Adam): the AuxK
step against the plain TopK step at several dead fractions, the dense AuxK path it replaced, and BatchTopK (sparse
and dense) against TopK. Every row is timed interleaved with its baseline in the same run, best of `--repeats`.

    python benchmarks/bench_step.py                          # d_in 640, d_sae 1024, k 8, batch 1024, S 9
    python benchmarks/bench_step.py --d-sae 4096 --k 32 --batch 4096 --seeds 8

`dense AuxK` is the path before this change: a second top-k over all `d_sae` pre-activations masked to the dead
latents, decoded through a dense `(S, B, d_sae)` latent matrix (`saelib.train._dense_aux_hat`). `dense BatchTopK`
decodes the scattered `(S, B, d_sae)` latents with a dense matmul and back-propagates densely (`SAE.forward`).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from saelib.config import SAEConfig
from saelib.sae import SAE
from saelib.train import _dense_aux_hat


def _step(sae: SAE, opt, x: torch.Tensor, path: str, dead: torch.Tensor | None, aux_k: int) -> None:
    """Forward, loss, backward and an Adam step of one of the paths."""
    if path == "dense":
        out = sae(x)
        x_hat = out.x_hat
        aux_hat = _dense_aux_hat(sae, out.pre, dead, aux_k) if dead is not None else None
    else:
        step = sae.sparse_step(x, dead, aux_k)
        x_hat, aux_hat = step.x_hat, step.aux_hat
    loss = (x_hat - x).pow(2).sum(-1).mean()
    if aux_hat is not None:
        loss = loss + (aux_hat - (x - x_hat).detach()).pow(2).sum(-1).mean() / 32
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-in", type=int, default=640)
    p.add_argument("--d-sae", type=int, default=1024)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--aux-k", type=int, default=256)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--seeds", type=int, default=9)
    p.add_argument("--dead", type=float, nargs="+", default=[0.01, 0.05, 0.2, 0.5], help="dead fractions")
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    torch.manual_seed(0)
    x = torch.randn(a.batch, a.d_in)
    saes = {}
    for variant in ("topk", "batchtopk"):
        sae = SAE(SAEConfig(d_in=a.d_in, d_sae=a.d_sae, k=a.k, n_seeds=a.seeds, variant=variant)).train()
        saes[variant] = (sae, torch.optim.Adam(sae.parameters(), lr=1e-4, fused=True))
    rows = [("TopK, plain step", "topk", "sparse", None)]
    for frac in a.dead:
        dead = torch.zeros(a.seeds, a.d_sae, dtype=torch.bool)
        dead[:, : max(1, round(frac * a.d_sae))] = True
        rows.append((f"TopK + AuxK, {frac:.0%} dead", "topk", "sparse", dead))
        rows.append((f"TopK + dense AuxK, {frac:.0%} dead", "topk", "dense", dead))
    rows += [("BatchTopK, sparse", "batchtopk", "sparse", None), ("BatchTopK, dense", "batchtopk", "dense", None)]
    fns = [
        (name, lambda v=v, path=path, dead=dead: _step(*saes[v], x, path, dead, a.aux_k))
        for name, v, path, dead in rows
    ]
    for _, fn in fns:  # warm-up
        fn()
    best = {name: float("inf") for name, _ in fns}
    for _ in range(a.repeats):  # interleaved: every row sees the same machine load
        for name, fn in fns:
            best[name] = min(best[name], *_timed(fn, 1))
    base = best["TopK, plain step"]
    print(
        f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"d_in {a.d_in}, d_sae {a.d_sae}, k {a.k}, aux_k {a.aux_k}, batch {a.batch}, S {a.seeds}, "
        f"best of {a.repeats}\n"
    )
    print(f"| {'step':<32} | {'s/step':>7} | {'x plain TopK':>12} |")
    print(f"|{'-' * 34}|{'-' * 9}|{'-' * 14}|")
    for name, _ in fns:
        print(f"| {name:<32} | {best[name]:7.3f} | {best[name] / base:12.2f} |")


if __name__ == "__main__":
    main()
