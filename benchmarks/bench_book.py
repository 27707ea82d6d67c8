"""Time `make book`: cold (empty artifact cache: every SAE trained, every activation collected) and warm (all
cached), with a per-chapter breakdown read from the executed notebooks (papermill records each one's duration).

    python benchmarks/bench_book.py            # warm only, on the current cache
    python benchmarks/bench_book.py --cold     # setup, then cold in a fresh temporary cache, then warm on it

Run it from a fresh clone to measure what a new user waits for: `--cold` first times `make setup` (the virtual
environment), then the cold book. Prints tables of wall-clock seconds against the goals (cold at most 60 minutes,
warm at most 2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from saelib.paths import ARTIFACTS_ENV, repo_root

COLD_GOAL_S, WARM_GOAL_S = 60 * 60, 2 * 60


def _make(target: str, scale: str, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        ["make", target, f"SCALE={scale}"],
        cwd=repo_root(),
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def chapter_seconds(folder: Path | None = None) -> dict[str, float]:
    """Seconds papermill spent on each executed notebook under `book/executed/` (its `metadata.papermill.duration`)."""
    folder = folder or repo_root() / "book" / "executed"
    out = {}
    for nb in sorted(folder.glob("*.ipynb")):
        meta = json.loads(nb.read_text()).get("metadata", {}).get("papermill", {})
        out[nb.stem] = float(meta.get("duration") or float("nan"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cold", action="store_true", help="also time setup and a build from an empty artifact cache")
    p.add_argument("--scale", default="default")
    p.add_argument("--artifacts", help="the cold build's artifact cache (kept afterwards); default: a temporary one")
    a = p.parse_args()
    env = dict(os.environ)
    rows, chapters = [], {}
    with tempfile.TemporaryDirectory(prefix="saelib-bench-") as tmp:
        if a.cold:
            rows.append(("setup (make setup)", _make("setup", a.scale, env), None))
            env[ARTIFACTS_ENV] = a.artifacts or tmp
            rows.append(("cold book (empty cache)", _make("book", a.scale, env), COLD_GOAL_S))
            chapters["cold"] = chapter_seconds()
        rows.append(("warm book (all cached)", _make("book", a.scale, env), WARM_GOAL_S))
        chapters["warm"] = chapter_seconds()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; make book SCALE={a.scale}\n")
    print(f"| {'build':<26} | {'seconds':>8} | {'goal (s)':>8} | {'met':>4} |")
    print(f"|{'-' * 28}|{'-' * 10}|{'-' * 10}|{'-' * 6}|")
    for name, sec, goal in rows:
        met = "-" if goal is None else ("yes" if sec <= goal else "no")
        print(f"| {name:<26} | {sec:8.1f} | {goal or '-':>8} | {met:>4} |")
    names = sorted({n for c in chapters.values() for n in c})
    print(f"\n| {'chapter (papermill)':<22} | " + " | ".join(f"{k + ' s':>9}" for k in chapters) + " |")
    print(f"|{'-' * 24}|" + "|".join("-" * 11 for _ in chapters) + "|")
    for n in names:
        print(f"| {n:<22} | " + " | ".join(f"{chapters[k].get(n, float('nan')):9.1f}" for k in chapters) + " |")


if __name__ == "__main__":
    main()
