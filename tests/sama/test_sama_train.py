"""`sama train` on CPU with the tiny model: the loss falls, a resumed run repeats the uninterrupted
one bit for bit (in process and after a real kill -9), 2 gloo processes (DDP, FSDP2) match one
process on the same global batch, the NaN guard skips bad steps, EMA and Stage 1 init."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sama import checkpoint
from sama.config import load_trainer_config
from sama.ema import EMA
from sama.train import lr_at, train

from _sama_fixtures import STAGE0, Group, write_shard_set

REPO = Path(__file__).resolve().parents[2]
TINY0 = REPO / "configs" / "train" / "tiny_stage0.yaml"
TINY1 = REPO / "configs" / "train" / "tiny_stage1.yaml"
PY = sys.executable

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def shard_workdir(tmp_path_factory) -> Path:
    return write_shard_set(tmp_path_factory.mktemp("shards"))


def _overrides(workdir: Path, out: Path, **fields) -> list[str]:
    base = {"data.workdir": str(workdir), "train.out_dir": str(out), "train.tensorboard": "false",
            "data.num_workers": 2, "data.chunk_shards": 2, "data.batch_size": "{image: 3, video: 2}",
            "data.shuffle_buffer": "{image: 6, video: 4}", "train.log_every": 5}
    base.update(fields)
    return [f"{k}={v}" for k, v in base.items()]


def _cfg(workdir, out, config=TINY0, **fields):
    return load_trainer_config(config, _overrides(workdir, out, **fields))


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _trajectory(out: Path) -> list[tuple]:
    return [(m["step"], m["loss"], m["l_fm"], m["l_sem"], m["grad_norm"], m["samples"]) for m in _metrics(out)]


def _assert_same_weights(a: Path, b: Path) -> None:
    for which in ("model", "ema"):
        wa, wb = checkpoint.load_weights(a, which), checkpoint.load_weights(b, which)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), which


@pytest.fixture(scope="module")
def reference_run(shard_workdir, tmp_path_factory):
    """16 uninterrupted steps, checkpoints every 5 (and at the end)."""
    out = tmp_path_factory.mktemp("reference")
    summary = train(_cfg(shard_workdir, out, **{"train.max_steps": 16, "checkpoint.every": 5}))
    return out, summary


@pytest.fixture(scope="module")
def pipeline_workdir(tmp_path_factory, request) -> Path:
    """Shards made by the curation pipeline (ingest .. shard, tiny encoders) on the demo corpus."""
    from _sama_fixtures import pipeline_shards

    request.getfixturevalue("ray_session")
    corpus = request.getfixturevalue("demo_corpus")
    root = tmp_path_factory.mktemp("pipeline")
    return pipeline_shards(root / "work", corpus, root / "scratch")


@pytest.mark.parametrize("shards", ["fixture", pytest.param("pipeline", marks=[pytest.mark.ray, pytest.mark.slow])])
def test_loss_decreases(shards, shard_workdir, tmp_path, request):
    workdir = shard_workdir if shards == "fixture" else request.getfixturevalue("pipeline_workdir")
    out = tmp_path / "run"
    summary = train(_cfg(workdir, out, **{"train.max_steps": 40, "checkpoint.every": 40,
                                          "train.tensorboard": "true"}))
    rows = _metrics(out)
    losses = [m["loss"] for m in rows]
    assert len(losses) == 40 and summary["skipped"] == 0
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.8 * first, (first, last)
    assert summary["samples"] == rows[-1]["samples"] > 40
    assert all(m["l_sem"] > 0 for m in rows)  # Semantic Anchoring is on in every batch
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert (out / "summary.json").exists()
    if shards == "pipeline":  # Stage 1 from the Stage 0 weights, on the pipeline's stage1 shards
        out1 = tmp_path / "stage1"
        summary1 = train(_cfg(workdir, out1, config=TINY1, **{"train.max_steps": 10, "checkpoint.every": 10,
                                                              "train.init_from": str(out / "checkpoints" / "step-00000040")}))
        assert summary1["steps"] == 10 and summary1["skipped"] == 0


def test_resume_mid_run_is_bit_identical(shard_workdir, reference_run, tmp_path):
    ref_out, _ = reference_run
    out = tmp_path / "interrupted"
    train(_cfg(shard_workdir, out, **{"train.max_steps": 7, "checkpoint.every": 5}))
    assert checkpoint.find_resume(out, "auto").name == "step-00000007"
    # continue from step 5 (an odd number of batches: the other loader worker is next)
    step5 = checkpoint.checkpoints_dir(out) / "step-00000005"
    summary = train(_cfg(shard_workdir, out, **{"train.max_steps": 16, "checkpoint.every": 5,
                                                "checkpoint.resume": str(step5)}))
    assert summary["steps"] == 16
    assert _trajectory(out) == _trajectory(ref_out)  # steps 6..7 were dropped and re-logged
    _assert_same_weights(checkpoint.find_resume(out, "auto"), checkpoint.find_resume(ref_out, "auto"))


def test_resume_from_an_older_checkpoint_discards_the_abandoned_later_ones(shard_workdir, tmp_path):
    out = tmp_path / "rewound"
    train(_cfg(shard_workdir, out, **{"train.max_steps": 7, "checkpoint.every": 5, "checkpoint.keep_last": 2,
                                      "data.num_workers": 0}))
    root = checkpoint.checkpoints_dir(out)
    assert [p.name for p in checkpoint.complete_checkpoints(out)] == ["step-00000005", "step-00000007"]
    with (out / "metrics.jsonl").open("a") as f:  # a kill -9 mid-write leaves a torn last line
        f.write('{"step": 8, "lo')
    summary = train(_cfg(shard_workdir, out, **{"train.max_steps": 6, "checkpoint.every": 5,
                                                "checkpoint.keep_last": 1, "data.num_workers": 0,
                                                "checkpoint.resume": str(root / "step-00000005")}))
    assert (root / "step-00000006").is_dir() and checkpoint.is_complete(root / "step-00000006")
    assert not (root / "step-00000007").exists()
    assert (root / checkpoint.LATEST).read_text().strip() == "step-00000006"
    assert Path(summary["checkpoint"]).is_dir() and Path(summary["checkpoint"]).name == "step-00000006"
    assert [p.name for p in checkpoint.complete_checkpoints(out)] == ["step-00000006"]
    assert [m["step"] for m in _metrics(out)] == [1, 2, 3, 4, 5, 6]
    assert json.loads((out / "summary.json").read_text())["steps"] == 6
    # and a further resume still reads the (rewritten) metrics
    train(_cfg(shard_workdir, out, **{"train.max_steps": 7, "checkpoint.every": 5, "data.num_workers": 0}))
    assert [m["step"] for m in _metrics(out)] == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.slow
def test_kill_and_resume_subprocess(shard_workdir, reference_run, tmp_path):
    """kill -9 a real `sama train` process after its second checkpoint; the restarted command
    resumes from the latest checkpoint and repeats the uninterrupted (in-process) run bit for bit."""
    ref_out, _ = reference_run
    out = tmp_path / "killed"
    sets = _overrides(shard_workdir, out, **{"train.max_steps": 16, "checkpoint.every": 4, "checkpoint.keep_last": 2})
    command = [PY, "-m", "sama.cli", "train", "-c", str(TINY0), *[x for s in sets for x in ("--set", s)]]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 200
    while not (checkpoint.checkpoints_dir(out) / "step-00000008" / checkpoint.META).exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(_metrics(out)) < 16  # killed mid-run

    res = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stdout
    assert _trajectory(out) == _trajectory(ref_out)
    _assert_same_weights(checkpoint.find_resume(out, "auto"), checkpoint.find_resume(ref_out, "auto"))
    assert [p.name for p in checkpoint.complete_checkpoints(out)] == ["step-00000012", "step-00000016"]


def _torchrun(args: list[str], out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "sama.cli", "train",
           *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=280)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process(shard_workdir, tmp_path, parallel):
    """2 ranks x 1 loader worker x micro-batch b == 1 rank x 2 workers x grad_accum 2: the same
    logical streams give the same global batch and the same noise, so the losses agree (also when
    the single rank's workers hand over 3 batches at a time)."""
    steps = {"train.max_steps": 6, "checkpoint.every": 3}
    single = tmp_path / "single"
    train(_cfg(shard_workdir, single, **steps, **{"optim.grad_accum": 2, "data.num_workers": 2,
                                                  "data.batches_per_transfer": 3}))

    multi = tmp_path / "multi"
    sets = _overrides(shard_workdir, multi, **steps, **{"train.parallel": parallel, "data.num_workers": 1})
    res = _torchrun(["-c", str(TINY0), *[x for s in sets for x in ("--set", s)]], multi)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"2 process(es), parallel {parallel}" in res.stdout

    a, b = _metrics(single), _metrics(multi)
    assert [m["samples"] for m in a] == [m["samples"] for m in b]
    assert a[0]["loss"] == b[0]["loss"]  # same weights, batches and noise: the first loss is exact
    for ma, mb in zip(a, b):
        assert ma["loss"] == pytest.approx(mb["loss"], rel=1e-5, abs=1e-7)
        assert ma["grad_norm"] == pytest.approx(mb["grad_norm"], rel=1e-4)
    # the sharded (or replicated) checkpoint holds the same weights as the single process's
    wa = checkpoint.load_weights(checkpoint.find_resume(single, "auto"), "model")
    wb = checkpoint.load_weights(checkpoint.find_resume(multi, "auto"), "model")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6) for k in wa)

    if parallel == "fsdp":  # resuming the sharded run from step 3 repeats steps 4..6 bit for bit
        first = _trajectory(multi)
        final = shutil.copytree(checkpoint.find_resume(multi, "auto"), tmp_path / "first-final")
        step3 = checkpoint.checkpoints_dir(multi) / "step-00000003"
        res = _torchrun(["-c", str(TINY0), *[x for s in sets + [f"checkpoint.resume={step3}"]
                                             for x in ("--set", s)]], multi)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert "resumed from" in res.stdout
        assert _trajectory(multi) == first
        _assert_same_weights(checkpoint.find_resume(multi, "auto"), final)


