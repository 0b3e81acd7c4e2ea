"""The vLLM engine of the ``vllm`` judge backend: one ``vllm.LLM`` per Ray Data actor.

This module runs in the judge interpreter (see ``stages.judge.vllm_backend``), so it imports only
what that environment has: vLLM, pyarrow, pydantic and the judge client.

A body becomes an engine request the way ``vllm serve`` makes it: vLLM's own
``ChatCompletionRequest`` turns it into ``SamplingParams``, and the LLM's chat entry
(``enqueue_chat``) renders the messages and their ``data:`` media through the same chat path as the
server. The output is turned back into an OpenAI chat completion with logprobs laid out as the
server lays them out, so parse.py reads it unchanged.
"""
from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from typing import Any

import pyarrow as pa

from stages.judge import local_model
from stages.judge.client import Scorer, _run
from stages.judge.reply import LOGPROB_FLOOR, Reply
from stages.judge.reply import error_reply as _error_reply
from stages.judge.config import JudgeConfig
from stages.judge.request_build import InputError
from stages.judge.server import STRUCTURED_OUTPUTS_CONFIG

# max_tokens when a body names none (the client always does).
DEFAULT_MAX_TOKENS = 256
# After the first request of a batch arrives, how long the engine waits for the rest: the Scorer
# posts a whole actor batch within microseconds, so this only bounds an idle engine's wait.
GATHER_S = 0.02
# Media one prompt may hold: a video edit pair is 2 videos, an image edit pair 2 images.
LIMIT_MM_PER_PROMPT = {"image": 2, "video": 2}




def model_source(cfg) -> str:
    """What vLLM loads: judge.vllm_model_path (a directory), else judge.model (vLLM resolves it)."""
    return local_model.model_source(cfg.model, cfg.vllm_model_path, "judge.vllm_model_path")


def engine_kwargs(cfg) -> dict[str, Any]:
    """The ``vllm.LLM(...)`` arguments for a JudgeConfig (vllm_engine_kwargs last: it overrides)."""
    kwargs: dict[str, Any] = dict(
        model=model_source(cfg), tensor_parallel_size=cfg.tensor_parallel_size, dtype=cfg.vllm_dtype,
        max_num_seqs=cfg.vllm_max_num_seqs, gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        limit_mm_per_prompt=dict(LIMIT_MM_PER_PROMPT),
        # Like the served judge: xgrammar enforces the JSON schema, and no whitespace between tokens
        # (a weak model otherwise spends its budget on it).
        structured_outputs_config=dict(STRUCTURED_OUTPUTS_CONFIG),
        seed=0,
    )
    if cfg.vllm_max_model_len is not None:
        kwargs["max_model_len"] = cfg.vllm_max_model_len
    kwargs.update(cfg.vllm_engine_kwargs)
    return kwargs



# ------------------------------------------------------------------ rows between the phases
# The first four are pipeline.stage.UNIT_COLUMNS (this module does not import the pipeline: it
# runs in the judge interpreter), which the regroup phase puts each unit back together by.
REQUEST_ROWS = pa.schema([
    pa.field("unit", pa.string()),  # the unit's key
    pa.field("unit_rows", pa.int64()),  # samples the unit scores (0: this is its marker row)
    pa.field("pos", pa.int64()),  # the sample's place in the unit's part (-1: the marker row)
    pa.field("unit_item", pa.string()),  # the unit's item as JSON (what the write phase needs)
    pa.field("sample", pa.string()),  # the samples row as JSON (what the Scorer reads)
    pa.field("kind", pa.string()),
    pa.field("body", pa.binary()),  # the chat-completions body; null when it could not be built
    pa.field("input_error", pa.string()),
])
SCORED_ROWS = pa.schema([
    *list(REQUEST_ROWS)[:4],
    pa.field("score", pa.string()),  # the scores row as JSON; null for a marker row
])



# ------------------------------------------------------------------ the engine (judge interpreter)
class _Pending:
    """One request waiting for the engine, and where its answer goes."""

    __slots__ = ("body", "loop", "future")

    def __init__(self, body: bytes, loop: asyncio.AbstractEventLoop, future: asyncio.Future):
        self.body, self.loop, self.future = body, loop, future

    def abandoned(self) -> bool:
        return self.future.done()  # cancelled: the caller timed out and left

    def resolve(self, reply: Reply) -> None:
        def _set(fut=self.future):
            if not fut.done():
                fut.set_result(reply)

        try:
            self.loop.call_soon_threadsafe(_set)
        except RuntimeError:  # the caller's loop is closed: nobody waits any more
            pass


