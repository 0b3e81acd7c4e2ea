"""`curate verify`: re-read every shard and prove the index, the tars and the selection agree.

Checks: each indexed shard exists with the indexed sha256, byte count and sample count; every
key's JSON parses, names itself, and lists exactly the tensor members present; each member is a
safetensors file with one tensor of the JSON's name, dtype and shape; the keys in each tar are the
ones ``shard_keys`` gives it; every kept and encoded key is in exactly one shard and no other key
is; no tar on disk is missing from the index.
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from manifests import catalog
from manifests.schema import SHARD_KEYS, SHARDS

MAX_LISTED = 20  # problems of one kind listed before "... and N more"


@dataclass
class VerifyReport:
    """What verify found: every problem counted, the first ``MAX_LISTED`` of each kind kept (a
    corpus where every key is missing must not hold millions of messages)."""

    shards: int = 0
    keys: int = 0
    bytes: int = 0
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, kind: str, msg: str) -> None:
        self.add_many(kind, [msg], 1)

    def add_many(self, kind: str, msgs: list[str], count: int) -> None:
        """``count`` problems of one kind, of which ``msgs`` are the first."""
        kept = self.problems[kind]
        kept += msgs[:MAX_LISTED - len(kept)]
        self.counts[kind] += count

    @property
    def ok(self) -> bool:
        return not self.counts

    def render(self) -> str:
        head = f"verified {self.shards} shards, {self.keys} keys, {self.bytes} bytes: "
        if self.ok:
            return head + "OK"
        lines = [head + f"{sum(self.counts.values())} problems"]
        for kind in sorted(self.counts):
            msgs, n = self.problems[kind], self.counts[kind]
            lines.append(f"  {kind} ({n}):")
            lines += [f"    {m}" for m in msgs]
            if n > len(msgs):
                lines.append(f"    ... and {n - len(msgs)} more")
        return "\n".join(lines)


def _listed(con, report: VerifyReport, kind: str, sql: str, message) -> None:
    """Count the rows of ``sql`` in DuckDB and bring only the first ``MAX_LISTED`` into Python."""
    n = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
    if n:
        report.add_many(kind, [message(*r) for r in con.execute(f"{sql} LIMIT {MAX_LISTED}").fetchall()], n)


def _tensor_header(data: bytes) -> dict:
    """The safetensors header (names, dtypes, shapes), checked against the data length."""
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if 8 + n + end != len(data):
        raise ValueError(f"data is {len(data) - 8 - n} bytes, header says {end}")
    return header


_ST_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64", "I32": "int32",
              "I64": "int64", "U8": "uint8"}


def check_sample(key: str, files: dict[str, bytes], report: VerifyReport, where: str) -> None:
    if "json" not in files:
        report.add("member missing", f"{where}: {key}.json")
        return
    try:
        doc = json.loads(files["json"])
    except ValueError as e:
        report.add("bad json", f"{where}: {key}.json: {e}")
        return
    if doc.get("key") != key:
        report.add("bad json", f"{where}: {key}.json names key {doc.get('key')!r}")
    members = doc.get("members") or {}
    present = set(files) - {"json"}
    for m in sorted(set(members) - present):
        report.add("member missing", f"{where}: {key}.{m} (listed in members)")
    for m in sorted(present - set(members)):
        report.add("member unlisted", f"{where}: {key}.{m} (not in members)")
    for m in sorted(present & set(members)):
        want = members[m]
        try:
            header = _tensor_header(files[m])
        except ValueError as e:
            report.add("bad tensor", f"{where}: {key}.{m}: {e}")
            continue
        if list(header) != [want["tensor"]]:
            report.add("bad tensor", f"{where}: {key}.{m} holds {sorted(header)}, JSON says [{want['tensor']}]")
            continue
        got = header[want["tensor"]]
        dtype = _ST_DTYPES.get(got["dtype"], got["dtype"])
        if dtype != want["dtype"] or list(got["shape"]) != list(want["shape"]):
            report.add("shape/dtype mismatch", f"{where}: {key}.{m} is {dtype} {got['shape']}, JSON says "
                                               f"{want['dtype']} {want['shape']}")


class _HashingReader:
    """A read-only file wrapper that hashes every byte read through it, so one pass over a tar
    both streams its members (``tarfile`` mode ``r|``) and gives its sha256."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        return data

    def drain(self, chunk: int = 1 << 22) -> None:
        """Read (and hash) whatever is left of the file."""
        while self.read(chunk):
            pass


def read_shard(path: Path, report: VerifyReport, where: str) -> tuple[str, list[str]]:
    """(sha256, keys in order) of one tar, checking every sample in it as it streams past."""
    keys: list[str] = []
    with open(path, "rb") as f:
        reader = _HashingReader(f)
        try:
            _read_members(reader, report, where, keys)
        except tarfile.TarError as e:
            report.add("bad tar", f"{where}: {e}")
        reader.drain()  # the end-of-archive blocks and padding tarfile leaves unread
    return reader.sha.hexdigest(), keys


