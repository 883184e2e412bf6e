"""The one config file: typed loading, clear errors naming file and key, env overrides."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from common.config import ENV_OVERRIDES, Config, ConfigError, Range, load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_keep_the_seed_names_and_values() -> None:
    config = load_config(None, env={})
    m = config.massive
    assert m.api_key is None
    assert m.base_url == "https://api.massive.com"
    assert m.ws_server == "wss://socket.massive.com"
    assert m.data_types == []  # required where it is used, as in the plugin
    assert m.symbols == ["*"]
    assert m.query_start == {}
    assert m.bar_frequencies == ["1Min"]
    assert m.backfill_batch_size == 50000
    assert m.backfill_adjusted is True
    assert config.marketstore.url == "http://127.0.0.1:5993/rpc"
    assert config.kafka.topics.trades == "massive.stocks.trades"
    assert config.consumer.group_id == "massive-fetcher"


def test_example_file_loads_and_documents_every_key() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.source == str(EXAMPLE)
    raw = yaml.safe_load(EXAMPLE.read_text())

    def check(cls: type, section: dict, where: str) -> None:
        for f in dataclasses.fields(cls):
            if f.name == "source":
                continue
            assert f.name in section, f"config.example.yaml lacks {where}{f.name}"
            if dataclasses.is_dataclass(f.type if isinstance(f.type, type) else None):
                check(f.type, section[f.name], f"{where}{f.name}.")

    for f in dataclasses.fields(Config):
        if f.name != "source":
            assert f.name in raw, f"config.example.yaml lacks section {f.name}"
            check(type(getattr(config, f.name)), raw[f.name], f"{f.name}.")


def test_values_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path, """
massive:
  api_key: k
  symbols: AAPL, MSFT
  query_start: {1Min: 2024-01-02, trades: "2024-06-03"}
  bar_frequencies: [1Min, 1D]
kafka:
  partitions: 3
  producer: {linger.ms: 5, enable.idempotence: true}
consumer:
  batch_max_ms: 50
