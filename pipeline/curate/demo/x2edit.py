"""X2Edit demo corpus: WebDataset tars ``X2Edit_data/<generator>/<shard>/<n>.tar``.

``step1x/000/00000.tar`` is a plain shard (one sample lacks its edited image).
``gpt4o/000/00000.tar`` is two tars concatenated, as some published shards are: the second part
repeats the names of sample ``000000000`` with different content (a new sample, as on the real
data), and holds a corrupt JSON member; the first part has a sample with an empty instruction.
``textflux/000/00000.tar`` has the text-mask member ``.1.1.jpg``;
``qwen-image-edit-Asian-portrait/000/00000.tar`` has a subject-driven ``portrait`` sample
(excluded by default), an ``instruction_ori`` and a "None" instruction;
``kontext/000/00000.tar`` has long-tail task spellings (typo, Chinese, edge punctuation).
Tar bytes are deterministic (fixed mtimes, owners and member order).
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from pipeline.curate.demo.media import image_bytes

STEP1X_TAR = "X2Edit_data/step1x/000/00000.tar"
GPT4O_TAR = "X2Edit_data/gpt4o/000/00000.tar"
TEXTFLUX_TAR = "X2Edit_data/textflux/000/00000.tar"
QWEN_TAR = "X2Edit_data/qwen-image-edit-Asian-portrait/000/00000.tar"
KONTEXT_TAR = "X2Edit_data/kontext/000/00000.tar"


def _meta(instruction: str, task: str, **extra) -> bytes:
    rec = {"instruction": instruction, "task": task, "width": 128, "height": 96, **extra}
    return json.dumps(rec, ensure_ascii=False).encode()


def _sample(key: str, seed: int, json_bytes: bytes | None, source: bool = True, edited: bool = True,
            txt: str = "", mask: bool = False) -> list[tuple[str, bytes]]:
    members = []
    if source:
        members.append((f"{key}.1.0.jpg", image_bytes(128, 96, seed)))
    if mask:
        members.append((f"{key}.1.1.jpg", image_bytes(128, 96, seed + 2)))
    if edited:
        members.append((f"{key}.2.jpg", image_bytes(128, 96, seed + 1)))
    if json_bytes is not None:
        members.append((f"{key}.json", json_bytes))
    members.append((f"{key}.txt", txt.encode()))
    return members


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)


def build(root: Path) -> dict:
    root = Path(root)
    step1x = (
        _sample("000000000", 10, _meta("Change the background to a snowy mountain range", "background_change",
                                       model="step1x", label="step1x", score="[9, 8]", liqe_score=4.25,
                                       aesthetic_score_v2_5=5.9), txt="Change the background")
        + _sample("000000001", 20, _meta("把图片变成水彩画风格", "风格更改", model="step1x", score="None"))
        + _sample("000000002", 30, _meta("Make the car red", "color_change"), edited=False)  # broken
    )
    _write(root / STEP1X_TAR, tar_bytes(step1x))

    part_a = (
        _sample("000000000", 40, _meta("Add a cat on the sofa", "subject_addition", model="gpt4o"))
        + _sample("000000001", 50, _meta("   ", "subject_deletion", model="gpt4o"))  # broken: empty
    )
    part_b = (
        # repeats 000000000: this later version wins
        _sample("000000000", 60, _meta("Remove the cat from the sofa", "subject_deletion", model="gpt4o",
                                       score_7b="[10, 9]"))
        + _sample("000000002", 70, b'{"instruction": "Make it night", "task": ')  # broken: corrupt json
        + _sample("000000003", 80, _meta("Count the apples and add one more", "object_counting", model="gpt4o"))
    )
    _write(root / GPT4O_TAR, tar_bytes(part_a) + tar_bytes(part_b))

    textflux = _sample("000000000", 90, _meta("将“好无聊”改为“很无聊”。", "text_change", model="textflux",
                                              label="textflux"), mask=True)
    _write(root / TEXTFLUX_TAR, tar_bytes(textflux))
    qwen = (
        _sample("000000000", 100, _meta("身材健硕的男人在海边沙滩上晒太阳", "portrait", model="qwen-image-edit",
                                        label="qwen-image", instruction_ori="身材健硕的男人在健身房举铁"))
        + _sample("000000001", 110, _meta("把背景换成雪山", "background_change", label="qwen-image",
                                          instruction_ori="一个女人站在城市街头"))
        + _sample("000000002", 120, _meta("None", "color_change", label="qwen-image"))  # broken: "None"
    )
    _write(root / QWEN_TAR, tar_bytes(qwen))
    kontext = (
        _sample("000000000", 130, _meta("Move the camera to the left", "camrea_move_editing", label="Kontext",
                                        instruction_zh="把镜头向左移动", instruction_type="short"))
        + _sample("000000001", 140, _meta("Add warm evening light", "-tone_transfer", label="Kontext"))
        + _sample("000000002", 150, _meta("Give the person a passport photo look", "证件照生成", label="Kontext"))
        + _sample("000000003", 160, _meta("What would this room look like after a party?", "reasoning",
                                          label="Kontext"))
    )
    _write(root / KONTEXT_TAR, tar_bytes(kontext))
    return {
        "rows": 16,
        "errors": 6,  # missing edited, empty, corrupt json, "None", excluded portrait and 证件照生成
        "tars": [STEP1X_TAR, GPT4O_TAR, TEXTFLUX_TAR, QWEN_TAR, KONTEXT_TAR],
        # "<tar>#<key>[#<occurrence>]" -> [task raw, category, subset] of the rows expected to be fine
        "ok": {
            f"{STEP1X_TAR}#000000000": ["background_change", "background", "step1x"],
            f"{STEP1X_TAR}#000000001": ["风格更改", "style", "step1x"],
            f"{GPT4O_TAR}#000000000": ["subject_addition", "add", "gpt4o"],
            f"{GPT4O_TAR}#000000000#1": ["subject_deletion", "remove", "gpt4o"],
            f"{GPT4O_TAR}#000000003": ["object_counting", "other", "gpt4o"],
            f"{TEXTFLUX_TAR}#000000000": ["text_change", "text", "textflux"],
            f"{QWEN_TAR}#000000001": ["background_change", "background", "qwen-image-edit-Asian-portrait"],
            f"{KONTEXT_TAR}#000000000": ["camrea_move_editing", "camera", "kontext"],
            f"{KONTEXT_TAR}#000000001": ["-tone_transfer", "tone", "kontext"],
            f"{KONTEXT_TAR}#000000003": ["reasoning", "reasoning", "kontext"],
        },
        # the repeated sample: the second part's edited image (image_bytes seed 61) is a new sample
        "duplicate": {"tar": GPT4O_TAR, "member": "000000000.2.jpg", "seed": 61},
    }
