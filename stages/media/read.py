"""Decoding media: ``Video`` (frames by native index; decord, PyAV as the fallback) and
``read_image`` (upright RGB). Used by the probe's decode check, the judge's requests, the encode
stage, `curate preview` and `sama sample`; the bytes come from ``stages.media.locate``.
"""
from __future__ import annotations

import io

import numpy as np

from stages.media.locate import MediaError
from stages.media.locate import short_error as _short


class Video:
    """An opened video: native frame count and rate, and frames by native index.

    decord is the decoder (the one the probe checked); PyAV is the fallback when decord cannot
    open or read the file. ``frames`` / ``fps``: what the probe measured, when known.
    """

    def __init__(self, src: str | io.BytesIO, backend: str = "decord", frames: int | None = None,
                 fps: float | None = None):
        self.src, self.backend, self._reader = src, backend, None
        self._forward = None  # ForwardReader, created on the first read; False: not for this file
        self._decord_pending = False  # decord not opened yet: the forward reader serves the reads
        self.frames = None
        meta = self._forward_meta()
        if meta is not None:
            # decord's count and rate are the container's nb_frames and average rate when it
            # declares them, and so are PyAV's (the fallback's): opening decord (or PyAV again)
            # would only index the file a second time. decord is opened when a read needs it.
            n, rate = meta
            self._decord_pending = backend == "decord"
        elif backend == "decord":
            try:
                import decord

                if isinstance(src, io.BytesIO):
                    src.seek(0)
                self._reader = decord.VideoReader(src, ctx=decord.cpu(0), num_threads=1)
                n, rate = len(self._reader), float(self._reader.get_avg_fps())
            except Exception:  # decord raises RuntimeError, DECORDError ...: try PyAV
                self.backend, self._reader = "pyav", None
        if self.backend == "pyav" and meta is None:
            n, rate = self._pyav_meta()
        # The probe counted packets (exact, also for files decord miscounts); never ask for more
        # frames than the decoder holds.
        self.frames = min(n, frames) if frames else n
        self.fps = float(fps) if fps else rate
        if not self.frames or not self.fps:
            raise MediaError("undecodable", f"no frames or no frame rate ({self.frames} frames, {self.fps} fps)")
        self._check_forward_count()

    def _forward_meta(self) -> tuple[int, float] | None:
        """Open the forward reader now; (nb_frames, average rate) when the container declares both
        and the reader takes the file, else None (then decord is opened as before)."""
        forward = self._forward_reader()
        if forward is None or not forward.declared_frames or not forward.average_rate:
            return None
        return forward.declared_frames, forward.average_rate

    def _open_decord(self) -> None:
        """The decord reader a fallback read needs, opened on first use (PyAV when decord fails)."""
        if not self._decord_pending:
            return
        self._decord_pending = False
        try:
            import decord

            if isinstance(self.src, io.BytesIO):
                self.src.seek(0)
            self._reader = decord.VideoReader(self.src, ctx=decord.cpu(0), num_threads=1)
        except Exception:  # as at open: decord cannot read it, PyAV does
            self.backend, self._reader = "pyav", None

    def size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        self._open_decord()
        if self._reader is not None:
            return tuple(self._reader[0].shape[:2])
        import av

        with av.open(self._rewound(), metadata_errors="replace") as c:
            ctx = c.streams.video[0].codec_context
            return ctx.height, ctx.width

    def _pyav_meta(self) -> tuple[int, float]:
        import av

        with av.open(self._rewound(), metadata_errors="replace") as c:
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate or s.base_rate
            n = s.frames or sum(1 for p in c.demux(s) if p.size)
            return int(n), float(rate) if rate else 0.0

    def _rewound(self):
        if isinstance(self.src, io.BytesIO):
            self.src.seek(0)
        return self.src

    def read(self, indices: list[int]) -> np.ndarray:
        """uint8 [len(indices), H, W, 3] RGB; repeated indices repeat the frame.

        The forward reader (stages/media/forward_read.py) decodes only what these frames need,
        continuing from the previous call when it can; a file it does not read exactly goes the
        general way below, so pixels and errors are the general path's."""
        forward = self._forward_reader()
        if forward is not None:
            try:
                return forward.read(list(indices))
            except Exception:  # Unsupported, FFmpegError, a frame missing: the general path decides
                self._forward = False
                forward.close()
        self._open_decord()
        unique = sorted(set(indices))
        if self._reader is not None:
            try:
                got = self._reader.get_batch(unique).asnumpy()
            except Exception:  # a broken packet deep in the file: PyAV decodes what it can
                got = self._read_pyav(unique)
        else:
            got = self._read_pyav(unique)
        pos = {i: k for k, i in enumerate(unique)}
        return got[[pos[i] for i in indices]]

    def _forward_reader(self):
        """The open ForwardReader of this video, or None when this file is not one it reads."""
        forward = self._forward
        if forward is None:
            from stages.media.forward_read import ForwardReader

            # Its own stream over the bytes: the other readers move the shared one's position.
            own = io.BytesIO(self.src.getvalue()) if isinstance(self.src, io.BytesIO) else self.src
            try:
                forward = ForwardReader(own)
            except Exception:  # Unsupported, or a file PyAV cannot open: the general path decides
                forward = False
            self._forward = forward
            self._check_forward_count()
        return self._forward or None

    def _check_forward_count(self) -> None:
        # (frames is None while __init__ asks the reader for the metadata)
        if self._forward and self.frames is not None and self._forward.frames < self.frames:
            self._forward.close()  # it sees fewer frames than the frame count in use
            self._forward = False

    def close(self) -> None:
        """Release the decoders now (they are also released when the object is collected)."""
        if self._forward:
            self._forward.close()
        self._forward, self._reader, self._decord_pending = False, None, False

    def _read_pyav(self, unique: list[int]) -> np.ndarray:
        import av

        want, out = set(unique), {}
        try:
            with av.open(self._rewound(), metadata_errors="replace") as c:
                for i, frame in enumerate(c.decode(video=0)):
                    if i in want:
                        out[i] = frame.to_ndarray(format="rgb24")
                    if i >= unique[-1]:
                        break
        except av.error.FFmpegError as e:
            raise MediaError("undecodable", f"pyav: {_short(e)}") from None
        missing = [i for i in unique if i not in out]
        if missing:
            raise MediaError("undecodable", f"frames {missing[:5]} could not be decoded")
        return np.stack([out[i] for i in unique])


def open_image(src: str | io.BytesIO):
    """A PIL image opened lazily from a path or from bytes in memory (rewound first); raises what
    PIL raises. The probe measures it, the judge sizes it as Qwen2.5-VL's processor does,
    ``read_image`` turns it into pixels."""
    from PIL import Image

    if isinstance(src, io.BytesIO):
        src.seek(0)
    return Image.open(src)


def read_image(src: str | io.BytesIO) -> np.ndarray:
    """uint8 [1, H, W, 3] RGB, turned upright by its EXIF orientation."""
    from PIL import Image, ImageOps

    try:
        with open_image(src) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            return np.asarray(im)[None].copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError("undecodable", f"image: {_short(e)}") from None


def decord_first_frame(src: str | io.BytesIO) -> None:
    """Decode frame 0 with decord (raises what decord raises): the probe's decodability check."""
    import decord

    if isinstance(src, io.BytesIO):
        src.seek(0)
    reader = decord.VideoReader(src, ctx=decord.cpu(0), num_threads=1)
    try:
        reader[0]
    finally:
        del reader
