"""The fit report: every fitted coefficient with its meaning and the fit error of each part, printed
from a profile dict as ``assemble.build_profiles`` makes it (the same figures as its ``fit_report``).
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["MEANINGS", "fmt", "fmt_stats", "print_profile"]

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
    "admission_ms_per_adapter_sq": "ms from sent to the waiting queue, per squared adapter served",
}


def fmt(v: Any) -> str:
    """A value as printed: floats to 6 significant digits, lists element by element."""
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def fmt_stats(s: dict | None, unit: str = "") -> str:
    """One line of fit statistics (``fitting.error_stats``), ``unit`` after each error."""
    if not s:
        return "n/a"
    return (f"n={s['n']} MAE={s['mae']:.4g}{unit} MAPE={s['mape_pct']:.2f}% max={s['max_abs_err']:.4g}{unit} "
            f"R²={s['r2']:.4f}")


def print_profile(p: dict, out: Callable[[str], None] = print) -> None:
    """Write the fit report of profile dict ``p`` line by line to ``out``."""
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
    for k in ("max_waiting", "output_len_scale", "admission_ms_per_adapter_sq"):
        line(f"client.{k}", cl.get(k, 0.0), MEANINGS[k])
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
