"""GPT-Image-Edit-1.5M demo corpus, in the published layout:

* the dataset repository: ``gpt-edit/{hqedit/edit, hqedit/generate, omniedit,
  omniedit/complex-edit, ultraedit}/{input,output}/<id>.png`` plus the dataset's own
  ``gpt-edit/<task>/metadata/*.json``;
* the model repository's ``training_json/`` in a separate directory (``model-repo/``, set as
  ``annotations_root``), with the official file names, whose paths (``input/<id>.png``) are
  relative to each file's image root from the official ``data.txt``.

Broken on purpose: a record without a human turn, a record with one image path, a path escaping
the root, a path that resolves nowhere, and a JSON file that does not parse (the unit's error
row). ``omniedit_gpt_rewrite.json`` rewrites an instruction of ``omniedit_gpt.json`` (same
images: a second sample); the metadata file repeats an edit of ``ultraedit_gpt.json`` with the
same instruction (same sample id: the `samples` view keeps one row).
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.curate.demo.media import write_image

ANNOTATIONS = "model-repo"  # annotations_root, relative to the corpus root


def _rec(inp: str, out: str, instruction: str | None) -> dict:
    conv = [{"from": "gpt", "value": "<image>"}]
    if instruction is not None:
        conv.insert(0, {"from": "human", "value": f"<image>\n{instruction}"})
    return {"image": [inp, out], "conversations": conv}


# training_json file -> records; paths relative to the file's image root (data.txt)
FILES = {
    "hqedit_gpt_edit.json": [
        _rec("input/000001.png", "output/000001.png", "Turn the daytime sky into a starry night"),
        _rec("input/000002.png", "output/000002.png", None),  # broken: no human turn
    ],
    "hqedit_gpt_generate.json": [
        _rec("input/g00001.png", "output/g00001.png", "Generate a watercolor version of the harbor"),
    ],
    "omniedit_gpt.json": [
        _rec("input/a01.png", "output/a01.png", "Add a red kite flying above the beach"),
        {"image": ["input/s01.png"],  # broken: one image only
         "conversations": [{"from": "human", "value": "<image>\nMake it look like pixel art"}]},
        _rec("../../../outside.png", "output/s02.png", "Escape the root"),  # broken
        _rec("input/missing.png", "output/missing.png", "Paint the wall blue"),  # broken: no such file
    ],
    "omniedit_gpt_rewrite.json": [
        _rec("input/a01.png", "output/a01.png", "Put a red kite in the sky over the beach"),
    ],
    "complexedit_gpt.json": [
        _rec("input/c01.png", "output/c01.png", "Remove the car, make it dusk and add a street lamp"),
    ],
    "ultraedit_gpt.json": [
        _rec("input/u01.png", "output/u01.png", "  Paint the front door bright yellow  "),
    ],
}
IMAGE_ROOTS = {"hqedit_gpt_edit.json": "hqedit/edit", "hqedit_gpt_generate.json": "hqedit/generate",
               "omniedit_gpt.json": "omniedit", "omniedit_gpt_rewrite.json": "omniedit",
               "complexedit_gpt.json": "omniedit/complex-edit", "ultraedit_gpt.json": "ultraedit"}
# the dataset's own metadata: gpt-edit/<task>/metadata/<file>
METADATA = {
    "ultraedit/metadata/ultraedit_meta.json": [
        {"id": "u01", "dataset_source": "ultraedit", "task": "color_alter", "input": "input/u01.png",
         "output": "output/u01.png", "instruction": "Paint the front door bright yellow",
         "instruction_type": "original", "input_description": "A red front door of a brick house."},
        {"id": "u02", "dataset_source": "ultraedit", "task": "add", "input": "input/u02.png",
         "output": "output/u02.png", "instruction": "Add a wreath to the door",
         "instruction_type": "rewrite", "input_description": "A wooden door."},
    ],
}
BROKEN_FILE = "zz_truncated.json"  # sorts last; not valid JSON


def build(root: Path) -> dict:
    root = Path(root)
    seed = 0
    images = [(IMAGE_ROOTS[name], rel) for name, recs in FILES.items() for rec in recs for rel in rec["image"]]
    images += [(meta.split("/metadata/")[0], rec[k]) for meta, recs in METADATA.items() for rec in recs
               for k in ("input", "output")]
    for base, rel in images:
        path = root / "gpt-edit" / base / rel
        if ".." not in rel and "missing" not in rel and not path.exists():
            write_image(path, 96 + 16 * (seed % 3), 96, seed=seed)
            seed += 1
    out = root / ANNOTATIONS / "training_json"
    out.mkdir(parents=True, exist_ok=True)
    for name, records in FILES.items():
        if not (out / name).exists():
            (out / name).write_text(json.dumps(records, indent=1))
    if not (out / BROKEN_FILE).exists():
        (out / BROKEN_FILE).write_text('[{"image": ["input/000003.png", ')
    for rel, records in METADATA.items():
        path = root / "gpt-edit" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(json.dumps(records, indent=1))
    return {
        "annotations_root": ANNOTATIONS,
        # rows as the `samples` view shows them: ultraedit u01 is in training_json and in the
        # metadata with the same instruction, one sample id, so ingest writes one row more
        "rows": sum(len(r) for r in FILES.values()) + 1 + sum(len(r) for r in METADATA.values()) - 1,
        "errors": 5,
        "duplicate_ids": 1,
        # "<annotation file>|<input relative to gpt-edit>" -> (subset, category) of the fine rows
        "categories": {
            "training_json/hqedit_gpt_edit.json|hqedit/edit/input/000001.png": ("hqedit", "other"),
            "training_json/hqedit_gpt_generate.json|hqedit/generate/input/g00001.png": ("hqedit", "other"),
            "training_json/omniedit_gpt.json|omniedit/input/a01.png": ("omniedit", "other"),
            "training_json/omniedit_gpt_rewrite.json|omniedit/input/a01.png": ("omniedit", "other"),
            "training_json/complexedit_gpt.json|omniedit/complex-edit/input/c01.png": ("omniedit", "freeform"),
            "training_json/ultraedit_gpt.json|ultraedit/input/u01.png": ("ultraedit", "other"),
            "ultraedit/metadata/ultraedit_meta.json|ultraedit/input/u01.png": ("ultraedit", "color"),
            "ultraedit/metadata/ultraedit_meta.json|ultraedit/input/u02.png": ("ultraedit", "add"),
        },
    }
