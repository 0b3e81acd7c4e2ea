"""The forward reader returns decord's pixels for any frame set, and the open-video cache reuses
one opened video per file while noticing a rewritten one."""
from __future__ import annotations

import io
import random
import shutil
from pathlib import Path

import decord
import numpy as np
import pytest

from stages.media.forward_read import ForwardReader
from stages.media.open_videos import OpenVideos
from stages.media.read import Video

CLIPS = sorted((Path(__file__).resolve().parents[3] / "demo" / "clips").glob("*.mp4"))


def _decord(path: Path, indices: list[int]) -> np.ndarray:
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return reader.get_batch(indices).asnumpy()


@pytest.mark.parametrize("path", CLIPS[:4], ids=lambda p: p.name)
def test_forward_reader_matches_decord_in_any_order(path):
    rng = random.Random(path.name)
    reader = ForwardReader(str(path))
    n = reader.frames
    sets = [list(range(n)), [n - 1], [0, n // 2, n - 1], sorted(rng.sample(range(n), min(n, 7))),
            [rng.randrange(n) for _ in range(6)], [n - 1, 0, n - 1]]  # backwards and repeated
    for indices in sets:  # one reader for all: later reads continue or seek back
        assert np.array_equal(reader.read(indices), _decord(path, indices)), indices
    reader.close()


def test_video_read_keeps_the_general_path_for_bytes_and_windows():
    path = CLIPS[0]
    video = Video(io.BytesIO(path.read_bytes()))
    first, second = [0, 1, 2, 3], [10, 12, 14]  # two "windows" read forward by one decoder
    assert np.array_equal(video.read(first), _decord(path, first))
    assert np.array_equal(video.read(second), _decord(path, second))
    assert video._forward  # the forward reader served them
    video.size()  # the other readers of the same bytes do not disturb it
    assert np.array_equal(video.read(first), _decord(path, first))


def test_unsupported_files_fall_back(tmp_path):
    with pytest.raises(Exception):
        ForwardReader(io.BytesIO(b"not a video at all"))


def test_open_videos_reuses_one_video_per_file_until_it_changes(tmp_path):
    path = tmp_path / "clip.mp4"
    shutil.copy(CLIPS[0], path)
    cache = OpenVideos(capacity=2)
    for _ in range(3):
        with cache.use("clip", str(path)) as video:
            video.read([0])
    assert cache.opened == 1
    with cache.use("clip", str(path)) as a, cache.use("clip", str(path)) as b:
        assert a is not b  # two readers at once never share a decoder
    shutil.copy(CLIPS[1], path)  # rewritten: a new identity, a fresh open
    with cache.use("clip", str(path)) as video:
        assert np.array_equal(video.read([0]), _decord(CLIPS[1], [0]))
    for other in CLIPS[2:5]:  # the capacity bounds what stays open
        with cache.use(other.name, str(other)):
            pass
    assert len(cache._items) == 2
