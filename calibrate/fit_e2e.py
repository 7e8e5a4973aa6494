"""Calibrate, against the end-to-end runs, the profile numbers the micro-benchmarks cannot pin down.

    python calibrate/fit_e2e.py [--data ../shared/data/agullo-h100]

What the micro-benchmarks leave open, and how each is set here (per model):

measured directly from the end-to-end runs:
- ``output_len_scale``: generated / requested output tokens (early EOS), median over runs that
  completed essentially every request (so the completed set is not biased towards short requests).
- ``max_waiting``: the waiting-queue length at which the measured load generator stopped sending:
  the median of ``max_waiting`` over runs that completed under half of what they sent.

fitted by least squares on the ok runs of the "fit" half (``packer.validation.holdout_split``; the
other half is left for ``benchmarks/twin_fidelity.py --split holdout``):
- ``lora_ms_base``, ``lora_ms_per_token``, ``lora_ms_per_token_slot``: the LoRA cost per step, per
  token and per token per reserved slot. The LoRA micro-benchmark has a single batch size and 300
  slots, so it cannot separate these; the real runs span 1-2000 tokens per step and 8-192 slots.
- ``lora_rank_slope``: how that cost grows with ``max_lora_rank`` (the micro-benchmarks are rank 8).

The fit works on step-level averages: for each run, the
measured mean ITL is taken as the mean step time, and everything the micro-benchmarks fitted (base
decode table with its context term, prefill per token, per-adapter LoRA cost, scheduler) is
subtracted at the run's measured batch, queue and prefill tokens per step; what remains is the LoRA
token cost, regressed on its three terms (non-negative least squares on relative error, the rank
slope by a 1-D grid). The twin is not in this loop: it is judged afterwards by the fidelity benchmark.

Writes ``calibrate/e2e_params.json`` and re-runs ``calibrate/fit_profiles.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from packer.model import LengthSpec  # noqa: E402
from packer.profile import Profile  # noqa: E402
from packer.twin.workload_gen import SHAPE_FILES, LengthShape, length_shape, lognormal_lengths  # noqa: E402
from packer.replay import PROFILE_FOR_MODEL, read_runs, run_key  # noqa: E402
from packer.validation import holdout_split  # noqa: E402

PARAMS_FILE = ROOT / "calibrate" / "e2e_params.json"
RANK_REF = 8
RANK_SLOPES = np.round(np.arange(0.0, 1.51, 0.02), 2)


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


def fit_sharegpt_shape(target_kv: float, input_mean: float, output_mean: float) -> LengthShape:
    """The ShareGPT pool's length shape is not recorded: keep the prompt dispersion of the Azure
    conversation shape, take prompt and output as uncorrelated (no evidence either way), and solve the
    output dispersion so that the KV tokens per running request match the measured value."""
    sigma_prompt = length_shape("azure-conv").sigma_log_prompt
    lo, hi = 0.05, 2.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if kv_tokens_per_request(LengthShape(sigma_prompt, mid, 0.0), input_mean, output_mean) < target_kv:
            lo = mid
        else:
            hi = mid
    return LengthShape(sigma_prompt, round((lo + hi) / 2, 4), 0.0)


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
    n_adapters = d.n_adapters.to_numpy(float)
    distinct = np.minimum(d.max_loras.to_numpy(float), n_adapters * (1 - (1 - 1 / n_adapters) ** running))
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "agullo-h100")
    args = ap.parse_args()
    raw = pd.read_csv(args.data / "real_runs.csv")
    fit_keys = {r.key for r in holdout_split(read_runs(args.data / "real_runs.csv"), "fit")}
    raw["key"] = [run_key(row) for row in raw[["model", "group", "max_loras", "n_adapters", "max_lora_rank"]]
                   .astype(str).to_dict("records")]
    params = json.loads(PARAMS_FILE.read_text()) if PARAMS_FILE.is_file() else {}
    profiles = {m: Profile.from_json(ROOT / "packer" / "profiles" / f"{n}.json") for m, n in PROFILE_FOR_MODEL.items()}
    kv_per_request = {m: measured_kv_tokens_per_request(raw[raw.model == m], profiles[m]) for m in PROFILE_FOR_MODEL}
    ok = raw[raw.status == "ok"]
    target = float(np.mean(list(kv_per_request.values())))
    shape = fit_sharegpt_shape(target, float(ok.pool_mean_input_len.mean()), float(ok.pool_mean_output_len.mean()))
    shape_file = ROOT / "packer" / "data" / SHAPE_FILES["sharegpt"]
    shape_file.write_text(json.dumps({
        **shape._asdict(), "source": "calibrate/fit_e2e.py",
        "method": "sigma_log_prompt from the azure-conv shape; rho 0; sigma_log_output solved so that the KV tokens "
                  "held per running request match the real runs' median (mean KV usage x capacity / mean batch)",
        "measured_kv_tokens_per_running_request": {m: round(v, 1) for m, v in kv_per_request.items()},
    }, indent=2) + "\n")
    length_shape.cache_clear()
    print(f"ShareGPT length shape: KV tokens per running request measured {target:.1f} "
          f"({', '.join(f'{m}: {v:.1f}' for m, v in kv_per_request.items())}) -> sigma_log_output "
          f"{shape.sigma_log_output} (prompt sigma {shape.sigma_log_prompt}, rho 0)")
    for model, profile_name in PROFILE_FOR_MODEL.items():
        runs = raw[raw.model == model]
        p = params.setdefault(model, {})
        p["output_len_scale"] = measured_output_scale(runs)
        p["max_waiting"] = measured_max_waiting(runs)
        prof = profiles[model]
        usable = runs[(runs.status == "ok") & runs.key.isin(fit_keys)]
        table = step_level_table(usable, prof, kv_per_request[model])
        lora, mape = fit_lora_tokens(table)
        p.update({k: round(v, 7) if isinstance(v, float) else v for k, v in lora.items()})
        p["fit_runs"] = int(len(usable))
        p["fit_itl_mape_pct_step_level"] = round(mape, 2)
        print(f"{model}: output_len_scale={p['output_len_scale']} (measured), max_waiting={p['max_waiting']} (measured)")
        print(f"  LoRA token cost on {len(usable)} fit-half runs: "
              + ", ".join(f"{k}={v:.4g}" for k, v in lora.items())
              + f"; step-level ITL MAPE {mape:.1f}%")
    PARAMS_FILE.write_text(json.dumps(params, indent=2) + "\n")
    subprocess.run([sys.executable, str(ROOT / "calibrate" / "fit_profiles.py")], check=True,
                   stdout=subprocess.DEVNULL)
    print(f"wrote {PARAMS_FILE.relative_to(ROOT)} and regenerated packer/profiles/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
