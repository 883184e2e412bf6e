"""The codec's schema registry client: confluent_kafka's SchemaRegistryClient, errors sorted.

The HTTP side (basic auth, bearer auth, TLS, retries, caching) is Confluent's client,
configured from ``schema_registry:`` (:func:`client_config`). :class:`Registry` keeps the
three calls the codec makes and sorts what can go wrong: a schema id the registry does not
know is a property of the data (:class:`UnknownSchemaId`); a registry that cannot be
reached, refuses a request (401, 409 incompatible) or answers nonsense is an operational
problem (:class:`RegistryError`), which a consumer must retry rather than treat as bad data.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

if TYPE_CHECKING:
    from common.config import SchemaRegistryConfig

UNKNOWN_ID_ERROR_CODE = 40403


class RegistryError(RuntimeError):
    """The schema registry is unreachable or refused a request (not a property of the data)."""


class UnknownSchemaId(LookupError):
    """The registry answered that a schema id does not exist."""


def shown_url(url: str) -> str:
    """``url`` without any user:password in it, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def client_config(settings: SchemaRegistryConfig) -> dict[str, Any]:
    """The SchemaRegistryClient configuration for ``schema_registry:`` (url required)."""
    if not settings.url:
        raise ValueError("schema_registry.url is not set")
    conf: dict[str, Any] = {"url": settings.url, "timeout": settings.timeout_s}
    if settings.basic_auth_user_info:
        conf["basic.auth.user.info"] = settings.basic_auth_user_info
    if settings.bearer_token:
        conf["bearer.auth.credentials.source"] = "STATIC_TOKEN"
        conf["bearer.auth.token"] = settings.bearer_token
        conf["bearer.auth.logical.cluster"] = settings.bearer_logical_cluster or ""
    if settings.ssl_ca_location:
        conf["ssl.ca.location"] = settings.ssl_ca_location
    return conf


class Registry:
    """Registers and fetches Avro schemas; the client caches, the codec caches ids too."""

    def __init__(self, settings: SchemaRegistryConfig) -> None:
        self.url = shown_url(settings.url or "")
        try:
            self.client = SchemaRegistryClient(client_config(settings))
        except (ValueError, TypeError) as exc:  # e.g. basic auth info without a colon
            # the message names keys, never their values
            from common.config import ConfigError
            raise ConfigError(f"schema_registry: {exc}") from None

    def close(self) -> None:
        self.client.close()

    def subjects(self) -> list[str]:
        return list(self._call("GET /subjects", self.client.get_subjects))

    def set_compatibility(self, subject: str, level: str = "BACKWARD") -> None:
        self._call(f"PUT /config/{subject}", self.client.set_compatibility, subject, level)

    def register(self, subject: str, schema: dict[str, Any] | str) -> int:
        """Register ``schema`` under ``subject`` (idempotent) and return its id."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        what = f"POST /subjects/{subject}/versions"
        schema_id = self._call(what, self.client.register_schema, subject, Schema(text, "AVRO"))
        if not isinstance(schema_id, int):
            raise RegistryError(f"schema registry {self.url}: {what}: reply without an id")
        return schema_id

    def schema_by_id(self, schema_id: int) -> str:
        """The schema text registered under ``schema_id``; UnknownSchemaId if there is none."""
        schema = self._call(f"GET /schemas/ids/{int(schema_id)}", self.client.get_schema,
                            int(schema_id))
        if not isinstance(getattr(schema, "schema_str", None), str):
            raise RegistryError(f"schema registry {self.url}: GET /schemas/ids/{schema_id}: "
                                "reply without a schema")
        return str(schema.schema_str)

    def _call(self, what: str, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404 and exc.error_code == UNKNOWN_ID_ERROR_CODE:
                raise UnknownSchemaId(exc.error_message) from None
            hint = {401: " (check schema_registry.basic_auth_user_info / bearer_token)",
                    403: " (check schema_registry.basic_auth_user_info / bearer_token)",
                    409: " (incompatible with the subject's registered schema under its "
                         "compatibility level)"}.get(exc.http_status_code, "")
            message = " ".join(str(exc.error_message).split())[:300]
            raise RegistryError(f"schema registry {self.url}: {what}: HTTP "
                                f"{exc.http_status_code}: {message}{hint}") from None
        except Exception as exc:  # httpx transport errors, or a reply that is no answer
            raise RegistryError(f"schema registry {self.url}: {what}: unreachable or no "
                                f"valid reply ({type(exc).__name__}: {exc})") from None
