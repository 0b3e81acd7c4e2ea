"""Every table of a run in one place: its name, the stage that writes it, its schema, how its parts
are partitioned, and how the DuckDB catalog shows it.

The writers take their schema from here (``schema_of``), the catalog builds its views from
``TABLES`` (in pipeline order), `curate run` names the stage to run when an input table is missing,
and `curate verify` reads the shard index tables by these names.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Table:
    name: str
    stage: str  # the `curate run --stage` that writes it
    # "module:ATTRIBUTE" of its Arrow schema (the module that builds its rows owns it); scores
    # adds two columns per custom metric (stages.judge.schema.scores_schema).
    schema: str
    partition: str | None = "dataset"  # parts in one folder per value of this column (None: one folder)
    view: bool = True  # a catalog view of its own
    view_exclude: str | None = None  # columns the view leaves out (DuckDB then never reads them)
    # What it adds to the joined ``samples_full`` view: (alias, select list); None: not joined.
    joined: tuple[str, str] | None = None


TABLES: dict[str, Table] = {t.name: t for t in [
    Table("samples", "ingest", "manifests.schema:SAMPLES"),
    # (part, file_row_number) of repeated sample ids: the samples view keeps the first.
    Table("duplicates", "ingest", "manifests.schema:DUPLICATES", partition=None, view=False),
    Table("probes", "probe", "manifests.schema:PROBES", joined=(
        "p", "p.* EXCLUDE (sample_id, dataset, schema_version, error, error_kind), "
             "p.error_kind AS probe_error_kind, p.error AS probe_error")),
    # The screen stage (stages/screen): fingerprints and scores per sample, and the corpus-wide
    # verdicts (duplicate groups, benchmark matches, the screen rule that drops a sample).
    Table("screens", "screen", "stages.screen.schema:SCREENS", joined=(
        "scr", "scr.copy_score, scr.motion_score, scr.content_motion, scr.camera_share, "
               "scr.error_kind AS screen_error_kind")),
    Table("screen_verdicts", "screen", "stages.screen.schema:SCREEN_VERDICTS", joined=(
        "sv", "sv.duplicate_of, sv.duplicate_group, sv.benchmark, sv.benchmark_clip, sv.screen_drop, sv.judge_skip")),
    Table("scores", "vlm-filter", "stages.judge.schema:SCORES", joined=(
        "sc", "sc.* EXCLUDE (sample_id, dataset, schema_version, status, kind, error), "
              "sc.status AS judge_status, sc.kind AS judge_kind, sc.error AS judge_error")),
    Table("selected", "filter", "filters.rules:SELECTED", partition=None,
          joined=("sel", "sel.kept, sel.rejected_by")),
    # One row per shard key (sample x variant); the view leaves out the tensor blobs.
    Table("encoded", "encode", "stages.encode.schema:ENCODED", view_exclude="tensors"),
    # The shard index: one row per shard tar, and which shard holds each key.
    Table("shards", "shard", "manifests.schema:SHARDS", partition=None),
    Table("shard_keys", "shard", "manifests.schema:SHARD_KEYS", partition=None),
]}

# The tables with a catalog view, in pipeline order.
VIEW_TABLES = [t.name for t in TABLES.values() if t.view]


def schema_of(name: str) -> pa.Schema:
    """The Arrow schema of table ``name`` (imported from the module that owns it)."""
    module, attr = TABLES[name].schema.split(":")
    return getattr(importlib.import_module(module), attr)
