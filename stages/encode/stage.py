"""`curate run --stage encode`: the Ray adapter around ``stages.encode.decode`` and ``core``.

1. Plan (driver, DuckDB): the kept samples joined with their samples and probes rows, per dataset,
   ordered by the bucket and frame count their probe predicts, then by id, written to
   ``state/encoded/plan/dataset=<ds>/plan-NNNNN.parquet`` with one row group per unit
   (``encode.samples_per_unit`` samples). Ordering by bucket fills the encoder's batches with
   clips of one shape. The plan is a pure function of the selection and the config.
2. Decode (Ray Data ``map``, CPU tasks, ``encode.decode_workers`` at once): read a unit's row group,
   decode, cut and resize its samples; the frames travel on as one safetensors buffer + JSON.
3. Encode (Ray Data ``map_batches`` over a callable class: ``encode.encoder_actors`` actors, each
   loading the models once, ``encode.num_gpus`` GPUs each, fractions allowed): encode the unit and
   write ``tables/encoded/dataset=<ds>/part-<unit>.parquet`` atomically; return a summary row.
   Decoding runs ahead in its own tasks, so the GPU does not wait on it.

Resume: a unit whose part exists is skipped. The fingerprint (encode and pretext settings, run
seed, model directories, decoder, and a digest of the selection) refuses to mix runs.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from manifests import catalog
from manifests.io import dataset_dir, dataset_of, list_parts, table_dir, write_part
from pipeline.config import Config, ConfigError
from pipeline.progress import Progress, console
from pipeline.runner import StageReport, _dataset_roots, _whole_units, begin_stage, state_dir

TABLE = "encoded"
UNITS_PER_PLAN_FILE = 1024  # a plan file's footer stays small; units read one row group each
PART_ROW_GROUP = 4  # rows per row group of an encoded part: the shard writer reads blobs by group

PLAN_COLUMNS = (
    "s.sample_id, s.dataset, s.modality, s.task, s.source_uri, s.target_uri, s.instruction, s.caption, "
    "s.clip_start_s, s.clip_end_s, p.source_fps, p.source_frames, p.target_fps, p.target_frames, "
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


def plan_sql(cfg: Config, dataset: str) -> str:
    enc = cfg.encode
    fit = (f"floor((least((p.target_frames - 1) / p.target_fps, coalesce(s.clip_end_s, 1e18)) "
           f"- greatest(0, coalesce(s.clip_start_s, 0))) * {float(enc.fps)!r} + 1e-9) + 1")
    frames = f"least({enc.num_frames}, 4 * floor(({fit} - 1) / 4) + 1)"
    return (
        f"SELECT * EXCLUDE (la, plan_frames) FROM ("
        f"SELECT {PLAN_COLUMNS}, ln(p.target_width / p.target_height) AS la, "
        f"CASE WHEN s.modality = 'image' THEN 1 ELSE coalesce({frames}, 0) END AS plan_frames "
        f"FROM selected sel JOIN samples s USING (sample_id) LEFT JOIN probes p USING (sample_id) "
        f"WHERE sel.kept AND s.dataset = '{dataset}') "
        f"ORDER BY {_bucket_case(enc.bucket_list())}, plan_frames DESC, sample_id"
    )


def plan_dir(workdir: Path) -> Path:
    return state_dir(workdir, TABLE) / "plan"


def selection_digest(con) -> dict:
    """Count and an order-free digest of the kept sample ids (a changed selection changes it)."""
    n, digest = con.execute("SELECT count(*), bit_xor(md5_number(sample_id)) FROM selected WHERE kept").fetchone()
    return {"kept": int(n), "digest": str(digest)}


def write_plan(cfg: Config, workdir: Path) -> list[dict]:
    """Write the plan files (replacing old ones) and return the units, in plan order."""
    import shutil

    con = catalog.connect(workdir)
    datasets = [r[0] for r in con.execute(
        "SELECT DISTINCT s.dataset FROM selected sel JOIN samples s USING (sample_id) WHERE sel.kept "
        "ORDER BY 1").fetchall()]
    root = plan_dir(workdir)
    shutil.rmtree(root, ignore_errors=True)
    per = cfg.encode.samples_per_unit
    units = []
    for ds in datasets:
        reader = con.sql(plan_sql(cfg, ds)).to_arrow_reader(per * 256)
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


def _units_of(workdir: Path, dataset: str) -> list[dict]:
    units, n = [], 0
    for path in sorted((plan_dir(workdir) / f"dataset={dataset}").glob("plan-*.parquet")):
        meta = pq.ParquetFile(path).metadata
        for rg in range(meta.num_row_groups):
            out = dataset_dir(workdir, TABLE, dataset) / f"part-{n:08d}.parquet"
            units.append({"dataset": dataset, "unit": f"{dataset}/{n:08d}", "plan": str(path), "row_group": rg,
                          "length": meta.row_group(rg).num_rows, "out": str(out)})
            n += 1
    return units


# ---------------------------------------------------------------- Ray functions
def _configs(enc_json: str, pre_json: str):
    from pipeline.config import EncodeConfig, PretextConfig

    return EncodeConfig.model_validate_json(enc_json), PretextConfig.model_validate_json(pre_json)


def _decode_fn(enc_json: str, pre_json: str, seed: int, backend: str, roots: dict[str, list[str]]):
    def run(item: dict[str, Any]) -> dict[str, Any]:
        from stages.encode.decode import decode_sample, pack_decoded

        enc, pre = _configs(enc_json, pre_json)
        rows = pq.ParquetFile(item["plan"]).read_row_group(item["row_group"]).to_pylist()
        decoded = [decode_sample(r, enc, pre, seed, backend, roots.get(r["dataset"], [])) for r in rows]
        meta, frames = pack_decoded(decoded)
        return {**item, "meta": meta, "payload": frames}

    return run


class EncodeActor:
    """Holds the encoders (loaded once); encodes and writes one unit per call."""

    def __init__(self, enc_json: str, pre_json: str, seed: int):
        from stages.encode.encoders import Encoders

        self.enc, self.pre = _configs(enc_json, pre_json)
        self.seed = seed
        self.encoders = Encoders(self.enc)

    def __call__(self, batch: dict) -> dict:
        from stages.encode.core import encode_table
        from stages.encode.decode import unpack_decoded

        out = {"dataset": [], "unit": [], "rows": [], "failed": []}
        for i in range(len(batch["unit"])):
            decoded = unpack_decoded(str(batch["meta"][i]), batch["payload"][i])
            table = encode_table(decoded, self.encoders, self.enc, self.pre, self.seed)
            write_part(Path(str(batch["out"][i])), table, row_group_size=PART_ROW_GROUP)
            out["dataset"].append(str(batch["dataset"][i]))
            out["unit"].append(str(batch["unit"][i]))
            out["rows"].append(table.num_rows)
            out["failed"].append(table.num_rows - table["error"].null_count)
        return out


def placement(cfg: Config) -> tuple[str, float]:
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


def payload_bytes(cfg: Config) -> int:
    """About the most memory one decode task takes: two clips (target and source) per sample at
    the largest bucket, the native frames being resized, and the worker process itself (Python
    with torch and the decoders imported, about 0.6 GB)."""
    enc = cfg.encode
    area = max(w * h for w, h in enc.bucket_list())
    return int(enc.samples_per_unit * 2 * enc.num_frames * area * 3 * 1.5) + (768 << 20)


def run_units(cfg: Config, units: list[dict], progress: Progress):
    """Decode tasks feeding encoder actors over Ray Data; yields each unit's summary row."""
    import ray

    if not units:
        return
    device, gpus = placement(cfg)
    enc_json = cfg.encode.model_copy(update={"device": device}).model_dump_json()
    pre_json = cfg.pretext.model_dump_json()
    backend = "pyav" if cfg.probe.decode_check == "pyav" else "decord"
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    # The decode tasks reserve the memory of the frames they hold. Besides scheduling, that keeps
    # them a stage of their own: Ray Data fuses a map into the next one when their resource
    # requests are equal, and decoding inside the actor would leave the GPU waiting.
    ds = ds.map(_decode_fn(enc_json, pre_json, cfg.run.seed, backend, _dataset_roots(cfg)), num_cpus=1,
                memory=payload_bytes(cfg), compute=ray.data.TaskPoolStrategy(size=cfg.encode.decode_workers))
    ds = ds.map_batches(EncodeActor, fn_constructor_args=(enc_json, pre_json, cfg.run.seed), batch_size=1,
                        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=cfg.encode.encoder_actors),
                        num_gpus=gpus or None, num_cpus=cfg.encode.actor_cpus)
    for row in ds.iter_rows():
        progress.advance(row)
        yield row


