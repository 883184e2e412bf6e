"""One typed configuration object for every part, loaded and validated once at start.

The YAML file has one section per concern (``massive``, ``kafka``, ``schema_registry``,
``marketstore``, ``producer``, ``consumer``, ``simulator``, ``services``, ``metrics``).
Every key is checked against the dataclasses below: an unknown key, a value of the wrong
type or a number outside its declared :class:`Range` (``Annotated[int, Range(min=1)]`` on
the field; ``ORDERED`` pairs for rules between two fields) raises :class:`ConfigError`
naming the file, the dotted key and what is allowed, so a typo never turns silently into a
default and a 0 or a negative never into a busy loop or a reconnect storm. Environment
variables override a few keys (see ``ENV_OVERRIDES``). A MarketStore ``mkts.yml`` that
configures the Massive plugin is read too (:mod:`common.mkts`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml

from common.mkts import MktsError, from_mkts, is_mkts
from common.timeframes import TimeframeError, canonical

DataType = Literal["bars", "trades", "quotes"]
# librdkafka properties are passed through untouched; these are the value types it accepts.
KafkaProperty = str | int | float | bool

DATA_TYPES: tuple[str, ...] = typing.get_args(DataType)
REST_MAX_LIMIT = 50000  # the largest page (``limit``) the Massive REST API serves


class ConfigError(ValueError):
    """A configuration problem, with the file and key it is about."""


@dataclass(frozen=True)
class Spelling:
    """A string checked and written one way by ``parse`` (ValueError: not allowed).

    Declared in a field's type hint, ``Annotated[str, Spelling(canonical)]``.
    """

    parse: Callable[[str], str]


def query_start_key(key: str) -> str:
    """``trades``, ``quotes`` or a bar timeframe (canonical spelling)."""
    if key in ("trades", "quotes"):
        return key
    try:
        return canonical(key)
    except TimeframeError as exc:
        raise ValueError(f"{exc}; or trades / quotes") from None


BarFrequency = Annotated[str, Spelling(canonical)]
QueryStartKey = Annotated[str, Spelling(query_start_key)]


@dataclass(frozen=True)
class Range:
    """The values a number may take: ``min`` and ``max`` included, ``above`` excluded.

    Declared in a field's type hint, ``Annotated[float, Range(above=0)]``, and checked by
    the loader after the type.
    """

    min: float | None = None
    max: float | None = None
    above: float | None = None

    def allows(self, value: float) -> bool:
        return ((self.min is None or value >= self.min)
                and (self.max is None or value <= self.max)
                and (self.above is None or value > self.above))

    def __str__(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min:g}..{self.max:g}"
        parts = [f">= {self.min:g}" if self.min is not None else "",
                 f"> {self.above:g}" if self.above is not None else "",
                 f"<= {self.max:g}" if self.max is not None else ""]
        return " and ".join(p for p in parts if p)


PORT = Range(1, 65535)
# a metrics port may be 0: any free port for the producer and consumer, not served for
# the backfill
METRICS_PORT = Range(0, 65535)


@dataclass(frozen=True)
class MassiveConfig:
    """The seed's options, names and defaults unchanged."""

    api_key: str | None = None
    base_url: str = "https://api.massive.com"
    ws_server: str = "wss://socket.massive.com"
    # Required by whatever streams (as by the plugin): empty means not configured, never
    # "everything", so an omitted key cannot subscribe to the whole firehose.
    data_types: list[DataType] = field(default_factory=list)
    symbols: list[str] = field(default_factory=lambda: ["*"])
    query_start: dict[QueryStartKey, dt.date] = field(default_factory=dict)
    bar_frequencies: list[BarFrequency] = field(default_factory=lambda: ["1Min"])
    backfill_batch_size: Annotated[int, Range(1, REST_MAX_LIMIT)] = REST_MAX_LIMIT
    backfill_adjusted: bool = True
    # REST requests per second for backfill and gap repair (0: unlimited); for plans with
    # low limits. The CLI's --rate overrides it.
    backfill_requests_per_second: Annotated[float, Range(min=0)] = 0.0

    def __repr__(self) -> str:  # the key must never reach a log line through repr()
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["api_key"] = "***" if self.api_key else None
        return f"MassiveConfig({shown})"


@dataclass(frozen=True)
class TopicsConfig:
    bars: str = "massive.stocks.bars"
    trades: str = "massive.stocks.trades"
    quotes: str = "massive.stocks.quotes"
    dead_letter: str = "massive.stocks.dead-letter"

    def for_type(self, data_type: str) -> str:
        return {"bars": self.bars, "trades": self.trades, "quotes": self.quotes}[data_type]


