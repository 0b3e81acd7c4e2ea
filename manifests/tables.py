"""Every table of a run in one place: its name, the stage that writes it, its schema, how its parts
are partitioned, and how the DuckDB catalog shows it.

Each stage declares the tables it writes (``Stage.tables``, built with its own schema objects); the
app's registry (``pipeline.curate.registry``) collects them in pipeline order and ``register``s
them here, so this bottom layer never imports a stage. The catalog builds its views from
``TABLES`` (in pipeline order), `curate run` names the stage to run when an input table is missing,
and `curate verify` reads the shard index tables by these names.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Table:
    name: str
    stage: str  # the `curate run --stage` that writes it
    # Its Arrow schema (the module that builds its rows owns it); scores adds two columns per
    # custom metric (stages.judge.schema.scores_schema).
    schema: pa.Schema
    partition: str | None = "dataset"  # parts in one folder per value of this column (None: one folder)
    view: bool = True  # a catalog view of its own
    view_exclude: str | None = None  # columns the view leaves out (DuckDB then never reads them)
    # What it adds to the joined ``samples_full`` view: (alias, select list); None: not joined.
    joined: tuple[str, str] | None = None

    def same_as(self, other: Table) -> bool:
        """The same declaration (schemas compared with their metadata: a drift is a different table)."""
        return (self.name, self.stage, self.partition, self.view, self.view_exclude, self.joined) == \
            (other.name, other.stage, other.partition, other.view, other.view_exclude, other.joined) \
            and self.schema.equals(other.schema, check_metadata=True)


# name -> declaration, in pipeline order (the order of registration).
TABLES: dict[str, Table] = {}


class TableConflict(ValueError):
    """Two declarations of one table name that differ."""


def register(*tables: Table) -> None:
    """Add the tables to ``TABLES``; registering an identical declaration again is a no-op (a module
    imported twice, a test re-registering), a different one under a taken name is an error."""
    for t in tables:
        old = TABLES.get(t.name)
        if old is None:
            TABLES[t.name] = t
        elif not old.same_as(t):
            raise TableConflict(f"table {t.name!r} is declared twice, differently: by stage {old.stage!r} "
                                f"and by stage {t.stage!r}; a table has one declaration, in the stage that writes it")


def view_tables(tables: dict[str, Table] | None = None) -> list[str]:
    """The tables with a catalog view, in pipeline order."""
    return [t.name for t in (TABLES if tables is None else tables).values() if t.view]


def schema_of(name: str) -> pa.Schema:
    """The Arrow schema of the registered table ``name``."""
    try:
        return TABLES[name].schema
    except KeyError:
        raise KeyError(f"table {name!r} is not registered (import pipeline.curate.registry, which "
                       f"registers every stage's tables)") from None
