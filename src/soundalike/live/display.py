"""Showing live results: a rich terminal panel, or one JSON line per hop.

:func:`render` builds the panel for one :class:`~soundalike.live.recognize.HopResult`
(pure: no terminal needed, so it is testable); :class:`LiveDisplay` keeps it on screen
with ``rich.live.Live``; :func:`write_json_line` prints a hop for programs.
"""

from __future__ import annotations

import json
import math
import sys
from typing import IO, Any

from soundalike.live.recognize import HopResult

BAR_WIDTH = 24


def bar(value: float, *, width: int = BAR_WIDTH) -> str:
    """A text bar for ``value`` in [0, 1] using eighth blocks, exactly ``width`` cells."""
    v = 0.0 if not math.isfinite(value) else min(max(value, 0.0), 1.0)
    eighths = int(round(v * width * 8))
    full, part = divmod(eighths, 8)
    s = "█" * full + ("" if part == 0 else "▏▎▍▌▋▊▉"[part - 1])
    return s.ljust(width)


def _level_text(r: HopResult) -> str:
    if not math.isfinite(r.level_db):
        return "level  -inf dBFS"
    s = f"level {r.level_db:6.1f} dBFS"
    if r.clipped >= 0.001:
        s += f"  [bold red]clipping {100 * r.clipped:.1f}%[/]"
    return s


def render(r: HopResult | None, *, model: str, source: str, label_category: str = "tag",
           has_labels: bool = True, has_catalog: bool = False) -> Any:
    """The live panel for one hop result (``None``: still filling the first window)."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    title = f"[b]soundalike listen[/]  ·  {model}  ·  {source}"
    if r is None:
        return Panel(Text("listening… (filling the first window)", style="dim"), title=title,
                     border_style="cyan")
    head = Text.from_markup(
        f"t = {r.t_s:7.1f} s   hop {r.index:<5d} {_level_text(r)}   "
        f"{r.latency_ms:5.0f} ms/hop" + (f"   [yellow]skipped {r.skipped}[/]" if r.skipped else ""))
    parts: list[Any] = [head]
    if r.status == "silence":
        parts.append(Text("\n  silence — no decision\n", style="bold dim"))
        return Panel(Group(*parts), title=title, border_style="grey50")

    if r.nearest and has_catalog:
        best = r.nearest[0]
        parts.append(Text.from_markup(f"\n  sounds like  [b green]{_esc(best.name)}[/]  "
                                      f"[dim](similarity {best.score:.2f})[/]"))
    if has_labels:
        what = f"  {label_category}: [b]{_esc(r.decision)}[/]" if r.decision else \
            f"  {label_category}: [dim]no confident decision[/]"
        parts.append(Text.from_markup(what))
        t = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=False)
        t.add_column(f"top {label_category}s", min_width=16, no_wrap=True)
        t.add_column("confidence", no_wrap=True)
        t.add_column("", justify="right", no_wrap=True)
        for label, p in r.labels:
            t.add_row(_esc(label), f"[cyan]{bar(p)}[/]", f"{p:5.2f}")
        parts.extend([Text(""), t])
    if has_catalog:
        t = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=False)
        t.add_column("#", justify="right")
        t.add_column("nearest catalog tracks", min_width=20, max_width=42, no_wrap=True,
                     overflow="ellipsis")
        t.add_column("similarity", no_wrap=True)
        t.add_column("", justify="right", no_wrap=True)
        for i, n in enumerate(r.nearest, 1):
            t.add_row(str(i), _esc(n.name), f"[green]{bar(max(n.score, 0.0), width=20)}[/]",
                      f"{n.score:5.2f}")
        parts.extend([Text(""), t])
    elif not has_labels:
        parts.append(Text("\n  this model has no labels; give --catalog to see the nearest tracks",
                          style="dim"))
    return Panel(Group(*parts), title=title, border_style="cyan",
                 subtitle=f"smoothed over {r.n_smoothed} window(s)")


def _esc(s: str | None) -> str:
    from rich.markup import escape

    return escape(s or "")


class LiveDisplay:
    """Keeps :func:`render` of the latest hop on the terminal (``rich.live.Live``)."""

    def __init__(self, *, model: str, source: str, label_category: str = "tag",
                 has_labels: bool = True, has_catalog: bool = False, console=None):
        from rich.console import Console

        self.kw = dict(model=model, source=source, label_category=label_category,
                       has_labels=has_labels, has_catalog=has_catalog)
        self.console = console or Console()
        self._live = None

    def __enter__(self) -> LiveDisplay:
        from rich.live import Live

        self._live = Live(render(None, **self.kw), console=self.console, refresh_per_second=8,
                          transient=False)
        self._live.__enter__()
        return self

    def update(self, r: HopResult) -> None:
        if self._live is not None:
            self._live.update(render(r, **self.kw))

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None


def write_json_line(r: HopResult, *, out: IO[str] | None = None) -> None:
    """Print one hop as a single JSON line and flush (for programs reading a pipe)."""
    out = out or sys.stdout
    out.write(json.dumps(r.to_json(), ensure_ascii=False, allow_nan=False) + "\n")
    out.flush()
