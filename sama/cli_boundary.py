"""`sama`'s error boundary (its user errors) and option checks; the boundary itself, `fail` and
`--version` are the ones `curate` uses too (pipeline/cli_base.py)."""
from __future__ import annotations

import re

import typer

from pipeline.cli_base import ErrorBoundary, fail, one_line, version_option  # noqa: F401  (sama's CLI imports them here)


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
