"""Drop-in for the Massive plugin's users, the pure parts: MarketStore timeframes and their
Massive mapping, a mkts.yml read as the config, ``migrate``, ``massive_backfiller``'s
default config and ``data_types`` being required."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backfill.inprocess import ignored_starts, inprocess_windows
from backfill.mapping import bar_end_ns
from backfill.plan import day_start_ns, market_today, plan_windows, request_for
from common.config import Config, ConfigError, MassiveConfig, load_config
from common.timeframes import TimeframeError, parse_timeframe
from consumer.buckets import bucket_key, slot_seconds
from massive_fetcher.backfiller import with_default_config
from massive_fetcher.cli import main
from massive_fetcher.migrate import render
from tests.support.plugin_example import PLUGIN_EXAMPLE

ROOT = Path(__file__).resolve().parent.parent
NS = 1_000_000_000


@pytest.fixture
def mkts(tmp_path: Path) -> Path:
    path = tmp_path / "mkts.yml"
    path.write_text(PLUGIN_EXAMPLE)
    return path


# -- timeframes ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "name", "multiplier", "timespan", "seconds"), [
    ("1Min", "1Min", 1, "minute", 60),
    ("5Min", "5Min", 5, "minute", 300),
    ("15Min", "15Min", 15, "minute", 900),
    ("30Min", "30Min", 30, "minute", 1800),
    ("1H", "1H", 1, "hour", 3600),
    ("2H", "2H", 2, "hour", 7200),
    ("1D", "1D", 1, "day", 86400),
    ("30Sec", "30Sec", 30, "second", 30),
    ("10S", "10Sec", 10, "second", 10),  # MarketStore's short spellings, written long
    ("1T", "1Min", 1, "minute", 60),
])
def test_marketstore_timeframes_map_to_massive_aggregates(text: str, name: str,
                                                         multiplier: int, timespan: str,
                                                         seconds: int) -> None:
    tf = parse_timeframe(text)
    assert (tf.name, tf.multiplier, tf.timespan, tf.seconds) == (name, multiplier,
                                                                 timespan, seconds)


@pytest.mark.parametrize(("text", "why"), [
    # MarketStore v4.1.23 acknowledges rows of these and answers from another bucket
    ("7Min", "answers a 7Min query from its 1Min bucket"),
    ("10Min", "from its 5Min bucket"),
    ("4H", "from its 2H bucket"),
    ("1W", "from its 1D bucket"),
    ("2D", "from its 1D bucket"),
    ("1M", "is not a bar timeframe"),  # months: not a MarketStore timeframe
    ("1Y", "is not a bar timeframe"),
    ("0Min", "is not a bar timeframe"),
    ("15min", "is not a bar timeframe"),
    ("", "is not a bar timeframe"),
    (15, "is not a bar timeframe"),
])
def test_what_marketstore_cannot_store_is_refused_with_the_reason(text: object,
                                                                  why: str) -> None:
    with pytest.raises(TimeframeError, match=why):
        parse_timeframe(text)


def test_plan_requests_and_bar_ends_for_any_timeframe() -> None:
    windows = plan_windows("AAPL", "bars", dt.date(2024, 1, 2), dt.date(2024, 3, 1), "15Min")
    # 96 bars a day at most: 50000 // 96 = 520 days fit one window
    assert len(windows) == 1 and windows[0].timeframe == "15Min"
    path, _ = request_for(windows[0], 50000, True)
    assert path == "/v2/aggs/ticker/AAPL/range/15/minute/2024-01-02/2024-03-01"
    two = plan_windows("AAPL", "bars", dt.date(2024, 1, 2), dt.date(2024, 3, 1), "2H")[0]
    assert "/range/2/hour/2024-01-02/2024-03-01" in request_for(two, 50000, True)[0]
    assert plan_windows("AAPL", "bars", dt.date(2024, 1, 2), dt.date(2024, 1, 2),
                        "1T")[0].timeframe == "1Min"
    start = day_start_ns(dt.date(2024, 3, 10))  # New York's 23-hour day
    assert bar_end_ns(start, "1D") == day_start_ns(dt.date(2024, 3, 11))
    assert bar_end_ns(start, "2H") == start + 2 * 3600 * NS


def test_the_consumer_stores_any_timeframe_in_its_own_bucket() -> None:
    bar = {"symbol": "AAPL", "source": "backfill", "timeframe": "15Min"}
    assert bucket_key("bar", bar) == "AAPL/15Min/OHLCV"
    assert bucket_key("bar", {**bar, "timeframe": "2H"}) == "AAPL/2H/OHLCV"
    assert slot_seconds("2H") == 7200 and slot_seconds("1D") == 86400
    assert slot_seconds("4H") == 0 and slot_seconds("1W") == 0


def test_config_takes_any_timeframe_in_bar_frequencies_and_query_start(tmp_path: Path
                                                                       ) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("massive:\n  bar_frequencies: [15Min, 2H, 1D]\n"
                    "  query_start: {15Min: 2024-01-02, 1T: 2024-01-03, trades: 2024-01-04}\n")
    m = load_config(path, env={}).massive
    assert m.bar_frequencies == ["15Min", "2H", "1D"]
    assert m.query_start == {"15Min": dt.date(2024, 1, 2), "1Min": dt.date(2024, 1, 3),
                             "trades": dt.date(2024, 1, 4)}


# -- the in-process backfill honours bar_frequencies ----------------------------------

def test_inprocess_backfill_fetches_only_the_configured_bar_frequencies() -> None:
    today = market_today()  # the plan's "today": New York's, a day behind UTC until 05:00
    massive = MassiveConfig(api_key="k", symbols=["AAPL"], data_types=["bars", "trades"],
                            bar_frequencies=["15Min", "1D"],
                            query_start={"1Min": today, "15Min": today, "1D": today,
                                         "trades": today})
    config = Config(massive=massive)
    windows = inprocess_windows(config)
    assert sorted({(w.data_type, w.timeframe) for w in windows}) == [
        ("bars", "15Min"), ("bars", "1D"), ("trades", "")]
    assert ignored_starts(config) == [
        "massive.query_start.1Min ignored: 1Min is not in massive.bar_frequencies "
        "(15Min, 1D)"]
    no_date = dataclasses.replace(massive, bar_frequencies=["2H"], query_start={})
    assert ignored_starts(Config(massive=no_date)) == [
        "massive.bar_frequencies 2H not backfilled: no massive.query_start.2H date"]


# -- mkts.yml --------------------------------------------------------------------------

def test_the_plugins_mkts_yml_is_the_config(mkts: Path) -> None:
    config = load_config(mkts, env={})
    m = config.massive
    assert (m.api_key, m.ws_server, m.data_types, m.symbols, m.bar_frequencies) == (
        "your_api_key", "wss://socket.massive.com", ["bars", "trades"], ["AAPL", "SPY"],
        ["1Min", "1D"])
    assert m.query_start == {"1Min": dt.date(2024, 1, 1), "1D": dt.date(2020, 1, 1),
                             "trades": dt.date(2024, 6, 1)}
    assert m.base_url == "https://api.massive.com"  # the plugin's defaults where not given
    assert config.marketstore.url == "http://127.0.0.1:15993/rpc"
    assert (config.services.marketstore_port, config.services.marketstore_grpc_port) == (
        15993, 15995)
    assert config.source == str(mkts)


def test_a_mkts_yml_may_carry_the_projects_sections_and_env_still_overrides(
        tmp_path: Path) -> None:
    path = tmp_path / "mkts.yml"
    path.write_text(PLUGIN_EXAMPLE.replace('listen_host: ""', "listen_host: 10.0.0.5")
                    + "kafka:\n  bootstrap_servers: kafka:9092\n")
    config = load_config(path, env={"MASSIVE_API_KEY": "from-env"})
    assert config.kafka.bootstrap_servers == "kafka:9092"
    assert config.massive.api_key == "from-env"
    assert config.marketstore.url == "http://10.0.0.5:15993/rpc"
    only_mkts = tmp_path / "plain.yml"
    only_mkts.write_text("root_directory: /data\nlisten_port: ':6000'\n")
    plain = load_config(only_mkts, env={})
    assert plain.marketstore.url == "http://127.0.0.1:6000/rpc"
    assert plain.massive == MassiveConfig()


@pytest.mark.parametrize(("text", "message"), [
    (PLUGIN_EXAMPLE.replace("bar_frequencies: [\"1Min\", \"1D\"]", "bar_frequencies: [7Min]"),
     "massive.bar_frequencies[0]: '7Min': MarketStore answers a 7Min query"),
    (PLUGIN_EXAMPLE.replace("symbols:\n        - AAPL", "symbol:\n        - AAPL"),
     "unknown key 'massive.symbol'"),
    (PLUGIN_EXAMPLE + "massive:\n  symbols: [X]\n", "both a massive: section and a massive.so"),
    (PLUGIN_EXAMPLE.replace("listen_port: 15993", "listen_port: http"),
     "listen_port: 'http' is not a port"),
    (PLUGIN_EXAMPLE.replace("gdaxfeeder.so", "massive.so"), "2 massive.so workers"),
])
def test_a_bad_mkts_yml_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mkts.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert str(err.value).startswith(str(path)) and message in str(err.value)


# -- data_types is required ---------------------------------------------------------

def test_missing_data_types_is_one_line_and_exit_2_without_traceback(mkts: Path) -> None:
    path = mkts.parent / "no-types.yml"
    path.write_text(PLUGIN_EXAMPLE.replace('      data_types: ["bars", "trades"]\n', ""))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASSIVE")}
    for argv in (["producer", "--config", str(path)], ["migrate", "--from", str(path)]):
        done = subprocess.run([sys.executable, "-m", "massive_fetcher", *argv], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr + done.stdout
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "massive.data_types is required" in lines[0], lines


# -- migrate ----------------------------------------------------------------------------

def test_migrate_prints_the_equivalent_project_yaml(mkts: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    assert main(["migrate", "--from", str(mkts)]) == 0
    text = capsys.readouterr().out
    assert "your_api_key" not in text  # the key only with --with-api-key
    assert "Kafka sits in between" in text and "consumer` writes MarketStore" in text
    out = tmp_path / "config.yaml"
    out.write_text(text)
    migrated = load_config(out, env={"MASSIVE_API_KEY": "your_api_key"})
    original = load_config(mkts, env={})
    assert migrated.massive == original.massive
    assert migrated.marketstore == original.marketstore
    assert migrated.services == original.services
    assert "api_key: your_api_key" in render(str(mkts), with_api_key=True)


@pytest.mark.parametrize(("text", "message"), [
    ("massive:\n  data_types: [bars]\n", "not a MarketStore config"),
    ("root_directory: /data\nlisten_port: 5993\n", "no massive.so worker"),
])
def test_migrate_refuses_what_it_cannot_migrate(tmp_path: Path, text: str, message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.yml"
    path.write_text(text)
    assert main(["migrate", "--from", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


# -- massive_backfiller -----------------------------------------------------------------

def test_massive_backfiller_reads_etc_mkts_yml_like_the_plugin(mkts: Path,
                                                               tmp_path: Path) -> None:
    flags = ["-bars", "-from", "1D=2024-01-02"]
    assert with_default_config(flags, {}, str(mkts)) == ["-config", str(mkts), *flags]
    assert with_default_config(flags, {}, str(tmp_path / "absent.yml")) == flags
    for given in (["-config", "x.yml"], ["-config=x.yml"], ["--config", "x.yml"]):
        assert with_default_config([*flags, *given], {}, str(mkts)) == [*flags, *given]
    assert with_default_config(flags, {"MASSIVE_FETCHER_CONFIG": "c.yml"}, str(mkts)) == flags


def test_massive_backfiller_is_an_installed_script() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert 'massive_backfiller = "massive_fetcher.backfiller:main"' in text
