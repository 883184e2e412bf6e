"""A small client for the subset of the Confluent Schema Registry REST API the codec needs.

Endpoints used (Confluent Schema Registry API v1, ``application/vnd.schemaregistry.v1+json``):

- ``PUT  /config/{subject}``            ``{"compatibility": "BACKWARD"}``
- ``POST /subjects/{subject}/versions`` ``{"schema": "<avro json>"}`` -> ``{"id": N}``
- ``GET  /schemas/ids/{id}``            -> ``{"schema": "<avro json>"}``

Errors come back as ``{"error_code": 40403, "message": "..."}``. A schema id the registry does
not know is a property of the data (:class:`UnknownSchemaId`); a registry that cannot be
reached or answers 5xx is an operational problem (:class:`RegistryError`), which a consumer
must retry rather than treat as bad data.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import requests

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(RuntimeError):
    """The schema registry is unreachable or refused a request (not a property of the data)."""


class UnknownSchemaId(LookupError):
    """The registry answered that a schema id does not exist."""


class SchemaRegistryClient:
    """Registers and fetches Avro schemas; one HTTP session, no caching (the codec caches)."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._session.headers.update({"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE})

    def close(self) -> None:
        self._session.close()

    def set_compatibility(self, subject: str, level: str = "BACKWARD") -> None:
        self._request("PUT", f"/config/{quote(subject, safe='')}", {"compatibility": level})

    def get_compatibility(self, subject: str) -> str | None:
        """The subject's own compatibility level, or None when it has none (uses the global)."""
        try:
            body = self._request("GET", f"/config/{quote(subject, safe='')}")
        except UnknownSchemaId:
            return None
        level = body.get("compatibilityLevel") or body.get("compatibility")
        return str(level) if level else None

    def register(self, subject: str, schema: dict[str, Any] | str) -> int:
        """Register ``schema`` under ``subject`` (idempotent) and return its global id."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        path = f"/subjects/{quote(subject, safe='')}/versions"
        body = self._request("POST", path, {"schema": text})
        return int(_answer(body, "id", path))

    def schema_by_id(self, schema_id: int) -> str:
        """The schema text registered under ``schema_id``; UnknownSchemaId if there is none."""
        path = f"/schemas/ids/{int(schema_id)}"
        return str(_answer(self._request("GET", path), "schema", path))

    def _request(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        try:
            resp = self._session.request(method, self.url + path,
                                         data=None if payload is None else json.dumps(payload),
                                         timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise RegistryError(f"schema registry {self.url} unreachable: "
                                f"{type(exc).__name__}: {exc}") from None
        try:
            body = resp.json()
        except ValueError:  # a proxy's HTML page, say: not an answer either way
            body = None
        info = body if isinstance(body, dict) else {}
        if resp.status_code == 404 and info.get("error_code") in (40401, 40403, 40408):
            raise UnknownSchemaId(info.get("message") or f"not found: {path}")
        if resp.status_code >= 400:
            message = info.get("message") or resp.text[:200]
            raise RegistryError(f"schema registry {method} {path}: HTTP {resp.status_code}: "
                                f"{message}")
        if not isinstance(body, dict):
            raise RegistryError(f"schema registry {method} {path}: unexpected reply "
                                f"{resp.text!r:.200}")
        return body


def _answer(body: dict[str, Any], key: str, path: str) -> Any:
    """``body[key]``; a reply without it is the registry's fault (retried), not a crash."""
    if key not in body:
        raise RegistryError(f"schema registry {path}: reply without {key!r}: {body!r:.200}")
    return body[key]
