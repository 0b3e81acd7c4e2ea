"""The trainer's shard loader (sama.data) and config loading, on contract-format shard sets."""
from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from sama.config import ConfigError, DataConfig, load_trainer_config
from sama.batch_memory import handed_over
from sama.data import LoaderPosition, ShardBatches, loader_prefetch, read_shard_index

from _sama_fixtures import SEMANTIC_TOKENS, STAGE0, TEXT_DIM, count_variants, write_shard_set

REPO = Path(__file__).resolve().parents[2]

STREAMS = {
    "image": {"purpose": "stage0", "modality": "image", "variants": ["edit"], "weight": 1.0},
    "video": {"purpose": "stage0", "modality": "video", "variants": ["none"], "weight": 1.0},
    "pretext": {"purpose": "stage0", "modality": "video", "variants": ["cube", "speed", "tube"], "weight": 2.0},
}


@pytest.fixture(scope="module")
def shard_workdir(tmp_path_factory) -> Path:
    return write_shard_set(tmp_path_factory.mktemp("shards"))


def _cfg(workdir, **kw) -> DataConfig:
    fields = dict(workdir=workdir, streams=STREAMS, batch_size={"image": 3, "video": 2},
                  shuffle_buffer={"image": 8, "video": 4}, chunk_shards=2, num_workers=0)
    fields.update(kw)
    return DataConfig(**fields)


def _take(batches, n):
    return list(itertools.islice(batches, n))


def test_batches_are_uniform_and_padded(shard_workdir):
    ds = ShardBatches(_cfg(shard_workdir), seed=0)
    for batch in _take(iter(ds), 40):
        stream = batch["meta"]["stream"]
        b, c, t, h, w = batch["target"].shape
        assert c == 16 and b <= (3 if stream == "image" else 2)
        assert batch["target"].dtype == torch.float32
        # one latent shape and one "has source" per batch: variant none alone has no source
        tasks = set(batch["tasks"])
        if stream == "video":
            assert tasks == {"t2v"} and batch["source"] is None
        else:
            assert batch["source"].shape == batch["target"].shape
            assert tasks <= ({"edit"} if stream == "image" else {"cube", "speed", "tube"})
        assert (t == 1) == (stream == "image")
        assert batch["semantic"].shape == (b, SEMANTIC_TOKENS, 32)  # [N*(64+G), D] per sample
        text, mask = batch["text"], batch["text_mask"]
        assert text.shape[:2] == mask.shape and text.shape[2] == TEXT_DIM
        lengths = mask.sum(1)
        assert lengths.max() == text.shape[1] and lengths.min() >= 3
        for i, n in enumerate(lengths.tolist()):  # the mask is a prefix and the padding is zero
            assert mask[i, :n].all() and not mask[i, n:].any()
            assert text[i, n:].abs().sum() == 0 and text[i, :n].abs().sum() > 0


def _epoch_keys(ds: ShardBatches, stream: str, logical: int) -> list[str]:
    keys = []
    for raw, (epoch, _, _) in ds._stream_batches(stream, logical, None):
        if epoch > 0:
            return keys
        keys += [s["__key__"] for s in raw]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_an_epoch_reads_every_sample_once_across_workers(shard_workdir, workers):
    ds = ShardBatches(_cfg(shard_workdir, num_workers=workers), seed=0)
    expected = count_variants()
    for stream, variants in (("image", ["edit"]), ("video", ["none"]), ("pretext", ["cube", "speed", "tube"])):
        per_logical = [_epoch_keys(ds, stream, logical) for logical in range(workers)]
        keys = [k for ks in per_logical for k in ks]
        copies = -(-workers // len(ds.shards[stream]))  # fewer shards than workers: the list repeats
        assert len(keys) == copies * sum(expected[("stage0", v)] for v in variants)
        assert len(set(keys)) == len(keys) // copies
        assert {k.rsplit("-", 1)[1] for k in keys} == set(variants)


def test_order_is_seeded(shard_workdir):
    def keys(seed):
        return [b["keys"] for b in _take(iter(ShardBatches(_cfg(shard_workdir), seed=seed)), 12)]
    assert keys(0) == keys(0)
    assert keys(0) != keys(1)


def test_stream_mix_follows_the_weights(shard_workdir):
    ds = ShardBatches(_cfg(shard_workdir), seed=3)
    counts = Counter(b["meta"]["stream"] for b in _take(iter(ds), 400))
    # expected 100 / 100 / 200; binomial sd ~ 9-10
    assert abs(counts["image"] - 100) < 35 and abs(counts["video"] - 100) < 35 and abs(counts["pretext"] - 200) < 45


def test_worker_split_matches_webdataset_node_and_worker_split(shard_workdir):
    """Logical stream rank + world * worker reads what split_by_node then split_by_worker pick."""
    from sama.data import epoch_order

    shards = ShardBatches(_cfg(shard_workdir), seed=0).shards["pretext"]
    order = epoch_order(shards, 0, "pretext", 0, 4)
    world, workers = 2, 2
    for rank in range(world):
        for worker in range(workers):
            by_wds = list(itertools.islice(itertools.islice(order, rank, None, world), worker, None, workers))
            assert by_wds == order[rank + world * worker::world * workers]


def _loader(ds, workers):
    """The trainer's batches through a DataLoader, as sama.train builds it."""
    loader = DataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                        prefetch_factor=loader_prefetch(ds.cfg) if workers else None)
    return handed_over(iter(loader), max(1, workers))


