"""README.md: its table of contents, its "Read your data" snippets (run against a real
MarketStore holding rows the consumer's own code wrote) and its troubleshooting section
(every fix ``doctor`` prints is explained there)."""

from __future__ import annotations

import dataclasses
import re
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from common.config import load_config
from consumer import buckets
from consumer.writer import MarketStoreWriter
from massive_fetcher.doctor import check_broker, check_marketstore, check_registry
from schemas.native import INACTIVE
from schemas.replication import PartitionReplicas, replication_problems
from schemas.topics import TopicInfo, check_topics
from tests.support.testkit import bar, quote, trade

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
README_URL = "http://localhost:5993/rpc"
README_SYMBOL = "AAPL"
DAY_NS = pd.Timestamp("2026-11-02T14:30:00Z").value  # inside the snippets' date range
MINUTE_NS = 60_000_000_000


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def words(text: str) -> str:
    return " ".join(text.split())


def slug(title: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_the_table_of_contents_lists_every_section() -> None:
    toc = section("Contents")
    links = dict(re.findall(r"^- \[([^\]]+)\]\(#([^)]+)\)$", toc, re.M))
    headings = [h for h in re.findall(r"^## (.+)$", README, re.M) if h != "Contents"]
    for heading in headings:
        assert slug(heading) in links.values(), f"{heading!r} is not in the contents"
    assert all(anchor == slug(anchor) for anchor in links.values()), links
    assert "migrating-from-the-marketstore-plugin" in links.values()


def _write_one_of_each(url: str, symbol: str) -> dict[str, int]:
    """Three bars, five trades and four quotes of ``symbol``, written by the consumer's code."""
    records = ([("bar", bar(symbol, DAY_NS + i * MINUTE_NS)) for i in range(3)]
               + [("trade", trade(symbol, i, DAY_NS + i * 1_000_003)) for i in range(5)]
               + [("quote", quote(symbol, i, DAY_NS + i * 2_000_017)) for i in range(4)])
    rows: dict[str, list[tuple]] = {}
    for kind, record in records:
        tbk, row = buckets.to_row(kind, record)
        rows.setdefault(tbk, []).append(row)
    arrays = {tbk: buckets.sort_rows(buckets.attr_group(tbk),
                                     buckets.rows_to_array(buckets.attr_group(tbk), r))
              for tbk, r in rows.items()}
    MarketStoreWriter(url, 30).write(arrays)
    return {buckets.attr_group(tbk): len(r) for tbk, r in rows.items()}


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_read_your_data_snippets_run_against_a_real_marketstore(marketstore_url: str) -> None:
    symbol = f"RD{uuid.uuid4().hex[:6].upper()}"
    written = _write_one_of_each(marketstore_url, symbol)
    blocks = _python_blocks(section("Read your data"))
    assert len(blocks) == 2
    namespace: dict[str, Any] = {}
    for block in blocks:
        assert README_URL in block and README_SYMBOL in block
        code = block.replace(README_URL, marketstore_url).replace(f'"{README_SYMBOL}"',
                                                                  f'"{symbol}"')
        exec(compile(code, "README.md", "exec"), namespace)
    bars, trades, quotes = namespace["bars"], namespace["trades"], namespace["quotes"]
    assert (len(bars), len(trades), len(quotes)) == \
        (written["OHLCV"], written["TRADE"], written["QUOTE"])
    assert {"Open", "High", "Low", "Close", "Volume"} <= set(bars.columns)
    assert {"Price", "Size", "SipTimestamp"} <= set(trades.columns)
    assert {"BidPrice", "AskPrice", "BidSize", "AskSize"} <= set(quotes.columns)
    assert str(bars.index.tz) == "UTC"
    # the exact-time recipe in the same section
    recipe = re.search(r"`(pd\.to_datetime\(trades\[\"SipTimestamp\"\], utc=True\))`",
                       section("Read your data"))
    assert recipe is not None
    exact = eval(recipe.group(1), {"pd": pd, "trades": trades})
    assert exact.iloc[0] == pd.Timestamp(DAY_NS, tz="UTC")


def _doctor_fixes() -> dict[str, str]:
    """What each failing check tells the user to do, as doctor prints it."""
    config = load_config(None, env={})
    dead = "http://127.0.0.1:9"
    config = config.replace(
        kafka=dataclasses.replace(config.kafka, bootstrap_servers="127.0.0.1:9"),
        marketstore=dataclasses.replace(config.marketstore, url=f"{dead}/rpc"),
        schema_registry=dataclasses.replace(config.schema_registry, url=dead))
    fixes = {}
    for check in (check_broker(config, 2), check_registry(config, 2),
                  check_marketstore(config, 2)):
        assert check is not None and not check.ok
        fixes[check.name] = check.detail.rsplit("); ", 1)[1]
    wanted = config.kafka.partitions
    infos = [TopicInfo(config.kafka.topics.trades, "trades", False),
             TopicInfo(config.kafka.topics.bars, "bars", True, wanted - 1, 1, {})]
    fixes["native paths"] = INACTIVE.split("; ", 1)[1]
    down = [PartitionReplicas(0, -1, (1, 2, 3), ()), PartitionReplicas(1, 1, (1, 2, 3), (1,)),
            PartitionReplicas(2, 2, (1, 2, 3), (1, 2))]
    for kind, problem in zip(("offline", "below min.insync", "under-replicated"),
                             replication_problems(down, 2), strict=True):
        # the broker ids vary; what to do after them does not
        fixes[f"replicas {kind}"] = re.split(r"broker\(s\) [\d, ]+", problem.split("): ", 1)[1],
                                             maxsplit=1)[-1].strip()
    for problem in check_topics(config, infos=infos):
        if "is missing" in problem:
            fixes["missing topic"] = problem.split(": ", 1)[1]
        elif "partitions" in problem:
            fixes["partitions"] = (problem.split(": ", 1)[1]
                                   .replace(str(wanted - 1), "N").replace(str(wanted), "M"))
        else:
            fixes["topic setting"] = re.sub(r"add-config \S+=\S+\)$", "add-config",
                                            problem.split("(", 1)[1])
    return fixes


def test_troubleshooting_explains_every_doctor_fix() -> None:
    text = words(section("Troubleshooting").replace("`", ""))
    fixes = _doctor_fixes()
    assert set(fixes) == {"kafka", "schema registry", "marketstore", "missing topic",
                          "partitions", "topic setting", "native paths", "replicas offline",
                          "replicas below min.insync", "replicas under-replicated"}
    missing = {name: fix for name, fix in fixes.items()
               if words(fix.replace("`", "")) not in text}
    assert not missing, f"README.md's Troubleshooting lacks doctor's fixes: {missing}"
    assert "massive-fetcher doctor" in text


@pytest.mark.parametrize("title", ["Read your data", "Troubleshooting", "With Docker"])
def test_the_sections_exist(title: str) -> None:
    assert section(title).strip()
