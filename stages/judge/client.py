"""The judge stage core: score a table of samples against OpenAI-compatible servers.

``score_table(samples, cfg)`` returns one `scores` row per input sample (the first occurrence of
a repeated ``sample_id``), in input order, whatever happens: a sample whose media cannot be read is
``input_error``; one the servers never answered usably ends ``engine_error``, ``timeout`` or
``malformed`` after ``max_attempts``. It is a plain blocking function (it runs its own event loop,
on a helper thread when the caller already has one), so a Ray Data actor can call it per batch.

Sending: ``concurrency`` requests in flight at most, over all ``urls`` round robin (a retry goes
to the next replica). Each attempt has ``request_timeout_s``; the whole call has ``deadline_s``.
Retried: 429 (after ``Retry-After`` when the server sends one), 408, 5xx, connection errors,
timeouts, unusable bodies (not JSON, empty choices) and, with ``retry_malformed``, answers the
parser could not read. Back-off is exponential with full jitter: uniform(0, min(backoff_max_s,
backoff_base_s * 2**(attempt-1))). A 429/503's ``Retry-After`` replaces it when it is at most
``retry_after_max_s``; a longer one is not waited (the ordinary back-off is), so no row ever
sleeps longer than the larger of the two caps. Other 4xx (a request the server refuses, e.g. too long) are not
retried. Frames are decoded and JPEG-encoded on ``build_workers`` threads while other requests are
in flight.

The transport is an object with ``async post(url, body, timeout_s) -> Reply`` so in-process engines (the
``vllm`` and ``hf`` backends) can reuse the retry, parsing and storage path. A transport may also say
``endpoints`` (what the ``endpoint`` column records instead of judge.urls), ``max_concurrency`` (senders
beyond it would only queue) and ``deterministic_when_greedy`` (at temperature 0 a malformed answer
would come back the same, so it is not retried). judge.backend=hf builds its own (stages.judge.hf_backend).
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from stages.judge.hf_backend import HFTransport
from stages.judge.parse import EngineError, parse_completion, read_completion
from stages.judge.prompts import Prompt, load_prompts
from stages.judge.request_build import InputError, build_request, qwen_vision_process, row_kind
from stages.judge.reply import Reply
from stages.judge.retry import retry_after_seconds, retry_delay
from stages.judge.schema import ALL_METRICS, SCORED_STATUSES, empty_score_row, expected_column, scores_schema

SAMPLE_COLUMNS = ("sample_id", "dataset", "modality", "task", "source_uri", "target_uri", "instruction",
                  "caption", "clip_start_s", "clip_end_s", "skip_frames", "error")
RETRY_HTTP = {408, 429}  # and every 5xx
MAX_TEXT = 4000  # raw_text / error kept per row (an answer is ~100 chars; a runaway one is cut)


class HttpTransport:
    """aiohttp client: one pooled session, at most ``concurrency`` connections."""

    def __init__(self, concurrency: int, api_key: str | None = None):
        import aiohttp

        self._aiohttp = aiohttp
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {api_key}"} if api_key else {})},
        )
        # Errors that mean "try again": refused, reset or dropped connections, cut bodies.
        self.retryable_errors = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)

    async def post(self, url: str, body: bytes, timeout_s: float) -> Reply:
        timeout = self._aiohttp.ClientTimeout(total=timeout_s)
        async with self.session.post(url, data=body, timeout=timeout) as resp:
            data = await resp.read()
            return Reply(resp.status, data, resp.headers.get("Retry-After"))

    async def close(self) -> None:
        await self.session.close()


def completions_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:MAX_TEXT]


def schema_for(cfg, prompts: dict[str, Prompt]) -> pa.Schema:
    """The scores schema: ALL_METRICS plus any custom metric the judge config asks for."""
    extra = [m for k in prompts for m in cfg.metrics_for(k) if m not in ALL_METRICS]
    return scores_schema([*ALL_METRICS, *dict.fromkeys(extra)])


class _Failure(Exception):
    def __init__(self, status: str, message: str, retry_after: float | None = None, retryable: bool = True,
                 raw_text: str | None = None, completion=None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after
        self.retryable, self.raw_text = retryable, raw_text
        self.completion = completion  # an answer that came back but could not be parsed


class Scorer:
    """Scores rows with one transport; holds the round-robin position and the deadline."""

    def __init__(self, cfg, prompts: dict[str, Prompt], transport, *, roots: dict[str, list[str]] | None = None,
                 seed: int | None = None):
        self.cfg, self.prompts, self.transport, self.roots = cfg, prompts, transport, roots
        self.urls = list(getattr(transport, "endpoints", None) or [completions_url(u) for u in cfg.urls])
        self._next_url = 0
        self.rng = random.Random(seed)  # back-off jitter only: it never changes a score
        self.schema = schema_for(cfg, prompts)
        self.deadline: float | None = None
        qwen_vision_process()  # import qwen-vl-utils (torch: seconds) now, not inside the deadline

    # -- one row
    def _build(self, row: dict) -> tuple[str, bytes]:
        kind = row_kind(row)
        if kind not in self.prompts:
            raise InputError(f"no judge prompt for kind {kind!r} (judge.prompts)")
        roots = None if self.roots is None else self.roots.get(row.get("dataset"), [])
        body = build_request(row, self.prompts[kind], self.cfg, roots)
        return kind, json.dumps(body, separators=(",", ":")).encode("utf-8")

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _pick_url(self, previous: int | None) -> int:
        """Round robin over the replicas; a retry goes to the replica after the one that failed."""
        if previous is not None:
            return (previous + 1) % len(self.urls)
        self._next_url += 1
        return (self._next_url - 1) % len(self.urls)

    async def _attempt(self, url: str, body: bytes, metrics: list[str], timeout_s: float):
        cfg = self.cfg
        try:
            reply = await self.transport.post(url, body, timeout_s)
        except asyncio.TimeoutError:
            raise _Failure("timeout", f"no answer within {timeout_s:.1f}s") from None
        except getattr(self.transport, "retryable_errors", ()) as e:
            raise _Failure("engine_error", f"connection: {type(e).__name__}: {e}") from None
        except Exception as e:  # e.g. an invalid URL: not something a retry fixes
            raise _Failure("engine_error", f"{type(e).__name__}: {e}", retryable=False) from None
        if reply.status != 200:
            text = reply.body[:500].decode("utf-8", "replace")
            retryable = reply.status in RETRY_HTTP or reply.status >= 500
            raise _Failure("engine_error", f"HTTP {reply.status}: {text}",
                           retry_after_seconds(reply.retry_after) if reply.status in (429, 503) else None,
                           retryable)
        try:
            completion = read_completion(json.loads(reply.body))
        except (ValueError, EngineError) as e:
            raise _Failure("engine_error", f"unusable response: {e}",
                           raw_text=reply.body[:500].decode("utf-8", "replace")) from None
        parsed = parse_completion(completion, metrics, cfg.score_min, cfg.score_max, cfg.out_of_range)
        if parsed.status == "malformed":
            same_again = cfg.temperature == 0 and getattr(self.transport, "deterministic_when_greedy", False)
            raise _Failure("malformed", parsed.error or "unparseable answer",
                           retryable=cfg.retry_malformed and not same_again, raw_text=completion.content,
                           completion=completion)
        return completion, parsed

    def build_safe(self, row: dict) -> tuple[str, bytes] | InputError:
        """The request body, or the InputError saying why there is none (runs on a build thread)."""
        try:
            return self._build(row)
        except InputError as e:
            return e
        except Exception as e:  # a decoder bug must not stop the batch
            return InputError(f"{type(e).__name__}: {e}")

    async def score_row(self, row: dict, built: tuple[str, bytes] | InputError | None, t_start: float) -> dict[str, Any]:
        """Send one built request with retries; ``built`` None: the deadline passed before building."""
        cfg = self.cfg
        kind = row_kind(row)
        base = dict(backend=cfg.backend)
        prompt = self.prompts.get(kind)
        if prompt is not None:
            base.update(prompt_file=prompt.file, prompt_hash=prompt.hash)
        out = empty_score_row(row["sample_id"], row.get("dataset"), kind, self.schema, **base)
        if isinstance(built, InputError):
            out.update(status="input_error", error=_cut(str(built)), attempts=0, elapsed_s=time.monotonic() - t_start)
            return out
        kind, body = built if built is not None else (kind, b"")
        metrics = cfg.metrics_for(kind)
        attempts, failure, replica = 0, None, None
        while built is not None and attempts < cfg.max_attempts:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                break
            attempts += 1
            replica = self._pick_url(replica)
            url = self.urls[replica]
            timeout_s = cfg.request_timeout_s if remaining is None else min(cfg.request_timeout_s, remaining)
            t0 = time.monotonic()
            try:
                completion, parsed = await self._attempt(url, body, metrics, timeout_s)
            except _Failure as f:
                failure = f
                out.update(latency_s=time.monotonic() - t0, endpoint=url)
                if not f.retryable or attempts >= cfg.max_attempts:
                    break
                delay = retry_delay(f.retry_after, attempts, cfg, self.rng)
                remaining = self._remaining()
                if remaining is not None and delay >= remaining:
                    break
                await asyncio.sleep(delay)
                continue
            out.update(
                status=parsed.status, reason=_cut(parsed.reason), raw_text=_cut(completion.content),
                attempts=attempts, latency_s=time.monotonic() - t0, elapsed_s=time.monotonic() - t_start,
                prompt_tokens=completion.prompt_tokens, output_tokens=completion.output_tokens,
                finish_reason=completion.finish_reason, model=completion.model or cfg.model, endpoint=url,
                error=parsed.error if parsed.status != "ok" else None,
            )
            for m in metrics:
                out[m] = parsed.scores.get(m)
                out[expected_column(m)] = parsed.expected.get(m)
            return out
        # No usable answer.
        if failure is None:
            out.update(status="timeout", error="the overall deadline (judge.deadline_s) passed before a request was sent")
        else:
            note = ""
            remaining = self._remaining()
            if remaining is not None and remaining <= 0 or (failure.retryable and attempts < cfg.max_attempts):
                note = " (stopped: judge.deadline_s reached)"
            out.update(status=failure.status, error=_cut(failure.message + note), raw_text=_cut(failure.raw_text))
        answered = failure.completion if failure is not None else None
        if answered is not None:  # a malformed answer still cost its tokens
            out.update(prompt_tokens=answered.prompt_tokens, output_tokens=answered.output_tokens,
                       finish_reason=answered.finish_reason)
        out.update(attempts=attempts, elapsed_s=time.monotonic() - t_start,
                   model=answered.model if answered is not None and answered.model else cfg.model)
        return out

    # -- many rows
    async def score_rows(self, rows: list[dict]) -> list[dict]:
        cfg = self.cfg
        if cfg.deadline_s is not None:
            self.deadline = time.monotonic() + cfg.deadline_s
        loop = asyncio.get_running_loop()
        results: list[dict | None] = [None] * len(rows)
        if not rows:
            return []
        cap = getattr(self.transport, "max_concurrency", None) or cfg.concurrency  # hf: 1 per model
        n_senders = min(cfg.concurrency, cap, len(rows))
        # Requests are built ahead of the senders, so a sender never waits for a decode; at most
        # this many are building or built-but-unsent (a video pair request is megabytes).
        ahead = asyncio.Semaphore(n_senders + 2 * cfg.build_workers)
        ready: asyncio.Queue = asyncio.Queue()

        async def build(i: int) -> None:
            t0 = time.monotonic()
            remaining = self._remaining()
            built = None if remaining is not None and remaining <= 0 else \
                await loop.run_in_executor(executor, self.build_safe, rows[i])
            ready.put_nowait((i, t0, built))

        async def feed() -> None:
            building: set[asyncio.Task] = set()
            for i in range(len(rows)):
                await ahead.acquire()
                task = asyncio.create_task(build(i))
                building.add(task)
                task.add_done_callback(building.discard)
            await asyncio.gather(*building)
            for _ in range(n_senders):
                ready.put_nowait(None)

        async def send() -> None:
            while (item := await ready.get()) is not None:
                i, t0, built = item
                try:
                    results[i] = await self.score_row(rows[i], built, t0)
                finally:
                    ahead.release()

        with ThreadPoolExecutor(cfg.build_workers, thread_name_prefix="judge-build") as executor:
            await asyncio.gather(feed(), *(send() for _ in range(n_senders)))
        return results  # type: ignore[return-value]


def _api_key(cfg) -> str | None:
    return os.environ.get(cfg.api_key_env) if cfg.api_key_env else None


def _unique_rows(samples: pa.Table) -> list[dict]:
    names = [c for c in SAMPLE_COLUMNS if c in samples.column_names]
    seen, rows = set(), []
    for row in samples.select(names).to_pylist():
        if row["sample_id"] not in seen:  # a scores table is keyed by sample_id
            seen.add(row["sample_id"])
            rows.append(row)
    return rows


async def score_rows_async(rows: list[dict], cfg, prompts: dict[str, Prompt], *, transport=None,
                           roots: dict[str, list[str]] | None = None, seed: int | None = None) -> list[dict]:
    own = transport is None
    if own and cfg.backend == "hf":
        transport = HFTransport(cfg)  # loads the model on first use; kept for the process
    elif own:
        transport = HttpTransport(cfg.concurrency, _api_key(cfg))
    try:
        return await Scorer(cfg, prompts, transport, roots=roots, seed=seed).score_rows(rows)
    finally:
        if own:
            await transport.close()


def _run(coro):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside an event loop (an async Ray actor, a notebook): use a thread of our own.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def score_table(samples: pa.Table, cfg, prompts: dict[str, Prompt] | None = None, *,
                allowed_roots: dict[str, list[str]] | None = None, transport=None,
                seed: int | None = None) -> pa.Table:
    """One `scores` row per distinct sample_id of ``samples``, in input order.

    ``cfg``: a JudgeConfig. ``prompts``: from ``load_prompts(cfg)`` (loaded here when None; load
    once on the driver for a big run). ``allowed_roots``: dataset -> directories its media must lie
    in, as for the probe (None: no containment check). Never raises for a bad sample or server
    (judge.backend=hf: a checkpoint that cannot be loaded raises HFModelError before any row)."""
    if cfg.backend not in ("openai", "hf") and transport is None:
        # judge.backend=vllm scores through Ray Data actors that each hold an engine
        # (stages.judge.vllm_backend.score_units_with_vllm; inside one: its VllmTransport).
        raise NotImplementedError(f"judge.backend={cfg.backend!r}: pass an in-process transport (vllm: "
                                  f"stages.judge.vllm_backend.VllmTransport), or run the vlm-filter stage")
    prompts = prompts if prompts is not None else load_prompts(cfg)
    rows = _unique_rows(samples)
    scorer_rows = _run(score_rows_async(rows, cfg, prompts, transport=transport, roots=allowed_roots, seed=seed))
    return pa.Table.from_pylist(scorer_rows, schema=schema_for(cfg, prompts))


# ------------------------------------------------------------------ re-runs
# Judge settings that change what a score means; a run refuses to mix outputs that differ in them.
# (Where the servers are, how many requests fly and how hard to retry do not change a score.)
SCORING_FIELDS = ("model", "score_min", "score_max", "video_metrics", "image_metrics", "clip_metrics",
                  "temperature", "max_tokens", "structured_output", "logprobs", "top_logprobs", "reason",
                  "reason_max_chars", "out_of_range", "extra_body", "fps", "min_frames", "max_frames",
                  "video_min_pixels", "video_max_pixels", "video_total_pixels", "image_min_pixels",
                  "image_max_pixels", "image_patch_size", "jpeg_quality", "backend", "hf_model_path", "hf_dtype",
                  "vllm_model_path", "vllm_dtype")


def scoring_fingerprint(cfg, prompts: dict[str, Prompt]) -> dict[str, Any]:
    """What the scores depend on: the scoring fields and each prompt's file and hash."""
    dumped = cfg.model_dump(mode="json")
    return {"judge": {k: dumped[k] for k in SCORING_FIELDS},
            "prompts": {k: {"file": p.file, "hash": p.hash} for k, p in sorted(prompts.items())}}


def needs_rescore(scores: pa.Table) -> pa.Table:
    """The rows of a scores table that ``judge.rescore: failed`` scores again (not ok/repaired)."""
    import pyarrow.compute as pc

    scored = pc.is_in(scores.column("status"), value_set=pa.array(SCORED_STATUSES))
    return scores.filter(pc.invert(pc.fill_null(scored, False)))


def merge_rescored(old: pa.Table, new: pa.Table) -> pa.Table:
    """``old`` with its rows replaced by ``new``'s of the same sample_id; order and rows kept."""
    new = new.cast(old.schema) if new.schema != old.schema else new
    index = {sid: i for i, sid in enumerate(new.column("sample_id").to_pylist())}
    take_new = [index.get(sid, -1) for sid in old.column("sample_id").to_pylist()]
    combined = pa.concat_tables([old, new])
    picks = [old.num_rows + j if j >= 0 else i for i, j in enumerate(take_new)]
    return combined.take(pa.array(picks, pa.int64())) if picks else old.slice(0, 0)
