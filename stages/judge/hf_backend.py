"""The ``hf`` judge backend: Qwen2.5-VL run by transformers in this process, on CPU or GPU.

For small checkpoints and machines without vLLM. It speaks the openai backend's language so that
everything around it is shared (request building, retries, parsing, the scores table):
``HFTransport.post`` takes the very chat-completions body the client would send to a server and
returns an OpenAI chat completion in a ``Reply`` with an HTTP-like status.

What happens to one request (on the model's own thread, so the event loop keeps building the
next requests meanwhile):

1. The messages are read back. ``data:image/...;base64,`` URIs become PIL images;
   ``data:video/jpeg;base64,<f1>,<f2>,...`` (vLLM's frame-list form) become frame stacks: the
   frames the client already chose and sized with qwen-vl-utils' rules, so the processor is told
   not to sample them again. Each medium is replaced by a bare ``{"type": "image" | "video"}``
   part, in order, which every Qwen2.5-VL chat template understands (the official one does not
   know ``video_url``); both videos of a pair so land in one prompt.
2. The processor makes the inputs. The videos' fps (it sets their temporal positions) is the
   body's ``mm_processor_kwargs.fps`` when given, as vLLM reads it, else judge.fps.
3. ``generate``: greedy at temperature 0, else sampling with the request's temperature, top_p,
   top_k and seed over the checkpoint's own generation defaults (as vLLM does). The raw logits of
   every step are kept and turned into OpenAI's ``logprobs.content``: the same log-probabilities
   vLLM reports by default (before temperature and masks).
4. The answer is decoded as vLLM does: special tokens left out of ``content``; a final stop token
   still listed in the logprobs (with its text) and counted in ``completion_tokens``.

The JSON schema: transformers has no grammar-constrained decoding of its own, and this backend adds
no package for it (xgrammar, outlines), so generation is unconstrained and parse.py's tolerant
parser reads what comes back. The one part of ``response_format`` honoured is that special tokens
other than the stop tokens are suppressed (no JSON answer contains one). A capable checkpoint that
follows the prompt's "Answer with JSON only" scores ``ok`` or ``repaired``; a random one mostly
``malformed``.

Failures, as a server would answer them: a body that cannot become inputs (bad data URI, unknown
content part, prompt plus max_tokens beyond the model's context) is 400 (not retried); running out
of GPU memory 503 (retried); anything else 500 (retried). A generation that outlives its timeout
stops at its next token and raises ``asyncio.TimeoutError``, like an HTTP timeout.

Models are loaded once per process and kept, keyed by source, device and dtype (a Ray actor
scoring batch after batch loads once), and each runs one generation at a time.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipeline import devices
from pipeline.config_base import ConfigError
from stages.judge import local_model
from stages.judge.hf_messages import RequestError, logprob_entries, read_messages, token_pieces
from stages.judge.reply import Reply
from stages.judge.reply import error_reply as _error_reply
from stages.judge.local_model import TokenTexts

# How long past its timeout a generation may run before post() gives up waiting for it (it stops at
# its next token; only a prefill that is still running can take longer).
TIMEOUT_GRACE_S = 5.0
# max_tokens when a body names none (the client always does).
DEFAULT_MAX_TOKENS = 256


class HFModelError(RuntimeError):
    """The checkpoint cannot be loaded: a configuration problem, raised before any row is scored."""


class GenerationTimeout(Exception):
    """The generation passed its deadline (or its caller stopped waiting) and was stopped."""


# ------------------------------------------------------------------ one loaded checkpoint
def _resolve_device(name: str):
    try:
        return devices.resolve_device(name, "judge.hf_device")
    except ConfigError as e:  # raised before any row is scored, as every unloadable checkpoint is
        raise HFModelError(str(e)) from None


def _resolve_dtype(name: str, device):
    try:
        return devices.resolve_dtype(name, device, "judge.hf_dtype")
    except ConfigError as e:
        raise HFModelError(str(e)) from None


class _Deadline:
    """A stopping criterion: stop at the next token once the deadline passed or the caller left."""

    def __init__(self, deadline: float, cancelled: threading.Event):
        self.deadline, self.cancelled, self.fired = deadline, cancelled, False

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.cancelled.is_set() or time.monotonic() >= self.deadline:
            self.fired = True
        return torch.full((input_ids.shape[0],), self.fired, dtype=torch.bool, device=input_ids.device)


class HFJudgeModel:
    """A Qwen2.5-VL checkpoint with its processor, and the one thread that runs it."""

    def __init__(self, source: str, device: str = "cpu", dtype: str = "auto"):
        import torch
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        self.source = source
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        try:
            # local_files_only: a directory, or a name already in the Hugging Face cache; never a download.
            self.processor = AutoProcessor.from_pretrained(source, local_files_only=True)
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=self.dtype,
                                                                       local_files_only=True)
        except (OSError, ValueError) as e:
            raise HFModelError(
                f"judge.backend=hf cannot load {source!r} from local files ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:300]}); set judge.hf_model_path to a checkpoint directory, or have "
                f"judge.model in the local Hugging Face cache (nothing is downloaded)") from None
        self.model = model.to(self.device).eval()
        self.tokenizer = self.processor.tokenizer
        eos = self.model.generation_config.eos_token_id
        self.stop_ids = {int(t) for t in (eos if isinstance(eos, (list, tuple)) else [eos]) if t is not None}
        if self.tokenizer.eos_token_id is not None:
            self.stop_ids.add(int(self.tokenizer.eos_token_id))
        specials = {int(i) for i, t in self.tokenizer.added_tokens_decoder.items() if t.special}
        specials |= {int(i) for i in self.tokenizer.all_special_ids}
        # Never part of a JSON answer: suppressed when the request asks for one (response_format).
        self.non_answer_ids = sorted(specials - self.stop_ids)
        text_config = self.model.config.get_text_config()
        self.context = getattr(text_config, "max_position_embeddings", None)
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="hf-judge")
        self._texts = TokenTexts(self.tokenizer)
        self._torch = torch

    @property
    def endpoint(self) -> str:
        """What the scores table's ``endpoint`` column records for this backend."""
        return f"hf:{self.source}@{self.device}"

    def token_text(self, token_id: int) -> str:
        return self._texts(token_id)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    # -- one request (on self.thread)
    def _inputs(self, request: dict, default_fps: float):
        chat = read_messages(request)
        mm_kwargs = request.get("mm_processor_kwargs") if isinstance(request.get("mm_processor_kwargs"), dict) else {}
        fps = mm_kwargs.get("fps", default_fps)
        if isinstance(fps, (list, tuple)):  # qwen-vl-utils returns one per video; the processor wants a number
            fps = fps[0] if fps else default_fps
        try:
            prompt = self.processor.apply_chat_template(chat.messages, tokenize=False, add_generation_prompt=True)
            kwargs: dict[str, Any] = {}
            if chat.images:
                kwargs["images"] = chat.images
            if chat.videos:
                kwargs.update(videos=chat.videos, fps=float(fps), do_sample_frames=False)
            return self.processor(text=[prompt], return_tensors="pt", **kwargs)
        except (ValueError, TypeError, KeyError) as e:  # the processor refuses these inputs
            raise RequestError(f"the processor refused the request: {type(e).__name__}: {e}") from None

    def _generation_config(self, request: dict, max_new: int, want_logits: bool):
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = max_new
        config.return_dict_in_generate = True
        config.output_logits = want_logits
        temperature = request.get("temperature", 1.0)  # OpenAI's default
        temperature = 1.0 if temperature is None else float(temperature)
        if temperature > 0:
            config.do_sample, config.temperature = True, temperature
            for name in ("top_p", "top_k"):
                if request.get(name) is not None:
                    setattr(config, name, request[name])
        else:  # greedy: sampling settings of the checkpoint do not apply
            config.do_sample, config.temperature, config.top_p, config.top_k = False, None, None, None
        if request.get("repetition_penalty") is not None:
            config.repetition_penalty = float(request["repetition_penalty"])
        if request.get("response_format"):
            config.suppress_tokens = sorted(set(config.suppress_tokens or []) | set(self.non_answer_ids))
        return config

    def complete(self, body: bytes, deadline: float, cancelled: threading.Event, default_fps: float) -> Reply:
        """One chat completion; raises GenerationTimeout when stopped by its deadline."""
        torch = self._torch
        try:
            try:
                request = json.loads(body)
            except ValueError as e:
                raise RequestError(f"the body is not JSON: {e}") from None
            if not isinstance(request, dict):
                raise RequestError("the body is not a JSON object")
            if cancelled.is_set() or time.monotonic() >= deadline:
                raise GenerationTimeout()
            inputs = self._inputs(request, default_fps)
            n_prompt = int(inputs["input_ids"].shape[1])
            max_new = int(request.get("max_completion_tokens") or request.get("max_tokens") or DEFAULT_MAX_TOKENS)
            if self.context is not None and n_prompt + max_new > self.context:
                raise RequestError(f"the prompt ({n_prompt} tokens) plus max_tokens ({max_new}) exceeds the "
                                   f"model's context ({self.context} tokens)")
            want_logprobs = bool(request.get("logprobs"))
            config = self._generation_config(request, max_new, want_logprobs)
            stop = _Deadline(deadline, cancelled)
            seed = request.get("seed") if config.do_sample else None
            with torch.inference_mode(), self._seeded(seed):
                out = self.model.generate(**inputs.to(self.device), generation_config=config,
                                          stopping_criteria=[stop])
            if stop.fired:
                raise GenerationTimeout()
            new_ids = [int(t) for t in out.sequences[0, n_prompt:].tolist()]
            pieces, content = token_pieces(new_ids, self._decode, self.stop_ids, self.token_text)
            logprobs = None
            if want_logprobs:
                step_logits = torch.cat([step[:1] for step in out.logits], dim=0)
                logprobs = {"content": logprob_entries(new_ids, step_logits, pieces, self.token_text,
                                                       int(request.get("top_logprobs") or 0))}
        except RequestError as e:
            return _error_reply(400, str(e), "invalid_request_error")
        except torch.OutOfMemoryError as e:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return _error_reply(503, f"out of memory: {str(e).splitlines()[0][:300]}", "overloaded")
        except GenerationTimeout:
            raise
        except Exception as e:  # a model or library failure: a server's 500
            return _error_reply(500, f"{type(e).__name__}: {str(e)[:500]}", "internal_error")
        finish = "stop" if new_ids and new_ids[-1] in self.stop_ids else "length"
        completion = {
            "id": f"chatcmpl-hf-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": request.get("model") or self.source,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": logprobs, "finish_reason": finish}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(new_ids),
                      "total_tokens": n_prompt + len(new_ids)},
        }
        return Reply(200, json.dumps(completion, separators=(",", ":")).encode("utf-8"))

    @contextlib.contextmanager
    def _seeded(self, seed):
        """A request's seed for its own sampling only: the global RNG state is restored after it.
        (Without a seed the RNG runs on, so two unseeded requests do not sample alike.)"""
        if seed is None:
            yield
            return
        torch = self._torch
        devices = []
        if self.device.type == "cuda":
            devices = [self.device.index if self.device.index is not None else torch.cuda.current_device()]
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            yield

    def close(self) -> None:
        self.thread.shutdown(wait=True)


