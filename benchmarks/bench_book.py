"""Time `make book`: cold (empty artifact cache: every SAE trained, every activation collected) and warm (all cached).

    python benchmarks/bench_book.py            # warm only, on the current cache
    python benchmarks/bench_book.py --cold     # cold first, in a fresh temporary cache, then warm on it

Prints a table of wall-clock seconds against the goals (cold well under 30 minutes, warm under 2).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time

from saelib.paths import ARTIFACTS_ENV, repo_root


def _make_book(scale: str, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        ["make", "book", f"SCALE={scale}"],
        cwd=repo_root(),
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cold", action="store_true", help="also time a build from an empty artifact cache")
    p.add_argument("--scale", default="default")
    a = p.parse_args()
    env = dict(os.environ)
    rows = []
    with tempfile.TemporaryDirectory(prefix="saelib-bench-") as tmp:
        if a.cold:
            env[ARTIFACTS_ENV] = tmp
            rows.append(("cold (empty cache)", _make_book(a.scale, env), 30 * 60))
        rows.append(("warm (everything cached)", _make_book(a.scale, env), 2 * 60))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; make book SCALE={a.scale}\n")
    print(f"| {'build':<26} | {'seconds':>8} | {'goal (s)':>8} | {'met':>4} |")
    print(f"|{'-' * 28}|{'-' * 10}|{'-' * 10}|{'-' * 6}|")
    for name, sec, goal in rows:
        print(f"| {name:<26} | {sec:8.1f} | {goal:8d} | {'yes' if sec <= goal else 'no':>4} |")


if __name__ == "__main__":
    main()
