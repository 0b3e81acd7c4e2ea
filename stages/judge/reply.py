"""What a transport (HTTP, transformers in process, a vLLM engine) hands back to the Scorer: the
HTTP status and body an OpenAI-compatible server would have sent."""
from __future__ import annotations

import json
from dataclasses import dataclass

# OpenAI and vLLM report an impossible token's logprob as -9999.0 (JSON has no -Infinity).
LOGPROB_FLOOR = -9999.0


@dataclass
class Reply:
    status: int  # HTTP status
    body: bytes
    retry_after: str | None = None


def error_reply(status: int, message: str, kind: str) -> Reply:
    """An error answer shaped like an OpenAI-compatible server's."""
    body = {"error": {"message": message, "type": kind, "code": status}}
    return Reply(status, json.dumps(body).encode("utf-8"))
