"""Calibrating a profile from live measurements (``packer calibrate``): a measurement plan, a resumable
runner that takes it through the live harness (servers from a launch template, streamed completions),
and the measurements turned into the tables the fit stages take (memory, step, lora, loading).

Measurements (time in simulated/real ms = wall ms x time scale):
- ``kv``: one server start per (max_loras, max_lora_rank): the KV tokens the server logged, or refused.
- ``decode``: N concurrent requests (fixed prompt and output lengths) to the base model: the mean ITL
  while all N decode (median of ``REPEATS`` runs); at batches up to ``MAX_BATCH``, two prompt lengths
  (the attention term), and at max_lora_rank ``HIGH_RANK`` too (the rank factor's base and token terms).
- ``slots``: the same at max_loras ``WIDE_SLOTS``, at rank 8 and ``HIGH_RANK``: the per-token-per-slot
  LoRA term and the rank factor.
- ``prefill``: lone requests of one output token: TTFT over prompt length.
- ``lora``: N concurrent requests over k distinct adapters: ITL increase per distinct adapter.
- ``loading``: first request to a cold adapter (disk -> CPU -> GPU), to one in the CPU cache only
  (CPU -> GPU) and to a warm one, with one GPU slot (the fastest of ``LOAD_REPEATS`` adapter pairs).

Each finished measurement is one JSON line appended (one write, flushed and fsynced) to the state
file; a rerun skips the points already there. The plan is a pure function of its inputs (seeded).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
import http.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..errors import InputError, PackerError
from ..live.adapters import adapter_rank, write_dummy_adapters
from ..live.launch import LaunchedServer, RefusedStart, fill_template, free_port
from .fitting import error_stats, nnls, rounded
from .memory import fit_memory
from .scheduler import SchedulerFit
from .step import fit_decode
from .lora import fit_lora_overhead
from .loading import fit_loading

__all__ = ["Point", "ServerConfig", "plan_points", "run_plan", "fit_live_profile", "read_state", "loop_scenarios",
           "compare_profiles"]

MAX_BATCH = 256     # the largest decode batch (vLLM's default max_num_seqs)
PROBE_RANK = 8      # the decode and LoRA probes' max_lora_rank (the profile's lora_rank_ref)
HIGH_RANK = 32      # the second max_lora_rank: the rank factor
WIDE_SLOTS = 96     # max_loras of the slot probes: the per-token-per-slot term (fits at HIGH_RANK)
SLOT_BATCH = MAX_BATCH  # sequences in a slot probe
DUMMY_PER_RANK = 16  # dummy adapters per rank (8, 16, 32)
PROMPT_LEN = 128
LONG_CTX = 1024     # the second prompt length of the decode probes: the attention term
OUTPUT_LEN = 64
STEP_TOKENS = 2048  # max_num_batched_tokens of every server started (the prefill chunk)
PROBES = 2  # requests streamed at each end of a batch (the rest are whole responses)
PREFILL_REPEATS = 5  # lone requests per prompt length (the fastest is kept: delays only add)
LOAD_REPEATS = 7  # adapter pairs per loading measurement (the fastest of each time is kept)
REPEATS = 3  # runs of each batch measurement (the median is kept: a stall on a busy host is one run)
RANK_FACTOR_MIN = 0.02  # a rank factor closer to 1 is taken as no rank effect
_TOKEN = "1000"


@dataclass(frozen=True)
class ServerConfig:
    """One server start's flags."""
    max_loras: int = 1
    max_lora_rank: int = PROBE_RANK
    max_cpu_loras: int | None = None
    max_num_seqs: int = 256


@dataclass(frozen=True)
class Point:
    """One measurement: its kind, the server it needs, its parameters; ``key`` names it in the state file."""
    kind: str
    server: ServerConfig
    params: tuple = field(default=())

    @property
    def key(self) -> str:
        s = self.server
        return f"{self.kind}|{s.max_loras}|{s.max_lora_rank}|{s.max_cpu_loras}|" + ",".join(f"{k}={v}" for k, v in self.params)


