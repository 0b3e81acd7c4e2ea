"""The ``hf`` judge backend's translation layer: an OpenAI chat-completions body read back into
model inputs (images, frame stacks, a text prompt), and generated tokens turned into OpenAI's
``logprobs.content``, the way vLLM lays them out."""
from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from stages.judge.reply import LOGPROB_FLOOR


class RequestError(ValueError):
    """The body cannot be turned into model inputs (a server's HTTP 400)."""


# ------------------------------------------------------------------ the body's media
def _data_uri(url: Any) -> tuple[str, str]:
    """(mime type, base64 payload) of a ``data:<mime>;base64,<payload>`` URI."""
    if not isinstance(url, str) or not url.startswith("data:"):
        shown = url[:60] if isinstance(url, str) else type(url).__name__
        raise RequestError(f"the hf backend reads media from data: URIs only, not {shown!r}")
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise RequestError("a data URI must be base64: data:<type>;base64,<payload>")
    return header[len("data:"):-len(";base64")].lower(), payload


def _b64(payload: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"bad base64 in a data URI: {e}") from None


def _rgb(data: bytes):
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except Exception as e:
        raise RequestError(f"cannot decode an image: {type(e).__name__}: {e}") from None


def decode_image_uri(url: Any):
    """A PIL RGB image from ``data:image/<type>;base64,...``."""
    mime, payload = _data_uri(url)
    if not mime.startswith("image/"):
        raise RequestError(f"an image_url must be an image, not {mime}")
    return _rgb(_b64(payload))


def decode_video_uri(url: Any):
    """A (frames, height, width, 3) uint8 array from ``data:video/jpeg;base64,<f1>,<f2>,...``."""
    import numpy as np

    mime, payload = _data_uri(url)
    if mime != "video/jpeg":
        raise RequestError(f"a video must be a frame list (data:video/jpeg;base64,<f1>,<f2>,...), not {mime}")
    frames = [np.asarray(_rgb(_b64(p))) for p in payload.split(",") if p]
    if not frames:
        raise RequestError("a video data URI holds no frames")
    if len({f.shape for f in frames}) != 1:
        raise RequestError(f"the frames of a video differ in size: {sorted({f.shape[:2] for f in frames})}")
    return np.stack(frames)


def _url_of(part: dict, key: str) -> Any:
    value = part.get(key)
    return value.get("url") if isinstance(value, dict) else value


@dataclass
class ChatInputs:
    """The body's messages for the chat template (media as bare placeholders) and the media, in order."""

    messages: list[dict] = field(default_factory=list)
    images: list = field(default_factory=list)
    videos: list = field(default_factory=list)


def read_messages(body: dict) -> ChatInputs:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages: a non-empty list is required")
    out = ChatInputs()
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "user", "assistant"):
            raise RequestError(f"a message must have role system, user or assistant, not {role!r}")
        content = message.get("content")
        if isinstance(content, str):
            out.messages.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise RequestError(f"message content must be text or a list of parts, not {type(content).__name__}")
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                parts.append({"type": "text", "text": str(part.get("text") or "")})
            elif kind == "image_url":
                out.images.append(decode_image_uri(_url_of(part, "image_url")))
                parts.append({"type": "image"})
            elif kind == "video_url":
                out.videos.append(decode_video_uri(_url_of(part, "video_url")))
                parts.append({"type": "video"})
            else:
                raise RequestError(f"content part type {kind!r} is not supported by the hf backend")
        out.messages.append({"role": role, "content": parts})
    return out


# ------------------------------------------------------------------ the answer and its logprobs
def token_pieces(token_ids: Sequence[int], decode: Callable[[list[int]], str], stop_ids: set[int],
                 token_text: Callable[[int], str]) -> tuple[list[str], str]:
    """Each generated token's share of the answer, and the answer (``content``).

    The answer is the tokens decoded with special tokens skipped, a final stop token left out.
    Token i's piece is what decoding i+1 tokens adds to decoding i; a token that ends inside a
    UTF-8 character adds nothing until the character is complete. So the pieces spell the answer
    exactly, which is how parse.py finds the token that wrote each score. A final stop token gets
    its own text (as vLLM lists it). Where decoding is not prefix-stable (a tokenizer that rewrites
    spaces), the pieces are the tokens' own texts and the expected scores will be left empty."""
    ids = list(token_ids)
    stop = ids[-1:] if ids and ids[-1] in stop_ids else []
    body = ids[:len(ids) - len(stop)]
    content = decode(body)
    pieces: list[str] = []
    emitted = ""
    for i in range(len(body)):
        text = decode(body[:i + 1])
        if text.endswith("\ufffd") and i + 1 < len(body):
            pieces.append("")  # a character cut between tokens: it is written with a later one
            continue
        if not text.startswith(emitted):
            return [token_text(t) for t in ids], content
        pieces.append(text[len(emitted):])
        emitted = text
    if emitted != content:
        return [token_text(t) for t in ids], content
    return pieces + [token_text(t) for t in stop], content


def _finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) and logprob > LOGPROB_FLOOR else LOGPROB_FLOOR


def logprob_entries(token_ids: Sequence[int], step_logits, pieces: Sequence[str],
                    token_text: Callable[[int], str], top_n: int) -> list[dict]:
    """OpenAI ``logprobs.content``: per generated token its text, logprob, UTF-8 bytes and the
    ``top_n`` most likely tokens at that position (most likely first).

    ``step_logits``: a (tokens, vocab) tensor of the raw scores each step's token was drawn from
    (softmax = the model's distribution). ``pieces``: the text each generated token is shown as
    (``token_pieces``); an alternative is shown as ``token_text(id)``, except the generated token
    itself, which keeps its piece so that parse.py sees one candidate per token."""
    import torch

    if len(token_ids) == 0:
        return []
    logprobs = torch.log_softmax(step_logits.detach().to(torch.float32), dim=-1)
    ids = torch.as_tensor(list(token_ids), dtype=torch.long, device=logprobs.device)
    chosen = logprobs.gather(1, ids[:, None]).squeeze(1).tolist()
    k = min(int(top_n), logprobs.shape[-1])
    top_values, top_ids = (torch.topk(logprobs, k, dim=-1) if k > 0 else (None, None))
    entries = []
    for i, token_id in enumerate(token_ids):
        piece = pieces[i]
        alternatives = []
        if k > 0:
            for value, alt in zip(top_values[i].tolist(), top_ids[i].tolist()):
                text = piece if alt == token_id else token_text(alt)
                alternatives.append({"token": text, "logprob": _finite(value), "bytes": list(text.encode("utf-8"))})
        entries.append({"token": piece, "logprob": _finite(chosen[i]), "bytes": list(piece.encode("utf-8")),
                        "top_logprobs": alternatives})
    return entries


