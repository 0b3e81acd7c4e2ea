"""Every bad input is one error row: no record takes its file, its unit or the run down with it.

The demo corpus (every published layout) is built, ingested once as it is, then seeded with bad
records of many kinds next to its good ones and ingested again. Per metadata file: every good
row of the first run is still there, unchanged, and each bad record added is exactly one more
error row, with a reason (records in = rows out). The seven classes the issue found are tested
on their own first.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import REPO, curate_bin, demo_config_file
from manifests.io import read_table
from pipeline.curate.config import load_config
from stages.ingest import get_adapter
from stages.ingest.core import ingest_adapter

LONG = "x" * 300 + ".mp4"


def config(corpus: Path, tmp_path: Path):
    return load_config(demo_config_file(corpus, tmp_path))


def adapter_for(cfg, name: str):
    return get_adapter(name, getattr(cfg.datasets, name))


def ingest(adapter, workdir: Path) -> tuple[dict[str, tuple[int, int]], list[dict]]:
    """(unit path -> (rows, errors)), and every row written."""
    units = adapter.units()
    results = ingest_adapter(adapter, workdir, rows_per_part=100_000)
    per_file = {u.path: (r.rows, r.errors) for u, r in zip(units, results)}
    return per_file, read_table(workdir, "samples").to_pylist()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from pipeline.curate.demo import build_corpus

    root = tmp_path_factory.mktemp("bad-inputs")
    build_corpus(root)
    return root


def fresh_corpus(tmp_path: Path, corpus: Path) -> Path:
    import shutil

    dest = tmp_path / "corpus"
    shutil.copytree(corpus, dest, symlinks=True)
    return dest


def unreadable(rows: list[dict]) -> set[str]:
    """The unit error rows (a whole file lost)."""
    return {r["error"] for r in rows if r["error"] and r["error"].startswith("unreadable")}


# ------------------------------------------------------------------ the seven classes


def _json_list_append(path: Path, *records_text: str) -> None:
    text = path.read_text().rstrip()
    assert text.endswith("]")
    path.write_text(text[:-1].rstrip() + "".join(", " + r for r in records_text) + "]")


def test_lone_surrogate_is_one_error_row_naming_the_field(corpus, tmp_path):
    root = fresh_corpus(tmp_path, corpus)
    cfg = config(root, tmp_path)
    path = root / "ditto/training_metadata/ditto_demo.json"
    before, rows0 = ingest(adapter_for(cfg, "ditto"), tmp_path / "w0")
    good = json.loads(path.read_text())[0]
    _json_list_append(path, json.dumps(dict(good, instruction="x\ud800y")))  # a valid JSON escape
    after, rows = ingest(adapter_for(cfg, "ditto"), tmp_path / "w1")
    assert after[str(path)] == (before[str(path)][0] + 1, before[str(path)][1] + 1)
    [err] = [r for r in rows if r["error"] and "not valid Unicode" in r["error"]]
    assert "instruction" in err["error"] and "\ufffd" in err["raw_record"]
    assert [r for r in rows if not r["error"]] == [r for r in rows0 if not r["error"]]


@pytest.mark.parametrize("kind", ["symlink-loop", "long-name", "nul-byte", "fifo", "directory"])
def test_a_bad_path_is_one_row_not_the_unit(corpus, tmp_path, kind):
    root = fresh_corpus(tmp_path, corpus)
    cfg = config(root, tmp_path)
    path = root / "ditto/training_metadata/ditto_demo.json"
    records = json.loads(path.read_text())
    folder = root / "ditto/videos/global_style1"
    folder.mkdir(parents=True, exist_ok=True)
    name = {"symlink-loop": "loop.mp4", "long-name": LONG, "nul-byte": "a\x00b.mp4",
            "fifo": "fifo.mp4", "directory": "dir.mp4"}[kind]
    if kind == "symlink-loop":
        os.symlink("loop.mp4", folder / "loop.mp4")
    elif kind == "fifo":
        os.mkfifo(folder / "fifo.mp4")
    elif kind == "directory":
        (folder / "dir.mp4").mkdir()
    before, rows0 = ingest(adapter_for(cfg, "ditto"), tmp_path / "w0")
    _json_list_append(path, json.dumps({"source_path": records[0]["source_path"], "instruction": "Paint it.",
                                        "edited_path": f"global_style1/{name}"}))
    after, rows = ingest(adapter_for(cfg, "ditto"), tmp_path / "w1")
    assert after[str(path)] == (before[str(path)][0] + 1, before[str(path)][1] + 1)
    assert unreadable(rows) == unreadable(rows0)  # the demo's truncated file, no other


def test_openve_bad_byte_long_prompt_and_unbalanced_quote_do_not_cost_the_file(corpus, tmp_path):
    root = fresh_corpus(tmp_path, corpus)
    cfg = config(root, tmp_path)
    path = root / "openve/csv_files/local_add.csv"
    before, rows0 = ingest(adapter_for(cfg, "openve"), tmp_path / "w0")
    good0 = {r["sample_id"]: r for r in rows0 if not r["error"] and r["subset"] == "local_add"}
    lines = path.read_bytes().splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    bad = [b'a.mp4;b.mp4;caf\xe9 au lait\n',
           b'c.mp4;d.mp4;' + b"y" * (140 << 10) + b"\n",
           b'e.mp4;f.mp4;"an unbalanced quote\n']
    path.write_bytes(header + bad[0] + bad[1] + bad[2] + b"".join(body))
    after, rows = ingest(adapter_for(cfg, "openve"), tmp_path / "w1")
    assert after[str(path)] == (before[str(path)][0] + 3, before[str(path)][1] + 3)
    good = {r["sample_id"]: r for r in rows if not r["error"] and r["subset"] == "local_add"}
    assert good == good0  # the records after the quote are read, not merged into its prompt
    reasons = sorted(r["error"] for r in rows if r["error"] and r["subset"] == "local_add"
                     and "line" in r["error"])
    assert any("not UTF-8" in e for e in reasons) and any("field larger" in e for e in reasons)
    assert any("unbalanced quote" in e for e in reasons)


def test_nhr_part2_root_outside_the_root_is_an_allowed_media_root(corpus, tmp_path):
    from stages.media.locate import dataset_roots, locate

    root = fresh_corpus(tmp_path, corpus)
    outside = tmp_path / "elsewhere-part2"
    (root / "nhr_edit/NHR-Edit-part2").rename(outside)
    text = demo_config_file(root, tmp_path).read_text().replace(str(root / "nhr_edit/NHR-Edit-part2"), str(outside))
    (tmp_path / "c.yaml").write_text(text)
    cfg = load_config(tmp_path / "c.yaml")
    _, rows = ingest(adapter_for(cfg, "nhr_edit"), tmp_path / "w")
    part2 = [r for r in rows if not r["error"] and str(outside) in (r["source_uri"] or "")]
    assert part2
    roots = dataset_roots(cfg)["nhr_edit"]
    for r in part2:
        locate(r["source_uri"], roots)  # raised path_escape before: part2_root was not a media root


@pytest.mark.parametrize("value", ["NaN", "42", "true", "[\"a\"]"])
def test_a_number_where_text_belongs_is_a_wrong_type(corpus, tmp_path, value):
    root = fresh_corpus(tmp_path, corpus)
    cfg = config(root, tmp_path)
    path = root / "ditto/training_metadata/ditto_demo.json"
    rec = json.loads(path.read_text())[0]
    edited = rec["edited_path"].replace(".mp4", "_nan.mp4")
    _json_list_append(path, json.dumps({**rec, "edited_path": edited})[:-1] + f', "instruction": {value}}}')
    _, rows = ingest(adapter_for(cfg, "ditto"), tmp_path / "w")
    [row] = [r for r in rows if r["raw_record"] and "_nan.mp4" in r["raw_record"]]
    assert row["error"] and "wrong type: instruction is" in row["error"] and row["instruction"] is None


@pytest.mark.parametrize("dataset,rel", [("motionbench", "motionbench/MotionBenchCaption-train/train.jsonl"),
                                         ("nhr_edit", "nhr_edit/train/metadata.jsonl"),
                                         ("pico_banana", "pico_banana/nb/jsonl/sft.jsonl")])
def test_a_bom_in_jsonl_is_read_as_the_csv_and_json_readers_do(corpus, tmp_path, dataset, rel):
    root = fresh_corpus(tmp_path, corpus)
    cfg = config(root, tmp_path)
    path = root / rel
    before, rows0 = ingest(adapter_for(cfg, dataset), tmp_path / "w0")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    after, rows = ingest(adapter_for(cfg, dataset), tmp_path / "w1")
    assert after[str(path)] == before[str(path)]
    assert {r["sample_id"]: r["error"] for r in rows} == {r["sample_id"]: r["error"] for r in rows0}


def test_a_fifo_metadata_file_is_one_unit_error_not_a_hang(corpus, tmp_path):
    root = fresh_corpus(tmp_path, corpus)
    cfg = config(root, tmp_path)
    fifo = root / "ditto/training_metadata/zz_fifo.json"
    os.mkfifo(fifo)
    done: list = []
    thread = threading.Thread(target=lambda: done.append(ingest(adapter_for(cfg, "ditto"), tmp_path / "w")),
                              daemon=True)
    thread.start()
    thread.join(60)
    if not done:  # unblock the reader (open a writer, close it) before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("ingest blocked on a FIFO")
    per_file, rows = done[0]
    assert per_file[str(fifo)] == (1, 1)
    [row] = [r for r in rows if r["error"] and "zz_fifo.json" in r["error"]]
    assert "not a regular file" in row["error"]


def test_a_deeply_nested_jsonl_line_is_one_row(corpus, tmp_path):
    root = fresh_corpus(tmp_path, corpus)
    cfg = config(root, tmp_path)
    path = root / "motionbench/MotionBenchCaption-train/train.jsonl"
    before, _ = ingest(adapter_for(cfg, "motionbench"), tmp_path / "w0")
    with open(path, "ab") as f:
        f.write(b'{"video_path": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n")
    after, _ = ingest(adapter_for(cfg, "motionbench"), tmp_path / "w1")
    assert after[str(path)] == (before[str(path)][0] + 1, before[str(path)][1] + 1)


# ------------------------------------------------------------------ the fuzz corpus

from _bad_input_kinds import KINDS, inject  # noqa: E402 - the kinds live beside this test


def test_the_corpus_has_over_forty_kinds_across_the_nine_adapters():
    assert len(KINDS) >= 40
    assert len({k.dataset for k in KINDS}) == 9


def test_fuzz_every_bad_record_is_one_error_row_and_every_good_one_survives(corpus, tmp_path):
    cfg0 = config(corpus, tmp_path)
    root = fresh_corpus(tmp_path, corpus)
    cfg = config(root, tmp_path)
    added = inject(root)  # metadata file -> number of bad records added
    by_dataset: dict[str, list] = {}
    for kind in KINDS:
        by_dataset.setdefault(kind.dataset, []).append(kind)
    for name in sorted(by_dataset):
        before, rows0 = ingest(adapter_for(cfg0, name), tmp_path / f"w0-{name}")
        after, rows = ingest(adapter_for(cfg, name), tmp_path / f"w1-{name}")
        rel = {os.path.relpath(p, corpus): v for p, v in before.items()}
        for path, (n, errors) in after.items():
            key = os.path.relpath(path, root)
            extra = added.get(key, 0)
            n0, errors0 = rel.get(key, (0, 0))
            assert (n, errors) == (n0 + extra, errors0 + extra), (name, key)
        def good(rs):
            return {r["sample_id"]: (r["instruction"], r["error"]) for r in rs if not r["error"]}
        assert good(rows) == good(rows0), name
        assert all(r["error"].strip() for r in rows if r["error"]), name
        assert unreadable(rows) == unreadable(rows0), name


def probe_outcomes(cfg, samples) -> dict[str, str | None]:
    """sample id -> the probe's error kind (None: probed fine), for the rows ingest resolved."""
    import pyarrow as pa

    from stages.media.locate import dataset_roots
    from stages.probe.core import probe_table

    from manifests.schema import SAMPLES

    resolved = pa.Table.from_pylist([r for r in samples if not r["error"]], schema=SAMPLES)
    probes = probe_table(resolved, decode_check="decord", allowed_roots=dataset_roots(cfg)).to_pylist()
    assert len(probes) == resolved.num_rows
    return {p["sample_id"]: p["error_kind"] for p in probes}


