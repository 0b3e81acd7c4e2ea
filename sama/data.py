"""The shard loader: batches of one latent shape from the curation shards, exactly resumable.

Only files are read, never curation code: the shard index (``<workdir>/tables/shards/*.parquet``)
and the tars under ``<workdir>/shards/`` in the shard contract's layout (``K.json`` and one
single-tensor safetensors file per member). A key without a source (``none``: text-to-video) has a
zero-size ``source`` member and ``"has_source": false`` in its JSON; older shards left the member
out, which reads the same.

How a batch is made, in each DataLoader worker of each rank:

- The worker plays *logical stream* ``l = rank + world * worker`` of ``L = world * num_workers``.
  For every data stream (``data.streams``) it reads the shards ``epoch_order[l::L]``: exactly what
  webdataset's ``split_by_node`` followed by ``split_by_worker`` select, written out so that a
  resumed run can give a physical worker another worker's place (see ``LoaderPosition``).
- ``epoch_order`` is a permutation of the stream's shards seeded by (seed, stream, epoch),
  repeated when there are fewer shards than logical streams so that every one gets some.
- The shards are read ``data.chunk_shards`` at a time through a webdataset pipeline: tar ->
  samples (members of unwanted variants skipped by name), a seeded shuffle buffer that is drained
  at the chunk's end. Samples are grouped by (latent shape, has source); a group that reaches the
  modality's batch size is a batch; at a chunk's end what is left in each group goes out as a
  short batch (nothing is dropped).
- Which stream the next batch comes from is a draw over the stream weights seeded by (seed, l,
  batch index), so the mix does not depend on timing.

Tensors are decoded only for batches that are handed out: a resumed run replays the current chunk
of each stream (tar bytes, JSON only) up to its position, which bounds the cost of a resume to
``chunk_shards`` shards per stream.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import safetensors.torch
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from sama.batch_memory import PooledBatch, one_storage
from sama.config import ConfigError, DataConfig

# Salts keep the seeded draws of different purposes apart.
_MIX, _SHUFFLE, _ORDER, _NOISE = 1, 2, 3, 4

SHARD_INDEX = Path("tables") / "shards"


def stable_hash(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest()[:15], 16)


def _seed(*parts: int) -> int:
    """A 63-bit integer seed from a tuple of integers (numpy's SeedSequence mixing)."""
    return int(np.random.default_rng(list(parts)).integers(2**63 - 1))


def batch_noise_seed(seed: int, logical: int, index: int) -> int:
    """The seed of the flow-matching noise for one batch: a function of the batch alone, so the
    same batch gets the same noise on any rank, after any resume, under any world size."""
    return _seed(seed, logical, index, _NOISE)


# ---------------------------------------------------------------- the shard index
@dataclass(frozen=True)
class Shard:
    path: str  # absolute
    purpose: str
    modality: str
    bucket: str
    samples: int
    bytes: int


def read_shard_index(workdir: str | Path) -> list[Shard]:
    """Every shard listed in ``<workdir>/tables/shards/`` (all finished parts)."""
    workdir = Path(workdir).expanduser().resolve()
    index_dir = workdir / SHARD_INDEX
    parts = sorted(p for p in index_dir.glob("*.parquet") if not p.name.startswith("."))
    if not parts:
        raise FileNotFoundError(f"data.workdir: {index_dir} holds no shard index; run "
                                f"`curate run --stage shard` on that workdir first")
    cols = ["shard", "purpose", "modality", "bucket", "samples", "bytes"]
    table = pa.concat_tables([pq.read_table(p, columns=cols) for p in parts])
    return [Shard(str(workdir / r["shard"]), r["purpose"], r["modality"], r["bucket"], int(r["samples"]),
                  int(r["bytes"])) for r in table.to_pylist()]


def stream_shards(index: list[Shard], purpose: str, modality: str) -> list[str]:
    return sorted(s.path for s in index if s.purpose == purpose and s.modality == modality)


def epoch_order(shards: list[str], seed: int, stream: str, epoch: int, num_logical: int) -> list[str]:
    """The stream's shards for one epoch, shuffled; repeated (each copy shuffled on its own) until
    every logical stream gets at least one."""
    copies = max(1, math.ceil(num_logical / len(shards)))
    order: list[str] = []
    for c in range(copies):
        rng = np.random.default_rng([seed, stable_hash(stream), epoch, c, _ORDER])
        order += [shards[i] for i in rng.permutation(len(shards))]
    return order


# ---------------------------------------------------------------- samples and batches
def key_variant(member_name: str) -> str:
    """``koala-0123456789abcdef-cube.target.safetensors`` -> ``cube`` (the key's last part)."""
    return member_name.split(".", 1)[0].rsplit("-", 1)[-1]


class _MemberFilter:
    """select_files for webdataset: keep the members of wanted variants (and semantic or not).
    Unselected members are skipped by the tar reader without being handed over as bytes."""

    def __init__(self, variants: list[str], semantic: bool):
        self.variants = frozenset(variants)
        self.semantic = semantic

    def __call__(self, name: str) -> bool:
        if key_variant(name) not in self.variants:
            return False
        return self.semantic or not name.endswith(".semantic.safetensors")


def chunk_samples(urls: list[str], variants: list[str], semantic: bool, shuffle_buffer: int,
                  shuffle_seed: int) -> wds.DataPipeline:
    """Raw samples (member bytes, JSON still bytes) of some shards, through a seeded shuffle buffer
    that is filled before the first sample leaves and drained at the end."""
    return wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.tarfile_to_samples(select_files=_MemberFilter(variants, semantic)),
        wds.shuffle(shuffle_buffer, initial=shuffle_buffer, rng=random.Random(shuffle_seed)),
    )