# ------------------------------------------------------------------ loaded once per process
_MODELS: dict[tuple[str, str, str], HFJudgeModel] = {}
_LOADING = threading.Lock()


def model_source(cfg) -> str:
    """Where the weights come from: judge.hf_model_path (a directory), else judge.model (a name in
    the local Hugging Face cache)."""
    try:
        return local_model.model_source(cfg.model, cfg.hf_model_path, "judge.hf_model_path")
    except ConfigError as e:  # raised before any row is scored, as every unloadable checkpoint is
        raise HFModelError(str(e)) from None


def load_judge_model(cfg) -> HFJudgeModel:
    """The judge model for ``cfg`` (a JudgeConfig), loaded on first use and kept for the process."""
    key = (model_source(cfg), cfg.hf_device, cfg.hf_dtype)
    with _LOADING:
        if key not in _MODELS:
            _MODELS[key] = HFJudgeModel(*key)
        return _MODELS[key]


def unload_judge_models() -> None:
    """Forget every loaded model (tests, or to give GPU memory back)."""
    with _LOADING:
        models = list(_MODELS.values())
        _MODELS.clear()
    for m in models:
        m.close()


class HFTransport:
    """The Scorer's transport for judge.backend=hf: ``post`` runs the request through the model."""

    retryable_errors: tuple = ()  # no connection to drop in process
    max_concurrency = 1  # one generation at a time per model: more senders would only queue
    # Greedy decoding gives the same answer again: the Scorer does not retry a malformed one.
    deterministic_when_greedy = True

    def __init__(self, cfg):
        self.cfg = cfg
        self.model = load_judge_model(cfg)
        self.endpoints = [self.model.endpoint]

    async def post(self, url: str, body: bytes, timeout_s: float) -> Reply:
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()
        run = functools.partial(self.model.complete, body, time.monotonic() + timeout_s, cancelled, self.cfg.fps)
        try:
            return await asyncio.wait_for(loop.run_in_executor(self.model.thread, run), timeout_s + TIMEOUT_GRACE_S)
        except GenerationTimeout:
            raise asyncio.TimeoutError() from None
        finally:
            cancelled.set()  # a generation still running for a caller that left stops at its next token

    async def close(self) -> None:
        """The model stays loaded for the next call (unload_judge_models frees it)."""
