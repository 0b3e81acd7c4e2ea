"""Near-duplicate groups and benchmark matches over the whole corpus, in DuckDB (no all-pairs).

Frames are matched through equal *bands* of their 64-bit hashes (64 / band_bits slices): two
hashes within ``match_bits`` bits share a band whenever they differ in fewer bits than there are
bands, and usually when a little more; a sample pair becomes a candidate when any of their
informative target frames share a band, and is then checked on all its frames (Hamming distance
by ``bit_count(xor)``). Candidates are only ever pairs inside one band bucket, so the join grows
with the corpus, not with its square, and DuckDB spills to disk under its memory limit.

Duplicates are pairs of the same kind whose target frames match (for edit pairs, and whose source
frames match too: the same source edited twice is two samples); the groups are the connected
components, found by propagating the smallest key; the keeper is the member no other screen rule
drops, then the smallest sample_id. A benchmark match is a sample whose source or target frames
match at least ``min_matched_frames`` frames of one benchmark clip (a temporal overlap is enough).
Uninformative frames take part in nothing.
"""
from __future__ import annotations

VALID_BAND_BITS = (16, 32)


def _bands_sql(frames: str, band_bits: int) -> str:
    mask = (1 << band_bits) - 1
    n = 64 // band_bits
    parts = [f"SELECT *, {b} AS band, (h >> {b * band_bits}) & {mask} AS v FROM {frames}" for b in range(n)]
    return " UNION ALL ".join(parts)


def frames_sql(screens: str) -> str:
    """Informative frames (sample_id, kind, side, k, h, t) of a screens relation."""
    sides = []
    for side in ("target", "source"):
        sides.append(
            f"SELECT sample_id, kind, '{side}' AS side, unnest(range(len({side}_hashes))) AS k, "
            f"unnest({side}_hashes) AS h, unnest({side}_informative) AS inf, unnest({side}_times) AS t "
            f"FROM {screens} WHERE error_kind IS NULL AND {side}_hashes IS NOT NULL")
    return f"SELECT sample_id, kind, side, k, h::BIGINT AS h, t FROM ({' UNION ALL '.join(sides)}) WHERE inf"


def _matched_sql(pairs: str, side: str, bits: int) -> str:
    """Per candidate pair (a, b): frames of a / of b on ``side`` with a match in the other."""
    return f"""
      SELECT p.a, p.b,
             count(DISTINCT fa.k) FILTER (WHERE bit_count(xor(fa.h, fb.h)) <= {bits}) AS ma,
             count(DISTINCT fb.k) FILTER (WHERE bit_count(xor(fa.h, fb.h)) <= {bits}) AS mb
      FROM {pairs} p JOIN frames fa ON fa.sample_id = p.a AND fa.side = '{side}'
                     JOIN frames fb ON fb.sample_id = p.b AND fb.side = '{side}'
      GROUP BY p.a, p.b"""


def _passes(side: str, share: float, min_frames: int) -> str:
    na, nb = f"na_{side}", f"nb_{side}"
    return (f"(m_{side}.ma >= least({min_frames}, {na}) AND m_{side}.mb >= least({min_frames}, {nb}) "
            f"AND greatest(m_{side}.ma / {na}, m_{side}.mb / {nb}) >= {share})")


def build(con, screens: str, cfg, benchmark_frames: str | None = None) -> None:
    """Create ``verdict`` (sample_id, dataset, duplicate_of, ...) in ``con`` from a screens relation
    (a table or view name) and optionally the benchmark frames (benchmark, clip, k, h, t)."""
    bits, bb = cfg.match_bits, cfg.band_bits
    if bb not in VALID_BAND_BITS:
        raise ValueError(f"screen.band_bits: {bb} is not one of {VALID_BAND_BITS}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE frames AS {frames_sql(screens)}")
    con.execute("CREATE OR REPLACE TEMP TABLE nframes AS SELECT sample_id, side, count(*) AS n FROM frames GROUP BY ALL")
    # ---- contamination: any side of a sample against every benchmark clip
    if benchmark_frames is not None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE bframes AS SELECT benchmark, clip, k, h::BIGINT AS h, t FROM {benchmark_frames}")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE contam AS
          WITH fb AS ({_bands_sql('frames', bb)}), bb AS ({_bands_sql('bframes', bb)}),
          hits AS (SELECT DISTINCT fb.sample_id, fb.side, fb.k, fb.h, fb.t, bb.benchmark, bb.clip, bb.k AS bk, bb.t AS bt
                   FROM fb JOIN bb USING (band, v) WHERE bit_count(xor(fb.h, bb.h)) <= {bits}),
          per AS (SELECT sample_id, side, benchmark, clip, count(DISTINCT k) AS m,
                         min(t) AS t, arg_min(bt, t) AS bt FROM hits GROUP BY ALL),
          ok AS (SELECT per.* FROM per JOIN nframes n USING (sample_id, side) WHERE m >= least({cfg.min_matched_frames}, n.n))
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
    # ---- duplicates: candidates from the target bands, checked on every frame
    con.execute(f"""CREATE OR REPLACE TEMP TABLE cand AS
      WITH tb AS ({_bands_sql("(SELECT * FROM frames WHERE side = 'target')", bb)})
      SELECT DISTINCT x.sample_id AS a, y.sample_id AS b FROM tb x JOIN tb y
        ON x.band = y.band AND x.v = y.v AND x.kind = y.kind AND x.sample_id < y.sample_id""")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE dup_pairs AS
      WITH m_target AS ({_matched_sql('cand', 'target', bits)}),
           m_source AS ({_matched_sql('cand', 'source', bits)})
      SELECT m_target.a, m_target.b FROM m_target
        JOIN nframes nta ON nta.sample_id = m_target.a AND nta.side = 'target'
        JOIN nframes ntb ON ntb.sample_id = m_target.b AND ntb.side = 'target'
        LEFT JOIN m_source USING (a, b)
        LEFT JOIN nframes nsa ON nsa.sample_id = m_target.a AND nsa.side = 'source'
        LEFT JOIN nframes nsb ON nsb.sample_id = m_target.b AND nsb.side = 'source'
        JOIN base ka ON ka.sample_id = m_target.a
      WHERE {_passes('target', cfg.duplicate_share, cfg.min_matched_frames).replace('na_target', 'nta.n').replace('nb_target', 'ntb.n')}
        AND (ka.kind = 'clip' OR (nsa.n IS NULL AND nsb.n IS NULL) OR (m_source.a IS NOT NULL AND
             {_passes('source', cfg.duplicate_share, cfg.min_matched_frames).replace('na_source', 'nsa.n').replace('nb_source', 'nsb.n')}))""")
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
