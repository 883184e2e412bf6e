"""REST routes (filled in next)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from common.config import SimulatorConfig
from simulator.model import MarketModel


class RestApi:
    def __init__(self, model: MarketModel, settings: SimulatorConfig,
                 registry: CollectorRegistry, status: str = "OK") -> None:
        self.model = model
        self.settings = settings
        self.requests = 0
        self._injected: list[Any] = []

    def add_routes(self, app: web.Application) -> None:
        return

    def inject(self, status: int, count: int, path: str | None) -> None:
        self._injected.append((status, count, path))
