"""The kinds of bad input tests/stages/ingest/test_bad_inputs.py seeds into the demo corpus, per adapter.

Each kind is one bad record added to one metadata file of the demo corpus, next to its good
records; ``inject`` writes them all and returns, per file (relative to the corpus root), how many
records it added. Each must come out as exactly one error row.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DEEP = "[" * 100_000 + "]" * 100_000
LONG = "x" * 300 + ".mp4"
SURROGATE = "\ud800"


@dataclass(frozen=True)
class Kind:
    dataset: str
    name: str
    file: str  # relative to the corpus root
    # the record: JSON text for .json lists, bytes (one line, no newline) for .jsonl/.csv lines,
    # or a callable building the file's extra content for tars
    record: Callable[[dict], str | bytes]


def _j(**changes) -> Callable[[dict], str]:
    """A JSON record: the file's first record with ``changes`` (None deletes a field)."""
    def make(first: dict) -> str:
        rec = {k: v for k, v in {**first, **changes}.items() if v is not None or k not in changes}
        return json.dumps(rec)  # ensure_ascii: a lone surrogate is written as the escape \\ud800
    return make


def _raw(text: str | bytes) -> Callable[[dict], str | bytes]:
    return lambda first: text


DITTO = "ditto/training_metadata/ditto_demo.json"
RECO = "reco/add/add_data_configs.json"
GPT = "gpt_image_edit/model-repo/training_json/hqedit_gpt_edit.json"
MB = "motionbench/MotionBenchCaption-train/train.jsonl"
NHR = "nhr_edit/train/metadata.jsonl"
PICO = "pico_banana/nb/jsonl/sft.jsonl"
OPENVE = "openve/csv_files/local_change.csv"
KOALA = "koala/Koala_36M_1.csv"
X2EDIT = "x2edit/X2Edit_data/gpt4o/000/00001.tar"

KINDS: list[Kind] = [
    # Ditto-1M: JSON list of {source_path, instruction, edited_path}
    Kind("ditto", "lone surrogate in instruction", DITTO, _j(instruction=f"a{SURROGATE}b", edited_path="global_style1/s1.mp4")),
    Kind("ditto", "NaN instruction", DITTO, lambda f: _j(edited_path="global_style1/n1.mp4")(f)[:-1] + ', "instruction": NaN}'),
    Kind("ditto", "number instruction", DITTO, _j(instruction=42, edited_path="global_style1/n2.mp4")),
    Kind("ditto", "list instruction", DITTO, _j(instruction=["a"], edited_path="global_style1/n3.mp4")),
    Kind("ditto", "missing edited_path", DITTO, _j(edited_path=None)),
    Kind("ditto", "NUL byte in a path", DITTO, _j(edited_path="global_style1/a\x00b.mp4")),
    Kind("ditto", "file name over 255 bytes", DITTO, _j(edited_path=f"global_style1/{LONG}")),
    Kind("ditto", "symlink loop", DITTO, _j(edited_path="global_style1/loop.mp4")),
    Kind("ditto", "FIFO as a video", DITTO, _j(edited_path="global_style1/fifo.mp4")),
    Kind("ditto", "path escaping the root", DITTO, _j(edited_path="../../../etc/passwd")),
    Kind("ditto", "record not an object", DITTO, _raw('"just a string"')),
    Kind("ditto", "lone surrogate in a path", DITTO, _j(edited_path=f"global_style1/{SURROGATE}.mp4")),
    # ReCo: JSON list of {src_video, tar_video, instruction}
    Kind("reco", "NaN instruction", RECO, lambda f: _j(tar_video="add/tar_videos/nan.mp4")(f)[:-1] + ', "instruction": NaN}'),
    Kind("reco", "lone surrogate in instruction", RECO, _j(instruction=SURROGATE)),
    Kind("reco", "dict tar_video", RECO, _j(tar_video={"a": 1})),
    Kind("reco", "NUL byte in src_video", RECO, _j(src_video="add/src\x00.mp4", tar_video="add/tar_videos/nul.mp4")),
    # GPT-Image-Edit: JSON list of {image: [in, out], conversations}
    Kind("gpt_image_edit", "lone surrogate in the instruction", GPT,
         _j(image=["input/s.png", "output/s.png"], conversations=[{"from": "human", "value": f"<image>\n{SURROGATE}"}])),
    Kind("gpt_image_edit", "image not a list", GPT, _j(image="input/000001.png")),
    Kind("gpt_image_edit", "long image name", GPT, _j(image=[f"input/{LONG}", "output/x.png"])),
    Kind("gpt_image_edit", "number conversation value", GPT, _j(conversations=[{"from": "human", "value": 7}])),
    # MotionBench: JSON Lines of {video_path, motion_caption}
    Kind("motionbench", "deeply nested line", MB, _raw(('{"video_path": ' + DEEP + "}").encode())),
    Kind("motionbench", "invalid UTF-8 line", MB, _raw(b'{"video_path": "mb_0001.mp4", "motion_caption": "caf\xe9"}')),
    Kind("motionbench", "lone surrogate in caption", MB, _raw(b'{"video_path": "mb_s.mp4", "motion_caption": "\\ud800"}')),
    Kind("motionbench", "truncated JSON line", MB, _raw(b'{"video_path": "mb_0001.mp4", "motion_')),
    Kind("motionbench", "JSON array line", MB, _raw(b'[1, 2, 3]')),
    Kind("motionbench", "NaN caption", MB, _raw(b'{"video_path": "mb_9.mp4", "motion_caption": NaN}')),
    Kind("motionbench", "NUL byte in video_path", MB, _raw(b'{"video_path": "mb\\u0000.mp4", "motion_caption": "x"}')),
    Kind("motionbench", "symlink loop video", MB, _raw(b'{"video_path": "loop.mp4", "motion_caption": "x"}')),
    # NHR-Edit: JSON Lines
    Kind("nhr_edit", "lone surrogate in instruction", NHR, _j(sample_id="nhr-s", edit_instruction=SURROGATE)),
    Kind("nhr_edit", "number file name", NHR, _j(sample_id="nhr-n", source_file_name=12)),
    Kind("nhr_edit", "deeply nested line", NHR, _raw(('{"sample_id": ' + DEEP + "}").encode())),
    Kind("nhr_edit", "file name over 255 bytes", NHR, _j(sample_id="nhr-l", edited_file_name=LONG)),
    # Pico-Banana: JSON Lines
    Kind("pico_banana", "lone surrogate in output_image", PICO, _j(output_image=f"images/{SURROGATE}.png")),
    Kind("pico_banana", "deeply nested line", PICO, _raw(('{"text": ' + DEEP + "}").encode())),
    Kind("pico_banana", "NUL byte in output_image", PICO, _j(output_image="images/a\x00.png")),
    Kind("pico_banana", "invalid UTF-8 line", PICO, _raw(b'{"text": "\xff\xfe"}')),
    # OpenVE: ';'-separated CSV video;original_video;prompt
    Kind("openve", "unbalanced quote in the prompt", OPENVE, _raw(b'local_change/edited/q.mp4;local_change/original/hl07.mp4;"never closed')),
    Kind("openve", "invalid UTF-8 byte", OPENVE, _raw(b'local_change/edited/u.mp4;local_change/original/hl07.mp4;caf\xe9')),
    Kind("openve", "prompt over 128 KiB", OPENVE, _raw(b'local_change/edited/b.mp4;local_change/original/hl07.mp4;' + b"y" * (140 << 10))),
    Kind("openve", "too few fields", OPENVE, _raw(b'local_change/edited/f.mp4;only two')),
    Kind("openve", "too many fields", OPENVE, _raw(b'a.mp4;b.mp4;c;d;e')),
    Kind("openve", "NUL byte in a path", OPENVE, _raw(b'local_change/edited/n\x00.mp4;local_change/original/hl07.mp4;Paint.')),
    Kind("openve", "file name over 255 bytes", OPENVE, _raw(f"local_change/edited/{LONG};local_change/original/hl07.mp4;Paint.".encode())),
    # Koala-36M: CSV videoID,url,timestamp,caption,<scores>
    Kind("koala", "too few fields", KOALA, _raw(b'onlyid,https://www.youtube.com/watch?v=x')),
    Kind("koala", "unparsable timestamp", KOALA, _raw(b'hL02filmRol_9,https://www.youtube.com/watch?v=hL02filmRol,"[soon]",A cap.,1,1,1,1')),
    Kind("koala", "end before start", KOALA, _raw(b'hL02filmRol_8,,"[\'00:00:02.000\', \'00:00:01.000\']",A cap.,1,1,1,1')),
    Kind("koala", "videoID with a path separator", KOALA, _raw(b'../x_1,,"[\'00:00:00.000\', \'00:00:01.000\']",A cap.,1,1,1,1')),
    Kind("koala", "missing caption", KOALA, _raw(b'hL02filmRol_7,,"[\'00:00:00.000\', \'00:00:01.000\']", ,1,1,1,1')),
    # X2Edit: WebDataset tars (a new shard of three broken samples)
    Kind("x2edit", "json member not UTF-8", X2EDIT, _raw(b"\xff\xfe{}")),
    Kind("x2edit", "json member nested too deeply", X2EDIT, _raw(DEEP.encode())),
    Kind("x2edit", "json member with a lone surrogate", X2EDIT, _raw(b'{"instruction": "\\ud800"}')),
]


