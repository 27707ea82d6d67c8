"""Tokens/s of activation collection against a plain forward pass through the same blocks, in the same run.

"Plain forward" runs the model on the same contexts, in the same batches, stopped after the same block by the same
kind of hook, and throws the result away. "Collection" is `activations.collect_activations` end to end: hooks,
dropping BOS and padding, float16 conversion, metadata, atomic shard writes with sha256 records. Both count every
forwarded position (BOS and padding included). The two alternate, each timed `--repeats` times, and the best time
of each is kept, which damps the noise of a shared machine. Target: ratio >= 0.9.

    .venv/bin/python benchmarks/bench_collection.py                 # packaged Gemma 3 270M, block 6, ~8k tokens
    .venv/bin/python benchmarks/bench_collection.py --contexts 128 --layer 6 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--contexts", type=int, default=64, help="training contexts collected per timing")
    parser.add_argument("--batch-contexts", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scratch = tempfile.TemporaryDirectory()  # the stores written while timing go to a scratch artifact root
    if args.threads:
        torch.set_num_threads(args.threads)

    from saelib.lm import activations as A
    from saelib.lm.config import ActivationConfig

    t0 = time.perf_counter()
    lm = A.load_model(args.model, device="cpu")  # the packaged model's converted copy in the usual artifact root
    load_s = time.perf_counter() - t0
    os.environ["SAELIB_ARTIFACTS"] = scratch.name
    base = ActivationConfig(
        model=args.model,
        layer=args.layer,
        n_eval_contexts=1,
        batch_contexts=args.batch_contexts,
        contexts_per_shard=32,
        n_train_tokens=1,
    )
    contexts = A.corpus_contexts(base.corpus, lm, base.context_len)  # tokenised once, not timed
    n_tokens_target = (args.contexts - 1) * (base.context_len - 1) + 1
    n_positions = args.contexts * base.context_len

    def plain() -> float:
        train = A.corpus_mod.split_contexts(contexts, 1, base.seed).train[: args.contexts]
        t = time.perf_counter()
        for b0 in range(0, len(train), args.batch_contexts):
            ids = torch.from_numpy(train[b0 : b0 + args.batch_contexts].astype(np.int64))
            lm.activations(ids, args.layer)
        return time.perf_counter() - t

    def collect() -> float:
        cfg = replace(base, n_train_tokens=n_tokens_target)
        shutil.rmtree(A.collection_dir(cfg), ignore_errors=True)  # time a cold collection every repeat
        t = time.perf_counter()
        store = A.collect_activations(cfg, lm=lm, progress=False)
        elapsed = time.perf_counter() - t
        assert len(store.contexts()) == args.contexts, (len(store.contexts()), args.contexts)
        shutil.rmtree(store.path)
        return elapsed

    plain_s, collect_s = [], []
    plain()  # warm-up
    for _ in range(args.repeats):
        plain_s.append(plain())
        collect_s.append(collect())
    plain_tps = n_positions / min(plain_s)
    collect_tps = (n_positions + base.context_len) / min(collect_s)
    rows = [
        ("model", args.model),
        ("layer (block output)", str(args.layer)),
        ("load (s)", f"{load_s:.1f}"),
        ("forwarded positions per timing", str(n_positions)),
        ("torch threads", str(torch.get_num_threads())),
        ("plain forward to block (tok/s)", f"{plain_tps:,.0f}"),
        ("collection end to end (tok/s)", f"{collect_tps:,.0f}"),
        ("ratio collection / plain", f"{collect_tps / plain_tps:.3f}  (target >= 0.9)"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k:<{width}} | {v} |")
    scratch.cleanup()


if __name__ == "__main__":
    main()
