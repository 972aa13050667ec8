"""CLI commands of the core area: ingest, info, plot, catalog stats, demo."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
