"""The CLIs never surprise: stages as a choice list, nothing written for an invalid command line,
every user error one line on stderr with exit 2 (no traceback), `--version` on both apps."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.curate.runner import STAGE_ORDER

from conftest import REPO, curate_bin


def sama_bin() -> str:
    return str(Path(curate_bin()).with_name("sama"))


def _run(args: list[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "COLUMNS": "200", **env})


def _one_line_usage_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_version_on_both_apps():
    for exe, name in ((curate_bin(), "curate"), (sama_bin(), "sama")):
        res = _run([exe, "--version"])
        assert res.returncode == 0 and res.stdout.startswith(f"{name} (sama-curate) "), res.stdout + res.stderr
        assert res.stdout.split()[-1][0].isdigit()


def test_run_help_lists_every_stage():
    res = _run([curate_bin(), "run", "--help"])
    assert res.returncode == 0
    flat = "".join(res.stdout.split())  # the help table may wrap the choice list
    assert "[" + "|".join([*STAGE_ORDER, "all"]) + "]" in flat
    assert STAGE_ORDER[-1] == "shard" and STAGE_ORDER[0] == "ingest"


def test_stage_completion_lists_every_stage():
    res = _run([curate_bin()], _CURATE_COMPLETE="complete_bash", COMP_WORDS="curate run --stage ", COMP_CWORD="3")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [*STAGE_ORDER, "all"]
    res = _run([curate_bin()], _CURATE_COMPLETE="complete_bash", COMP_WORDS="curate run --stage probe,vl",
               COMP_CWORD="3")
    assert res.stdout.split() == ["probe,vlm-filter"]


def test_bogus_stage_writes_nothing_and_lists_the_stages(tmp_path):
    workdir = tmp_path / "X"
    res = _run([curate_bin(), "run", "-c", "configs/demo.yaml", "--stage", "bogus", "--workdir", str(workdir)])
    _one_line_usage_error(res, "--stage", "bogus", ", ".join(STAGE_ORDER))
    assert not workdir.exists()
    res = _run([curate_bin(), "run", "-c", "configs/demo.yaml", "--stage", "probe,all", "--workdir", str(workdir)])
    _one_line_usage_error(res, "--stage")
    assert not workdir.exists()


@pytest.mark.parametrize("args, needle", [
    (["bogus-command"], "bogus-command"),
    (["run"], "--config"),
    (["run", "-c", "/nonexistent/run.yaml"], "/nonexistent/run.yaml"),
    (["run", "-c", "configs/demo.yaml", "--limit", "0"], "--limit"),
    (["query", "SELECT 1", "--workdir", "/nonexistent-run"], "no tables"),
    (["preview", "--workdir", "/nonexistent-run"], "--sample"),
])
def test_curate_user_errors_are_one_line_exit_2(args, needle):
    _one_line_usage_error(_run([curate_bin(), *args]), needle)


def test_curate_query_errors_are_one_line_exit_2(tmp_path):
    import pyarrow as pa

    from manifests.io import write_part

    write_part(tmp_path / "tables" / "samples" / "ditto" / "p.parquet",
               pa.table({"sample_id": ["a"], "dataset": ["ditto"]}))
    _one_line_usage_error(_run([curate_bin(), "query", "SELEC 1", "--workdir", str(tmp_path)]), "SELEC")
    _one_line_usage_error(_run([curate_bin(), "query", "SELECT nope FROM samples", "--workdir", str(tmp_path)]),
                          "query failed", "nope")
    _one_line_usage_error(_run([curate_bin(), "query", "CREATE TABLE t (a INT)", "--workdir", str(tmp_path)]),
                          "read-only")
    res = _run([curate_bin(), "query", "SELECT count(*) AS n FROM samples", "--workdir", str(tmp_path), "-f", "csv"])
    assert res.returncode == 0 and res.stdout.split() == ['"n"', "1"]


SAMPLE = ["sample", "--source", "x.mp4", "--instruction", "i", "--out", "o.mp4", "--vae", "v", "--text-encoder", "t"]


@pytest.mark.parametrize("args, needle", [
    ([*SAMPLE, "--checkpoint", "c", "--device", "tpu"], "--device"),
    ([*SAMPLE, "--checkpoint", "/nonexistent-export"], "/nonexistent-export"),
    ([*SAMPLE, "--checkpoint", "c", "--weights", "last"], "--weights"),
    (["train", "-c", "/nonexistent/train.yaml"], "/nonexistent/train.yaml"),
    (["export", "--checkpoint", "/nonexistent-ckpt", "--out", "/tmp/never-written-export"], "/nonexistent-ckpt"),
    (["bogus-command"], "bogus-command"),
])
def test_sama_user_errors_are_one_line_exit_2(args, needle):
    _one_line_usage_error(_run([sama_bin(), *args]), needle)
    assert not Path("/tmp/never-written-export").exists()


class _FailingStream:
    """An iterable dataset whose worker raises a user error, as the trainer's loader does."""

    def __iter__(self):
        from sama.config import ConfigError

        raise ConfigError("data.streams.video: no sample of variants ['none']")


def test_a_dataloader_worker_error_is_one_line_with_the_users_message():
    """torch re-raises a worker's error with its traceback in the message; the CLI shows the line
    the user needs, not the traceback."""
    from torch.utils.data import DataLoader, IterableDataset

    from pipeline.cli_base import one_line

    class Stream(_FailingStream, IterableDataset):
        pass

    with pytest.raises(Exception) as err:
        next(iter(DataLoader(Stream(), batch_size=None, num_workers=1)))
    assert "Original Traceback" in str(err.value)  # what torch does
    assert one_line(err.value) == "data.streams.video: no sample of variants ['none']"


def test_demo_in_another_workdir_points_every_path_there(tmp_path):
    # configs/demo.yaml names runs/demo; `curate demo --workdir X` builds the corpus and models in X
    # and must read them there, not runs/demo's (absent on a fresh clone).
    from pipeline.config_base import read_document
    from pipeline.curate.demo.config_paths import dotted_strings, relocated_paths

    config, elsewhere = REPO / "configs" / "demo.yaml", tmp_path / "demo-elsewhere"
    assert relocated_paths(config, Path("runs/demo")) == []
    doc = read_document(config, relocated_paths(config, elsewhere), example_file="", sections_hint="",
                        example_set="")
    paths = [v for section in ("datasets", "encode") for _, v in dotted_strings(doc[section], section)
             if "/" in v]
    assert len(paths) >= 14
    assert all(Path(v).is_relative_to(elsewhere) for v in paths), paths
