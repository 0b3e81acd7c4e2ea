"""A real OpenAI-compatible judge server on 127.0.0.1 that answers without a model, for tests and
the client benchmark. It can also misbehave on purpose.

Answers are a deterministic function of the request's messages (sha256), so a retried request gets
the same scores as a first try and a faulty run can be compared with a fault-free one. Each metric
named by the request's ``response_format`` schema gets an integer and a distribution around it
(0.7 on the integer, 0.15 on each neighbour inside 1..10, renormalised); the content is compact
JSON in schema order and the logprobs are tokenised like Qwen2's tokenizer does digits (every
digit its own token, so 10 is "1" then "0"), with ``top_logprobs`` at every position.

Faults (``fault_rate`` of the requests, chosen with a seeded RNG): ``http500``, ``http429``
(with ``Retry-After``), ``timeout`` (answers after ``hang_s``), ``drop`` (closes the connection
without answering), ``malformed`` (truncated JSON), ``out_of_range`` (a score of 11), ``empty``
(``choices: []``), ``garbage`` (a body that is not JSON); and on demand ``http400`` (a request
the server refuses, which a client must not retry). ``GET /v1/models`` lists ``models`` (default:
judge.model's default), which the judge's pre-flight checks.

    python -m stages.judge.fake_server --port 8000 --latency 0.05   # prints the URL, serves until killed
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import threading
import time
from dataclasses import dataclass, field

# The mix injected by default; "http400" (a request the server refuses: never retried) only on demand.
DEFAULT_FAULTS = ("http500", "http429", "timeout", "drop", "malformed", "out_of_range", "empty", "garbage")
FAULTS = DEFAULT_FAULTS + ("http400",)
DEFAULT_METRICS = ["instruction_following", "visual_quality", "content_preservation", "motion_consistency"]
REASON = "deterministic fake judge"
STOP_TOKEN = "<|im_end|>"
SERVED_MODEL = "Qwen/Qwen2.5-VL-72B-Instruct"  # judge.model's default, so a default config passes the pre-flight


def request_digest(body: dict) -> bytes:
    canonical = json.dumps(body.get("messages"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def metrics_of(body: dict) -> list[str]:
    try:
        schema = body["response_format"]["json_schema"]["schema"]
        return [m for m in schema["properties"] if m != "reason"]
    except (KeyError, TypeError):
        return list(DEFAULT_METRICS)


def score_distribution(score: int, lo: int = 1, hi: int = 10) -> dict[int, float]:
    raw = {score: 0.7, score - 1: 0.15, score + 1: 0.15}
    raw = {s: p for s, p in raw.items() if lo <= s <= hi}
    total = sum(raw.values())
    return {s: p / total for s, p in raw.items()}


def fake_scores(body: dict) -> dict[str, int]:
    digest = request_digest(body)
    return {m: 1 + digest[i % len(digest)] % 10 for i, m in enumerate(metrics_of(body))}


def expected_of(score: int) -> float:
    """The expected score a client should derive from this server's logprobs."""
    return sum(s * p for s, p in score_distribution(score).items())


def _lp(p: float) -> float:
    return math.log(p) if p > 0 else -9999.0


def _entry(token: str, cands: dict[str, float]) -> dict:
    top = sorted(cands.items(), key=lambda kv: -kv[1])
    return {"token": token, "logprob": _lp(cands.get(token, 1.0)),
            "bytes": list(token.encode()), "top_logprobs": [
                {"token": t, "logprob": _lp(p), "bytes": list(t.encode())} for t, p in top]}


def answer_tokens(scores: dict[str, int], reason: str | None = REASON) -> tuple[str, list[dict]]:
    """Content and logprobs for the scores, tokenised digit by digit."""
    tokens: list[dict] = []
    after_one: dict[str, float] | None = None  # candidates of the token following a lone "1"

    def add(token: str, cands: dict[str, float] | None = None) -> None:
        nonlocal after_one
        if after_one is not None:
            cands, after_one = {token: after_one["end"], **({"0": after_one["0"]} if after_one["0"] else {})}, None
        tokens.append(_entry(token, cands or {token: 1.0}))

    for i, (metric, score) in enumerate(scores.items()):
        add(("{" if i == 0 else ",") + json.dumps(metric) + ":")
        dist = score_distribution(score)
        first: dict[str, float] = {}
        for s, p in dist.items():  # "1" stands for 1 and for 10 here
            first[str(s)[0]] = first.get(str(s)[0], 0.0) + p
        add(str(score)[0], first)
        p1, p10 = dist.get(1, 0.0), dist.get(10, 0.0)
        if score == 10:  # after "1": "0" makes 10, anything else would have ended at 1
            add("0", {"0": p10 / (p1 + p10), **({",": p1 / (p1 + p10)} if p1 else {})})
        elif score == 1:
            after_one = {"end": p1 / (p1 + p10), "0": p10 / (p1 + p10)}
    add((',"reason":' + json.dumps(reason) if reason is not None else "") + "}")
    content = "".join(t["token"] for t in tokens)
    # Like vLLM: the logprobs also list the stop token, which the content leaves out.
    tokens.append(_entry(STOP_TOKEN, {STOP_TOKEN: 1.0}))
    return content, tokens


