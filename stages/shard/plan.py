"""Which key goes to which shard, decided on the driver from metadata only (no tensor bytes).

Rows: the ``encoded`` keys without error whose sample is still ``kept`` in ``selected``, joined
with their scores and manifest lineage in DuckDB (the ``tensors`` column is never read). They
stream out ordered by (purpose, modality, ``<W>x<H>x<F>`` bucket, key); a shard is cut when the
group changes or the next key would take it past ``shard.target_bytes`` (sizes come from
``tensor_meta``). The plan is a Parquet file sorted by shard path, so one shard's rows are found
through row-group statistics, and its digest says whether a shard on disk was made from it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from manifests import catalog
from manifests.io import atomic_file, list_parts
from stages.shard.layout import estimated_bytes, json_bytes, sample_record, shard_bucket, shard_relpath

PLAN_SCHEMA = pa.schema([
    ("shard", pa.string()), ("purpose", pa.string()), ("modality", pa.string()), ("bucket", pa.string()),
    ("key", pa.string()), ("sample_id", pa.string()), ("encoded_part", pa.string()),
    ("encoded_row", pa.int64()), ("json", pa.string()),
])
ENCODED_COLUMNS = ["key", "sample_id", "dataset", "modality", "variant", "purpose", "instruction", "task_token",
                   "bucket", "num_frames", "fps", "latent_shape", "anchor_indices", "target_indices",
                   "source_indices", "pretext", "tensor_meta", "models"]
JUDGE_COLUMNS = ["status", "model", "prompt_hash", "prompt_file"]


@dataclass
class ShardSpec:
    """One shard of the plan: a unit of work for the writer."""

    shard: str  # path relative to the workdir
    purpose: str
    modality: str
    bucket: str  # <W>x<H>x<F>
    samples: int = 0
    est_bytes: int = 0
    _digest: "hashlib._Hash" = field(default_factory=hashlib.sha256, repr=False)

    @property
    def digest(self) -> str:
        return self._digest.hexdigest()

    def as_unit(self) -> dict:
        return {"shard": self.shard, "purpose": self.purpose, "modality": self.modality, "bucket": self.bucket,
                "samples": self.samples, "length": self.samples, "digest": self.digest}


def _score_columns(names: list[str]) -> list[str]:
    """Metric columns of the scores table (the integer and the expected score of each)."""
    from stages.judge.schema import ALL_METRICS

    metrics = [n for n in names if n in ALL_METRICS or f"{n}_expected" in names]
    return sorted(metrics + [f"{m}_expected" for m in metrics if f"{m}_expected" in names])


def plan_sql(workdir: Path, con) -> str:
    """The ordered metadata rows of every key to shard (absolute workdir in the globs)."""
    views = set(catalog.views(con))
    if "selected" not in views:
        raise FileNotFoundError(f"{workdir}: no selected table; run `curate run --stage filter` first")
    enc = catalog._read(workdir, "encoded", ", filename=true, file_row_number=true")
    cols = ", ".join(f"e.{c}" for c in ENCODED_COLUMNS)
    select = [cols, "e.filename AS encoded_part", "e.file_row_number AS encoded_row"]
    joins = []
    if list_parts(workdir, "samples"):
        smp = catalog._read(workdir, "samples", ", filename=true, file_row_number=true")
        joins.append(f"LEFT JOIN (SELECT sample_id, filename AS samples_part, file_row_number AS samples_row "
                     f"FROM {smp} QUALIFY row_number() OVER (PARTITION BY sample_id ORDER BY filename, "
                     f"file_row_number) = 1) s USING (sample_id)")
        select.append("s.samples_part, s.samples_row")
    else:
        select.append("NULL AS samples_part, NULL AS samples_row")
    if "scores" in views:
        have = [r[0] for r in con.execute("DESCRIBE scores").fetchall()]
        score_cols = _score_columns(have) + [c for c in JUDGE_COLUMNS if c in have]
        select.append(", ".join(f'sc."{c}" AS "sc__{c}"' for c in score_cols))
        joins.append("LEFT JOIN scores sc USING (sample_id)")
    return (f"SELECT {', '.join(select)} FROM (SELECT * FROM {enc} WHERE error IS NULL "
            f"QUALIFY row_number() OVER (PARTITION BY key ORDER BY filename, file_row_number) = 1) e "
            f"JOIN (SELECT DISTINCT sample_id FROM selected WHERE kept) k USING (sample_id) {' '.join(joins)} "
            f"ORDER BY e.purpose, e.modality, e.bucket || 'x' || CAST(e.num_frames AS VARCHAR), e.key")


def _rel(path: str | None, root: str) -> str | None:
    if path is None:
        return None
    return os.path.relpath(path, root) if os.path.isabs(path) else path


def record_of(row: dict, root: str) -> dict:
    """A plan row's JSON document: the encoded row plus scores and lineage."""
    scores = {k[4:]: v for k, v in row.items() if k.startswith("sc__") and k[4:] not in JUDGE_COLUMNS
              and v is not None}
    lineage = {
        "manifest": {"table": "samples", "part": _rel(row.get("samples_part"), root), "row": row.get("samples_row")},
        # By key, not part and row: which part holds a key depends on the order the selection
        # grew in (incremental re-curation), and the shard bytes must not depend on that order.
        "encoded": {"table": "encoded", "key": row["key"]},
        "judge": {c: row.get(f"sc__{c}") for c in JUDGE_COLUMNS},
    }
    return sample_record(row, scores, lineage)