def _read_members(reader: "_HashingReader", report: VerifyReport, where: str, keys: list[str]) -> None:
    """Stream the tar once, checking each key's sample when the next key starts (and at the end)."""
    current, files = None, {}
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for info in tar:
            if not info.isfile():
                report.add("bad tar", f"{where}: {info.name} is not a regular file")
                continue
            key, _, suffix = info.name.partition(".")
            if key != current:
                if current is not None:
                    check_sample(current, files, report, where)
                current, files = key, {}
                keys.append(key)
            files[suffix] = tar.extractfile(info).read()
    if current is not None:
        check_sample(current, files, report, where)


def _expected_sql(workdir: Path, con) -> str | None:
    """SQL of (key, sample_id) of every encoded key without error whose sample is kept."""
    views = set(catalog.views(con))
    if "encoded" not in views or "selected" not in views:
        return None
    return ("SELECT key, sample_id FROM encoded WHERE error IS NULL AND sample_id IN "
            "(SELECT sample_id FROM selected WHERE kept)")


def expected_keys(workdir: Path) -> dict[str, str] | None:
    """key -> sample_id of every encoded key without error whose sample is kept (small runs and
    tests; `curate verify` compares in DuckDB instead)."""
    con = catalog.connect(workdir)
    sql = _expected_sql(Path(workdir), con)
    return None if sql is None else dict(con.execute(sql).fetchall())


def _index_ok(con, report: VerifyReport) -> bool:
    for name, schema in (("shards", SHARDS), ("shard_keys", SHARD_KEYS)):
        have = {r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()}
        missing = [c for c in schema.names if c not in have]
        if missing:  # an index written by something else: the checks below would fail obscurely
            report.add("index schema", f"{name} lacks {', '.join(missing)} (manifests/schema.py)")
            return False
    return True


def verify_workdir(workdir: Path, read_tars: bool = True) -> VerifyReport:
    """Every check of the module docstring. The index is read in DuckDB, streamed: shard rows by
    record batch, each shard's keys by a filtered query (shard_keys is sorted by shard, so row-group
    statistics skip the rest), and the key-set comparisons as anti-joins; nothing holds every key.
    ``read_tars=False``: the index pass alone (the tars are only checked to exist)."""
    workdir = Path(workdir)
    report = VerifyReport()
    con = catalog.connect(workdir)
    if not {"shards", "shard_keys"} <= set(catalog.views(con)):
        report.add("no index", f"{workdir}: no shards/shard_keys tables; run `curate run --stage shard`")
        return report
    if not _index_ok(con, report):
        return report
    keys_con = con.cursor()
    reader = con.sql("SELECT shard, bytes, sha256, samples FROM shards ORDER BY shard").to_arrow_reader(4096)
    for batch in reader:
        for row in batch.to_pylist():
            _check_shard(workdir, row, keys_con, report, read_tars)
    _listed(con, report, "shard_keys mismatch", "SELECT DISTINCT shard FROM shard_keys ANTI JOIN shards USING (shard) "
            "ORDER BY 1", lambda rel: f"shard_keys names {rel}, which the shards index does not list")
    indexed = con.execute("SELECT list(shard) FROM shards").fetchone()[0] or []
    indexed = set(indexed)  # one path per shard: as many as there are tars
    root = workdir / "shards"
    for p in sorted(root.rglob("*.tar")) if root.exists() else []:
        if str(p.relative_to(workdir)) not in indexed:
            report.add("unindexed shard", f"{p.relative_to(workdir)} is on disk but not in the index")
    _listed(con, report, "duplicate key", "SELECT key, count(*) FROM shard_keys GROUP BY 1 HAVING count(*) > 1 "
            "ORDER BY 1", lambda key, n: f"{key} is in {n} shards")
    expected = _expected_sql(workdir, con)
    if expected is not None:
        _listed(con, report, "key not in any shard", f"SELECT key, sample_id FROM ({expected}) ANTI JOIN shard_keys "
                "USING (key) ORDER BY 1", lambda key, sid: f"{key} ({sid}) is kept and encoded")
        _listed(con, report, "unexpected key", f"SELECT key FROM shard_keys ANTI JOIN ({expected}) USING (key) "
                "ORDER BY 1", lambda key: f"{key} is in a shard but not kept+encoded")
    return report


def _check_shard(workdir: Path, row: dict, con, report: VerifyReport, read_tars: bool) -> None:
    report.shards += 1
    rel = row["shard"]
    path = workdir / rel
    if not path.exists():
        report.add("shard missing", f"{rel} is in the index but not on disk")
        return
    size = path.stat().st_size
    report.bytes += size
    if size != row["bytes"]:
        report.add("size mismatch", f"{rel}: {size} bytes, index says {row['bytes']}")
    if not read_tars:
        report.keys += row["samples"]
        return
    sha, keys = read_shard(path, report, rel)
    if sha != row["sha256"]:
        report.add("sha256 mismatch", f"{rel}: {sha[:16]}..., index says {row['sha256'][:16]}...")
    if len(keys) != row["samples"]:
        report.add("count mismatch", f"{rel}: {len(keys)} keys, index says {row['samples']}")
    listed = [k for (k,) in con.execute("SELECT key FROM shard_keys WHERE shard = ? ORDER BY key", [rel]).fetchall()]
    if sorted(keys) != listed:
        report.add("shard_keys mismatch", f"{rel}: the tar's keys differ from shard_keys")
    if keys != sorted(keys):
        report.add("unsorted", f"{rel}: keys are not in sorted order")
    report.keys += len(keys)
