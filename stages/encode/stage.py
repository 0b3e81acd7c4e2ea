"""`curate run --stage encode`: the Ray adapter around ``stages.encode.decode`` and ``core``.

1. Plan (driver, DuckDB): the kept samples not encoded yet joined with their samples and probes
   rows, per dataset, ordered by the bucket and frame count their probe predicts, then by id,
   written to ``state/encoded/plan/dataset=<ds>/plan-NNNNN.parquet`` with one row group per unit
   (``unit_rows``: whole batches of ``encode.samples_per_unit`` samples, up to
   ``MAX_BATCHES_PER_UNIT`` of them as the selection grows). Ordering by bucket keeps a unit's clips
   at one shape.
   The plan is a pure function of the selection, the encoded table and the config.
2. Decode (a flat map, CPU tasks, ``encode.decode_workers`` at once): read a unit's row group,
   decode, cut and resize its samples a batch at a time; a batch's frames travel on as one
   safetensors buffer + JSON.
3. Encode (actors: ``encode.encoder_actors``, each loading the models once, ``encode.num_gpus``
   GPUs each, fractions allowed): encode a batch.
4. Write (a regroup, one actor): once all of a unit's batches are back, write
   ``tables/encoded/<ds>/part-<digest of its samples>.parquet`` atomically; a summary row.
   Decoding runs ahead in its own tasks, so the GPU does not wait on it.

Incremental: the plan holds only the kept samples without an ``encoded`` row yet, and a part is
named by a digest of the samples it holds (``part-<16 hex>``). So a resumed run redoes exactly the
missing parts, and a changed selection (a re-thresholded ``filter``) encodes only the newly kept
samples, in parts of their own; the keys still kept keep their encodings, and those no longer kept
stay on disk, are left out of the shards, reported, and removed by ``curate prune``
(``stages/encode/prune.py``). A key's bytes do not depend on its unit mates (``core``), so the
shards then equal a fresh run's. The fingerprint (encode and pretext settings, run seed, model
directories, decoder) still refuses to mix encodings made with other settings.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from manifests import catalog
from manifests.io import dataset_dir, list_parts, table_dir, write_part
from manifests.tables import Table
from pipeline.config_base import ConfigError
from pipeline.progress import console
from pipeline.stage import (BATCHES, FLAT_MAP, REGROUP, UNIT_COLUMNS, Context, Phase, Resources, Stage, StageFacts,
                            Unit, state_dir)
from stages.encode.config import EncodeConfig
from stages.encode.core import encode_table
from stages.encode.counts import counts, encode_status
from stages.encode.decode import decode_sample, pack_decoded, unpack_decoded
from stages.encode.schema import ENCODED
from stages.encode.upgrade import upgrade_record
from stages.media.locate import dataset_roots
from stages.pretext.config import PretextConfig

TABLE = "encoded"
UNITS_PER_PLAN_FILE = 1024  # a plan file's footer stays small; units read one row group each
PART_ROW_GROUP = 4  # rows per row group of an encoded part: the shard writer reads blobs by group
# A unit (one part, scheduled and resumed as one) is up to this many batches of
# ``encode.samples_per_unit`` samples (the batch whose decoded frames one task and one actor call
# hold). Bounded because one actor regroups a unit's encoded rows (latents and embeddings, ~10 MB a
# sample at 480p) before writing its part.
MAX_BATCHES_PER_UNIT = 16
# Units a selection is cut into at least before batches are merged into larger units, so that a
# small run still spreads over the cluster.
MIN_UNITS = 64

PLAN_COLUMNS = (
    "s.sample_id, s.dataset, s.modality, s.task, s.source_uri, s.target_uri, s.instruction, s.caption, "
    "s.clip_start_s, s.clip_end_s, s.skip_frames, p.source_fps, p.source_frames, p.target_fps, p.target_frames, "
    "p.target_width, p.target_height"
)


# ---------------------------------------------------------------- planning (driver)
def _bucket_case(buckets: list[tuple[int, int]]) -> str:
    """SQL for the bucket nearest in log aspect ratio: cut points halfway between neighbours."""
    import math

    ordered = sorted(buckets, key=lambda b: b[0] / b[1])
    logs = [math.log(w / h) for w, h in ordered]
    parts = [f"WHEN la < {(a + b) / 2!r} THEN '{w}x{h}'" for (w, h), a, b in zip(ordered, logs, logs[1:])]
    last = ordered[-1]
    return f"CASE WHEN la IS NULL THEN '~' {' '.join(parts)} ELSE '{last[0]}x{last[1]}' END"


def plan_sql(cfg, dataset: str, skip_encoded: bool = False) -> str:
    """The plan rows of ``dataset``'s kept samples (``skip_encoded``: those without an encoded row)."""
    enc = cfg.encode
    todo = " AND s.sample_id NOT IN (SELECT sample_id FROM encoded)" if skip_encoded else ""
    fit = (f"floor((least((p.target_frames - 1) / p.target_fps, coalesce(s.clip_end_s, 1e18)) "
           f"- greatest(0, coalesce(s.clip_start_s, 0)) - coalesce(s.skip_frames, 0) / p.target_fps) "
           f"* {float(enc.fps)!r} + 1e-9) + 1")
    frames = f"least({enc.num_frames}, 4 * floor(({fit} - 1) / 4) + 1)"
    return (
        f"SELECT * EXCLUDE (la, plan_frames) FROM ("
        f"SELECT {PLAN_COLUMNS}, ln(p.target_width / p.target_height) AS la, "
        f"CASE WHEN s.modality = 'image' THEN 1 ELSE coalesce({frames}, 0) END AS plan_frames "
        f"FROM selected sel JOIN samples s USING (sample_id) LEFT JOIN probes p USING (sample_id) "
        f"WHERE sel.kept AND s.dataset = '{dataset}'{todo}) "
        f"ORDER BY {_bucket_case(enc.bucket_list())}, plan_frames DESC, sample_id"
    )


