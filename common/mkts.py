"""A MarketStore ``mkts.yml`` read as this project's configuration (pure, no I/O).

The Massive plugin was configured inside MarketStore's own file::

    listen_port: 5993
    bgworkers:
      - module: massive.so
        name: Massive
        config: {api_key: ..., data_types: [bars], ...}

:func:`from_mkts` turns such a file into the project's sections: the ``massive.so``
worker's ``config:`` becomes ``massive:``, and MarketStore's address comes from
``listen_host``/``listen_port`` (and ``grpc_listen_port`` for the bundled services).
MarketStore's other keys (``root_directory``, ``log_level``, ``triggers``, other workers
...) belong to MarketStore and are passed over, as MarketStore itself passes over keys
it does not know. The project's own sections may sit beside them in the same file
(``kafka:`` ...) and are taken as they are.
"""

from __future__ import annotations

import posixpath
from typing import Any

# Keys only a MarketStore file has at its top level: one of them marks a file as mkts.yml.
MARKERS = frozenset({"root_directory", "listen_port", "grpc_listen_port", "bgworkers",
                     "triggers", "wal_rotate_interval", "stop_grace_period"})
PLUGIN_MODULE = "massive.so"
# MarketStore listens on every interface when listen_host is empty.
_ANY_HOSTS = ("", "0.0.0.0", "::")


class MktsError(ValueError):
    """A mkts.yml this project cannot take; the message names the key."""


def is_mkts(raw: dict[str, Any]) -> bool:
    return any(key in MARKERS for key in raw)


def plugin_config(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The ``config:`` of the one ``massive.so`` background worker, None without one."""
    workers = raw.get("bgworkers") or []
    if not isinstance(workers, list):
        raise MktsError("bgworkers: expected a list of workers")
    found = []
    for i, worker in enumerate(workers):
        if not isinstance(worker, dict):
            raise MktsError(f"bgworkers[{i}]: expected a mapping (module, name, config)")
        module = str(worker.get("module") or "")
        if posixpath.basename(module) == PLUGIN_MODULE:
            found.append((i, worker))
    if len(found) > 1:
        raise MktsError(f"bgworkers: {len(found)} {PLUGIN_MODULE} workers; this project "
                        "runs one configuration, keep one of them")
    if not found:
        return None
    i, worker = found[0]
    config = worker.get("config") or {}
    if not isinstance(config, dict):
        raise MktsError(f"bgworkers[{i}].config: expected a mapping of the plugin's options")
    return dict(config)


def marketstore_address(raw: dict[str, Any]) -> tuple[str, int | None, int | None]:
    """(host to reach MarketStore at, listen_port, grpc_listen_port) from the file."""
    host = str(raw.get("listen_host") or "").strip()
    if host in _ANY_HOSTS:
        host = "127.0.0.1"
    elif ":" in host:  # an IPv6 address, as a URL spells it
        host = f"[{host}]"
    return host, _port(raw, "listen_port"), _port(raw, "grpc_listen_port")


def _port(raw: dict[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    text = str(value).strip().lstrip(":")  # MarketStore takes "5993" and ":5993" alike
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise MktsError(f"{key}: {value!r} is not a port (1..65535)")
    return int(text)


def from_mkts(raw: dict[str, Any], sections: frozenset[str]) -> dict[str, Any]:
    """The project's sections from a mkts.yml ``raw``; ``sections`` are the project's own
    section names, kept when present beside MarketStore's keys."""
    out = {key: value for key, value in raw.items() if key in sections}
    plugin = plugin_config(raw)
    if plugin is not None:
        if "massive" in out:
            raise MktsError(f"both a massive: section and a {PLUGIN_MODULE} worker's "
                            "config: keep one of them")
        out["massive"] = plugin
    host, port, grpc_port = marketstore_address(raw)
    if port is not None:
        marketstore = dict(out.get("marketstore") or {})
        marketstore.setdefault("url", f"http://{host}:{port}/rpc")
        out["marketstore"] = marketstore
    services = dict(out.get("services") or {})
    if port is not None:
        services.setdefault("marketstore_port", port)
    if grpc_port is not None:
        services.setdefault("marketstore_grpc_port", grpc_port)
    if services:
        out["services"] = services
    return out
