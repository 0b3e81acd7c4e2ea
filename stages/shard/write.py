"""Writing one shard: read its plan rows, fetch their tensor blobs from the encoded parts, write
the tar under a temporary name and rename it; then a small done record (digest, sha256, bytes).

A shard on disk counts as done only when its done record carries the plan's digest, so a shard
made from other rows (the encoded table grew) is written again, and a tar renamed just before a
kill is simply rewritten with the same bytes.
"""
from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from manifests.io import atomic_file, atomic_write_json
from stages.shard.layout import split_blob, write_tar


def done_record_path(workdir: Path, shard: str) -> Path:
    return Path(workdir) / "state" / "shards" / "done" / (shard.replace("/", "__") + ".json")


def is_done(workdir: Path, unit: dict) -> bool:
    rec = done_record_path(workdir, unit["shard"])
    if not rec.exists() or not (Path(workdir) / unit["shard"]).exists():
        return False
    return json.loads(rec.read_text()).get("digest") == unit["digest"]


def _row_groups(pf: pq.ParquetFile) -> list[int]:
    """First row number of each row group."""
    starts, n = [], 0
    for i in range(pf.metadata.num_row_groups):
        starts.append(n)
        n += pf.metadata.row_group(i).num_rows
    return starts


def iter_blobs(workdir: Path, rows: list[dict]) -> Iterator[tuple[dict, bytes]]:
    """(plan row, ``tensors`` blob) in the order of ``rows``.

    Memory and open files stay bounded: for each row the row group holding it is read (its part
    opened only for that read and closed right after) unless it is the row group read last, which
    is the only one kept. Keys of a shard mostly follow part order, so a row group is seldom read
    twice. Row-group boundaries (metadata only) are kept per part.
    """
    starts_of: dict[str, list[int]] = {}
    cached: tuple[str, int] | None = None
    table = None
    for r in rows:
        part = r["encoded_part"]
        path = Path(workdir) / part
        if part not in starts_of:
            with pq.ParquetFile(path) as pf:
                starts_of[part] = _row_groups(pf)
        starts = starts_of[part]
        rg = bisect.bisect_right(starts, r["encoded_row"]) - 1
        if cached != (part, rg):
            table = None  # drop the previous row group before reading the next
            with pq.ParquetFile(path) as pf:
                table = pf.read_row_group(rg, columns=["key", "tensors"])
            cached = (part, rg)
        i = r["encoded_row"] - starts[rg]
        if i < 0 or i >= table.num_rows or table["key"][i].as_py() != r["key"]:
            raise ValueError(f"{part} row {r['encoded_row']} is not {r['key']}: the "
                             f"encoded table changed after planning; run the shard stage again")
        blob = table["tensors"][i].as_py()
        if blob is None:
            raise ValueError(f"{part} row {r['encoded_row']} ({r['key']}) has no tensors (`curate prune "
                             f"--sharded`) and was not read back from its shard; run the shard stage again")
        yield r, blob


def write_shard(workdir: Path, plan_path: Path, unit: dict) -> dict:
    """Write ``unit``'s shard (atomically) and its done record; returns its index row."""
    workdir = Path(workdir)
    rows = pq.read_table(plan_path, filters=[("shard", "==", unit["shard"])],
                         columns=["key", "encoded_part", "encoded_row", "json"]).to_pylist()
    if len(rows) != unit["samples"]:
        raise ValueError(f"{unit['shard']}: plan has {len(rows)} rows, unit says {unit['samples']}")
    rows.sort(key=lambda r: r["key"])

    def samples():
        for r, blob in iter_blobs(workdir, rows):
            members = json.loads(r["json"])["members"]
            yield r["key"], r["json"].encode("utf-8"), split_blob(blob, members)

    with atomic_file(workdir / unit["shard"]) as f:
        sha, nbytes = write_tar(f, samples())
    row = {"shard": unit["shard"], "purpose": unit["purpose"], "modality": unit["modality"],
           "bucket": unit["bucket"], "samples": len(rows), "bytes": nbytes, "sha256": sha}
    atomic_write_json(done_record_path(workdir, unit["shard"]), {**row, "digest": unit["digest"]})
    return row
