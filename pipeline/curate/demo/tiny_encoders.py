"""Tiny, randomly initialised encoders of the real architectures, built offline.

Weights can never be downloaded here (tests, CI, ``make demo``), yet the encode stage must be
proven through the loading code a user's real checkpoints take. So we build and
``save_pretrained``:

- ``vae``: diffusers ``AutoencoderKLWan`` with z_dim 16 and Wan2.1's strides (8x space, 4x time
  after the first frame), a tiny base width; its ``latents_mean`` / ``latents_std`` are Wan2.1's.
- ``siglip``: transformers ``SiglipVisionModel`` (hidden 32, patch 14, image 112 -> 8x8 patches,
  with the attention-pooling head) and a ``SiglipImageProcessor`` sized to it.
- ``umt5``: transformers ``UMT5EncoderModel`` (d_model 32) and a tokenizer trained here with
  ``tokenizers`` (Unigram, SentencePiece-style metaspace, ``</s>`` appended like umT5's), saved as a
  ``T5TokenizerFast``.

Each directory carries ``TINY_MODEL.json`` (``random_init: true``), which the stage copies into
every row's ``models`` record so random weights are never mistaken for real ones. Building is
seeded, the tokenizer put in a canonical order (``_canonical_unigram``), so two builds, in two
processes or on two machines, write the same bytes; it takes about a second.

    python -m pipeline.curate.demo.tiny_encoders OUT_DIR
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from stages.encode.encoders import TINY_MARKER

SEED = 0
TEXT_DIM = 32  # umT5 d_model (the trainer's tiny WanTransformer3DModel text_dim)
SIGLIP_DIM = 32

# What the tokenizer is trained on: captions and edit instructions like the corpus's, and the task
# tokens, so the tiny tokenizer splits them into a realistic number of pieces.
_CORPUS = (
    "A young boy plays outdoors, moving his arms while the camera pans slightly to the right.",
    "A group of people walks along a street, their clothes swaying as they move toward the camera.",
    "Close-up of a woman's hands slowly unrolling a strip of old film under soft warm light.",
    "Change the style to watercolor. Replace the background with a beach at sunset.",
    "Remove the person on the left. Add subtitles that say hello. Make the dog wear a red hat.",
    "[Complete the missing regions in the video.] [Restore the video to its normal speed.]",
    "[Restore the shuffled video to its original order.] The quick brown fox jumps over the lazy dog.",
    "0 1 2 3 4 5 6 7 8 9 , . ; : ! ? ' \" ( ) [ ] - a b c d e f g h i j k l m n o p q r s t u v w x y z",
)


def _marker(path: Path, what: str, **extra) -> None:
    (path / TINY_MARKER).write_text(json.dumps(
        {"random_init": True, "architecture": what, "builder": "pipeline.curate.demo.tiny_encoders", "seed": SEED,
         **extra}, indent=2, sort_keys=True) + "\n")


def _done(path: Path) -> bool:
    return (path / TINY_MARKER).exists() and (path / "config.json").exists()


def build_vae(path: Path) -> Path:
    import torch
    from diffusers import AutoencoderKLWan

    if not _done(path):
        torch.manual_seed(SEED)
        # Three spatial downsamples (8x), temporal downsampling in the last two (4x): Wan2.1's.
        vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                               attn_scales=[], temperal_downsample=[False, True, True])
        vae.save_pretrained(path)
        _marker(path, "AutoencoderKLWan")
    return path


def build_siglip(path: Path) -> Path:
    import torch
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    if not _done(path):
        torch.manual_seed(SEED)
        config = SiglipVisionConfig(hidden_size=SIGLIP_DIM, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=2, image_size=112, patch_size=14)
        SiglipVisionModel(config).save_pretrained(path)
        SiglipImageProcessor(size={"height": 112, "width": 112}).save_pretrained(path)
        _marker(path, "SiglipVisionModel")
    return path


SPECIALS = ("<pad>", "</s>", "<unk>")
SCORE_DECIMALS = 4  # trained log-probabilities kept to this precision (see _canonical_unigram)


def _canonical_unigram(trained):
    """The trained Unigram model rebuilt in a canonical order, so its bytes (and every piece's id)
    are the same in every process and on every machine.

    The trainer (tokenizers 0.23) sums its EM statistics over Rust hash maps, whose iteration order
    is seeded per process, and over threads: scores come out different in the last bits (~1e-15)
    and pieces of equal score in a different order, so 57 of 171 ids moved between two builds.
    Scores rounded to ``SCORE_DECIMALS`` (far coarser than that noise), then the specials in their
    fixed order followed by the pieces sorted by (score descending, piece), fix both."""
    from tokenizers import models

    vocab = json.loads(trained.to_str())["model"]["vocab"]
    scores = {piece: round(score, SCORE_DECIMALS) for piece, score in vocab}
    rest = sorted((p for p in scores if p not in SPECIALS), key=lambda p: (-scores[p], p))
    ordered = [(p, scores[p]) for p in SPECIALS] + [(p, scores[p]) for p in rest]
    return models.Unigram(ordered, unk_id=SPECIALS.index("<unk>"), byte_fallback=False)


def build_tokenizer():
    """A T5TokenizerFast (pad 0, eos 1, unk 2) over a Unigram model trained on ``_CORPUS``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=256, special_tokens=list(SPECIALS),
                                      unk_token="<unk>", show_progress=False)
    # One thread: the EM sums then do not depend on the machine's core count (read per call).
    parallel = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        tok.train_from_iterator(list(_CORPUS) * 8, trainer=trainer)
    finally:
        if parallel is None:
            os.environ.pop("TOKENIZERS_PARALLELISM")
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = parallel
    tok.model = _canonical_unigram(tok)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", eos)])
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0, model_max_length=512)


def build_umt5(path: Path) -> Path:
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    if not _done(path):
        tokenizer = build_tokenizer()
        torch.manual_seed(SEED)
        config = UMT5Config(vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2,
                            num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=32,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                            decoder_start_token_id=tokenizer.pad_token_id)
        UMT5EncoderModel(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        _marker(path, "UMT5EncoderModel")
    return path


def build_tiny_encoders(out_dir: str | Path) -> dict[str, Path]:
    """Build (once) the three tiny checkpoints under ``out_dir``; returns the ``encode.*_path``
    config values: vae_path, siglip_path, text_encoder_path, tokenizer_path."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(out_dir)
    umt5 = build_umt5(out / "umt5")
    return {"vae_path": build_vae(out / "vae"), "siglip_path": build_siglip(out / "siglip"),
            "text_encoder_path": umt5, "tokenizer_path": umt5}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pipeline.curate.demo.tiny_encoders OUT_DIR")
    for name, p in build_tiny_encoders(sys.argv[1]).items():
        print(f"encode.{name}: {p}")
