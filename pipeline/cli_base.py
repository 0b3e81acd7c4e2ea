"""What both CLIs (`curate` and `sama`) share, as config_base.py is what their configs share: the
error boundary, one-line user errors, and `--version`. Each app subclasses the boundary with its
own user errors (`curate`'s in pipeline/curate/cli_boundary.py, `sama`'s in sama/cli_boundary.py).

A user error (a config field, a missing checkpoint or shard, a bad option value, a refused query)
is one line on stderr, ``error: ...``, and exit status 2; a bug keeps its traceback.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x carries its own click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on the click package
    from click.exceptions import NoArgsIsHelpError, UsageError

USAGE_EXIT = 2


class ErrorBoundary(TyperGroup):
    """A typer group whose usage errors and user errors (``user_errors``) from any command become one
    line, exit 2."""

    @classmethod
    def user_errors(cls) -> tuple[type[BaseException], ...]:
        return ()

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except UsageError as e:
            hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
            typer.echo(f"error: {one_line(e.format_message())}{hint}", err=True)
            raise typer.Exit(USAGE_EXIT) from None
        except Exception as e:
            if not isinstance(e, self.user_errors()):
                raise
            text = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError's str() adds quotes
            fail(one_line(text))


def fail(message, code: int = USAGE_EXIT) -> NoReturn:
    """Stop a command with ``error: message`` on stderr and exit status ``code``: what a command
    says when it finds the request cannot be done, as the boundary says it for a raised error."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def one_line(message) -> str:
    text = str(message)
    if "\nOriginal Traceback" in text:
        # torch re-raises a DataLoader worker's error with the worker's traceback in its message:
        # the user's line is the last one, "module.Error: message".
        text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split())


def package_version() -> str:
    try:
        return version("sama-curate")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def version_option(prog: str):
    """The ``--version`` callback of the CLI ``prog`` (``curate`` and ``sama`` share it)."""
    def show(value: bool) -> None:
        if value:
            typer.echo(f"{prog} (sama-curate) {package_version()}")
            raise typer.Exit()
    return show