def has_source(meta: dict) -> bool:
    """Whether a key's source is a real one (not the zero-size member of a text-to-video key)."""
    if "has_source" in meta:
        return bool(meta["has_source"])
    return "source.safetensors" in meta["members"]  # shards written before the empty member


def group_batches(samples, batch_size: int) -> Iterator[list[dict]]:
    """Batches of samples sharing (latent shape, has source); leftovers go out at the end."""
    groups: dict[tuple, list[dict]] = {}
    for sample in samples:
        if "json" not in sample:
            raise ValueError(f"{sample.get('__url__')}: key {sample['__key__']} has no .json member")
        meta = json.loads(sample["json"])
        sample["json"] = meta
        group = (tuple(meta["latent_shape"]), has_source(meta))
        members = groups.setdefault(group, [])
        members.append(sample)
        if len(members) == batch_size:
            yield members
            groups[group] = []
    for members in groups.values():
        if members:
            yield members


_DECODER = wds.Decoder([wds.handle_extension("safetensors", safetensors.torch.load)], partial=True)


def _tensor(sample: dict, member: str) -> torch.Tensor | None:
    meta = sample["json"]
    spec = meta["members"].get(member)
    if spec is None:
        return None
    if member not in sample:
        raise ValueError(f"{sample['__url__']}: key {sample['__key__']} lists {member} but the tar has "
                         f"no such member")
    tensor = sample[member][spec["tensor"]]
    if list(tensor.shape) != list(spec["shape"]):
        raise ValueError(f"{sample['__url__']}: {sample['__key__']}.{member} has shape "
                         f"{list(tensor.shape)}, its JSON says {spec['shape']}")
    return tensor


def collate(raw: list[dict], semantic: bool, pool_slots: int = 0) -> dict:
    """Decode a raw batch into the trainer's batch dict (float32 tensors, text padded + mask).

    The tensors share one storage (``one_storage``), a pooled shared-memory segment when
    ``pool_slots`` > 0 (in a DataLoader worker); the values are those of ``torch.stack(...).float()``."""
    samples = [_DECODER(s) for s in raw]
    targets = [_tensor(s, "target.safetensors") for s in samples]
    # A batch shares has_source (group_batches); without one the zero-size member is not used.
    sources = [_tensor(s, "source.safetensors") for s in samples] if has_source(samples[0]["json"]) else None
    tokens = None
    if semantic:
        tokens = [_tensor(s, "semantic.safetensors") for s in samples]
        if any(t is None for t in tokens):
            raise ValueError(f"{samples[0]['__url__']}: samples without semantic tokens; run encode "
                             "with SigLIP, or set data.semantic: false")
        tokens = [t.reshape(-1, t.shape[-1]) for t in tokens]  # [N*(64+G), D]
    texts = [_tensor(s, "text.safetensors") for s in samples]
    if any(t is None for t in texts):
        raise ValueError(f"{samples[0]['__url__']}: samples without a text embedding; run encode with "
                         "encode.text: true")
    for name, group in (("target", targets), ("source", sources), ("semantic", tokens)):
        if group is not None and any(t.shape != group[0].shape for t in group):
            raise RuntimeError(f"stack expects each tensor to be equal size ({name}): "
                               f"{[list(t.shape) for t in group]}")
    n, length = len(samples), max(1, max(t.shape[0] for t in texts))
    shapes = {"target": ((n, *targets[0].shape), torch.float32),
              "text": ((n, length, texts[0].shape[-1]), torch.float32),
              "text_mask": ((n, length), torch.bool)}
    if sources is not None:
        shapes["source"] = ((n, *sources[0].shape), torch.float32)
    if tokens is not None:
        shapes["semantic"] = ((n, *tokens[0].shape), torch.float32)
    out = one_storage(shapes, pool_slots)
    for name, group in (("target", targets), ("source", sources), ("semantic", tokens)):
        for i, t in enumerate(group or ()):
            out[name][i].copy_(t)  # the cast .float() does
    out["text"].zero_()  # the padding (the rest is written in full above)
    out["text_mask"].zero_()
    for i, t in enumerate(texts):
        out["text"][i, : t.shape[0]].copy_(t)
        out["text_mask"][i, : t.shape[0]] = True
    return {"target": out["target"], "source": out.get("source"), "semantic": out.get("semantic"),
            "text": out["text"], "text_mask": out["text_mask"],
            "keys": [s["__key__"] for s in samples], "tasks": [s["json"]["task"] for s in samples]}


