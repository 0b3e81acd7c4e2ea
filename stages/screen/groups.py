"""Near-duplicate groups and benchmark matches over the whole corpus, in DuckDB (no all-pairs).

Frames are matched through equal *bands* of their 64-bit hashes (64 / band_bits slices). An exact
band rarely survives a few flipped bits (two hashes 4 bits apart share a 32-bit half about one
time in nine), so one side of the join *probes*: per band, every combination of the frame's weak
bits flipped (stages/screen/phash.py: the bits nearest the median, the ones a re-encode, a shifted
frame grid or a crop flips first; 4 a half on a clip's frames, 7 on a one-frame side's), at most
2**7 keys per 32-bit band, against the other side's exact bands. The exact side holds every
informative frame's hash and the *window* hashes of a few frames per sample (sub-windows of the
frame with each edge cut by 0 or 7 %), so a copy cropped by up to ~10 % from any sides, whose
whole frame looks like one of the original's windows, meets it in the same join. A candidate pair
needs a probe within ``match_bits`` bits of an exact hash, on two of its frames where both samples
have several; it is then checked on all its frames (Hamming distance by ``bit_count(xor)``):
whole frame against whole frame, or the whole frames of one against one window (the same window on
every frame: a crop is the same on the whole clip) of the other. The join only ever meets rows in
one band bucket, so it grows with the corpus, not with its square, and DuckDB spills to disk under
its memory limit; past PART_SAMPLES samples it runs partition by partition of the band value, so
no hash table outgrows the one of a PART_SAMPLES corpus.

Duplicates are pairs of the same kind whose target frames match (for edit pairs, and whose source
frames match too: the same source edited twice is two samples); the groups are the connected
components, found by propagating the smallest key; the keeper is the member no other screen rule
drops, then the smallest sample_id. A benchmark match is a sample whose source or target frames
match at least ``min_matched_frames`` frames of one benchmark clip (a temporal overlap is enough),
whole frames or through one window of either. Uninformative frames and flat windows take part in
nothing.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from math import comb
from pathlib import Path

from stages.screen.phash import ONE_FRAME_WEAK_PER_HALF, WEAK_PER_HALF, WINDOWS

VALID_BAND_BITS = (16, 32)
# The candidate join's exact side (the hash table) is cut into power-of-two partitions by its band
# value's low bits once the corpus passes this many samples, so each join's hash table stays about
# this size at any corpus size: a lookup into a table ten times larger costs more (cache and TLB
# misses), which made the join grow faster than the corpus.
PART_SAMPLES = 131_072


def window_bits(match_bits: int, tests: int = 2 * len(WINDOWS)) -> int:
    """The bit limit of a window match where a side has ONE frame (an image, a one-frame clip).

    A video pair needs the same window matched on two frames, two coincidences; a one-frame pair
    has a single frame, and its window match is any of ``tests`` comparisons (each window of either
    side against the other's whole frame) where a whole-frame match is one. So the window match
    gets the largest limit at which ``tests`` comparisons of unrelated hashes (uniform bits) are no
    likelier to pass than one comparison at ``match_bits``: 8 for 10.
    """
    def tail(t: int) -> int:
        return sum(comb(64, k) for k in range(t + 1))
    t = match_bits
    while t > 0 and tests * tail(t) > tail(match_bits):
        t -= 1
    return t


def _bands_sql(frames: str, band_bits: int, bands: list[int] | None = None) -> str:
    """Every row of ``frames`` once per band: (its columns, band, v = the band's bits)."""
    mask = (1 << band_bits) - 1
    bands = range(64 // band_bits) if bands is None else bands
    parts = [f"SELECT *, {b} AS band, (h >> {b * band_bits}) & {mask} AS v FROM {frames}" for b in bands]
    return " UNION ALL ".join(parts)


def _peeled_sql(weak: str, band_bits: int, shift: int) -> str:
    """The weak bits of one band that its probes flip: all of them, or the lowest
    ONE_FRAME_WEAK_PER_HALF where a band has more (a hash from phash never has; kept so every
    input gets a bounded number of probes)."""
    wb = f"coalesce(({weak} >> {shift}) & {(1 << band_bits) - 1}, 0)"
    most = ONE_FRAME_WEAK_PER_HALF
    return (f"CASE WHEN bit_count({wb}) <= {most} THEN {wb} ELSE list_sum(list_transform(list_slice(list_filter("
            f"range({band_bits}), lambda i: (({wb} >> i) & 1) = 1), 1, {most}), lambda i: 1::BIGINT << i))::BIGINT END")


def _probes_sql(frames: str, cols: str, band_bits: int, bands: list[int] | None = None,
                part: tuple[int, int] | None = None) -> str:
    """Every row of ``frames`` (``cols`` and h, weak) once per band and per combination of the weak
    bits of that band flipped: (cols, h, band, v).

    The weak bits are peeled off one at a time, lowest first (``w & -w`` is the lowest set bit,
    ``w & (w - 1)`` the rest), so each probe is plain integer arithmetic on its row (the list
    lambdas this replaced cost more than the join). A band with more than WEAK_PER_HALF weak bits
    (a one-frame side's) has up to ONE_FRAME_WEAK_PER_HALF peeled, the others WEAK_PER_HALF.

    ``part`` = (low, p) makes only the probes with ``v & low = p`` (one partition of the join): a
    frame makes some only where its band agrees with p outside its weak bits, and then the weak
    bits under ``low`` are set by p, not enumerated, so no probe is made and thrown away (making
    every probe of every near frame and filtering them cost 1.4x the probes, and the filter
    computed each probe's value twice)."""
    mask = (1 << band_bits) - 1
    low, p = part or (0, 0)
    parts = []
    for b in (range(64 // band_bits) if bands is None else bands):
        shift = b * band_bits
        near = ""
        if low:  # first on all the weak bits (plain integer arithmetic), then on those peeled
            near = f" WHERE (xor(h >> {shift}, {p}) & {low} & ~coalesce(weak >> {shift}, 0)) = 0"
        base = (f"SELECT {cols}, h, (h >> {shift}) & {mask} AS v0, {_peeled_sql('weak', band_bits, shift)} AS pw "
                f"FROM {frames}{near}")
        if low:
            base = (f"SELECT {cols}, h, (v0 & {~low & mask}) | {p} AS v0, pw & {~low & mask} AS pw FROM ({base}) "
                    f"WHERE (xor(v0, {p}) & {low} & ~pw) = 0")
        # a clip frame's band has at most WEAK_PER_HALF weak bits: it skips the later peels' arithmetic;
        # the frames are read once for both (a partition's join reads them all, for the few near it)
        branches = []
        for peels, where in ((WEAK_PER_HALF, f"bit_count(pw) <= {WEAK_PER_HALF}"),
                             (ONE_FRAME_WEAK_PER_HALF, f"bit_count(pw) > {WEAK_PER_HALF}")):
            peeled = f"SELECT {cols}, h, v0, pw AS w0 FROM nb WHERE {where}"
            for i in range(1, peels + 1):
                peeled = f"SELECT *, w{i - 1} & -w{i - 1} AS m{i}, w{i - 1} & (w{i - 1} - 1) AS w{i} FROM ({peeled})"
            v = "v0"
            for i in range(1, peels + 1):
                v = f"xor({v}, m{i} * ((j >> {i - 1}) & 1))"
            branches.append(f"""
          SELECT {cols}, h, {b} AS band, {v} AS v
          FROM (SELECT *, unnest(range(1::BIGINT << bit_count(w0))) AS j FROM ({peeled}))""")
        parts.append(f"SELECT * FROM (WITH nb AS MATERIALIZED ({base}) {' UNION ALL '.join(branches)})")
    return " UNION ALL ".join(parts)


def frames_sql(screens: str) -> str:
    """Informative frames (sample_id, kind, side, k, h, weak, t) of a screens relation."""
    sides = []
    for side in ("target", "source"):
        sides.append(
            f"SELECT sample_id, kind, '{side}' AS side, unnest(range(len({side}_hashes))) AS k, "
            f"unnest({side}_hashes) AS h, unnest({side}_weak) AS weak, unnest({side}_informative) AS inf, "
            f"unnest({side}_times) AS t FROM {screens} WHERE error_kind IS NULL AND {side}_hashes IS NOT NULL")
    return f"SELECT sample_id, kind, side, k, h::BIGINT AS h, weak::BIGINT AS weak, t FROM ({' UNION ALL '.join(sides)}) WHERE inf"


def windows_sql(screens: str) -> str:
    """Window hashes (sample_id, kind, side, k, w, h, t) of a screens relation, flat windows left out."""
    n = len(WINDOWS)
    sides = []
    for side in ("target", "source"):
        sides.append(
            f"SELECT sample_id, kind, '{side}' AS side, {side}_window_frames[i // {n} + 1]::BIGINT AS k, "
            f"(i % {n})::INTEGER AS w, {side}_windows[i + 1] AS h, "
            f"{side}_times[{side}_window_frames[i // {n} + 1] + 1] AS t FROM "
            f"(SELECT *, unnest(range(len({side}_windows))) AS i FROM {screens} "
            f"WHERE error_kind IS NULL AND {side}_windows IS NOT NULL)")
    return f"SELECT sample_id, kind, side, k, w, h::BIGINT AS h, t FROM ({' UNION ALL '.join(sides)}) WHERE h IS NOT NULL"


def _matched_sql(pairs: str, side: str, bits: int) -> str:
    """Per candidate pair (a, b): frames of a / of b on ``side`` with a match in the other."""
    return f"""
      SELECT p.a, p.b,
             count(DISTINCT fa.k) FILTER (WHERE bit_count(xor(fa.h, fb.h)) <= {bits}) AS ma,
             count(DISTINCT fb.k) FILTER (WHERE bit_count(xor(fa.h, fb.h)) <= {bits}) AS mb
      FROM {pairs} p JOIN frames fa ON fa.sample_id = p.a AND fa.side = '{side}'
                     JOIN frames fb ON fb.sample_id = p.b AND fb.side = '{side}'
      GROUP BY p.a, p.b"""


def _window_matched_sql(pairs: str, side: str, bits: int, whole: str, cropped: str) -> str:
    """Per candidate pair (a, b) and window w of ``cropped`` (a or b): frames of ``whole`` matching
    window w of some frame of ``cropped`` (ma), and ``cropped``'s frames whose window w matches (mb);
    ta, tb: the same within window_bits (what a one-frame side needs)."""
    tight = window_bits(bits)
    return f"""
      SELECT p.a, p.b, fw.w,
             count(DISTINCT fa.k) FILTER (WHERE bit_count(xor(fa.h, fw.h)) <= {bits}) AS ma,
             count(DISTINCT fw.k) FILTER (WHERE bit_count(xor(fa.h, fw.h)) <= {bits}) AS mb,
             count(DISTINCT fa.k) FILTER (WHERE bit_count(xor(fa.h, fw.h)) <= {tight}) AS ta,
             count(DISTINCT fw.k) FILTER (WHERE bit_count(xor(fa.h, fw.h)) <= {tight}) AS tb
      FROM {pairs} p JOIN frames fa ON fa.sample_id = p.{whole} AND fa.side = '{side}'
                     JOIN wins fw ON fw.sample_id = p.{cropped} AND fw.side = '{side}'
      GROUP BY p.a, p.b, fw.w"""


def _side_ok_sql(pairs: str, side: str, cfg) -> str:
    """Pairs (a, b) of ``pairs`` whose ``side`` frames match: whole frames against whole frames,
    or the whole frames of one against one window of the other's frames."""
    bits, share, least = cfg.match_bits, cfg.duplicate_share, cfg.min_matched_frames

    def passes(m: str, na: str, nb: str, a: str = "ma", b: str = "mb") -> str:
        return f"({m}.{a} >= least({least}, {na}.n) AND {m}.{b} >= least({least}, {nb}.n) " \
               f"AND greatest({m}.{a} / {na}.n, {m}.{b} / {nb}.n) >= {share})"

    def window_passes(m: str, na: str, nb: str) -> str:
        # a side with fewer than min_matched_frames frames shows one coincidence, not several:
        # its window match must be within window_bits
        return f"(CASE WHEN {na}.n >= {least} AND {nb}.n >= {least} THEN {passes(m, na, nb)} " \
               f"ELSE {passes(m, na, nb, 'ta', 'tb')} END)"

    parts = [f"""SELECT m.a, m.b FROM ({_matched_sql(pairs, side, bits)}) m
                 JOIN nframes na ON na.sample_id = m.a AND na.side = '{side}'
                 JOIN nframes nb ON nb.sample_id = m.b AND nb.side = '{side}'
                 WHERE {passes('m', 'na', 'nb')}"""]
    for whole, cropped in (("a", "b"), ("b", "a")):
        parts.append(f"""SELECT m.a, m.b FROM ({_window_matched_sql(pairs, side, bits, whole, cropped)}) m
                 JOIN nframes na ON na.sample_id = m.{whole} AND na.side = '{side}'
                 JOIN nwins nb ON nb.sample_id = m.{cropped} AND nb.side = '{side}'
                 WHERE {window_passes('m', 'na', 'nb')}""")
    return " UNION ".join(parts)


def _temp_dir(con) -> str:
    d = con.execute("SELECT current_setting('temp_directory')").fetchone()[0] or ".tmp"
    Path(d).mkdir(parents=True, exist_ok=True)
    return d


def _candidate_band(con, band: int, bb: int, bits: int, tw: str, parts: int, spill: Path | None) -> None:
    """cand_hits rows (a, b, fa, fb: the frames of a and b that met) of one band's join.

    With ``parts`` > 1 the exact rows are written once as Parquet partitions by ``v & (parts - 1)``
    and each partition is joined on its own; a partition's probes come from the target frames whose
    band agrees with it outside their weak bits (a probe only flips weak bits), and each probe is
    made for its own partition only (_probes_sql ``part``), so all partitions make each probe once."""
    mask = (1 << bb) - 1
    shift = band * bb
    exact = f"(SELECT sid, kid, k, h FROM tf UNION ALL SELECT sid, kid, k, h FROM {tw})"
    hits = """INSERT INTO cand_hits
          SELECT DISTINCT least(x.sid, y.sid), greatest(x.sid, y.sid),
                 CASE WHEN x.sid < y.sid THEN x.k ELSE y.k END, CASE WHEN x.sid < y.sid THEN y.k ELSE x.k END
          FROM tp x JOIN te y ON x.v = y.v AND x.kid = y.kid AND x.sid <> y.sid
          WHERE bit_count(xor(x.h, y.h)) <= {bits}"""
    if parts == 1:
        con.execute(f"""WITH tp AS ({_probes_sql('tf', 'sid, kid, k', bb, [band])}),
               te AS ({_bands_sql(exact, bb, [band])}) """ + hits.format(bits=bits))
        return
    low = parts - 1
    folder = spill / f"band{band}"
    # two plain columns (the ids packed in one): random hashes neither compress nor fit a
    # dictionary, and trying both cost a third of the write
    con.execute(f"""COPY (SELECT h, (sid::BIGINT << 24) | (kid::BIGINT << 16) | k AS id,
                           ((h >> {shift}) & {low})::INTEGER AS p FROM {exact})
                    TO '{folder}' (FORMAT parquet, PARTITION_BY (p), DICTIONARY_SIZE_LIMIT 1, COMPRESSION 'uncompressed')""")
    for p in range(parts):
        files = sorted((folder / f"p={p}").glob("*.parquet"))
        if not files:
            continue
        listing = ", ".join(f"'{f}'" for f in files)
        con.execute(f"""WITH tp AS ({_probes_sql('tf', 'sid, kid, k', bb, [band], (low, p))}),
               te AS (SELECT (id >> 24)::UINTEGER AS sid, ((id >> 16) & 255)::UTINYINT AS kid, (id & 65535)::SMALLINT AS k,
                             h, (h >> {shift}) & {mask} AS v FROM read_parquet([{listing}])) """
                    + hits.format(bits=bits))


def build(con, screens: str, cfg, benchmark_frames: str | None = None, part_samples: int = PART_SAMPLES) -> None:
    """Create ``verdict`` (sample_id, dataset, duplicate_of, ...) in ``con`` from a screens relation
    (a table or view name) and optionally the benchmark frames (benchmark, clip, k, w, h, weak, t;
    w = -1 for a whole frame, else its window)."""
    bits, bb, least, tight = cfg.match_bits, cfg.band_bits, cfg.min_matched_frames, window_bits(cfg.match_bits)
    if bb not in VALID_BAND_BITS:
        raise ValueError(f"screen.band_bits: {bb} is not one of {VALID_BAND_BITS}")
    # Only integer-keyed rows are held for the whole corpus (ids, and the target frames: 8 a
    # sample), the windows (60 a sample) are streamed from the screens relation; the string-keyed
    # frame and window rows the checks read are made for the few samples with a candidate or a hit.
    con.execute(f"""CREATE OR REPLACE TEMP TABLE ids AS
      SELECT sample_id, row_number() OVER (ORDER BY sample_id)::UINTEGER AS sid,
             dense_rank() OVER (ORDER BY kind)::UTINYINT AS kid,
             len(list_filter(target_informative, lambda i: i)) AS nf
      FROM {screens} WHERE error_kind IS NULL AND target_hashes IS NOT NULL""")
    target = f"""(SELECT i.sid, i.kid, s.target_hashes, s.target_weak, s.target_informative, s.target_windows,
                         s.target_window_frames FROM {screens} s JOIN ids i USING (sample_id))"""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE tf AS SELECT sid, kid, k::SMALLINT AS k, h::BIGINT AS h, weak::BIGINT AS weak FROM (
               SELECT sid, kid, unnest(range(len(target_hashes))) AS k, unnest(target_hashes) AS h,
                      unnest(target_weak) AS weak, unnest(target_informative) AS inf FROM {target}) WHERE inf""")
    # a window row's k is the frame it was cut from
    tw = f"""(SELECT sid, kid, target_window_frames[i // {len(WINDOWS)} + 1]::SMALLINT AS k, h::BIGINT AS h FROM (
               SELECT sid, kid, target_window_frames, unnest(range(len(target_windows))) AS i,
                      unnest(target_windows) AS h FROM {target}) WHERE h IS NOT NULL)"""
    # ---- duplicates: candidates from the target frames' probes against the target frames' and
    # windows' exact bands (integer keys: the exact side is the join's hash table, ~68 rows a
    # sample a band), streamed from the screens relation, one band at a time
    con.execute("CREATE OR REPLACE TEMP TABLE cand_hits (a UINTEGER, b UINTEGER, fa SMALLINT, fb SMALLINT)")
    n = con.execute("SELECT count(*) FROM ids").fetchone()[0]
    parts = 1 << max(0, math.ceil(math.log2(max(n, 1) / part_samples))) if n > part_samples else 1
    spill = None
    if parts > 1:
        spill = Path(tempfile.mkdtemp(prefix="screen-bands-", dir=_temp_dir(con)))
    try:
        for band in range(64 // bb):
            _candidate_band(con, band, bb, bits, tw, parts, spill)
    finally:
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)
    # A pair of multi-frame samples needs band hits on two frames of one of them (one where
    # min_matched_frames is 1): the check below needs that many matched frames anyway, and a pair of unrelated frames that shares a
    # band by chance (their number grows with the square of the corpus) almost never has two.
    con.execute(f"""CREATE OR REPLACE TEMP TABLE cand AS
      SELECT ia.sample_id AS a, ib.sample_id AS b FROM (
        SELECT a, b FROM cand_hits GROUP BY a, b
        HAVING count(DISTINCT fa) >= {min(least, 2)} OR count(DISTINCT fb) >= {min(least, 2)}) c
      JOIN ids ia ON ia.sid = c.a JOIN ids ib ON ib.sid = c.b
      UNION
      SELECT ia.sample_id, ib.sample_id FROM (SELECT DISTINCT a, b FROM cand_hits) c
      JOIN ids ia ON ia.sid = c.a JOIN ids ib ON ib.sid = c.b
      WHERE ia.nf < {least} OR ib.nf < {least}""")
    # ---- contamination: any side of a sample against every benchmark clip, whole frames or windows
    if benchmark_frames is not None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE bframes AS SELECT benchmark, clip, k, w::INTEGER AS w, h::BIGINT AS h, "
                    f"weak::BIGINT AS weak, t FROM {benchmark_frames}")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE chits AS
          WITH fp AS ({_probes_sql(f'({frames_sql(screens)})', 'sample_id, side, k, t', bb)}),
               be AS ({_bands_sql('bframes', bb)}),
               bp AS ({_probes_sql('(SELECT * FROM bframes WHERE w < 0)', 'benchmark, clip, k, t', bb)}),
               we AS ({_bands_sql(f'({windows_sql(screens)})', bb)})
          SELECT DISTINCT fp.sample_id, fp.side, fp.k, fp.t, be.benchmark, be.clip, be.k AS bk, be.t AS bt,
                 'whole' AS via, be.w, be.w < 0 OR bit_count(xor(fp.h, be.h)) <= {tight} AS tight
          FROM fp JOIN be USING (band, v) WHERE bit_count(xor(fp.h, be.h)) <= {bits}
          UNION
          SELECT DISTINCT we.sample_id, we.side, we.k, we.t, bp.benchmark, bp.clip, bp.k AS bk, bp.t AS bt,
                 'window' AS via, we.w, bit_count(xor(bp.h, we.h)) <= {tight} AS tight
          FROM bp JOIN we USING (band, v) WHERE bit_count(xor(bp.h, we.h)) <= {bits}""")
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE chits (sample_id VARCHAR)")
    # ---- the frames and windows of the samples in a candidate pair or a benchmark hit
    con.execute(f"""CREATE OR REPLACE TEMP TABLE few AS SELECT * FROM {screens} WHERE sample_id IN
      (SELECT a FROM cand UNION SELECT b FROM cand UNION SELECT sample_id FROM chits)""")
    con.execute(f"CREATE OR REPLACE TEMP TABLE frames AS {frames_sql('few')}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE wins AS {windows_sql('few')}")
    con.execute("CREATE OR REPLACE TEMP TABLE nframes AS SELECT sample_id, side, count(*) AS n FROM frames GROUP BY ALL")
    con.execute("CREATE OR REPLACE TEMP TABLE nwins AS SELECT sample_id, side, count(DISTINCT k) AS n FROM wins GROUP BY ALL")
    if benchmark_frames is not None:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE contam AS
          WITH per AS (SELECT sample_id, side, benchmark, clip, via, w, count(DISTINCT k) AS m,
                              count(DISTINCT k) FILTER (WHERE tight) AS mt,
                              min(t) AS t, arg_min(bt, t) AS bt FROM chits GROUP BY ALL),
          -- a side of one frame matching through a window needs it within window_bits (see window_bits)
          ok AS (SELECT * FROM (SELECT per.*, CASE WHEN via = 'whole' THEN n.n ELSE nw.n END AS nn
                                FROM per JOIN nframes n USING (sample_id, side) LEFT JOIN nwins nw USING (sample_id, side))
                 WHERE (CASE WHEN nn >= {least} THEN m ELSE mt END) >= least({least}, nn))
          SELECT sample_id, arg_max(benchmark, (m, benchmark, clip)) AS benchmark, arg_max(clip, (m, benchmark, clip)) AS clip,
                 arg_max(bt, (m, benchmark, clip)) AS bt, arg_max(side, (m, benchmark, clip)) AS side,
                 arg_max(t, (m, benchmark, clip)) AS t, max(m) AS m
          FROM ok GROUP BY sample_id""")
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE contam (sample_id VARCHAR, benchmark VARCHAR, clip VARCHAR, "
                    "bt DOUBLE, side VARCHAR, t DOUBLE, m BIGINT)")
    # ---- what other screen rules drop, first (a keeper should be a sample that stays)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE base AS
      SELECT s.sample_id, s.dataset, s.kind, s.error_kind,
             CASE WHEN c.benchmark IS NOT NULL THEN 'screen.contaminated'
                  WHEN s.kind IN ('video_edit', 'image_edit') AND s.copy_score < {float(cfg.copy_max_diff)!r}
                       THEN 'screen.copy'
                  WHEN s.kind = 'clip' AND s.content_motion < {float(cfg.min_content_motion)!r} THEN 'screen.static'
             END AS other_drop,
             c.benchmark, c.clip, c.bt, c.side, c.t, c.m
      FROM {screens} s LEFT JOIN contam c USING (sample_id)""")
    # ---- candidates checked on every frame
    con.execute(f"CREATE OR REPLACE TEMP TABLE ok_target AS {_side_ok_sql('cand', 'target', cfg)}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE ok_source AS {_side_ok_sql('ok_target', 'source', cfg)}")
    con.execute("""CREATE OR REPLACE TEMP TABLE dup_pairs AS
      SELECT t.a, t.b FROM ok_target t
        JOIN base ka ON ka.sample_id = t.a
        LEFT JOIN nframes nsa ON nsa.sample_id = t.a AND nsa.side = 'source'
        LEFT JOIN nframes nsb ON nsb.sample_id = t.b AND nsb.side = 'source'
        LEFT JOIN ok_source s ON s.a = t.a AND s.b = t.b
      WHERE ka.kind = 'clip' OR (nsa.n IS NULL AND nsb.n IS NULL) OR s.a IS NOT NULL""")
    _components(con)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE verdict AS
      SELECT b.sample_id, b.dataset,
             CASE WHEN g.keeper <> b.sample_id THEN g.keeper END AS duplicate_of,
             g.keeper AS duplicate_group, g.size AS group_size,
             b.benchmark, b.clip AS benchmark_clip, b.bt::DOUBLE AS benchmark_time_s, b.side AS matched_side,
             b.t::DOUBLE AS matched_time_s, b.m AS benchmark_frames,
             CASE WHEN b.other_drop = 'screen.contaminated' AND {bool(cfg.drop_contaminated)} THEN b.other_drop
                  WHEN g.keeper <> b.sample_id AND {bool(cfg.drop_duplicates)} THEN 'screen.duplicate'
                  WHEN b.other_drop <> 'screen.contaminated' THEN b.other_drop END AS screen_drop
      FROM base b LEFT JOIN groups g USING (sample_id)""")


def _components(con) -> None:
    """``groups`` (sample_id, keeper, size): connected components of dup_pairs, the keeper the
    smallest (kept-first, sample_id) key, by label propagation until nothing changes."""
    con.execute("""CREATE OR REPLACE TEMP TABLE edges AS
      SELECT a AS x, b AS y FROM dup_pairs UNION ALL SELECT b, a FROM dup_pairs""")
    con.execute("""CREATE OR REPLACE TEMP TABLE label AS
      SELECT DISTINCT e.x AS sample_id, (CASE WHEN b.other_drop IS NULL THEN '0' ELSE '1' END) || e.x AS key
      FROM edges e JOIN base b ON b.sample_id = e.x""")
    con.execute("CREATE OR REPLACE TEMP TABLE lab AS SELECT sample_id, key AS label FROM label")
    while True:
        con.execute("""CREATE OR REPLACE TEMP TABLE lab2 AS
          SELECT l.sample_id, least(l.label, min(n.label)) AS label
          FROM lab l JOIN edges e ON e.x = l.sample_id JOIN lab n ON n.sample_id = e.y GROUP BY l.sample_id, l.label""")
        changed = con.execute("SELECT count(*) FROM lab JOIN lab2 USING (sample_id) WHERE lab.label <> lab2.label").fetchone()[0]
        con.execute("DROP TABLE lab")
        con.execute("ALTER TABLE lab2 RENAME TO lab")
        if not changed:
            break
    con.execute("""CREATE OR REPLACE TEMP TABLE groups AS
      SELECT sample_id, substr(label, 2) AS keeper, count(*) OVER (PARTITION BY label) AS size FROM lab""")
