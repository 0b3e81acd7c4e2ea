"""`curate prune --sharded`: keep one copy of the tensors at rest, the shards'.

After the shard stage, every kept key's tensors are stored twice: in its ``encoded`` row (the
safetensors blob) and in the shard tar (one safetensors member per tensor). The trainer reads the
shards, so this drops the blob from each ``encoded`` row whose shard copy is proven equal, and
keeps everything else of the row (key, sample, bucket, ``tensor_meta``, models, error): status,
report, filter, shard planning and incremental re-curation read only those.

Proof before a blob goes: the key is in ``shard_keys``, its shard is in the ``shards`` index with
the indexed byte count on disk, and the key's members read back from the tar (by byte offset) are
byte for byte what the shard writer makes from the blob (``split_blob``). Each pruned row leaves a
tombstone (``state/encoded/_sharded/<dataset>__<part>.parquet``): the shard, each member's offset
and size, the sha256 of the members and of the blob.

Rebuilding: when a later shard run will rewrite or delete a shard (a re-threshold, other
``shard.target_bytes``, a part renamed by `curate prune`), ``restore`` puts back, before any old
shard is removed, the blob of every pruned row whose tombstone names such a shard: members read at
their offsets, their sha256 checked, the blob re-made (``pack_tensors``' layout: one safetensors of
the sorted tensors) and its sha256 checked. The shard writer then reads the table as before, so
the new shards have the bytes they would have had without the prune. A shard lost by hand cannot
be restored from: that is reported with the keys to re-encode.

Each encoded part is rewritten in place (same name, same rows in the same order: the shard plan's
(part, row) pointers and digests do not change) under a hidden temp name, read back and checked
(row count, every column but ``tensors`` unchanged, the kept blobs unchanged), then its tombstone
is written, then the temp is renamed over the part. A kill at any step leaves the old part or the
new one with its tombstone; a tombstone naming a row that still has its blob is ignored, and the
next run redoes the part.
"""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from manifests import catalog
from manifests.io import PARQUET_KW, atomic_file, list_parts
from pipeline.config_base import ConfigError
from pipeline.stage import state_dir
from stages.shard.layout import members_of, split_blob, with_empty_source

ENCODED = "encoded"
TOMBSTONES = "_sharded"
TEMP_SUFFIX = ".pruning.tmp"  # a hidden name ending in .tmp: clean_temporaries removes a killed run's
TOMBSTONE = pa.schema([
    ("key", pa.string()), ("shard", pa.string()),
    ("members", pa.string()),  # JSON [[suffix, data offset in the tar, size], ...], suffix order
    ("members_sha256", pa.string()), ("blob_sha256", pa.string()), ("blob_bytes", pa.int64()),
])


@dataclass
class ShardedPruneReport:
    keys: int = 0  # rows whose blob was dropped now
    already: int = 0  # rows pruned by an earlier run
    mismatched: list[str] = field(default_factory=list)  # keys whose shard copy differs: kept
    tensor_bytes: int = 0  # blob bytes dropped now
    parts: int = 0  # encoded parts rewritten
    rows_before: int = 0
    rows_after: int = 0
    digest_before: str = ""  # every column but the blob, of every row
    digest_after: str = ""
    bytes_before: int = 0  # the encoded table's files at rest
    bytes_after: int = 0
    shard_bytes: int = 0  # the shard tars at rest


def tombstone_dir(workdir: Path) -> Path:
    return state_dir(workdir, ENCODED) / TOMBSTONES


def tombstone_of(workdir: Path, part: Path) -> Path:
    part = Path(part)
    return tombstone_dir(workdir) / f"{part.parent.name}__{part.stem}.parquet"


def table_bytes(workdir: Path, table: str) -> int:
    return sum(p.stat().st_size for p in list_parts(workdir, table))


def shard_bytes(workdir: Path) -> int:
    root = Path(workdir) / "shards"
    return sum(p.stat().st_size for p in root.rglob("*.tar")) if root.exists() else 0