def test_nan_guard_skips_the_step(tmp_path):
    poisoned = [Group("nhr_edit", "stage0", "image", (32, 32, 1), 12, poison={0, 1, 2, 3, 4, 5})]
    workdir = write_shard_set(tmp_path / "shards", poisoned + STAGE0[1:])
    out = tmp_path / "run"
    summary = train(_cfg(workdir, out, **{"train.max_steps": 12, "checkpoint.every": 12, "data.num_workers": 0}))
    rows = _metrics(out)
    bad = [m for m in rows if m["skipped"]]
    assert bad and summary["skipped"] == len(bad) < len(rows)
    assert all(m["loss"] != m["loss"] or abs(m["loss"]) == float("inf") for m in bad)
    weights = checkpoint.load_weights(checkpoint.find_resume(out, "auto"), "model")
    assert all(torch.isfinite(w).all() for w in weights.values())
    with pytest.raises(RuntimeError, match="max_bad_steps"):
        train(_cfg(workdir, tmp_path / "run2", **{"train.max_steps": 40, "train.max_bad_steps": 1,
                                                  "data.num_workers": 0}))


def test_ema_is_an_fp32_running_average():
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    ema = EMA(model, decay=0.9)
    expected = {k: v.detach().float().clone() for k, v in model.named_parameters()}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        ema.update(model)
        for k, p in model.named_parameters():
            expected[k] = 0.9 * expected[k] + 0.1 * p.detach().float()
    for k, v in ema.state_dict().items():
        assert v.dtype == torch.float32 and torch.allclose(v, expected[k], atol=1e-6)


