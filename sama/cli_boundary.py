"""One error boundary per CLI app and `--version`: `sama`'s here, and the class `curate` shares
(pipeline/cli_boundary.py imports it; the shared config loader lives on the other side,
pipeline/config_base.py).

A user error (a config field, a missing checkpoint or shard, a bad option value) is one line on
stderr, ``error: ...``, and exit status 2; a bug keeps its traceback.
"""
from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x carries its own click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on the click package
    from click.exceptions import NoArgsIsHelpError, UsageError

USAGE_EXIT = 2


class ErrorBoundary(TyperGroup):
    """A typer group whose usage errors and user errors (``user_errors``) from any command become one
    line, exit 2. `curate` uses it too (pipeline/cli_boundary.py), with its own errors."""

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
            typer.echo(f"error: {one_line(text)}", err=True)
            raise typer.Exit(USAGE_EXIT) from None


def one_line(message) -> str:
    text = str(message)
    if "\nOriginal Traceback" in text:
        # torch re-raises a DataLoader worker's error with the worker's traceback in its message:
        # the user's line is the last one, "module.Error: message".
        text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split())


class SamaErrorBoundary(ErrorBoundary):
    @classmethod
    def user_errors(cls):
        from sama.config import ConfigError

        # Missing or existing paths, bad values and unknown keys are phrased for the user where raised.
        return ConfigError, FileNotFoundError, FileExistsError, ValueError, KeyError


def device_option(value: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N, checked before anything loads."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise typer.BadParameter(f"{value!r}: use auto, cpu, cuda or cuda:N")
    return value


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
