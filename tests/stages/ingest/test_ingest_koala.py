"""Koala-36M ingest: streamed, vectorised CSV reading into `samples` rows."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import av
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manifests.io import list_parts, read_table
from manifests.schema import CATEGORIES, SAMPLES, make_sample_id
from pipeline.curate.config import KoalaConfig
from pipeline.curate.demo import koala as demo
from stages.ingest.core import ingest_unit
from stages.ingest.csv_blocks import CsvBlocks
from stages.ingest.koala import TIMESTAMP_RE, KoalaAdapter


def ingest(cfg: KoalaConfig, workdir: Path, rows_per_part: int = 100_000):
    adapter = KoalaAdapter(cfg)
    results = [ingest_unit(adapter, u, workdir, rows_per_part=rows_per_part) for u in adapter.units()]
    return results, read_table(workdir, "samples")


def expected_id(row: dict) -> str:
    """The id recomputed in Python from the row's raw record (the adapter computes it in SQL)."""
    raw = json.loads(row["raw_record"])
    if "csv_row" in raw:
        return make_sample_id("koala", "csv-invalid-row", raw["file"], raw["csv_row"], raw["occurrence"])
    m = re.match(TIMESTAMP_RE, raw["timestamp"])
    key = (raw["videoID"], m.group(1), m.group(5)) if m else (raw["videoID"], raw["timestamp"])
    return make_sample_id("koala", *key)


def write_csv(path: Path, rows: list[list], header: list[str] = demo.COLUMNS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def demo_root(tmp_path):
    info = demo.build(tmp_path / "koala")
    return tmp_path / "koala", info


def test_demo_rows_ids_windows_and_errors(demo_root, tmp_path):
    root, info = demo_root
    cfg = KoalaConfig(root=root, video_root=info["video_root"], download="youtube")
    results, t = ingest(cfg, tmp_path / "w")
    assert [(r.rows, r.errors) for r in results] == [(info["rows"], info["errors"])]
    assert t.schema.equals(SAMPLES, check_metadata=False)
    rows = t.to_pylist()
    assert len(rows) == info["rows"] == len(demo.ROWS)

    for row, (vid, ts, caption, scores) in zip(rows, demo.ROWS):
        assert row["sample_id"] == expected_id(row)
        assert (row["dataset"], row["modality"], row["task"]) == ("koala", "video", "t2v")
        assert row["category"] == "motion" and row["category"] in CATEGORIES and row["category_raw"] is None
        assert row["source_uri"] is None and row["subset"] == "Koala_36M_1"
        raw = json.loads(row["raw_record"])
        assert raw["videoID"] == vid and raw["timestamp"] == ts and raw["url"].endswith(demo.youtube_id(vid))
        assert json.loads(row["extra"]) == {"youtube_id": demo.youtube_id(vid)}
        assert dict(row["native_scores"]) == dict(zip(demo.COLUMNS[4:], scores))
        if row["error"] is None:
            m = re.match(TIMESTAMP_RE, ts)
            assert row["sample_id"] == make_sample_id("koala", vid, m.group(1), m.group(5))
            assert row["caption"] == row["instruction"] == caption
            target = Path(row["target_uri"])
            # whole YouTube videos: the clip's videoID is <youtube_id>_<n>, the file <youtube_id>.mp4
            assert target == Path(info["video_root"]).resolve() / f"{demo.youtube_id(vid)}.mp4" and target.is_file()
            with av.open(str(target)) as container:  # the demo windows lie inside the real clips
                assert 0 <= row["clip_start_s"] < row["clip_end_s"] <= container.duration / 1e6
        else:
            assert row["target_uri"] is None and row["clip_start_s"] is None

    assert rows[0]["clip_start_s"] == 0.2 and rows[0]["clip_end_s"] == 1.4
    assert [r["error"] for r in rows[-3:]] == [
        "unparsable timestamp: [00:00:00.1 to 00:00:01.0]",
        "empty clip window: end <= start",
        "missing caption",
    ]
    # same video, different windows: different samples
    assert len({r["sample_id"] for r in rows}) == len(rows)


def test_reruns_give_the_same_ids_and_bytes(demo_root, tmp_path):
    root, info = demo_root
    cfg = KoalaConfig(root=root, video_root=info["video_root"], download="youtube")
    _, a = ingest(cfg, tmp_path / "w1")
    _, b = ingest(cfg, tmp_path / "w2")
    assert a["sample_id"].to_pylist() == b["sample_id"].to_pylist()
    pa_, pb = list_parts(tmp_path / "w1", "samples"), list_parts(tmp_path / "w2", "samples")
    assert [p.name for p in pa_] == [p.name for p in pb]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(pa_, pb))
    # a third run into the first workdir is skipped: the unit is done
    results, _ = ingest(cfg, tmp_path / "w1")
    assert all(r.skipped for r in results)


