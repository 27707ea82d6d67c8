"""Execute the book's notebooks with papermill, showing what each chapter is doing, and end with a timing table.

    python book/run_notebooks.py --scale default --device auto notebooks/01_stability.py notebooks/02_asymmetry.py
    python book/run_notebooks.py notebooks/01_stability.py -p SAE_PATHS '["runs/seed*/"]'   # chapter 1 on your SAEs

For each notebook: a header with the chapter, its number and the time the previous run of it took (the ETA), then
the library's own progress as it happens (the kernel's stderr, streamed: `building <artifact>` for each cached step
and tqdm bars with their ETA), then the chapter's wall time. At the end, a table of every chapter's wall time; the
times are saved in `build/timings-<scale>.json` for the next run's ETAs. Stops at the first chapter that fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import papermill

from saelib.paths import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent

STARTUP = """\
# Written by book/run_notebooks.py: the library's progress goes to the kernel's stderr, which papermill streams to the
# terminal (the book itself hides stderr: nb_output_stderr = remove).
import logging
import sys
import warnings

_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("  [%(asctime)s] %(message)s", "%H:%M:%S"))
logging.getLogger("saelib").addHandler(_handler)
logging.getLogger("saelib").setLevel(logging.INFO)
warnings.filterwarnings("ignore", message="IProgress not found")
"""


def format_seconds(seconds: float) -> str:
    """`75.2` -> `"1m15s"`; `3725` -> `"1h02m05s"`; under a minute, `"12.3s"`."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def timing_table(rows: list[tuple[str, str, float]]) -> str:
    """A plain-text table of `(chapter, status, seconds)` rows with a total line.

    Args:
        rows: one per chapter, in book order.

    Returns:
        The table, one line per chapter, then the total.
    """
    width = max([len("chapter"), *(len(r[0]) for r in rows)])
    lines = [f"{'chapter':<{width}}  {'status':<7}  {'wall time':>10}", "-" * (width + 21)]
    lines += [f"{name:<{width}}  {status:<7}  {format_seconds(sec):>10}" for name, status, sec in rows]
    lines += ["-" * (width + 21), f"{'total':<{width}}  {'':<7}  {format_seconds(sum(r[2] for r in rows)):>10}"]
    return "\n".join(lines)


def ipython_dir(folder: Path) -> Path:
    """An IPython folder whose startup file sends the library's log to stderr (the kernel reads it via IPYTHONDIR).

    Args:
        folder: where to create it.

    Returns:
        The folder.
    """
    startup = folder / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-saelib-progress.py").write_text(STARTUP)
    return folder


def parse_parameters(pairs: list[list[str]] | None) -> dict:
    """`-p NAME VALUE` pairs as notebook parameters: each VALUE read as JSON where it is JSON (`'["a", "b"]'`, `3`,
    `null`), else kept as the string it is.

    Args:
        pairs: `[[name, value], ...]` from argparse, or None.

    Returns:
        `{name: value}`.
    """
    out = {}
    for name, value in pairs or []:
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def execute(path: Path, scale: str, device: str, build: Path, executed: Path, parameters: dict | None = None) -> None:
    """Convert one Jupytext notebook to .ipynb and execute it with papermill, streaming its stderr to ours.

    Args:
        path: the notebook, `notebooks/NN_name.py`.
        scale: its SCALE parameter.
        device: its DEVICE parameter.
        build: folder for the unexecuted .ipynb.
        executed: folder for the executed .ipynb (the book reads it).
        parameters: further notebook parameters (e.g. `{"SAE_PATHS": [...]}`).
    """
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = build / f"{path.stem}.ipynb"
    jupytext.write(nb, src)
    papermill.execute_notebook(
        str(src),
        str(executed / src.name),
        parameters={"SCALE": scale, "DEVICE": device, **(parameters or {})},
        kernel_name="python3",
        progress_bar=False,
        stderr_file=sys.stderr,
        cwd=str(ROOT),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks given on the command line in order; returns the exit status (1 if one failed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--scale", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--build", type=Path, default=ROOT / "build")
    parser.add_argument("--executed", type=Path, default=ROOT / "book" / "executed")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="a notebook parameter, VALUE as JSON where it parses (e.g. -p SAE_PATHS '[\"runs/seed*/\"]')",
    )
    args = parser.parse_args(argv)
    args.build.mkdir(parents=True, exist_ok=True)
    args.executed.mkdir(parents=True, exist_ok=True)
    saved = args.build / f"timings-{args.scale}.json"
    previous = json.loads(saved.read_text()) if saved.is_file() else {}
    rows: list[tuple[str, str, float]] = []
    n = len(args.notebooks)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IPYTHONDIR"] = str(ipython_dir(Path(tmp)))
        start_all = time.perf_counter()
        for i, path in enumerate(args.notebooks, 1):
            eta = sum(previous.get(p.stem, float("nan")) for p in args.notebooks[i - 1 :])
            hint = f"; about {format_seconds(eta)} left by the last run's times" if eta == eta else ""
            print(f"\n=== chapter {i}/{n}: {path.stem} (SCALE={args.scale}{hint}) ===", file=sys.stderr, flush=True)
            start = time.perf_counter()
            try:
                execute(path, args.scale, args.device, args.build, args.executed, parse_parameters(args.parameter))
            except Exception as e:  # papermill's error names the failing cell; show it after the table
                rows.append((path.stem, "FAILED", time.perf_counter() - start))
                print(f"\n{timing_table(rows)}\n\n{path.stem} failed: {e}", file=sys.stderr, flush=True)
                return 1
            rows.append((path.stem, "ok", time.perf_counter() - start))
            print(f"=== {path.stem} done in {format_seconds(rows[-1][2])} ===", file=sys.stderr, flush=True)
    previous.update({name: sec for name, _, sec in rows})
    atomic_write_json(saved, previous)
    print(f"\nExecuted {n} chapters at SCALE={args.scale} in {format_seconds(time.perf_counter() - start_all)}:")
    print(timing_table(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
