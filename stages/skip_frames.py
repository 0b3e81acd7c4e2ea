"""A dataset's leading frames that no stage uses (``samples.skip_frames``).

SAMA's own loader drops the first 4 frames of both OpenVE-3M videos; the OpenVE adapter records
that on every row (``OpenVEConfig.skip_frames``), and the probe, judge, encode and preview stages
all see the video as starting after them. Expressed as a window start, so each stage's existing
window arithmetic (Koala's clip windows) applies unchanged: frame ``k`` is shown at ``k / fps``,
so skipping ``n`` frames starts the window at ``n / fps`` (the stages round frame times with a
1e-6 tolerance, so frame ``n`` itself is the first one kept).
"""
from __future__ import annotations


def skipped_window(start_s: float | None, end_s: float | None, skip_frames: int | None,
                   fps: float | None) -> tuple[float | None, float | None]:
    """The (start, end) window in seconds after dropping ``skip_frames`` leading frames.

    No skip, or an unknown frame rate, leaves the window as it is."""
    if not skip_frames or not fps or fps <= 0:
        return start_s, end_s
    return (start_s or 0.0) + skip_frames / float(fps), end_s
