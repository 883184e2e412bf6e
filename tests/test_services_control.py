"""The ``marketstore_control`` fixture: kill -9 MarketStore, start it again, same URL."""

from __future__ import annotations

import uuid

import numpy as np
import pymarketstore as pymkts
import pytest

from services.probes import marketstore_answers

pytestmark = pytest.mark.integration


def test_kill_and_restart_marketstore_keeps_url_and_catalog(marketstore_control) -> None:
    url = marketstore_control.marketstore_url
    client = pymkts.Client(url)
    symbol = "CTL" + uuid.uuid4().hex[:10].upper()
    rows = np.array([(1704205800, 1.0, 2.0, 0.5, 1.5, 10)],
                    dtype=[("Epoch", "i8"), ("Open", "f8"), ("High", "f8"), ("Low", "f8"),
                           ("Close", "f8"), ("Volume", "u8")])
    client.write(rows, f"{symbol}/1Min/OHLCV")
    assert symbol in client.list_symbols()

    marketstore_control.kill_marketstore()
    assert not marketstore_answers(url)

    marketstore_control.start_marketstore()
    assert marketstore_answers(url)
    # The server is usable again; the bucket's catalog entry survived the crash.
    assert symbol in pymkts.Client(url).list_symbols()