def _first_json(path: Path) -> dict:
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)[0]
    return json.loads(text.splitlines()[0])


def _prepare_media(root: Path) -> None:
    folder = root / "ditto/videos/global_style1"
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink("loop.mp4", folder / "loop.mp4")
    os.mkfifo(folder / "fifo.mp4")
    os.symlink("loop.mp4", root / "motionbench/MotionBenchCaption-train/videos/loop.mp4")


def inject(root: Path) -> dict[str, int]:
    """Seed every kind into the corpus at ``root``; file (relative) -> records added."""
    _prepare_media(root)
    added: dict[str, int] = {}
    by_file: dict[str, list[Kind]] = {}
    for kind in KINDS:
        by_file.setdefault(kind.file, []).append(kind)
    for rel, kinds in by_file.items():
        path = root / rel
        if path.suffix == ".tar":
            _write_tar(path, [k.record({}) for k in kinds])
        elif path.suffix == ".json":
            first = _first_json(path)
            text = path.read_text().rstrip()
            path.write_text(text[:-1].rstrip() + "".join(", " + k.record(first) for k in kinds) + "]")
        elif path.suffix == ".jsonl":
            first = _first_json(path)
            lines = [k.record(first) for k in kinds]
            with open(path, "ab") as f:
                f.write(b"".join((x if isinstance(x, bytes) else x.encode("utf-8", "surrogatepass")) + b"\n"
                                 for x in lines))
        else:  # CSV: right after the header, so good records follow every bad one
            header, _, body = path.read_bytes().partition(b"\n")
            path.write_bytes(header + b"\n" + b"".join(k.record({}) + b"\n" for k in kinds) + body)
        added[rel] = len(kinds)
    return added


def _write_tar(path: Path, json_members: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for i, data in enumerate(json_members):
            info = tarfile.TarInfo(f"{900000000 + i:09d}.json")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
