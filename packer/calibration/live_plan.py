"""Calibrating a profile from live measurements (``packer calibrate``): a measurement plan, a resumable
runner that takes it through the live harness (servers from a launch template, streamed completions),
and the measurements turned into the tables the fit stages take (memory, step, lora, loading).

Measurements (time in simulated/real ms = wall ms x time scale):
- ``kv``: one server start per (max_loras, max_lora_rank): the KV tokens the server logged, or refused.
- ``decode``: N concurrent requests (fixed prompt and output lengths) to the base model: mean ITL.
- ``slots``: the same at max_loras = the LoRA server's slots: the per-token-per-slot LoRA term.
- ``prefill``: lone requests of one output token: TTFT over prompt length.
- ``lora``: N concurrent requests over k distinct adapters: ITL increase per distinct adapter.
- ``loading``: first request to a cold adapter (disk -> CPU -> GPU), to one in the CPU cache only
  (CPU -> GPU) and to a warm one, with one GPU slot.

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

PROBE_RANK = 8
LORA_SLOTS = 16
PROMPT_LEN = 128
OUTPUT_LEN = 64
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
    """The points to measure, grouped by server (in run order). A budget below 2 minutes takes the
    short grid; the sizes grow with the budget."""
    if not budget_minutes > 0:
        raise InputError("budget_minutes", f"must be > 0, got {budget_minutes!r}")
    big, short = budget_minutes >= 10, budget_minutes < 1
    rng = random.Random(seed)
    if short:
        kv_grid = [(1, 8), (64, 16), (48, 32), (128, 32)]
        batches, prompts, adapters, load_ranks = [1, 16, 64], [64, 512, 1536], [1, 8], (8, 32)
    else:
        kv_grid = [(1, 8), (32, 8), (64, 16), (48, 32), (128, 32), (512, 64)] + \
            ([(16, 32), (96, 16), (8, 64)] if big else [])
        batches = [1, 8, 24, 48, 96] + ([160, 256] if big else [])
        prompts = [64, 256, 512, 1024, 1536] + ([128, 768, 2000] if big else [])
        adapters, load_ranks = [1, 4, 8, 16], (8, 16, 32)
    rng.shuffle(prompts)  # a fixed order that is not monotone (drift does not fake a slope)
    base = ServerConfig(1, PROBE_RANK, 1)
    lora = ServerConfig(LORA_SLOTS, PROBE_RANK, LORA_SLOTS)
    pts = [Point("kv", ServerConfig(n, r, n)) for n, r in kv_grid]
    pts += [Point("decode", base, (("n", n), ("prompt", PROMPT_LEN), ("output", OUTPUT_LEN))) for n in batches]
    long_ctx = 1024  # a second context length: the attention term
    pts += [Point("decode", base, (("n", n), ("prompt", long_ctx), ("output", OUTPUT_LEN))) for n in batches[-2:]]
    pts += [Point("prefill", base, (("prompt", p),)) for p in prompts]
    n_ref = 32 if short else 48
    pts += [Point("slots", lora, (("n", n_ref), ("prompt", PROMPT_LEN), ("output", OUTPUT_LEN)))]
    pts += [Point("lora", lora, (("n", n_ref), ("k", k), ("prompt", PROMPT_LEN), ("output", OUTPUT_LEN)))
            for k in adapters]
    for r in load_ranks:
        pts.append(Point("loading", ServerConfig(1, 32, 4), (("rank", r),)))
    return pts


# ---- the client ---------------------------------------------------------------------------------
def _stream(host: str, port: int, model: str, prompt_len: int, max_tokens: int, t0: float) -> list[float]:
    """One streamed completion; the wall times (s since t0) of its tokens."""
    body = json.dumps({"model": model, "prompt": [int(_TOKEN)] * prompt_len, "max_tokens": max_tokens,
                       "ignore_eos": True, "stream": True, "temperature": 0})
    conn = http.client.HTTPConnection(host, port, timeout=600)
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise PackerError(f"the server answered HTTP {resp.status}: {resp.read()[:200]!r}")
        times = []
        while True:
            line = resp.readline()
            if not line:
                break
            if line.startswith(b"data: {"):
                times.append(time.perf_counter() - t0)
        return times
    finally:
        conn.close()


def _concurrent(port: int, models: list[str], prompt_len: int, max_tokens: int) -> list[list[float]]:
    out: list = [None] * len(models)
    errors: list = []
    t0 = time.perf_counter()

    def go(i):
        try:
            out[i] = _stream("127.0.0.1", port, models[i], prompt_len, max_tokens, t0)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(len(models))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise PackerError(f"a measurement request failed: {errors[0]}")
    return out


def _mean_itl_ms(streams: list[list[float]], scale: float) -> float:
    gaps = [np.diff(s[1:]) for s in streams if len(s) > 2]  # from the second token: the batch is decoding
    return float(np.mean(np.concatenate(gaps))) * 1000 * scale


def _measure(p: Point, port: int, model: str, names: list[str], scale: float) -> dict:
    d = dict(p.params)
    if p.kind in ("decode", "slots"):
        s = _concurrent(port, [model] * d["n"], d["prompt"], d["output"])
        return {"mean_itl_ms": _mean_itl_ms(s, scale)}
    if p.kind == "lora":
        s = _concurrent(port, [names[i % d["k"]] for i in range(d["n"])], d["prompt"], d["output"])
        return {"mean_itl_ms": _mean_itl_ms(s, scale)}
    if p.kind == "prefill":
        ttft = [_concurrent(port, [model], d["prompt"], 1)[0][0] * 1000 * scale for _ in range(3)]
        return {"ttft_ms": float(np.median(ttft))}
    if p.kind == "loading":
        a, b = names[0], names[1]
        cold = _concurrent(port, [a], 16, 1)[0][0]
        _concurrent(port, [b], 16, 1)          # a leaves the one GPU slot, stays in the CPU cache
        cpu = _concurrent(port, [a], 16, 1)[0][0]
        warm = _concurrent(port, [a], 16, 1)[0][0]
        return {"cold_ms": cold * 1000 * scale, "cpu_ms": cpu * 1000 * scale, "warm_ms": warm * 1000 * scale}
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
            ranks = {f"cal-r{r}-{i}": r for r in (8, 16, 32) for i in range(LORA_SLOTS)}
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
                      "max_num_batched_tokens": 2048, "gpu_memory_utilization": 0.9,
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
                                         for k, v in rec.items() if k.endswith(("_ms", "tokens", "refused"))))
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
    dec = of("decode")
    steps = table_from_records([{"probe": "decode", "mean_itl_ms": r["mean_itl_ms"], "mean_running": r["n"],
                                 "mean_waiting": 0, "input_tokens_per_req": r["prompt"],
                                 "output_tokens_per_req": r["output"], "preemptions": 0, "max_num_seqs": r["n"],
                                 "output_len": r["output"]} for r in dec])
    top = max(r["n"] for r in dec)
    knots = tuple(k for k in ((1, top / 4, top), (1, top / 8, top / 2, top), (1, top / 2, top)))
    decode, decode_report = fit_decode(steps, sched, knot_candidates=knots)

    pre = sorted(of("prefill"), key=lambda r: r["prompt"])
    L = np.array([r["prompt"] for r in pre], float)
    ttft = np.array([r["ttft_ms"] for r in pre], float)
    a, per_token = nnls(np.column_stack([np.ones(len(L)), L]), ttft)
    prefill_report = {"rows_used": len(L), "ttft_fit": error_stats(ttft, a + per_token * L),
                      "intercept_ms": float(a),
                      "notes": ["NNLS of the TTFT of lone one-token requests on [1, prompt_len]; the slope is "
                                "prefill_ms_per_token, the intercept one step plus the HTTP round trip"]}

    slot = of("slots")[0]
    n_ref = slot["n"]
    base_at = float(decode.gpu_ms(n_ref, slot["prompt"] + slot["output"] / 2))
    per_token_slot = max(0.0, (slot["mean_itl_ms"] - base_at) / (n_ref * (slot["max_loras"] - 1)))
    slots_report = {"itl_ms_at_slots": slot["mean_itl_ms"], "decode_table_ms": base_at,
                    "n": n_ref, "slots": slot["max_loras"],
                    "notes": ["(ITL with max_loras slots - the decode table at max_loras 1) / (n * (slots - 1))"]}

    params = {"lora_ms_base": 0.0, "lora_ms_per_token": 0.0, "lora_ms_per_token_slot": per_token_slot,
              "lora_rank_ref": PROBE_RANK, "lora_rank_slope": 0.0}
    lora_rows = [{"experiment": "lora_decode", "status": "ok", "preemptions": 0, "mean_itl_ms": r["mean_itl_ms"],
                  "mean_running": r["n"], "mean_waiting": 0, "input_tokens_per_req": r["prompt"],
                  "output_tokens_per_req": r["output"], "mean_loras_by_batch": float(r["k"]),
                  "n_adapters_used": r["k"], "output_len": r["output"], "max_loras": r["max_loras"]}
                 for r in of("lora")]
    lora_rows.append(dict(lora_rows[-1], mean_loras_by_batch=float("nan")))  # the occupancy check's row
    lora_rows.append(dict(lora_rows[0], experiment="baseline_no_lora", mean_itl_ms=slot["mean_itl_ms"],
                          mean_loras_by_batch=float("nan"), n_adapters_used=0))
    lora, lora_report = fit_lora_overhead(table_from_records(lora_rows), decode, sched, params,
                                          slots=LORA_SLOTS, rank=PROBE_RANK)

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
        "step": {"decode_batch": list(decode.batch), "decode_ms": list(np.maximum.accumulate(decode.ms)),
                 "prefill_ms_per_token": float(per_token), **params,
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
            "notes": ["decode measured with LoRA on (max_loras 1, rank 8): the table holds the LoRA base and "
                      "per-token terms (lora_ms_base = lora_ms_per_token = 0); lora_rank_slope not measured (0)",
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