def test_cut_files_pattern_and_edge_rows(tmp_path):
    root = tmp_path / "k"
    root.mkdir()
    ok = "['01:00:00.005', '01:00:02.250']"
    odd_id = 'q"uo\x1ftÉ😀'  # a quote, a control char DuckDB's JSON spells differently, non-ASCII
    rows = [
        ["plainID0001", "u", ok, "fine", "0.5", "n/a", "", "0.9"],
        ["plainID0001", "u", '["100:00:00","100:00:01.5"]', "caption, with comma\nand a newline", 1, 2, 3, 4],
        [odd_id, "u", ok, "odd id", 1, 2, 3, 4],
        ["", "u", ok, "no id", 1, 2, 3, 4],
        ["a/b", "u", ok, "slash", 1, 2, 3, 4],
        ["a\\b", "u", ok, "backslash", 1, 2, 3, 4],
        ["..", "u", ok, "dot-dot", 1, 2, 3, 4],
        ["plainID0001", "u", "['00:75:00.000', '00:76:00.000']", "minutes out of range", 1, 2, 3, 4],
        ["plainID0001", "u", ok, "too", "many", "fields", 1, 2, 3, 4],
    ]
    write_csv(root / "Koala_36M_2.csv", rows)
    videos = tmp_path / "cut"
    videos.mkdir()
    cfg = KoalaConfig(root=root, video_root=videos, download="clips",
                      video_pattern="{videoID}/{start_s}-{end_s}_{start}.mp4")
    results, t = ingest(cfg, tmp_path / "w")
    got = t.to_pylist()
    assert results[0].rows == len(rows) == len(got)
    assert all(r["sample_id"] == expected_id(r) for r in got)
    by_caption = {json.loads(r["raw_record"]).get("caption"): r for r in got}

    fine = by_caption["fine"]
    assert fine["error"] is None and fine["clip_start_s"] is None and fine["clip_end_s"] is None
    assert fine["target_uri"] == f"{videos.resolve()}/plainID0001/3600.005-3602.250_01:00:00.005.mp4"
    assert dict(fine["native_scores"]) == {"clarity_score": 0.5, "video_training_suitability_score": 0.9}

    multi = by_caption["caption, with comma\nand a newline"]
    assert multi["error"] is None and multi["caption"] == "caption, with comma\nand a newline"
    assert multi["target_uri"].endswith("/plainID0001/360000.000-360001.500_100:00:00.mp4")

    odd = by_caption["odd id"]
    assert odd["error"] is None and odd["sample_id"] == make_sample_id("koala", odd_id, "01:00:00.005", "01:00:02.250")

    assert by_caption["no id"]["error"] == "missing videoID"
    assert by_caption["slash"]["error"] == by_caption["backslash"]["error"] == "videoID contains a path separator"
    assert by_caption["dot-dot"]["error"].startswith("path escapes video_root")
    assert by_caption["minutes out of range"]["error"].startswith("unparsable timestamp")
    bad = [r for r in got if "csv_row" in json.loads(r["raw_record"])]
    assert len(bad) == 1 and bad[0]["error"] == "malformed CSV row: 10 fields, expected 8"
    assert "too,many,fields" in json.loads(bad[0]["raw_record"])["csv_row"]