# ---------------------------------------------------------------- the stage
def fingerprint(cfg: Config, workdir: Path) -> dict:
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
        "samples_per_unit": cfg.encode.samples_per_unit,  # names which samples each part holds
        "pretext": cfg.pretext.model_dump(mode="json"),
        "seed": cfg.run.seed,
        "decoder": cfg.probe.decode_check,
        "models": {k: dir_identity(v) for k, v in sorted(model_dirs(cfg.encode).items())},
        "selection": selection_digest(catalog.connect(workdir)),
    }


def run_encode(cfg: Config, workdir: Path, limit: int | None, overwrite: bool) -> StageReport:
    from stages.encode.encoders import model_dirs

    workdir = Path(workdir)
    model_dirs(cfg.encode)  # a missing model directory fails before any work
    if not list_parts(workdir, "selected"):
        raise ConfigError(f"{workdir}: no selected yet; run `curate run --stage filter` first")
    begin_stage(workdir, TABLE, "selected", "filter", fingerprint(cfg, workdir), overwrite)
    units = write_plan(cfg, workdir)
    pending = [u for u in units if not Path(u["out"]).exists()]
    if limit is not None:
        pending = _whole_units(pending, limit)
    console.print(f"encode: {len(units)} units of up to {cfg.encode.samples_per_unit} samples, "
                  f"{len(units) - len(pending)} already done or deferred")
    t0 = time.time()
    with Progress("encode", len(pending)) as progress:
        for _ in run_units(cfg, pending, progress):
            pass
    return StageReport("encode", len(units), len(pending), time.time() - t0, summary(workdir),
                       ["dataset", "selected", "keys", "encoded", "failed"])