def completion_body(body: dict, content: str, tokens: list[dict] | None, finish: str = "stop") -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
    if body.get("logprobs") and tokens is not None:
        top = int(body.get("top_logprobs") or 0)
        choice["logprobs"] = {"content": [dict(t, top_logprobs=t["top_logprobs"][:top]) for t in tokens]}
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body.get("model", "fake"),
        "choices": [choice],
        "usage": {"prompt_tokens": len(json.dumps(body.get("messages"))) // 4,
                  "completion_tokens": len(tokens or []), "total_tokens": 0},
    }


@dataclass
class ServerStats:
    requests: int = 0
    answered: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    faults: dict[str, int] = field(default_factory=lambda: {f: 0 for f in FAULTS})
    bodies: list[dict] = field(default_factory=list)  # when recording
    arrivals: list[tuple[float, bytes]] = field(default_factory=list)  # (monotonic time, digest)


class FakeJudgeServer:
    """An aiohttp server on its own thread and event loop. Use as a context manager."""

    def __init__(self, *, latency_s: float = 0.0, fault_rate: float = 0.0, faults: tuple[str, ...] = DEFAULT_FAULTS,
                 seed: int = 0, retry_after: str = "1", hang_s: float = 5.0, record: bool = False,
                 port: int = 0, host: str = "127.0.0.1", fault_every_first: int = 0,
                 models: tuple[str, ...] = (SERVED_MODEL,)):
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {FAULTS}")
        self.latency_s, self.fault_rate, self.faults = latency_s, fault_rate, tuple(faults)
        self.rng = random.Random(seed)
        self.retry_after, self.hang_s, self.record = retry_after, hang_s, record
        self.host, self.port = host, port
        self.models = tuple(models)  # what GET /v1/models lists (the judge's pre-flight checks it)
        # The first N requests of every distinct body fail (deterministic retries in tests).
        self.fault_every_first = fault_every_first
        self._seen: dict[bytes, int] = {}
        self.stats = ServerStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- serving
    def _pick_fault(self, digest: bytes) -> str | None:
        if self.fault_every_first:
            n = self._seen.get(digest, 0)
            self._seen[digest] = n + 1
            if n < self.fault_every_first:
                return self.faults[n % len(self.faults)]
            return None
        if self.fault_rate and self.rng.random() < self.fault_rate:
            return self.rng.choice(self.faults)
        return None

    async def _handle(self, request):
        from aiohttp import web

        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
            digest = request_digest(body)
            stats.arrivals.append((time.monotonic(), digest))
            if self.record:
                stats.bodies.append(body)
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            fault = self._pick_fault(digest)
            if fault:
                stats.faults[fault] += 1
                return await self._fault(request, fault, body)
            scores = fake_scores(body)
            content, tokens = answer_tokens(scores, REASON if self._wants_reason(body) else None)
            stats.answered += 1
            return web.json_response(completion_body(body, content, tokens))
        finally:
            stats.in_flight -= 1

    @staticmethod
    def _wants_reason(body: dict) -> bool:
        try:
            return "reason" in body["response_format"]["json_schema"]["schema"]["properties"]
        except (KeyError, TypeError):
            return True

    async def _fault(self, request, fault: str, body: dict):
        from aiohttp import web

        if fault == "http500":
            return web.json_response({"error": {"message": "injected internal error"}}, status=500)
        if fault == "http400":
            return web.json_response({"error": {"message": "injected: this model's maximum context length is exceeded"}},
                                     status=400)
        if fault == "http429":
            return web.json_response({"error": {"message": "injected rate limit"}}, status=429,
                                     headers={"Retry-After": self.retry_after})
        if fault == "timeout":
            await asyncio.sleep(self.hang_s)
            return web.json_response(completion_body(body, *answer_tokens(fake_scores(body))))
        if fault == "drop":
            request.transport.close()  # the client sees the connection die mid-request
            raise asyncio.CancelledError()
        if fault == "malformed":
            content, _ = answer_tokens(fake_scores(body))
            return web.json_response(completion_body(body, content[: len(content) // 3], None))
        if fault == "out_of_range":
            scores = fake_scores(body)
            scores[next(iter(scores))] = 11
            content = json.dumps(scores, separators=(",", ":"))
            return web.json_response(completion_body(body, content, None))
        if fault == "empty":
            return web.json_response({"id": "x", "object": "chat.completion", "choices": [], "model": "fake"})
        return web.Response(text="<html>502 upstream went away</html>", content_type="text/html")

    # -- lifecycle
    def start(self) -> "FakeJudgeServer":
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve():
            from aiohttp import web

            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application(client_max_size=1024**3)
            app.router.add_post("/v1/chat/completions", self._handle)

            async def models(_request):
                return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})

            app.router.add_get("/v1/models", models)
            # shutdown_timeout: stop() does not wait for handlers still sleeping in a "timeout" fault.
            runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.2)
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, self.host, self.port, backlog=1024)
                loop.run_until_complete(site.start())
                self.port = site._server.sockets[0].getsockname()[1]
            except BaseException as e:  # report a bind failure to the caller
                errors.append(e)
                ready.set()
                return
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            # Handlers still sleeping in a "timeout" fault: cancel them rather than leave them pending.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-judge-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> "FakeJudgeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    server = FakeJudgeServer(latency_s=args.latency, fault_rate=args.fault_rate, seed=args.seed,
                             port=args.port).start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
