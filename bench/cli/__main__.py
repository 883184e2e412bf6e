"""``python -m bench.cli``: time of ``massive-fetcher --help`` and of every subcommand's
``--help``, a fresh interpreter each, the median of ``--runs``: wall time, and CPU time
(user + system), which other work on a busy machine inflates far less."""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one run."""
    start, cpu = time.perf_counter(), cpu_children()
    subprocess.run([sys.executable, "-m", "massive_fetcher", *argv], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, cpu_children() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cli")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the source tree to time (another checkout, for a before/after)")
    args = parser.parse_args()
    from massive_fetcher.cli import SUBCOMMANDS

    for argv in ([], *([name] for name in SUBCOMMANDS)):
        samples = [timed([*argv, "--help"], args.root) for _ in range(args.runs)]
        wall = [s[0] for s in samples]
        cpu = [s[1] for s in samples]
        label = " ".join(["massive-fetcher", *argv, "--help"])
        print(f"{label:<36} wall median {statistics.median(wall):.3f} s "
              f"(min {min(wall):.3f})  CPU median {statistics.median(cpu):.3f} s "
              f"(min {min(cpu):.3f})")


if __name__ == "__main__":
    main()
