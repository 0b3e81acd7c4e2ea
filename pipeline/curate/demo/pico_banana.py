"""Pico-Banana-400K demo corpus, as Apple's CDN download and the README's source-image steps leave it:

* ``nb/jsonl/{sft,preference,multi-turn}.jsonl`` and the edited images under ``nb/images/``;
* ``openimages/`` (the ``image_root``): Open Images' ``train_0/`` and ``train_1/`` folders of
  ``<ImageID>.jpg`` and ``train-images-boxable-with-rotation.csv`` (the ``openimages_csv``)
  mapping ``OriginalURL`` to ``ImageID``; one photo fetched from Flickr directly, named after
  its URL; one sft record carrying ``local_input_image`` as Apple's mapping script writes it
  (relative to the directory it ran in: the corpus root).

Broken on purpose (sft, the default split): a malformed JSON line, an empty instruction, and a
source photo that was never downloaded (its error row lists the places tried). Preference has a
record without ``output_image``; multi-turn a record whose last turn has no image.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.curate.demo.media import write_image

FLICKR = "https://farm{n}.staticflickr.com/{n}/{id}_{n}a{n}b_o.jpg"


def _url(i: int) -> str:
    return FLICKR.format(n=i, id=1000 + i)


SFT = [
    {"open_image_input_url": _url(1), "text": "Remove the red umbrella from the left side of the beach.",
     "output_image": "images/positive-edit/1.png", "edit_type": "Remove an existing object",
     "summarized_text": "Remove the red umbrella."},
    {"open_image_input_url": _url(2), "text": "Transform the whole photo into a Van Gogh style painting.",
     "output_image": "images/positive-edit/2.png",
     "edit_type": "Strong artistic style transfer (e.g., Van Gogh/anime/etc.)",
     "summarized_text": "Make it a Van Gogh painting."},
    # source photo not downloaded: still a fine row
    {"open_image_input_url": _url(3), "text": "Shift the colour tone to warm golden hues.",
     "output_image": "images/positive-edit/3.png", "edit_type": "Change overall color tone (warm ↔ cool)",
     "summarized_text": "Warmer tones."},
    # broken: empty instruction
    {"open_image_input_url": _url(4), "text": "", "output_image": "images/positive-edit/4.png",
     "edit_type": "Zoom in", "summarized_text": ""},
]
SFT_MALFORMED = '{"open_image_input_url": "https://farm5.staticflickr.com/5/x_o.jpg", "text": '

PREFERENCE = [
    {"output_image": "images/positive-edit/11.png", "rejected_images": ["images/negative-edit/11.png"],
     "text": "Add a small wooden boat on the lake.", "edit_type": "Add a new object to the scene",
     "open_image_input_url": _url(11), "summarized_text": "Add a boat."},
    # broken: no output image
    {"rejected_images": ["images/negative-edit/12.png"], "text": "Replace the dog with a cat.",
     "edit_type": "Replace one object category with another", "open_image_input_url": _url(12),
     "summarized_text": "Dog to cat."},
]

MULTI_TURN = [
    {"files": [{"id": "edit_turn1", "url": "images/multi-turn/101_turn1.png"},
               {"id": "edit_turn2", "url": "images/multi-turn/101_turn2.png"},
               {"id": "final_image", "url": "images/multi-turn/101_turn3.png"},
               {"id": "original_input_image", "url": _url(21)}],
     "metadata_edit_turn_prompts": ["Add a vintage film grain", "Replace the sky with a sunset",
                                    "Zoom in on the lighthouse"]},
    # broken: the second (last) turn has no image
    {"files": [{"id": "edit_turn1", "url": "images/multi-turn/102_turn1.png"},
               {"id": "original_input_image", "url": _url(22)}],
     "metadata_edit_turn_prompts": ["Remove the fence", "Make it snow"]},
]
MISSING_SOURCES = {3}  # URL indices whose photo is not downloaded
FLICKR_NAMED = {12}  # fetched from the URL directly: named after it, not in the CSV
CSV_HEADER = ("ImageID,Subset,OriginalURL,OriginalLandingURL,License,AuthorProfileURL,Author,Title,"
              "OriginalSize,OriginalMD5,Thumbnail300KURL,Rotation")


def image_id(i: int) -> str:
    return f"{i:04x}e2205e460318"  # Open Images ids are 16 hex digits


def _folder(i: int) -> str:
    return f"train_{i % 2}"


def _images(records: list[dict]) -> list[str]:
    out = []
    for rec in records:
        out += [rec[k] for k in ("output_image",) if k in rec] + rec.get("rejected_images", [])
        out += [f["url"] for f in rec.get("files", []) if not f["url"].startswith("http")]
    return out


def _write_jsonl(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text("\n".join(lines) + "\n")


def build(root: Path) -> dict:
    root = Path(root)
    nb = root / "nb"
    image_root = root / "openimages"
    for seed, rel in enumerate(_images(SFT + PREFERENCE + MULTI_TURN)):
        write_image(nb / rel, 112, 80, seed=seed)
    csv_lines = [CSV_HEADER]
    for i in (1, 2, 3, 4, 11, 12, 21, 22):
        if i in FLICKR_NAMED:
            write_image(image_root / _url(i).rsplit("/", 1)[1], 112, 80, seed=100 + i)
            continue
        csv_lines.append(f"{image_id(i)},train,{_url(i)},https://www.flickr.com/photos/x/{i},"
                         f"https://creativecommons.org/licenses/by/2.0/,,,photo {i},1000,md5{i},,0.0")
        if i not in MISSING_SOURCES:
            write_image(image_root / _folder(i) / f"{image_id(i)}.jpg", 112, 80, seed=100 + i)
    csv_path = image_root / "train-images-boxable-with-rotation.csv"
    if not csv_path.exists():
        csv_path.write_text("\n".join(csv_lines) + "\n")
    sft = [dict(r) for r in SFT]
    # what map_openimage_url_to_local.py writes, run from the corpus root
    sft[1]["local_input_image"] = f"openimages/{_folder(2)}/{image_id(2)}.jpg"
    sft_lines = [json.dumps(r, ensure_ascii=False) for r in sft[:2]] + [SFT_MALFORMED]
    sft_lines += [json.dumps(r, ensure_ascii=False) for r in sft[2:]]
    _write_jsonl(nb / "jsonl" / "sft.jsonl", sft_lines)
    _write_jsonl(nb / "jsonl" / "preference.jsonl", [json.dumps(r) for r in PREFERENCE])
    _write_jsonl(nb / "jsonl" / "multi-turn.jsonl", [json.dumps(r) for r in MULTI_TURN])
    return {
        "rows": len(SFT) + 1,  # the default config reads sft only
        "errors": 3,
        "image_root": str(image_root),
        "openimages_csv": str(csv_path),
        "splits": {"sft": [5, 3], "preference": [2, 1], "multi-turn": [5, 1]},  # [rows, errors]
        "missing_source": f"{image_id(3)}.jpg",
    }
