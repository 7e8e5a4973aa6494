"""Fit packer's performance profiles from the agullo-h100 micro-benchmarks.

    python calibrate/fit_profiles.py [--data ../shared/data/agullo-h100] [--out packer/profiles]
                                     [--e2e calibrate/e2e_params.json]

Writes ``<out>/<model>@h100-64gb.json`` for Llama-3.1-8B-Instruct and Qwen-2.5-7B-Instruct and prints
every coefficient with its meaning and the fit error of each part. Parts and their sources:

  memory     mb_kv_capacity.csv           least squares on the ok server starts
  scheduler  mb_scheduler_overhead.csv    non-negative least squares (Qwen rescaled, see below)
  decode     mb_base_step_latency.csv     monotone linear spline + KV-context term, probe=decode
  prefill    mb_base_step_latency.csv     probe=prefill (Llama; Qwen scaled by parameter count)
  lora       mb_lora_decode_overhead.csv  least squares on the ITL increase: per-distinct-adapter cost
  loading    mb_adapter_loading.csv       per-rank means
  e2e        calibrate/e2e_params.json    calibrated end-to-end by calibrate/fit_e2e.py (or defaults):
                                          the LoRA token costs (lora_ms_base, lora_ms_per_token,
                                          lora_ms_per_token_slot), rank scaling and client parameters

The LoRA token cost depends on the number of reserved slots (max_loras); the LoRA micro-benchmark
ran with max_loras=300 only, so it pins the per-distinct-adapter cost but not the token terms.

Deterministic: no randomness, and every number written is rounded to 6 significant digits.
Needs numpy, pandas and scipy (dev dependencies; the runtime package does not).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy.optimize import nnls

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from packer.files import dumps, json_ready, read_json  # noqa: E402
from packer.profile import GIB, MemoryModel, Profile  # noqa: E402

DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "agullo-h100"
DEFAULT_OUT_DIR = REPO_ROOT / "packer" / "profiles"
DEFAULT_E2E_PATH = REPO_ROOT / "calibrate" / "e2e_params.json"

GPU = "h100-64gb"
GPU_MEMORY_GIB = 64.0
GPU_MEMORY_UTILIZATION = 0.9          # every measured run
BLOCK_SIZE = 16
STEP_TOKEN_BUDGET = 2048              # max_num_batched_tokens in every measured run
LORA_PROBE_RANK = 8                   # max_lora_rank of the mb_lora_decode_overhead runs (run_dir _<seqs>_300_8_)
LORA_PROBE_SLOTS = 300                # max_loras of the mb_lora_decode_overhead runs (run_dir _<seqs>_300_8_)
MIN_PREFILL_STEPS = 20                # a prefill probe row needs this many engine steps to be usable
SCHEDULER_REFERENCE_MODEL = "llama-3.1-8b-instruct"   # the (unrecorded) model of mb_scheduler_overhead
PREFILL_REFERENCE_MODEL = "llama-3.1-8b-instruct"
# Candidate knots of the decode table; the set with the lowest leave-one-batch-size-out error wins.
DECODE_KNOT_CANDIDATES = (
    (1, 200, 1024),
    (1, 100, 400, 1024),
    (1, 100, 200, 400, 1024),
    (1, 100, 200, 400, 700, 1024),
)
SIG_DIGITS = 6

SOURCE_FILES = ("mb_kv_capacity.csv", "mb_base_step_latency.csv", "mb_lora_decode_overhead.csv",
                "mb_scheduler_overhead.csv", "mb_adapter_loading.csv")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    kv_bytes_per_token: int
    max_model_len: int
    params_billion: float


MODELS = (
    ModelSpec("llama-3.1-8b-instruct", "Llama-3.1-8B-Instruct", 131072, 131072, 8.0),
    ModelSpec("qwen-2.5-7b-instruct", "Qwen-2.5-7B-Instruct", 57344, 32768, 7.6),
)

E2E_KEYS = ("lora_ms_base", "lora_ms_per_token", "lora_ms_per_token_slot", "lora_rank_ref", "lora_rank_slope",
            "max_waiting", "output_len_scale")
_E2E_COMMON_DEFAULTS = {"lora_ms_base": 3.0, "lora_ms_per_token": 0.015, "lora_ms_per_token_slot": 0.0003,
                        "lora_rank_ref": 8, "lora_rank_slope": 0.3, "max_waiting": 25000}
E2E_DEFAULTS = {
    "llama-3.1-8b-instruct": dict(_E2E_COMMON_DEFAULTS, output_len_scale=0.99),
    "qwen-2.5-7b-instruct": dict(_E2E_COMMON_DEFAULTS, output_len_scale=0.96),
}

# One-line meaning of every coefficient, printed next to its value.
MEANINGS = {
    "non_kv_gib": "GiB taken before the KV cache: weights + CUDA graphs + activation peak",
    "slot_mib_base": "MiB per LoRA slot, rank-independent part",
    "slot_mib_per_rank": "MiB per LoRA slot per unit of max_lora_rank",
    "kv_bytes_per_token": "KV-cache bytes per token (architecture constant)",
    "max_model_len": "vLLM refuses to start if the KV cache holds fewer tokens",
    "decode_ms": "base-model GPU step time (ms) at decode_batch sequences, no LoRA",
    "prefill_ms_per_token": "extra GPU ms per prompt token in a step",
    "attention_ms_per_kv_token": "extra ms per KV token read by a decoding sequence, relative to decode_ctx_ref",
    "decode_ctx_ref": "mean context (tokens) of a decoding sequence at which decode_ms holds",
    "lora_ms_per_adapter": "extra ms per distinct adapter in the step (LoRA on)",
    "ms_base": "scheduler CPU ms per step, constant part",
    "ms_per_running": "scheduler CPU ms per step per running request",
    "ms_per_waiting": "scheduler CPU ms per step per waiting request",
    "cpu_to_gpu_ms": "ms to activate an adapter from the CPU cache into a GPU slot (stalls the step)",
    "disk_to_cpu_ms": "ms to read an adapter from disk into the CPU cache",
    "lora_ms_base": "extra ms per step whenever LoRA is enabled (at lora_rank_ref)",
    "lora_ms_per_token": "extra ms per token in the step (decode or prefill) with LoRA on (at lora_rank_ref)",
    "lora_ms_per_token_slot": "extra ms per token in the step per reserved LoRA slot (max_loras; at lora_rank_ref)",
    "lora_rank_ref": "max_lora_rank at which the LoRA coefficients hold",
    "lora_rank_slope": "relative LoRA cost change per lora_rank_ref of extra max_lora_rank",
    "max_waiting": "waiting-queue length at which the load generator stops sending",
    "output_len_scale": "mean generated / requested output tokens (early EOS)",
}


# ----------------------------------------------------------------------------------------------
# Small numeric helpers
# ----------------------------------------------------------------------------------------------

def rounded(obj: Any) -> Any:
    """obj as plain JSON values (``packer.files.json_ready``), every float rounded to SIG_DIGITS
    significant digits (keeps the JSON stable across BLAS builds)."""
    return json_ready(obj, digits=SIG_DIGITS)


def error_stats(measured, predicted) -> dict[str, float]:
    """MAE, MAPE (%), max |error| and R² of predicted against measured."""
    y, p = np.asarray(measured, float), np.asarray(predicted, float)
    ss_res, ss_tot = float(((y - p) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    return {
        "n": int(len(y)),
        "mae": float(np.abs(y - p).mean()),
        "mape_pct": float(100 * np.mean(np.abs(y - p) / np.abs(y))),
        "max_abs_err": float(np.abs(y - p).max()),
        "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
    }


def interp_linear(x, xs, ys):
    """np.interp with linear extrapolation on both ends (as the twin evaluates the decode table)."""
    x, xs, ys = np.asarray(x, float), np.asarray(xs, float), np.asarray(ys, float)
    y = np.interp(x, xs, ys)
    lo_slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    hi_slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    y = np.where(x < xs[0], ys[0] + lo_slope * (x - xs[0]), y)
    return np.where(x > xs[-1], ys[-1] + hi_slope * (x - xs[-1]), y)


# ----------------------------------------------------------------------------------------------
# Scheduler overhead (mb_scheduler_overhead.csv): ms = base + per_running * running + per_waiting * waiting
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SchedulerFit:
    ms_base: float
    ms_per_running: float
    ms_per_waiting: float

    def ms(self, running, waiting):
        return self.ms_base + self.ms_per_running * np.asarray(running) + self.ms_per_waiting * np.asarray(waiting)

    def scaled(self, factor: float) -> "SchedulerFit":
        return SchedulerFit(self.ms_base * factor, self.ms_per_running * factor, self.ms_per_waiting * factor)


def ols_summary(columns: dict[str, np.ndarray], y: np.ndarray) -> dict:
    """Unconstrained least squares with an intercept: coefficients, R² and MAE (for comparisons)."""
    X = np.column_stack([np.ones(len(y)), *columns.values()])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    stats = error_stats(y, X @ coef)
    return {"coef": dict(zip(["intercept", *columns], coef)), "r2": stats["r2"], "mae": stats["mae"]}


def fit_scheduler(sched: pd.DataFrame) -> tuple[SchedulerFit, dict]:
    """NNLS of sched_time_per_step_ms on [1, avg_batch_size, avg_waiting_queue]; checks richer forms."""
    y = sched["sched_time_per_step_ms"].to_numpy(float)
    running, waiting = sched["avg_batch_size"].to_numpy(float), sched["avg_waiting_queue"].to_numpy(float)
    X = np.column_stack([np.ones(len(y)), running, waiting])
    coef, _ = nnls(X, y)
    fit = SchedulerFit(*coef)
    stats = error_stats(y, X @ coef)

    # Do cpu_loras / gpu_loras explain more? (unconstrained least squares, for comparison only)
    cpu, gpu = sched["cpu_loras"].to_numpy(float), sched["gpu_loras"].to_numpy(float)
    base = {"running": running, "waiting": waiting}
    extended = {
        "ols_3_terms": ols_summary(base, y),
        "ols_plus_cpu_gpu_loras": ols_summary(dict(base, cpu_loras=cpu, gpu_loras=gpu), y),
        "ols_plus_waiting_x_lora_limited": ols_summary(dict(base, waiting_x_limited=waiting * (cpu > gpu)), y),
    }
    plus = extended["ols_plus_cpu_gpu_loras"]
    report = {
        "rows_used": int(len(y)), "rows_excluded": [], **stats,
        "extended_forms": extended,
        "notes": [
            "NNLS on all rows; the model of the runs is not recorded, taken as Llama-3.1-8B",
            f"cpu_loras and gpu_loras add explanatory power: R² {extended['ols_3_terms']['r2']:.3f} -> "
            f"{plus['r2']:.3f} (MAE {extended['ols_3_terms']['mae']:.3f} -> {plus['mae']:.3f} ms) with "
            f"{plus['coef']['cpu_loras']:+.4f} ms per served adapter and {plus['coef']['gpu_loras']:+.4f} ms "
            "per GPU slot: the scheduler scans the requests that the max_loras limit skips. The JSON keeps "
            "the 3-parameter form (schema), i.e. an average over the measured LoRA configurations",
        ],
    }
    return fit, report


def scheduler_scale_by_model(lora: pd.DataFrame, fit: SchedulerFit) -> tuple[dict[str, float], dict]:
    """Per-model factor for the scheduler fit, from sched_time_mean_ms of mb_lora_decode_overhead.

    ratio(model) = mean(measured / predicted) over that model's decode-probe rows; the factor is
    ratio(model) / ratio(reference model), so the reference model (the one mb_scheduler_overhead was
    measured on) keeps the fit as is.
    """
    rows = lora[lora["experiment"].isin(["baseline_no_lora", "lora_decode"]) & lora["sched_time_mean_ms"].notna()]
    ratio = {}
    for model, g in rows.groupby("model"):
        predicted = fit.ms(g["mean_running"], g["mean_waiting"])
        ratio[model] = float(np.mean(g["sched_time_mean_ms"] / predicted))
    ref = ratio[SCHEDULER_REFERENCE_MODEL]
    factors = {m: r / ref for m, r in ratio.items()}
    report = {
        "measured_over_predicted": ratio,
        "rows": {m: int((rows["model"] == m).sum()) for m in ratio},
        "notes": [
            f"sched_time_mean_ms of the decode probes in mb_lora_decode_overhead (no max_loras limit, "
            f"~2k waiting) is {ref:.2f}x what the fit predicts for {SCHEDULER_REFERENCE_MODEL}: the "
            "fit's costs come from LoRA-limited runs with many adapters",
            "each model's coefficients are multiplied by its measured/predicted ratio divided by "
            f"{SCHEDULER_REFERENCE_MODEL}'s (the model mb_scheduler_overhead is taken to be)",
        ],
    }
    return factors, report


# ----------------------------------------------------------------------------------------------
# Base decode step (mb_base_step_latency.csv, probe=decode)
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodeFit:
    batch: tuple[float, ...]
    ms: tuple[float, ...]
    ms_per_context_token: float    # extra ms per sequence per context token above ctx_ref (per KV token read)
    ctx_ref: float                 # mean context (prompt + half the output) the table stands for

    def table_ms(self, n_seqs):
        return interp_linear(n_seqs, self.batch, self.ms)

    def gpu_ms(self, n_seqs, context):
        """Table value corrected to a mean context length (the profile's attention_ms_per_kv_token term)."""
        n = np.asarray(n_seqs, float)
        return self.table_ms(n) + self.ms_per_context_token * n * (np.asarray(context, float) - self.ctx_ref)


def hinge_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Basis of a linear spline parametrised by its value at knots[0] and one slope per segment.

    With every coefficient >= 0 (NNLS) the spline is monotone non-decreasing; the last segment
    extends beyond the last knot.
    """
    cols = [np.ones_like(x)]
    for i in range(len(knots) - 1):
        width = knots[i + 1] - knots[i] if i < len(knots) - 2 else np.inf
        cols.append(np.clip(x - knots[i], 0.0, width))
    return np.column_stack(cols)


def decode_design(rows: pd.DataFrame, knots: np.ndarray, ctx_ref: float) -> np.ndarray:
    x = rows["mean_running"].to_numpy(float)
    ctx = rows["context"].to_numpy(float)
    return np.column_stack([hinge_basis(x, knots), x * (ctx - ctx_ref)])


def fit_spline_with_context(rows: pd.DataFrame, knots: np.ndarray, ctx_ref: float) -> np.ndarray:
    coef, _ = nnls(decode_design(rows, knots, ctx_ref), rows["gpu_ms"].to_numpy(float))
    return coef


def leave_one_batch_out_mape(rows: pd.DataFrame, knots: np.ndarray, ctx_ref: float) -> float:
    """MAPE (%) when each max_num_seqs group is predicted by a fit on the other groups."""
    errors = []
    for group in rows["max_num_seqs"].unique():
        train, test = rows[rows["max_num_seqs"] != group], rows[rows["max_num_seqs"] == group]
        coef = fit_spline_with_context(train, knots, ctx_ref)
        pred = decode_design(test, knots, ctx_ref) @ coef
        errors.extend(np.abs(pred - test["gpu_ms"]) / test["gpu_ms"])
    return float(100 * np.mean(errors))


def fit_decode(steps: pd.DataFrame, sched: SchedulerFit) -> tuple[DecodeFit, dict]:
    """Monotone linear spline of base-model GPU step time vs batch, from the decode probe.

    y = mean_itl_ms - scheduler(mean_running, mean_waiting). ITL at a fixed batch also grows with the
    context length (attention reads the KV cache), and dropping preempted runs would unbalance the
    output lengths of a batch size; so each run is fitted with a covariate x * (context - ctx_ref),
    where context = prompt + output/2 is the mean context of a running request and ctx_ref its mean
    over the probe design. The table is the spline at ctx_ref, i.e. averaged over output lengths.
    """
    probe = steps[steps["probe"] == "decode"].copy()
    probe["context"] = probe["input_tokens_per_req"] + probe["output_tokens_per_req"] / 2
    ctx_ref = float(probe["context"].mean())
    preempted = probe[probe["preemptions"] > 0]
    rows = probe[probe["preemptions"] == 0].copy()
    rows["gpu_ms"] = rows["mean_itl_ms"] - sched.ms(rows["mean_running"], rows["mean_waiting"])

    cv = {str(k): leave_one_batch_out_mape(rows, np.array(k, float), ctx_ref) for k in DECODE_KNOT_CANDIDATES}
    knots = np.array(min(DECODE_KNOT_CANDIDATES, key=lambda k: cv[str(k)]), float)
    coef = fit_spline_with_context(rows, knots, ctx_ref)
    table = hinge_basis(knots, knots) @ coef[:-1]
    fit = DecodeFit(tuple(knots), tuple(table), float(coef[-1]), ctx_ref)

    with_context = fit.gpu_ms(rows["mean_running"], rows["context"])
    groups = rows.groupby("max_num_seqs")[["mean_running", "gpu_ms"]].mean()
    report = {
        "rows_used": int(len(rows)),
        "rows_excluded": [f"max_num_seqs={int(r.max_num_seqs)} output_len={int(r.output_len)}: "
                          f"{int(r.preemptions)} preemptions" for r in preempted.itertuples()],
        "fit_with_context_term": error_stats(rows["gpu_ms"], with_context),
        "table_only_vs_runs": error_stats(rows["gpu_ms"], fit.table_ms(rows["mean_running"])),
        "table_vs_batch_size_means": error_stats(groups["gpu_ms"], fit.table_ms(groups["mean_running"])),
        "knots_cv_mape_pct": cv,
        "knots_chosen": list(knots),
        "ms_per_seq_per_context_token": fit.ms_per_context_token,
        "ctx_ref_tokens": ctx_ref,
        "notes": [
            "y = mean_itl_ms minus the scheduler model at (mean_running, mean_waiting)",
            "monotone linear spline by NNLS on segment slopes, with a context covariate "
            "x*(prompt + output/2 - ctx_ref); knots chosen by leave-one-batch-size-out MAPE",
            "the table stands for mean context ctx_ref tokens (step.decode_ctx_ref); longer contexts "
            "add step.attention_ms_per_kv_token = ms_per_seq_per_context_token per KV token read "
            "beyond ctx_ref per decoding sequence",
        ],
    }
    return fit, report


# ----------------------------------------------------------------------------------------------
# Prefill cost per prompt token (mb_base_step_latency.csv, probe=prefill)
# ----------------------------------------------------------------------------------------------

def prefill_rows(steps: pd.DataFrame, model: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(usable, unusable) prefill-probe rows of a model: usable rows span >= MIN_PREFILL_STEPS steps."""
    probe = steps[(steps["model"] == model) & (steps["probe"] == "prefill")].copy()
    probe["steps"] = probe["total_input_tokens"] / STEP_TOKEN_BUDGET
    usable = probe["steps"] >= MIN_PREFILL_STEPS
    return probe[usable], probe[~usable]


def fit_prefill_per_token(rows: pd.DataFrame, decode: DecodeFit, sched: SchedulerFit) -> tuple[float, dict]:
    """Extra GPU ms per prompt token: each step carries ~2048 prompt tokens of a flood of 1-token requests.

    step_ms = duration / steps; seqs per step = 2048 / prompt_len + 1 (one request straddles the chunk
    boundary); per token = (step_ms - decode_table(seqs) - scheduler) / 2048.
    """
    step_ms = rows["duration"] * 1000 / rows["steps"]
    seqs = STEP_TOKEN_BUDGET / rows["input_tokens_per_req"] + 1
    residual = step_ms - decode.table_ms(seqs) - sched.ms(rows["mean_running"], rows["mean_waiting"])
    per_token = residual / STEP_TOKEN_BUDGET
    value = float(per_token.mean())
    predicted_step = decode.table_ms(seqs) + sched.ms(rows["mean_running"], rows["mean_waiting"]) \
        + value * STEP_TOKEN_BUDGET
    by_len = {int(k): float(v) for k, v in per_token.groupby(rows["input_tokens_per_req"]).mean().items()}
    ms_per_request = float(np.polyfit(seqs, residual, 1)[0])
    report = {
        "rows_used": int(len(rows)),
        "step_ms_fit": error_stats(step_ms, predicted_step),
        "per_token_by_prompt_len": by_len,
        "residual_ms_per_request_in_step": ms_per_request,
        "notes": [
            "mean over the rows of (step_ms - decode table - scheduler) / 2048",
            f"per-token cost falls with prompt length: the residual grows by {ms_per_request:.2f} ms per "
            "request in the step (short prompts = many 1-token requests finishing per step), a "
            "per-request cost the profile does not model; the ~209-token group, closest to the "
            "end-to-end workload (~222), is close to the mean",
        ],
    }
    return value, report


def unusable_prefill_note(rows: pd.DataFrame) -> str:
    return (f"{len(rows)} prefill rows unusable: {int(rows['num_prompts'].max())} prompts, "
            f"{rows['duration'].min():.2f}-{rows['duration'].max():.2f} s, "
            f"{rows['steps'].min():.1f}-{rows['steps'].max():.1f} engine steps each (< {MIN_PREFILL_STEPS}); "
            "dominated by request latency, not step time")


# ----------------------------------------------------------------------------------------------
# LoRA decode overhead (mb_lora_decode_overhead.csv)
# ----------------------------------------------------------------------------------------------

def expected_distinct_adapters(n_adapters, n_requests):
    """Expected distinct adapters among n_requests spread uniformly over n_adapters (occupancy)."""
    n, k = np.asarray(n_adapters, float), np.asarray(n_requests, float)
    return n * (1 - (1 - 1 / n) ** k)


def e2e_lora_token_ms(e2e: dict, running, slots: int = LORA_PROBE_SLOTS, rank: int = LORA_PROBE_RANK):
    """LoRA cost the end-to-end token terms give a decode step of `running` sequences (1 token each)."""
    rank_factor = 1 + e2e["lora_rank_slope"] * (rank - e2e["lora_rank_ref"]) / e2e["lora_rank_ref"]
    per_token = e2e["lora_ms_per_token"] + e2e["lora_ms_per_token_slot"] * slots
    return rank_factor * (e2e["lora_ms_base"] + per_token * np.asarray(running, float))


def fit_lora_overhead(lora: pd.DataFrame, model: str, decode: DecodeFit, sched: SchedulerFit,
                      e2e: dict) -> tuple[dict[str, float], dict]:
    """ITL(lora) - baseline = c0 + lora_ms_per_adapter * mean_loras_by_batch (NNLS, free intercept c0).

    Baseline at the run's batch = decode table + context correction + scheduler (not the single no-LoRA
    row, whose batch differs). Every probe ran with max_loras=300 slots at ~190-240 sequences, so the
    token terms of the step model (which depend on max_loras) are not identifiable here: c0 absorbs
    them and is only reported (single-adapter LoRA overhead at ~N sequences with 300 slots), next to
    what the end-to-end token terms (e2e_params) predict for that point, as a cross-check. Rows whose
    mean_loras_by_batch was not logged are left out of the fit and used as a check with the occupancy
    estimate. The fit does not depend on e2e (only the cross-check does).
    """
    probes = lora[(lora["model"] == model) & (lora["experiment"] == "lora_decode") & (lora["status"] == "ok")]
    rows, preempted = probes[probes["preemptions"] == 0].copy(), probes[probes["preemptions"] > 0]
    failed = lora[(lora["model"] == model) & (lora["status"] != "ok")]
    other = lora[(lora["model"] == model) & ~lora["experiment"].isin(["lora_decode", "baseline_no_lora"])]
    no_lora = lora[(lora["model"] == model) & (lora["experiment"] == "baseline_no_lora")].copy()

    def baseline_ms(df):
        context = df["input_tokens_per_req"] + df["output_tokens_per_req"] / 2
        return decode.gpu_ms(df["mean_running"], context) + sched.ms(df["mean_running"], df["mean_waiting"])

    rows["delta_ms"] = rows["mean_itl_ms"] - baseline_ms(rows)
    logged = rows[rows["mean_loras_by_batch"].notna()]
    unlogged = rows[rows["mean_loras_by_batch"].isna()].copy()

    X = np.column_stack([np.ones(len(logged)), logged["mean_loras_by_batch"]])
    (c0, per_adapter), _ = nnls(X, logged["delta_ms"].to_numpy(float))

    def predicted_delta(adapters):
        return c0 + per_adapter * np.asarray(adapters, float)

    n_ref = float(logged["mean_running"].mean())
    e2e_at_n = float(e2e_lora_token_ms(e2e, n_ref))
    occupancy = expected_distinct_adapters(unlogged["n_adapters_used"], unlogged["mean_running"])
    naive = np.minimum(unlogged["n_adapters_used"], unlogged["mean_running"])
    occupancy_on_logged = expected_distinct_adapters(logged["n_adapters_used"], logged["mean_running"])
    with_running = ols_summary({"running": logged["mean_running"].to_numpy(float),
                                "adapters": logged["mean_loras_by_batch"].to_numpy(float)},
                               logged["delta_ms"].to_numpy(float))
    report = {
        "rows_used": int(len(logged)),
        "delta_fit": error_stats(logged["delta_ms"], predicted_delta(logged["mean_loras_by_batch"])),
        "itl_fit": error_stats(logged["mean_itl_ms"], baseline_ms(logged) + predicted_delta(logged["mean_loras_by_batch"])),
        "intercept_ms": float(c0),
        "intercept_meaning": (f"single-adapter LoRA overhead at ~{n_ref:.0f} sequences with "
                              f"{LORA_PROBE_SLOTS} slots (max_lora_rank {LORA_PROBE_RANK}); not in the profile"),
        "mean_running": n_ref,
        "running_range": [float(logged["mean_running"].min()), float(logged["mean_running"].max())],
        "e2e_token_terms_at_mean_running_ms": e2e_at_n,
        "e2e_cross_check": {
            "formula": (f"rank_factor({LORA_PROBE_RANK}) * (lora_ms_base + (lora_ms_per_token + "
                        f"lora_ms_per_token_slot * {LORA_PROBE_SLOTS}) * {n_ref:.1f})"),
            "micro_intercept_ms": float(c0), "e2e_prediction_ms": e2e_at_n,
            "e2e_over_micro": e2e_at_n / c0 if c0 > 0 else float("nan"),
            "delta_with_e2e_token_terms": error_stats(
                logged["delta_ms"], e2e_lora_token_ms(e2e, logged["mean_running"])
                + per_adapter * logged["mean_loras_by_batch"]),
        },
        "ols_with_running_term": with_running,
        "rows_excluded": {
            "mean_loras_by_batch not logged (checked below with the occupancy estimate)":
                [f"n_adapters_used={int(r.n_adapters_used)} output_len={int(r.output_len)}" for r in unlogged.itertuples()],
            "preempted": [f"n_adapters_used={int(r.n_adapters_used)} output_len={int(r.output_len)}: "
                          f"{int(r.preemptions)} preemptions" for r in preempted.itertuples()],
            "run failed": [f"n_adapters_used={int(r.n_adapters_used)} output_len={int(r.output_len)}: {r.status}"
                           for r in failed.itertuples()],
            "not a decode probe (long prompts mix prefill into the steps)":
                [f"{r.experiment} max_loras={int(r.max_loras)} prompt={int(r.input_tokens_per_req)} "
                 f"output_len={int(r.output_len)}" for r in other.itertuples()],
        },
        "check_unlogged_rows_with_occupancy_estimate": error_stats(unlogged["delta_ms"], predicted_delta(occupancy)),
        "check_unlogged_rows_with_min_n_running": error_stats(unlogged["delta_ms"], predicted_delta(naive)),
        "occupancy_estimate_vs_logged_mean_loras": error_stats(logged["mean_loras_by_batch"], occupancy_on_logged),
        "baseline_model_vs_no_lora_rows": error_stats(no_lora["mean_itl_ms"], baseline_ms(no_lora)),
        "notes": [
            "NNLS of the ITL increase on [1, mean_loras_by_batch]: lora_ms_per_adapter goes into the "
            "profile; the intercept c0 (token terms at ~N sequences and 300 slots) is reported only",
            f"all probes ran with max_loras={LORA_PROBE_SLOTS} at {logged['mean_running'].min():.0f}-"
            f"{logged['mean_running'].max():.0f} sequences: the slot-dependent token terms come from "
            "e2e_params (end-to-end runs with 8-192 slots); e2e_cross_check shows what they predict here, "
            "not fitted to it",
            "rows without mean_loras_by_batch are dropped from the fit; min(n_adapters_used, running) "
            "overstates distinct adapters (e.g. 300 adapters, 208 running: 208 vs ~150 expected), the "
            "occupancy estimate n*(1-(1-1/n)^running) matches the logged rows, so the dropped rows are "
            "checked with it",
        ],
    }
    return {"lora_ms_per_adapter": float(per_adapter)}, report


# ----------------------------------------------------------------------------------------------
# KV-cache memory (mb_kv_capacity.csv)
# ----------------------------------------------------------------------------------------------

STATUS_TO_ERROR = {"oom_kv_below_max_model_len": "kv_below_max_model_len", "oom_no_kv_blocks": "no_kv_blocks"}


def fit_memory(kv: pd.DataFrame, spec: ModelSpec) -> tuple[dict, dict]:
    """Least squares for non_kv_gib, slot_mib_base, slot_mib_per_rank on the ok starts; checks failures.

    used_gib = 0.9 * 64 - kv_tokens * bytes_per_token / GiB
             = non_kv_gib + max_loras * (slot_mib_base + slot_mib_per_rank * max_lora_rank) / 1024
    """
    rows = kv[kv["model"] == spec.name]
    ok = rows[rows["status"] == "ok"]
    used_gib = GPU_MEMORY_UTILIZATION * GPU_MEMORY_GIB - ok["kv_cache_tokens"] * spec.kv_bytes_per_token / GIB
    X = np.column_stack([np.ones(len(ok)), ok["max_loras"] / 1024, ok["max_loras"] * ok["max_lora_rank"] / 1024])
    (non_kv_gib, slot_base, slot_per_rank), _ = nnls(X, used_gib.to_numpy(float))
    memory = {
        "gpu_memory_gib": GPU_MEMORY_GIB, "non_kv_gib": float(non_kv_gib),
        "kv_bytes_per_token": spec.kv_bytes_per_token, "slot_mib_base": float(slot_base),
        "slot_mib_per_rank": float(slot_per_rank), "max_model_len": spec.max_model_len, "block_size": BLOCK_SIZE,
    }
    model = MemoryModel(**rounded(memory))
    predicted_tokens = [model.kv_tokens(r.max_loras, r.max_lora_rank) for r in ok.itertuples()]

    failing = rows[rows["status"] != "ok"]
    mismatches, ok_predicted_ok, failing_predicted_failing, class_agree = [], 0, 0, 0
    for r in rows.itertuples():
        error = model.startup_error(int(r.max_loras), int(r.max_lora_rank))
        predicted = "ok" if error is None else error.split(":")[0]
        if r.status == "ok":
            ok_predicted_ok += predicted == "ok"
        else:
            failing_predicted_failing += predicted != "ok"
            class_agree += predicted != "ok" and STATUS_TO_ERROR.get(r.status, predicted) == predicted
        if (r.status == "ok") != (predicted == "ok"):
            mismatches.append(f"max_loras={r.max_loras} max_lora_rank={r.max_lora_rank}: measured {r.status}, "
                              f"predicted {predicted}")

    reported = failing[failing["kv_avail_gib_reported"].notna()]
    predicted_gib = [model.kv_bytes(r.max_loras, r.max_lora_rank) / GIB for r in reported.itertuples()]
    report = {
        "rows_used": int(len(ok)),
        "kv_tokens": error_stats(ok["kv_cache_tokens"], predicted_tokens),
        "max_abs_err_pct_of_largest_kv": float(100 * np.max(np.abs(ok["kv_cache_tokens"] - predicted_tokens))
                                               / ok["kv_cache_tokens"].max()),
        "slot_mib_at_rank": {str(r): model.slot_mib(r) for r in (8, 16, 32)},
        "startup_check": {
            "failing_rows": int(len(failing)), "failing_predicted_failing": int(failing_predicted_failing),
            "failure_class_agrees": int(class_agree),
            "ok_rows": int(len(ok)), "ok_predicted_ok": int(ok_predicted_ok),
            "mismatches": mismatches,
        },
        "reported_kv_gib_of_refused_starts": error_stats(reported["kv_avail_gib_reported"], predicted_gib)
        if len(reported) else None,
        "notes": [
            "least squares (non-negative) on the ok starts; the failure rows are predictions only",
            "oom_cuda starts crash before vLLM sizes the KV cache; any predicted start-up error counts "
            "as agreeing in class",
        ],
    }
    return memory, report


# ----------------------------------------------------------------------------------------------
# Adapter loading (mb_adapter_loading.csv)
# ----------------------------------------------------------------------------------------------

def fit_loading(loading: pd.DataFrame, model: str) -> tuple[dict, dict]:
    """Per adapter rank: mean over max_lora_rank of cpu_to_gpu_load_mean_ms and of disk_load_median_ms."""
    rows = loading[(loading["model"] == model) & (loading["status"] == "ok")]
    by_rank = rows.groupby("adapter_rank")
    ranks = sorted(int(r) for r in by_rank.groups)
    cpu_to_gpu = by_rank["cpu_to_gpu_load_mean_ms"].mean()
    disk = by_rank["disk_load_median_ms"].mean()
    table = {"ranks": ranks, "cpu_to_gpu_ms": [float(cpu_to_gpu[r]) for r in ranks],
             "disk_to_cpu_ms": [float(disk[r]) for r in ranks]}
    report = {
        "rows_used": int(len(rows)),
        "cpu_to_gpu_ms_by_max_lora_rank": {
            f"rank {int(r.adapter_rank)} / max {int(r.max_lora_rank)}": float(r.cpu_to_gpu_load_mean_ms)
            for r in rows.sort_values(["adapter_rank", "max_lora_rank"]).itertuples()},
        "disk_mean_ms_by_rank": {str(r): float(by_rank["disk_load_mean_ms"].mean()[r]) for r in ranks},
        "disk_max_ms_by_rank": {str(r): float(by_rank["disk_load_max_ms"].max()[r]) for r in ranks},
        "notes": [
            "cpu_to_gpu: mean over the max_lora_rank settings of cpu_to_gpu_load_mean_ms",
            "disk: mean over max_lora_rank of disk_load_median_ms; the mean includes a cold-start "
            "outlier (the first load, up to several hundred ms)",
            "activation time depends more on the slot size (max_lora_rank) than on the adapter rank",
        ],
    }
    return table, report


# ----------------------------------------------------------------------------------------------
# End-to-end parameters (calibrate/e2e_params.json, owned by calibrate/fit_e2e.py)
# ----------------------------------------------------------------------------------------------

def load_e2e_params(path: Path) -> tuple[dict[str, dict], dict[str, dict], str]:
    """Per-model e2e parameters, other keys found in the file, and where the parameters came from."""
    if not path.is_file():
        return ({m: dict(v) for m, v in E2E_DEFAULTS.items()}, {m: {} for m in E2E_DEFAULTS},
                f"defaults ({path.name} not found)")
    given = read_json(path, field="e2e")
    params, extra, defaulted = {}, {}, []
    for model, defaults in E2E_DEFAULTS.items():
        values = given.get(model, {})
        params[model] = {k: values.get(k, defaults[k]) for k in E2E_KEYS}
        extra[model] = {k: v for k, v in values.items() if k not in E2E_KEYS}
        defaulted += [f"{model}.{k}" for k in E2E_KEYS if k not in values]
    path = path.resolve()
    source = str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
    return params, extra, source + (f" (defaults for {', '.join(defaulted)})" if defaulted else "")


# ----------------------------------------------------------------------------------------------
# Assembly
# ----------------------------------------------------------------------------------------------

def read_inputs(data_dir: Path) -> dict[str, pd.DataFrame]:
    missing = [f for f in SOURCE_FILES if not (data_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"missing in {data_dir}: {', '.join(missing)}")
    return {f.removesuffix(".csv"): pd.read_csv(data_dir / f) for f in SOURCE_FILES}


@dataclass(frozen=True)
class MicroFits:
    """The fits that do not depend on the end-to-end parameters, per model."""
    data: dict[str, pd.DataFrame]
    sched: dict[str, SchedulerFit]
    sched_report: dict[str, dict]
    decode: dict[str, tuple[DecodeFit, dict]]
    prefill: dict[str, tuple[float, dict]]


@lru_cache(maxsize=4)
def fit_micro_benchmarks(data_dir: Path) -> MicroFits:
    """Scheduler, decode table and prefill cost of every model (cached per data directory)."""
    data = read_inputs(data_dir)
    steps = data["mb_base_step_latency"]
    sched_fit, sched_report = fit_scheduler(data["mb_scheduler_overhead"])
    factors, scale_report = scheduler_scale_by_model(data["mb_lora_decode_overhead"], sched_fit)
    sched = {m.name: sched_fit.scaled(factors[m.name]) for m in MODELS}
    sched_reports = {m.name: dict(sched_report, scale_factor=factors[m.name], scale_from_lora_overhead_file=scale_report)
                     for m in MODELS}
    decode = {m.name: fit_decode(steps[steps["model"] == m.name], sched[m.name]) for m in MODELS}

    prefill = {}
    for spec in MODELS:
        usable, unusable = prefill_rows(steps, spec.name)
        value, report = fit_prefill_per_token(usable, decode[spec.name][0], sched[spec.name]) if len(usable) \
            else (None, {"rows_used": 0, "notes": []})
        if len(unusable):
            report["notes"].append(unusable_prefill_note(unusable))
        prefill[spec.name] = (value, report)
    reference = next(m for m in MODELS if m.name == PREFILL_REFERENCE_MODEL)
    for spec in MODELS:
        value, report = prefill[spec.name]
        if value is None:
            ratio = spec.params_billion / reference.params_billion
            report["notes"].append(f"scaled from {reference.name} by the parameter-count ratio "
                                   f"{spec.params_billion}B / {reference.params_billion}B = {ratio:.3f}")
            prefill[spec.name] = (prefill[reference.name][0] * ratio, report)
    return MicroFits(data, sched, sched_reports, decode, prefill)


def build_profiles(data_dir: Path = DEFAULT_DATA_DIR, e2e_path: Path = DEFAULT_E2E_PATH) -> dict[str, dict]:
    """Fit every part for every model; returns {profile name: profile dict} (rounded, JSON-ready)."""
    fits = fit_micro_benchmarks(Path(data_dir).resolve())
    e2e_all, e2e_extra, e2e_source = load_e2e_params(Path(e2e_path))
    profiles = {}
    for spec in MODELS:
        e2e, sched = e2e_all[spec.name], fits.sched[spec.name]
        decode, decode_report = fits.decode[spec.name]
        prefill_ms_per_token, prefill_report = fits.prefill[spec.name]
        lora, lora_report = fit_lora_overhead(fits.data["mb_lora_decode_overhead"], spec.name, decode, sched, e2e)
        memory, memory_report = fit_memory(fits.data["mb_kv_capacity"], spec)
        loading, loading_report = fit_loading(fits.data["mb_adapter_loading"], spec.name)
        profile = {
            "name": f"{spec.name}@{GPU}",
            "model": spec.name,
            "gpu": GPU,
            "description": (f"{spec.title} on one NVIDIA H100 64 GB, vLLM 0.8.5 V1 engine, bf16, "
                            f"gpu_memory_utilization {GPU_MEMORY_UTILIZATION}, max_num_batched_tokens "
                            f"{STEP_TOKEN_BUDGET}; fitted by calibrate/fit_profiles.py from the agullo-h100 "
                            f"micro-benchmarks, end-to-end parameters from {e2e_source}"),
            "memory": memory,
            "step": {
                "decode_batch": list(decode.batch), "decode_ms": list(decode.ms),
                "prefill_ms_per_token": prefill_ms_per_token,
                "lora_ms_base": e2e["lora_ms_base"],
                "lora_ms_per_token": e2e["lora_ms_per_token"],
                "lora_ms_per_adapter": lora["lora_ms_per_adapter"],
                "lora_ms_per_token_slot": e2e["lora_ms_per_token_slot"],
                "lora_rank_ref": e2e["lora_rank_ref"], "lora_rank_slope": e2e["lora_rank_slope"],
                "attention_ms_per_kv_token": decode.ms_per_context_token,
                "decode_ctx_ref": decode.ctx_ref,
            },
            "scheduler": {"ms_base": sched.ms_base, "ms_per_running": sched.ms_per_running,
                          "ms_per_waiting": sched.ms_per_waiting},
            "loading": loading,
            "client": {"max_waiting": int(e2e["max_waiting"]), "output_len_scale": e2e["output_len_scale"]},
            "fit_report": {
                "memory": memory_report, "scheduler": fits.sched_report[spec.name], "decode": decode_report,
                "prefill": prefill_report, "lora": lora_report, "loading": loading_report,
                "e2e": {"source": e2e_source, "values": e2e, "other_keys_in_file": e2e_extra[spec.name]},
                "sources": [f"agullo-h100/{f}" for f in SOURCE_FILES] + [e2e_source],
            },
        }
        profiles[profile["name"]] = rounded(profile)
    return profiles


# ----------------------------------------------------------------------------------------------
# Printing and writing
# ----------------------------------------------------------------------------------------------

def fmt(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def fmt_stats(s: dict | None, unit: str = "") -> str:
    if not s:
        return "n/a"
    return (f"n={s['n']} MAE={s['mae']:.4g}{unit} MAPE={s['mape_pct']:.2f}% max={s['max_abs_err']:.4g}{unit} "
            f"R²={s['r2']:.4f}")


def print_profile(p: dict, out: Callable[[str], None] = print) -> None:
    m, st, sc, ld, cl, fr = p["memory"], p["step"], p["scheduler"], p["loading"], p["client"], p["fit_report"]
    line = lambda key, value, meaning=None: out(f"    {key:<30} = {fmt(value):<36} {meaning or MEANINGS.get(key, '')}")
    out(f"\n=== {p['name']} ===")
    out("  fitted from micro-benchmarks:")
    for k in ("non_kv_gib", "slot_mib_base", "slot_mib_per_rank"):
        line(f"memory.{k}", m[k], MEANINGS[k])
    line("step.decode_batch", st["decode_batch"], "sequences in the step (table x; linear extrapolation)")
    line("step.decode_ms", st["decode_ms"], MEANINGS["decode_ms"])
    for k in ("attention_ms_per_kv_token", "decode_ctx_ref", "prefill_ms_per_token", "lora_ms_per_adapter"):
        line(f"step.{k}", st[k], MEANINGS[k])
    for k in ("ms_base", "ms_per_running", "ms_per_waiting"):
        line(f"scheduler.{k}", sc[k], MEANINGS[k])
    line("loading.ranks", ld["ranks"], "adapter ranks of the loading tables")
    for k in ("cpu_to_gpu_ms", "disk_to_cpu_ms"):
        line(f"loading.{k}", ld[k], MEANINGS[k])
    out("  constants:")
    for k in ("kv_bytes_per_token", "max_model_len"):
        line(f"memory.{k}", m[k], MEANINGS[k])
    out(f"  from e2e_params.json (calibrated end-to-end by calibrate/fit_e2e.py) -- source: {fr['e2e']['source']}")
    for k in ("lora_ms_base", "lora_ms_per_token", "lora_ms_per_token_slot", "lora_rank_ref", "lora_rank_slope"):
        line(f"step.{k}", st[k], MEANINGS[k])
    for k in ("max_waiting", "output_len_scale"):
        line(f"client.{k}", cl[k], MEANINGS[k])
    for k, v in fr["e2e"]["other_keys_in_file"].items():
        line(f"(not used) {k}", v, "other key in the e2e file, reported only")

    out("  fit errors:")
    mem = fr["memory"]
    out(f"    memory    kv_cache_tokens on ok starts: {fmt_stats(mem['kv_tokens'], ' tok')} "
        f"(max = {mem['max_abs_err_pct_of_largest_kv']:.2f}% of the largest capacity)")
    chk = mem["startup_check"]
    out(f"              start-up: {chk['failing_predicted_failing']}/{chk['failing_rows']} failing starts predicted "
        f"failing ({chk['failure_class_agrees']} same class), {chk['ok_predicted_ok']}/{chk['ok_rows']} ok starts "
        f"predicted ok; mismatches: {chk['mismatches'] or 'none'}")
    out(f"              KV GiB reported by refused starts: {fmt_stats(mem['reported_kv_gib_of_refused_starts'], ' GiB')}")
    out(f"              slot MiB at rank 8/16/32: {fmt(list(mem['slot_mib_at_rank'].values()))}")
    s = fr["scheduler"]
    out(f"    scheduler {fmt_stats(s, ' ms')} (all {s['rows_used']} rows); scale factor {s['scale_factor']:.4g}")
    ext = s["extended_forms"]
    out(f"              OLS R²: 3 terms {ext['ols_3_terms']['r2']:.4f}; + cpu_loras, gpu_loras "
        f"{ext['ols_plus_cpu_gpu_loras']['r2']:.4f} (coef {ext['ols_plus_cpu_gpu_loras']['coef']['cpu_loras']:+.3g}, "
        f"{ext['ols_plus_cpu_gpu_loras']['coef']['gpu_loras']:+.3g} ms per served adapter / GPU slot); + waiting x [cpu_loras > gpu_loras] "
        f"{ext['ols_plus_waiting_x_lora_limited']['r2']:.4f}")
    out(f"              measured/predicted on the lora-overhead probes: "
        f"{fmt(list(s['scale_from_lora_overhead_file']['measured_over_predicted'].values()))}")
    d = fr["decode"]
    out(f"    decode    runs (with context term): {fmt_stats(d['fit_with_context_term'], ' ms')}")
    out(f"              runs (table only):        {fmt_stats(d['table_only_vs_runs'], ' ms')}")
    out(f"              batch-size means:         {fmt_stats(d['table_vs_batch_size_means'], ' ms')}")
    out(f"              knots {d['knots_chosen']} (leave-one-batch-out MAPE by knot set: "
        f"{', '.join(f'{k}: {v:.2f}%' for k, v in d['knots_cv_mape_pct'].items())})")
    out(f"              context term (attention_ms_per_kv_token) {d['ms_per_seq_per_context_token']:.3g} ms per "
        f"KV token, ctx_ref {d['ctx_ref_tokens']:.1f} tokens; excluded: {d['rows_excluded'] or 'none'}")
    pf = fr["prefill"]
    if "step_ms_fit" in pf:
        out(f"    prefill   step time: {fmt_stats(pf['step_ms_fit'], ' ms')}; per token by prompt length: "
            f"{', '.join(f'{k}: {v:.4g}' for k, v in pf['per_token_by_prompt_len'].items())}; residual "
            f"{pf['residual_ms_per_request_in_step']:.2f} ms per request in the step")
    for note in pf.get("notes", []):
        if "unusable" in note or "scaled" in note:
            out(f"    prefill   {note}")
    lo = fr["lora"]
    out(f"    lora      ITL increase on logged rows: {fmt_stats(lo['delta_fit'], ' ms')}")
    out(f"              ITL on logged rows:          {fmt_stats(lo['itl_fit'], ' ms')}")
    xc = lo["e2e_cross_check"]
    out(f"              intercept c0 = {lo['intercept_ms']:.4g} ms: {lo['intercept_meaning']} "
        f"(running {lo['running_range'][0]:.0f}-{lo['running_range'][1]:.0f})")
    out(f"              cross-check, e2e token terms at that point: {xc['formula']} = {xc['e2e_prediction_ms']:.4g} ms "
        f"({xc['e2e_over_micro']:.3g}x c0; not fitted)")
    out(f"              ITL increase with the e2e token terms instead of c0: "
        f"{fmt_stats(xc['delta_with_e2e_token_terms'], ' ms')}")
    ow = lo["ols_with_running_term"]["coef"]
    out(f"              OLS with a running term (diagnostic): {ow['intercept']:+.3g} ms {ow['running']:+.3g} ms/seq "
        f"{ow['adapters']:+.3g} ms/adapter, R² {lo['ols_with_running_term']['r2']:.4f}")
    out(f"              ITL increase, unlogged rows, occupancy estimate: {fmt_stats(lo['check_unlogged_rows_with_occupancy_estimate'], ' ms')}")
    out(f"              ITL increase, unlogged rows, min(n, running):    {fmt_stats(lo['check_unlogged_rows_with_min_n_running'], ' ms')}")
    out(f"              occupancy estimate vs logged mean_loras_by_batch: "
        f"{fmt_stats(lo['occupancy_estimate_vs_logged_mean_loras'])}")
    out(f"              baseline model vs this file's no-LoRA rows: {fmt_stats(lo['baseline_model_vs_no_lora_rows'], ' ms')}")
    for reason, rows in lo["rows_excluded"].items():
        if rows:
            out(f"              excluded, {reason}: {len(rows)} rows ({'; '.join(rows)})")
    lr = fr["loading"]
    out(f"    loading   cpu->gpu ms by (rank / max_lora_rank): "
        f"{', '.join(f'{k}: {v:.3g}' for k, v in lr['cpu_to_gpu_ms_by_max_lora_rank'].items())}")
    out(f"              disk mean (incl. cold start) by rank: {fmt(list(lr['disk_mean_ms_by_rank'].values()))} ms, "
        f"median used: {fmt(ld['disk_to_cpu_ms'])} ms")


def write_profiles(profiles: dict[str, dict], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, profile in profiles.items():
        Profile.from_dict(profile)                      # the schema contract
        path = out_dir / f"{name}.json"
        path.write_text(dumps(profile, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="agullo-h100 data directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="where to write the profile JSONs")
    parser.add_argument("--e2e", type=Path, default=DEFAULT_E2E_PATH, help="end-to-end parameters JSON")
    args = parser.parse_args(argv)
    profiles = build_profiles(args.data, args.e2e)
    e2e_source = next(iter(profiles.values()))["fit_report"]["e2e"]["source"]
    if e2e_source.startswith("defaults"):
        print(f"NOTE: {args.e2e} not found; using the default end-to-end parameters")
    for profile in profiles.values():
        print_profile(profile)
    print()
    for path in write_profiles(profiles, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
