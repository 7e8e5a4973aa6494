"""``packer serve-twin``: the twin behind vLLM's OpenAI-compatible HTTP API (aiohttp).

The engine is the twin's own (``packer.twin.online.OnlineTwin``: the kernel ``packer simulate`` runs),
stepping in wall-clock time divided by ``time_scale``: a step of 30 simulated ms takes 3 ms of wall
time at time scale 10. Requests arriving over HTTP join it at the simulated time they arrive; each
step's tokens are sent when the wall clock reaches the step's end. Latencies in ``/metrics`` are the
simulated server's (simulated seconds).

Endpoints: ``/health``, ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (streamed as
Server-Sent Events, one chunk per token, or whole), ``/v1/load_lora_adapter``,
``/v1/unload_lora_adapter`` (vLLM's semantics and error codes) and ``/metrics``. Text prompts are
counted at four characters per token (there is no tokenizer); token-id prompts count exactly.
Generated text is synthetic. A request that arrives while the waiting queue is at the profile's cap
gets 503, which keeps memory bounded in overload.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from aiohttp import web

from ..model import Scenario
from ..profile import Profile
from ..twin import kernel as K
from ..twin.online import BASE_MODEL, OnlineTwin
from .adapters import adapter_rank
from .metrics import ServerMetrics

__all__ = ["TwinServer", "serve"]

log = logging.getLogger("packer.serve_twin")
CHARS_PER_TOKEN = 4
TOKEN_TEXT = " tok"  # every generated token's text
LAG_WARN_S = 1.0  # wall seconds the engine may fall behind real time before it says so


class _ApiError(Exception):
    def __init__(self, status: int, message: str, err_type: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.message, self.err_type = status, message, err_type


def _error(status: int, message: str, err_type: str) -> web.Response:
    # vLLM's ErrorResponse
    return web.json_response({"object": "error", "message": message, "type": err_type, "param": None,
                              "code": status}, status=status)


@dataclass
class _Stream:
    """One request's token feed from the engine loop to its HTTP handler."""

    arrival_s: float
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    last_token_s: float = math.nan