def test_lr_schedule():
    cfg = load_trainer_config(TINY0, ["optim.warmup_steps=4", "optim.schedule=cosine", "optim.min_lr_ratio=0.1"])
    lrs = [lr_at(s, cfg.optim, 14) for s in range(14)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[4] == pytest.approx(1e-3) and all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] > 1e-4


def test_seed_must_not_be_negative():
    from sama.config import ConfigError

    with pytest.raises(ConfigError, match="train.seed"):
        load_trainer_config(TINY0, ["train.seed=-1"])


def test_stage1_starts_from_stage0_weights(shard_workdir, reference_run, tmp_path):
    ref_out, _ = reference_run
    stage0 = checkpoint.find_resume(ref_out, "auto")
    out = tmp_path / "stage1"
    # lr so small the one step cannot move an fp32 weight: what is saved is what was loaded
    train(_cfg(shard_workdir, out, config=TINY1, **{"train.max_steps": 1, "train.init_from": str(stage0),
                                                    "optim.lr": 1e-20, "optim.weight_decay": 0}))
    loaded = checkpoint.load_weights(checkpoint.find_resume(out, "auto"), "model")
    ema0 = checkpoint.load_weights(stage0, "ema")
    assert all(torch.equal(loaded[k], ema0[k]) for k in ema0)
    # a fresh run into a directory with checkpoints is refused unless it resumes
    with pytest.raises(FileExistsError, match="checkpoint.resume: never"):
        train(_cfg(shard_workdir, out, config=TINY1, **{"checkpoint.resume": "never"}))