def summary(workdir: Path) -> list[list]:
    """Per dataset: kept samples, keys written, keys with tensors, error keys."""
    con = catalog.connect(workdir)
    if "encoded" not in catalog.views(con):
        enc = "(SELECT NULL::VARCHAR AS dataset, NULL::VARCHAR AS error WHERE false)"
    else:
        enc = "encoded"
    rows = con.execute(
        f"WITH k AS (SELECT s.dataset, count(*) AS selected FROM selected sel JOIN samples s USING (sample_id) "
        f"WHERE sel.kept GROUP BY 1), "
        f"e AS (SELECT dataset, count(*) AS keys, count(*) FILTER (error IS NULL) AS ok, "
        f"count(*) FILTER (error IS NOT NULL) AS failed FROM {enc} GROUP BY 1) "
        f"SELECT k.dataset, k.selected, coalesce(e.keys, 0), coalesce(e.ok, 0), coalesce(e.failed, 0) "
        f"FROM k LEFT JOIN e USING (dataset) ORDER BY 1").fetchall()
    return [list(r) for r in rows]


def read_unit_rows(workdir: Path, dataset: str | None = None) -> pa.Table | None:
    """All encoded rows (tensors included) — for tests and small runs only."""
    parts = [p for p in list_parts(workdir, TABLE) if dataset is None or dataset_of(p) == dataset]
    if not parts:
        return None
    return pa.concat_tables([pq.read_table(p) for p in parts])
