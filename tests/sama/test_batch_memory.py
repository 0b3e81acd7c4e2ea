"""A worker's batch segments: reused only once the trainer has let go of the batch in them."""
from __future__ import annotations

import os

import torch

from sama.batch_memory import HEADER, PooledBatch, SlotPool, layout, views


def test_a_workers_segment_is_reused_only_after_the_trainer_frees_its_batch():
    """The pool's bookkeeping across a real pickle round trip (torch's fd reduction) in one process:
    a segment comes back once the unpickled batch is gone, never while it is held, and a batch that
    finds every segment held gets a one-off segment."""
    import io
    import pickle

    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers the shared-memory reductions)

    pool = SlotPool(2)
    shapes = {"target": ((2, 3), torch.float32), "text_mask": ((2, 4), torch.bool)}
    offsets, total = layout(shapes)

    def ship(storage):
        flat = torch.empty(0, dtype=torch.uint8).set_(storage, HEADER, (total,))
        parts = views(flat, shapes, offsets)
        parts["target"].copy_(torch.arange(6.0).view(2, 3))
        parts["text_mask"].fill_(True)
        buf = io.BytesIO()
        ForkingPickler(buf, pickle.HIGHEST_PROTOCOL).dump(PooledBatch({**parts, "keys": ["a", "b"]}))
        return pickle.loads(buf.getvalue())

    first = pool.take(total)
    batch = ship(first)
    assert batch["keys"] == ["a", "b"] and torch.equal(batch["target"], torch.arange(6.0).view(2, 3))
    assert batch["text_mask"].all()
    second = pool.take(total)
    assert second.data_ptr() != first.data_ptr()  # the first is held
    held = ship(second)
    assert pool.take(total).data_ptr() not in (first.data_ptr(), second.data_ptr())  # one-off
    del batch
    assert pool.take(total).data_ptr() == first.data_ptr()  # freed: reused
    assert torch.equal(held["target"], torch.arange(6.0).view(2, 3))


def test_a_segment_crosses_once_then_batches_carry_its_name():
    """The first batch in a segment carries the segment (a file descriptor); the next ones only its
    name, and the trainer's process rebuilds them from the mapping it kept. A segment that grows
    replaces its old mapping there, and the mappings of workers that have exited are let go."""
    import io
    import pickle
    import subprocess

    from multiprocessing.reduction import ForkingPickler

    import sama.batch_memory as bm
    import torch.multiprocessing  # noqa: F401  (registers the shared-memory reductions)

    pool = SlotPool(1)

    def ship(nbytes, value):
        shapes = {"target": ((nbytes // 4,), torch.float32)}
        offsets, total = layout(shapes)
        storage = pool.take(total)
        flat = torch.empty(0, dtype=torch.uint8).set_(storage, HEADER, (total,))
        parts = views(flat, shapes, offsets)
        parts["target"].fill_(value)
        batch = PooledBatch({**parts, "keys": [value]}, pool)
        buf = io.BytesIO()
        ForkingPickler(buf, pickle.HIGHEST_PROTOCOL).dump(batch)
        data = buf.getvalue()
        return pickle.loads(data), len(data)

    exited = subprocess.Popen(["true"])
    exited.wait()
    bm._MAPPED[(exited.pid, 0)] = torch.UntypedStorage(8)  # a finished loader's worker
    got = []
    for value, nbytes in ((1.0, 64), (2.0, 64), (3.0, 64), (4.0, 4096), (5.0, 4096)):
        batch, size = ship(nbytes, value)
        assert batch["keys"] == [value] and torch.equal(batch["target"], torch.full((nbytes // 4,), value))
        got.append(size)
        del batch  # the segment goes back to the worker
    # The first batch and the fourth (it needs a larger segment) carry a segment; the others only
    # its name, fewer bytes.
    assert max(got[1], got[2], got[4]) < min(got[0], got[3]) and got[1] == got[2]
    mine = [k for k in bm._MAPPED if k[0] == os.getpid()]
    assert mine == [(os.getpid(), pool.segments[0].serial)] and (exited.pid, 0) not in bm._MAPPED