def test_shards_that_do_not_fit_the_model_name_the_field(shard_workdir, tmp_path):
    from sama.config import ConfigError

    with pytest.raises(ConfigError, match="model.semantic_dim: 64, the shards' SigLIP tokens are 32 wide"):
        train(_cfg(shard_workdir, tmp_path / "run", **{"model.semantic_dim": 64, "data.num_workers": 0,
                                                        "train.max_steps": 1}))


@pytest.mark.slow
def test_sharded_loading_under_two_gloo_processes(shard_workdir, tmp_path):
    """train.load sharded (meta-device build, each weight streamed into the FSDP2 shards, the
    released-format SAMA file laid over the base) gives the losses of one process loading the
    whole model; each rank reports its weight memory against the full model's."""
    from safetensors.torch import save_file

    from sama.model import SamaTransformer
    from sama.official import official_name
    from sama.tiny import build_tiny_checkpoint, tiny_sama_model_config

    base = build_tiny_checkpoint(tmp_path / "wan", seed=5)
    torch.manual_seed(7)
    donor = SamaTransformer.from_config(tiny_sama_model_config(base))
    with torch.no_grad():
        donor.type_embedding.normal_()  # not the zeros a fresh model starts with
    sama_file = tmp_path / "sama.safetensors"
    save_file({official_name(k): v.contiguous() for k, v in donor.extra_state_dict().items()}
              | {"blocks.1.ffn.2.bias": torch.full((32,), 0.25)}, sama_file)
    common = {"model.tiny": "null", "model.base_path": str(base), "train.init_from": str(sama_file),
              "train.max_steps": 3, "checkpoint.every": 3}
    single = tmp_path / "single"
    train(_cfg(shard_workdir, single, **common, **{"optim.grad_accum": 2, "data.num_workers": 2}))
    loaded = checkpoint.load_weights(checkpoint.find_resume(single, "auto"), "model")
    assert loaded["wan.blocks.1.ffn.net.2.bias"].sub(0.25).abs().max() < 0.01  # the overlay took (lr 1e-3)

    multi = tmp_path / "multi"
    sets = _overrides(shard_workdir, multi, **common, **{"train.parallel": "fsdp", "train.load": "sharded",
                                                          "data.num_workers": 1})
    res = _torchrun(["-c", str(TINY0), *[x for s in sets for x in ("--set", s)]], multi)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    a, b = _metrics(single), _metrics(multi)
    assert a[0]["loss"] == pytest.approx(b[0]["loss"], rel=1e-6)
    for ma, mb in zip(a, b):
        assert ma["loss"] == pytest.approx(mb["loss"], rel=1e-5, abs=1e-7)
    reports = [ln for ln in res.stdout.splitlines() if "MB resident" in ln]
    assert len(reports) == 2, res.stdout[-2000:]
    for ln in reports:  # "rank r: weights X MB resident, peak Y MB while loading, full model Z MB fp32"
        import re

        resident, peak, full = (float(x) for x in re.findall(r"([\d.]+) MB", ln))
        assert resident < 0.6 * full and peak < 0.75 * full, ln
        print(ln)