def secret_property(name: str) -> bool:
    """A librdkafka property whose value is a secret (``sasl.password``,
    ``ssl.key.password``, ``sasl.oauthbearer.client.secret``, an inline key...)."""
    return name.endswith(("password", "secret")) or name in (
        "ssl.key.pem", "sasl.oauthbearer.config", "sasl.jaas.config")


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    partitions: Annotated[int, Range(min=1)] = 12
    # 0: min(3, brokers in the cluster) when topics are created
    replication_factor: Annotated[int, Range(min=0)] = 0
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    # Passed through to librdkafka: `properties` to every client, the others to one kind.
    properties: dict[str, KafkaProperty] = field(default_factory=dict)
    producer: dict[str, KafkaProperty] = field(default_factory=dict)
    consumer: dict[str, KafkaProperty] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        """The values of every secret property, for the log redactor."""
        return [str(value) for props in (self.properties, self.producer, self.consumer)
                for name, value in props.items() if secret_property(name) and value != ""]

    def __repr__(self) -> str:  # a password must never reach a log line through repr()
        shown: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for section in ("properties", "producer", "consumer"):
            shown[section] = {name: "***" if secret_property(name) else value
                              for name, value in shown[section].items()}
        return f"KafkaConfig({shown})"


@dataclass(frozen=True)
class SchemaRegistryConfig:
    url: str | None = None
    # "user:password" for HTTP basic auth; a secret, like bearer_token.
    basic_auth_user_info: str | None = None
    bearer_token: str | None = None
    # Sent with a bearer token as target-sr-cluster (Confluent Cloud's lsrc-...).
    bearer_logical_cluster: str | None = None
    # A CA bundle (file or directory) to verify an https:// registry; default: certifi's.
    ssl_ca_location: str | None = None
    timeout_s: Annotated[float, Range(above=0)] = 10.0

    SECRETS: ClassVar[tuple[str, ...]] = ("basic_auth_user_info", "bearer_token")

    def secrets(self) -> list[str]:
        """The credentials set, for the log redactor."""
        return [value for name in self.SECRETS if (value := getattr(self, name))]

    def __repr__(self) -> str:  # credentials must never reach a log line through repr()
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for secret in self.SECRETS:
            shown[secret] = "***" if shown[secret] else None
        return f"SchemaRegistryConfig({shown})"


@dataclass(frozen=True)
class MarketStoreConfig:
    url: str = "http://127.0.0.1:5993/rpc"
    timeout_s: Annotated[float, Range(above=0)] = 30.0


@dataclass(frozen=True)
class ProducerConfig:
    ORDERED: ClassVar[tuple[tuple[str, str], ...]] = (("reconnect_initial_s", "reconnect_max_s"),)

    reconnect_initial_s: Annotated[float, Range(above=0)] = 0.5
    reconnect_max_s: Annotated[float, Range(above=0)] = 30.0
    # 0 = reconnect forever; the official client stops after 5.
    max_reconnects: Annotated[int, Range(min=0)] = 0
    # Where disconnect windows are recorded for gap repair (JSON lines).
    gaps_file: str = "state/gaps.jsonl"
    gap_repair: bool = True
    # Repair the downtime between a clean stop and the next start (a crash's always is).
    repair_downtime: bool = True
    # Under a load that never lets librdkafka's queue empty, reading pauses this often
    # until Kafka acknowledged what is queued, so the watermark (what a restart after a
    # crash repairs from) is never older than about this.
    watermark_max_age_s: Annotated[float, Range(above=0)] = 30.0
    # At start, wait this long for Kafka to answer, then exit with a clear error.
    kafka_wait_s: Annotated[float, Range(above=0)] = 30.0


