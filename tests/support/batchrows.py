"""A row of a columnar batch decode, as a record dict (to compare with per-record decoding)."""

from __future__ import annotations

from typing import Any

import numpy as np

from schemas.batch import BatchResult, ListColumn


def row(result: BatchResult, kind: str, j: int) -> dict[str, Any]:
    """Row j of a kind's columns as a record dict (None for masked, lists for ListColumn)."""
    out: dict[str, Any] = {}
    for name, column in result.columns[kind].items():
        if isinstance(column, ListColumn):
            out[name] = column[j]
        elif isinstance(column, np.ma.MaskedArray):
            out[name] = None if column.mask[j] else column.data[j].item() \
                if isinstance(column.data[j], np.generic) else column.data[j]
        else:
            value = column[j]
            out[name] = value.item() if isinstance(value, np.generic) else value
    return out


