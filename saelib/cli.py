"""`python -m saelib ...`: run the heavy steps outside the notebooks (e.g. on a GPU box), filling the artifact cache
that the notebooks then read.

    python -m saelib synthetic --scale default --device cuda
    HF_HUB_OFFLINE=1 python -m saelib collect --scale default
    HF_HUB_OFFLINE=1 python -m saelib grid --scale default     # chapter 1's grid: train and score every point
    python -m saelib grid --scale paper --ray auto               # the same, each unit a task on a Ray cluster
    python -m saelib stability runs/seed*/layers.6 --out report  # per-feature stability of anyone's SAEs

Expected errors (a bad argument, a missing corpus or model, a full disk) print one line naming the parameter or path
and the fix, and exit with code 2 (bad input) or 1 (a failure while running); the arguments are checked before
anything is written under the artifact root.
"""

from __future__ import annotations

import argparse
import logging

import torch

from saelib import config

PROG = "python -m saelib"

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1

LOCAL_RAY = "local"
"""`--ray` without an address: connect to `$RAY_ADDRESS` if set, else start a local Ray."""


class UsageError(ValueError):
    """A command-line argument is invalid (exit code 2)."""


def check_device(device: str) -> str:
    """Return `device` if this machine has it (`auto`, `cpu`, `cuda`, `cuda:N`, `mps`), else raise a one-line
    `UsageError` naming `--device` and the fix."""
    fix = "use --device cpu or --device auto"
    if device in ("auto", "cpu"):
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a device torch knows; {fix}") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise UsageError(f"--device {device!r}: CUDA is not available on this machine; {fix}")
        if dev.index is not None and dev.index >= n:
            raise UsageError(f"--device {device!r}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
        return device
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"--device {device!r}: MPS is not available on this machine; {fix}")
        return device
    if dev.type == "cpu":
        return device
    raise UsageError(f"--device {device!r} is not supported; use auto, cpu, cuda, cuda:N or mps")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of the usage block, exit code 2
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {PROG} --help)\n")


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
    from saelib.lm.config import activation_config

    store = activations.collect_activations(activation_config(args.scale), device=args.device)
    logging.getLogger("saelib").info("activations ready: %s (eval: %d tokens)", store, store.eval.n_tokens)


def _grid(args: argparse.Namespace) -> None:
    from saelib.chapters import grid

    study = grid.study(args.scale, args.device)
    if args.ray is None:
        table = grid.run_all(study)  # the grid, the budget curve and the reference SAEs
    else:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("--ray needs Ray: pip install -e '.[cluster]'") from None
        from saelib import cluster

        address = None if args.ray == LOCAL_RAY else args.ray
        table = cluster.run_grid_ray(study, address=address, seeds_per_task=args.seeds_per_task)
    logging.getLogger("saelib").info("grid %s:\n%s", args.scale, table.to_string())


def _stability(args: argparse.Namespace) -> None:
    from saelib.external import score_saes

    scores = score_saes(
        args.paths,
        anchor=args.anchor,
        threshold=args.threshold,
        epsilon=args.epsilon,
        out=args.out,
        report=not args.no_report,
        all_pairs=not args.no_all_pairs,
        null=not args.no_null,
        device=args.device,
    )
    s = scores.summary
    logging.getLogger("saelib").info(
        "stability of %d SAEs x %d latents: mean p %.3f, stable %.1f%%, unstable %.1f%% (null mean p %s); "
        "report in %s (%s)",
        s["n_saes"],
        s["d_sae"],
        s["mean_p"],
        100 * s["stable_fraction"],
        100 * s["unstable_fraction"],
        f"{s['null_mean_p']:.3f}" if "null_mean_p" in s else "n/a",
        scores.out,
        s.get("report"),
    )


def _check_stability_args(args: argparse.Namespace) -> None:
    """One-line `UsageError`s for the stability options, before anything is read or written."""
    if args.anchor < 0:
        raise UsageError(f"--anchor {args.anchor} must be >= 0 (the position of the anchor SAE among the paths)")
    if not 0 < args.threshold <= 1:
        raise UsageError(f"--threshold {args.threshold} must lie in (0, 1]")
    if not 0 <= args.epsilon < 0.5:
        raise UsageError(f"--epsilon {args.epsilon} must lie in [0, 0.5)")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def _exit_code(error: BaseException) -> int:
    """2 for bad input (an argument, a missing corpus, model or path), 1 for a failure while running."""
    from saelib.lm.activations import ModelNotAvailableError
    from saelib.lm.store import ShardError

    if isinstance(error, ShardError):
        return EXIT_FAILURE
    if isinstance(error, (ValueError, FileNotFoundError, NotADirectoryError, ModelNotAvailableError)):
        return EXIT_BAD_INPUT
    return EXIT_FAILURE


def main(argv: list[str] | None = None) -> None:
    """Run one command; an expected error prints one line to stderr and exits 2 (bad input) or 1 (runtime)."""
    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL_RAY,
        metavar="ADDRESS",
        help="run every unit as a Ray task: on the cluster at ADDRESS (e.g. auto), else $RAY_ADDRESS or a local one",
    )
    p.add_argument("--seeds-per-task", type=int, help="with --ray: split each point's seeds into stacks of this many")
    p.set_defaults(run=_grid)
    p = sub.add_parser(
        "stability",
        help="per-feature stability of SAEs saved by SAELens, sparsify, dictionary_learning or saelib, with a report",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="SAE folders (one per seed), globs, or saelens:RELEASE:ID")
    p.add_argument("--anchor", type=int, default=0, help="position of the anchor SAE among the paths (default 0)")
    p.add_argument("--threshold", type=float, default=0.7, help="cosine tau of a match (default 0.7)")
    p.add_argument("--epsilon", type=float, default=0.05, help="endpoint labels: stable at p >= 1 - eps (0.05)")
    p.add_argument("--out", default="stability-report", help="report folder (default ./stability-report)")
    p.add_argument("--no-report", action="store_true", help="write the tables but do not render report.html")
    p.add_argument(
        "--no-all-pairs", action="store_true", help="skip the all-pairs stability (S(S-1)/2 products instead of S-1)"
    )
    p.add_argument("--no-null", action="store_true", help="skip the untrained-SAE null (halves the cost)")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=_stability)
    args = parser.parse_args(argv)
    try:
        check_device(args.device)  # before anything is created under the artifact root
        if args.command == "stability":
            _check_stability_args(args)
    except UsageError as e:
        parser.exit(EXIT_BAD_INPUT, f"{PROG} {args.command}: error: {e}\n")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.run(args)
    except KeyboardInterrupt:
        parser.exit(130, f"{PROG} {args.command}: interrupted; rerun the same command to resume\n")
    except (ValueError, OSError, RuntimeError) as e:
        logging.getLogger("saelib").debug("%s failed", args.command, exc_info=True)  # the traceback, at DEBUG
        parser.exit(_exit_code(e), f"{PROG} {args.command}: error: {_one_line(e)}\n")


if __name__ == "__main__":
    main()
