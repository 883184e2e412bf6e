"""Prometheus metrics and a health endpoint served over HTTP by every long-running part.

Every metric the project defines is named ``massive_fetcher_<part>_...`` (``NAMESPACE``), so
one ``{__name__=~"massive_fetcher_.*"}`` finds them all; which process a series came from is
Prometheus's ``job``/``instance``, and which Kafka client a librdkafka figure belongs to is
the ``client_id`` label. The process collector adds the standard ``process_*`` series (CPU,
resident memory, open file descriptors), under the names every Prometheus tool expects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    ProcessCollector,
    generate_latest,
)

HealthCheck = Callable[[], tuple[bool, str]]

NAMESPACE = "massive_fetcher"


def new_registry() -> CollectorRegistry:
    """A registry for one part's ``/metrics``, with the process collector in it and
    ``massive_fetcher_native_paths_active`` (1 when ``schemas/_native.c`` is in use: the
    Python paths give the same bytes, so only this tells a slow install apart)."""
    from schemas.native import status

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    Gauge("native_paths_active", "1 when the compiled hot paths (schemas._native) are in use",
          namespace=NAMESPACE, registry=registry).set(1 if status()[0] else 0)
    return registry


class MetricsServer:
    """Serves ``/metrics`` from ``registry`` and ``/healthz`` from ``health`` on a thread.

    Port 0 picks a free port (tests); ``port`` tells which one was bound.
    """

    def __init__(self, registry: CollectorRegistry, host: str, port: int,
                 health: HealthCheck | None = None) -> None:
        self._registry = registry
        self._health = health or (lambda: (True, "ok"))
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, status = generate_latest(outer._registry), 200
                    ctype = CONTENT_TYPE_LATEST
                elif path in ("/healthz", "/health"):
                    ok, detail = outer._health()
                    body, status = detail.encode(), 200 if ok else 503
                    ctype = "text/plain; charset=utf-8"
                else:
                    body, status, ctype = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler
