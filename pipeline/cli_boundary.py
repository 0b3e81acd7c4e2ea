"""What keeps `curate` from surprising: one error boundary for every command, the stage names as a
choice list, and `--version`.

A user error (a bad config field, a bad option value, a refused query, nothing to preview) is one
line on stderr, ``error: ...``, and exit status 2, never a traceback; a bug still shows its
traceback. Options are checked by click before a command runs, so nothing is written for an
invalid command line.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import typer
from typer.core import TyperGroup

from pipeline.runner import STAGE_ORDER

try:  # typer >= 0.2x carries its own click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on the click package
    from click.exceptions import NoArgsIsHelpError, UsageError

USAGE_EXIT = 2
STAGE_CHOICES = [*STAGE_ORDER, "all"]
STAGE_METAVAR = "[" + "|".join(STAGE_CHOICES) + "]"


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the user asked for something that cannot be done" (already
    phrased for them); imported on use, not at start-up, to keep `curate --help` fast."""
    from manifests.catalog import QueryError, ReadOnlyError
    from pipeline.config import ConfigError
    from stages.shard.preview import PreviewError

    return ConfigError, ReadOnlyError, QueryError, PreviewError


def one_line(message) -> str:
    return " ".join(str(message).split())


class ErrorBoundary(TyperGroup):
    """The `curate` group: a usage error or a user error from any command becomes one line, exit 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except UsageError as e:
            where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
            typer.echo(f"error: {one_line(e.format_message())}{where}", err=True)
            raise typer.Exit(USAGE_EXIT) from None
        except Exception as e:
            if not isinstance(e, _user_errors()):
                raise
            typer.echo(f"error: {one_line(e)}", err=True)
            raise typer.Exit(USAGE_EXIT) from None


def parse_stages(value: str) -> str:
    """``--stage``: ``all``, one stage, or a comma-separated list of stages (run in pipeline order)."""
    names = [s.strip() for s in str(value).split(",") if s.strip()]
    if not names or any(n not in STAGE_CHOICES for n in names) or ("all" in names and len(names) > 1):
        raise typer.BadParameter(f"{value!r}: choose from {', '.join(STAGE_CHOICES)}, or a "
                                 f"comma-separated list of stages")
    return ",".join(names)


def complete_stages(incomplete: str) -> list[str]:
    """Shell completion of ``--stage``, also after a comma (``probe,vl<TAB>``)."""
    done, sep, last = incomplete.rpartition(",")
    choices = STAGE_ORDER if sep else STAGE_CHOICES  # "all" only on its own
    return [done + sep + c for c in choices if c.startswith(last)]


def package_version() -> str:
    try:
        return version("sama-curate")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def version_option(value: bool) -> None:
    if value:
        typer.echo(f"curate (sama-curate) {package_version()}")
        raise typer.Exit()
