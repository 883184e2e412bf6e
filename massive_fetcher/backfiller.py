"""``massive_backfiller``: the plugin's standalone backfiller, by its name and its flags.

The same program as ``massive-fetcher backfill`` (history onto the Kafka topics, the
consumer writes MarketStore), reachable under the old name so scripts keep working
unchanged. As the plugin's, ``-config`` defaults to ``/etc/mkts.yml`` when that file
exists (else ``$MASSIVE_FETCHER_CONFIG``, else the built-in defaults); ``-dir`` is
accepted with a warning, since nothing is written to MarketStore's data directory
directly any more.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from massive_fetcher.cli import DEFAULT_CONFIG_ENV
from massive_fetcher.cli import main as cli_main

PLUGIN_CONFIG = "/etc/mkts.yml"
_CONFIG_FLAGS = ("-config", "--config", "-c")


def with_default_config(argv: Sequence[str], env: dict[str, str] | os._Environ[str],
                        plugin_config: str = PLUGIN_CONFIG) -> list[str]:
    """``argv`` plus ``-config /etc/mkts.yml`` where the plugin would have read it."""
    args = list(argv)
    named = any(a in _CONFIG_FLAGS or a.startswith(tuple(f + "=" for f in _CONFIG_FLAGS))
                for a in args)
    if named or env.get(DEFAULT_CONFIG_ENV) or not Path(plugin_config).is_file():
        return args
    return ["-config", plugin_config, *args]


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return cli_main(["backfill", *with_default_config(args, os.environ)])
