"""GPT-Image-Edit-1.5M demo corpus: ``training_json/*.json`` + ``gpt-edit/{hqedit,omniedit,ultraedit}``.

Broken on purpose: a record without a human turn, a record with one image path, a path escaping
the root, and a JSON file that does not parse (it becomes the unit's error row).
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.demo.media import write_image


def _rec(inp: str, out: str, instruction: str | None) -> dict:
    conv = [{"from": "gpt", "value": "<image>"}]
    if instruction is not None:
        conv.insert(0, {"from": "human", "value": f"<image>\n{instruction}"})
    return {"image": [inp, out], "conversations": conv}


FILES = {
    "hqedit.json": [
        _rec("hqedit/edit/input/000001.png", "hqedit/edit/output/000001.png",
             "Turn the daytime sky into a starry night"),
        _rec("hqedit/edit/input/000002.png", "hqedit/edit/output/000002.png", None),  # broken
    ],
    "omniedit.json": [
        _rec("omniedit/addition/input/a01.png", "omniedit/addition/output/a01.png",
             "Add a red kite flying above the beach"),
        _rec("omniedit/removal/input/r01.png", "omniedit/removal/output/r01.png",
             "Remove the bicycle leaning on the wall"),
        {"image": ["omniedit/style/input/s01.png"],  # broken: one image only
         "conversations": [{"from": "human", "value": "<image>\nMake it look like pixel art"}]},
        _rec("../../../outside.png", "omniedit/style/output/s02.png", "Escape the root"),  # broken
    ],
    "ultraedit.json": [
        _rec("ultraedit/change_color/input/c01.png", "ultraedit/change_color/output/c01.png",
             "  Paint the front door bright yellow  "),
    ],
}
BROKEN_FILE = "zz_truncated.json"  # sorts last; not valid JSON


def build(root: Path) -> dict:
    root = Path(root)
    seed = 0
    for records in FILES.values():
        for rec in records:
            for rel in rec["image"]:
                if ".." not in rel:
                    write_image(root / "gpt-edit" / rel, 96 + 16 * (seed % 3), 96, seed=seed)
                    seed += 1
    out = root / "training_json"
    out.mkdir(parents=True, exist_ok=True)
    for name, records in FILES.items():
        if not (out / name).exists():
            (out / name).write_text(json.dumps(records, indent=1))
    if not (out / BROKEN_FILE).exists():
        (out / BROKEN_FILE).write_text('[{"image": ["hqedit/edit/input/000003.png", ')
    return {
        "rows": sum(len(r) for r in FILES.values()) + 1,
        "errors": 4,
        "categories": {
            "hqedit/edit/input/000001.png": ("hqedit", "other"),
            "omniedit/addition/input/a01.png": ("omniedit", "add"),
            "omniedit/removal/input/r01.png": ("omniedit", "remove"),
            "ultraedit/change_color/input/c01.png": ("ultraedit", "color"),
        },
    }
