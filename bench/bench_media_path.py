"""Benchmark the CPU media path of a raw clip (no models) against decoding alone.

    python bench/bench_media_path.py [--copies N] [--variants sample|all] [--rss-scale 10]

Clips: the bundled demo/clips plus ../shared/realclips/videos when present, read as raw t2v clips
at the recipe's defaults (16 fps, up to 81 frames, 480p-class buckets).
(a) decode only: the native frames the encode stage decodes for the clip (the target's plan plus
    the speed source's, once each), with the same decoder (stages.encode.decode.Video);
(b) the media path as the encode stage runs it: stages.encode.decode.decode_sample (the same
    decode, fit to the bucket, the seeded variant draw, the speed clips), the cube/tube operators
    (stages.pretext.perturb_source), and the shard bytes: per key, stand-in latents of
    the real latent shape ([16, T/4+1, H/8, W/8] bf16, strided from the pixels: the VAE is
    excluded), packed as the shard writer packs them (single-tensor safetensors + JSON, streamed
    into a deterministic tar, stages.shard.layout).
Prints clips/s for each and the ratio (b)/(a) (goal >= 0.7); the two are timed clip by clip, interleaved,
so both see the same machine load. Then the peak RSS of (b) in fresh
subprocesses over the clips once and --rss-scale times (goal: ratio <= 1.2, i.e. memory does not
grow with the number of clips).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.curate.config import EncodeConfig, PretextConfig  # noqa: E402
from stages.encode.decode import Video, decode_sample  # noqa: E402
from stages.media.frames import frames_that_fit, largest_4n1, plan_indices  # noqa: E402
from stages.pretext import perturb_source, pretext_rng, speed_plan, task_text  # noqa: E402
from stages.shard.layout import json_bytes, write_tar  # noqa: E402

from bench_probe import clip_paths  # noqa: E402  (the bundled clips + ../shared/realclips)




def sample_row(i: int, path: Path) -> dict:
    """A raw t2v clip as the encode stage's plan row gives it to decode_sample."""
    return {"sample_id": f"bench:{i:016x}", "dataset": "bench", "modality": "video", "task": "t2v",
            "caption": "a clip", "instruction": None, "target_uri": str(path), "source_uri": None,
            "clip_start_s": None, "clip_end_s": None}


def decode_only(path: Path, enc: EncodeConfig, pre: PretextConfig) -> int:
    """The baseline: the native frames decode_sample reads for a raw clip (target and speed plans
    at once, each frame once), same decoder, nothing else. Returns the frames read."""
    video = Video(str(path), "decord")
    fit = frames_that_fit(video.frames, video.fps, enc.fps)
    n = enc.num_frames if fit >= enc.num_frames else largest_4n1(fit)
    wanted = set(plan_indices(video.frames, video.fps, enc.fps, n, count=n))
    st, ss = speed_plan(video.frames, video.fps, enc.fps, enc.num_frames, pre.speed_factor)
    if len(st) >= enc.min_frames:
        wanted |= set(st) | set(ss)
    return len(video.read(sorted(wanted)))


def stand_in_latents(frames: np.ndarray) -> torch.Tensor:
    """[16, T/4+1, H/8, W/8] bf16 from the pixels (the VAE's strides), the size a key really holds."""
    x = torch.from_numpy(np.ascontiguousarray(frames[::4, ::8, ::8])).permute(3, 0, 1, 2).to(torch.bfloat16)
    return x.repeat(6, 1, 1, 1)[:16].contiguous()


