"""`curate prune` over hand-made encoded parts (no Ray): the rows of samples no longer kept go, a
part holding only such rows is deleted, one holding some is rewritten under the name of the
samples it keeps, the kept rows are untouched, and --dry-run changes nothing; an older workdir's
fingerprint forgets the selection."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from _shard_fixtures import build_run
from conftest import part_digests
from manifests.io import read_table, table_dir, write_part
from stages.encode.prune import prune, stale_by_part
from stages.encode.stage import part_name


def _rows(work) -> dict[str, bytes]:
    t = read_table(work, "encoded")
    return {r["key"]: (r["sample_id"], r["tensors"]) for r in t.to_pylist()}


def test_prune_deletes_and_rewrites_only_what_is_no_longer_kept(tmp_path):
    build_run(tmp_path)  # every fifth sample rejected; two encoded parts per dataset
    sel = read_table(tmp_path, "selected").to_pylist()
    for r in sel:  # and now every koala sample too: both koala parts hold only rows no longer kept
        r["kept"] = r["kept"] and r["dataset"] != "koala"
    write_part(table_dir(tmp_path, "selected") / "part-00000.parquet", pa.Table.from_pylist(sel))
    kept = {r["sample_id"] for r in sel if r["kept"]}
    before = _rows(tmp_path)
    stale = {k for k, (sid, _) in before.items() if sid not in kept}
    assert stale and len(stale) < len(before)

    parts = part_digests(tmp_path, "encoded")
    ids_of = {rel: pq.read_table(tmp_path / rel, columns=["sample_id"])["sample_id"].to_pylist() for rel in parts}
    dry = prune(tmp_path, dry_run=True)
    assert dry.keys == len(stale) and part_digests(tmp_path, "encoded") == parts

    report = prune(tmp_path)
    assert report.keys == len(stale) and report.bytes > 0
    assert sorted(report.parts_deleted) == ["tables/encoded/koala/part-u00000.parquet",
                                            "tables/encoded/koala/part-u00001.parquet"]
    assert len(report.parts_rewritten) == 2  # the ditto and nhr_edit parts holding sample 4
    after = _rows(tmp_path)
    assert after == {k: v for k, v in before.items() if k not in stale}  # kept rows bit for bit
    for rel in report.parts_rewritten:  # renamed after the samples it keeps, in their order
        ids = list(dict.fromkeys(s for s in ids_of[rel] if s in kept))
        assert not (tmp_path / rel).exists()
        assert (tmp_path / rel).with_name(f"{part_name(ids)}.parquet").exists()
    for unchanged, digest in parts.items():  # parts without stale rows are not touched
        if (tmp_path / unchanged).exists():
            assert part_digests(tmp_path, "encoded")[unchanged] == digest
    assert stale_by_part(tmp_path) == {} and prune(tmp_path).keys == 0


def test_an_older_workdir_forgets_the_selection_in_its_fingerprint(tmp_path):
    """Workdirs encoded before re-curation was incremental fingerprinted the selection and the unit
    size; those keys are dropped, the settings that matter are kept (and still compared)."""
    import json

    from pipeline.stage import state_dir
    from stages.encode.upgrade import upgrade_record

    path = state_dir(tmp_path, "encoded") / "_fingerprint-all.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"encode": {"fps": 16.0}, "seed": 0, "samples_per_unit": 4,
                                "selection": {"kept": 3, "digest": "1"}}))
    upgrade_record(tmp_path)
    assert json.loads(path.read_text()) == {"encode": {"fps": 16.0}, "seed": 0}


def test_an_older_workdir_records_the_decoder_it_used(tmp_path):
    """While the decoder was the probe's setting, a run with the probe's check off recorded
    "decoder": "none" though decord decoded it; the record now names decord, what media.decoder's
    default (the same run today) fingerprints, so that workdir resumes."""
    import json

    from pipeline.stage import state_dir
    from stages.encode.upgrade import upgrade_record

    path = state_dir(tmp_path, "encoded") / "_fingerprint-all.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"seed": 0, "decoder": "none"}))
    upgrade_record(tmp_path)
    assert json.loads(path.read_text()) == {"seed": 0, "decoder": "decord"}
    path.write_text(json.dumps({"seed": 0, "decoder": "pyav"}))
    upgrade_record(tmp_path)
    assert json.loads(path.read_text()) == {"seed": 0, "decoder": "pyav"}
