"""Process-level tuning for the long-running, high-rate command (the consumer).

Two costs that scale with the message rate and that no code path of ours shows:

* CPython's cyclic garbage collector runs on allocation counts. A consumer allocates a few
  container objects per Kafka message (confluent-kafka's ``Message``, ...), hundreds of
  thousands a second, so with the default thresholds a young collection runs every few
  hundred messages and a full one, walking every live object, every few hundred thousand. Those
  objects never form cycles. So what start-up allocated (modules, config, clients; it lives
  for the whole run) is frozen out of the collector's sight, and young collections run
  every 50,000 allocations instead of 700.
* glibc's malloc gives freed memory back to the kernel as soon as a few hundred KiB are free
  at the top of a heap, and serves large blocks (fetch responses, decompressed record
  batches, numpy columns) from fresh ``mmap``\\s. Each poll then faults in and zeroes the
  same memory again; the kernel zeroing pages was the largest single item in a profile of
  the consumer on our VM. Fixed thresholds keep the memory for reuse (page faults per event
  0.21 -> 0.15); the resident size stays at its working-set peak, which measured the same
  (about 350 MiB with the default ``consumer.batch_max_events``).

Together 15-25% less CPU per event in ``python -m bench.consumer`` (bench/consumer/README.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import platform

log = logging.getLogger(__name__)

GC_THRESHOLDS = (50_000, 10, 10)

# mallopt(3) parameters (glibc <malloc.h>)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
# Blocks up to 32 MiB come from the heap (glibc's maximum for this setting on 64-bit);
# up to 512 MiB may stay free at a heap's top before it is returned.
MALLOC_SETTINGS = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 512 << 20),
                   (_M_TOP_PAD, 64 << 20))


def tune_for_throughput() -> bool:
    """Call once, after start-up and before the hot loop. True when malloc was tuned too."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return _tune_malloc()


def _tune_malloc() -> bool:
    if platform.libc_ver()[0] != "glibc":
        return False  # musl, macOS: their allocators keep their own defaults
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    refused = [(param, value) for param, value in MALLOC_SETTINGS if mallopt(param, value) != 1]
    if refused:
        log.warning("mallopt refused settings; malloc keeps its defaults for them",
                    extra={"refused": refused})
    return not refused
