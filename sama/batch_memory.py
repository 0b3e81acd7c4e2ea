"""A batch's tensors in one storage, and how a DataLoader worker hands it to the trainer.

One storage per batch means one shared-memory segment per batch (torch gives every tensor's storage
its own); a worker takes it from a small pool of segments it reuses once the trainer has let go of
the batch, because a fresh segment's first touch costs more than decoding the batch."""
from __future__ import annotations

import math

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
        self.storages: list[torch.UntypedStorage] = []
        self.busy: list[np.ndarray] = []  # byte 0 of each segment

    def take(self, nbytes: int) -> torch.UntypedStorage:
        need = HEADER + nbytes
        free = [i for i, b in enumerate(self.busy) if not b[0]]
        fits = [i for i in free if self.storages[i].nbytes() >= need]
        if fits:
            slot = min(fits, key=lambda i: self.storages[i].nbytes())
        elif len(self.storages) < self.slots or free:
            # A quarter to spare: the text's padded length varies, and a segment a few bytes short
            # of the next batch would be replaced again and again.
            storage = torch.UntypedStorage._new_shared(-(-(need + need // 4) // 4096) * 4096)
            busy = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (1,)).numpy()
            if len(self.storages) < self.slots:
                slot = len(self.storages)
                self.storages.append(storage)
                self.busy.append(busy)
            else:  # the smallest free segment grows (its old one is nobody's now)
                slot = min(free, key=lambda i: self.storages[i].nbytes())
                self.storages[slot], self.busy[slot] = storage, busy
        else:
            return torch.UntypedStorage._new_shared(need)  # one-off: every segment is held
        self.busy[slot][0] = 1
        return self.storages[slot]


class _Lease(np.ndarray):
    """The trainer's process's view of a worker's segment: the batch's tensors are made from it
    and keep it alive; when the last of them goes, byte 0 tells the worker the segment is free."""

    def __del__(self):
        if getattr(self, "pooled", False):
            np.ndarray.__setitem__(self, 0, 0)


class PooledBatch:
    """A worker's batch on its way to the trainer: pickled, its tensors cross as their one
    segment's file descriptor (torch's reduction of the storage, one descriptor per batch instead
    of one per tensor) and their places in it; unpickled, it is the plain batch dict."""

    def __init__(self, batch: dict):
        self.batch = batch

    def __reduce__(self):
        tensors = {k: v for k, v in self.batch.items() if isinstance(v, torch.Tensor)}
        rest = {k: v for k, v in self.batch.items() if k not in tensors}
        places = {k: (t.dtype, t.storage_offset(), tuple(t.shape), t.stride()) for k, t in tensors.items()}
        return _unlease, (next(iter(tensors.values())).untyped_storage(), places, rest)


def _unlease(storage: torch.UntypedStorage, places: dict, rest: dict) -> dict:
    lease = torch.empty(0, dtype=torch.uint8).set_(storage).numpy().view(_Lease)
    lease.pooled = True
    base = torch.from_numpy(lease).untyped_storage()
    del lease  # from here the tensors' storage holds the only reference
    out = dict(rest)
    for k, (dtype, offset, shape, stride) in places.items():
        out[k] = torch.empty(0, dtype=dtype).set_(base, offset, shape, stride)
    return out


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
