"""Symbol specs: ``AAPL,MSFT`` (explicit) or globs like ``A*`` / ``*`` (resolved via REST)."""

from __future__ import annotations

import fnmatch

GLOB_CHARS = frozenset("*?[")


def is_glob(symbol: str) -> bool:
    return any(c in GLOB_CHARS for c in symbol)


def split_symbols(spec: str | list[str]) -> list[str]:
    """``"aapl, MSFT"`` -> ``["AAPL", "MSFT"]`` (upper case, de-duplicated, order kept)."""
    items = spec.split(",") if isinstance(spec, str) else spec
    seen: dict[str, None] = {}
    for item in items:
        symbol = item.strip().upper()
        if symbol:
            seen.setdefault(symbol, None)
    return list(seen)


def glob_prefix(pattern: str) -> str:
    """The literal prefix before the first glob character (``"AB*"`` -> ``"AB"``)."""
    for i, c in enumerate(pattern):
        if c in GLOB_CHARS:
            return pattern[:i]
    return pattern


def match_glob(pattern: str, symbol: str) -> bool:
    return fnmatch.fnmatchcase(symbol, pattern)