def plan_points(budget_minutes: float, time_scale: float, seed: int = 0) -> list[Point]:
    """The points to measure, grouped by server (in run order: points that share a server are adjacent,
    so each server starts once). A budget below 1 minute takes the short grid, 10 minutes or more the
    big one. Decode batches run up to ``MAX_BATCH`` (vLLM's default max_num_seqs, which the servers
    measured run with): a server with a larger max_num_seqs gets the table's last segment extrapolated."""
    if not budget_minutes > 0:
        raise InputError("budget_minutes", f"must be > 0, got {budget_minutes!r}")
    big, short = budget_minutes >= 10, budget_minutes < 1
    rng = random.Random(seed)
    if short:
        kv_grid = [(64, 16), (48, 32)]
        batches, long_batches, prompts = [1, 32, 128, 192, MAX_BATCH], [8, 32], [64, 1536, 3000, 7000]
        adapters, load_ranks = [1, 8], (8, 32)
    else:
        kv_grid = [(32, 8), (64, 16), (48, 32), (512, 64)] + ([(16, 32), (96, 16), (8, 64)] if big else [])
        batches = [1, 8, 24, 48, 96, 160, 200, MAX_BATCH] + ([64, 128] if big else [])
        long_batches = [8, 24, 48]
        prompts = [64, 512, 1536, 3000, 5000, 7000] + ([256, 1024, 2000, 10000] if big else [])
        adapters, load_ranks = [1, 4, 8, 16], (8, 16, 32)
    rng.shuffle(prompts)  # a fixed order that is not monotone (drift does not fake a slope)
    batches = sorted(batches)
    rank_batches = [batches[1], batches[-1]]  # the rank factor's intercept and slope
    dec = lambda srv, n, prompt=PROMPT_LEN: Point("decode", srv, (("n", n), ("prompt", prompt),  # noqa: E731
                                                                  ("output", OUTPUT_LEN)))
    base = ServerConfig(1, PROBE_RANK, 1)
    wide, wide_hi = ServerConfig(WIDE_SLOTS, PROBE_RANK, WIDE_SLOTS), ServerConfig(WIDE_SLOTS, HIGH_RANK, WIDE_SLOTS)
    hi = ServerConfig(1, HIGH_RANK, 4)
    pts = [Point("kv", base)]
    pts += [dec(base, n) for n in batches]
    # a second context length (the attention term), at batches whose prompts take well under OUTPUT_LEN steps
    pts += [dec(base, n, LONG_CTX) for n in long_batches]
    pts += [Point("prefill", base, (("prompt", p),)) for p in prompts]
    pts += [Point("kv", ServerConfig(n, r, n)) for n, r in kv_grid]
    # slots (rank 8 and HIGH_RANK): the per-token-per-slot term and the rank factor; one slot at HIGH_RANK:
    # the rank factor's share of the LoRA base and per-token terms
    pts += [Point("kv", wide_hi), Point("slots", wide_hi, (("n", SLOT_BATCH), ("prompt", PROMPT_LEN),
                                                             ("output", OUTPUT_LEN)))]
    pts += [Point("kv", wide), Point("slots", wide, (("n", SLOT_BATCH), ("prompt", PROMPT_LEN),
                                                     ("output", OUTPUT_LEN)))]
    n_ref = 32 if short else 48
    pts += [Point("lora", wide, (("n", n_ref), ("k", k), ("prompt", PROMPT_LEN), ("output", OUTPUT_LEN)))
            for k in adapters]
    pts += [dec(hi, n) for n in rank_batches]
    pts += [Point("loading", hi, (("rank", r),)) for r in load_ranks]
    return pts


# ---- the client ---------------------------------------------------------------------------------
def _stream(host: str, port: int, model: str, prompt_len: int, max_tokens: int, t0: float, stream: bool = True,
            sent: threading.Event | None = None) -> list[float]:
    """One completion; the wall times (s since t0) of its tokens (streamed), or none (a whole response)."""
    body = json.dumps({"model": model, "prompt": [int(_TOKEN)] * prompt_len, "max_tokens": max_tokens,
                       "ignore_eos": True, "stream": stream, "temperature": 0})
    conn = http.client.HTTPConnection(host, port, timeout=600)
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        if sent is not None:
            sent.set()
        resp = conn.getresponse()
        if resp.status != 200:
            raise PackerError(f"the server answered HTTP {resp.status}: {resp.read()[:200]!r}")
        if not stream:
            resp.read()
            return []
        times = []
        while True:
            line = resp.readline()
            if not line:
                break
            if line.startswith(b"data: {"):
                times.append(time.perf_counter() - t0)
        return times
    finally:
        if sent is not None:
            sent.set()
        conn.close()


