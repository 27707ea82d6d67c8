"""`python -m saelib ...`: run the heavy steps outside the notebooks (e.g. on a GPU box), filling the artifact cache
that the notebooks then read.

    python -m saelib synthetic --scale default --device cuda
    HF_HUB_OFFLINE=1 python -m saelib collect --scale default
    HF_HUB_OFFLINE=1 python -m saelib grid --scale default     # chapter 1's grid: train and score every point
"""

from __future__ import annotations

import argparse
import logging

from saelib import config


def _synthetic(args: argparse.Namespace) -> None:
    from saelib.chapters import synthetic

    study = synthetic.study(args.scale, args.device)
    if args.no_sweep:
        data, sae, _ = synthetic.train_study(study)
        numbers = synthetic.summarize_analysis(synthetic.analyze(sae, data, study.stability))
    else:
        numbers = synthetic.summary(synthetic.run(study))
    logging.getLogger("saelib").info(
        "synthetic %s: %s", args.scale, {k: round(v, 3) if isinstance(v, float) else v for k, v in numbers.items()}
    )


def _collect(args: argparse.Namespace) -> None:
    from saelib.lm import activations
    from saelib.lm.config import ACTIVATION_SCALES

    store = activations.collect_activations(ACTIVATION_SCALES[args.scale], device=args.device)
    logging.getLogger("saelib").info("activations ready: %s (eval: %d tokens)", store, store.eval.n_tokens)


def _grid(args: argparse.Namespace) -> None:
    from saelib.chapters import grid

    study = grid.study(args.scale, args.device)
    table, _, _ = grid.run_grid(study)
    logging.getLogger("saelib").info("grid %s:\n%s", args.scale, table.to_string())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m saelib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synthetic", help="train the synthetic chapter's SAEs (and its sweep) into the cache")
    p.add_argument("--scale", default="default", choices=config.SCALES)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-sweep", action="store_true", help="skip the identifiability sweep")
    p.set_defaults(run=_synthetic)
    p = sub.add_parser("collect", help="collect a scale's language-model activations into the cache (resumable)")
    p.add_argument("--scale", default="default", choices=config.SCALES)
    p.add_argument("--device", default="auto")
    p.set_defaults(run=_collect)
    p = sub.add_parser("grid", help="train and score chapter 1's grid of SAEs into the cache (resumable per point)")
    p.add_argument("--scale", default="default", choices=config.SCALES)
    p.add_argument("--device", default="auto")
    p.set_defaults(run=_grid)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.run(args)


if __name__ == "__main__":
    main()