def _same_batch(a: dict, b: dict) -> None:
    assert a["keys"] == b["keys"] and a["tasks"] == b["tasks"] and a["meta"] == b["meta"]
    for name in ("target", "source", "semantic", "text", "text_mask"):
        assert (a[name] is None) == (b[name] is None), name
        if a[name] is not None:
            assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("transfer", [1, 3])
def test_workers_yield_the_in_process_batches(shard_workdir, transfer):
    """Two DataLoader workers hand over exactly the batches the trainer's own process makes for the
    same logical streams (in the loader's rotation, also when each transfer carries several),
    whether the trainer drops each batch at once (its shared-memory segment goes back to the
    worker and is written again) or keeps it (a kept batch is never overwritten by a later one)."""
    cfg = _cfg(shard_workdir, num_workers=2, prefetch_factor=2, batches_per_transfer=transfer)
    first = next(iter(DataLoader(ShardBatches(cfg, seed=0), batch_size=None, num_workers=2, prefetch_factor=1)))
    assert len(first) == transfer if transfer > 1 else isinstance(first, dict)  # what one transfer holds
    ds = ShardBatches(cfg, seed=0)
    streams = [ds._logical_batches(logical, logical) for logical in range(2)]
    reference = [next(streams[i % 2]) for i in range(60)]
    kept = []
    for i, batch in enumerate(_take(iter(_loader(ShardBatches(cfg, seed=0), 2)), 60)):
        _same_batch(reference[i], batch)
        if i % 3 == 0:
            kept.append((i, batch))
        del batch
    for i, batch in kept:
        _same_batch(reference[i], batch)


@pytest.mark.parametrize("consumed,transfer", [(5, 1), (8, 1), (5, 3), (8, 3)])
def test_resume_continues_exactly(shard_workdir, consumed, transfer):
    """Consume some batches through 2 workers, save the position, resume in a new loader: the next
    batches are those the uninterrupted loader gives (keys and tensors), whichever worker is next
    and wherever in a transfer of several batches the position fell."""
    cfg = _cfg(shard_workdir, num_workers=2, batches_per_transfer=transfer)
    reference = _take(iter(_loader(ShardBatches(cfg, seed=0), 2)), consumed + 10)
    tracker = LoaderPosition(0, 1, 2)
    for batch in reference[:consumed]:
        tracker.observe(batch["meta"])
    position = tracker.state_dict()
    resumed = _take(iter(_loader(ShardBatches(cfg, seed=0, position=position), 2)), 10)
    for a, b in zip(reference[consumed:], resumed):
        assert a["keys"] == b["keys"] and a["meta"]["index"] == b["meta"]["index"]
        assert torch.equal(a["target"], b["target"]) and torch.equal(a["text"], b["text"])
        assert (a["source"] is None) == (b["source"] is None)


