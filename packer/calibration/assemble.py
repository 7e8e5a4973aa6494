"""Profile assembly: every stage fitted for every model of a calibration data set, and the results put
together as profile dicts (the ``packer.profile`` schema, with a ``fit_report``), rounded and JSON-ready.

The tables are those of ``io.read_measurements`` ({file stem: table}, every model's rows together);
``fit_micro_benchmarks`` fits the parts that do not depend on the end-to-end parameters once, and
``build_profiles`` adds the rest for given end-to-end parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .e2e import E2EParams
from .fitting import Table, rounded, select
from .io import SOURCE_FILES
from .loading import fit_loading
from .lora import fit_lora_overhead
from .memory import GPU_MEMORY_UTILIZATION, fit_memory
from .scheduler import SchedulerFit, fit_scheduler, scheduler_scale_by_model
from .step import STEP_TOKEN_BUDGET, DecodeFit, fit_decode, fit_prefill_per_token, prefill_rows, unusable_prefill_note

__all__ = ["ModelSpec", "MODELS", "GPU", "SCHEDULER_REFERENCE_MODEL", "PREFILL_REFERENCE_MODEL", "MicroFits",
           "fit_micro_benchmarks", "build_profiles"]

GPU = "h100-64gb"
SCHEDULER_REFERENCE_MODEL = "llama-3.1-8b-instruct"   # the (unrecorded) model of mb_scheduler_overhead
PREFILL_REFERENCE_MODEL = "llama-3.1-8b-instruct"     # the model whose prefill probe is usable


@dataclass(frozen=True)
class ModelSpec:
    """A model's constants: profile name, display title, KV bytes per token, context length, size."""
    name: str
    title: str
    kv_bytes_per_token: int
    max_model_len: int
    params_billion: float


MODELS = (
    ModelSpec("llama-3.1-8b-instruct", "Llama-3.1-8B-Instruct", 131072, 131072, 8.0),
    ModelSpec("qwen-2.5-7b-instruct", "Qwen-2.5-7B-Instruct", 57344, 32768, 7.6),
)


@dataclass(frozen=True)
class MicroFits:
    """The fits that do not depend on the end-to-end parameters, per model (and the tables they came from)."""
    data: Mapping[str, Table]
    models: tuple[ModelSpec, ...]
    sched: dict[str, SchedulerFit]
    sched_report: dict[str, dict]
    decode: dict[str, tuple[DecodeFit, dict]]
    prefill: dict[str, tuple[float, dict]]


def _of_model(table: Table, model: str) -> dict:
    return select(table, table["model"] == model)


def fit_micro_benchmarks(data: Mapping[str, Table], models: tuple[ModelSpec, ...] = MODELS) -> MicroFits:
    """Scheduler, decode table and prefill cost of every model.

    The scheduler runs (one model, SCHEDULER_REFERENCE_MODEL) give one fit, rescaled per model; a model
    without usable prefill rows gets PREFILL_REFERENCE_MODEL's cost scaled by the parameter counts."""
    steps = data["mb_base_step_latency"]
    sched_fit, sched_report = fit_scheduler(
        data["mb_scheduler_overhead"], model_note="the model of the runs is not recorded, taken as Llama-3.1-8B")
    factors, scale_report = scheduler_scale_by_model(data["mb_lora_decode_overhead"], sched_fit,
                                                     SCHEDULER_REFERENCE_MODEL)
    sched = {m.name: sched_fit.scaled(factors[m.name]) for m in models}
    sched_reports = {m.name: dict(sched_report, scale_factor=factors[m.name], scale_from_lora_overhead_file=scale_report)
                     for m in models}
    decode = {m.name: fit_decode(_of_model(steps, m.name), sched[m.name]) for m in models}

    prefill = {}
    for spec in models:
        usable, unusable = prefill_rows(_of_model(steps, spec.name))
        value, report = fit_prefill_per_token(usable, decode[spec.name][0], sched[spec.name]) \
            if len(usable["steps"]) else (None, {"rows_used": 0, "notes": []})
        if len(unusable["steps"]):
            report["notes"].append(unusable_prefill_note(unusable))
        prefill[spec.name] = (value, report)
    reference = next(m for m in models if m.name == PREFILL_REFERENCE_MODEL)
    for spec in models:
        value, report = prefill[spec.name]
        if value is None:
            ratio = spec.params_billion / reference.params_billion
            report["notes"].append(f"scaled from {reference.name} by the parameter-count ratio "
                                   f"{spec.params_billion}B / {reference.params_billion}B = {ratio:.3f}")
            prefill[spec.name] = (prefill[reference.name][0] * ratio, report)
    return MicroFits(data, tuple(models), sched, sched_reports, decode, prefill)


