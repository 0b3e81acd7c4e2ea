"""The report's examples near a threshold: the top-n over the scores first, then joined with the
few samples it names, gives the rows of joining everything first (also when the nearest scores
have no sample row and the candidate list must grow)."""
from __future__ import annotations

import duckdb
import pytest

from pipeline.curate.report.queries import SCORED, near_threshold


def _naive(con, kind, metric, op, value, n):
    base = (f'SELECT j.sample_id, j.dataset, CAST("{metric}" AS DOUBLE) AS score, s.instruction, s.caption '
            f"FROM scores j JOIN samples s USING (sample_id) WHERE j.status IN {SCORED} AND j.kind = ? "
            f'AND "{metric}" IS NOT NULL')
    above = con.execute(f"SELECT * FROM ({base}) WHERE score {op} {value} ORDER BY score, sample_id LIMIT {n}",
                        [kind]).fetchall()
    below = con.execute(f"SELECT * FROM ({base}) WHERE NOT (score {op} {value}) ORDER BY score DESC, sample_id "
                        f"LIMIT {n}", [kind]).fetchall()
    return above, below


@pytest.mark.parametrize("keep_every", [1, 3, 97])
def test_near_threshold_matches_the_join_of_everything(keep_every):
    con = duckdb.connect()
    con.execute("CREATE TABLE scores AS SELECT 's' || lpad(i::VARCHAR, 4, '0') AS sample_id, 'koala' AS dataset, "
                "CASE WHEN i % 7 = 0 THEN 'timeout' ELSE 'ok' END AS status, 'clip' AS kind, "
                "CAST(1 + (i * 37) % 10 AS SMALLINT) AS visual_quality FROM range(600) t(i)")
    # Samples for only every keep_every-th score: most of the nearest candidates have no sample.
    con.execute(f"CREATE TABLE samples AS SELECT sample_id, 'do ' || sample_id AS instruction, NULL AS caption "
                f"FROM scores WHERE CAST(substr(sample_id, 2) AS INTEGER) % {keep_every} = 0")
    for op, value in ((">=", 8.0), (">", 5.0)):
        got = near_threshold(con, "clip", "visual_quality", op, value, "score", 5)
        assert got == _naive(con, "clip", "visual_quality", op, value, 5)
        if keep_every < 97:  # else fewer samples than asked exist on a side: all of them come back
            assert len(got[0]) == 5 and len(got[1]) == 5
