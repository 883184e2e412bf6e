"""Where downloads, builds, data, logs and pid files live (XDG base directories)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from common.config import ServicesConfig

APP_DIR = "massive-fetcher"


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    value = env.get(var)
    # The XDG spec says a relative value is invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def cache_root(settings: ServicesConfig, env: Mapping[str, str] | None = None) -> Path:
    """Downloads and builds, shared by every state dir: ``$XDG_CACHE_HOME/massive-fetcher``."""
    if settings.cache_dir:
        return Path(settings.cache_dir).expanduser().resolve()
    return _xdg(os.environ if env is None else env, "XDG_CACHE_HOME", ".cache") / APP_DIR


def state_root(settings: ServicesConfig, env: Mapping[str, str] | None = None) -> Path:
    """Data, logs and pid files: ``$XDG_STATE_HOME/massive-fetcher``."""
    if settings.state_dir:
        return Path(settings.state_dir).expanduser().resolve()
    return _xdg(os.environ if env is None else env, "XDG_STATE_HOME", ".local/state") / APP_DIR