def assign_shards(rows: Iterable[dict], target_bytes: int, root: str) -> Iterator[tuple[ShardSpec, dict]]:
    """(shard, plan row) for ordered metadata rows: the size-targeted cut, group by group."""
    spec: ShardSpec | None = None
    numbers: dict[tuple[str, str, str], int] = {}
    for row in rows:
        record = record_of(row, root)
        doc = json_bytes(record)
        size = estimated_bytes(json.loads(row["tensor_meta"]) if row["tensor_meta"] else {}, len(doc))
        group = (row["purpose"], row["modality"], shard_bucket(row["bucket"], row["num_frames"]))
        if spec is None or (spec.purpose, spec.modality, spec.bucket) != group or (
                spec.samples and spec.est_bytes + size > target_bytes):
            number = numbers.get(group, -1) + 1
            numbers[group] = number
            spec = ShardSpec(shard_relpath(*group, number), *group)
        spec.samples += 1
        spec.est_bytes += size
        encoded_part = _rel(row["encoded_part"], root)
        spec._digest.update(json.dumps([row["key"], encoded_part, row["encoded_row"]]).encode() + doc)
        yield spec, {"shard": spec.shard, "purpose": group[0], "modality": group[1], "bucket": group[2],
                     "key": row["key"], "sample_id": row["sample_id"], "encoded_part": encoded_part,
                     "encoded_row": int(row["encoded_row"]), "json": doc.decode("utf-8")}


def write_shard_plan(workdir: Path, plan_path: Path, target_bytes: int, batch_rows: int = 65536) -> list[ShardSpec]:
    """Stream the ordered rows from DuckDB into ``plan_path`` (atomic); returns the shards in order."""
    workdir = Path(workdir).resolve()
    con = catalog.connect(workdir)
    reader = con.sql(plan_sql(workdir, con)).to_arrow_reader(batch_rows)
    rows = (r for batch in reader for r in batch.to_pylist())
    specs: list[ShardSpec] = []
    with atomic_file(plan_path) as f, pq.ParquetWriter(f, PLAN_SCHEMA, compression="zstd") as writer:
        buf: list[dict] = []
        for spec, prow in assign_shards(rows, target_bytes, str(workdir)):
            if not specs or specs[-1] is not spec:
                specs.append(spec)
            buf.append(prow)
            if len(buf) >= 4096:  # row groups of 4096 keys: a shard's rows are read from a few
                writer.write_table(pa.Table.from_pylist(buf, PLAN_SCHEMA))
                buf = []
        if buf or not specs:
            writer.write_table(pa.Table.from_pylist(buf, PLAN_SCHEMA))
    return specs

