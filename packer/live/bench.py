"""``packer bench``: play a scenario's workload against any vLLM-compatible server and report what
``packer simulate`` reports.

The requests are the twin's own (``generate_requests``: the same seeded arrivals and lengths, the
output lengths the profile's client asks for), sent at their arrival times divided by the time scale
as streamed completions (``ignore_eos``, ``max_tokens`` = the output length, ``model`` = the
adapter, the prompt as token ids of the drawn length). Every token's arrival is timed; ``/metrics`` is
scraped every second; what is in flight when the window closes is cancelled. The per-request
outcomes go through the twin's own run summary (``summarise_run``): the same warm-up and window, the
same latency statistics and the same starvation rule.

Like the measured load generator, the client does not send a request while as many requests as the
profile's waiting cap have been sent without a first token (counted in ``not_sent``, as the twin
does); a 503 from the server counts the same. The client reports how far it fell behind its
schedule, so an overloaded client never passes for a slow server.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import PackerError
from ..model import Scenario
from ..profile import Profile
from ..twin import kernel as K
from ..twin.engine import SERIES_BUCKET_S, client_output_len, refused_run, summarise_run
from ..twin.result import SimulationResult
from ..twin.workload_gen import generate_requests
from .metrics import scrape_values

__all__ = ["BenchResult", "run_bench", "bench", "refused", "BEHIND_P99_S"]

# The client is behind schedule when the 99th percentile of its send delays exceeds this many wall
# seconds (asyncio's timers alone give about 1 ms): beyond it the TTFTs it measures are partly its own.
BEHIND_P99_S = 0.005
STOP_GRACE_S = 10.0  # wall seconds cancelled requests get to stop once the window has closed
INTERRUPT_GRACE_S = 1.0  # seconds the open requests get after Ctrl-C
# the whole run's wall-clock limit: its window at the time scale, plus this margin (and as much again)
DEADLINE_MARGIN_S = 60.0
MAX_STALL_S = 0.05  # wall seconds the client's event loop may be blocked before its timings are suspect
_TOKEN = b"1000,"  # every prompt token's id (any valid id: the server only counts them)


@dataclass(frozen=True)
class BenchResult:
    """A benchmark's outcome: ``result`` has the keys of ``packer simulate --json``; ``client`` how the
    client fared; ``partial`` with ``error`` when the run stopped early (the server died)."""

    result: SimulationResult
    client: dict[str, Any]
    series: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    partial: bool = False
    error: str | None = None

    def to_dict(self, series: bool = False) -> dict[str, Any]:
        from ..files import json_ready

        d = {**self.result.to_dict(), "partial": self.partial, "error": self.error, "client": self.client}
        if series:
            d["metrics_series"] = list(self.series)
        return json_ready(d)


class _Fatal(Exception):
    pass


class _Run:
    """The state of one benchmark run: the requests, their outcomes, the client's schedule."""

    def __init__(self, sc: Scenario, prof: Profile, url: str, time_scale: float, max_waiting: int | None,
                 record_tokens: bool = False):
        self.sc, self.prof, self.url, self.scale = sc, prof, url.rstrip("/"), float(time_scale)
        self.req = generate_requests(sc.workload)
        self.out_len = client_output_len(self.req.output_len, prof.client.output_len_scale)
        n = len(self.req.arrival_s)
        self.first = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.itl_sum = np.zeros(n)
        self.itl_cnt = np.zeros(n, dtype=np.int64)
        self.state = np.full(n, K.S_FUTURE, dtype=np.int8)
        self.lag = np.full(n, np.nan)
        self.max_waiting = prof.client.max_waiting if max_waiting is None else max_waiting
        self.names = [a.id for a in sc.workload.adapters]
        self.awaiting_first = 0
        self.gated = self.rejected = self.errors = 0
        self.first_error: str | None = None
        self.fatal: str | None = None
        self.series: list[dict[str, Any]] = []
        self.t0 = 0.0
        self.max_stall_s = 0.0
        # every token's arrival (simulated s), per request, when asked for (``write_requests``)
        self.tokens: list[array] | None = [array("d") for _ in range(n)] if record_tokens else None
        longest = int(self.req.prompt_len.max()) if n else 1
        self._prompt = _TOKEN * longest

    def sim(self, loop) -> float:
        return (loop.time() - self.t0) * self.scale

    def body(self, i: int) -> bytes:
        p = int(self.req.prompt_len[i])
        name = self.names[int(self.req.adapter[i])]
        return (b'{"model":' + json.dumps(name).encode() + b',"prompt":[' + self._prompt[:len(_TOKEN) * p - 1]
                + b'],"max_tokens":' + str(int(self.out_len[i])).encode()
                + b',"ignore_eos":true,"stream":true,"temperature":0}')

    async def one(self, session, i: int, loop) -> None:
        import aiohttp

        self.lag[i] = (loop.time() - self.t0) * self.scale - self.req.arrival_s[i]
        self.state[i] = K.S_WAITING
        self.awaiting_first += 1
        awaiting = True
        got = 0
        last = math.nan
        try:
            async with session.post(self.url + "/v1/completions", data=self.body(i),
                                    headers={"Content-Type": "application/json"}) as resp:
                if resp.status == 503:
                    self.state[i] = K.S_DROPPED
                    self.rejected += 1
                    return
                if resp.status != 200:
                    text = (await resp.text())[:300]
                    if resp.status == 404:
                        raise _Fatal(f"the server does not serve adapter {self.names[int(self.req.adapter[i])]!r} "
                                     f"(404: {text}); give it the scenario's adapters (--lora-modules)")
                    self._error(f"HTTP {resp.status}: {text}")
                    self.state[i] = K.S_DROPPED
                    return
                async for chunk in resp.content.iter_any():
                    k = chunk.count(b"data: {")
                    if not k:
                        continue
                    t = (loop.time() - self.t0) * self.scale
                    if got == 0:
                        self.first[i] = t
                        self.state[i] = K.S_RUNNING
                        self.awaiting_first -= 1
                        awaiting = False
                    else:
                        self.itl_sum[i] += t - last
                    self.itl_cnt[i] += k - 1 if got == 0 else k  # tokens in one chunk: gaps of zero
                    got += k
                    last = t
                    if self.tokens is not None:
                        self.tokens[i].extend([t] * k)
            if got:
                self.finish[i] = last
                self.state[i] = K.S_DONE
        except _Fatal as e:
            self.fatal = str(e)
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            if isinstance(e, (aiohttp.ClientConnectorError, ConnectionRefusedError)):
                self.fatal = f"the server at {self.url} stopped answering ({e.__class__.__name__}: {e})"
            else:
                self._error(f"{e.__class__.__name__}: {e}")
        finally:
            if awaiting:  # no first token: answered with an error, or still waiting when cancelled
                self.awaiting_first -= 1

    def _error(self, text: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = text

    async def scrape(self, session, loop, alive, every_s: float) -> None:
        import aiohttp

        prev = None
        while True:
            try:
                async with session.get(self.url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    text = await r.text()
                v = scrape_values(text)
                t = self.sim(loop)
                row = {"t_s": t, "running": v.get("vllm:num_requests_running", 0.0),
                       "waiting": v.get("vllm:num_requests_waiting", 0.0),
                       "kv_usage": v.get("vllm:kv_cache_usage_perc", v.get("vllm:gpu_cache_usage_perc", 0.0)),
                       "preemptions": v.get("vllm:num_preemptions_total", 0.0),
                       "generation_tokens": v.get("vllm:generation_tokens_total", 0.0),
                       "prompt_tokens": v.get("vllm:prompt_tokens_total", 0.0),
                       "running_lora_adapters": v.get("running_lora_adapters", []),
                       "waiting_lora_adapters": v.get("waiting_lora_adapters", [])}
                if "packer:engine_lag_seconds" in v:
                    row["server_lag_s"] = v["packer:engine_lag_seconds"]
                self.series.append(row)
                prev = t
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                if alive is not None and not alive():
                    self.fatal = f"the server process exited during the run (last scrape at {prev or 0:.1f} s)"
                    return
                self._error(f"/metrics: {e.__class__.__name__}")
            if alive is not None and not alive():
                self.fatal = f"the server process exited during the run (at about {self.sim(loop):.1f} s)"
                return
            await asyncio.sleep(every_s)

    async def run(self, alive=None, scrape_s: float = 1.0) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        horizon = self.sc.workload.horizon_s
        arrival = self.req.arrival_s
        conn = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            self.t0 = loop.time() + 0.05
            tasks: set[asyncio.Task] = set()
            scraper = asyncio.create_task(self.scrape(session, loop, alive, scrape_s))
            watcher = asyncio.create_task(self.watch_loop(loop))
            try:
                i, n = 0, len(arrival)
                while i < n and self.fatal is None:
                    now = loop.time()
                    target = self.t0 + arrival[i] / self.scale
                    if target > now:
                        await asyncio.sleep(target - now)
                        continue
                    while i < n and self.t0 + arrival[i] / self.scale <= now:
                        if self.awaiting_first >= self.max_waiting:
                            self.state[i] = K.S_DROPPED
                            self.gated += 1
                        else:
                            t = asyncio.create_task(self.one(session, i, loop))
                            tasks.add(t)
                            t.add_done_callback(tasks.discard)
                        i += 1
                    await asyncio.sleep(0)
                end = self.t0 + horizon / self.scale
                while self.fatal is None and loop.time() < end:
                    await asyncio.sleep(min(0.05, max(0.0, end - loop.time())))
            finally:  # also when the watchdog cancels the run: nothing of it stays on the loop
                await self._stop(list(tasks) + [scraper, watcher])

    async def _stop(self, tasks: list) -> None:
        """Cancel what still runs; a task that does not stop within ``STOP_GRACE_S`` is left behind (and
        counted) rather than waited for: the run's figures are complete once the window has closed."""
        for t in tasks:
            t.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        if pending:
            self._error(f"{len(pending)} request(s) did not stop within {STOP_GRACE_S:.0f} s of being cancelled")

    async def watch_loop(self, loop, every_s: float = 0.01) -> None:
        """The longest the event loop was blocked (wall s): a blocked client times tokens late."""
        while True:
            t = loop.time()
            await asyncio.sleep(every_s)
            self.max_stall_s = max(self.max_stall_s, loop.time() - t - every_s)

    def result(self, kv_tokens: int, t_start: float) -> SimulationResult:
        sc, prof = self.sc, self.prof
        horizon = sc.workload.horizon_s
        n_buckets = int(np.ceil(horizon / SERIES_BUCKET_S))
        waiting, running, kv = (np.zeros(n_buckets) for _ in range(3))
        if self.series:
            t = np.array([r["t_s"] for r in self.series])
            b = np.minimum((t // SERIES_BUCKET_S).astype(int), n_buckets - 1)
            for arr, key, scale in ((waiting, "waiting", 1.0), (running, "running", 1.0),
                                    (kv, "kv_usage", kv_tokens / prof.memory.block_size)):
                vals = np.array([r[key] for r in self.series]) * scale
                last = 0.0
                for k in range(n_buckets):  # the mean of the scrapes in each bucket (the last one before, if none)
                    sel = vals[(b == k) & (t >= 0)]
                    last = float(sel.mean()) if len(sel) else last
                    arr[k] = last
        counters = np.zeros(K.C_N)
        if self.series:
            counters[K.C_MAX_WAITING] = max(r["waiting"] for r in self.series)
            counters[K.C_MAX_RUNNING] = max(r["running"] for r in self.series)
            counters[K.C_END_WAITING] = self.series[-1]["waiting"]
            counters[K.C_END_RUNNING] = self.series[-1]["running"]
            counters[K.C_PREEMPTIONS] = self.series[-1]["preemptions"] - self.series[0]["preemptions"]
            counters[K.C_MAX_KV_USED] = max(r["kv_usage"] for r in self.series) * kv_tokens / prof.memory.block_size
        finish = np.where(self.finish <= horizon, self.finish, np.nan)
        out = (counters, self.first, finish, self.itl_sum, self.itl_cnt, waiting, running, kv, self.state)
        return summarise_run(sc, prof, kv_tokens, self.req, self.out_len, out, t_start)

    def write_requests(self, path: str) -> None:
        """Every request's record as NPZ (times in simulated s from the run's start, NaN where the event did
        not happen): ``arrival_s`` (scheduled), ``send_s``, ``first_token_s``, ``finish_s``, ``status``
        (0 never sent, 1 waiting, 2 streaming, 3 finished, 4 not sent / refused), ``adapter``,
        ``prompt_len``, ``output_len``, and every token's arrival as ``token_times_s`` split by
        ``token_offsets`` (request i's tokens are ``token_times_s[token_offsets[i]:token_offsets[i+1]]``)."""
        import os
        import tempfile

        counts = np.array([len(t) for t in self.tokens], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        times = np.concatenate([np.frombuffer(t, dtype=np.float64) for t in self.tokens]) if len(counts) else np.zeros(0)
        d = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, arrival_s=self.req.arrival_s, send_s=self.req.arrival_s + self.lag,
                                first_token_s=self.first, finish_s=self.finish, status=self.state,
                                adapter=self.req.adapter, prompt_len=self.req.prompt_len, output_len=self.out_len,
                                token_offsets=offsets, token_times_s=times)
        os.replace(tmp, path)

    def client_report(self) -> dict[str, Any]:
        lag = self.lag[np.isfinite(self.lag)]
        p99 = float(np.percentile(lag, 99)) if len(lag) else 0.0
        sent = int(np.count_nonzero(np.isfinite(self.lag)))
        return {"sent": sent, "not_sent_waiting_cap": self.gated, "rejected_503": self.rejected,
                "errors": self.errors, "first_error": self.first_error, "send_lag_p50_s": float(np.median(lag))
                if len(lag) else 0.0, "send_lag_p99_s": p99, "send_lag_max_s": float(lag.max()) if len(lag) else 0.0,
                "max_loop_stall_s": self.max_stall_s,
                "server_lag_max_s": max((r.get("server_lag_s", 0.0) for r in self.series), default=0.0),
                "behind_schedule": bool(p99 / self.scale > BEHIND_P99_S or self.max_stall_s > MAX_STALL_S),
                "time_scale": self.scale,
                "max_waiting": self.max_waiting}


async def run_bench(sc: Scenario, prof: Profile, url: str, *, time_scale: float = 1.0, max_waiting: int | None = None,
                    requests_out: str | None = None,
                    kv_tokens: int | None = None, alive=None, scrape_s: float = 1.0) -> BenchResult:
    """Benchmark the server at ``url`` on the scenario's workload (see the module docstring). ``alive``,
    when given, says whether the server process still runs (a launched server)."""
    from ..twin import Twin

    t_start = time.perf_counter()
    run = _Run(sc, prof, url, time_scale, max_waiting, record_tokens=requests_out is not None)
    kv = kv_tokens if kv_tokens is not None else Twin(sc, prof).kv_capacity_tokens()
    # The objects alive now (a test session's, a caller's) stay out of the collector's passes during the
    # run: a full collection of a large heap blocks the event loop long enough to time tokens late.
    gc.collect()
    gc.freeze()
    window_wall_s = sc.workload.horizon_s / float(time_scale)
    deadline_s = 2.0 * window_wall_s + DEADLINE_MARGIN_S
    try:
        await asyncio.wait_for(run.run(alive=alive, scrape_s=scrape_s), deadline_s)
    except asyncio.TimeoutError:  # a watchdog: a client that cannot keep up must not run on for ever
        run.fatal = (f"the client did not finish within {deadline_s:.0f} s of wall time (its window is "
                     f"{window_wall_s:.0f} s at time scale {float(time_scale):g}); lower --time-scale")
    finally:
        gc.unfreeze()
    result = run.result(kv, t_start)
    if requests_out is not None:
        run.write_requests(requests_out)
    result = _with_wall(result, time.perf_counter() - t_start)
    return BenchResult(result=result, client=run.client_report(), series=tuple(run.series),
                       partial=run.fatal is not None, error=run.fatal)


def refused(sc: Scenario, prof: Profile, reason: str) -> BenchResult:
    """The result of a server that refused to start: ``memory_error`` = its reason."""
    req = generate_requests(sc.workload)
    out_len = client_output_len(req.output_len, prof.client.output_len_scale)
    res = refused_run(sc, prof, 0, req, out_len, reason, time.perf_counter())
    return BenchResult(result=res, client={"sent": 0}, partial=False, error=None)


def bench(sc: Scenario, prof: Profile, url: str, **kw) -> BenchResult:
    """``run_bench`` in a fresh event loop. Unlike ``asyncio.run``, closing the loop does not wait without
    limit for a task that ignores its cancellation. Ctrl-C (or SIGTERM) during the run cancels it and
    raises ``PackerError("interrupted")``."""
    loop = asyncio.new_event_loop()
    grace = STOP_GRACE_S
    main = loop.create_task(run_bench(sc, prof, url, **kw))
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        main.cancel()

    # The signals go through the loop, not Python's default handler: a KeyboardInterrupt raised at an
    # arbitrary point can land in a finaliser or a garbage-collector callback, where Python prints and
    # drops it, and the run would go on for its whole window with Ctrl-C lost.
    installed = _install_signal_handlers(loop, on_signal)
    try:
        return loop.run_until_complete(main)
    except (KeyboardInterrupt, asyncio.CancelledError) as e:  # KeyboardInterrupt: no handlers (not the main thread)
        if isinstance(e, asyncio.CancelledError) and not interrupted:
            raise
        grace = INTERRUPT_GRACE_S  # Ctrl-C: the user wants the server stopped now, not stragglers drained
        raise PackerError("interrupted") from None
    finally:
        try:
            left = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in left:
                t.cancel()
            if left:
                loop.run_until_complete(asyncio.wait(left, timeout=grace))
            loop.run_until_complete(asyncio.wait([loop.create_task(loop.shutdown_asyncgens())], timeout=grace))
        finally:
            _remove_signal_handlers(loop, installed)
            loop.close()


def _install_signal_handlers(loop, callback) -> dict:
    """SIGINT and SIGTERM call ``callback`` on the loop; returns the handlers they had (none where signals
    cannot be set: not the main thread)."""
    import signal

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous = signal.getsignal(sig)
            loop.add_signal_handler(sig, callback)
        except (ValueError, RuntimeError, NotImplementedError):
            continue
        old[sig] = previous
    return old


def _remove_signal_handlers(loop, old: dict) -> None:
    """Undo ``_install_signal_handlers``: each signal gets back the handler it had (asyncio alone would
    reset it to the default, dropping a caller's SIGTERM handler)."""
    import signal

    for sig, previous in old.items():
        loop.remove_signal_handler(sig)
        if previous is not None:
            signal.signal(sig, previous)


def _with_wall(r: SimulationResult, wall: float) -> SimulationResult:
    import dataclasses

    return dataclasses.replace(r, wall_seconds=wall)
