"""Versioned judge prompt files (configs/judge_prompts/): loading, hashing, rendering.

A prompt file is comment lines (``#``), then a ``[system]`` and a ``[user]`` section. In the user
section ``<<name>>`` marks where a medium goes (``source_video``, ``edited_video``,
``source_image``, ``edited_image``, ``video``) and ``{instruction}`` / ``{caption}`` are replaced
by the sample's text. The hash is the sha256 of the file's bytes, comments included, so any
change to a prompt shows up beside the scores it produced.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The media each kind of sample needs, in the order they are sent.
MEDIA_SLOTS = {
    "video_edit": ("source_video", "edited_video"),
    "image_edit": ("source_image", "edited_image"),
    "clip": ("video",),
}
TEXT_FIELDS = ("instruction", "caption")
_MEDIA_MARK = re.compile(r"<<([a-z_]+)>>")


class PromptError(ValueError):
    pass


@dataclass(frozen=True)
class Prompt:
    kind: str
    file: str  # the file name, e.g. video_edit_v1.txt (its version)
    hash: str  # sha256 of the file's bytes, first 16 hex digits
    system: str
    user: str

    def render(self, texts: dict[str, str | None]) -> list[tuple[str, str]]:
        """The user turn as ("text", str) and ("media", slot) pieces, in order."""
        pieces: list[tuple[str, str]] = []
        pos = 0
        for m in _MEDIA_MARK.finditer(self.user):
            pieces.append(("text", self.user[pos:m.start()]))
            pieces.append(("media", m.group(1)))
            pos = m.end()
        pieces.append(("text", self.user[pos:]))
        out = []
        for kind, value in pieces:
            if kind == "text":
                for name in TEXT_FIELDS:
                    value = value.replace("{" + name + "}", _one_line(texts.get(name)))
                value = value.strip("\n")
                if not value.strip():
                    continue
            out.append((kind, value))
        return out


def _one_line(text: str | None) -> str:
    # An instruction is quoted in the prompt: keep it on one line and its quotes from closing ours.
    return " ".join((text or "").split()).replace('"', "'")


def prompt_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def resolve_prompt_path(path: str | Path) -> Path:
    """Relative paths: the working directory first (as for every config path), then the project
    root, so a Ray worker started elsewhere still finds the bundled prompts."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p


def parse_prompt(kind: str, name: str, data: bytes, metrics: list[str]) -> Prompt:
    text = data.decode("utf-8")
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        header = re.fullmatch(r"\[(system|user)\]\s*", line)
        if header:
            current = header.group(1)
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        elif line.strip() and not line.startswith("#"):
            raise PromptError(f"{name}: text before the [system] section: {line[:60]!r}")
    if "user" not in sections:
        raise PromptError(f"{name}: no [user] section")
    user = "\n".join(sections["user"]).strip("\n")
    slots = _MEDIA_MARK.findall(user)
    if sorted(slots) != sorted(MEDIA_SLOTS[kind]):
        raise PromptError(f"{name}: a {kind} prompt needs the media marks "
                          f"{['<<%s>>' % s for s in MEDIA_SLOTS[kind]]} once each, found {slots}")
    missing = [m for m in metrics if m not in user]
    if missing:
        raise PromptError(f"{name}: the prompt never names the metrics {missing} the judge config "
                          f"asks for; the model could not know what to answer")
    return Prompt(kind, name, prompt_hash(data), "\n".join(sections.get("system", [])).strip(), user)


def load_prompt(kind: str, path: str | Path, metrics: list[str]) -> Prompt:
    p = resolve_prompt_path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise PromptError(f"judge.prompts.{kind}: cannot read {path}: {e.strerror or e}") from None
    return parse_prompt(kind, p.name, data, metrics)


def load_prompts(judge_cfg) -> dict[str, Prompt]:
    """Every kind's prompt from a JudgeConfig (load once on the driver and pass to workers)."""
    return {kind: load_prompt(kind, path, judge_cfg.metrics_for(kind))
            for kind, path in judge_cfg.prompts.items()}
