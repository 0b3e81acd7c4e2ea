"""What keeps `curate` from surprising: its error boundary (the user errors of its commands) and the
stage names as a choice list; the boundary itself and `--version` are shared with `sama`
(pipeline/cli_base.py).

A user error (a bad config field, a bad option value, a refused query, nothing to preview) is one
line on stderr, ``error: ...``, and exit status 2, never a traceback; a bug still shows its
traceback. Options are checked by click before a command runs, so nothing is written for an
invalid command line.
"""
from __future__ import annotations

import typer

from pipeline.cli_base import ErrorBoundary
from pipeline.curate.registry import STAGE_ORDER

STAGE_CHOICES = [*STAGE_ORDER, "all"]
STAGE_METAVAR = "[" + "|".join(STAGE_CHOICES) + "]"


class CurateErrorBoundary(ErrorBoundary):
    @classmethod
    def user_errors(cls):
        """What means "the user asked for something that cannot be done", already phrased for
        them; imported on use, not at start-up, to keep `curate --help` fast."""
        from manifests.catalog import QueryError, ReadOnlyError
        from pipeline.config_base import ConfigError
        from stages.shard.preview import PreviewError

        return ConfigError, ReadOnlyError, QueryError, PreviewError


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