# ---------------------------------------------------------------- the dataset
def loader_prefetch(cfg: DataConfig) -> int:
    """The DataLoader's prefetch_factor, in transfers of ``batches_per_transfer`` batches: at least
    two, so that a worker never waits for the trainer's process to ask for its next transfer."""
    return max(2, -(-cfg.prefetch_factor // cfg.batches_per_transfer))


class ShardBatches(IterableDataset):
    """Endless batches for one rank; use with ``DataLoader(batch_size=None,
    prefetch_factor=loader_prefetch(cfg))`` and ``sama.batch_memory.handed_over`` over its iterator
    (a worker's item is a list of ``data.batches_per_transfer`` batches when that is above 1).

    Each batch carries ``meta``: stream, logical stream, worker slot, batch index in its logical
    stream, and the logical stream's position after it (what ``LoaderPosition`` keeps)."""

    def __init__(self, cfg: DataConfig, seed: int, rank: int = 0, world: int = 1,
                 position: dict | None = None):
        self.cfg = cfg
        self.seed = seed
        self.rank, self.world = rank, world
        self.num_workers = max(1, cfg.num_workers)
        self.num_logical = self.world * self.num_workers
        index = read_shard_index(cfg.workdir)
        self.streams = {n: s for n, s in cfg.streams.items() if s.weight > 0}
        self.shards: dict[str, list[str]] = {}
        for name, spec in self.streams.items():
            shards = stream_shards(index, spec.purpose, spec.modality)
            if not shards:
                raise ConfigError(f"data.streams.{name}: no shards with purpose {spec.purpose} and modality "
                                 f"{spec.modality} in {Path(cfg.workdir) / SHARD_INDEX}; shard that data, "
                                 f"or set data.streams.{name}.weight: 0")
            missing = [p for p in shards if not Path(p).is_file()]
            if missing:
                raise FileNotFoundError(f"data.workdir: {len(missing)} indexed shards are missing, e.g. "
                                        f"{missing[0]}; run `curate verify`")
            self.shards[name] = shards
        self.names = sorted(self.streams)
        weights = np.array([self.streams[n].weight for n in self.names], dtype=np.float64)
        self.probs = weights / weights.sum()
        self.start: dict[int, dict] = {}
        self.worker_offset = 0
        if position is not None:
            self.resume(position)

    def describe(self) -> dict[str, dict]:
        return {n: {"purpose": s.purpose, "modality": s.modality, "variants": list(s.variants),
                    "weight": s.weight, "shards": len(self.shards[n])} for n, s in self.streams.items()}

    def resume(self, position: dict) -> None:
        """Continue from ``LoaderPosition.state_dict()`` of the same rank."""
        expect = {"rank": self.rank, "world": self.world, "num_workers": self.num_workers}
        got = {k: position.get(k) for k in expect}
        if got != expect:
            raise ConfigError(f"checkpoint data position was saved with {got}, this run has {expect}; an exact "
                             "resume needs the same world size and data.num_workers")
        self.start = {int(k): v for k, v in position["states"].items()}
        self.worker_offset = position["next_worker"]

    # -- iteration
    def __iter__(self):
        info = get_worker_info()
        if info is not None and info.num_workers != self.num_workers:
            raise RuntimeError(f"DataLoader has {info.num_workers} workers, the dataset was built for "
                               f"{self.num_workers}")
        physical = info.id if info is not None else 0
        slot = (physical + self.worker_offset) % self.num_workers
        logical = self.rank + self.world * slot
        batches = self._logical_batches(logical, slot)
        k = self.cfg.batches_per_transfer
        if info is None or k == 1:
            return batches
        return (list(itertools.islice(batches, k)) for _ in itertools.count())  # ``handed_over`` deals them

    def _logical_batches(self, logical: int, slot: int) -> Iterator[dict]:
        state = copy.deepcopy(self.start.get(logical)) or {"count": 0, "streams": {}}
        iters: dict[str, Iterator] = {}
        # In a worker, for each batch of a transfer: the transfers queued for the trainer, the one
        # it deals batches from, the one being pinned or moved to the GPU and the one being made.
        k = self.cfg.batches_per_transfer
        pool_slots = k * (loader_prefetch(self.cfg) + 3) if get_worker_info() is not None else 0
        while True:
            rng = np.random.default_rng([self.seed, logical, state["count"], _MIX])
            name = self.names[int(rng.choice(len(self.names), p=self.probs))]
            if name not in iters:
                iters[name] = self._stream_batches(name, logical, state["streams"].get(name))
            raw, pos = next(iters[name])
            state["streams"][name] = pos
            index = state["count"]
            state["count"] += 1
            batch = collate(raw, self.cfg.semantic, pool_slots)
            batch["meta"] = {"stream": name, "logical": logical, "slot": slot, "index": index,
                             "state": copy.deepcopy(state)}
            yield PooledBatch(batch) if pool_slots else batch

    def _stream_batches(self, name: str, logical: int, pos: list[int] | None) -> Iterator[tuple[list, list]]:
        spec = self.streams[name]
        batch_size = self.cfg.batch_size[spec.modality]
        buffer = self.cfg.shuffle_buffer[spec.modality]
        epoch, chunk, skip = pos or (0, 0, 0)
        empty_epochs = 0
        while True:
            mine = epoch_order(self.shards[name], self.seed, name, epoch, self.num_logical)[logical::self.num_logical]
            chunks = [mine[i:i + self.cfg.chunk_shards] for i in range(0, len(mine), self.cfg.chunk_shards)]
            produced = False
            for c in range(chunk, len(chunks)):
                seed = _seed(self.seed, stable_hash(name), epoch, logical, c, _SHUFFLE)
                samples = chunk_samples(chunks[c], spec.variants, self.cfg.semantic, buffer, seed)
                for b, raw in enumerate(group_batches(samples, batch_size)):
                    produced = True
                    if b >= skip:
                        yield raw, [epoch, c, b + 1]
                skip = 0
            # Few small shards: this worker's share of an epoch may hold none of the stream's
            # variants; later epochs give it other shards. Many empty epochs mean none exist.
            empty_epochs = 0 if produced or chunk else empty_epochs + 1
            if empty_epochs >= max(8, 2 * self.num_logical):
                raise ConfigError(f"data.streams.{name}: logical stream {logical} read {empty_epochs} epochs "
                                  f"without a sample of variants {spec.variants}; check the variants, or "
                                  f"use fewer loader workers/ranks")
            epoch, chunk = epoch + 1, 0


class LoaderPosition:
    """The trainer's record of where each logical stream of this rank is (after the batches it
    actually consumed, not those prefetched), and which worker slot the DataLoader serves next.

    A DataLoader over an endless IterableDataset serves its workers in strict rotation starting
    at worker 0; a resumed run therefore rotates the slots (``worker_offset``) so that worker 0
    plays the slot that was next."""

    def __init__(self, rank: int, world: int, num_workers: int, start: dict | None = None):
        self.rank, self.world, self.num_workers = rank, world, max(1, num_workers)
        self.states: dict[int, dict] = {}
        self.next_worker = 0
        if start is not None:
            self.states = {int(k): v for k, v in start["states"].items()}
            self.next_worker = start["next_worker"]

    def observe(self, meta: dict) -> None:
        self.states[meta["logical"]] = meta["state"]
        self.next_worker = (meta["slot"] + 1) % self.num_workers

    def state_dict(self) -> dict:
        return {"rank": self.rank, "world": self.world, "num_workers": self.num_workers,
                "next_worker": self.next_worker, "states": {str(k): v for k, v in self.states.items()}}