@dataclass(frozen=True)
class ConsumerConfig:
    ORDERED: ClassVar[tuple[tuple[str, str], ...]] = (("retry_initial_s", "retry_max_s"),)

    group_id: str = "massive-fetcher"
    batch_max_events: Annotated[int, Range(min=1)] = 50000
    # A batch is written once it is this old (or full) and the write before it returned.
    # MarketStore rewrites a variable-length bucket's whole second on every append, so shorter
    # means more server CPU per event and longer means more latency; the default keeps
    # writes back to back at the latency target's rate (bench/consumer/README.md has the
    # trade-off measured).
    batch_max_ms: Annotated[int, Range(min=1)] = 10
    # While writes are slow a batch waits this many times the recent write time (at most
    # batch_adaptive_max_ms): fewer writes when MarketStore is the bottleneck
    # (consumer.batching). 0: always batch_max_ms.
    batch_write_ratio: Annotated[float, Range(min=0, max=100)] = 0.0
    batch_adaptive_max_ms: Annotated[int, Range(min=1)] = 200
    # MarketStore acknowledges before its WAL is flushed; offsets are committed only once
    # a write is older than this (longer than the server's WAL flush interval).
    commit_delay_ms: Annotated[int, Range(min=0)] = 1500
    retry_initial_s: Annotated[float, Range(above=0)] = 0.5
    retry_max_s: Annotated[float, Range(above=0)] = 15.0
    # A bucket whose own reads or writes fail this many times in a row, while the server
    # answers, is quarantined: its records go to the dead-letter topic.
    bucket_max_attempts: Annotated[int, Range(min=1)] = 5


