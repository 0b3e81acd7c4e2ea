"""`curate prune`: remove the encodings of samples the selection no longer keeps.

After a re-threshold the encode stage keeps every encoding it made (a later threshold may want
them back) and the shard stage leaves the keys no longer kept out of the shards. Their rows stay
in the ``encoded`` parts until this removes them: a part holding only such rows is deleted, a part
holding some is rewritten without them under the name of the samples it keeps (the new part is
complete before the old one goes, so a killed prune leaves a duplicate that the next prune or the
shard planner, which takes a key's first row, resolves). Shards whose keys moved to a rewritten
part are rewritten, with the same bytes, by the next `curate run --stage shard`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests import catalog
from manifests.io import write_part
from pipeline.config import ConfigError
from stages.encode.stage import PART_ROW_GROUP, TABLE, ensure_table, part_name


@dataclass
class PruneReport:
    keys: int = 0  # rows of samples no longer kept
    bytes: int = 0  # their tensor bytes
    parts_deleted: list[str] = field(default_factory=list)
    parts_rewritten: list[str] = field(default_factory=list)


def _tensor_bytes(tensor_meta: str | None) -> int:
    """A row's tensor bytes from its ``tensor_meta`` (the blobs themselves are never read here)."""
    from stages.shard.layout import DTYPE_BYTES

    meta = json.loads(tensor_meta) if tensor_meta else {}
    return sum(math.prod(m["shape"]) * DTYPE_BYTES.get(m["dtype"], 4) for m in meta.values())


def stale_by_part(workdir: Path) -> dict[Path, tuple[int, int]]:
    """{encoded part: (rows whose sample is not kept, their tensor bytes)}, parts with any only."""
    workdir = Path(workdir).absolute()
    con = catalog.connect(workdir)
    if "selected" not in catalog.views(con):
        raise ConfigError(f"{workdir}: no selected table; run `curate run --stage filter` first")
    if "encoded" not in catalog.views(con):
        return {}
    out: dict[Path, tuple[int, int]] = {}
    for f, meta in con.execute(
            f"SELECT e.filename, e.tensor_meta FROM {catalog._read(workdir, TABLE, ', filename=true')} e "
            f"WHERE e.sample_id NOT IN (SELECT sample_id FROM selected WHERE kept) ORDER BY 1").fetchall():
        n, b = out.get(Path(f), (0, 0))
        out[Path(f)] = (n + 1, b + _tensor_bytes(meta))
    return out


def prune(workdir: Path, dry_run: bool = False) -> PruneReport:
    """Delete or rewrite the encoded parts holding rows of samples no longer kept."""
    workdir = Path(workdir).absolute()
    report = PruneReport()
    stale = stale_by_part(workdir)
    if not stale:
        return report
    kept = catalog.connect(workdir).sql("SELECT sample_id FROM selected WHERE kept").to_arrow_table()
    kept_ids = kept["sample_id"].combine_chunks()
    for part, (n, nbytes) in stale.items():
        report.keys += n
        report.bytes += nbytes
        table = pq.read_table(part)
        rest = table.filter(pc.is_in(table["sample_id"], value_set=kept_ids))
        if rest.num_rows == 0:
            report.parts_deleted.append(str(part.relative_to(workdir)))
            if not dry_run:
                part.unlink()
            continue
        ids = list(dict.fromkeys(rest["sample_id"].to_pylist()))  # the samples it keeps, in order
        new = part.with_name(f"{part_name(ids)}.parquet")
        report.parts_rewritten.append(str(part.relative_to(workdir)))
        if not dry_run:
            write_part(new, rest.cast(table.schema), row_group_size=PART_ROW_GROUP)
            if new != part:
                part.unlink()
    if not dry_run:
        ensure_table(workdir)  # the views keep an (empty) encoded table
    return report
