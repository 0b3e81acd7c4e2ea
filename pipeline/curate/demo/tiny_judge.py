"""A tiny, randomly initialised Qwen2.5-VL checkpoint, built entirely offline.

No model weights can be downloaded here (tests, CI, `make demo`), yet the judge path has to be proven
against a real server: the request shape, the JSON-schema constraint, logprobs, parsing and storage.
So we build a checkpoint that has every *structural* property of Qwen2.5-VL and none of its
knowledge:

* a byte-level BPE tokenizer trained with `tokenizers` on a small embedded corpus, plus Qwen's special
  tokens (``<|im_start|>`` ... ``<|video_pad|>``) appended after the trained vocabulary;
* a ``Qwen2_5_VLConfig`` whose token ids (image/video pads, vision start/end, bos/eos/pad) and
  ``vocab_size`` are read back from that tokenizer, so they cannot disagree;
* a text model whose ``head_dim`` is 64 (vLLM's CPU attention backend refuses smaller heads), and a
  two-block vision tower;
* random weights (seeded) saved with ``save_pretrained`` (safetensors);
* a ``Qwen2_5_VLProcessor`` with image and video processors sized for small inputs, and a chat
  template that renders messages the way Qwen2.5-VL's does (``<|vision_start|><|video_pad|>
  <|vision_end|>`` per video, ``<|im_start|>role ... <|im_end|>`` turns).

The same directory loads in the judge environment (vLLM 0.32 CPU, transformers < 5.20) and in the
main environment (transformers 5.23, the ``hf`` backend). Building takes a few seconds.

    python -m pipeline.curate.demo.tiny_judge OUT_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# Qwen2.5-VL's special tokens, in Qwen's id order. Only the first block matters to the judge path;
# the rest exist so that templates or processors that mention them find them.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Trained (non-special) vocabulary size (256 bytes + merges): small, but enough merges that JSON keys of the judge's
# schema become a handful of tokens rather than one token per byte.
TRAINED_VOCAB_SIZE = 512

# Pixel bounds for the processors. Qwen2.5-VL works on 28x28 pixel cells (14 px patches merged 2x2);
# these keep every image/frame between 4 and 64 cells, i.e. at most 64 tokens per image or per pair
# of frames, so requests stay far below the server's small max-model-len.
CELL = 28
MIN_PIXELS = 4 * CELL * CELL
MAX_PIXELS = 64 * CELL * CELL

# Qwen2.5-VL's chat-template format, written for this module: a default system turn, one
# `<|im_start|>role\n...<|im_end|>\n` block per message, every image / video part replaced by its
# vision placeholder, and `<|im_start|>assistant\n` when a generation prompt is asked for. Content
# parts may use the plain (`image`, `video`) or the OpenAI (`image_url`, `video_url`) type names.
CHAT_TEMPLATE = (
    # Whitespace-trimming tags ({%- -%}) keep the template readable; every newline that belongs to
    # the prompt is therefore emitted as a string expression (a quoted backslash-n), which trimming
    # never eats.
    "{%- set image_count = namespace(value=0) -%}"
    "{%- set video_count = namespace(value=0) -%}"
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system' + '\\n' + 'You are a helpful assistant.' + '<|im_end|>' + '\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] in ('image', 'image_url') or 'image' in part or 'image_url' in part -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{ 'Picture ' + image_count.value|string + ': ' }}{%- endif -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] in ('video', 'video_url') or 'video' in part or 'video_url' in part -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{ 'Video ' + video_count.value|string + ': ' }}{%- endif -%}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part -%}"
    "{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>' + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant' + '\\n' }}{%- endif -%}"
)

# What the tokenizer is trained on: judge-like prose, the JSON the judge must emit, and digits.
_CORPUS_LINES = (
    "You are a strict judge of instruction-guided video editing. Compare the source video and the "
    "edited video, read the instruction, and score each metric from 1 to 10.",
    "Instruction Following: does the edited video do what the instruction asks?",
    "Visual Quality: is the edited video sharp, free of artifacts, flicker and distortions?",
    "Content Preservation: is everything the instruction does not mention kept unchanged?",
    "Motion Consistency: does the motion of the edited video follow the source video?",
    "Caption Alignment: does the caption describe the clip?",
    '{"instruction_following": 8, "visual_quality": 9, "content_preservation": 7, '
    '"motion_consistency": 10, "reason": "the sky is replaced but the car flickers"}',
    "Change the style to watercolor. Replace the background with a beach at sunset. Remove the "
    "person on the left. Add subtitles that say hello. Make the dog wear a red hat.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 0.5 3.14 -1 true false null [] {} : , \" '",
    "The quick brown fox jumps over the lazy dog while the camera pans slowly to the right.",
)


def _train_tokenizer(special_tokens: tuple[str, ...] = SPECIAL_TOKENS):
    """A byte-level BPE `tokenizers.Tokenizer`: digits split one by one (as Qwen's pre-tokenizer
    does, so "10" is two tokens and every score 1..9 is exactly one), special tokens appended last."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TRAINED_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        # Every byte gets a token, so any text (and any JSON the grammar allows) is encodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    # Repeat the corpus so that merge frequencies are well above ties; training stays < 1 s.
    tok.train_from_iterator(list(_CORPUS_LINES) * 20, trainer=trainer)
    tok.add_special_tokens(list(special_tokens))
    return tok