class TwinServer:
    """One simulated vLLM server: the online twin, its adapters by name, its metrics and its HTTP app."""

    def __init__(self, scenario: Scenario, profile: Profile, *, model_name: str, time_scale: float = 1.0,
                 adapter_paths: Mapping[str, str] | None = None):
        if not time_scale > 0:
            raise ValueError("time_scale must be positive")
        self.scenario, self.profile = scenario, profile
        self.engine = OnlineTwin(scenario, profile)
        self.model_name = model_name
        self.scale = float(time_scale)
        self.adapters: dict[str, int] = {a.id: i for i, a in enumerate(scenario.workload.adapters)}
        self.paths: dict[str, str] = dict(adapter_paths or {})
        self.max_lora_rank = scenario.server.max_lora_rank
        self.max_model_len = profile.memory.max_model_len
        self.metrics = ServerMetrics(model_name, scenario.server.max_loras)
        self.streams: dict[int, _Stream] = {}
        self.lag_s = 0.0
        self._t0 = 0.0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._lag_warned = False

    # ---- clock ----------------------------------------------------------------------------------
    def sim_now(self) -> float:
        return (asyncio.get_running_loop().time() - self._t0) * self.scale

    # ---- app ------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/load_lora_adapter", self._load)
        app.router.add_post("/v1/unload_lora_adapter", self._unload)
        app.router.add_get("/metrics", self._metrics)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        self._t0 = asyncio.get_running_loop().time()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._engine_loop())

    async def _stop(self, app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for s in self.streams.values():
            s.queue.put_nowait(None)  # ends every open stream

    # ---- engine loop ----------------------------------------------------------------------------
    async def _engine_loop(self) -> None:
        loop = asyncio.get_running_loop()
        eng = self.engine
        while True:
            if not eng.pending():
                self._wake.clear()
                await self._wake.wait()
                continue
            out = eng.step()
            for r in out.dropped:
                s = self.streams.get(int(r))
                if s is not None:
                    s.queue.put_nowait("dropped")
            if out.code != K.STEP_RAN:
                if out.code == K.STEP_IDLE:
                    await asyncio.sleep(0)
                continue
            delay = self._t0 + out.now_s / self.scale - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                self.lag_s = 0.0
            else:
                self.lag_s = -delay
                if self.lag_s > LAG_WARN_S and not self._lag_warned:
                    self._lag_warned = True
                    log.warning("the twin server fell %.1f s behind real time (time scale %g too high for this "
                                "load on this machine); latencies in /metrics stay exact, those a client sees do "
                                "not", self.lag_s, self.scale)
                await asyncio.sleep(0)  # let the handlers run
            self._deliver(out)

    def _deliver(self, out) -> None:
        now = out.now_s
        m = self.metrics
        m.generation_tokens.inc(len(out.emitted))
        prompt_len = self.engine.state.prompt_len
        for r, g, done in zip(out.emitted.tolist(), out.generated.tolist(), out.finished.tolist()):
            s = self.streams.get(r)
            if g == 1:
                m.prompt_tokens.inc(int(prompt_len[r]))
                if s is not None:
                    m.ttft.observe(now - s.arrival_s)
            elif s is not None:
                m.itl.observe(now - s.last_token_s)
            if done:
                m.finished("length")
                if s is not None:
                    m.e2e.observe(now - s.arrival_s)
            if s is not None:
                s.last_token_s = now
                s.queue.put_nowait((g, done))

    # ---- handlers -------------------------------------------------------------------------------
    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        base = {"id": self.model_name, "object": "model", "created": created, "owned_by": "vllm",
                "root": self.model_name, "parent": None, "max_model_len": self.max_model_len, "permission": []}
        cards = [base] + [{"id": name, "object": "model", "created": created, "owned_by": "vllm",
                           "root": self.paths.get(name, name), "parent": self.model_name, "max_model_len": None,
                           "permission": []} for name in self.adapters]
        return web.json_response({"object": "list", "data": cards})

    async def _body(self, request: web.Request) -> dict:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise _ApiError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "the request body must be a JSON object")
        return body

    async def _load(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
        except _ApiError as e:
            return _error(e.status, e.message, e.err_type)
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return _error(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        if name in self.adapters:
            return _error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
        try:
            rank = adapter_rank(path)
        except ValueError as e:
            return _error(404, f"Loading lora {name} failed: No adapter found for {path} ({e})", "NotFoundError")
        if rank > self.max_lora_rank:
            return _error(400, f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.",
                          "BadRequestError")
        self.adapters[name] = self.engine.add_adapter(rank)
        self.paths[name] = str(path)
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
        except _ApiError as e:
            return _error(e.status, e.message, e.err_type)
        name = body.get("lora_name")
        if not name and body.get("lora_int_id") is None:
            return _error(400, "either 'lora_name' and 'lora_int_id' needs to be provided.", "InvalidUserInput")
        if name not in self.adapters:
            return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        self.engine.evict_adapter(self.adapters.pop(name))
        self.paths.pop(name, None)
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def _metrics(self, request: web.Request) -> web.Response:
        c = self.engine.counts()
        run, wait = self.engine.adapters_in_flight()
        names = {i: n for n, i in self.adapters.items()}
        page = self.metrics.render(c["running"], c["waiting"], c["kv_usage"], c["preemptions"],
                                   [names[a] for a in run if a in names], [names[a] for a in wait if a in names])
        page += (f"# HELP packer:engine_lag_seconds Wall seconds the twin's engine is behind real time.\n"
                 f"# TYPE packer:engine_lag_seconds gauge\npacker:engine_lag_seconds {self.lag_s:.6f}\n").encode()
        return web.Response(body=page, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    def _resolve_model(self, model: Any) -> int:
        if model is None or model == self.model_name:
            return BASE_MODEL
        if isinstance(model, str) and model in self.adapters:
            return self.adapters[model]
        raise _ApiError(404, f"The model `{model}` does not exist.", "NotFoundError")

    def _prompt_tokens(self, body: dict, chat: bool) -> int:
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise _ApiError(400, "'messages' must be a non-empty list")
            n = 0
            for m in msgs:
                content = m.get("content") if isinstance(m, dict) else None
                if isinstance(content, list):  # content parts
                    content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
                n += 4 + _text_tokens(str(content or ""))  # the chat template's tokens per message
            return n + 2
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, str):
            return max(1, _text_tokens(prompt))
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return len(prompt)
        raise _ApiError(400, "'prompt' must be a string or a non-empty list of token ids (one prompt per request)")

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body = await self._body(request)
            adapter = self._resolve_model(body.get("model"))
            prompt_len = self._prompt_tokens(body, chat)
            max_tokens = body.get("max_completion_tokens") if chat else None
            max_tokens = body.get("max_tokens") if max_tokens is None else max_tokens
            if max_tokens is None:
                max_tokens = self.max_model_len - prompt_len if chat else 16
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                raise _ApiError(400, f"max_tokens must be a positive integer, got {max_tokens!r}")
            if prompt_len + max_tokens > self.max_model_len:
                raise _ApiError(400, f"This model's maximum context length is {self.max_model_len} tokens. However, "
                                f"you requested {prompt_len + max_tokens} tokens ({prompt_len} in the messages, "
                                f"{max_tokens} in the completion). Please reduce the length of the messages or "
                                "completion.")
        except _ApiError as e:
            return _error(e.status, e.message, e.err_type)
        stream = bool(body.get("stream"))
        opts = body.get("stream_options")
        include_usage = bool(opts.get("include_usage")) if isinstance(opts, dict) else False
        at = self.sim_now()
        rid = self.engine.submit(adapter, prompt_len, max_tokens, at)
        s = _Stream(float(self.engine.state.arrival_s[rid]))
        self.streams[rid] = s
        self._wake.set()
        name = body.get("model") or self.model_name
        resp: web.StreamResponse | None = None
        try:
            item = await s.queue.get()
            if item == "dropped":
                return _error(503, "The server's waiting queue is full (the profile's waiting cap); retry later.",
                              "ServiceUnavailableError")
            if item is None:
                return _error(503, "The server is shutting down.", "ServiceUnavailableError")
            rid_text = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
            created = int(time.time())
            if not stream:
                generated, done = item
                while not done:
                    item = await s.queue.get()
                    if item is None:
                        return _error(503, "The server is shutting down.", "ServiceUnavailableError")
                    generated, done = item
                return web.json_response(_whole(chat, rid_text, created, name, generated, prompt_len))
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await resp.prepare(request)
            if chat:
                await resp.write(_sse({"id": rid_text, "object": "chat.completion.chunk", "created": created,
                                       "model": name, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                                        "content": ""},
                                                                   "logprobs": None, "finish_reason": None}]}))
            generated = 0
            while True:
                chunks = []
                done = False
                while True:  # every token already delivered, in one write
                    if item is None:
                        return resp
                    generated, done = item
                    chunks.append(_chunk(chat, rid_text, created, name, "length" if done else None))
                    if done or s.queue.empty():
                        break
                    item = s.queue.get_nowait()
                await resp.write(b"".join(chunks))
                if done:
                    break
                item = await s.queue.get()
            if include_usage:
                await resp.write(_sse({"id": rid_text, "object": "chat.completion.chunk" if chat else "text_completion",
                                       "created": created, "model": name, "choices": [],
                                       "usage": _usage(prompt_len, generated)}))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        except (ConnectionResetError, asyncio.CancelledError):
            self.engine.abort(rid)  # the client went away: vLLM aborts the request and frees its KV
            raise
        finally:
            self.streams.pop(rid, None)


