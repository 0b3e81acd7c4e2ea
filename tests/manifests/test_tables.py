"""The table registry: stages declare their tables, the app registers them, the catalog reads them."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from manifests import catalog, tables
from manifests.io import write_part
from manifests.schema import PROBES, SAMPLES, SCHEMA_VERSION, empty_sample, make_sample_id
from manifests.tables import Table, TableConflict

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (nothing registered there unless it registers)."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_sample_workdir(workdir: Path) -> None:
    sid = make_sample_id("ditto", 0)
    row = empty_sample("ditto", sid, modality="video", task="edit", category="style", target_uri="/x/0.mp4")
    write_part(workdir / "tables" / "samples" / "ditto" / "p.parquet", pa.Table.from_pylist([row], schema=SAMPLES))


def test_register_is_idempotent_and_refuses_a_second_different_declaration(monkeypatch):
    monkeypatch.setattr(tables, "TABLES", {})
    a = Table("t1", "s1", pa.schema([pa.field("x", pa.int32())], metadata={"table": "t1"}))
    b = Table("t2", "s2", pa.schema([pa.field("y", pa.string())]), partition=None)
    tables.register(a, b)
    # the same declaration again (equal, not the same object): nothing changes
    tables.register(Table("t1", "s1", pa.schema([pa.field("x", pa.int32())], metadata={"table": "t1"})))
    assert list(tables.TABLES) == ["t1", "t2"] and tables.TABLES["t1"] is a
    assert tables.schema_of("t2") is b.schema and tables.view_tables() == ["t1", "t2"]
    # a different writer, type, or schema metadata under a taken name is a conflict
    for other in (Table("t1", "s9", a.schema), Table("t1", "s1", pa.schema([pa.field("x", pa.int64())])),
                  Table("t1", "s1", pa.schema([pa.field("x", pa.int32())], metadata={"table": "other"})),
                  Table("t1", "s1", a.schema, view=False)):
        with pytest.raises(TableConflict, match="'t1' is declared twice"):
            tables.register(other)
    assert tables.TABLES["t1"] is a
    with pytest.raises(KeyError, match="not registered"):
        tables.schema_of("nope")


def test_connect_takes_explicit_declarations(tmp_path):
    """What a Ray task does: the driver's declarations passed in; a table not declared has no view."""
    _one_sample_workdir(tmp_path)
    probe = {f.name: None for f in PROBES} | {"sample_id": make_sample_id("ditto", 0), "dataset": "ditto",
                                              "target_width": 832, "schema_version": SCHEMA_VERSION}
    write_part(tmp_path / "tables" / "probes" / "ditto" / "p.parquet", pa.Table.from_pylist([probe], schema=PROBES))
    registered = catalog.views(catalog.connect(tmp_path))
    assert {"samples", "probes", "samples_full"} <= set(registered)
    con = catalog.connect(tmp_path, tables=[tables.TABLES["samples"]])
    assert "probes" not in catalog.views(con) and "samples" in catalog.views(con)
    assert "target_width" not in {r[0] for r in con.execute("DESCRIBE samples_full").fetchall()}
    assert catalog.views(catalog.connect(tmp_path, tables=[])) == []


def test_connect_without_registered_tables_names_the_fix(tmp_path):
    _one_sample_workdir(tmp_path)
    res = _python(f"""
        from manifests import catalog
        try:
            catalog.connect({str(tmp_path)!r})
        except catalog.NoTablesError as e:
            print("REFUSED:", e)
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "REFUSED: no tables are registered" in res.stdout
    assert "import pipeline.curate.registry, which registers every stage's tables, or pass tables=" in res.stdout


def test_connect_does_not_load_torch(tmp_path):
    """The encoded table's schema is importable without torch, so opening the catalog over every
    declared table stays cheap (the registry itself imports the stages, torch included)."""
    _one_sample_workdir(tmp_path)
    res = _python(f"""
        import sys
        from manifests import catalog, tables
        from manifests.schema import SAMPLES
        from stages.encode.schema import ENCODED
        tables.register(tables.Table("samples", "ingest", SAMPLES),
                        tables.Table("encoded", "encode", ENCODED, view_exclude="tensors"))
        con = catalog.connect({str(tmp_path)!r})
        print(catalog.views(con), "torch" in sys.modules)
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("]")[1].strip() == "False", res.stdout
    assert "'samples'" in res.stdout