def test_resume_refuses_another_layout(shard_workdir):
    tracker = LoaderPosition(0, 1, 2)
    with pytest.raises(ConfigError, match="num_workers"):
        ShardBatches(_cfg(shard_workdir, num_workers=3), seed=0, position=tracker.state_dict())


def test_shards_read_back_with_plain_webdataset(shard_workdir):
    """The fixture is the contract's format: plain webdataset decodes it with a safetensors handler."""
    import safetensors.torch

    index = read_shard_index(shard_workdir)
    assert sum(s.samples for s in index) == sum(g.count for g in STAGE0) + 16
    url = next(s.path for s in index if s.modality == "video" and s.purpose == "stage0")
    ds = wds.WebDataset(url, shardshuffle=False).decode(wds.handle_extension("safetensors", safetensors.torch.load))
    for sample in ds:
        members = sample["json"]["members"]
        assert set(members) == {"target.safetensors", "source.safetensors", "semantic.safetensors",
                                "text.safetensors"}  # every key the same members
        for name, spec in members.items():
            assert list(sample[name][spec["tensor"]].shape) == spec["shape"]
        source = sample["source.safetensors"]["source_latents"]
        assert sample["json"]["has_source"] == (sample["json"]["variant"] != "none") == (source.numel() > 0)


def test_missing_stream_data_names_the_field(shard_workdir):
    streams = {**STREAMS, "edits": {"purpose": "stage1", "modality": "image", "variants": ["edit"]}}
    with pytest.raises(ConfigError, match=r"data\.streams\.edits: no shards"):
        ShardBatches(_cfg(shard_workdir, streams=streams), seed=0)
    with pytest.raises(FileNotFoundError, match="data.workdir"):
        ShardBatches(_cfg(shard_workdir / "nowhere"), seed=0)


# ---------------------------------------------------------------- the trainer config
@pytest.mark.parametrize("name", ["stage0", "stage1", "tiny_stage0", "tiny_stage1"])
def test_shipped_configs_load(name):
    cfg = load_trainer_config(REPO / "configs" / "train" / f"{name}.yaml")
    assert cfg.optim.lr == (2e-5 if not name.startswith("tiny") else 1e-3)
    assert cfg.ema.decay == 0.9998 and cfg.flow.lambda_sem == 0.1


@pytest.mark.parametrize("override, field", [
    ("data.streams.image.weigth=1", "data.streams.image.weigth: unknown key"),
    ("data.batch_size.image=0", "data.batch_size: image: must be >= 1"),
    ("data.streams.image.modality=audio", "data.streams.image.modality"),
    ("optim.lr=-1", "optim.lr: Input should be greater than 0"),
    ("ema.decay=1.5", "ema.decay"),
    ("train.precision=fp8", "train.precision"),
    ("data.streams.image.weight=0", None),  # fine while another stream has weight
    ("model.tiny=null", "model.base_path: set it"),
])
def test_config_errors_name_the_field(override, field):
    path = REPO / "configs" / "train" / "tiny_stage0.yaml"
    if field is None:
        load_trainer_config(path, [override])
        return
    with pytest.raises(ConfigError) as err:
        load_trainer_config(path, [override])
    assert field in str(err.value)


def test_config_without_any_weighted_stream_fails():
    path = REPO / "configs" / "train" / "tiny_stage1.yaml"
    with pytest.raises(ConfigError, match=r"data\.streams: no stream has weight > 0"):
        load_trainer_config(path, ["data.streams.edit.weight=0"])
    with pytest.raises(ConfigError, match="data: required field is missing"):
        load_trainer_config(None, ["model.tiny={patch_size: [1, 2, 2]}"])


def test_has_source_reads_new_and_older_shard_json():
    from sama.data import has_source

    empty = {"tensor": "source_latents", "dtype": "bfloat16", "shape": [16, 0, 2, 2]}
    assert has_source({"has_source": False, "members": {"source.safetensors": empty}}) is False
    assert has_source({"has_source": True, "members": {"source.safetensors": {**empty, "shape": [16, 1, 2, 2]}}})
    assert has_source({"members": {"target.safetensors": {}}}) is False  # older shards: no member at all
    assert has_source({"members": {"target.safetensors": {}, "source.safetensors": {}}}) is True
