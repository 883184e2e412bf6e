"""The compiled hot paths (``schemas/_native.c``), or None.

The extension is optional: without a C compiler at install time it is not built and every
caller takes its Python path (same bytes, slower). In an editable checkout it can also be
older than the code calling it (the .c changed, the install was not re-run); its
``API_VERSION`` tells, and an outdated module is treated as missing, with a warning,
rather than failing on the first call.
"""

from __future__ import annotations

import logging
from types import ModuleType

log = logging.getLogger(__name__)

API_VERSION = 2  # bump with any change to the functions or types the module exports


def _load() -> ModuleType | None:
    try:
        from schemas import _native
    except ImportError:
        return None
    if getattr(_native, "API_VERSION", None) != API_VERSION:
        log.warning("schemas._native is out of date (re-run `pip install -e .` or "
                    "`make test`); using the Python paths")
        return None
    return _native


native = _load()
