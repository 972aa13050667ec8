"""The ``soundalike`` command line: thin adapters over the library.

Each area registers its commands from its own module (``core``, ``models``,
``train``, ``search``, ``live``); a command parses arguments, calls one library
function and prints.  Heavy imports happen inside the commands, so ``--help``
answers at once.  A :class:`~soundalike.errors.SoundalikeError` becomes a one-line
``error: ...`` on stderr and exit status 1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

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

#: Where the top-level ``--catalog`` leaves its value for every command's own ``--catalog``
#: (which reads this variable when it is not given; the command's option still wins).
CATALOG_ENV = "SOUNDALIKE_CATALOG"


def _version(value: bool) -> None:
    if value:
        from soundalike import __version__

        typer.echo(f"soundalike {__version__}")
        raise typer.Exit()


@app.callback()
def _top(
    catalog: Annotated[Path | None, typer.Option(
        "--catalog", "-l", help="Catalog file for every command (like a command's own --catalog).",
        show_default=False)] = None,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Understand music by its sound: tag, classify, find similar songs, recognise music live."""
    if catalog is not None:
        os.environ[CATALOG_ENV] = str(catalog.expanduser())


for _module in (core, models, train, search, live):
    _module.register(app)

#: Type names shown in help instead of typer's ``<bool>``/``<list[Path]>`` annotations.
_TYPE_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "Path": "PATH"}


def tidy_help(cmd) -> None:
    """Make help read like a man page: flags show no type, values a plain word (PATH,
    INTEGER, ...), arguments their name in capitals (``FILES...``), not ``{files}``."""
    from typer.core import TyperArgument

    for param in getattr(cmd, "params", ()):
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")
            shown = param.metavar if param.required else f"[{param.metavar}]"
            param._usage_display_name = lambda shown=shown: shown  # typer writes {query}
            param.display_type_rich = lambda ctx: None
        elif getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.display_type_rich = lambda ctx: None
        elif hasattr(param, "bare_type"):
            if param.metavar is not None:
                word = param.metavar
            elif getattr(param.type_descriptor, "is_choice", False):
                word = "|".join(str(getattr(c, "value", c)) for c in param.type_descriptor.choices or ())
            else:
                bare = param.bare_type()
                inner = bare[5:-1] if bare.startswith("list[") else bare
                word = _TYPE_WORDS.get(inner, inner.upper())
            param.display_type_rich = lambda ctx, w=word: w
    get_help_option = cmd.get_help_option

    def help_option(ctx, _get=get_help_option):
        opt = _get(ctx)
        if opt is not None:
            opt.display_type_rich = lambda ctx: None
        return opt

    cmd.get_help_option = help_option
    for sub in getattr(cmd, "commands", {}).values():
        tidy_help(sub)


def command():
    """The click command behind :data:`app`, its help tidied (built once per call)."""
    cmd = typer.main.get_command(app)
    tidy_help(cmd)
    return cmd


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    import warnings

    from soundalike.errors import SoundalikeError, SoundalikeWarning

    saved = os.environ.get(CATALOG_ENV)
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        # our own warnings read as one line, as errors do; anyone else's as Python shows them
        if issubclass(category, SoundalikeWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        command().main(args=argv, standalone_mode=True, prog_name="soundalike")
    except SoundalikeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        code = exc.code
        if isinstance(code, str):  # SystemExit("why"): say why, as the interpreter would
            print(code, file=sys.stderr)
            return 1
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:  # an in-process caller (tests) must not inherit the top-level --catalog
        warnings.showwarning = shown
        if saved is None:
            os.environ.pop(CATALOG_ENV, None)
        else:
            os.environ[CATALOG_ENV] = saved
    return 0
