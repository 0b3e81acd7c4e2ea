"""`curate preview`: a contact sheet of what the trainer sees for a sample, rebuilt from the media.

For every encoded key of the sample (all its variants) the target frames are decoded again at the
key's ``target_indices`` and fitted to its bucket, and the source is rebuilt from what was stored,
not re-drawn: cube boxes and tube permutations from the ``pretext`` record (``apply_record``),
the speed source at its ``source_indices``, an edit pair's source file at its ``source_indices``.
Rows: the target (with its anchor frame(s) outlined and repeated at the right), then one row per
source. No model is run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from manifests import catalog
from stages.media.buckets import fit_to_bucket
from stages.ingest.config import DatasetsConfig
from stages.media.locate import locate, section_roots
from stages.media.read import Video, read_image

CELL_H = 96  # pixels: a frame's height in the sheet
PAD = 4
LABEL_W = 150
TITLE_H = 18
ANCHOR = (255, 200, 0)
BG = (24, 24, 24)
FG = (235, 235, 235)


class PreviewError(ValueError):
    pass


def _roots(workdir: Path) -> dict[str, list[str]] | None:
    """The run's dataset roots (media are read only inside them), from the run's config.json
    (its ``datasets:`` section, the one this reads)."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        return None
    try:
        datasets = json.loads(path.read_text())["datasets"]
        return section_roots(DatasetsConfig.model_validate_json(json.dumps(datasets)))
    except Exception as e:  # a broken config must not quietly lift the allowed-roots check
        raise PreviewError(f"{path}: cannot read the run's dataset roots from config.json: {e}") from None


def pick_samples(con, sample_ids: list[str] | None, n: int | None) -> list[str]:
    views = set(catalog.views(con))
    if "encoded" not in views:
        raise PreviewError("no encoded table in this run; run `curate run --stage encode` first")
    if sample_ids:
        have = {r[0] for r in con.execute("SELECT DISTINCT sample_id FROM encoded WHERE error IS NULL AND "
                                          "sample_id IN (SELECT unnest($1))", [sample_ids]).fetchall()}
        missing = [s for s in sample_ids if s not in have]
        if missing:
            raise PreviewError(f"no encoded key without error for {', '.join(missing)}; list some with "
                               "`curate query \"SELECT DISTINCT sample_id FROM shard_keys\"`")
        return list(sample_ids)
    source = "shard_keys" if "shard_keys" in views else "(SELECT * FROM encoded WHERE error IS NULL)"
    return [r[0] for r in con.execute(f"SELECT DISTINCT sample_id FROM {source} ORDER BY 1 LIMIT {int(n)}").fetchall()]


def _keys_of(con, sample_id: str) -> tuple[dict, list[dict]]:
    keys = con.execute(
        "SELECT key, variant, bucket, num_frames, fps, target_indices, source_indices, anchor_indices, pretext, "
        "instruction FROM encoded WHERE error IS NULL AND sample_id = ? ORDER BY key", [sample_id]).fetchall()
    cols = ["key", "variant", "bucket", "num_frames", "fps", "target_indices", "source_indices", "anchor_indices",
            "pretext", "instruction"]
    rows = [dict(zip(cols, r)) for r in keys]
    media_cols = ["sample_id", "dataset", "modality", "target_uri", "source_uri"]
    names = {r[0] for r in con.execute("DESCRIBE samples_full").fetchall()}
    media_cols += [c for c in ("target_frames", "target_fps", "source_frames", "source_fps") if c in names]
    sample = con.execute(f"SELECT {', '.join(media_cols)} FROM samples_full WHERE sample_id = ?",
                         [sample_id]).fetchone()
    return dict(zip(media_cols, sample)), rows


class _Media:
    """Decodes a sample's target/source at given native indices, fitted to a bucket (cached)."""

    def __init__(self, sample: dict, roots: dict | None):
        self.sample, self.roots, self.cache, self.videos = sample, roots, {}, {}

    def frames(self, role: str, indices: list[int], bucket: tuple[int, int]) -> np.ndarray:
        key = (role, tuple(indices), bucket)
        if key not in self.cache:
            roots = None if self.roots is None else self.roots.get(self.sample["dataset"], [])
            src = locate(self.sample.get(f"{role}_uri") or "", roots)
            if self.sample.get("modality") == "image":
                raw = read_image(src)
            else:
                if role not in self.videos:
                    self.videos[role] = Video(src, "decord", self.sample.get(f"{role}_frames"),
                                              self.sample.get(f"{role}_fps"))
                raw = self.videos[role].read(list(indices))
            self.cache[key] = fit_to_bucket(raw, bucket)
        return self.cache[key]


