"""The judge pre-flight and the all-failed check, against real HTTP servers on 127.0.0.1: the fake
OpenAI judge (tests/fake_judge.py) and a plain stdlib server that is not an OpenAI server."""
from __future__ import annotations

import http.server
import socket
import threading

import pyarrow as pa
import pytest

from pipeline.curate.registry import STAGES
from pipeline.stage import run_stage
from pipeline.config_base import ConfigError
from pipeline.curate.config import JudgeConfig, load_config
from fake_judge import SERVED_MODEL, FakeJudgeServer
from stages.judge.outcome import JudgeOutcome, JudgeRunFailed, unit_outcome
from stages.judge.preflight import check_servers

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _NotOpenAI(http.server.BaseHTTPRequestHandler):
    """A web server that is not a judge: an HTML page (200) on every path, or 401 everywhere."""
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = b"<html>login</html>"
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def plain_server():
    servers = []

    def start(status: int) -> str:
        handler = type("Handler", (_NotOpenAI,), {"status": status})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_model_the_server_does_not_serve_is_named_with_what_it_serves():
    with FakeJudgeServer(models=("Qwen/Qwen2.5-VL-7B-Instruct",)) as server:
        with pytest.raises(ConfigError) as err:
            check_servers(JudgeConfig(urls=[server.url], model="Qwen/Qwen2.5-VL-72B-Instruct"))
        assert server.stats.requests == 0  # nothing was sent to /chat/completions
    assert str(err.value) == (f"judge.model: 'Qwen/Qwen2.5-VL-72B-Instruct' is not served by {server.url}; "
                              f"it serves ['Qwen/Qwen2.5-VL-7B-Instruct']")


def test_a_url_without_v1_is_refused_with_the_url_that_works():
    with FakeJudgeServer() as server:
        bare = f"http://127.0.0.1:{server.port}"
        with pytest.raises(ConfigError) as err:
            check_servers(JudgeConfig(urls=[bare]))
        # the base URL with /v1, or with the route spelled out, is accepted
        check_servers(JudgeConfig(urls=[server.url, server.url + "/chat/completions"], model=SERVED_MODEL))
    assert str(err.value) == (f"judge.urls: {bare} does not answer the OpenAI routes (GET {bare}/models: "
                              f"HTTP 404); it does at {bare}/v1: use that")


def test_every_url_must_answer_not_just_one(plain_server):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    html = plain_server(200)
    locked = plain_server(401)
    with FakeJudgeServer() as good:
        check_servers(JudgeConfig(urls=[good.url]))
        with pytest.raises(ConfigError) as err:
            check_servers(JudgeConfig(urls=[good.url, dead, html, locked], api_key_env="JUDGE_KEY"))
    problems = str(err.value).split(" | ")
    assert "\n" not in str(err.value) and good.url not in str(err.value)
    assert problems[0].startswith(f"judge.urls: nothing answers at {dead} (")
    assert any(p == f"judge.urls: {html} does not answer the OpenAI routes (GET {html}/models: an answer "
                    f"that is not a model list); set judge.urls to OpenAI-compatible base URLs, e.g. "
                    f"http://host:8000/v1" for p in problems)
    assert any(p.startswith(f"judge.api_key_env: {locked} refuses the request (HTTP 401)") and "'JUDGE_KEY'" in p
               for p in problems)


def test_the_stage_stops_before_decoding_anything(demo_config, tmp_path):
    """`run --stage vlm-filter` with a model the server does not serve: ConfigError at once, no
    request, no scores table, no sample decoded (the stage stops before it reads the probes)."""
    with FakeJudgeServer(models=("other",)) as server:
        cfg = load_config(demo_config, [f"judge.urls=[{server.url}]"])
        with pytest.raises(ConfigError, match=r"^judge\.model: 'Qwen/Qwen2\.5-VL-72B-Instruct' is not served by "
                                              r".*; it serves \['other'\]$"):
            run_stage(STAGES["vlm-filter"], cfg, tmp_path / "work")
        assert server.stats.requests == 0
    assert not (tmp_path / "work" / "tables" / "scores").exists()


def _scores(*rows: tuple[str, str | None]) -> pa.Table:
    return pa.table({"status": [s for s, _ in rows], "error": [e for _, e in rows]})


def test_all_engine_errors_fail_with_the_commonest():
    outcome = JudgeOutcome()
    outcome.add(unit_outcome(_scores(("engine_error", "HTTP 404: no model"), ("input_error", "unreadable"))))
    outcome.add(unit_outcome(_scores(("engine_error", "HTTP 404: no model"), ("engine_error", "HTTP 500: x"))))
    with pytest.raises(JudgeRunFailed, match=r"all 3 judged rows are engine_error; the commonest \(2 rows\): "
                                             r"'HTTP 404: no model'"):
        outcome.check()
    outcome.add(unit_outcome(_scores(("ok", None))))  # one row scored: the run is not a failure
    outcome.check()
    JudgeOutcome().check()  # nothing sent (e.g. every unit done already): not a failure either