""")
    config = load_config(path, env={})
    assert config.massive.symbols == ["AAPL", "MSFT"]
    assert config.massive.query_start == {"1Min": dt.date(2024, 1, 2),
                                          "trades": dt.date(2024, 6, 3)}
    assert config.kafka.partitions == 3
    assert config.kafka.producer == {"linger.ms": 5, "enable.idempotence": True}
    assert config.require_api_key() == "k"


@pytest.mark.parametrize(("text", "message"), [
    ("massive:\n  apikey: x\n", "unknown key 'massive.apikey'"),
    ("kafak:\n  bootstrap_servers: x\n", "unknown key 'kafak'"),
    ("kafka:\n  partitions: twelve\n", "kafka.partitions: expected an integer, got 'twelve'"),
    ("massive:\n  data_types: [bars, ticks]\n", "massive.data_types[1]: 'ticks' is not one of"),
    ("massive:\n  bar_frequencies: [7Min]\n", "bar_frequencies[0]: '7Min': MarketStore"),
    ("massive:\n  query_start: {1Min: yesterday}\n", "massive.query_start.1Min: expected a date"),
    ("massive:\n  query_start: {1M: 2024-01-01}\n", "massive.query_start.1M: '1M' is not a bar"),
    ("consumer:\n  batch_max_events: true\n", "consumer.batch_max_events: expected an integer"),
    ("massive: [1, 2]\n", "massive: expected a mapping"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("massive: {\n", "not valid YAML"),
])
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml", env={})


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "massive:\n  api_key: from-file\nkafka:\n  bootstrap_servers: a:1\n")
    config = load_config(path, env={"MASSIVE_API_KEY": "from-env",
                                    "KAFKA_BOOTSTRAP_SERVERS": "b:2",
                                    "MARKETSTORE_URL": "http://m:1/rpc"})
    assert config.massive.api_key == "from-env"
    assert config.kafka.bootstrap_servers == "b:2"
    assert config.marketstore.url == "http://m:1/rpc"


def test_symbols_and_data_types_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "massive:\n  symbols: [SPY]\n  data_types: [bars]\n")
    config = load_config(path, env={"MASSIVE_SYMBOLS": "AAPL, MSFT",
                                    "MASSIVE_DATA_TYPES": "trades,quotes"})
    assert config.massive.symbols == ["AAPL", "MSFT"]
    assert config.massive.data_types == ["trades", "quotes"]
    # empty is unset: compose passes `${MASSIVE_SYMBOLS:-}` through when nothing is set
    config = load_config(path, env={"MASSIVE_SYMBOLS": "", "MASSIVE_DATA_TYPES": ""})
    assert (config.massive.symbols, config.massive.data_types) == (["SPY"], ["bars"])
    with pytest.raises(ConfigError, match=r"massive\.data_types\[0\]: 'ticks' is not one of"):
        load_config(path, env={"MASSIVE_DATA_TYPES": "ticks"})


def test_readme_names_every_environment_override() -> None:
    cells = [line.split("|") for line in (ROOT / "README.md").read_text().splitlines()
             if line.startswith("| `")]
    rows = {c[1].strip().strip("`"): c[4] for c in cells if len(c) > 5}
    wrong = [f"{section}.{key}" for section, key, var in ENV_OVERRIDES
             if f"`{var}`" not in rows.get(f"{section}.{key}", "")]
    assert not wrong, f"README.md configuration table lacks the env override of {wrong}"


def test_missing_api_key_where_needed() -> None:
    with pytest.raises(ConfigError, match=r"massive\.api_key is required"):
        load_config(None, env={}).require_api_key()


def test_api_key_never_in_repr() -> None:
    config = load_config(None, env={"MASSIVE_API_KEY": "sekrit-key-123"})
    assert "sekrit-key-123" not in repr(config)
    assert "sekrit-key-123" not in str(config.massive)


def test_cli_prints_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    path = write(tmp_path, "massive:\n  apikey: x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "massive_fetcher", "services", "status", "--config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "unknown key 'massive.apikey'" in lines[0]
    assert str(path) in lines[0]


def test_readme_config_reference_lists_every_key() -> None:
    readme = (ROOT / "README.md").read_text()

    def keys(cls: type, prefix: str):
        for f in dataclasses.fields(cls):
            if f.name == "source":
                continue
            value = getattr(cls(), f.name)
            if dataclasses.is_dataclass(value):
                yield from keys(type(value), f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"

    missing = [k for k in keys(Config, "") if f"| `{k}` |" not in readme]
    assert not missing, f"README.md configuration table lacks {missing}"


# -- ranges ------------------------------------------------------------------------------

# dotted key: (the allowed range as the error states it, values refused, values accepted)
RANGES: dict[str, tuple[str, list[object], list[object]]] = {
    "massive.backfill_batch_size": ("1..50000", [0, -1, 50001], [1, 50000]),
    "massive.backfill_requests_per_second": (">= 0", [-0.5], [0, 0.25]),
    "kafka.partitions": (">= 1", [0, -3], [1, 64]),
    "kafka.replication_factor": (">= 0", [-1], [0, 1, 3]),
    "schema_registry.timeout_s": ("> 0", [0, -1], [0.5, 60]),
    "marketstore.timeout_s": ("> 0", [0, -1.5], [0.001, 600]),
    "producer.reconnect_initial_s": ("> 0", [0, -0.5], [0.001, 30]),
    "producer.reconnect_max_s": ("> 0", [0, -30], [0.5, 3600]),
    "producer.max_reconnects": (">= 0", [-1], [0, 5]),
    "producer.kafka_wait_s": ("> 0", [0, -1], [0.1]),
    "producer.watermark_max_age_s": ("> 0", [0, -1], [0.5, 30]),
    "consumer.batch_max_events": (">= 1", [0, -50000], [1, 1_000_000]),
    "consumer.batch_max_ms": (">= 1", [0, -20], [1, 5000]),
    "consumer.batch_write_ratio": ("0..100", [-0.5, 101], [0, 2.5, 100]),
    "consumer.batch_adaptive_max_ms": (">= 1", [0, -200], [1, 200, 60000]),
    "consumer.commit_delay_ms": (">= 0", [-1], [0, 1500]),
    "consumer.retry_initial_s": ("> 0", [0, -0.5], [0.01, 15]),
    "consumer.retry_max_s": ("> 0", [0, -15], [0.5, 120]),
    "consumer.bucket_max_attempts": (">= 1", [0, -1], [1, 5]),
    "simulator.port": ("1..65535", [0, -1, 65536], [1, 65535]),
    "simulator.seed": (">= 0", [-1], [0, 2**40]),
    "simulator.trades_per_second": (">= 0", [-1], [0, 0.01, 1000]),
    "simulator.quotes_per_second": (">= 0", [-0.01], [0, 1000]),
    "simulator.max_connections": (">= 1", [0, -1], [1, 10]),
    "simulator.rest_requests_per_second": (">= 0", [-5], [0, 5]),
    "simulator.slow_consumer_bytes": (">= 1", [0, -1], [1, 2**30]),
    "simulator.tick_ms": (">= 1", [0, -50], [1, 1000]),
    "simulator.max_frame_events": (">= 1", [0], [1, 100_000]),
    "simulator.zipf": ("0..5", [-0.1, 5.5], [0, 0.7, 5]),
    "services.kafka_port": ("1..65535", [0, 70000], [1, 65535]),
    "services.kafka_controller_port": ("1..65535", [0, -9093], [9093]),
    "services.marketstore_port": ("1..65535", [0, 65536], [5993]),
    "services.marketstore_grpc_port": ("1..65535", [0, 65536], [5995]),
    "services.registry_port": ("1..65535", [0, 65536], [8081]),
    "services.registry_management_port": ("1..65535", [0, 65536], [8091]),
    "metrics.producer_port": ("0..65535", [-1, 65536], [0, 9101]),
    "metrics.consumer_port": ("0..65535", [-1, 65536], [0, 9102]),
    "metrics.backfill_port": ("0..65535", [-1, 65536], [0, 9103]),
}


def _numeric_keys(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        base = typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp
        if dataclasses.is_dataclass(base):
            out += _numeric_keys(base, f"{prefix}{f.name}.")
        elif base in (int, float):
            out.append(f"{prefix}{f.name}")
    return out


def _yaml_for(dotted: str, value: object) -> str:
    section, key = dotted.split(".")
    return yaml.safe_dump({section: {key: value}})


def test_every_numeric_key_has_a_declared_range_and_a_row_here() -> None:
    keys = _numeric_keys(Config)
    assert sorted(keys) == sorted(RANGES)
    for dotted in keys:
        section, key = dotted.split(".")
        hint = typing.get_type_hints(type(getattr(Config(), section)),
                                     include_extras=True)[key]
        ranges = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Range)]
        assert ranges and str(ranges[0]) == RANGES[dotted][0], dotted


@pytest.mark.parametrize("dotted", sorted(RANGES))
def test_a_value_out_of_range_names_file_key_and_range(tmp_path: Path, dotted: str) -> None:
    allowed, refused, accepted = RANGES[dotted]
    for value in refused:
        path = write(tmp_path, _yaml_for(dotted, value))
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        assert str(info.value) == (f"{path}: {dotted}: {value!r} is out of range "
                                   f"(allowed: {allowed})")
    for value in accepted:
        section, key = dotted.split(".")
        config = load_config(write(tmp_path, _yaml_for(dotted, value)), env={})
        assert getattr(getattr(config, section), key) == value


@pytest.mark.parametrize(("low", "high"), [("producer.reconnect_initial_s",
                                            "producer.reconnect_max_s"),
                                           ("consumer.retry_initial_s",
                                            "consumer.retry_max_s")])
def test_a_maximum_below_its_initial_value_is_refused(tmp_path: Path, low: str,
                                                      high: str) -> None:
    section = low.split(".")[0]
    path = write(tmp_path, yaml.safe_dump({section: {low.split(".")[1]: 2.0,
                                                     high.split(".")[1]: 1.0}}))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == (f"{path}: {high}: 1.0 is below {low} (2.0); it must be at "
                               "least as large")
    equal = write(tmp_path, yaml.safe_dump({section: {low.split(".")[1]: 2.0,
                                                      high.split(".")[1]: 2}}))
    config = getattr(load_config(equal, env={}), section)
    assert getattr(config, high.split(".")[1]) == 2.0


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_a_float_must_be_finite(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"consumer:\n  retry_max_s: {value}\n")
    with pytest.raises(ConfigError, match=r"consumer\.retry_max_s: expected a finite number"):
        load_config(path, env={})


def test_readme_states_every_range() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line.split("|")[3].strip()
            for line in readme.splitlines() if line.startswith("| `")}
    wrong = {k: rows.get(k) for k, (allowed, _, _) in RANGES.items()
             if not (rows.get(k) or "").startswith(allowed)}
    assert not wrong, f"README.md configuration table states other ranges: {wrong}"