def media_path(i: int, path: Path, enc: EncodeConfig, pre: PretextConfig, seed: int = 0):
    """(key, json, {member: bytes}) of one clip's keys: the encode stage's decode_sample (decode +
    fit to bucket, speed plan), the pretext operators as encode applies them, the shard bytes."""
    from safetensors.torch import save

    decoded = decode_sample(sample_row(i, path), enc, pre, seed, "decord", None)
    sid = decoded.sample["sample_id"]
    for spec in decoded.keys:
        if spec.error:
            continue
        target, src, record = decoded.clips[spec.target], None, spec.pretext
        if spec.source is not None and spec.perturb:
            src, record = perturb_source(spec.variant, decoded.clips[spec.source], pre,
                                         pretext_rng(seed, sid, spec.variant))
        elif spec.source is not None:
            src = decoded.clips[spec.source]
        members = {"target.safetensors": save({"target_latents": stand_in_latents(target)})}
        if src is not None:
            members["source.safetensors"] = save({"source_latents": stand_in_latents(src)})
        instruction, token = task_text(spec.variant, decoded.sample["caption"], pre)
        key = f"bench-{i:016x}-{spec.variant}"
        doc = json_bytes({"key": key, "instruction": instruction, "task_token": token, "pretext": record,
                          "bucket": f"{decoded.bucket[0]}x{decoded.bucket[1]}", "num_frames": len(target)})
        yield key, doc, members


def run_path(paths: list[Path], variants: str, out_dir: str) -> int:
    enc, pre = EncodeConfig(), PretextConfig(mode=variants)
    with open(Path(out_dir) / "bench.tar", "wb") as f:
        _, n = write_tar(f, (s for i, p in enumerate(paths) for s in media_path(i, p, enc, pre)))
    return n


def child(args) -> None:
    """One measurement in a fresh process: the media path over the clips, --scale times."""
    paths = clip_paths() * args.scale
    with tempfile.TemporaryDirectory() as tmp:
        n = run_path(paths, args.variants, tmp)
    print(json.dumps({"clips": len(paths), "bytes": n,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=2, help="passes over the clips for the timing")
    ap.add_argument("--variants", choices=["sample", "all"], default="sample",
                    help="pretext.mode: one seeded variant per clip (paper mix) or all four")
    ap.add_argument("--rss-scale", type=int, default=10)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="tiny N, seconds: the tests run it (tests/test_bench_smoke.py)")
    args = ap.parse_args()
    if args.smoke and not args.child:
        args.copies, args.rss_scale = 1, 2
    torch.set_num_threads(1)  # one core per worker, as a Ray task gets
    if args.child:
        return child(args)
    paths = clip_paths()
    enc, pre = EncodeConfig(), PretextConfig(mode=args.variants)
    print(f"{len(paths)} clips x {args.copies}, pretext.mode={args.variants}, {enc.num_frames} frames at "
          f"{enc.fps:g} fps, 480p-class buckets")
    for i, p in enumerate(paths[:2]):  # warm the decoder and the resize kernels
        decode_only(p, enc, pre)
        list(media_path(i, p, enc, pre))
    # Interleaved clip by clip, so both sides see the same machine load.
    t_decode = t_path = 0.0
    frames = nbytes = 0
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "bench.tar", "wb") as f:
        for _ in range(args.copies):
            for i, p in enumerate(paths):
                t0 = time.perf_counter()
                frames += decode_only(p, enc, pre)
                t1 = time.perf_counter()
                _, n = write_tar(f, media_path(i, p, enc, pre))
                t_path += time.perf_counter() - t1
                t_decode += t1 - t0
                nbytes += n
    clips = len(paths) * args.copies
    print(f"(a) decode only                           {clips / t_decode:6.2f} clips/s  "
          f"({frames / t_decode:6.1f} native frames/s)")
    print(f"(b) decode->resize->pretext->shard bytes  {clips / t_path:6.2f} clips/s  "
          f"({nbytes / 1e6 / args.copies:.1f} MB of tar per pass)")
    print(f"ratio (b)/(a) = {t_decode / t_path:.2f}x  (goal >= 0.7)")
    rss = {}
    for scale in (1, args.rss_scale):
        res = subprocess.run([sys.executable, __file__, "--child", "--scale", str(scale), "--variants", args.variants],
                             capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        rss[scale] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"peak RSS, {rss[scale]['clips']:4d} clips: {rss[scale]['peak_rss_mb']:7.1f} MB "
              f"({rss[scale]['bytes'] / 1e6:.1f} MB of tar)")
    ratio = rss[args.rss_scale]["peak_rss_mb"] / rss[1]["peak_rss_mb"]
    print(f"peak RSS ratio {args.rss_scale}x / 1x clips = {ratio:.2f}  (goal <= 1.2)")


if __name__ == "__main__":
    main()