def plan_dir(workdir: Path) -> Path:
    return state_dir(workdir, TABLE) / "plan"


def unit_rows(per_batch: int, kept: int) -> int:
    """Samples per unit, from the size of the whole selection (not what is left to encode, so that
    a resumed run plans the same units): whole batches, more of them as the selection grows."""
    return per_batch * max(1, min(MAX_BATCHES_PER_UNIT, kept // (per_batch * MIN_UNITS)))


def write_encode_plan(cfg, workdir: Path) -> list[Unit]:
    """Write the plan files (replacing old ones) of the kept samples not encoded yet and return
    the units, in plan order. Planning a subset of whole units in plan order gives those same
    units (all but a dataset's last are full), so a resume rewrites the missing parts as they were."""
    import shutil

    con = catalog.connect(workdir)
    skip = "encoded" in catalog.views(con)
    datasets = [r[0] for r in con.execute(
        "SELECT DISTINCT s.dataset FROM selected sel JOIN samples s USING (sample_id) WHERE sel.kept "
        + ("AND s.sample_id NOT IN (SELECT sample_id FROM encoded) " if skip else "") + "ORDER BY 1").fetchall()]
    root = plan_dir(workdir)
    shutil.rmtree(root, ignore_errors=True)
    per = unit_rows(cfg.encode.samples_per_unit, counts(workdir)[0])
    units = []
    for ds in datasets:
        reader = con.sql(plan_sql(cfg, ds, skip)).to_arrow_reader(per * 256)
        writer, file_no, in_file, pending = None, 0, 0, []

        def flush(table: pa.Table, final: bool = False):
            nonlocal writer, file_no, in_file
            start = 0
            while start < table.num_rows:
                if writer is None:
                    path = root / f"dataset={ds}" / f"plan-{file_no:05d}.parquet"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(path, table.schema, compression="zstd")
                take = min(table.num_rows - start, (UNITS_PER_PLAN_FILE - in_file) * per)
                writer.write_table(table.slice(start, take), row_group_size=per)
                in_file += -(-take // per)
                start += take
                if in_file >= UNITS_PER_PLAN_FILE:
                    writer.close()
                    writer, file_no, in_file = None, file_no + 1, 0

        for batch in reader:
            pending.append(batch)
            rows = sum(b.num_rows for b in pending)
            whole = rows - rows % per  # write whole units only, so row groups stay unit-sized
            if whole:
                table = pa.Table.from_batches(pending)
                flush(table.slice(0, whole))
                pending = [b for b in table.slice(whole).to_batches()]
        if pending and sum(b.num_rows for b in pending):
            flush(pa.Table.from_batches(pending))
        if writer is not None:
            writer.close()
        units += _units_of(workdir, ds)
    return units


def part_name(sample_ids: list[str]) -> str:
    """A part's name from the samples it holds (in order): the same samples, the same name."""
    import hashlib

    return f"part-{hashlib.sha256(chr(10).join(sample_ids).encode()).hexdigest()[:16]}"


def _units_of(workdir: Path, dataset: str) -> list[Unit]:
    units = []
    for path in sorted((plan_dir(workdir) / f"dataset={dataset}").glob("plan-*.parquet")):
        pf = pq.ParquetFile(path)
        for rg in range(pf.metadata.num_row_groups):
            name = part_name(pf.read_row_group(rg, columns=["sample_id"])["sample_id"].to_pylist())
            out = dataset_dir(workdir, TABLE, dataset) / f"{name}.parquet"
            units.append(Unit(f"{dataset}/{name}", dataset, pf.metadata.row_group(rg).num_rows, str(out),
                              {"plan": str(path), "row_group": rg}))
    return units


# ---------------------------------------------------------------- Ray functions
def _configs(enc_json: str, pre_json: str):
    return EncodeConfig.model_validate_json(enc_json), PretextConfig.model_validate_json(pre_json)


def _decode_fn(enc_json: str, pre_json: str, seed: int, backend: str, roots: dict[str, list[str]]):
    def run(item: dict[str, Any]) -> Iterator[pa.Table]:
        """A unit's samples decoded a batch (``encode.samples_per_unit``) at a time: the task holds
        one batch of frames, not the unit's."""
        enc, pre = _configs(enc_json, pre_json)
        rows = pq.ParquetFile(item["plan"]).read_row_group(item["row_group"]).to_pylist()
        per = enc.samples_per_unit
        batches = -(-len(rows) // per)
        unit = {"unit": item["key"], "unit_rows": batches, "unit_item": json.dumps(item, sort_keys=True)}
        for pos in range(batches):
            decoded = [decode_sample(r, enc, pre, seed, backend, roots.get(r["dataset"], []))
                       for r in rows[pos * per:(pos + 1) * per]]
            meta, frames = pack_decoded(decoded)
            yield pa.Table.from_pylist([{**unit, "pos": pos, "meta": meta, "payload": frames}], schema=DECODED_ROWS)

    return run


DECODED_ROWS = pa.schema([*UNIT_COLUMNS, pa.field("meta", pa.string()), pa.field("payload", pa.large_binary())])
ENCODED_ROWS = pa.schema([*UNIT_COLUMNS, pa.field("encoded", pa.large_binary())])  # a batch's rows, Arrow IPC


class EncodeActor:
    """Holds the encoders (loaded once); encodes one decoded batch per call."""

    def __init__(self, enc_json: str, pre_json: str, seed: int):
        self.enc, self.pre = _configs(enc_json, pre_json)
        self.seed = seed
        from stages.encode.encoders import Encoders  # torch: only where the models run

        self.encoders = Encoders(self.enc)

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {name: [] for name in ENCODED_ROWS.names}
        for i in range(len(batch["unit"])):
            decoded = unpack_decoded(str(batch["meta"][i]), batch["payload"][i])
            table = encode_table(decoded, self.encoders, self.enc, self.pre, self.seed)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            for name in UNIT_COLUMNS.names:
                out[name].append(batch[name][i].item() if hasattr(batch[name][i], "item") else batch[name][i])
            out["encoded"].append(sink.getvalue().to_pybytes())
        return out


def write_unit(item: dict, rows: pa.Table) -> dict:
    """The regroup: a unit's encoded batches, in plan order, as its part (written atomically)."""
    table = pa.concat_tables([pa.ipc.open_stream(blob.as_py()).read_all() for blob in rows["encoded"]])
    write_part(Path(item["out"]), table, row_group_size=PART_ROW_GROUP)
    return {"dataset": item["dataset"], "unit": item["key"], "rows": table.num_rows,
            "failed": table.num_rows - table["error"].null_count}


def placement(cfg) -> tuple[str, float]:
    """The device the actors use and the GPUs each reserves (device auto: GPU if the cluster has one)."""
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0))
    device = cfg.encode.device
    if device == "auto":
        device = "cuda" if gpus > 0 else "cpu"
    if device == "cuda":
        if gpus <= 0:
            raise ConfigError("encode.device: cuda, but the Ray cluster has no GPU; use auto or cpu")
        return device, float(cfg.encode.num_gpus)
    return device, 0.0


def payload_bytes(cfg) -> int:
    """About the most memory one decode task takes: two clips (target and source) per sample at
    the largest bucket, the native frames being resized, and the worker process itself (Python
    with torch and the decoders imported, about 0.6 GB)."""
    enc = cfg.encode
    area = max(w * h for w, h in enc.bucket_list())
    return int(enc.samples_per_unit * 2 * enc.num_frames * area * 3 * 1.5) + (768 << 20)


def phases(ctx: Context) -> list[Phase]:
    """Decode tasks (a unit's batches one at a time) feeding encoder actors (a batch per call),
    and one actor writing each unit's part once its batches are back."""
    cfg = ctx.cfg
    device, gpus = placement(cfg)
    enc_json = cfg.encode.model_copy(update={"device": device}).model_dump_json()
    pre_json = cfg.pretext.model_dump_json()
    backend = cfg.media.decoder
    # The decode tasks reserve the memory of the frames they hold, which also keeps them a Ray
    # Data stage of their own (decoding inside the actor would leave the GPU waiting).
    return [Phase("decode", _decode_fn(enc_json, pre_json, cfg.run.seed, backend, dataset_roots(cfg)),
                  Resources(cpus=1, memory=payload_bytes(cfg), replicas=cfg.encode.decode_workers), kind=FLAT_MAP),
            Phase("encode", EncodeActor, Resources(cpus=cfg.encode.actor_cpus, gpus=gpus,
                                                   replicas=cfg.encode.encoder_actors),
                  args=(enc_json, pre_json, cfg.run.seed), kind=BATCHES, batch_size=1),
            # No CPU reserved: it only joins a unit's encoded batches and writes them.
            Phase("write", write_unit, Resources(cpus=0), kind=REGROUP)]


# ---------------------------------------------------------------- the stage
def fingerprint(cfg, workdir: Path) -> dict:
    """What the encoded bytes depend on. Left out: how the work is spread (batch size, workers,
    actors, GPUs per actor, VAE slicing), which changes no value beyond float rounding."""
    import torch

    from stages.encode.encoders import dir_identity, model_dirs, resolve_dtype

    device, _ = placement(cfg)
    return {
        "encode": cfg.encode.model_dump(mode="json", exclude={
            "device", "batch_size", "samples_per_unit", "decode_workers", "encoder_actors", "num_gpus",
            "actor_cpus", "vae_slicing"}),
        "compute": {"device": device, "dtype": str(resolve_dtype(cfg.encode.dtype, torch.device(device)))},
        "pretext": cfg.pretext.model_dump(mode="json"),
        "seed": cfg.run.seed,
        "decoder": cfg.media.decoder,
        "models": {k: dir_identity(v) for k, v in sorted(model_dirs(cfg.encode).items())},
        # Not the selection (a changed one encodes only what it adds, see the module docstring)
        # nor samples_per_unit (parts are named by their samples, not by their place in a plan).
    }




EMPTY_PART = "part-empty.parquet"


def ensure_table(workdir: Path) -> None:
    """An empty selection still leaves an ``encoded`` table (one empty part) for the views and the
    shard stage; the empty part goes once real parts exist."""
    empty = table_dir(workdir, TABLE) / EMPTY_PART
    others = [p for p in list_parts(workdir, TABLE) if p != empty]
    if not others and not empty.exists():
        write_part(empty, ENCODED.empty_table())
    elif others and empty.exists():
        empty.unlink()


def summary(workdir: Path) -> list[list]:
    """Per dataset: kept samples, their keys written, keys with tensors, error keys, and keys of
    samples no longer kept (on disk, not sharded)."""
    con = catalog.connect(workdir)
    if "encoded" not in catalog.views(con):
        enc = "(SELECT NULL::VARCHAR AS sample_id, NULL::VARCHAR AS dataset, NULL::VARCHAR AS error WHERE false)"
    else:
        enc = "encoded"
    rows = con.execute(
        f"WITH k AS (SELECT s.dataset, count(*) AS selected FROM selected sel JOIN samples s USING (sample_id) "
        f"WHERE sel.kept GROUP BY 1), "
        f"e AS (SELECT e.dataset, count(*) FILTER (kept) AS keys, count(*) FILTER (kept AND error IS NULL) AS ok, "
        f"count(*) FILTER (kept AND error IS NOT NULL) AS failed, count(*) FILTER (NOT kept) AS stale "
        f"FROM (SELECT e.dataset, e.error, coalesce(sel.kept, false) AS kept FROM {enc} e "
        f"LEFT JOIN selected sel USING (sample_id)) e GROUP BY 1) "
        f"SELECT dataset, coalesce(k.selected, 0), coalesce(e.keys, 0), coalesce(e.ok, 0), coalesce(e.failed, 0), "
        f"coalesce(e.stale, 0) FROM k FULL JOIN e USING (dataset) ORDER BY 1").fetchall()
    return [list(r) for r in rows]


def check(ctx: Context) -> None:
    from stages.encode.encoders import model_dirs

    model_dirs(ctx.cfg.encode)  # a missing model directory fails before any work
    upgrade_record(ctx.workdir)


def describe(ctx: Context, units: list[Unit], pending: list[Unit]) -> str:
    kept, done = counts(ctx.workdir)
    return (f"encode: {kept} kept samples, {done} already encoded, {kept - done} to encode in "
            f"{len(units)} units of up to {unit_rows(ctx.cfg.encode.samples_per_unit, kept)} "
            f"(batches of {ctx.cfg.encode.samples_per_unit})"
            + (f" ({len(units) - len(pending)} deferred by --limit)" if len(pending) < len(units) else ""))


def finish(ctx: Context, units: list[Unit]) -> None:
    ensure_table(ctx.workdir)
    kept, _ = counts(ctx.workdir)
    if not kept:
        console.print("encode: the selection is empty (no sample kept by the filter); the encoded table is "
                      "empty and so will the shards be")
    stale = sum(r[5] for r in summary(ctx.workdir))
    if stale:
        console.print(f"encode: {stale} keys of samples no longer kept stay on disk and are left out of the "
                      f"shards; `curate prune --workdir {ctx.workdir}` removes them")


STAGE = Stage(
    name="encode", reads=("selected",), writes=(TABLE,), section="encode", needs_media=True,
    # One row per shard key (sample x variant); the view leaves out the tensor blobs.
    tables=(Table(TABLE, "encode", ENCODED, view_exclude="tensors"),),
    facts=StageFacts(device="gpu", reaches="kept", counts=(TABLE, "count(*)", "count(DISTINCT sample_id)"),
                     status=encode_status),
    check=check,
    fingerprint=lambda ctx: {"all": fingerprint(ctx.cfg, ctx.workdir)},
    plan=lambda ctx: write_encode_plan(ctx.cfg, ctx.workdir),  # only the kept samples not encoded yet
    phases=phases, describe=describe, finish=finish,
    summary=lambda ctx: (["dataset", "selected", "keys", "encoded", "failed", "not kept"], summary(ctx.workdir)),
)