def _text_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _chunk(chat: bool, rid: str, created: int, model: str, finish: str | None) -> bytes:
    if chat:
        choice = {"index": 0, "delta": {"content": TOKEN_TEXT}, "logprobs": None, "finish_reason": finish}
        return _sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [choice]})
    choice = {"index": 0, "text": TOKEN_TEXT, "logprobs": None, "finish_reason": finish, "stop_reason": None}
    return _sse({"id": rid, "object": "text_completion", "created": created, "model": model, "choices": [choice]})


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _whole(chat: bool, rid: str, created: int, model: str, generated: int, prompt_len: int) -> dict:
    text = TOKEN_TEXT * generated
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": "length"}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length", "stop_reason": None}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice],
            "usage": _usage(prompt_len, generated)}


def serve(server: TwinServer, host: str = "127.0.0.1", port: int = 8000, print_fn=print) -> None:
    """Serve until SIGTERM / SIGINT (aiohttp's graceful shutdown: open streams end, the engine stops)."""
    print_fn(f"INFO packer serve-twin: GPU KV cache size: {server.engine.kv_capacity_tokens:,} tokens")
    print_fn(f"INFO packer serve-twin: model {server.model_name!r}, {len(server.adapters)} LoRA adapters, "
             f"time scale {server.scale:g}; serving on http://{host}:{port}")
    import gc

    gc.collect()
    gc.freeze()  # what start-up built (numba, numpy, the profile) stays out of the collector's passes
    web.run_app(server.app(), host=host, port=port, print=None, handle_signals=True, shutdown_timeout=5.0,
                access_log=None, handler_cancellation=True)