class VllmEngine:
    """A ``vllm.LLM`` and the one thread that feeds it: requests queued while it was busy form its
    next batch (vLLM schedules them together on the device; one batch at a time per engine)."""

    def __init__(self, cfg):
        from vllm import LLM

        self.source = model_source(cfg)
        t0 = time.monotonic()
        self.llm = LLM(**engine_kwargs(cfg))
        self.startup_s = time.monotonic() - t0
        self.defaults = self.llm.model_config.get_diff_sampling_param()
        self.tokenizer = self.llm.get_tokenizer()
        self._texts = local_model.TokenTexts(self.tokenizer)
        self.batches: list[int] = []  # requests in every engine batch (benchmarks)
        self.queue: queue.Queue[_Pending | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="vllm-judge", daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        """What the scores table's ``endpoint`` column records for this backend."""
        return f"vllm:{self.source}"

    def submit(self, pending: _Pending) -> None:
        self.queue.put(pending)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    # -- the engine thread
    def _loop(self) -> None:
        while (first := self.queue.get()) is not None:
            batch, stop = [first], False
            deadline = time.monotonic() + GATHER_S
            while True:
                try:
                    item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            live = [p for p in batch if not p.abandoned()]
            if live:
                try:
                    replies = self.complete_many([p.body for p in live])
                except Exception as e:  # a bug of ours must not leave callers waiting for their timeout
                    replies = [_error_reply(500, f"{type(e).__name__}: {str(e)[:500]}", "internal_error")] * len(live)
                for p, reply in zip(live, replies):
                    p.resolve(reply)
            if stop:
                return

    def complete_many(self, bodies: list[bytes]) -> list[Reply]:
        """One chat completion per body, as ``vllm serve`` would answer it (never raises).

        Each request is rendered and added on its own (``enqueue_chat``: a request vLLM refuses is
        answered alone, and the engine starts on the first while the next is rendered), then the
        engine runs them all as one batch (``wait_for_completion``)."""
        replies: list[Reply | None] = [None] * len(bodies)
        waiting: dict[str, tuple[int, dict]] = {}
        for i, raw in enumerate(bodies):
            try:
                body, params = self._request(raw)
                [request_id] = self.llm.enqueue_chat(
                    body["messages"], params, use_tqdm=False,
                    mm_processor_kwargs=body.get("mm_processor_kwargs"),
                    chat_template_kwargs=body.get("chat_template_kwargs"))
            except Exception as e:  # refused (the server's 400) or failed while rendering (500)
                replies[i] = _failure_reply(e)
                continue
            waiting[request_id] = (i, body)
        if waiting:
            self.batches.append(len(waiting))
            try:
                outputs = self.llm.wait_for_completion(use_tqdm=False)
            except Exception as e:  # the engine failed while running: the whole batch did
                outputs = []
                failure = _error_reply(500, f"{type(e).__name__}: {str(e)[:500]}", "internal_error")
            else:
                failure = _error_reply(500, "the engine returned no output for this request", "internal_error")
            by_id = {out.request_id: out for out in outputs}
            for request_id, (i, body) in waiting.items():
                # enqueue_chat returns the engine's id ("7-1a2b3c4d"), outputs carry the caller's ("7")
                out = by_id.get(request_id) or by_id.get(request_id.split("-", 1)[0])
                replies[i] = failure if out is None else self._reply(out, body)
        return replies  # type: ignore[return-value]

    def _reply(self, output, body: dict) -> Reply:
        try:
            return Reply(200, json.dumps(self.completion(output, body), separators=(",", ":")).encode("utf-8"))
        except Exception as e:
            return _error_reply(500, f"cannot read the engine's output: {type(e).__name__}: {e}", "internal_error")

    def _request(self, raw: bytes) -> tuple[dict, Any]:
        """The body and its SamplingParams, made by vLLM's own OpenAI request model."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("the body is not a JSON object")
        request = ChatCompletionRequest.model_validate(body)
        max_tokens = request.max_completion_tokens or request.max_tokens or \
            self.defaults.get("max_tokens") or DEFAULT_MAX_TOKENS
        return body, request.to_sampling_params(int(max_tokens), self.defaults)

    # -- the answer in OpenAI's layout
    def token_text(self, token_id: int) -> str:
        return self._texts(token_id)

    def completion(self, output, body: dict) -> dict[str, Any]:
        choice = output.outputs[0]
        logprobs = None
        if body.get("logprobs") and choice.logprobs is not None:
            logprobs = {"content": logprob_content(choice.token_ids, choice.logprobs,
                                                   int(body.get("top_logprobs") or 0), self.token_text)}
        n_prompt = len(output.prompt_token_ids or [])
        n_out = len(choice.token_ids)
        return {
            "id": f"chatcmpl-{output.request_id}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or self.source,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": choice.text},
                         "logprobs": logprobs, "finish_reason": choice.finish_reason}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out},
        }


def logprob_content(token_ids, steps, top_n: int, token_text) -> list[dict]:
    """OpenAI ``logprobs.content`` from vLLM's per-step ``{token_id: Logprob}`` dicts, laid out as
    ``vllm serve`` lays them out (OpenAIServingChat._create_chat_logprobs): the generated token's
    decoded text and logprob, and the step's first ``top_n`` entries (vLLM puts the sampled token
    first, then the most likely ones by rank)."""
    def text_of(token_id: int, logprob) -> str:
        return logprob.decoded_token if logprob.decoded_token is not None else token_text(token_id)

    content = []
    for token_id, step in zip(token_ids, steps):
        chosen = step.get(token_id) if step else None
        if chosen is None:
            token = token_text(token_id)
            content.append({"token": token, "logprob": LOGPROB_FLOOR, "bytes": list(token.encode("utf-8", "replace")),
                            "top_logprobs": []})
            continue
        token = text_of(token_id, chosen)
        top = []
        for k, (alt_id, alt) in enumerate(step.items()):
            if k >= top_n:
                break
            alt_text = text_of(alt_id, alt)
            top.append({"token": alt_text, "logprob": max(alt.logprob, LOGPROB_FLOOR),
                        "bytes": list(alt_text.encode("utf-8", "replace"))})
        content.append({"token": token, "logprob": max(chosen.logprob, LOGPROB_FLOOR),
                        "bytes": list(token.encode("utf-8", "replace")), "top_logprobs": top})
    return content


def _failure_reply(error: Exception) -> Reply:
    """A request vLLM refused itself (a prompt beyond the context, bad parameters or body) is the
    server's 400, not retried; a failure while handling it, a 500 (retried)."""
    from pydantic import ValidationError
    from vllm.exceptions import VLLMClientError

    refused = isinstance(error, (VLLMClientError, ValidationError, ValueError, TypeError, KeyError))
    status, kind = (400, "invalid_request_error") if refused else (500, "internal_error")
    return _error_reply(status, f"{type(error).__name__}: {str(error)[:500]}", kind)


