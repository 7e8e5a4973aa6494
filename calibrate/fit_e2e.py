"""Calibrate, against the end-to-end runs, the profile numbers the micro-benchmarks cannot pin down.

    python calibrate/fit_e2e.py [--data ../shared/data/agullo-h100] [--output-sigma S] [--twin-evals N]
                                [--workers N]

What the micro-benchmarks leave open, and how each is set here (per model):

measured directly from the end-to-end runs:
- ``output_len_scale``: generated / requested output tokens (early EOS), median over runs that
  completed essentially every request (so the completed set is not biased towards short requests).
- ``max_waiting``: the waiting-queue length at which the measured load generator stopped sending:
  the median of ``max_waiting`` over runs that completed under half of what they sent.

fitted on the ok runs of the "fit" half (``packer.validation.holdout_split``; the other half is left
for ``benchmarks/twin_fidelity.py --split holdout``), by the stages below:
- the ShareGPT pool's output-length dispersion and prompt-output correlation (stage 2);
- ``lora_ms_base``, ``lora_ms_per_token``, ``lora_ms_per_token_slot``: the LoRA cost per step, per
  token and per token per reserved slot. The LoRA micro-benchmark has a single batch size and 300
  slots, so it cannot separate these; the real runs span 1-2000 tokens per step and 8-192 slots.
- ``lora_rank_slope``: how that cost grows with ``max_lora_rank`` (the micro-benchmarks are rank 8).

Three stages:

1. Step level (seconds). For each run, the measured mean ITL is taken as the mean step time, and
   everything the micro-benchmarks fitted (base decode table with its context term, prefill per
   token, per-adapter LoRA cost, scheduler) is subtracted at the run's measured batch, queue and
   prefill tokens per step; what remains is the LoRA token cost, regressed on its three terms
   (non-negative least squares on relative error, the rank slope by a 1-D grid).
2. Output-length dispersion of the ShareGPT pool (~3.5 min on 2 cores; ``--output-sigma`` fixes it).
   The pool's lengths are not recorded, only their means. The measured KV tokens per running
   request tie the output dispersion to the prompt-output correlation (one equation); the twin,
   simulating the fit-half runs for each output sigma in ``OUTPUT_SIGMAS`` (rho solved from the KV
   equation), picks the value. It matters in LoRA-limited runs: an adapter holds its slot until its
   longest request finishes, so the tail of the output lengths sets how full the batch is.
3. Twin in the loop for the LoRA token terms (``--twin-evals``, ~8 / 13 min per model on 2 cores;
   ``--twin-evals 0`` skips it). Near the throughput knee the batch a server settles at is very
   sensitive to the step cost (a step 10 % too slow lets the batch grow until the token budget
   binds, doubling ITL), so a step-level fit that is right on average still leaves the simulated ITL
   12-15 % off. Starting from the step-level values, Nelder-Mead adjusts the same four numbers (in
   log space; the rank slope linearly).

4. Admission delay (``--admission-only`` runs this stage alone, ~40 s on 2 cores). The twin replays
   the fit-half runs with no admission delay; on the runs where neither it nor the real server
   queued and every adapter had a slot, the mean TTFT the twin leaves over is regressed on the
   squared adapters served, one coefficient for both models (the delay is paid outside the GPU step)
   with an intercept per model (``packer.calibration.admission``). The value is kept as
   ``admission_ms_per_adapter_sq_fitted``; the shipped ``admission_ms_per_adapter_sq`` stays as the
   file has it (0: the shipped capacity tables and tree models were made without it), and
   ``fit_profiles.py --with-admission-delay`` / ``twin_fidelity.py --admission-delay`` use the fitted one.

Stages 2 and 3 minimise, over the fit-half runs simulated by the twin, mean ITL error + throughput
error + half the starvation disagreement (all in %). Deterministic: fixed seeds, no randomness in
the search.

Writes ``calibrate/e2e_params.json`` (the step-level values and the twin stage's record are kept in
it) and re-runs ``calibrate/fit_profiles.py``. The other half of the runs is never used here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy.optimize import minimize, nnls

from packer.calibration.admission import admission_fit_mask, fit_admission_delay
from packer.calibration.e2e import ADMISSION_FITTED
from packer.calibration.lora import expected_distinct_adapters
from packer.executor import process_pool
from packer.model import LengthSpec
from packer.profile import Profile, load_profile
from packer.replay import PROFILE_FOR_MODEL, read_runs, run_key
from packer.twin.lengths import SHAPE_FILES, LengthShape, length_shape, lognormal_lengths
from packer.validation import holdout_split, replay, summarise

ROOT = Path(__file__).resolve().parents[1]

PARAMS_FILE = ROOT / "calibrate" / "e2e_params.json"
RANK_REF = 8
RANK_SLOPES = np.round(np.arange(0.0, 1.51, 0.02), 2)
TWIN_EVALS = 40
OUTPUT_SIGMAS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# Initial simplex of the twin stage: steps in log(base), log(per token), log(per token-slot), slope.
TWIN_SIMPLEX_STEPS = (0.3, -0.2, -0.3, 0.08)
LORA_KEYS = ("lora_ms_base", "lora_ms_per_token", "lora_ms_per_token_slot", "lora_rank_slope")


def measured_output_scale(runs: pd.DataFrame) -> float:
    done = runs[(runs.status == "ok") & (runs.completed_frac >= 0.995)]
    return round(float(np.median(done.total_output_tokens / done.completed / done.pool_mean_output_len)), 4)


def measured_max_waiting(runs: pd.DataFrame) -> int:
    over = runs[(runs.status == "ok") & (runs.completed_frac < 0.5)]
    return int(np.median(over.max_waiting))


def measured_kv_tokens_per_request(runs: pd.DataFrame, prof: Profile) -> float:
    """Median KV tokens held per running request (mean KV usage x capacity / mean batch), over runs
    that never preempted and kept a batch of more than 20."""
    ok = runs[(runs.status == "ok") & (runs.preemptions == 0) & (runs.mean_running > 20)]
    cap = np.array([prof.memory.kv_tokens(a, r) for a, r in zip(ok.max_loras, ok.max_lora_rank)])
    return float(np.median(ok.mean_kv_usage * cap / ok.mean_running))


def kv_tokens_per_request(shape: LengthShape, input_mean: float, output_mean: float, block: int = 16) -> float:
    """KV tokens a running request holds on average, for lengths of this shape: decode steps weight
    requests by output length, a request holds p + o/2 tokens on average, rounded up to a block."""
    spec = LengthSpec(input_mean=input_mean, output_mean=output_mean)
    p, o = lognormal_lengths(spec, 400_000, np.random.default_rng(0), shape)
    p, o = p.astype(float), o.astype(float)
    return float(np.sum(o * (p + o / 2 + block / 2)) / np.sum(o))


def shape_on_kv_curve(sigma_output: float, target_kv: float, input_mean: float, output_mean: float) -> LengthShape:
    """The ShareGPT pool's length shape is not recorded. Keep the prompt dispersion of the Azure
    conversation shape and, for a given output dispersion, solve the prompt-output correlation so that
    the KV tokens per running request match the measured value (one equation, two unknowns: the
    output dispersion itself is chosen by ``choose_output_sigma``)."""
    sigma_prompt = length_shape("azure-conv").sigma_log_prompt
    lo, hi = -0.95, 0.95   # KV per request grows with rho
    for _ in range(30):
        mid = (lo + hi) / 2
        if kv_tokens_per_request(LengthShape(sigma_prompt, sigma_output, mid), input_mean, output_mean) < target_kv:
            lo = mid
        else:
            hi = mid
    return LengthShape(sigma_prompt, round(sigma_output, 4), round((lo + hi) / 2, 4))


def write_shape(shape: LengthShape, kv_per_request: dict[str, float], scan: list[dict] | None) -> None:
    shape_file = ROOT / "packer" / "data" / SHAPE_FILES["sharegpt"]
    shape_file.write_text(json.dumps({
        **shape._asdict(), "source": "calibrate/fit_e2e.py",
        "method": "sigma_log_prompt from the azure-conv shape; rho solved so that the KV tokens held per running "
                  "request match the real runs' median (mean KV usage x capacity / mean batch); sigma_log_output "
                  "chosen by simulating the fit half of the real runs with the twin (output_sigma_scan)",
        "measured_kv_tokens_per_running_request": {m: round(v, 1) for m, v in kv_per_request.items()},
        "output_sigma_scan": scan or [],
    }, indent=2) + "\n")
    length_shape.cache_clear()


def step_level_table(runs: pd.DataFrame, prof: Profile, kv_per_request: float) -> pd.DataFrame:
    """Per run: measured ITL, what the micro-benchmark parts predict, and the LoRA token regressors.

    Prefill tokens per step come from the measured input throughput, so the recomputation after
    preemptions is not counted: runs that preempted a lot are fitted with slightly too few tokens."""
    st, sc = prof.step, prof.scheduler
    d = runs.copy()
    running = d.mean_running.to_numpy(float)
    itl = d.mean_itl_ms.to_numpy(float)
    context = kv_per_request - prof.memory.block_size / 2  # mean context of a running request (measured)
    prefill_per_step = d.input_throughput_tps.to_numpy(float) * itl / 1e3
    distinct = np.minimum(d.max_loras.to_numpy(float), expected_distinct_adapters(d.n_adapters.to_numpy(float), running))
    known = (np.interp(running, st.decode_batch, st.decode_ms)
             + st.attention_ms_per_kv_token * running * (context - st.decode_ctx_ref)
             + st.prefill_ms_per_token * prefill_per_step
             + st.lora_ms_per_adapter * distinct
             + sc.ms_base + sc.ms_per_running * running + sc.ms_per_waiting * d.mean_waiting.to_numpy(float))
    d["known_ms"] = known
    d["lora_token_ms"] = itl - known
    d["tokens"] = running + prefill_per_step
    return d


def fit_lora_tokens(d: pd.DataFrame) -> tuple[dict[str, float], float]:
    """NNLS on relative error of ITL for (base, per token, per token-slot); grid over the rank slope."""
    best = None
    for slope in RANK_SLOPES:
        rf = 1 + slope * (d.max_lora_rank.to_numpy(float) - RANK_REF) / RANK_REF
        X = np.column_stack([rf, rf * d.tokens, rf * d.tokens * d.max_loras]) / d.mean_itl_ms.to_numpy(float)[:, None]
        y = (d.lora_token_ms / d.mean_itl_ms).to_numpy(float)
        coef, _ = nnls(X, y)
        err = float(np.mean(np.abs(X @ coef - y)))
        if best is None or err < best[0]:
            best = (err, slope, coef)
    err, slope, coef = best
    return ({"lora_ms_base": float(coef[0]), "lora_ms_per_token": float(coef[1]),
             "lora_ms_per_token_slot": float(coef[2]), "lora_rank_ref": RANK_REF, "lora_rank_slope": float(slope)},
            100 * err)


def choose_output_sigma(measured: list, shape_for: Callable[[float], LengthShape], kv_per_request: dict[str, float],
                        workers: int) -> tuple[LengthShape, list[dict]]:
    """Scan the output dispersion (rho follows from the KV constraint) with the twin on the fit half.

    In LoRA-limited runs an adapter holds its slot until its longest request finishes, so throughput
    and batch size there depend on the tail of the output lengths, which the KV measurement alone
    cannot separate from the prompt-output correlation."""
    scan, best = [], None
    for sigma in OUTPUT_SIGMAS:
        shape = shape_for(sigma)
        write_shape(shape, kv_per_request, None)
        t0 = time.perf_counter()
        summary = summarise(replay(measured, workers=workers))   # a fresh pool reads the new shape
        obj = sum(twin_objective(v) for v in summary.values())
        entry = {"sigma_log_output": shape.sigma_log_output, "rho": shape.rho, "objective": round(obj, 2),
                 **{m: {k: round(v[k], 2) for k in ("throughput_mare_pct", "itl_mare_pct", "starvation_agreement_pct")}
                    for m, v in summary.items()}}
        scan.append(entry)
        print(f"    output sigma {shape.sigma_log_output:.2f} (rho {shape.rho:+.2f}): " + "; ".join(
            f"{m.split('-')[0]} throughput {v['throughput_mare_pct']:.2f}% ITL {v['itl_mare_pct']:.2f}% "
            f"starvation {v['starvation_agreement_pct']:.1f}%" for m, v in summary.items())
            + f"  objective {obj:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if best is None or obj < best[0]:
            best = (obj, shape)
    return best[1], scan


def twin_objective(summary: dict[str, float]) -> float:
    """What the twin stage minimises (%): ITL error + throughput error + half the disagreement."""
    return (summary["itl_mare_pct"] + summary["throughput_mare_pct"]
            + 0.5 * (100.0 - summary["starvation_agreement_pct"]))


def refine_on_twin(profile_name: str, runs: list, start: dict[str, float], evals: int,
                   workers: int) -> tuple[dict[str, float], dict]:
    """Nelder-Mead on the LoRA token terms with the twin simulating ``runs`` (see module docstring)."""
    base = load_profile(profile_name)

    def values(x: np.ndarray) -> dict[str, float]:
        return {"lora_ms_base": math.exp(x[0]), "lora_ms_per_token": math.exp(x[1]),
                "lora_ms_per_token_slot": math.exp(x[2]), "lora_rank_slope": max(0.0, float(x[3]))}

    trace: list[tuple[float, dict[str, float]]] = []
    with process_pool(workers) as pool:
        def score(x: np.ndarray) -> dict[str, float]:
            prof = dataclasses.replace(base, step=dataclasses.replace(base.step, **values(x)))
            return next(iter(summarise(replay(runs, {profile_name: prof}, executor=pool)).values()))

        def objective(x: np.ndarray) -> float:
            t0 = time.perf_counter()
            s = score(x)
            obj = twin_objective(s)
            trace.append((obj, s))
            print(f"    twin eval {len(trace):2d}: ITL {s['itl_mare_pct']:5.2f}%  throughput "
                  f"{s['throughput_mare_pct']:4.2f}%  starvation {s['starvation_agreement_pct']:5.1f}%  "
                  f"objective {obj:6.2f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
            return obj

        x0 = np.array([math.log(start["lora_ms_base"]), math.log(start["lora_ms_per_token"]),
                       math.log(max(start["lora_ms_per_token_slot"], 1e-6)), start["lora_rank_slope"]])
        simplex = np.array([x0] + [x0 + d for d in np.diag(TWIN_SIMPLEX_STEPS)])
        res = minimize(objective, x0, method="Nelder-Mead",
                       options={"maxfev": evals, "initial_simplex": simplex, "xatol": 0.02, "fatol": 0.05})
    first, best = trace[0][1], min(trace, key=lambda t: t[0])[1]
    record = {"evals": len(trace), "runs": len(runs), "objective": "itl_mare + throughput_mare + 0.5 * disagreement",
              "step_level": {k: round(first[k], 2) for k in ("itl_mare_pct", "throughput_mare_pct",
                                                               "starvation_agreement_pct")},
              "refined": {k: round(best[k], 2) for k in ("itl_mare_pct", "throughput_mare_pct",
                                                           "starvation_agreement_pct")}}
    return values(res.x), record


def fit_admission(measured: list, params: dict, workers: int) -> None:
    """Stage 4: the admission delay per model from the fit-half runs (see module docstring)."""
    profiles = {}
    for name in PROFILE_FOR_MODEL.values():
        prof = load_profile(name)
        profiles[name] = dataclasses.replace(prof, client=dataclasses.replace(prof.client, admission_ms_per_adapter_sq=0.0))
    rows = [r for r in replay(measured, profiles, workers=workers) if r.memory_error is None]
    by_key = {r.key: r for r in measured}
    n = np.array([len(by_key[r.key].scenario["adapters"]) for r in rows])
    slots = np.array([by_key[r.key].scenario["server"]["max_loras"] for r in rows])
    use = admission_fit_mask(n, slots, [r.measured["mean_waiting"] for r in rows], [r.sim["mean_waiting"] for r in rows])
    fit_rows = [r for r, u in zip(rows, use) if u]
    # One delay for both models: it is paid outside the GPU step (the gaps match across models); the fit
    # half of one model alone may not reach many adapters (Llama's stops at 32).
    c, report = fit_admission_delay(n[use], [r.measured["mean_ttft_ms"] for r in fit_rows],
                                    [r.sim["mean_ttft_ms"] for r in fit_rows], groups=[r.model for r in fit_rows])
    for model in PROFILE_FOR_MODEL:
        params[model][ADMISSION_FITTED] = c
        params[model]["admission_fit"] = report
    print(f"admission delay {c:.4g} ms per squared adapter ({report['gap_ms_at_128_adapters']} ms at 128) from "
          f"{report['runs']} queue-free fit-half runs at {report['adapters']} adapters "
          f"({report['runs_per_group']}); intercepts {report['intercept_ms']} ms, residual RMS "
          f"{report['residual_rms_ms']} ms")


def write_params_and_profiles(params: dict) -> None:
    PARAMS_FILE.write_text(json.dumps(params, indent=2) + "\n")
    subprocess.run([sys.executable, str(ROOT / "calibrate" / "fit_profiles.py")], check=True,
                   stdout=subprocess.DEVNULL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "agullo-h100")
    ap.add_argument("--twin-evals", type=int, default=TWIN_EVALS,
                    help=f"twin simulations of the fit half per model in stage 3 (default {TWIN_EVALS}; 0 skips it)")
    ap.add_argument("--workers", type=int, default=2, help="processes for the twin stages (default 2)")
    ap.add_argument("--output-sigma", type=float, default=None,
                    help="fix the ShareGPT output-length dispersion (log sigma) instead of scanning it")
    ap.add_argument("--admission-only", action="store_true",
                    help="only stage 4 (the admission delay), on the parameters the file has")
    args = ap.parse_args()
    if args.admission_only:
        params = json.loads(PARAMS_FILE.read_text())
        fit_admission([r for r in holdout_split(read_runs(args.data / "real_runs.csv"), "fit") if r.ok], params,
                      args.workers)
        write_params_and_profiles(params)
        print(f"wrote {PARAMS_FILE.relative_to(ROOT)} and regenerated packer/profiles/")
        return 0
    raw = pd.read_csv(args.data / "real_runs.csv")
    fit_keys = {r.key for r in holdout_split(read_runs(args.data / "real_runs.csv"), "fit")}
    raw["key"] = [run_key(row) for row in raw[["model", "group", "max_loras", "n_adapters", "max_lora_rank"]]
                   .astype(str).to_dict("records")]
    params = json.loads(PARAMS_FILE.read_text()) if PARAMS_FILE.is_file() else {}
    profiles = {m: Profile.from_json(ROOT / "packer" / "profiles" / f"{n}.json") for m, n in PROFILE_FOR_MODEL.items()}
    kv_per_request = {m: measured_kv_tokens_per_request(raw[raw.model == m], profiles[m]) for m in PROFILE_FOR_MODEL}
    ok = raw[raw.status == "ok"]
    target = float(np.mean(list(kv_per_request.values())))
    means = float(ok.pool_mean_input_len.mean()), float(ok.pool_mean_output_len.mean())
    print(f"ShareGPT length shape: KV tokens per running request measured {target:.1f} "
          f"({', '.join(f'{m}: {v:.1f}' for m, v in kv_per_request.items())})")
    for model, profile_name in PROFILE_FOR_MODEL.items():
        runs = raw[raw.model == model]
        p = params.setdefault(model, {})
        p["output_len_scale"] = measured_output_scale(runs)
        p["max_waiting"] = measured_max_waiting(runs)
        prof = profiles[model]
        usable = runs[(runs.status == "ok") & runs.key.isin(fit_keys)]
        table = step_level_table(usable, prof, kv_per_request[model])
        lora, mape = fit_lora_tokens(table)
        p.pop("twin_stage", None)
        p.pop("step_level_values", None)
        p.update({k: round(v, 7) if isinstance(v, float) else v for k, v in lora.items()})
        p["fit_runs"] = int(len(usable))
        p["fit_itl_mape_pct_step_level"] = round(mape, 2)
        print(f"{model}: output_len_scale={p['output_len_scale']} (measured), max_waiting={p['max_waiting']} (measured)")
        print(f"  LoRA token cost on {len(usable)} fit-half runs: "
              + ", ".join(f"{k}={v:.4g}" for k, v in lora.items())
              + f"; step-level ITL MAPE {mape:.1f}%")
    write_params_and_profiles(params)
    measured = [r for r in holdout_split(read_runs(args.data / "real_runs.csv"), "fit") if r.ok]

    def shape_for(sigma: float) -> LengthShape:
        return shape_on_kv_curve(sigma, target, *means)

    if args.output_sigma is not None:
        shape, scan = shape_for(args.output_sigma), None
    else:
        print(f"output-length dispersion: twin on the {len(measured)} fit-half runs per value")
        shape, scan = choose_output_sigma(measured, shape_for, kv_per_request, args.workers)
    write_shape(shape, kv_per_request, scan)
    print(f"  sigma_log_output {shape.sigma_log_output}, rho {shape.rho} (prompt sigma {shape.sigma_log_prompt})")
    if args.twin_evals > 0:
        for model, profile_name in PROFILE_FOR_MODEL.items():
            p = params[model]
            start = {k: p[k] for k in LORA_KEYS}
            print(f"{model}: twin stage, {args.twin_evals} simulations of the fit half")
            refined, record = refine_on_twin(profile_name, [r for r in measured if r.model == model], start,
                                             args.twin_evals, args.workers)
            p["step_level_values"] = {k: round(v, 7) for k, v in start.items()}
            p.update({k: round(v, 7) for k, v in refined.items()})
            p["twin_stage"] = record
            print("  refined: " + ", ".join(f"{k}={v:.4g}" for k, v in refined.items())
                  + f"; fit half ITL {record['step_level']['itl_mare_pct']}% -> {record['refined']['itl_mare_pct']}%")
        write_params_and_profiles(params)
    fit_admission(measured, params, args.workers)
    write_params_and_profiles(params)
    print(f"wrote {PARAMS_FILE.relative_to(ROOT)} and regenerated packer/profiles/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