def test_invalid_utf8_costs_only_the_bad_characters(tmp_path):
    good = "['0:00:00', '0:00:01']"
    with open(tmp_path / "Koala_36M_1.csv", "wb") as f:
        f.write(b"videoID,url,timestamp,caption\n")
        f.write(f"v1,u,\"{good}\",caf\xe9 ok\n".encode("latin-1"))  # latin-1 byte, not UTF-8
        f.write(f"v2,u,\"{good}\",fine\n".encode())
        f.write(b"short,row\n")  # reported once, though its block is parsed twice
    _, t = ingest(KoalaConfig(root=tmp_path, video_root=tmp_path, download="youtube"), tmp_path / "w")
    assert t["caption"].to_pylist() == ["caf\ufffd ok", "fine", None]
    assert t["error"].to_pylist() == [None, None, "malformed CSV row: 2 fields, expected 4"]


def test_a_stray_quote_does_not_grow_blocks_without_bound(tmp_path):
    """pyarrow reads a quote inside an unquoted field literally; the block cutter's quote parity
    is then off, and only the growth cap keeps it from reading the rest of the file as one block."""
    ts = "\"['0:00:00', '0:00:01']\""
    lines = ["videoID,url,timestamp,caption", f'v0,u,{ts},a 5" screen'] + [f"v{i},u,{ts},row {i}" for i in range(1, 200)]
    path = tmp_path / "Koala_36M_1.csv"
    path.write_text("\n".join(lines) + "\n")
    blocks = CsvBlocks.open(path, 256, max_block_size=1024)
    pairs = list(blocks.tables())
    assert max(t.num_rows for t, _ in pairs) < 40  # ~6 rows per 256 B block, at most ~1 KB's worth
    assert [r for t, _ in pairs for r in t["caption"].to_pylist()] == ['a 5" screen'] + [f"row {i}" for i in range(1, 200)]
    assert not any(bad for _, bad in pairs)


def test_units_are_csvs_in_natural_order(tmp_path):
    for n in (10, 2, 1):
        write_csv(tmp_path / f"Koala_36M_{n}.csv", [[f"vid{n}", "u", "['0:00:00', '0:00:01']", "c", 1, 1, 1, 1]])
    (tmp_path / "notes.csv").write_text("ignored\n")
    units = KoalaAdapter(KoalaConfig(root=tmp_path, video_root=tmp_path, download="youtube")).units()
    assert [Path(u.path).name for u in units] == ["Koala_36M_1.csv", "Koala_36M_2.csv", "Koala_36M_10.csv"]
    assert len({u.key for u in units}) == 3


def test_header_without_required_columns_is_a_unit_error(tmp_path):
    write_csv(tmp_path / "Koala_36M_1.csv", [["v", "u", "['0:00:00', '0:00:01']"]],
              header=["videoID", "url", "timestamp"])
    results, t = ingest(KoalaConfig(root=tmp_path, video_root=tmp_path, download="youtube"), tmp_path / "w")
    assert (results[0].rows, results[0].errors) == (1, 1)
    assert "lacks required columns ['caption']" in t["error"][0].as_py()


@pytest.mark.parametrize("pattern", ["../{videoID}.mp4", "{videoID}/{duration}.mp4", "/abs/{videoID}.mp4",
                                     "{start_s:.1f}.mp4"])
def test_bad_video_pattern_fails_the_unit_loudly(demo_root, tmp_path, pattern):
    root, info = demo_root
    cfg = KoalaConfig(root=root, video_root=info["video_root"], download="youtube", video_pattern=pattern)
    results, t = ingest(cfg, tmp_path / "w")
    assert (results[0].rows, results[0].errors) == (1, 1)
    assert "video_pattern" in t["error"][0].as_py()


