"""ReCo-Data demo layout: ``{add,remove,replace,style}/`` with ``{task}_data_configs.json``.

What it exercises (default config, all four tasks):

* ``add``: an extracted pair, and a record without ``instruction_final_refine``;
* ``remove``: the source videos only inside the tar shard ``remove/remove_src_video_00.tar``
  (member ``src_videos/<name>``), the target extracted; the pair is a real add pair reversed;
* ``replace``: paths relative to the task folder, and a record escaping the dataset root;
* ``style``: small generated clips (no real style pair is bundled).
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from pipeline.demo.media import copy_clip, real_pairs, synthetic_video


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def _write_tar(path: Path, members: dict[str, Path]) -> None:
    """A plain tar with fixed metadata, so rebuilding it gives the same bytes."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tar.tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, src in members.items():
            data = src.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    tmp.replace(path)


def build(root: Path) -> dict:
    root = Path(root)
    pairs = {p.id: p for p in real_pairs()}
    add, replace = pairs["zs02"], pairs["hl10"]

    copy_clip(add.source, root / "add/src_videos/zs02_0001.mp4")
    copy_clip(add.edited, root / "add/tar_videos/zs02_0001.mp4")
    _write_json(root / "add/add_data_configs.json", [
        {"src_video": "add/src_videos/zs02_0001.mp4", "tar_video": "add/tar_videos/zs02_0001.mp4",
         "instruction": "Add a girl.", "instruction_final_refine": add.instruction},
        # broken: no instruction_final_refine
        {"src_video": "add/src_videos/zs02_0002.mp4", "tar_video": "add/tar_videos/zs02_0002.mp4",
         "instruction": "Add a dog."},
    ])

    # Removal = the add pair reversed; its source exists only inside the tar shard.
    _write_tar(root / "remove/remove_src_video_00.tar", {"src_videos/zs02_rm_0001.mp4": add.edited})
    copy_clip(add.source, root / "remove/tar_videos/zs02_rm_0001.mp4")
    _write_json(root / "remove/remove_data_configs.json", [
        {"src_video": "remove/src_videos/zs02_rm_0001.mp4", "tar_video": "remove/tar_videos/zs02_rm_0001.mp4",
         "instruction_final_refine": "Remove the little girl with long brown hair beside the boy."},
    ])

    copy_clip(replace.source, root / "replace/src_videos/hl10_0001.mp4")
    copy_clip(replace.edited, root / "replace/tar_videos/hl10_0001.mp4")
    _write_json(root / "replace/replace_data_configs.json", [
        {"src_video": "src_videos/hl10_0001.mp4", "tar_video": "tar_videos/hl10_0001.mp4",
         "instruction_final_refine": replace.instruction},
        # broken: escapes the dataset root
        {"src_video": "replace/src_videos/hl10_0001.mp4", "tar_video": "../../etc/passwd",
         "instruction_final_refine": "Escape."},
    ])

    synthetic_video(root / "style/src_videos/synth_0001.mp4", n=17, width=320, height=192, seed=3)
    synthetic_video(root / "style/tar_videos/synth_0001.mp4", n=17, width=320, height=192, seed=4)
    _write_json(root / "style/style_data_configs.json", [
        {"src_video": "style/src_videos/synth_0001.mp4", "tar_video": "style/tar_videos/synth_0001.mp4",
         "instruction_final_refine": "Render the video in a flat pastel cartoon style."},
    ])

    return {
        "rows": 6,
        "errors": 2,
        "units": 4,
        "categories": {"add": 2, "remove": 1, "replace": 2, "style": 1},
        "tar_member": "remove/remove_src_video_00.tar#src_videos/zs02_rm_0001.mp4",
    }
