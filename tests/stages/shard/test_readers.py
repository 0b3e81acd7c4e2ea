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
from pipeline.curate import runner
from pipeline.curate.config import load_config
from fake_judge import FakeJudgeServer

from conftest import REPO, demo_config_file
from test_shard_e2e import FAST_JUDGE, KEEP_ALL

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

TABLES = ["samples", "probes", "scores", "encoded", "selected", "shards", "shard_keys"]


@pytest.fixture(scope="module")
def run_dir(ray_session, demo_corpus, tmp_path_factory) -> Path:
    from pipeline.curate.demo.tiny_encoders import build_tiny_encoders

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


def _pandas(path: Path):
    import pandas as pd

    df = pd.read_parquet(path)
    ds = df["dataset"] if "dataset" in df else None
    return len(df), list(df.columns), None if ds is None else ds.tolist(), None if ds is None else str(ds.dtype)


def _pyarrow(path: Path):
    import pyarrow.parquet as pq

    return _arrow(pq.read_table(path))


def _polars(path: Path):
    import polars as pl

    df = pl.read_parquet(path)
    ds = df["dataset"] if "dataset" in df.columns else None
    return df.height, df.columns, None if ds is None else ds.to_list(), None if ds is None else str(ds.dtype)


def _duckdb(path: Path):
    import duckdb

    rel = duckdb.sql(f"SELECT * FROM read_parquet('{path}/**/*.parquet')")
    rows, columns, ds, _ = _arrow(rel.to_arrow_table())
    return rows, columns, ds, dict(zip(rel.columns, map(str, rel.types))).get("dataset")


def _ray(path: Path):
    import ray.data

    return _arrow(pa.concat_tables(ray.get(ray.data.read_parquet(str(path)).to_arrow_refs()),
                                   promote_options="default"))


def _arrow(table: pa.Table):
    ds = table["dataset"] if "dataset" in table.column_names else None
    return table.num_rows, table.column_names, None if ds is None else ds.to_pylist(), None if ds is None else str(ds.type)


# The command each reader's user types: pandas.read_parquet(dir), pyarrow.parquet.read_table(dir),
# polars.read_parquet(dir), DuckDB over dir/**/*.parquet, ray.data.read_parquet(dir).
READERS = {"pandas": _pandas, "pyarrow": _pyarrow, "polars": _polars, "duckdb": _duckdb, "ray": _ray}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("table", TABLES)
def test_a_reader_reads_a_table_dir_with_no_options(run_dir, table, reader):
    want = _expected(run_dir, table)
    rows, columns, dataset, dataset_type = READERS[reader](run_dir / "tables" / table)
    _check(rows, columns, dataset, dataset_type, want, reader)


# ---------------------------------------------------------------- shards
PURPOSES = ["stage0", "stage1"]


def _urls(run_dir: Path, purpose: str) -> list[str]:
    urls = sorted(str(p) for p in (run_dir / "shards" / purpose).rglob("*.tar"))
    assert urls, f"the demo run wrote no {purpose} shards"
    return urls


def _tar_samples(urls: list[str]) -> dict[str, dict[str, bytes]]:
    import tarfile

    out: dict[str, dict[str, bytes]] = {}
    for url in urls:
        with tarfile.open(url) as tar:
            for m in tar:
                key, member = m.name.split(".", 1)
                out.setdefault(key, {})[member] = tar.extractfile(m).read()
    return out


def _json_type(value) -> str:
    """A value's JSON type, nested; an empty list fits any list type (its items have none)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_json_type(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        items = {_json_type(v) for v in value}
        assert len(items) <= 1, value
        return f"[{items.pop()}]" if items else "[]"
    return type(value).__name__


@pytest.mark.parametrize("purpose", PURPOSES)
def test_every_key_of_a_purpose_has_the_same_members_and_json_types(run_dir, purpose):
    samples = _tar_samples(_urls(run_dir, purpose))
    assert len({tuple(sorted(m)) for m in samples.values()}) == 1, "member sets differ between keys"
    types: dict[str, set[str]] = collections.defaultdict(set)
    for members in samples.values():
        for field, value in json.loads(members["json"]).items():
            types[field].add(_json_type(value))
    for field, seen in types.items():
        full = {t for t in seen if "[]" not in t}
        assert len(full) <= 1 and (full or len(seen) == 1), (field, seen)
    if purpose == "stage0":  # the kinds that used to differ are all here
        docs = [json.loads(m["json"]) for m in samples.values()]
        assert {d["modality"] for d in docs} == {"image", "video"} and {False, True} == {d["has_source"] for d in docs}


@pytest.mark.parametrize("purpose", PURPOSES)
def test_plain_webdataset_decodes_every_key(run_dir, purpose):
    import safetensors.torch
    import torch
    import webdataset as wds

    urls = _urls(run_dir, purpose)
    ds = wds.WebDataset(urls, shardshuffle=False).decode(wds.handle_extension("safetensors", safetensors.torch.load))
    n = 0
    for sample in ds:
        meta = sample["json"]
        for member, spec in meta["members"].items():
            tensor = sample[member][spec["tensor"]]
            assert list(tensor.shape) == spec["shape"] and tensor.dtype == getattr(torch, spec["dtype"])
        source = sample["source.safetensors"]["source_latents"]
        assert (source.numel() > 0) == meta["has_source"] == (meta["variant"] != "none")
        n += 1
    assert n == len(_tar_samples(urls))


@pytest.mark.parametrize("purpose", PURPOSES)
def test_ray_read_webdataset_gives_typed_columns(run_dir, purpose):
    import ray.data

    urls = _urls(run_dir, purpose)
    blocks = ray.get(ray.data.read_webdataset(urls).to_arrow_refs())
    table = pa.concat_tables(blocks, promote_options="default")
    assert table.num_rows == len(_tar_samples(urls))
    for field in table.schema:  # no pickled-object fallback for any member
        assert not isinstance(field.type, pa.ExtensionType), (field.name, field.type)
        if field.name.endswith(".safetensors"):
            assert pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type), field
    assert pa.types.is_struct(table.schema.field("json").type)
    assert table["source.safetensors"].null_count == 0


@pytest.mark.parametrize("purpose", PURPOSES)
def test_hf_datasets_loads_all_shards_of_a_purpose(run_dir, purpose, tmp_path):
    import datasets

    urls = _urls(run_dir, purpose)
    datasets.disable_progress_bars()
    ds = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train", cache_dir=str(tmp_path))
    want = _tar_samples(urls)
    assert len(ds) == len(want)
    assert ds.features["json"]["fps"].dtype == "float64"
    for row in ds:
        members = want[row["__key__"].rsplit("/", 1)[-1]]
        # nothing dropped or retyped by the schema inferred from the first shard's first keys
        assert row["json"] == json.loads(members["json"]), row["__key__"]
        for name, data in members.items():
            if name != "json":
                assert row[name] == data, (row["__key__"], name)


def test_readme_snippet_decodes_one_sample(run_dir, tmp_path, monkeypatch, capsys):
    """The README's webdataset snippet, as written, against this run in place of runs/demo."""
    import torch

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    snippet = next(b for b in blocks if "wds.WebDataset" in b)
    assert len(snippet.strip().splitlines()) <= 12
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(run_dir)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    assert scope["target"].dtype == torch.bfloat16 and scope["target"].dim() == 4
    assert list(scope["target"].shape) == scope["meta"]["latent_shape"]
    assert (scope["source"] is None) == (not scope["meta"]["has_source"])
    assert scope["meta"]["key"] in capsys.readouterr().out
