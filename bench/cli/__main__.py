"""``python -m bench.cli``: wall time of ``massive-fetcher --help`` and of every
subcommand's ``--help`` (a fresh interpreter each, the median of ``--runs``)."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "massive_fetcher", *argv], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cli")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the source tree to time (another checkout, for a before/after)")
    args = parser.parse_args()
    from massive_fetcher.cli import SUBCOMMANDS

    for argv in ([], *([name] for name in SUBCOMMANDS)):
        samples = [timed([*argv, "--help"], args.root) for _ in range(args.runs)]
        label = " ".join(["massive-fetcher", *argv, "--help"])
        print(f"{label:<36} median {statistics.median(samples):.3f} s  "
              f"min {min(samples):.3f} s  max {max(samples):.3f} s")


if __name__ == "__main__":
    main()
