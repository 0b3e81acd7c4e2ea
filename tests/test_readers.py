"""The tools users already have read a run's outputs with no options: every table directory with
pandas, pyarrow, polars, DuckDB and Ray Data; the shards with webdataset, Ray Data and Hugging Face
`datasets`; the README's decoding snippet as written.

One full demo run (fake judge server, tiny real encoders) is shared by the module.
"""
from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from manifests.io import list_parts, read_table
from pipeline import runner
from pipeline.config import load_config
from stages.judge.fake_server import FakeJudgeServer

from conftest import REPO, demo_config_file
from test_shard_e2e import FAST_JUDGE, KEEP_ALL

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

TABLES = ["samples", "probes", "scores", "encoded", "selected", "shards", "shard_keys"]


@pytest.fixture(scope="module")
def run_dir(ray_session, demo_corpus, tmp_path_factory) -> Path:
    from stages.encode.tiny_models import build_tiny_encoders

    tmp = tmp_path_factory.mktemp("readers")
    encoders = build_tiny_encoders(tmp / "encoders")
    with FakeJudgeServer() as judge:
        cfg = load_config(demo_config_file(demo_corpus, tmp),
                          [f"judge.urls=[{judge.url}]", *FAST_JUDGE, *KEEP_ALL,
                           *(f"encode.{k}={v}" for k, v in encoders.items()), "shard.target_bytes=200000"])
        runner.run(cfg, "all", tmp / "run")
    return tmp / "run"


def _expected(workdir: Path, table: str) -> pa.Table:
    """The table as its parts hold it, concatenated part by part (no dataset discovery)."""
    assert list_parts(workdir, table), f"the demo run wrote no {table}"
    return read_table(workdir, table)


def _check(got_rows: int, got_columns: list[str], got_dataset: list[str] | None, dataset_type: str | None,
           want: pa.Table, reader: str) -> None:
    assert got_rows == want.num_rows, reader
    assert sorted(got_columns) == sorted(want.column_names), reader
    if "dataset" in want.column_names:
        assert got_dataset is not None, reader
        assert collections.Counter(got_dataset) == collections.Counter(want["dataset"].to_pylist()), reader
        assert dataset_type in ("string", "large_string", "String", "str", "object", "VARCHAR"), (reader, dataset_type)


@pytest.mark.parametrize("table", TABLES)
def test_pandas_reads_a_table_dir(run_dir, table):
    import pandas as pd

    want = _expected(run_dir, table)
    df = pd.read_parquet(run_dir / "tables" / table)
    ds = df["dataset"] if "dataset" in df else None
    _check(len(df), list(df.columns), None if ds is None else ds.tolist(),
           None if ds is None else str(ds.dtype), want, "pandas")


@pytest.mark.parametrize("table", TABLES)
def test_pyarrow_reads_a_table_dir(run_dir, table):
    import pyarrow.parquet as pq

    want = _expected(run_dir, table)
    got = pq.read_table(run_dir / "tables" / table)
    ds = got["dataset"] if "dataset" in got.column_names else None
    _check(got.num_rows, got.column_names, None if ds is None else ds.to_pylist(),
           None if ds is None else str(ds.type), want, "pyarrow")


@pytest.mark.parametrize("table", TABLES)
def test_polars_reads_a_table_dir(run_dir, table):
    import polars as pl

    want = _expected(run_dir, table)
    df = pl.read_parquet(run_dir / "tables" / table)
    ds = df["dataset"] if "dataset" in df.columns else None
    _check(df.height, df.columns, None if ds is None else ds.to_list(),
           None if ds is None else str(ds.dtype), want, "polars")


@pytest.mark.parametrize("table", TABLES)
def test_duckdb_reads_a_table_dir(run_dir, table):
    import duckdb

    want = _expected(run_dir, table)
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{run_dir / 'tables' / table}/**/*.parquet')")
    types = dict(zip(rel.columns, map(str, rel.types)))
    got = rel.to_arrow_table()
    ds = got["dataset"].to_pylist() if "dataset" in got.column_names else None
    _check(got.num_rows, got.column_names, ds, types.get("dataset"), want, "duckdb")


@pytest.mark.parametrize("table", TABLES)
def test_ray_data_reads_a_table_dir(run_dir, table):
    import ray.data

    want = _expected(run_dir, table)
    got = ray.data.read_parquet(str(run_dir / "tables" / table)).to_arrow_refs()
    got = pa.concat_tables(ray.get(got), promote_options="default")
    ds = got["dataset"] if "dataset" in got.column_names else None
    _check(got.num_rows, got.column_names, None if ds is None else ds.to_pylist(),
           None if ds is None else str(ds.type), want, "ray")
