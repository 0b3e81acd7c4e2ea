"""NHR-Edit demo corpus: ``train/metadata.jsonl`` + ``train/images/NN/`` (the jsonl layout).

Broken on purpose: an empty instruction, a malformed JSON line and a file name escaping the
root. ``build_parquet`` writes the other published layout (images embedded in parquet), used by
the tests rather than the demo so that the demo config (``layout: auto``) sees one layout.
``NHR-Edit-part2/`` (the demo's ``part2_root``) is the separate part-2 repository in the short
parquet form ``source_image, edit_instruction, edited_image`` (one row has no instruction).
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.curate.demo.media import image_bytes, write_image

# (sample_id, source name, edited name, instruction, augmented, category, kind, style, w, h)
# Names are relative to train/images, except one written relative to train/ as some exports do.
_RECORDS = [
    ("nhr-000001", "00/image_001_original.jpg", "00/image_001_edited_0.jpg",
     "Remove the red ball from the table", ["Take away the red ball", "Erase the ball"],
     "Object removal", "local", "photo", 128, 96),
    ("nhr-000002", "images/00/image_002_original.jpg", "images/00/image_002_edited_0.jpg",
     "Add a small boat on the lake", ["Put a boat on the water"],
     "Object addition", "local", "photo", 96, 128),
    ("nhr-000003", "01/image_003_original.jpg", "01/image_003_edited_1.jpg",
     "Make it look like a watercolor painting", [],
     "Style transfer", "global", "watercolor", 160, 96),
    ("nhr-000004", "01/image_004_original.jpg", "01/image_004_edited_0.jpg",
     "Do something unusual", ["Anything"],
     "Miscellaneous", "global", "photo", 96, 96),
    # broken: empty instruction
    ("nhr-000005", "01/image_005_original.jpg", "01/image_005_edited_0.jpg",
     "   ", [], "Color change", "local", "photo", 64, 64),
    # broken: path escaping the dataset root
    ("nhr-000006", "../../../../etc/passwd", "01/image_006_edited_0.jpg",
     "Turn the car blue", [], "Color change", "local", "photo", 64, 64),
]
PART2 = "NHR-Edit-part2"  # the separate part-2 repository, downloaded next to part 1
MALFORMED_LINE = '{"sample_id": "nhr-000007", "edit_instruction": "unterminated'


def _image_name(name: str) -> str:
    return name[len("images/"):] if name.startswith("images/") else name


def _record(r: tuple) -> dict:
    sid, src, edt, instr, aug, cat, kind, style, w, h = r
    return {"sample_id": sid, "source_file_name": src, "edited_file_name": edt,
            "edit_instruction": instr, "augmented_instructions": aug, "category": cat,
            "kind": kind, "style": style, "img_width": w, "img_height": h}


def build(root: Path) -> dict:
    root = Path(root)
    images = root / "train" / "images"
    for i, r in enumerate(_RECORDS):
        _, src, edt, *_, w, h = r
        if ".." in src:
            continue
        write_image(images / _image_name(src), w, h, seed=2 * i)
        write_image(images / _image_name(edt), w, h, seed=2 * i + 1)
    meta = root / "train" / "metadata.jsonl"
    if not meta.exists():
        lines = [json.dumps(_record(r)) for r in _RECORDS[:4]]
        lines.append(MALFORMED_LINE)
        lines += [json.dumps(_record(r)) for r in _RECORDS[4:]]
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text("\n".join(lines) + "\n")
    part2 = build_parquet_form(root / PART2)
    return {
        "rows": len(_RECORDS) + 1 + part2["rows"],
        "errors": 3 + part2["errors"],
        "part2_root": PART2,
        "ok_ids": [r[0] for r in _RECORDS[:4]],
        "categories": {"nhr-000001": "remove", "nhr-000002": "add", "nhr-000003": "style",
                       "nhr-000004": "other"},
    }


def build_parquet(root: Path, rows_per_group: int = 2, binary_images: bool = False) -> dict:
    """The parquet layout: ``data/train-00000-of-00001.parquet`` with the metadata columns and
    ``source_image`` / ``edited_image`` as ``{bytes, path}`` structs (raw binary when
    ``binary_images``), in row groups of ``rows_per_group`` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(root) / "data" / "train-00000-of-00001.parquet"
    good = _RECORDS[:4]
    records = [_record(r) for r in good] + [_record(_RECORDS[4])]  # + empty instruction
    if not path.exists():
        image_type = pa.binary() if binary_images else pa.struct([("bytes", pa.binary()), ("path", pa.string())])

        def cell(name: str, w: int, h: int, seed: int):
            data = image_bytes(w, h, seed)
            return data if binary_images else {"bytes": data, "path": Path(name).name}

        columns = {k: [rec[k] for rec in records] for k in records[0]}
        src = [cell(rec["source_file_name"], rec["img_width"], rec["img_height"], 2 * i) for i, rec in enumerate(records)]
        edt = [cell(rec["edited_file_name"], rec["img_width"], rec["img_height"], 2 * i + 1) for i, rec in enumerate(records)]
        table = pa.table({**columns, "source_image": pa.array(src, image_type), "edited_image": pa.array(edt, image_type)})
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=rows_per_group)
    return {"path": path, "rows": len(records), "errors": 1, "ok_ids": [r[0] for r in good]}


PART2_FORM = [("Replace the lamp with a candle", 0), ("Make the sky stormy", 1), ("", 2)]  # "" broken


def build_parquet_form(root: Path) -> dict:
    """The short parquet form: ``data/train-00000-of-00001.parquet`` with exactly the columns
    ``source_image, edit_instruction, edited_image`` (images as ``{bytes, path}`` structs)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(root) / "data" / "train-00000-of-00001.parquet"
    if not path.exists():
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        src = [{"bytes": image_bytes(80, 64, 50 + 2 * i), "path": None} for _, i in PART2_FORM]
        edt = [{"bytes": image_bytes(80, 64, 51 + 2 * i), "path": None} for _, i in PART2_FORM]
        table = pa.table({"source_image": pa.array(src, image_type),
                          "edit_instruction": [t for t, _ in PART2_FORM],
                          "edited_image": pa.array(edt, image_type)})
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    return {"path": path, "rows": len(PART2_FORM), "errors": 1}
