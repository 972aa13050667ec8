"""Options and helpers shared by the CLI modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

CatalogOpt = Annotated[
    str | None,
    typer.Option("--catalog", envvar="SOUNDALIKE_CATALOG", show_envvar=True,
                 help="Catalog: a SQLite file, or a PostgreSQL URL postgresql://user@host:port/db. "
                      "Default: catalog.sqlite in the user data directory."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]


def catalog_path(path: str | Path | None) -> str | Path:
    """The catalog to use: ``--catalog`` / ``$SOUNDALIKE_CATALOG`` (file or URL) or the default."""
    from soundalike.paths import catalog_target, default_catalog_path

    return catalog_target(path) if path is not None else default_catalog_path()


def console(*, stderr: bool = False):
    """A rich Console; when output goes to a pipe or file, wide enough that tables keep
    whole file names (rich would otherwise fit them into 80 columns, cutting names
    mid-word) -- unless ``$COLUMNS`` says how wide."""
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty())
    width = 100_000 if piped and not os.environ.get("COLUMNS") else None
    return Console(stderr=stderr, width=width)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=_json_default)
    sys.stdout.write("\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