def sample_rows(con, sample_id: str, roots: dict | None) -> tuple[str, list[tuple[str, np.ndarray, list[int]]]]:
    """(title, [(label, frames [T,H,W,3], anchor positions)]) for one sample: targets, then sources."""
    from stages.pretext import apply_record

    sample, keys = _keys_of(con, sample_id)
    media = _Media(sample, roots)
    rows, targets_seen = [], {}
    for k in keys:
        w, h = (int(v) for v in k["bucket"].split("x"))
        target = media.frames("target", k["target_indices"], (w, h))
        tkey = tuple(k["target_indices"])
        if tkey not in targets_seen:
            label = "target" if not targets_seen else f"target ({k['variant']})"
            targets_seen[tkey] = label
            rows.append((f"{label}\n{len(target)} frames", target, list(k["anchor_indices"] or [])))
        record = json.loads(k["pretext"] or "{}")
        variant = k["variant"]
        if variant in ("cube", "tube"):
            src = apply_record(target, record)
            what = (f"cube {record.get('mask_ratio', 0):.0%} masked" if variant == "cube"
                    else f"tube {record['grid']} perm {record['permutation']}")
        elif variant == "speed":
            src = media.frames("target", k["source_indices"], (w, h))
            what = f"speed {record.get('factor', '?')}x"
        elif variant == "edit" and k["source_indices"] is not None and sample.get("source_uri"):
            src = media.frames("source", k["source_indices"], (w, h))
            what = f"{len(src)} frames"
        else:
            continue  # none: no source
        rows.append((f"{variant} source\n{what}", src, []))
    title = f"{sample_id}  ({sample['dataset']}, {sample['modality']}, {len(keys)} keys: " \
            f"{', '.join(k['variant'] for k in keys)})"
    return title, rows


def _cell(frame: np.ndarray) -> Image.Image:
    img = Image.fromarray(frame)
    return img.resize((max(1, round(img.width * CELL_H / img.height)), CELL_H), Image.BILINEAR)


def _wrap(text: str, width: int = 22) -> str:
    lines = []
    for para in text.split("\n"):
        while len(para) > width:
            lines.append(para[:width])
            para = para[width:]
        lines.append(para)
    return "\n".join(lines[:5])


def contact_sheet(title: str, rows: list[tuple[str, np.ndarray, list[int]]], columns: int) -> Image.Image:
    """One sample: a labelled row per clip, ``columns`` frames spread over it, anchors outlined."""
    cw = max(_cell(r[1][0]).width for r in rows)
    width = LABEL_W + (columns + 1) * (cw + PAD) + PAD
    height = TITLE_H + len(rows) * (CELL_H + PAD) + PAD
    sheet = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, 3), title, fill=FG)
    for r, (label, frames, anchors) in enumerate(rows):
        y = TITLE_H + r * (CELL_H + PAD)
        draw.multiline_text((PAD, y + 4), _wrap(label), fill=FG)
        picks = sorted(set(np.linspace(0, len(frames) - 1, min(columns, len(frames))).round().astype(int)))
        for c, t in enumerate(picks):
            x = LABEL_W + c * (cw + PAD)
            sheet.paste(_cell(frames[t]), (x, y))
            draw.text((x + 2, y + CELL_H - 12), f"#{t}", fill=FG)
            if t in anchors:
                draw.rectangle([x, y, x + cw - 1, y + CELL_H - 1], outline=ANCHOR, width=3)
        for a in anchors[:1]:  # the anchor frame, repeated in the last column
            x = LABEL_W + columns * (cw + PAD)
            sheet.paste(_cell(frames[a]), (x, y))
            draw.rectangle([x, y, x + cw - 1, y + CELL_H - 1], outline=ANCHOR, width=3)
            draw.text((x + 2, y + CELL_H - 12), f"anchor #{a}", fill=ANCHOR)
    return sheet


def _stack(images: list[Image.Image]) -> Image.Image:
    width = max(i.width for i in images)
    out = Image.new("RGB", (width, sum(i.height for i in images) + PAD * (len(images) - 1)), BG)
    y = 0
    for i in images:
        out.paste(i, (0, y))
        y += i.height + PAD
    return out


def animation(samples: list[tuple[str, list]]) -> list[Image.Image]:
    """GIF frames: per time step, every clip of every sample side by side (labels above)."""
    length = max(len(frames) for _, rows in samples for _, frames, _ in rows)
    out = []
    for t in range(length):
        blocks = []
        for title, rows in samples:
            cells = [_cell(frames[min(t, len(frames) - 1)]) for _, frames, _ in rows]
            w = sum(c.width + PAD for c in cells) + PAD
            block = Image.new("RGB", (max(w, 8 * len(title)), TITLE_H * 2 + CELL_H + PAD), BG)
            draw = ImageDraw.Draw(block)
            draw.text((PAD, 2), f"{title}  t={t}", fill=FG)
            x = PAD
            for (label, _, _), cell in zip(rows, cells):
                draw.text((x, TITLE_H), label.split("\n")[0], fill=FG)
                block.paste(cell, (x, TITLE_H * 2))
                x += cell.width + PAD
            blocks.append(block)
        out.append(_stack(blocks))
    return out


def write_preview(workdir: Path, sample_ids: list[str] | None, n: int | None, out: Path, gif: bool = False,
                  columns: int = 5) -> list[Path]:
    """Write the contact sheet PNG (one block per sample) and optionally a GIF; returns the paths."""
    workdir = Path(workdir)
    if not (workdir / "tables").exists():
        raise PreviewError(f"{workdir} holds no run (no tables/); pass --workdir")
    con = catalog.connect(workdir)
    ids = pick_samples(con, sample_ids, n)
    if not ids:
        raise PreviewError(f"{workdir}: no encoded sample to show")
    roots = _roots(workdir)
    built = []
    for sid in ids:
        try:
            built.append(sample_rows(con, sid, roots))
        except Exception as e:  # a sample whose media moved: say which, show the others
            raise PreviewError(f"{sid}: cannot rebuild its frames: {e}") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _stack([contact_sheet(title, rows, columns) for title, rows in built]).save(out)
    written = [out]
    if gif:
        frames = animation(built)
        path = out.with_suffix(".gif")
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=125, loop=0)
        written.append(path)
    return written
