"""common.runtime: the consumer's process tuning (run in a child: it changes process state)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

CHILD = """
import gc, json
from common.runtime import GC_THRESHOLDS, tune_for_throughput
tracked = len(gc.get_objects())
malloc_tuned = tune_for_throughput()
print(json.dumps({"thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "tracked_before": tracked, "tracked_after": len(gc.get_objects()),
                  "expected": GC_THRESHOLDS, "malloc": malloc_tuned}))
"""


def _tuned() -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    got = _tuned()
    assert tuple(got["thresholds"]) == tuple(got["expected"])
    assert got["thresholds"][0] > 700  # CPython's default
    # everything start-up allocated left the collector's generations
    assert got["frozen"] >= got["tracked_before"] // 2
    assert got["tracked_after"] < got["tracked_before"] // 10


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_every_malloc_setting() -> None:
    assert _tuned()["malloc"] is True


def test_a_tuned_process_still_collects_cycles_by_itself() -> None:
    code = """
import gc, weakref
from common.runtime import tune_for_throughput
tune_for_throughput()
class Node: pass
a = Node(); a.self = a; ref = weakref.ref(a); del a
keep = [[None] for _ in range(200_000)]  # live allocations past the young threshold
print(ref() is None)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "True"
