"""KV-cache memory: what a server start leaves to the KV cache, from KV-capacity starts of one model.

Columns used: ``status`` (``ok`` or the failure class), ``max_loras``, ``max_lora_rank``,
``kv_cache_tokens`` (ok starts) and ``kv_avail_gib_reported`` (GiB vLLM reported when refusing; NaN
where not logged).
"""

from __future__ import annotations

import numpy as np

from ..profile import GIB, MemoryModel
from .fitting import Table, error_stats, nnls, rounded, select

__all__ = ["GPU_MEMORY_GIB", "GPU_MEMORY_UTILIZATION", "BLOCK_SIZE", "STATUS_TO_ERROR", "fit_memory"]

GPU_MEMORY_GIB = 64.0
GPU_MEMORY_UTILIZATION = 0.9          # every measured run
BLOCK_SIZE = 16
# measured failure status -> the class MemoryModel.startup_error names
STATUS_TO_ERROR = {"oom_kv_below_max_model_len": "kv_below_max_model_len", "oom_no_kv_blocks": "no_kv_blocks"}


def fit_memory(kv: Table, kv_bytes_per_token: int, max_model_len: int, *, gpu_memory_gib: float = GPU_MEMORY_GIB,
               gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
               block_size: int = BLOCK_SIZE) -> tuple[dict, dict]:
    """Least squares for non_kv_gib, slot_mib_base, slot_mib_per_rank on the ok starts; checks failures.

    used_gib = utilization * gpu_gib - kv_tokens * bytes_per_token / GiB
             = non_kv_gib + max_loras * (slot_mib_base + slot_mib_per_rank * max_lora_rank) / 1024
    Returns the profile's ``memory`` section and the fit report (every start predicted by the fitted
    ``MemoryModel``: ok starts must start, refused ones must fail).
    """
    ok = select(kv, kv["status"] == "ok")
    used_gib = gpu_memory_utilization * gpu_memory_gib - ok["kv_cache_tokens"] * kv_bytes_per_token / GIB
    X = np.column_stack([np.ones(len(used_gib)), ok["max_loras"] / 1024, ok["max_loras"] * ok["max_lora_rank"] / 1024])
    non_kv_gib, slot_base, slot_per_rank = nnls(X, used_gib)
    memory = {
        "gpu_memory_gib": gpu_memory_gib, "non_kv_gib": float(non_kv_gib),
        "kv_bytes_per_token": kv_bytes_per_token, "slot_mib_base": float(slot_base),
        "slot_mib_per_rank": float(slot_per_rank), "max_model_len": max_model_len, "block_size": block_size,
    }
    model = MemoryModel(**rounded(memory))
    starts = lambda df: zip(np.asarray(df["max_loras"]).tolist(), np.asarray(df["max_lora_rank"]).tolist())
    predicted_tokens = [model.kv_tokens(n, r) for n, r in starts(ok)]

    failing = select(kv, kv["status"] != "ok")
    mismatches, ok_predicted_ok, failing_predicted_failing, class_agree = [], 0, 0, 0
    for (n, r), status in zip(starts(kv), np.asarray(kv["status"]).tolist()):
        error = model.startup_error(int(n), int(r))
        predicted = "ok" if error is None else error.split(":")[0]
        if status == "ok":
            ok_predicted_ok += predicted == "ok"
        else:
            failing_predicted_failing += predicted != "ok"
            class_agree += predicted != "ok" and STATUS_TO_ERROR.get(status, predicted) == predicted
        if (status == "ok") != (predicted == "ok"):
            mismatches.append(f"max_loras={n} max_lora_rank={r}: measured {status}, predicted {predicted}")

    reported = select(failing, ~np.isnan(np.asarray(failing["kv_avail_gib_reported"], float)))
    predicted_gib = [model.kv_bytes(n, r) / GIB for n, r in starts(reported)]
    measured_tokens = np.asarray(ok["kv_cache_tokens"], float)
    report = {
        "rows_used": int(len(measured_tokens)),
        "kv_tokens": error_stats(measured_tokens, predicted_tokens),
        "max_abs_err_pct_of_largest_kv": float(100 * np.max(np.abs(measured_tokens - predicted_tokens))
                                               / measured_tokens.max()),
        "slot_mib_at_rank": {str(r): model.slot_mib(r) for r in (8, 16, 32)},
        "startup_check": {
            "failing_rows": int(len(failing["status"])), "failing_predicted_failing": int(failing_predicted_failing),
            "failure_class_agrees": int(class_agree),
            "ok_rows": int(len(measured_tokens)), "ok_predicted_ok": int(ok_predicted_ok),
            "mismatches": mismatches,
        },
        "reported_kv_gib_of_refused_starts": error_stats(reported["kv_avail_gib_reported"], predicted_gib)
        if len(predicted_gib) else None,
        "notes": [
            "least squares (non-negative) on the ok starts; the failure rows are predictions only",
            "oom_cuda starts crash before vLLM sizes the KV cache; any predicted start-up error counts "
            "as agreeing in class",
        ],
    }
    return memory, report
