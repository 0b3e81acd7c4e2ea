"""A batch's tensors in one storage, and how a DataLoader worker hands it to the trainer.

One storage per batch means one shared-memory segment per batch (torch gives every tensor's storage
its own); a worker takes it from a small pool of segments it reuses once the trainer has let go of
the batch, because a fresh segment's first touch costs more than decoding the batch."""
from __future__ import annotations

import itertools
import math
import os
from typing import Iterator

import numpy as np
import torch


def layout(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> tuple[dict[str, tuple[int, int]], int]:
    """Byte offset and size of each tensor in one flat storage, and the storage's size."""
    sizes = {name: math.prod(shape) * torch.empty((), dtype=dtype).element_size()
             for name, (shape, dtype) in shapes.items()}
    offsets, total = {}, 0
    for name, size in sizes.items():
        offsets[name] = (total, size)
        total += -(-size // 16) * 16  # every view starts aligned for its dtype
    return offsets, total


def views(flat: torch.Tensor, shapes: dict, offsets: dict) -> dict[str, torch.Tensor]:
    return {name: flat[offsets[name][0]:offsets[name][0] + offsets[name][1]].view(dtype).view(shape)
            for name, (shape, dtype) in shapes.items()}


HEADER = 16  # a pooled segment's first bytes: byte 0 is 1 while the trainer holds its batch


class Segment:
    """One shared-memory segment of a worker's pool: its storage, its busy byte, and its name for
    the trainer's process (``serial``; None for a one-off segment, which is never cached)."""

    def __init__(self, nbytes: int, serial: int | None, replaces: int | None = None):
        self.storage = torch.UntypedStorage._new_shared(nbytes)
        self.busy = torch.empty(0, dtype=torch.uint8).set_(self.storage, 0, (1,)).numpy()
        self.serial, self.replaces = serial, replaces
        self.sent = False  # whether a batch has carried the storage itself to the trainer


class SlotPool:
    """Shared-memory segments that a DataLoader worker writes its batches into, reused once the
    trainer has let go of the batch.

    A fresh shared-memory segment costs the worker far more than the decode it holds: the kernel
    zeroes and maps it page by page on first touch (a 34 MB recipe video batch: ~48 ms to allocate
    and fill, against ~6 ms in reused private memory). So each worker keeps a few segments, and the
    first byte of each says whether the trainer still holds the batch in it: the worker sets it
    when the batch leaves, the trainer's process clears it when the batch's storage is freed there
    (``_Lease.__del__``). A batch that finds every segment in use (the trainer keeps many batches
    alive) gets a one-off segment, as before, so nothing waits. ``slots`` bounds the memory: the
    prefetched batches, the one the trainer holds and one in the making."""

    def __init__(self, slots: int):
        self.slots = slots
        self.segments: list[Segment] = []
        self.by_ptr: dict[int, Segment] = {}
        self.serials = itertools.count()

    def take(self, nbytes: int) -> torch.UntypedStorage:
        need = HEADER + nbytes
        free = [i for i, s in enumerate(self.segments) if not s.busy[0]]
        fits = [i for i in free if self.segments[i].storage.nbytes() >= need]
        if fits:
            seg = self.segments[min(fits, key=lambda i: self.segments[i].storage.nbytes())]
        elif len(self.segments) < self.slots or free:
            # A quarter to spare: the text's padded length varies, and a segment a few bytes short
            # of the next batch would be replaced again and again.
            size = -(-(need + need // 4) // 4096) * 4096
            if len(self.segments) < self.slots:
                seg = Segment(size, next(self.serials))
                self.segments.append(seg)
            else:  # the smallest free segment grows (its old one is nobody's now)
                slot = min(free, key=lambda i: self.segments[i].storage.nbytes())
                old = self.segments[slot]
                del self.by_ptr[old.storage.data_ptr()]
                seg = self.segments[slot] = Segment(size, next(self.serials), replaces=old.serial)
            self.by_ptr[seg.storage.data_ptr()] = seg
        else:
            return Segment(need, None).storage  # one-off: every segment is held
        seg.busy[0] = 1
        return seg.storage


class _Lease(np.ndarray):
    """The trainer's process's view of a worker's segment: the batch's tensors are made from it
    and keep it alive; when the last of them goes, byte 0 tells the worker the segment is free."""

    def __del__(self):
        if getattr(self, "pooled", False):
            np.ndarray.__setitem__(self, 0, 0)


class PooledBatch:
    """A worker's batch on its way to the trainer: pickled, its tensors cross as their one
    segment's place in it; unpickled, it is the plain batch dict.

    The first batch written in a pool's segment carries the segment itself (torch's reduction of
    the storage: a file descriptor fetched over a socket from the worker, ~1 ms of both processes'
    CPU, a third of making a demo batch); the trainer's process keeps the mapping under the
    segment's name, and later batches in the segment carry only the name. A worker's batches are
    unpickled in the order it sent them, so the name always arrives after its segment."""

    def __init__(self, batch: dict, pool: SlotPool | None = None):
        self.batch = batch
        self.pool = pool

    def __reduce__(self):
        tensors = {k: v for k, v in self.batch.items() if isinstance(v, torch.Tensor)}
        rest = {k: v for k, v in self.batch.items() if k not in tensors}
        places = {k: (t.dtype, t.storage_offset(), tuple(t.shape), t.stride()) for k, t in tensors.items()}
        storage = next(iter(tensors.values())).untyped_storage()
        pool = self.pool or _POOL
        seg = pool.by_ptr.get(storage.data_ptr()) if pool is not None else None
        if seg is None:  # a one-off segment: mapped for this batch only
            return _unlease, (storage, None, places, rest)
        name = (os.getpid(), seg.serial)
        if seg.sent:
            return _unlease, (None, name, places, rest)
        seg.sent = True
        return _unlease, (storage, name, places, rest, seg.replaces)


# The trainer's process: the workers' segments it has mapped, by (worker pid, serial).
_MAPPED: dict[tuple[int, int], torch.UntypedStorage] = {}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is an exited worker
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def _map(name: tuple[int, int], storage: torch.UntypedStorage, replaces: int | None) -> None:
    """Keep a worker's new segment mapped; let go of the one it replaces and of those of workers
    that have exited (a finished DataLoader), whose batches still hold their own references."""
    _MAPPED.pop((name[0], replaces), None)
    for pid in {p for p, _ in _MAPPED if p != name[0]}:
        if not _alive(pid):
            for key in [k for k in _MAPPED if k[0] == pid]:
                del _MAPPED[key]
    _MAPPED[name] = storage


def _unlease(storage: torch.UntypedStorage | None, name: tuple[int, int] | None, places: dict, rest: dict,
             replaces: int | None = None) -> dict:
    if name is not None:
        if storage is None:
            storage = _MAPPED.get(name)
            if storage is None:
                raise RuntimeError(f"batch names segment {name} of a DataLoader worker that this process "
                                   f"never received")
        else:
            _map(name, storage, replaces)
    lease = torch.empty(0, dtype=torch.uint8).set_(storage).numpy().view(_Lease)
    lease.pooled = True
    base = torch.from_numpy(lease).untyped_storage()
    del lease  # from here the tensors' storage holds the only reference
    out = dict(rest)
    for k, (dtype, offset, shape, stride) in places.items():
        out[k] = torch.empty(0, dtype=dtype).set_(base, offset, shape, stride)
    return out


def handed_over(items: Iterator, num_workers: int) -> Iterator[dict]:
    """The trainer's batches, one at a time, from a DataLoader over ``ShardBatches``: a transfer of
    several batches (``data.batches_per_transfer``) is dealt out in the workers' rotation, so the
    trainer sees the batches in the order that one batch per transfer gives (worker 0's first,
    worker 1's first, ..., worker 0's second, ...). Holds one transfer of each worker."""
    for item in items:
        if isinstance(item, dict):  # one batch per transfer, or no workers
            yield item
            continue
        transfers = [item] + [next(items) for _ in range(num_workers - 1)]
        if len({len(t) for t in transfers}) != 1:
            raise RuntimeError(f"DataLoader workers sent transfers of {[len(t) for t in transfers]} batches; "
                               f"dealing them out in rotation needs the same number from each")
        for round_ in zip(*transfers):
            yield from round_


_POOL: SlotPool | None = None


def one_storage(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]],
                 pool_slots: int = 0) -> dict[str, torch.Tensor]:
    """Uninitialised tensors of the given shapes and dtypes, all views of one storage.

    A DataLoader worker hands its batch to the trainer by pickling it, and torch moves every
    tensor's storage to its own shared-memory segment: five segments (plus a copy each) per batch
    cost more than decoding it. One storage is one segment; ``pool_slots`` > 0 (in a worker) takes
    it from the worker's ``SlotPool``, so the batch is written in shared memory once, into pages
    that are already there."""
    global _POOL
    offsets, total = layout(shapes)
    if pool_slots:
        if _POOL is None or _POOL.slots != pool_slots:
            _POOL = SlotPool(pool_slots)
        storage = _POOL.take(total)
        flat = torch.empty(0, dtype=torch.uint8).set_(storage, HEADER, (total,))
    else:
        flat = torch.empty(total, dtype=torch.uint8)
    return views(flat, shapes, offsets)
