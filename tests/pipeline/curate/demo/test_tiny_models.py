"""The tiny model builders write the same bytes in every process and on every machine: two builds
in fresh interpreters, with different hash seeds and thread counts, give identical files."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]
pytestmark = pytest.mark.timeout(600)


def _build(module: str, out: Path, threads: int, hash_seed: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed), "RAYON_NUM_THREADS": str(threads),
           "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    env.pop("TOKENIZERS_PARALLELISM", None)
    subprocess.run([sys.executable, "-m", module, str(out)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("module,expect", [
    ("pipeline.curate.demo.tiny_encoders", {"umt5/tokenizer.json", "umt5/model.safetensors", "vae/config.json",
                                   "vae/diffusion_pytorch_model.safetensors", "siglip/model.safetensors"}),
    ("pipeline.curate.demo.tiny_judge", {"tokenizer.json", "model.safetensors", "config.json", "processor_config.json"}),
])
def test_builds_in_fresh_processes_are_byte_identical(tmp_path, module, expect):
    if module == "pipeline.curate.demo.tiny_judge":
        pytest.importorskip("transformers.models.qwen2_5_vl")
    first = _build(module, tmp_path / "a", threads=1, hash_seed=1)
    second = _build(module, tmp_path / "b", threads=2, hash_seed=2)
    assert expect <= set(first)  # every file of the checkpoint, not just some
    assert first == second


def test_umt5_tokenizer_ids_are_canonical():
    """Specials first (pad 0, eos 1, unk 2), then pieces by score descending, ties by piece."""
    import json

    from pipeline.curate.demo.tiny_encoders import build_tokenizer

    vocab = json.loads(build_tokenizer().backend_tokenizer.to_str())["model"]["vocab"]
    assert [p for p, _ in vocab[:3]] == ["<pad>", "</s>", "<unk>"]
    rest = [(-score, piece) for piece, score in vocab[3:]]
    assert rest == sorted(rest) and len({p for p, _ in vocab}) == len(vocab)
