"""CLI commands of the models area (see the package docstring for conventions)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
