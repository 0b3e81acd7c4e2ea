"""Before and after a judge run over HTTP: refuse settings that would fail every sample.

``check_servers(cfg)`` runs on the driver before any frame is decoded. Every ``judge.urls`` entry
must answer the OpenAI routes (``GET <url>/models`` with a model list, and a
``<url>/chat/completions`` route) and list ``judge.model``; otherwise the run stops with one line
naming the field and what the server serves. (Without it, a wrong model name or a URL without
``/v1`` decodes every sample and then stores an HTTP 404 ``engine_error`` row for each.)

``JudgeOutcome`` tallies the rows a run sent; when every one of them ended ``engine_error`` the
run fails with the commonest error instead of exiting 0 (the rows are kept: fix the setting and
re-run with ``judge.rescore: failed``).
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request


from pipeline.config_base import ConfigError

CHAT_SUFFIX = "/chat/completions"


def base_url(url: str) -> str:
    """``http://host:8000/v1`` for either that or ``.../v1/chat/completions``."""
    url = url.rstrip("/")
    return url[: -len(CHAT_SUFFIX)] if url.endswith(CHAT_SUFFIX) else url


def _get(url: str, headers: dict[str, str], timeout_s: float) -> tuple[int | None, bytes, str | None]:
    """(HTTP status, body, connection error): status None when nothing answered."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s) as resp:
            return resp.status, resp.read(), None
    except urllib.error.HTTPError as e:
        return e.code, e.read(), None
    except (urllib.error.URLError, OSError, ValueError) as e:  # ValueError: not a URL at all
        return None, b"", str(getattr(e, "reason", e))


def served_models(body: bytes) -> list[str] | None:
    """The model ids of an OpenAI ``/models`` answer, or None when it is not one."""
    try:
        data = json.loads(body)["data"]
        return [str(m["id"]) for m in data]
    except (ValueError, KeyError, TypeError):
        return None


def _problem(cfg, url: str, headers: dict[str, str], timeout_s: float) -> str | None:
    base = base_url(url)
    status, body, error = _get(base + "/models", headers, timeout_s)
    if status is None:
        return (f"judge.urls: nothing answers at {url} ({error}); start a server (README: `vllm serve "
                f"Qwen/Qwen2.5-VL-72B-Instruct ...`) or choose judge.backend: hf")
    if status in (401, 403):
        return (f"judge.api_key_env: {url} refuses the request (HTTP {status}); put the key in the "
                f"environment variable {cfg.api_key_env!r}" if cfg.api_key_env else
                f"judge.api_key_env: {url} wants a key (HTTP {status}); name the variable that holds it")
    models = served_models(body) if status == 200 else None
    if models is None:
        hint = "set judge.urls to OpenAI-compatible base URLs, e.g. http://host:8000/v1"
        if not base.endswith("/v1") and served_models(_get(base + "/v1/models", headers, timeout_s)[1]) is not None:
            hint = f"it does at {base}/v1: use that"
        what = f"HTTP {status}" if status != 200 else "an answer that is not a model list"
        return f"judge.urls: {url} does not answer the OpenAI routes (GET {base}/models: {what}); {hint}"
    if cfg.model not in models:
        return f"judge.model: {cfg.model!r} is not served by {url}; it serves {models}"
    # A POST-only route answers GET with 405; a route that is not there with 404.
    status, _, error = _get(base + CHAT_SUFFIX, headers, timeout_s)
    if status is None or status == 404:
        return (f"judge.urls: {url} lists models but does not answer {base}{CHAT_SUFFIX} "
                f"({error or 'HTTP 404'}); the judge needs the chat completions route")
    return None


def check_servers(cfg, timeout_s: float = 5.0) -> None:
    """Raise ConfigError (one line, every failing URL) unless each of ``cfg.urls`` serves ``cfg.model``."""
    key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    problems = [p for url in cfg.urls if (p := _problem(cfg, url, headers, timeout_s))]
    if problems:
        raise ConfigError(" | ".join(problems))  # one line; each part names its field


