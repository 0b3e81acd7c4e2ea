"""What the two in-process judge backends (judge.backend=hf and =vllm) share about the model they
load: where its weights come from, and the text of one token of its answer."""
from __future__ import annotations

from pathlib import Path

from pipeline.config_base import ConfigError


def model_source(model: str, model_path: str | None, field: str) -> str:
    """``model_path`` (judge.hf_model_path / judge.vllm_model_path, a directory) if set, else
    ``model`` (judge.model, a name the backend resolves). A path that is not a directory fails here,
    naming ``field``, instead of inside the backend's loader as a download attempt of that name."""
    if model_path is None:
        return model
    path = Path(model_path).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"{field}={str(model_path)!r} is not a directory")
    return str(path)


class TokenTexts:
    """token id -> its text (special tokens kept), decoded once: the logprobs of every answer name
    the same few ids, and a tokenizer call per id per answer costs more than the answer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._texts: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return text
