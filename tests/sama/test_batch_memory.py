"""A worker's batch segments: reused only once the trainer has let go of the batch in them."""
from __future__ import annotations

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
