"""The `vistune` command. Thin: every subcommand delegates to a library function.

Each package that has commands exposes a Typer app in its own `cli.py`; they are registered here.
"""

from __future__ import annotations

import importlib
import sys

import typer

from vistune.errors import VistuneError

app = typer.Typer(
    name="vistune",
    help="Visual Instruction Tuning (LLaVA): generate visual instruction data, train in two stages, evaluate, chat, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module path, attribute) of sub-apps; a sub-app registers its own commands / groups on the root app via
# `register(app)`. Listed explicitly so the command tree is readable in one place.
_SUBCOMMANDS: list[str] = [
    # BEGIN SUBCOMMANDS (one module per line; each defines `register(app: typer.Typer) -> None`)
    "vistune.world.cli",
    "vistune.datagen.cli",
    "vistune.data.cli",
    "vistune.train.cli",
    "vistune.model.cli",
    "vistune.infer.cli",
    "vistune.demo.cli",
    "vistune.eval.cli",
    # END SUBCOMMANDS
]

for _module in _SUBCOMMANDS:
    importlib.import_module(_module).register(app)


def main() -> None:
    """Entry point: run the app; user errors print one clear message and exit 1 without a traceback."""
    try:
        app(standalone_mode=False)
    except VistuneError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as err:  # usage errors (unknown option, bad value) carry their own message and exit code
        if _is_usage_error(err):
            err.show()
            sys.exit(err.exit_code)
        if _is_exit(err):
            sys.exit(err.exit_code)
        raise


def _click_types(*names: str) -> tuple[type, ...]:
    # typer >= 0.26 vendors click (its usage errors derive from typer.exceptions.TyperException); older typer raises
    # click's own. Both are matched so a mistyped option never shows a traceback.
    try:
        import click
    except ImportError:
        return ()
    return tuple(getattr(click.exceptions, name) for name in names)


def _is_usage_error(err: Exception) -> bool:
    typer_base = getattr(getattr(typer, "exceptions", None), "TyperException", None)
    types = _click_types("ClickException") + ((typer_base,) if typer_base is not None else ())
    return isinstance(err, types) and hasattr(err, "show") and hasattr(err, "exit_code")


def _is_exit(err: Exception) -> bool:
    return isinstance(err, (typer.Exit, *_click_types("Exit"))) and hasattr(err, "exit_code")


if __name__ == "__main__":
    main()