@pytest.mark.timeout(900)
def test_fuzz_corpus_through_curate_run_exits_0_and_good_records_survive_probe(corpus, tmp_path, ray_session):
    """`curate run --stage ingest` over the seeded corpus: exit 0, no traceback; then the probe
    (its core, over the rows written) gives every good record the outcome it has without the
    bad ones beside it."""
    from manifests.schema import SAMPLES

    cfg0 = config(corpus, tmp_path)
    pristine = []
    for name in cfg0.datasets.enabled():
        ingest_adapter(adapter_for(cfg0, name), tmp_path / "w0")
    pristine = read_table(tmp_path / "w0", "samples").select(SAMPLES.names).to_pylist()
    root = fresh_corpus(tmp_path, corpus)
    inject(root)
    config_file = demo_config_file(root, tmp_path)
    config_file.write_text(config_file.read_text().replace("workdir: runs/demo", f"workdir: {tmp_path / 'work'}"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    address = ray_session.get_runtime_context().gcs_address  # joins the session's cluster
    res = subprocess.run([curate_bin(), "run", "--config", str(config_file), "--stage", "ingest",
                          "--ray-address", address],
                         capture_output=True, text=True, timeout=800, env=env, cwd=REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    seeded = read_table(tmp_path / "work", "samples").select(SAMPLES.names).to_pylist()
    before = probe_outcomes(cfg0, pristine)
    after = probe_outcomes(load_config(config_file), seeded)
    assert {k: v for k, v in after.items() if k in before} == before
