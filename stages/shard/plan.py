"""Which key goes to which shard, decided on the driver from metadata only (no tensor bytes).

Rows: the ``encoded`` keys without error whose sample is still ``kept`` in ``selected``, joined
with their scores and manifest lineage in DuckDB (the ``tensors`` column is never read). They
stream out ordered by (purpose, modality, ``<W>x<H>x<F>`` bucket, key); a shard is cut when the
group changes or the next key would take it past ``shard.target_bytes`` (sizes come from
``tensor_meta``). The plan is a Parquet file sorted by shard path, so one shard's rows are found
through row-group statistics, and its digest says whether a shard on disk was made from it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests import catalog
from manifests.io import atomic_file, list_parts
from stages.shard.layout import (SOURCE, TAR_BLOCK, _json_or, estimated_bytes, members_of, sample_record,
                                 shard_bucket, shard_relpath, task_of, with_empty_source)

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
    """A plan row's JSON document: the encoded row plus scores and lineage.

    The readable definition of ``K.json``; the planner writes the same bytes column-wise
    (``_Docs``), and the tests hold the two equal on varied rows."""
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


# What json.dumps writes for one value: a str through the C escaper (ensure_ascii=False for the
# document, the default ASCII one for the digest's prefix), anything else through json.dumps itself.
_esc = json.encoder.encode_basestring
_esc_ascii = json.encoder.encode_basestring_ascii
_dump = functools.partial(json.dumps, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
# Characters those escapers rewrite (RE2): with them a column is escaped in Python, else quoted in Arrow.
_NEEDS_ESCAPE = {False: r'[\x00-\x1f\\"]', True: r'[^ -~]|[\\"]'}
_CACHE_MAX = 4096  # distinct tensor_meta texts remembered across batches (bounded memory)
_FLOAT_BITS = {16: pa.int16(), 32: pa.int32(), 64: pa.int64()}


def _s(v) -> str:
    return _esc(v) if v.__class__ is str else _dump(v)


def _ints(v) -> str:
    return "[]" if v is None else "[" + ",".join([str(int(x)) for x in v]) + "]"


def _float(v) -> str:
    text = repr(float(v))
    return text if text not in ("nan", "inf", "-inf") else _dump(float(v))  # NaN, Infinity as json writes them


def _pretext(text) -> str:
    # the operator record as a JSON text inside the document (sample_record): ASCII, sorted, compact
    return _esc(json.dumps(_json_or(text, {}), sort_keys=True, separators=(",", ":")))


def _join(*parts) -> pa.Array:
    """Row-wise concatenation of string arrays and constant strings (null if any part is null)."""
    return pc.binary_join_element_wise(*parts, "")


def _distinct(arr: pa.Array) -> tuple[list, pa.Array]:
    """(distinct values as Python objects, index of each row's value). Floats are told apart by
    their bits, so 0.0 and -0.0 (which json writes differently) stay two values."""
    if pa.types.is_null(arr.type):
        return [None], pa.array(np.zeros(len(arr), np.int32))
    bits = _FLOAT_BITS.get(arr.type.bit_width) if pa.types.is_floating(arr.type) else None
    enc = pc.dictionary_encode(arr.view(bits) if bits else arr, null_encoding="encode")
    values = enc.dictionary.view(arr.type) if bits else enc.dictionary
    return values.to_pylist(), enc.indices


def _by_value(arr: pa.Array, make, prefix: str = "") -> pa.Array:
    """``prefix + make(value)`` (or null where ``make`` gives None) for every row, ``make`` called
    once per distinct value (the prefix saves a column in the row-wise concatenation)."""
    values, index = _distinct(arr)
    texts = [make(v) for v in values]
    return pa.array([t if t is None else prefix + t for t in texts], pa.string()).take(index)


def _quoted(arr: pa.Array, ascii: bool = False) -> pa.Array:
    """Each value as json.dumps writes it; high-cardinality columns (keys, ids, instructions) are
    quoted in Arrow when nothing in them needs an escape."""
    if pa.types.is_string(arr.type) and not arr.null_count and not pc.any(
            pc.match_substring_regex(arr, _NEEDS_ESCAPE[ascii])).as_py():
        return _join('"', arr, '"')
    esc, other = (_esc_ascii, json.dumps) if ascii else (_esc, _dump)
    return pa.array([esc(v) if v.__class__ is str else other(v) for v in arr.to_pylist()], pa.string())


def _int_text(arr: pa.Array, make=_dump) -> pa.Array:
    """Integers as json writes them (null -> ``null``); other types through ``make``."""
    if pa.types.is_integer(arr.type):
        return pc.fill_null(pc.cast(arr, pa.string()), "null")
    return _by_value(arr, make)


def _int_lists(arr: pa.Array) -> pa.Array:
    """``_ints`` of each row: ``[1,2]``, ``[]`` for null."""
    if (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)) and pa.types.is_integer(
            arr.type.value_type) and not pc.list_flatten(arr).null_count:
        text = pc.binary_join(arr.cast(pa.list_(pa.string())), ",")
        return _join("[", pc.fill_null(text, ""), "]")
    return pa.array([_ints(v) for v in arr.to_pylist()], pa.string())


def _bytes_of(arr: pa.Array, rows: int) -> tuple[np.ndarray, memoryview]:
    """(offsets, data) of a string array: rows ``a..b`` are ``data[offsets[a]:offsets[b]]``."""
    kind = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], kind)[arr.offset:arr.offset + rows + 1]
    data = arr.buffers()[2]
    return offsets, memoryview(data if data is not None else b"")


class _Docs:
    """The ``K.json`` documents of a record batch of ``plan_sql`` rows, built column by column in
    Arrow: for every row, the bytes ``json_bytes(record_of(row, root))`` gives (the tests hold the
    two equal on varied rows). Python runs once per distinct value of a column (``tensor_meta``,
    ``pretext``, buckets, floats, ...), not once per key; the document's keys are written in
    ``sort_keys`` order by hand."""

    def __init__(self, names: list[str], root: str):
        self.root = root
        self.metrics = sorted(n[4:] for n in names if n.startswith("sc__") and n[4:] not in JUDGE_COLUMNS
                              and not n.endswith("_expected"))
        self.judge = sorted(JUDGE_COLUMNS)
        self.meta: dict = {}

    def _meta(self, text) -> tuple[str, str, int]:
        """(members JSON, has_source JSON, the key's tar bytes less its JSON's) of a tensor_meta."""
        hit = self.meta.get(text)
        if hit is None:
            tensor_meta = _json_or(text, {})
            if len(self.meta) >= _CACHE_MAX:
                self.meta.clear()
            hit = self.meta[text] = (_dump(members_of(with_empty_source(tensor_meta))),
                                     "true" if SOURCE in tensor_meta else "false",
                                     estimated_bytes(tensor_meta, 0) - TAR_BLOCK)
        return hit

    def rel(self, arr: pa.Array) -> pa.Array:
        """Paths relative to the workdir (as ``_rel``)."""
        return _by_value(arr, lambda p: _rel(p, self.root))

    def build(self, batch: pa.RecordBatch) -> tuple[pa.Array, np.ndarray, pa.Array]:
        """(documents, estimated tar bytes of each key)."""
        c = batch.column
        n = batch.num_rows
        names = set(batch.schema.names)
        if c("num_frames").null_count:
            raise ValueError("an encoded key without num_frames")
        metas, meta_index = _distinct(c("tensor_meta"))
        metas = [self._meta(m) for m in metas]
        members = pa.array([',"members":' + m[0] for m in metas], pa.string()).take(meta_index)
        has_source = pa.array([',"has_source":' + m[1] for m in metas], pa.string()).take(meta_index)
        tensor_bytes = np.array([m[2] for m in metas], np.int64)[meta_index.to_numpy(zero_copy_only=False)]
        key = _quoted(c("key"))
        judge = []
        for j, name in enumerate(self.judge):
            head = f'{"," if j else ""}"{name}":'
            judge.append(_by_value(c(f"sc__{name}"), _s, head) if f"sc__{name}" in names else head + "null")
        samples_part = self.rel(c("samples_part"))
        parts = [
            '{"anchor_indices":', _int_lists(c("anchor_indices")),
            _by_value(c("bucket"), _s, ',"bucket":'),
            _by_value(c("dataset"), _s, ',"dataset":'),
            _by_value(c("fps"), lambda v: "0.0" if v is None else _float(v), ',"fps":'),
            has_source,
            ',"instruction":', _quoted(pc.fill_null(c("instruction"), "")),
            ',"key":', key,
            ',"latent_shape":', _int_lists(c("latent_shape")),
            ',"lineage":{"encoded":{"key":', key, ',"table":"encoded"},"judge":{', *judge,
            _by_value(samples_part, _s, '},"manifest":{"part":'), ',"row":', _int_text(c("samples_row")),
            ',"table":"samples"}}',
            members,
            _by_value(c("modality"), _s, ',"modality":'),
            _by_value(c("models"), lambda v: _dump(_json_or(v, {})), ',"models":'),
            ',"num_frames":', _int_text(c("num_frames"), lambda v: str(int(v))),
            _by_value(c("pretext"), _pretext, ',"pretext":'),
            _by_value(c("purpose"), _s, ',"purpose":'),
            ',"sample_id":', _quoted(c("sample_id")),
            ',"scores":', self._scores(batch),
            ',"source_indices":', _int_lists(c("source_indices")),
            ',"target_indices":', _int_lists(c("target_indices")),
            _by_value(c("variant"), lambda v: _s(task_of(v)), ',"task":'),
            _by_value(c("task_token"), lambda v: _s(v or ""), ',"task_token":'),
            _by_value(c("variant"), _s, ',"variant":'), "}",
        ]
        docs = _join(*parts) if n else pa.array([], pa.string())
        lengths = pc.binary_length(docs).to_numpy(zero_copy_only=False).astype(np.int64)
        sizes = -(-lengths // TAR_BLOCK) * TAR_BLOCK + TAR_BLOCK + tensor_bytes
        return docs, sizes

    def _scores(self, batch: pa.RecordBatch):
        """The ``scores`` list of each row (``score_list``): one entry per non-null metric, sorted."""
        if not self.metrics:
            return "[]"
        names = set(batch.schema.names)
        entries = []
        for m in self.metrics:
            score = _by_value(batch.column(f"sc__{m}"), lambda v: None if v is None else str(int(v)))
            exp = f"sc__{m}_expected"
            expected = (_by_value(batch.column(exp), lambda v: "null" if v is None else _float(v))
                        if exp in names else "null")
            entry = _join(',{"expected":', expected, ',"metric":' + _esc(m) + ',"score":', score, "}")
            entries.append(pc.fill_null(entry, ""))  # a null score: no entry
        return _join("[", pc.utf8_slice_codeunits(_join(*entries), start=1), "]")


DOC_ROWS = 8192  # keys whose documents are built at once: the Arrow temporaries of a DuckDB batch, in slices


def assign_shards(batches: Iterable[pa.RecordBatch], target_bytes: int, root: str
                  ) -> Iterator[tuple[list[ShardSpec], pa.Table]]:
    """(shards begun or continued, plan rows) per record batch of ordered metadata rows: the
    size-targeted cut, group by group. The cut and the digests run in key order across batches;
    the documents are built a batch at a time, so memory is one batch whatever the number of keys."""
    spec: ShardSpec | None = None
    group = None
    numbers: dict[tuple[str, str, str], int] = {}
    docs_of: _Docs | None = None
    for batch in (b.slice(i, DOC_ROWS) for b in batches for i in range(0, max(b.num_rows, 1), DOC_ROWS)):
        if docs_of is None:
            docs_of = _Docs(batch.schema.names, root)
        n = batch.num_rows
        docs, sizes = docs_of.build(batch)
        c = batch.column
        bucket, frames = c("bucket"), c("num_frames")
        if not bucket.null_count and pa.types.is_integer(frames.type):
            buckets = _join(bucket, "x", pc.cast(frames, pa.string()))  # shard_bucket, in Arrow
        else:
            buckets = pa.array([shard_bucket(b, f) for b, f in zip(bucket.to_pylist(), frames.to_pylist())],
                               pa.string())
        parts = docs_of.rel(c("encoded_part"))
        # What the digest hashes per key: json.dumps([key, part, row]) (default separators, ASCII
        # escapes), then the document; a shard's keys are contiguous, hashed in one update.
        hashed = _join("[", _quoted(c("key"), ascii=True), ", ", _quoted(parts, ascii=True), ", ",
                       _int_text(c("encoded_row")), "]", docs) if n else pa.array([], pa.string())
        offsets, data = _bytes_of(hashed, n)
        specs, runs, start = [], [], 0
        for i, (g, size) in enumerate(zip(zip(c("purpose").to_pylist(), c("modality").to_pylist(),
                                              buckets.to_pylist()), sizes.tolist())):
            if spec is None or g != group or (spec.samples and spec.est_bytes + size > target_bytes):
                if i > start:
                    spec._digest.update(data[offsets[start]:offsets[i]])
                    runs.append(i - start)
                    start = i
                group = g
                number = numbers.get(group, -1) + 1
                numbers[group] = number
                spec = ShardSpec(shard_relpath(*group, number), *group)
            if not specs or specs[-1] is not spec:
                specs.append(spec)
            spec.samples += 1
            spec.est_bytes += size
        if n > start:
            spec._digest.update(data[offsets[start]:offsets[n]])
            runs.append(n - start)
        shard = pa.array([s.shard for s in specs], pa.string()).take(
            pa.array(np.repeat(np.arange(len(runs)), runs).astype(np.int32)))
        table = pa.table([
            shard, c("purpose").cast(pa.string()), c("modality").cast(pa.string()), buckets,
            c("key").cast(pa.string()), c("sample_id").cast(pa.string()), parts,
            c("encoded_row").cast(pa.int64()), docs,
        ], schema=PLAN_SCHEMA)
        yield specs, table


PLAN_ROW_GROUP = 4096  # keys per row group of the plan: a shard's rows are read from a few


def write_shard_plan(workdir: Path, plan_path: Path, target_bytes: int, batch_rows: int = 65536) -> list[ShardSpec]:
    """Stream the ordered rows from DuckDB into ``plan_path`` (atomic); returns the shards in order."""
    workdir = Path(workdir).resolve()
    con = catalog.connect(workdir)
    reader = con.sql(plan_sql(workdir, con)).to_arrow_reader(batch_rows)
    specs: list[ShardSpec] = []
    with atomic_file(plan_path) as f, pq.ParquetWriter(f, PLAN_SCHEMA, compression="zstd") as writer:
        pending: list[pa.Table] = []
        held = 0
        for began, table in assign_shards(reader, target_bytes, str(workdir)):
            if specs and began and specs[-1] is began[0]:  # a shard that runs on from the last batch
                began = began[1:]
            specs += began
            pending.append(table)
            held += table.num_rows
            if held >= PLAN_ROW_GROUP:
                rows = pa.concat_tables(pending)
                whole = held - held % PLAN_ROW_GROUP
                for start in range(0, whole, PLAN_ROW_GROUP):
                    writer.write_table(rows.slice(start, PLAN_ROW_GROUP))
                pending, held = [rows.slice(whole)], held - whole
        if held or not specs:
            writer.write_table(pa.concat_tables(pending) if pending else PLAN_SCHEMA.empty_table())
    return specs