def test_streams_in_bounded_blocks(tmp_path):
    """A CSV several times the block size is read block by block, never whole."""
    path = demo.write_synthetic_csv(tmp_path / "k" / "Koala_36M_1.csv", rows=4000, seed=1)
    valid_rows = pacsv.read_csv(path).num_rows
    with open(path, "a", encoding="utf-8") as f:  # broken rows, one repeated, after the 4000
        f.write("short,row\nshort,row\nx,y,z,w,1,2,3,4,5\n")
    size_mb = path.stat().st_size / 2**20
    assert size_mb > 4
    cfg = KoalaConfig(root=tmp_path / "k", video_root=tmp_path / "videos", download="youtube", read_block_mb=1)
    adapter = KoalaAdapter(cfg)
    (unit,) = adapter.units()
    tables = [x for x in adapter.read(unit) if isinstance(x, pa.Table)]
    assert len(tables) >= int(size_mb)  # at least one table per ~1 MB block
    assert max(x.nbytes for x in tables) < 4 * 2**20

    result = ingest_unit(adapter, unit, tmp_path / "w", rows_per_part=700)
    assert valid_rows == 4000
    assert (result.rows, result.errors) == (4003, 3)
    assert result.parts == len(list_parts(tmp_path / "w", "samples")) == 6
    t = read_table(tmp_path / "w", "samples")
    assert t.num_rows == 4003 and t["error"].null_count == 4000
    assert all(r["sample_id"] == expected_id(r) for r in t.select(["sample_id", "raw_record"]).to_pylist())
    assert len(set(t["sample_id"].to_pylist())) == 4003

    # the same bytes on a re-run, and the same ids whatever the block size
    ingest_unit(adapter, unit, tmp_path / "w2", rows_per_part=700)
    parts1, parts2 = list_parts(tmp_path / "w", "samples"), list_parts(tmp_path / "w2", "samples")
    assert [p.read_bytes() for p in parts1] == [p.read_bytes() for p in parts2]
    big = KoalaAdapter(cfg.model_copy(update={"read_block_mb": 3}))
    ingest_unit(big, unit, tmp_path / "w3")
    assert sorted(read_table(tmp_path / "w3", "samples")["sample_id"].to_pylist()) == sorted(t["sample_id"].to_pylist())


text = st.text(alphabet=st.sampled_from(list('ab ,"\n\r\'xé')), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(text, text, text), min_size=0, max_size=25),
       block=st.integers(min_value=1, max_value=64), bom=st.booleans(), crlf=st.booleans(),
       final_newline=st.booleans())
def test_block_reader_matches_a_whole_file_read(tmp_path, rows, block, bom, crlf, final_newline):
    """Cutting at record boundaries (quote parity) never splits or loses a record, whatever the
    block size, quoted newlines and quotes, BOM, CRLF or missing final newline."""
    buf = io.StringIO()
    # with "\n" line ends a bare "\r" would go unquoted (and is a line end to pyarrow): quote all
    csv.writer(buf, lineterminator="\r\n" if crlf else "\n",
               quoting=csv.QUOTE_MINIMAL if crlf else csv.QUOTE_ALL).writerows([("h1", "h2", "h3"), *rows])
    data = buf.getvalue().encode()
    if not final_newline:
        data = data.rstrip(b"\r\n")
    path = tmp_path / f"t{block}.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)

    blocks = CsvBlocks.open(path, block)
    assert blocks.columns == ["h1", "h2", "h3"]
    pairs = list(blocks.tables())
    got = [r for table, _ in pairs for r in table.to_pylist()]
    bad = [r for _, invalid in pairs for r in invalid]
    assert not bad
    if not rows:
        assert got == []
        return
    whole = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                           convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in blocks.columns}))
    assert got == whole.to_pylist() and len(got) == len(rows)


def test_config_naming_no_download_form_fails_naming_the_field_and_both_choices(tmp_path):
    from pipeline.config_base import ConfigError
    from pipeline.curate.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"datasets:\n  koala:\n    root: {tmp_path}\n    video_root: {tmp_path}\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    msg = str(e.value)
    assert "datasets.koala.download" in msg and "'youtube'" in msg and "'clips'" in msg


def test_precut_clips_form_points_at_videoid_files_without_a_window(demo_root, tmp_path):
    root, info = demo_root
    cfg = KoalaConfig(root=root, video_root=info["clips_root"], download="clips")
    _, t = ingest(cfg, tmp_path / "w")
    rows = [r for r in t.to_pylist() if r["error"] is None]
    assert len(rows) == info["rows"] - info["errors"]
    for row in rows:
        vid = json.loads(row["raw_record"])["videoID"]
        target = Path(row["target_uri"])
        assert target == Path(info["clips_root"]).resolve() / f"{vid}.mp4" and target.is_file()
        assert row["clip_start_s"] is None and row["clip_end_s"] is None
        with av.open(str(target)) as c:  # the pre-cut clip is about as long as its window
            m = re.match(TIMESTAMP_RE, json.loads(row["raw_record"])["timestamp"])
            window = (float(m.group(8)) - float(m.group(4))) + 60 * (int(m.group(7)) - int(m.group(3)))
            assert abs(c.duration / 1e6 - window) < 0.2


