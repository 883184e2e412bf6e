"""The services a benchmark needs: the environment's, else its own.

    with bench_services(kafka=True, marketstore=True) as svc:
        svc.kafka_bootstrap, svc.marketstore_url, svc.handle

``KAFKA_BOOTSTRAP_SERVERS`` / ``MARKETSTORE_URL`` name running servers; whatever is not named
is started with ``services.native.NativeServices`` (what ``massive-fetcher services up``
runs) on free loopback ports in a private state dir (the build cache stays the user's), and
stopped by pid when the block ends. ``handle`` is None when nothing was started.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.config import ServicesConfig
from services.native import NativeServices
from services.process import free_port


@dataclass
class BenchServices:
    kafka_bootstrap: str
    marketstore_url: str
    handle: NativeServices | None  # the servers this benchmark started, if any
    state_dir: Path | None  # their data and logs

    def started(self, name: str) -> bool:
        """Whether this benchmark runs ``name`` itself (so it may stop or restart it)."""
        env = {"kafka": "KAFKA_BOOTSTRAP_SERVERS", "marketstore": "MARKETSTORE_URL"}[name]
        return self.handle is not None and not os.environ.get(env, "").strip()


def private_settings(state_dir: Path) -> ServicesConfig:
    return ServicesConfig(kafka_port=free_port(), kafka_controller_port=free_port(),
                          marketstore_port=free_port(), marketstore_grpc_port=free_port(),
                          state_dir=str(state_dir))


@contextmanager
def bench_services(kafka: bool = True, marketstore: bool = True,
                   keep_state: bool = False) -> Iterator[BenchServices]:
    """``keep_state``: leave the started servers' data dir behind (it is printed)."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() if kafka else ""
    url = os.environ.get("MARKETSTORE_URL", "").strip() if marketstore else ""
    names = [name for name, wanted, given in (("kafka", kafka, bootstrap),
                                              ("marketstore", marketstore, url))
             if wanted and not given]
    if not names:
        yield BenchServices(bootstrap, url, None, None)
        return
    state = Path(tempfile.mkdtemp(prefix="bench-services-"))
    handle = NativeServices(private_settings(state), die_with_parent=True)
    print(f"starting {' and '.join(names)} (set KAFKA_BOOTSTRAP_SERVERS / MARKETSTORE_URL "
          f"to use running ones)", flush=True)
    try:
        handle.up(names, report=lambda line: print("  " + line, flush=True))
        yield BenchServices(bootstrap or (handle.kafka_bootstrap if kafka else ""),
                            url or (handle.marketstore_url if marketstore else ""),
                            handle, state)
    finally:
        handle.down(names, report=lambda line: print("  " + line, flush=True))
        if keep_state:
            print(f"  services' data and logs: {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