def _concurrent(port: int, models: list[str], prompt_len: int, max_tokens: int) -> list[list[float]]:
    """``len(models)`` concurrent completions; the token times of the ``PROBES`` sent first and the
    ``PROBES`` sent last, which stream (the others are whole responses: a batch of hundreds costs the
    client and the server little besides the steps measured). Each group is sent before the next starts,
    so the first probes are the first to finish and the last ones the last to start decoding."""
    n = len(models)
    front = list(range(min(PROBES, n)))
    back = list(range(max(len(front), n - PROBES), n))
    groups = [front, [i for i in range(len(front), n) if i not in back], back]
    out: list = [[] for _ in range(n)]
    errors: list = []
    t0 = time.perf_counter()

    def go(i, stream, sent):
        try:
            out[i] = _stream("127.0.0.1", port, models[i], prompt_len, max_tokens, t0, stream, sent)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = []
    for g, group in enumerate(groups):
        sent = [threading.Event() for _ in group]
        for i, ev in zip(group, sent):
            threads.append(threading.Thread(target=go, args=(i, g != 1, ev), daemon=True))
            threads[-1].start()
        for ev in sent:
            ev.wait(60)
    for t in threads:
        t.join()
    if errors:
        raise PackerError(f"a measurement request failed: {errors[0]}")
    return [out[i] for i in front + back]


def _mean_itl_ms(streams: list[list[float]], scale: float) -> float:
    """Mean inter-token time while the whole batch decodes: the gaps between the last first-token and the
    first last-token of all streams (earlier gaps hold the others' prefill chunks, later ones a shrinking
    batch); every gap if that window holds none."""
    streams = [s for s in streams if s]
    start, end = max(s[0] for s in streams), min(s[-1] for s in streams)
    gaps = [g for s in streams if len(s) > 2 for g in _window_gaps(s, start, end)]
    if not gaps:
        gaps = [g for s in streams if len(s) > 2 for g in np.diff(s[1:])]
    return float(np.mean(gaps)) * 1000 * scale


def _window_gaps(s: list[float], start: float, end: float) -> list[float]:
    t = np.asarray(s)
    t = t[(t > start) & (t <= end)]
    return list(np.diff(t))


