"""The ``soundalike`` command line: thin adapters over the library.

Each area registers its commands from its own module (``core``, ``models``,
``train``, ``search``, ``live``); a command parses arguments, calls one library
function and prints.  Heavy imports happen inside the commands, so ``--help``
answers at once.  A :class:`~soundalike.errors.SoundalikeError` becomes a one-line
``error: ...`` on stderr and exit status 1.
"""

from __future__ import annotations

import sys

import typer

from soundalike.cli import core, live, models, search, train

app = typer.Typer(
    name="soundalike",
    help="Understand music by its sound: tag, classify, find similar songs, recognise music live.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

for _module in (core, models, train, search, live):
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    from soundalike.errors import SoundalikeError

    try:
        app(args=argv, standalone_mode=True)
    except SoundalikeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