def metadata_digest(workdir: Path) -> tuple[int, str]:
    """(rows, a digest of every column but ``tensors`` of every row, order-free) of ``encoded``:
    DuckDB's own reading, independent of the code that rewrites the parts."""
    con = catalog.connect(workdir)
    if ENCODED not in catalog.views(con):
        return 0, ""
    n, h = con.execute("SELECT count(*), sum(hash(e)) % 18446744073709551616 FROM (SELECT * FROM encoded) e"
                       ).fetchone()
    return int(n), f"{int(h or 0):016x}"


def _sha(chunks) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def _tar_members(path: Path) -> dict[str, list[tuple[str, int, int]]]:
    """{key: [(suffix, data offset, size), ...]} of one tar, from its headers only."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    with tarfile.open(path, "r:") as tar:
        for m in tar:
            key, suffix = m.name.split(".", 1)
            if suffix != "json":
                out.setdefault(key, []).append((suffix, m.offset_data, m.size))
    return {k: sorted(v) for k, v in out.items()}


def _read_members(path: Path, members: list) -> dict[str, bytes]:
    with open(path, "rb") as f:
        out = {}
        for suffix, offset, size in members:
            f.seek(offset)
            out[suffix] = f.read(size)
            if len(out[suffix]) != size:
                raise ValueError(f"{path} ends inside member {suffix}")
        return out


def _as_written(schema: pa.Schema) -> pa.Schema:
    """The schema as the writers declare it: Parquet reads a list's items back as "element",
    ``pa.list_`` names them "item"; with the writer's name a part pruned and then read back ends
    with the bytes it had."""
    def field_of(f: pa.Field) -> pa.Field:
        if pa.types.is_list(f.type):
            return pa.field(f.name, pa.list_(f.type.value_type), f.nullable, f.metadata)
        return f

    return pa.schema([field_of(f) for f in schema], metadata=schema.metadata)


def _rewrite_part(workdir: Path, part: Path, change: Callable[[pa.Table, int], pa.Table],
                  tombstone: Callable[[], pa.Table], stop_after: int | None = None) -> bool:
    """Rewrite ``part`` row group by row group through ``change(rows, first row)`` (only the
    ``tensors`` column may change), check the temp against the part, write ``tombstone()``, rename.
    ``stop_after``: 1 after the temp, 2 after the tombstone (as a kill would; tests)."""
    temp = part.with_name(f".{part.name}{TEMP_SUFFIX}")
    src = pq.ParquetFile(part)
    schema = _as_written(src.schema_arrow)
    keep = [c for c in schema.names if c != "tensors"]
    groups = src.metadata.num_row_groups
    rg_rows = src.metadata.row_group(0).num_rows if groups else 1
    changed = False
    with open(temp, "wb") as f, pq.ParquetWriter(f, schema, **PARQUET_KW) as writer:
        first = 0
        for g in range(groups):
            rows = src.read_row_group(g)
            new = change(rows, first)
            changed |= not new["tensors"].equals(rows["tensors"])
            writer.write_table(new.cast(schema), row_group_size=rg_rows)
            first += rows.num_rows
        f.flush()
        os.fsync(f.fileno())
    if not changed:
        temp.unlink()
        return False
    # Read back what was written: same rows, same columns but the blob, every blob either kept
    # as it was or dropped (never altered).
    out = pq.ParquetFile(temp)
    if out.metadata.num_rows != src.metadata.num_rows:
        raise RuntimeError(f"{part}: {out.metadata.num_rows} rows written for {src.metadata.num_rows}")
    for g in range(groups):
        a, b = src.read_row_group(g), out.read_row_group(g)
        if not a.select(keep).equals(b.select(keep)):
            raise RuntimeError(f"{part}: row group {g} changed beyond its blobs")
        for x, y in zip(a["tensors"].to_pylist(), b["tensors"].to_pylist()):
            if y is not None and x is not None and x != y:
                raise RuntimeError(f"{part}: row group {g} altered a blob")
    if stop_after == 1:
        return True
    stone = tombstone()
    path = tombstone_of(workdir, part)
    if stone.num_rows:
        with atomic_file(path) as f:
            pq.write_table(stone.cast(TOMBSTONE), f, **PARQUET_KW)
    else:
        path.unlink(missing_ok=True)
    if stop_after == 2:
        return True
    os.replace(temp, part)
    return True


def _read_tombstone(workdir: Path, part: Path) -> dict[str, dict]:
    path = tombstone_of(workdir, part)
    if not path.exists():
        return {}
    return {r["key"]: r for r in pq.read_table(path).to_pylist()}  # one part's rows: a few keys


def _held_rows(workdir: Path, con) -> Iterator[tuple[str, list[dict]]]:
    """(encoded part, [{row, key, shard}, ...]) for the rows without error whose key the shard
    index places in a shard listed in ``shards`` with its byte count on disk, part by part."""
    shards = con.execute("SELECT shard, bytes FROM shards").fetchall()  # one row per shard, not per key
    ok = [s for s, n in shards if (workdir / s).exists() and (workdir / s).stat().st_size == n]
    con.register("ok_shards", pa.table({"shard": pa.array(ok, pa.string())}))
    enc = catalog._read(workdir, ENCODED, ", filename=true, file_row_number=true")
    reader = con.sql(
        f"SELECT e.filename, e.file_row_number AS row, e.key, k.shard FROM "
        f"(SELECT filename, file_row_number, key FROM {enc} WHERE error IS NULL) e "
        f"JOIN shard_keys k USING (key) SEMI JOIN ok_shards o USING (shard) "
        f"ORDER BY e.filename, e.file_row_number").to_arrow_reader(65536)
    part, rows = None, []
    for batch in reader:
        for r in batch.to_pylist():
            if r["filename"] != part:
                if rows:
                    yield part, rows
                part, rows = r["filename"], []
            rows.append(r)
    if rows:
        yield part, rows


def prune_sharded(workdir: Path, dry_run: bool = False, stop_after: int | None = None) -> ShardedPruneReport:
    """Drop the blob of every ``encoded`` row a shard proves it holds; see the module docstring."""
    workdir = Path(workdir).absolute()
    con = catalog.connect(workdir)
    if not {"encoded", "shards", "shard_keys"} <= set(catalog.views(con)):
        raise ConfigError(f"{workdir}: no encoded table or shard index; run `curate run --stage shard` first")
    report = ShardedPruneReport()
    report.rows_before, report.digest_before = metadata_digest(workdir)
    report.bytes_before, report.shard_bytes = table_bytes(workdir, ENCODED), shard_bytes(workdir)
    tars: dict[str, dict] = {}  # the last few shards' member offsets (keys of a part share shards)
    for part, held in _held_rows(workdir, con):
        part = Path(part)
        by_row = {r["row"]: r for r in held}
        old = _read_tombstone(workdir, part)
        stone: list[dict] = []

        def change(rows: pa.Table, first: int) -> pa.Table:
            blobs = rows["tensors"].to_pylist()
            metas, keys = rows["tensor_meta"].to_pylist(), rows["key"].to_pylist()
            for i, blob in enumerate(blobs):
                if blob is None:
                    if keys[i] in old:  # pruned earlier: its tombstone carries over
                        stone.append(old[keys[i]])
                        report.already += 1
                    continue
                h = by_row.get(first + i)
                if h is None:
                    continue
                shard = h["shard"]
                if shard not in tars:
                    if len(tars) >= 64:
                        tars.pop(next(iter(tars)))
                    tars[shard] = _tar_members(workdir / shard)
                offsets = tars[shard].get(keys[i])
                want = split_blob(blob, members_of(with_empty_source(json.loads(metas[i]))))
                have = _read_members(workdir / shard, offsets) if offsets else {}
                if have != want:
                    report.mismatched.append(keys[i])
                    continue
                stone.append({"key": keys[i], "shard": shard, "members": json.dumps(offsets),
                              "members_sha256": _sha(have[s] for s, _, _ in offsets),
                              "blob_sha256": _sha([blob]), "blob_bytes": len(blob)})
                report.keys += 1
                report.tensor_bytes += len(blob)
                blobs[i] = None
            return rows.set_column(rows.schema.get_field_index("tensors"), "tensors",
                                   pa.array(blobs, rows.schema.field("tensors").type))

        if dry_run:
            pf = pq.ParquetFile(part)
            first = 0
            for g in range(pf.metadata.num_row_groups):
                rows = pf.read_row_group(g)
                change(rows, first)
                first += rows.num_rows
            continue
        tombstone_dir(workdir).mkdir(parents=True, exist_ok=True)
        if _rewrite_part(workdir, part, change, lambda: pa.Table.from_pylist(stone, TOMBSTONE), stop_after):
            report.parts += 1
            if stop_after is not None:
                return report
    report.rows_after, report.digest_after = metadata_digest(workdir)
    report.bytes_after = table_bytes(workdir, ENCODED)
    if report.rows_after != report.rows_before or report.digest_after != report.digest_before:
        raise RuntimeError(f"encoded changed beyond its blobs: {report.rows_before} rows "
                           f"{report.digest_before} before, {report.rows_after} {report.digest_after} after")
    return report


def restore(workdir: Path, surviving: set[str]) -> int:
    """Put back the blob of every pruned row whose tombstone names a shard not in ``surviving``
    (the shards the coming shard run leaves as they are), before any shard is rewritten or
    removed. Returns the rows restored; raises ConfigError naming the keys that cannot be."""
    workdir = Path(workdir).absolute()
    root = tombstone_dir(workdir)
    if not root.exists() or not any(root.glob("*.parquet")):
        return 0  # nothing was ever pruned: the shard stage is exactly what it was
    from safetensors.torch import load, save

    con = catalog.connect(workdir)
    con.register("surviving", pa.table({"shard": pa.array(sorted(surviving), pa.string())}))
    enc = catalog._read(workdir, ENCODED, ", filename=true, file_row_number=true")
    stones = f"read_parquet('{root.as_posix()}/*.parquet')"
    # Every tombstone of a key (a part renamed by `curate prune` keeps its old file): each is
    # tried until one's members check out.
    reader = con.sql(
        f"SELECT e.filename, e.file_row_number AS row, t.* FROM (SELECT filename, file_row_number, key "
        f"FROM {enc} WHERE error IS NULL) e JOIN {stones} t USING (key) "
        f"ANTI JOIN surviving s ON s.shard = t.shard ORDER BY e.filename, e.file_row_number").to_arrow_reader(65536)
    todo: dict[str, dict[int, list[dict]]] = {}
    restored, lost = 0, []

    def run(part: str, rows_of: dict[int, list[dict]]) -> None:
        nonlocal restored

        def change(rows: pa.Table, first: int) -> pa.Table:
            nonlocal restored
            blobs, metas = rows["tensors"].to_pylist(), rows["tensor_meta"].to_pylist()
            for i, blob in enumerate(blobs):
                cands = rows_of.get(first + i)
                if blob is not None or not cands:
                    continue
                for t in cands:
                    path = workdir / t["shard"]
                    members = json.loads(t["members"])
                    try:
                        data = _read_members(path, members)
                    except (OSError, ValueError):
                        continue
                    if _sha(data[s] for s, _, _ in members) != t["members_sha256"]:
                        continue
                    meta = json.loads(metas[i])
                    tensors = {}
                    for b in data.values():
                        tensors.update(load(b))
                    blob = save({k: tensors[k] for k in sorted(meta)})  # pack_tensors' layout
                    if _sha([blob]) == t["blob_sha256"]:
                        blobs[i] = blob
                        restored += 1
                        break
                else:
                    lost.append(cands[0]["key"])
            return rows.set_column(rows.schema.get_field_index("tensors"), "tensors",
                                   pa.array(blobs, rows.schema.field("tensors").type))

        p = Path(part)
        old = _read_tombstone(workdir, p)
        back = {t["key"] for ts in rows_of.values() for t in ts}

        def rest() -> pa.Table:  # this part's tombstone without the rows restored
            return pa.Table.from_pylist([t for k, t in old.items() if k not in back or k in lost], TOMBSTONE)

        _rewrite_part(workdir, p, change, rest)

    part = None
    for batch in reader:
        for r in batch.to_pylist():
            if r["filename"] != part and todo:
                run(part, todo.pop(part))
            part = r["filename"]
            todo.setdefault(part, {}).setdefault(r["row"], []).append(r)
    if todo:
        run(part, todo.pop(part))
    if lost:
        raise ConfigError(f"{len(lost)} encoded keys were pruned (`curate prune --sharded`) and the shard "
                          f"holding them is gone or changed (first: {', '.join(lost[:5])}); put the shards "
                          f"back, or re-encode: `curate run --stage encode --overwrite`")
    return restored