def _measure(p: Point, port: int, model: str, names: list[str], scale: float) -> dict:
    d = dict(p.params)
    if p.kind in ("decode", "slots", "lora"):
        models = [model] * d["n"] if p.kind != "lora" else [names[i % d["k"]] for i in range(d["n"])]
        runs = [_mean_itl_ms(_concurrent(port, models, d["prompt"], d["output"]), scale) for _ in range(REPEATS)]
        return {"mean_itl_ms": float(np.median(runs)), "runs_itl_ms": runs}
    if p.kind == "prefill":
        ttft = [_concurrent(port, [model], d["prompt"], 1)[0][0] * 1000 * scale for _ in range(PREFILL_REPEATS)]
        return {"ttft_ms": float(np.min(ttft)), "runs_ttft_ms": ttft}
    if p.kind == "loading":
        if len(names) < 2:
            raise PackerError(f"the loading measurement needs two adapters of rank {d['rank']} to serve, "
                              f"got {len(names)}; add them to --adapters")
        runs = []
        for i in range(min(LOAD_REPEATS, len(names) // 2)):  # a fresh pair of adapters each time
            a, b = names[2 * i], names[2 * i + 1]
            cold = _concurrent(port, [a], 16, 1)[0][0]
            _concurrent(port, [b], 16, 1)          # a leaves the one GPU slot, stays in the CPU cache
            cpu = _concurrent(port, [a], 16, 1)[0][0]
            warm = _concurrent(port, [a], 16, 1)[0][0]
            runs.append([cold * 1000 * scale, cpu * 1000 * scale, warm * 1000 * scale])
        cold, cpu, warm = np.min(np.array(runs), axis=0)  # the fastest of each: delays only add
        return {"cold_ms": float(cold), "cpu_ms": float(cpu), "warm_ms": float(warm), "runs_ms": runs}
    raise ValueError(p.kind)


# ---- state --------------------------------------------------------------------------------------
def read_state(path: str | os.PathLike) -> dict[str, dict]:
    """{point key: record} of the measurements in the state file (none if there is no file; a torn last
    line, from a run killed mid-write, is ignored)."""
    out = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        out[rec["key"]] = rec
    return out


def _append(path: Path, rec: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(rec, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def run_plan(points: list[Point], template: str, *, model_name: str, state_path: str | os.PathLike,
             time_scale: float = 1.0, adapter_paths: Mapping[str, str] | None = None,
             model_config: Mapping | None = None, health_timeout_s: float = 600.0,
             progress: Callable[[str], None] = print) -> dict[str, dict]:
    """Measure every point not yet in the state file; returns every record (old and new)."""
    state_path = Path(state_path)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_state(state_path)
    todo = [p for p in points if p.key not in done]
    progress(f"calibrate: {len(points)} points, {len(points) - len(todo)} already measured ({state_path})")
    with tempfile.TemporaryDirectory(prefix="packer-calibrate-") as tmp:
        if adapter_paths is None:
            ranks = {f"cal-r{r}-{i}": r for r in (8, 16, HIGH_RANK) for i in range(DUMMY_PER_RANK)}
            adapter_paths = write_dummy_adapters(Path(tmp) / "adapters", ranks, model_config)
        ranks_of = {n: adapter_rank(p) for n, p in adapter_paths.items()}
        by_rank: dict[int, list[str]] = {}
        for name, r in ranks_of.items():
            by_rank.setdefault(r, []).append(name)
        i = 0
        while i < len(todo):
            cfg = todo[i].server
            j = i
            while j < len(todo) and todo[j].server == cfg:
                j += 1
            group, i = todo[i:j], j
            port = free_port()
            values = {"port": port, "max_loras": cfg.max_loras, "max_cpu_loras": cfg.max_cpu_loras or cfg.max_loras,
                      "max_lora_rank": cfg.max_lora_rank, "max_num_seqs": cfg.max_num_seqs,
                      "max_num_batched_tokens": STEP_TOKENS, "gpu_memory_utilization": 0.9,
                      "lora_modules": {n: adapter_paths[n] for n, r in ranks_of.items() if r <= cfg.max_lora_rank},
                      "time_scale": time_scale, "profile": ""}
            server = LaunchedServer(fill_template(template, values), f"http://127.0.0.1:{port}",
                                    Path(tmp) / f"server-{i}.log")
            try:
                try:
                    server.start(health_timeout_s)
                    kv, refused = server.kv_capacity_tokens(), None
                except RefusedStart as e:
                    kv, refused = None, e.reason or f"exit code {e.code}"
                for p in group:
                    if p.kind == "kv":
                        rec = {"kv_cache_tokens": kv, "refused": refused}
                    elif refused is not None:
                        raise PackerError(f"the server for {p.kind} measurements did not start "
                                          f"(max_loras {cfg.max_loras}, max_lora_rank {cfg.max_lora_rank}): {refused}")
                    else:
                        names = by_rank.get(dict(p.params).get("rank", PROBE_RANK)) or sorted(adapter_paths)
                        rec = _measure(p, port, model_name, names, time_scale)
                    rec.update(key=p.key, kind=p.kind, max_loras=cfg.max_loras, max_lora_rank=cfg.max_lora_rank,
                               **dict(p.params))
                    _append(state_path, rec)
                    done[p.key] = rec
                    progress(f"[{len(done)}/{len(points)}] {p.kind} {dict(p.params) or ''} "
                             f"max_loras={cfg.max_loras} rank={cfg.max_lora_rank}: "
                             + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in rec.items() if k.endswith(("_ms", "tokens", "refused"))
                                         and not k.startswith("runs_")))
            finally:
                server.stop()
    return done


# ---- fitting ------------------------------------------------------------------------------------
def fit_live_profile(records: Mapping[str, dict], *, model_name: str, gpu_name: str, gpu_memory_gib: float,
                     kv_bytes_per_token: int, max_model_len: int, time_scale: float) -> dict:
    """The profile dict (with ``fit_report``, ``provenance: measured``) from the run's records."""
    from .io import table_from_records

    recs = list(records.values())
    of = lambda kind: [r for r in recs if r["kind"] == kind]  # noqa: E731
    missing = [k for k in ("kv", "decode", "prefill", "lora", "slots", "loading") if not of(k)]
    if missing:
        raise PackerError(f"no {', '.join(missing)} measurements to fit; rerun calibrate with a larger budget")

    kv_rows = [{"status": "ok" if r["kv_cache_tokens"] else "oom_no_kv_blocks", "max_loras": r["max_loras"],
                "max_lora_rank": r["max_lora_rank"], "kv_cache_tokens": r["kv_cache_tokens"] or 0,
                "kv_avail_gib_reported": None} for r in of("kv")]
    memory, memory_report = fit_memory(table_from_records(kv_rows), kv_bytes_per_token, max_model_len,
                                       gpu_memory_gib=gpu_memory_gib)

    sched = SchedulerFit(0.0, 0.0, 0.0)
    dec = [r for r in of("decode") if r["max_lora_rank"] == PROBE_RANK]
    dec_hi = [r for r in of("decode") if r["max_lora_rank"] != PROBE_RANK]
    steps = table_from_records([{"probe": "decode", "mean_itl_ms": r["mean_itl_ms"], "mean_running": r["n"],
                                 "mean_waiting": 0, "input_tokens_per_req": r["prompt"],
                                 "output_tokens_per_req": r["output"], "preemptions": 0, "max_num_seqs": r["n"],
                                 "output_len": r["output"]} for r in dec])
    top = max(r["n"] for r in dec)
    knots = ((1, top / 4, top), (1, top / 8, top / 2, top), (1, top / 2, top), (1, top / 8, top / 2, 3 * top / 4, top))
    decode, decode_report = fit_decode(steps, sched, knot_candidates=knots)
    at = lambda r: float(decode.gpu_ms(r["n"], r["prompt"] + r["output"] / 2))  # noqa: E731 - rank 8, one slot

    pre = sorted(of("prefill"), key=lambda r: r["prompt"])
    L = np.array([r["prompt"] for r in pre], float)
    chunks = np.ceil(L / STEP_TOKENS)
    per_chunk = float(np.interp(1, decode.batch, decode.ms))  # a step of one sequence, measured by the decode probe
    ttft = np.array([r["ttft_ms"] for r in pre], float)
    a, per_token = nnls(np.column_stack([np.ones(len(L)), L]), ttft - per_chunk * chunks)
    prefill_report = {"rows_used": len(L), "ttft_fit": error_stats(ttft, a + per_chunk * chunks + per_token * L),
                      "intercept_ms": float(a), "per_step_ms": per_chunk,
                      "notes": [f"NNLS of the TTFT of lone one-token requests (the fastest of {PREFILL_REPEATS}) "
                                f"less steps x the one-sequence step of the decode table (steps = ceil(prompt_len / "
                                f"{STEP_TOKENS}) prefill chunks) on [1, prompt_len]; the slope less the LoRA "
                                "per-token terms at one slot (see slots) is prefill_ms_per_token, the intercept the "
                                "HTTP round trip"]}

    # The LoRA terms of a step (the twin's): rank_factor(max_lora_rank) * (lora_ms_base + (lora_ms_per_token
    # + lora_ms_per_token_slot * max_loras) * n). At rank 8 and one slot they are in the decode table; the
    # slot probe at rank 8 gives the per-slot term, the one at HIGH_RANK the rank factor, and the one-slot
    # decode at HIGH_RANK the base and per-token terms (its excess over the table is (factor - 1) x them).
    slots_lo = [r for r in of("slots") if r["max_lora_rank"] == PROBE_RANK]
    slots_hi = [r for r in of("slots") if r["max_lora_rank"] != PROBE_RANK]
    if not slots_lo:
        raise PackerError(f"no slot measurement at max_lora_rank {PROBE_RANK} to fit; rerun calibrate")
    slot = slots_lo[0]
    per_slot = lambda r, base: (r["mean_itl_ms"] - base) / (r["n"] * (r["max_loras"] - 1))  # noqa: E731
    per_token_slot = max(0.0, per_slot(slot, at(slot)))
    lora_base = lora_token = slope = 0.0
    rank_note = f"no measurements at a max_lora_rank above {PROBE_RANK}: lora_rank_slope 0"
    factor = None
    if dec_hi and slots_hi and per_token_slot > 0:
        n_hi = np.array([r["n"] for r in dec_hi], float)
        excess = np.array([r["mean_itl_ms"] - at(r) for r in dec_hi])
        x0, x1 = nnls(np.column_stack([np.ones(len(n_hi)), n_hi]), excess) if len(set(n_hi)) > 1 \
            else (max(0.0, float(np.mean(excess))), 0.0)
        sh = slots_hi[0]
        factor = per_slot(sh, at(sh) + x0 + x1 * sh["n"]) / per_token_slot
        hi_rank = sh["max_lora_rank"]
        if factor - 1 > RANK_FACTOR_MIN:
            slope = (factor - 1) * PROBE_RANK / (hi_rank - PROBE_RANK)
            lora_base, lora_token = x0 / (factor - 1), max(0.0, x1 / (factor - 1) - per_token_slot)
            rank_note = (f"rank factor {factor:.4g} at max_lora_rank {hi_rank} (slot probes at {PROBE_RANK} and "
                         f"{hi_rank}); lora_ms_base and lora_ms_per_token = the one-slot excess at {hi_rank} over "
                         f"the table / (factor - 1), taken out of the table")
        else:
            rank_note = (f"rank factor {factor:.4g} at max_lora_rank {hi_rank} is within {RANK_FACTOR_MIN:g} of 1: "
                         "no rank effect (lora_rank_slope 0), the LoRA base and per-token terms stay in the table")
    # the table without the LoRA terms at one slot (linear in n: exact at the knots)
    knots_n = np.asarray(decode.batch, float)
    table = np.asarray(decode.ms, float) - (lora_base + (lora_token + per_token_slot) * knots_n)
    slots_report = {"per_token_slot_ms": per_token_slot, "rank_factor_at_high_rank": factor,
                    "probes": [{k: r[k] for k in ("n", "max_loras", "max_lora_rank", "mean_itl_ms")}
                               for r in slots_lo + slots_hi + dec_hi],
                    "notes": [f"lora_ms_per_token_slot = (ITL at max_loras {slot['max_loras']} - the table at one "
                              f"slot) / (n * (slots - 1))", rank_note]}

    params = {"lora_ms_base": lora_base, "lora_ms_per_token": lora_token, "lora_ms_per_token_slot": per_token_slot,
              "lora_rank_ref": PROBE_RANK, "lora_rank_slope": slope}
    lora_rows = [{"experiment": "lora_decode", "status": "ok", "preemptions": 0, "mean_itl_ms": r["mean_itl_ms"],
                  "mean_running": r["n"], "mean_waiting": 0, "input_tokens_per_req": r["prompt"],
                  "output_tokens_per_req": r["output"], "mean_loras_by_batch": float(r["k"]),
                  "n_adapters_used": r["k"], "output_len": r["output"], "max_loras": r["max_loras"]}
                 for r in of("lora")]
    lora_rows.append(dict(lora_rows[-1], mean_loras_by_batch=float("nan")))  # the occupancy check's row
    lora_rows.append(dict(lora_rows[0], experiment="baseline_no_lora", mean_itl_ms=slot["mean_itl_ms"],
                          mean_running=slot["n"], mean_loras_by_batch=float("nan"), n_adapters_used=0))
    lora, lora_report = fit_lora_overhead(table_from_records(lora_rows), decode, sched, params,
                                          slots=of("lora")[0]["max_loras"], rank=PROBE_RANK)

    load_rows = [{"status": "ok", "adapter_rank": r["rank"], "max_lora_rank": r["max_lora_rank"],
                  "cpu_to_gpu_load_mean_ms": max(0.0, r["cpu_ms"] - r["warm_ms"]),
                  "disk_load_median_ms": max(0.0, r["cold_ms"] - r["cpu_ms"]),
                  "disk_load_mean_ms": max(0.0, r["cold_ms"] - r["cpu_ms"]),
                  "disk_load_max_ms": max(0.0, r["cold_ms"] - r["cpu_ms"])} for r in of("loading")]
    loading, loading_report = fit_loading(table_from_records(load_rows))

    profile = {
        "name": f"{model_name}@{gpu_name}", "model": model_name, "gpu": gpu_name, "provenance": "measured",
        "description": (f"{model_name} on {gpu_name}; fitted by packer calibrate from live measurements "
                        f"({len(recs)} points, time scale {time_scale:g})"),
        "memory": memory,
        "step": {"decode_batch": list(decode.batch), "decode_ms": list(np.maximum.accumulate(table)),
                 "prefill_ms_per_token": max(0.0, float(per_token) - lora_token - per_token_slot), **params,
                 "lora_ms_per_adapter": lora["lora_ms_per_adapter"],
                 "attention_ms_per_kv_token": decode.ms_per_context_token, "decode_ctx_ref": decode.ctx_ref},
        "scheduler": {"ms_base": 0.0, "ms_per_running": 0.0, "ms_per_waiting": 0.0},
        "loading": loading,
        "client": {"max_waiting": 25000, "output_len_scale": 1.0},
        "fit_report": {
            "memory": memory_report, "decode": decode_report, "prefill": prefill_report, "slots": slots_report,
            "lora": lora_report, "loading": loading_report,
            "scheduler": {"notes": ["not separable from the client's view: folded into the decode table "
                                    "(its running term) and left at zero"]},
            "notes": ["decode measured with LoRA on (max_loras 1, rank 8, base-model requests); the LoRA "
                      "terms at one slot are taken out of the table (see fit_report.slots)",
                      "client: max_waiting 25000 and output_len_scale 1 (ignore_eos requests)"],
            "sources": ["packer calibrate (live)"],
        },
    }
    return rounded(profile)


def loop_scenarios(n: int, seed: int = 0) -> list[dict]:
    """``n`` seeded twin scenarios for checking a calibrated profile against the one it was measured from
    (profile left out): slots, ranks, adapters, rates and lengths drawn over the planner's usual range,
    some of them overloaded or not fitting memory."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        slots = rng.choice([4, 8, 16, 32, 64, 96, 128])
        rank = rng.choice([8, 16, 32])
        n_ad = rng.choice([8, 16, 32, 64, 128])
        rate = rng.choice([0.05, 0.1, 0.2, 0.4, 0.8]) * 32 / n_ad
        out.append({"server": {"max_loras": slots, "max_cpu_loras": max(slots, n_ad), "max_lora_rank": rank,
                               "max_num_seqs": 256, "max_num_batched_tokens": 2048},
                    "adapters": [{"id": f"a{j}", "rank": rng.choice([r for r in (8, 16, 32) if r <= rank]),
                                  "rate": rate} for j in range(n_ad)],
                    "lengths": {"input_mean": rng.choice([120, 220, 400]), "output_mean": rng.choice([100, 200, 300])},
                    "arrivals": "poisson", "duration_s": 300, "seed": i})
    return out


def compare_profiles(original, recovered, scenarios: list[dict]) -> dict:
    """Both profiles on each scenario (the twin): throughput error (%), starvation and memory verdicts."""
    from ..profile import load_profile
    from ..twin import simulate

    a, b = load_profile(original), load_profile(recovered)
    rows = []
    for sc in scenarios:
        ra, rb = simulate(dict(sc, profile=a.name), profile=a), simulate(dict(sc, profile=a.name), profile=b)
        err = (100 * abs(rb.throughput_tps - ra.throughput_tps) / ra.throughput_tps) if ra.throughput_tps > 0 else 0.0
        rows.append({"throughput_original": ra.throughput_tps, "throughput_recovered": rb.throughput_tps,
                     "err_pct": err, "starved": [ra.starved, rb.starved],
                     "memory_error": [ra.memory_error is not None, rb.memory_error is not None]})
    errs = [r["err_pct"] for r in rows if r["throughput_original"] > 0]
    return {"scenarios": len(rows), "throughput_mape_pct": float(np.mean(errs)) if errs else 0.0,
            "throughput_max_err_pct": float(np.max(errs)) if errs else 0.0,
            "starvation_agree": sum(r["starved"][0] == r["starved"][1] for r in rows),
            "memory_agree": sum(r["memory_error"][0] == r["memory_error"][1] for r in rows), "rows": rows}