class VllmTransport:
    """The Scorer's transport for judge.backend=vllm: ``post`` queues the body for the engine."""

    retryable_errors: tuple = ()  # no connection to drop in process
    # Greedy decoding gives the same answer again: the Scorer does not retry a malformed one.
    deterministic_when_greedy = True

    def __init__(self, engine: VllmEngine):
        self.engine = engine
        self.endpoints = [engine.endpoint]

    async def post(self, url: str, body: bytes, timeout_s: float) -> Reply:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.engine.submit(_Pending(body, loop, future))
        # On timeout the future is cancelled: the engine skips it if not yet started, else drops
        # its answer (a running engine batch is not interrupted).
        return await asyncio.wait_for(future, timeout_s)

    async def close(self) -> None:
        """The engine stays loaded for the actor's next batch."""


class VllmJudgeActor:
    """Ray Data actor: ``ds.map_batches(VllmJudgeActor, fn_constructor_args=(judge_json, prompts),
    batch_format="pyarrow", ...)`` over the build stage's rows; one engine per actor."""

    def __init__(self, judge_cfg_json: str, prompts):
        self.cfg = JudgeConfig.model_validate_json(judge_cfg_json)
        self.prompts = prompts
        self.engine = VllmEngine(self.cfg)
        self.transport = VllmTransport(self.engine)
        self.scorer = Scorer(self.cfg, prompts, self.transport)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        scores = _run(self._score(rows))
        return pa.Table.from_pylist(
            [{"unit": r["unit"], "unit_rows": r["unit_rows"], "pos": r["pos"], "unit_item": r["unit_item"],
              "score": None if s is None else json.dumps(s)} for r, s in zip(rows, scores)],
            schema=SCORED_ROWS)

    async def _score(self, rows: list[dict]) -> list[dict | None]:
        if self.cfg.deadline_s is not None:  # judge.deadline_s bounds one actor batch
            self.scorer.deadline = time.monotonic() + self.cfg.deadline_s
        t0 = time.monotonic()

        async def one(r: dict) -> dict | None:
            if r["sample"] is None:
                return None  # a unit with nothing to score
            built = InputError(r["input_error"]) if r["input_error"] is not None else (r["kind"], r["body"])
            return await self.scorer.score_row(json.loads(r["sample"]), built, t0)

        return list(await asyncio.gather(*(one(r) for r in rows)))

