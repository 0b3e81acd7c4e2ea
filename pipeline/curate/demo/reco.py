"""ReCo-Data demo layout: ``{add,remove,replace,style}/`` with ``{task}_data_configs.json``.

What it exercises (default config, all four tasks):

* ``add``: an extracted pair with its mask (``video_masks/add/<name>``), a record without
  ``instruction_final_refine``, and one whose videos are not downloaded (an error row listing
  where it looked);
* ``remove``: not extracted, as shipped: ``remove/src_videos/remove_src_video_00.tar`` and
  ``remove/tar_videos/remove_tar_video_00.tar`` with bare member names (the pair is a real add
  pair reversed);
* ``replace``: paths relative to the task folder, a record escaping the dataset root, and one
  whose instruction holds "error" (kept at ingest, rejected by the filter rule
  ``rejected_instruction``, as the official loader skips it);
* ``style``: small generated clips, the target named like the published ones
  (``video1-a_Van_Gogh_style.mp4``), and a record whose instruction is "None" (rejected likewise).
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from pipeline.curate.demo.media import copy_clip, real_pairs, synthetic_video


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
    synthetic_video(root / "video_masks/add/zs02_0001.mp4", n=9, width=64, height=64, seed=5)
    _write_json(root / "add/add_data_configs.json", [
        {"src_video": "add/src_videos/zs02_0001.mp4", "tar_video": "add/tar_videos/zs02_0001.mp4",
         "instruction": "Add a girl.", "instruction_final_refine": add.instruction},
        # broken: no instruction_final_refine
        {"src_video": "add/src_videos/zs02_0002.mp4", "tar_video": "add/tar_videos/zs02_0002.mp4",
         "instruction": "Add a dog."},
        # broken: neither extracted nor in a shard
        {"src_video": "add/src_videos/zs02_0003.mp4", "tar_video": "add/tar_videos/zs02_0003.mp4",
         "instruction_final_refine": "Add a red kite in the sky."},
    ])

    # Removal = the add pair reversed; both videos only inside the shipped tar shards.
    _write_tar(root / "remove/src_videos/remove_src_video_00.tar", {"zs02_rm_0001.mp4": add.edited})
    _write_tar(root / "remove/tar_videos/remove_tar_video_00.tar", {"zs02_rm_0001.mp4": add.source})
    _write_json(root / "remove/remove_data_configs.json", [
        {"src_video": "remove/src_videos/zs02_rm_0001.mp4", "tar_video": "remove/tar_videos/zs02_rm_0001.mp4",
         "instruction_final_refine": "Remove the little girl with long brown hair beside the boy."},
    ])

    copy_clip(replace.source, root / "replace/src_videos/hl10_0001.mp4")
    copy_clip(replace.edited, root / "replace/tar_videos/hl10_0001.mp4")
    copy_clip(replace.edited, root / "replace/tar_videos/hl10_0002.mp4")
    _write_json(root / "replace/replace_data_configs.json", [
        {"src_video": "src_videos/hl10_0001.mp4", "tar_video": "tar_videos/hl10_0001.mp4",
         "instruction_final_refine": replace.instruction},
        # broken: escapes the dataset root
        {"src_video": "replace/src_videos/hl10_0001.mp4", "tar_video": "../../etc/passwd",
         "instruction_final_refine": "Escape."},
        # rejected by the filter (the official loader skips it): the instruction holds "error"
        {"src_video": "replace/src_videos/hl10_0001.mp4", "tar_video": "replace/tar_videos/hl10_0002.mp4",
         "instruction_final_refine": "Error: the caption model failed on this clip."},
    ])

    synthetic_video(root / "style/src_videos/video1.mp4", n=17, width=320, height=192, seed=3)
    synthetic_video(root / "style/tar_videos/video1-a_Van_Gogh_style.mp4", n=17, width=320, height=192, seed=4)
    synthetic_video(root / "style/tar_videos/video1-a_Ukiyo-e_style.mp4", n=17, width=320, height=192, seed=6)
    _write_json(root / "style/style_data_configs.json", [
        {"src_video": "style/src_videos/video1.mp4", "tar_video": "style/tar_videos/video1-a_Van_Gogh_style.mp4",
         "instruction_final_refine": "Render the video in the style of Van Gogh."},
        # rejected by the filter: the instruction is "None"
        {"src_video": "style/src_videos/video1.mp4", "tar_video": "style/tar_videos/video1-a_Ukiyo-e_style.mp4",
         "instruction_final_refine": "None"},
    ])

    return {
        "rows": 9,
        "errors": 3,
        "units": 4,
        "rejected_instruction": 2,
        "categories": {"add": 3, "remove": 1, "replace": 3, "style": 2},
        "tar_members": {"src_video": "remove/src_videos/remove_src_video_00.tar#zs02_rm_0001.mp4",
                        "tar_video": "remove/tar_videos/remove_tar_video_00.tar#zs02_rm_0001.mp4"},
        "mask": "video_masks/add/zs02_0001.mp4",
    }