@dataclass(frozen=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: Annotated[int, PORT] = 8765
    seed: Annotated[int, Range(min=0)] = 42
    symbols: list[str] = field(default_factory=list)  # empty: the default universe
    trades_per_second: Annotated[float, Range(min=0)] = 5.0  # per symbol
    quotes_per_second: Annotated[float, Range(min=0)] = 5.0  # per symbol
    api_keys: list[str] = field(default_factory=list)  # empty: any non-empty key
    max_connections: Annotated[int, Range(min=1)] = 1
    rest_requests_per_second: Annotated[float, Range(min=0)] = 0.0  # 0: no limit
    unentitled_api_keys: list[str] = field(default_factory=list)  # accepted keys that get 403
    # queued bytes before a client is dropped
    slow_consumer_bytes: Annotated[int, Range(min=1)] = 32 * 1024 * 1024
    tick_ms: Annotated[int, Range(min=1)] = 50  # how often live T/Q frames are generated and sent
    max_frame_events: Annotated[int, Range(min=1)] = 2000  # events per WebSocket frame at most
    # activity rank ** -zipf per symbol (0: every symbol alike); bench.day uses 0.7
    zipf: Annotated[float, Range(min=0, max=5)] = 0.0
    day_shape: bool = False  # trade only in the US session, with open and close bursts


@dataclass(frozen=True)
class ServicesConfig:
    kafka_version: str = "4.1.1"
    kafka_port: Annotated[int, PORT] = 9092
    kafka_controller_port: Annotated[int, PORT] = 9093
    kafka_heap: str = "512m"
    marketstore_version: str = "v4.1.23"
    marketstore_port: Annotated[int, PORT] = 5993
    marketstore_grpc_port: Annotated[int, PORT] = 5995
    registry_version: str = "3.3.3"  # Apicurio Registry, from Maven Central
    registry_port: Annotated[int, PORT] = 8081
    registry_management_port: Annotated[int, PORT] = 8091
    registry_heap: str = "256m"
    cache_dir: str | None = None  # default: $XDG_CACHE_HOME/massive-fetcher
    state_dir: str | None = None  # default: $XDG_STATE_HOME/massive-fetcher


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    producer_port: Annotated[int, METRICS_PORT] = 9101
    consumer_port: Annotated[int, METRICS_PORT] = 9102
    backfill_port: Annotated[int, METRICS_PORT] = 9103


@dataclass(frozen=True)
class Config:
    massive: MassiveConfig = field(default_factory=MassiveConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    schema_registry: SchemaRegistryConfig = field(default_factory=SchemaRegistryConfig)
    marketstore: MarketStoreConfig = field(default_factory=MarketStoreConfig)
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    consumer: ConsumerConfig = field(default_factory=ConsumerConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: str = "<defaults>"  # the file it came from, for error messages

    def secrets(self) -> list[str]:
        """Everything the logs must never show: the API key, Kafka's secret properties and
        the registry's credentials."""
        return [s for s in (self.massive.api_key, *self.kafka.secrets(),
                            *self.schema_registry.secrets()) if s]

    def require_api_key(self) -> str:
        if not self.massive.api_key:
            raise ConfigError(
                f"{self.source}: massive.api_key is required "
                "(set it in the file or in the MASSIVE_API_KEY environment variable)"
            )
        return self.massive.api_key

    def require_data_types(self) -> list[str]:
        if not self.massive.data_types:
            raise ConfigError(
                f"{self.source}: massive.data_types is required, as in the plugin: which "
                "of bars, trades, quotes to stream, e.g. data_types: [bars, trades]")
        return list(self.massive.data_types)

    def replace(self, **sections: Any) -> Config:
        return dataclasses.replace(self, **sections)


# (section, key, environment variable); an empty variable counts as unset. A list key takes
# a comma-separated value ("AAPL,MSFT"), so a container picks its feed without a file.
ENV_OVERRIDES: tuple[tuple[str, str, str], ...] = (
    ("massive", "api_key", "MASSIVE_API_KEY"),
    ("massive", "base_url", "MASSIVE_BASE_URL"),
    ("massive", "ws_server", "MASSIVE_WS_SERVER"),
    ("massive", "symbols", "MASSIVE_SYMBOLS"),
    ("massive", "data_types", "MASSIVE_DATA_TYPES"),
    ("kafka", "bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS"),
    ("schema_registry", "url", "SCHEMA_REGISTRY_URL"),
    ("schema_registry", "basic_auth_user_info", "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"),
    ("schema_registry", "bearer_token", "SCHEMA_REGISTRY_BEARER_TOKEN"),
    ("marketstore", "url", "MARKETSTORE_URL"),
    ("metrics", "host", "METRICS_HOST"),
)


class _Loader(yaml.SafeLoader):
    """SafeLoader, except that a date-shaped scalar that is no date (2024-13-01) stays a
    string, so that validation names its key instead of PyYAML raising mid-parse."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


SECTIONS = frozenset(f.name for f in dataclasses.fields(Config) if f.name != "source")


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The file as plain data (a mapping at the top), or ConfigError with one line."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return raw


def read_sections(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The file's sections as plain data, unvalidated; a mkts.yml already translated."""
    source = str(path)
    raw = read_yaml(path)
    if is_mkts(raw):
        try:
            raw = from_mkts(raw, SECTIONS)
        except MktsError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return raw


def load_config(path: str | os.PathLike[str] | None = None,
                env: typing.Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (or only defaults when None), apply env overrides, validate."""
    env = os.environ if env is None else env
    source = str(path) if path is not None else "<defaults>"
    raw: Any = read_sections(path) if path is not None else {}
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for section, key, var in ENV_OVERRIDES:
        value = env.get(var)
        if value:
            sec = raw.setdefault(section, {})
            if isinstance(sec, dict):
                sec[key] = value
    if "source" in raw:
        raise ConfigError(f"{source}: unknown key 'source'")
    config = _build(Config, raw, "", source)
    return dataclasses.replace(config, source=source)


def _build(cls: type, data: Any, where: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where or 'top level'}: expected a mapping, "
                          f"got {type(data).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{source}: unknown key '{dotted}' (known here: {known})")
        kwargs[key] = _convert(hints[key], value, dotted, source)
    built = cls(**kwargs)
    for low, high in getattr(cls, "ORDERED", ()):
        if getattr(built, high) < getattr(built, low):
            prefix = f"{where}." if where else ""
            raise ConfigError(
                f"{source}: {prefix}{high}: {getattr(built, high)!r} is below {prefix}{low} "
                f"({getattr(built, low)!r}); it must be at least as large")
    return built


def _convert(tp: Any, value: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        converted = _convert(args[0], value, where, source)
        for allowed in tp.__metadata__:
            if isinstance(allowed, Range) and not allowed.allows(converted):
                raise ConfigError(f"{source}: {where}: {value!r} is out of range "
                                  f"(allowed: {allowed})")
            if isinstance(allowed, Spelling):
                try:
                    converted = allowed.parse(converted)
                except ValueError as exc:
                    raise ConfigError(f"{source}: {where}: {exc}") from None
        return converted
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, where, source)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where, source)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"{source}: {where}: unexpected value {value!r}")
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{source}: {where}: {value!r} is not one of {allowed}")
        return value
    if origin is list:
        if isinstance(value, str):  # "a,b" is accepted where a list is expected
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {where}: expected a list, got {type(value).__name__}")
        return [_convert(args[0], v, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {where}: expected a mapping, "
                              f"got {type(value).__name__}")
        return {_convert(args[0], k, f"{where}.{k}", source):
                _convert(args[1], v, f"{where}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{source}: {where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise ConfigError(f"{source}: {where}: expected a finite number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: {where}: expected a string, got {value!r}")
    if tp is dt.date:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: {where}: expected a date YYYY-MM-DD, got {value!r}")
    raise ConfigError(f"{source}: {where}: unsupported type {tp!r}")  # pragma: no cover