def build_profiles(fits: MicroFits, e2e: E2EParams, *, data_name: str = "agullo-h100",
                   fitted_by: str = "calibrate/fit_profiles.py") -> dict[str, dict]:
    """Fit the remaining parts for every model; returns {profile name: profile dict} (rounded, JSON-ready).

    ``data_name`` (the data set) and ``fitted_by`` (the program) are recorded in each profile."""
    profiles = {}
    for spec in fits.models:
        params, sched = e2e.params[spec.name], fits.sched[spec.name]
        decode, decode_report = fits.decode[spec.name]
        prefill_ms_per_token, prefill_report = fits.prefill[spec.name]
        lora, lora_report = fit_lora_overhead(_of_model(fits.data["mb_lora_decode_overhead"], spec.name),
                                              decode, sched, params)
        memory, memory_report = fit_memory(_of_model(fits.data["mb_kv_capacity"], spec.name),
                                           spec.kv_bytes_per_token, spec.max_model_len)
        loading, loading_report = fit_loading(_of_model(fits.data["mb_adapter_loading"], spec.name))
        profile = {
            "name": f"{spec.name}@{GPU}",
            "model": spec.name,
            "gpu": GPU,
            "description": (f"{spec.title} on one NVIDIA H100 64 GB, vLLM 0.8.5 V1 engine, bf16, "
                            f"gpu_memory_utilization {GPU_MEMORY_UTILIZATION}, max_num_batched_tokens "
                            f"{STEP_TOKEN_BUDGET}; fitted by {fitted_by} from the {data_name} "
                            f"micro-benchmarks, end-to-end parameters from {e2e.source}"),
            "memory": memory,
            "step": {
                "decode_batch": list(decode.batch), "decode_ms": list(decode.ms),
                "prefill_ms_per_token": prefill_ms_per_token,
                "lora_ms_base": params["lora_ms_base"],
                "lora_ms_per_token": params["lora_ms_per_token"],
                "lora_ms_per_adapter": lora["lora_ms_per_adapter"],
                "lora_ms_per_token_slot": params["lora_ms_per_token_slot"],
                "lora_rank_ref": params["lora_rank_ref"], "lora_rank_slope": params["lora_rank_slope"],
                "attention_ms_per_kv_token": decode.ms_per_context_token,
                "decode_ctx_ref": decode.ctx_ref,
            },
            "scheduler": {"ms_base": sched.ms_base, "ms_per_running": sched.ms_per_running,
                          "ms_per_waiting": sched.ms_per_waiting},
            "loading": loading,
            "client": {"max_waiting": int(params["max_waiting"]), "output_len_scale": params["output_len_scale"],
                       "admission_ms_per_adapter_sq": params["admission_ms_per_adapter_sq"]},
            "fit_report": {
                "memory": memory_report, "scheduler": fits.sched_report[spec.name], "decode": decode_report,
                "prefill": prefill_report, "lora": lora_report, "loading": loading_report,
                "e2e": {"source": e2e.source, "values": params, "other_keys_in_file": e2e.extra[spec.name]},
                "sources": [f"{data_name}/{f}" for f in SOURCE_FILES] + [e2e.source],
            },
        }
        profiles[profile["name"]] = rounded(profile)
    return profiles
