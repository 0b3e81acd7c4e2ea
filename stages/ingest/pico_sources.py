"""Where Pico-Banana-400K's images are on disk.

Sources are Open Images photos the user downloads separately (Apple may not redistribute them).
Apple's README: download ``train_0.tar.gz`` / ``train_1.tar.gz`` from Open Images, extract them
into one folder (our ``image_root``, which then holds ``train_0/<ImageID>.jpg`` ...), download
``train-images-boxable-with-rotation.csv`` (``OriginalURL`` -> ``ImageID``, our
``openimages_csv``) and run ``map_openimage_url_to_local.py``, which adds ``local_input_image``:
``os.path.join(image_root, ...)`` as the script saw it, i.e. relative to the directory it ran in
(our ``local_input_base``). People who fetched the Flickr URLs directly have files named after
the URL instead. Edited images (``output_image``, multi-turn ``url``) are relative to the ``nb/``
folder of Apple's CDN download (``images/positive-edit/1.png``).

Every candidate place is tried in order and the first existing file wins; when none exists the
caller gets ``NotFound``: ``not found: <field> '<value>'; looked in <every place tried>``, the
row's error.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Iterable
from urllib.parse import unquote, urlparse

from stages.ingest.base import resolve_under

CSV_URL, CSV_ID = "OriginalURL", "ImageID"


class NotFound(ValueError):
    pass


def url_file_name(url: str) -> str | None:
    """The file name a downloaded copy of ``url`` carries: the last path segment, unquoted."""
    name = PurePosixPath(unquote(urlparse(url).path)).name
    return name or None


def url_image_ids(csv_path: Path, urls: Iterable[str], block_mb: int = 16) -> dict[str, str]:
    """``OriginalURL -> ImageID`` for the given URLs only, streaming the Open Images CSV (1.7M
    rows, two of its columns read) so memory is bounded by the URLs asked for."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pv

    wanted = pa.array(sorted(set(urls)), type=pa.string())
    out: dict[str, str] = {}
    if len(wanted) == 0:
        return out
    reader = pv.open_csv(csv_path, read_options=pv.ReadOptions(block_size=block_mb << 20),
                         convert_options=pv.ConvertOptions(include_columns=[CSV_ID, CSV_URL],
                                                           column_types={CSV_ID: pa.string(), CSV_URL: pa.string()}))
    for batch in reader:
        hit = pc.is_in(batch.column(CSV_URL), value_set=wanted)
        if pc.any(hit).as_py():
            got = batch.filter(hit)
            out.update(zip(got.column(CSV_URL).to_pylist(), got.column(CSV_ID).to_pylist()))
    return out


class ImageLocator:
    """Resolves sources and edited images of one dataset config (caches the folder listing)."""

    def __init__(self, root: Path, image_root: Path, output_root: Path | None, local_input_base: Path | None):
        self.root, self.image_root = root, image_root
        # A configured output_root is the user's word: the only place. Else Apple's nb/, the root.
        self.output_bases = [output_root] if output_root is not None else [root / "nb", root]
        self.local_bases = list(dict.fromkeys(b for b in (local_input_base, root, image_root, image_root.parent)
                                              if b is not None))
        self._subdirs: list[Path] | None = None

    def subdirs(self) -> list[Path]:
        """image_root's folders (``train_0``, ``train_1`` ...), listed once."""
        if self._subdirs is None:
            try:
                self._subdirs = sorted(p for p in self.image_root.iterdir() if p.is_dir())
            except OSError:
                self._subdirs = []
        return self._subdirs

    @staticmethod
    def _first(candidates: list[Path], field: str, value: str) -> str:
        seen = list(dict.fromkeys(candidates))
        for p in seen:
            if p.is_file():
                return str(p)
        raise NotFound(f"not found: {field} {value!r}; looked in {', '.join(map(str, seen))}")

    def source(self, local: str | None, url: str | None, image_id: str | None, csv_configured: bool) -> str:
        """The source photo: ``local_input_image`` (absolute, or under each base), else the URL's
        ImageID (from the CSV) under image_root and its ``train_*`` folders, else the URL's own
        file name there. Raises NotFound / ValueError / PathEscapeError."""
        candidates: list[Path] = []
        if local:
            if Path(local).is_absolute():
                candidates.append(Path(local).resolve())
            else:
                candidates += [(base / local).resolve() for base in self.local_bases]
            name = PurePosixPath(local.replace("\\", "/")).name
            candidates += [self.image_root / name] + [d / name for d in self.subdirs()]
        if image_id:
            name = f"{image_id}.jpg"
            candidates += [self.image_root / name] + [d / name for d in self.subdirs()]
        if url:
            name = url_file_name(url)
            if name is None and not candidates:
                raise ValueError(f"no file name in source URL {url!r}")
            if name:
                candidates.append(resolve_under(self.image_root, name))
        if not candidates:
            raise ValueError("missing open_image_input_url")
        hint = ""
        if url and not image_id and not local:
            hint = (" (URL not in openimages_csv)" if csv_configured else
                    " (set datasets.pico_banana.openimages_csv to map Open Images URLs to <ImageID>.jpg)")
        field, value = ("local_input_image", local) if local else ("open_image_input_url", url or "")
        try:
            return self._first(candidates, field, value)
        except NotFound as e:
            raise NotFound(f"{e}{hint}") from None

    def output(self, rel: str | None) -> str:
        if rel is None:
            raise ValueError("missing output image path")
        return self._first([resolve_under(base, rel) for base in self.output_bases], "output_image", rel)
