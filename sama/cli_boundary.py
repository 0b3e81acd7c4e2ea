"""`sama`'s one error boundary and `--version` (the trainer imports no curation code, so this is
its own small copy of the idea in pipeline/cli_boundary.py).

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


def _user_errors() -> tuple[type[BaseException], ...]:
    from sama.config import ConfigError

    # Missing or existing paths, bad values and unknown keys are phrased for the user where raised.
    return ConfigError, FileNotFoundError, FileExistsError, ValueError, KeyError


class SamaErrorBoundary(TyperGroup):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except UsageError as e:
            hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
            typer.echo(f"error: {' '.join(e.format_message().split())}{hint}", err=True)
            raise typer.Exit(2) from None
        except Exception as e:
            if not isinstance(e, _user_errors()):
                raise
            text = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError's str() adds quotes
            typer.echo(f"error: {' '.join(str(text).split())}", err=True)
            raise typer.Exit(2) from None


def device_option(value: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N, checked before anything loads."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise typer.BadParameter(f"{value!r}: use auto, cpu, cuda or cuda:N")
    return value


def version_option(value: bool) -> None:
    if value:
        try:
            v = version("sama-curate")
        except PackageNotFoundError:  # a source tree that was never installed
            v = "unknown"
        typer.echo(f"sama (sama-curate) {v}")
        raise typer.Exit()
