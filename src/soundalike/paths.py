"""Where soundalike keeps things by default."""

from __future__ import annotations

import os
from pathlib import Path

ENV_CATALOG = "SOUNDALIKE_CATALOG"
ENV_DATA_DIR = "SOUNDALIKE_DATA_DIR"
#: How a catalog on a database server is named (anything else is a SQLite file path).
CATALOG_URL_PREFIXES = ("postgresql://", "postgres://")


def is_catalog_url(target: str | os.PathLike) -> bool:
    """Whether a catalog target names a server (``postgresql://...``) rather than a file."""
    return str(target).startswith(CATALOG_URL_PREFIXES)


def catalog_target(target: str | os.PathLike) -> str | Path:
    """A catalog as the user named it: a URL stays text, a file path is expanded."""
    return str(target) if is_catalog_url(target) else Path(target).expanduser()


def data_dir() -> Path:
    """The user data directory (``$SOUNDALIKE_DATA_DIR`` or the platform's default)."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_path

    return user_data_path("soundalike", appauthor=False)


def default_catalog_path() -> str | Path:
    """``$SOUNDALIKE_CATALOG`` (a file or a ``postgresql://`` URL) or ``<data dir>/catalog.sqlite``."""
    env = os.environ.get(ENV_CATALOG)
    if env:
        return catalog_target(env)
    return data_dir() / "catalog.sqlite"


def cache_dir() -> Path:
    """Feature cache directory (``<data dir>/cache``)."""
    return data_dir() / "cache"
