"""What `curate` and `sama` configs share: strict pydantic sections, the YAML file plus ``--set``
overrides, and one-line errors that name the dotted field and the fix.

Relative paths are resolved against the current working directory (run from the project root, as
the README does).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A config problem, phrased for the user: field name, what is wrong, what to do."""


class Strict(BaseModel):
    """A config section: unknown keys and wrong types are errors, also on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


M = TypeVar("M", bound=BaseModel)


def _set_dotted(doc: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = doc
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {k} is not a section")
        node = nxt
    node[keys[-1]] = value


def parse_overrides(overrides: list[str], example: str = "run.seed=3") -> list[tuple[str, Any]]:
    """``a.b=c`` pairs; the value is parsed as YAML (so 3, true, [x, y] keep their types)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set {example}")
        key, raw = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(raw) if raw != "" else None))
    return out


def format_validation_error(err: ValidationError, header: str, example_file: str,
                            named: tuple[str, ...] = ()) -> str:
    """One line per problem; ``named``: prefixes of messages that already name their field."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; remove it or check its spelling against {example_file}"
        elif e["type"] == "missing":
            msg = "required field is missing; add it to the config"
        elif "input" in e and e["type"] not in ("value_error",):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{loc}: {msg}" if loc and not (named and msg.startswith(named)) else msg)
    return f"{header}:\n  " + "\n  ".join(lines)


def read_document(path: str | Path | None, overrides: list[str] | None, *, example_file: str,
                  sections_hint: str, example_set: str) -> dict:
    """The YAML mapping at ``path`` (empty when None) with the ``--set`` overrides applied."""
    doc: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist; try {example_file}")
        try:
            doc = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if not isinstance(doc, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections ({sections_hint})")
    doc = copy.deepcopy(doc)
    for key, value in parse_overrides(overrides or [], example_set):
        _set_dotted(doc, key, value)
    return doc


def validate(model: type[M], doc: dict, header: str, example_file: str, named: tuple[str, ...] = ()) -> M:
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, header, example_file, named)) from None
