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
    except Exception as err:  # click usage errors carry their own exit code
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
