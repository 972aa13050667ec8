"""Where soundalike keeps things by default."""

from __future__ import annotations

import os
from pathlib import Path

ENV_CATALOG = "SOUNDALIKE_CATALOG"
ENV_DATA_DIR = "SOUNDALIKE_DATA_DIR"


def data_dir() -> Path:
    """The user data directory (``$SOUNDALIKE_DATA_DIR`` or the platform's default)."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_path

    return user_data_path("soundalike", appauthor=False)


def default_catalog_path() -> Path:
    """``$SOUNDALIKE_CATALOG`` or ``<data dir>/catalog.sqlite``."""
    env = os.environ.get(ENV_CATALOG)
    if env:
        return Path(env).expanduser()
    return data_dir() / "catalog.sqlite"


def cache_dir() -> Path:
    """Feature cache directory (``<data dir>/cache``)."""
    return data_dir() / "cache"
