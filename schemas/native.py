"""The compiled hot paths (``schemas/_native.c``), or None.

The extension is optional: without a C compiler at install time it is not built and every
caller takes its Python path (same bytes, slower). In an editable checkout it can also be
older than the code calling it (the .c changed, the install was not re-run); its
``API_VERSION`` tells, and an outdated module is treated as missing, with a warning,
rather than failing on the first call.

Where the slow path would go unnoticed (CI, the container image) the module is required:
``MASSIVE_FETCHER_REQUIRE_NATIVE=1`` turns a missing or outdated build into an error at
import, so the run fails instead of passing on the slower Python paths.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)

API_VERSION = 3  # bump with any change to the functions or types the module exports
REQUIRE_ENV = "MASSIVE_FETCHER_REQUIRE_NATIVE"
INACTIVE = ("inactive: the Python paths run (same data, slower); install gcc and re-run "
            "`pip install -e .` (or `make test`)")


class NativeMissing(ImportError):
    """The compiled module is required (``MASSIVE_FETCHER_REQUIRE_NATIVE``) but unusable."""


def _load() -> ModuleType | None:
    try:
        import schemas._native as _native
    except ImportError as exc:
        _missing(f"schemas._native was not built ({exc}); install a C compiler "
                 "(gcc) and re-run `pip install -e .`")
        return None
    if getattr(_native, "API_VERSION", None) != API_VERSION:
        _missing("schemas._native is out of date (re-run `pip install -e .` or `make test`)")
        return None
    return _native


def _missing(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0"):
        raise NativeMissing(f"{reason}; {REQUIRE_ENV} is set, so the Python paths are "
                            "not used")
    log.warning("%s; using the Python paths", reason)


def status() -> tuple[bool, str]:
    """Whether the compiled paths are active, and a line saying so (doctor, metrics)."""
    if native is None:
        return False, INACTIVE
    return True, f"active (schemas._native, API {API_VERSION})"


native = _load()