def test_youtube_id_from_url_or_from_videoid(tmp_path):
    root = tmp_path / "k"
    root.mkdir()
    ts = "['00:00:01.000', '00:00:02.000']"
    write_csv(root / "Koala_36M_1.csv", [
        ["abcdefghijk_12", "https://www.youtube.com/watch?v=ZYXWVUTSRQP&t=3", ts, "url wins", 1, 2, 3, 4],
        ["a_b-cdefghi_3", "", ts, "no url", 1, 2, 3, 4],
        ["x_1", "https://youtu.be/A1b2C3d4E5f", ts, "short url", 1, 2, 3, 4],
        ["plainid", "not a url", ts, "no suffix", 1, 2, 3, 4],
    ])
    cfg = KoalaConfig(root=root, video_root=tmp_path, download="youtube")
    _, t = ingest(cfg, tmp_path / "w")
    got = {r["caption"]: r for r in t.to_pylist()}
    want = {"url wins": "ZYXWVUTSRQP", "no url": "a_b-cdefghi", "short url": "A1b2C3d4E5f", "no suffix": "plainid"}
    for caption, yt in want.items():
        assert got[caption]["target_uri"] == f"{tmp_path.resolve()}/{yt}.mp4"
        assert json.loads(got[caption]["extra"])["youtube_id"] == yt
        assert got[caption]["clip_start_s"] == 1.0 and got[caption]["clip_end_s"] == 2.0
    # the pattern may name both ids
    cfg = KoalaConfig(root=root, video_root=tmp_path, download="clips", video_pattern="{youtube_id}/{videoID}.mp4")
    _, t = ingest(cfg, tmp_path / "w2")
    assert {r["target_uri"] for r in t.to_pylist()} >= {f"{tmp_path.resolve()}/ZYXWVUTSRQP/abcdefghijk_12.mp4"}


def test_a_large_csv_is_read_as_byte_ranges_with_the_same_rows(tmp_path):
    """Captions with quoted newlines (even quote counts across lines) must not be cut: every range
    starts on a record boundary, so the rows and ids equal those of one unit over the file."""
    ts = "['0:00:00', '0:00:01']"
    rows = [[f"v{i}_0", "u", ts, f'clip {i}, "quoted"\nsecond line {i}' if i % 7 == 0 else f"clip {i} " + "w" * 200,
             0.5, 5.0, 0.3, 0.9] for i in range(12_000)]
    write_csv(tmp_path / "Koala_36M_1.csv", rows)
    assert (tmp_path / "Koala_36M_1.csv").stat().st_size > 2 << 20
    whole = KoalaConfig(root=tmp_path, video_root=tmp_path, download="youtube", unit_mb=64)
    split = KoalaConfig(root=tmp_path, video_root=tmp_path, download="youtube", unit_mb=1, read_block_mb=1)
    assert len(KoalaAdapter(whole).units()) == 1 and len(KoalaAdapter(split).units()) >= 3
    _, one = ingest(whole, tmp_path / "one")
    results, many = ingest(split, tmp_path / "many")
    key = lambda t: sorted(t.to_pylist(), key=lambda r: r["sample_id"])  # noqa: E731
    assert key(many) == key(one) and many.num_rows == 12_000 and many["error"].null_count == 12_000
    # a unit killed before finishing is redone alone: the others are skipped
    from stages.ingest.core import done_marker
    units = KoalaAdapter(split).units()
    done_marker(tmp_path / "many", units[1]).unlink()
    again = [ingest_unit(KoalaAdapter(split), u, tmp_path / "many") for u in units]
    assert [r.skipped for r in again] == [i != 1 for i in range(len(units))]
