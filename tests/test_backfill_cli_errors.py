"""Bad backfill input: one clear error line and exit code 2, before any network I/O."""

from __future__ import annotations

import pytest

from massive_fetcher.cli import main

BASE = ["backfill", "-apiKey", "KEY", "-baseURL", "http://127.0.0.1:9"]


@pytest.mark.parametrize(("args", "needle"), [
    (["-bars", "-barFrequencies", "1Min,7Min", "-from", "1Min=2024-01-01"],
     "-barFrequencies: '7Min': MarketStore answers"),
    (["-trades", "-from", "trades=2024-13-01"], "not a date"),
    (["-trades", "-from", "2024-01-01"], "expected TYPE=YYYY-MM-DD"),
    (["-trades", "-from", "trades=2024-01-05", "-to", "2024-01-02"], "is before -from"),
    (["-from", "trades=2024-01-05"], "no data type chosen"),
    (["-bars", "-barFrequencies", "1Min,1D", "-from", "1Min=2024-01-02"],
     "no start date for 1D"),
    (["-trades", "-from", "trades=2024-01-02", "-batchSize", "0"], "-batchSize must be"),
    (["-trades", "-from", "trades=2024-01-02", "-adjusted=maybe"], "true or false"),
    (["-trades", "-from", "quotez=2024-01-02"], "'quotez' is not a bar timeframe"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], needle: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("massive-fetcher backfill: error:")
    assert len(err.splitlines()) == 1
    assert needle in err
    assert "KEY" not in err.replace("API key", "")


def test_kebab_case_and_go_style_flags_parse_the_same() -> None:
    import argparse
    import datetime as dt

    from backfill.cli import register
    from backfill.options import build_options
    from common.config import Config

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    seed = parser.parse_args(["backfill", "-apiKey", "K", "-bars", "-barFrequencies",
                              "1Min,1D", "-from", "1Min=2024-01-02", "-from=1D=2023-01-01",
                              "-to", "2024-01-03", "-symbols", "AAPL", "-adjusted=false",
                              "-parallelism", "3", "-batchSize", "500", "-dir", "/tmp/x"])
    kebab = parser.parse_args(["backfill", "--api-key", "K", "--bars", "--bar-frequencies",
                               "1Min,1D", "--from", "1Min=2024-01-02", "--from",
                               "1D=2023-01-01", "--to", "2024-01-03", "--symbols", "AAPL",
                               "--adjusted", "false", "--parallelism", "3",
                               "--batch-size", "500"])
    today = dt.date(2024, 6, 1)
    a = build_options(seed, Config(), today)
    b = build_options(kebab, Config(), today)
    assert a.warnings and "-dir /tmp/x ignored" in a.warnings[0]
    assert (a.data_types, a.bar_frequencies, a.starts, a.end, a.symbols, a.adjusted,
            a.parallelism, a.batch_size) == (
        b.data_types, b.bar_frequencies, b.starts, b.end, b.symbols, b.adjusted,
        b.parallelism, b.batch_size)
    assert a.starts == {"1Min": dt.date(2024, 1, 2), "1D": dt.date(2023, 1, 1)}
    assert a.adjusted is False and a.data_types == ["bars"]
    default_to = parser.parse_args(["backfill", "-trades", "-from", "trades=2024-01-02"])
    opts = build_options(default_to, Config(), today)
    assert opts.end == today and opts.symbols == ["*"] and opts.batch_size == 50000
    assert opts.adjusted is True and opts.parallelism >= 1


def test_from_names_the_frequencies_when_bar_frequencies_is_absent() -> None:
    import argparse
    import datetime as dt

    from backfill.cli import register
    from backfill.options import build_options
    from common.config import Config

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["backfill", "-bars", "-from", "1D=2023-01-01", "-from",
                            "1H=2023-06-01", "-to", "2023-12-31"])
    opts = build_options(ns, Config(), dt.date(2024, 1, 1))
    assert opts.bar_frequencies == ["1H", "1D"] and not opts.warnings


def test_a_future_to_is_clamped_to_today() -> None:
    import argparse
    import datetime as dt

    from backfill.cli import register
    from backfill.options import build_options
    from common.config import Config

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["backfill", "-trades", "-from", "trades=2024-01-02", "-to",
                            "2030-01-01"])
    opts = build_options(ns, Config(), dt.date(2024, 6, 1))
    assert opts.end == dt.date(2024, 6, 1) and "in the future" in opts.warnings[0]
