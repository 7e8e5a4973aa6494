"""The end-to-end parameters: the profile numbers the micro-benchmarks cannot pin down (the LoRA token
costs, their rank scaling, the client's queue limit and output-length scale, the admission delay),
calibrated on end-to-end runs (``calibrate/fit_e2e.py``) and merged with per-model defaults here.

The admission delay is fitted (``ADMISSION_FITTED``, kept in the file) but shipped as the file's
``admission_ms_per_adapter_sq`` (0 today: the shipped capacity tables and tree models were made
without it); ``with_fitted_admission`` puts the fitted value in its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["E2E_KEYS", "E2E_DEFAULTS", "ADMISSION_FITTED", "E2EParams", "merge_e2e_params", "with_fitted_admission"]

E2E_KEYS = ("lora_ms_base", "lora_ms_per_token", "lora_ms_per_token_slot", "lora_rank_ref", "lora_rank_slope",
            "max_waiting", "output_len_scale", "admission_ms_per_adapter_sq")
ADMISSION_FITTED = "admission_ms_per_adapter_sq_fitted"   # the fitted admission delay (an extra key)
_E2E_COMMON_DEFAULTS = {"lora_ms_base": 3.0, "lora_ms_per_token": 0.015, "lora_ms_per_token_slot": 0.0003,
                        "lora_rank_ref": 8, "lora_rank_slope": 0.3, "max_waiting": 25000,
                        "admission_ms_per_adapter_sq": 0.0}
E2E_DEFAULTS = {
    "llama-3.1-8b-instruct": dict(_E2E_COMMON_DEFAULTS, output_len_scale=0.99),
    "qwen-2.5-7b-instruct": dict(_E2E_COMMON_DEFAULTS, output_len_scale=0.96),
}


@dataclass(frozen=True)
class E2EParams:
    """Per model: the E2E_KEYS values (``params``), other keys given (``extra``, reported only), and where
    the values came from (``source``, written into the profile)."""
    params: dict[str, dict[str, Any]]
    extra: dict[str, dict[str, Any]]
    source: str


def merge_e2e_params(given: Mapping[str, Mapping[str, Any]] | None, source: str,
                     defaults: Mapping[str, Mapping[str, Any]] = E2E_DEFAULTS) -> E2EParams:
    """``given`` ({model: {key: value}}, None when there is none) over ``defaults``, for every model of
    ``defaults``; ``source`` names where ``given`` came from (None: the defaults alone)."""
    if given is None:
        return E2EParams({m: dict(v) for m, v in defaults.items()}, {m: {} for m in defaults}, source)
    params, extra, defaulted = {}, {}, []
    for model, model_defaults in defaults.items():
        values = given.get(model, {})
        params[model] = {k: values.get(k, model_defaults[k]) for k in E2E_KEYS}
        extra[model] = {k: v for k, v in values.items() if k not in E2E_KEYS}
        defaulted += [f"{model}.{k}" for k in E2E_KEYS if k not in values]
    return E2EParams(params, extra, source + (f" (defaults for {', '.join(defaulted)})" if defaulted else ""))


def with_fitted_admission(e2e: E2EParams) -> E2EParams:
    """``e2e`` with each model's fitted admission delay (``ADMISSION_FITTED``) as its
    ``admission_ms_per_adapter_sq``; a model without a fitted value keeps its own."""
    params = {m: dict(p, admission_ms_per_adapter_sq=e2e.extra[m].get(ADMISSION_FITTED, p["admission_ms_per_adapter_sq"]))
              for m, p in e2e.params.items()}
    return E2EParams(params, e2e.extra, e2e.source + " with the fitted admission delay")