def _wrap_tokenizer(tok):
    """The transformers tokenizer around `tok`, with Qwen's role tokens and the chat template."""
    from transformers import PreTrainedTokenizerFast

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def _config(hf_tok, *, text_layers: int = 2, vision_depth: int = 2):
    """A Qwen2_5_VLConfig whose ids come from the tokenizer (never hard-coded Qwen ids)."""
    from transformers import Qwen2_5_VLConfig

    ids = {t: hf_tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text_hidden, text_heads = 128, 2  # head_dim = 64, the smallest vLLM's CPU attention takes
    head_dim = text_hidden // text_heads
    # M-RoPE splits the rotary half-dimension into (temporal, height, width) sections; they must sum
    # to head_dim / 2. Same 1:1.5:1.5 proportions as the real model's (16, 24, 24) for head_dim 128.
    mrope_section = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]
    text_config = dict(
        vocab_size=len(hf_tok),
        hidden_size=text_hidden,
        intermediate_size=256,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads,
        num_key_value_heads=1,
        max_position_embeddings=8192,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                         "mrope_section": mrope_section},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )
    vision_config = dict(
        depth=vision_depth,
        hidden_size=64,
        intermediate_size=128,
        num_heads=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        # The last block attends globally, the others within windows, as in the real tower.
        fullatt_block_indexes=[vision_depth - 1],
        out_hidden_size=text_hidden,
        tokens_per_second=2,
    )
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    # Written at the top level too: older loaders (and vLLM) read these from the root config.
    config.bos_token_id = ids["<|endoftext|>"]
    config.eos_token_id = ids["<|im_end|>"]
    config.pad_token_id = ids["<|endoftext|>"]
    return config


def _processor(hf_tok):
    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    image_processor = Qwen2VLImageProcessor(
        size=size, patch_size=14, temporal_patch_size=2, merge_size=2
    )
    video_processor = Qwen2VLVideoProcessor(
        size=size, patch_size=14, temporal_patch_size=2, merge_size=2,
        # Frames are sampled by the caller (qwen-vl-utils' rules); the processor keeps them all.
        do_sample_frames=False,
        # Bound a video's total pixels the way qwen-vl-utils does (and silence transformers'
        # warning that this will become the default).
        cap_pixels_per_frame=True,
    )
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=hf_tok,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_qwen25vl(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny random Qwen2.5-VL checkpoint (weights, config, tokenizer, processor) to
    ``out_dir`` and return it. Deterministic for a given ``seed`` and library versions."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    hf_tok = _wrap_tokenizer(_train_tokenizer())
    config = _config(hf_tok)

    # Seed a private generator state: building must not disturb the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[hf_tok.convert_tokens_to_ids("<|im_end|>"),
                      hf_tok.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out)
    _processor(hf_tok).save_pretrained(out)
    hf_tok.save_pretrained(out)
    # A marker for humans and tests: what this directory is and how it was made.
    (out / "TINY_MODEL.json").write_text(
        json.dumps({"builder": "pipeline.curate.demo.tiny_judge.build_tiny_qwen25vl", "seed": seed,
                    "random_weights": True}, indent=2) + "\n"
    )
    return out


if __name__ == "__main__":  # pragma: no cover - manual use
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pipeline.curate.demo.tiny_judge OUT_DIR")
    print(build_tiny_qwen25vl(sys.argv[1]))
