"""``massive-fetcher migrate --from /etc/mkts.yml``: the plugin's configuration, as this
project's YAML, with comments on what changed.

Every command reads a mkts.yml as it is (``--config /etc/mkts.yml``); this prints the
equivalent file for those who want the project's own. The API key is left out unless
``--with-api-key`` is given, since the output usually ends up in a file. Exit codes: 0
printed, 2 bad input (unreadable, not a mkts.yml, no massive.so worker, an invalid
option).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

import yaml

from common.config import ConfigError, load_config, read_yaml
from common.mkts import PLUGIN_MODULE, MktsError, is_mkts, plugin_config
from massive_fetcher.cli import UsageError, add_config_argument

HEADER = """\
# massive-fetcher configuration, from {source}
# (MarketStore's config with the {module} background worker). What changed:
# - The feed no longer runs inside MarketStore. `massive-fetcher producer` streams the
#   Massive WebSocket into Kafka, `massive-fetcher consumer` writes MarketStore through its
#   API at marketstore.url, into the same buckets. Remove the {module} worker from
#   {source} once these run: two writers would store every trade and quote twice.
# - Kafka sits in between (kafka.bootstrap_servers); start it with
#   `massive-fetcher services up` or use your own.
# - The standalone backfiller is `massive_backfiller` (the same flags) or
#   `massive-fetcher backfill`: it publishes to Kafka and the consumer writes; -dir no
#   longer applies (MarketStore's data directory is MarketStore's alone).
# - MarketStore's own keys (root_directory, log_level, triggers ...) stay in {source}.
# - This file is optional: every command also reads {source} itself (--config {source}).
"""
NO_KEY = """\
  # api_key: left out; set MASSIVE_API_KEY in the environment or copy it from {source}
  # (or run migrate --with-api-key)
"""


def register(sub: Any) -> None:
    p = sub.add_parser("migrate", description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("--from", dest="source", metavar="MKTS_YML",
                   help="MarketStore config file with the massive.so background worker "
                        "(default: --config)")
    add_config_argument(p)
    p.add_argument("--with-api-key", action="store_true",
                   help="include massive.api_key in the output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    source = args.source or getattr(args, "config", None)
    if not source:
        raise UsageError("which mkts.yml? give --from /etc/mkts.yml")
    sys.stdout.write(render(source, with_api_key=args.with_api_key))
    return 0


def render(path: str, with_api_key: bool = False) -> str:
    """The project YAML for the mkts.yml at ``path``; ConfigError on bad input."""
    config = load_config(path, env={})  # every option checked as the commands will
    raw = _read(path)
    config.require_data_types()
    massive: dict[str, Any] = {}
    given = plugin_config(raw) or {}
    for key, value in given.items():
        if key == "api_key" and not with_api_key:
            continue
        massive[key] = _plain(getattr(config.massive, key, value))
    sections: dict[str, Any] = {"massive": massive}
    sections["kafka"] = {"bootstrap_servers": config.kafka.bootstrap_servers}
    sections["marketstore"] = {"url": config.marketstore.url}
    # for `services up` / `run`, which start a MarketStore of their own on these ports
    services = {ours: getattr(config.services, ours)
                for theirs, ours in (("listen_port", "marketstore_port"),
                                     ("grpc_listen_port", "marketstore_grpc_port"))
                if theirs in raw}
    if services:
        sections["services"] = services
    body = yaml.safe_dump(sections, sort_keys=False, default_flow_style=False)
    if "api_key" in given and not with_api_key:
        body = body.replace("massive:\n", "massive:\n" + NO_KEY.format(source=path), 1)
    return HEADER.format(source=path, module=PLUGIN_MODULE) + body


def _read(path: str) -> dict[str, Any]:
    raw = read_yaml(path)
    if not is_mkts(raw):
        raise ConfigError(f"{path}: not a MarketStore config (no bgworkers, listen_port "
                          "or root_directory); give the mkts.yml the plugin ran in")
    try:
        if plugin_config(raw) is None:
            raise ConfigError(f"{path}: no {PLUGIN_MODULE} worker under bgworkers: nothing "
                              "to migrate")
    except MktsError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return raw


def _plain(value: Any) -> Any:
    """A config value as YAML writes it back (dates as YYYY-MM-DD strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
