"""The admission delay: the time between a request being sent and its entry into the engine's waiting
queue, which grows with the square of the adapters the server serves (``ClientModel.admission_delay_ms``).

On real runs without a queue, TTFT is the wait for the step in flight plus the prefill step, which
the twin reproduces; what it leaves over (real − twin mean TTFT) is a delay of the new request alone.
It grows about as the square of the adapters served (≈ 25 ms at 64, 100 ms at 128, 230–270 ms at
192), the same for Llama and Qwen, and does not follow the slots, the rank, the request rate (16
adapters at 1 and at 15.6 req/s leave the same 3–6 ms) or the running batch (see
docs/latency_fidelity.md). The fit is one least squares, ``gap = a_group + c * n_adapters**2``, on the
runs where neither the real server nor the twin queued and every adapter had a slot (so neither
max_loras admission nor slot churn delays the request): ``c`` is ``admission_ms_per_adapter_sq``; the
intercepts ``a`` (one per model) absorb the twin's small constant TTFT bias at few adapters and are
reported, not used.
"""

from __future__ import annotations

import numpy as np

from .fitting import SIG_DIGITS

__all__ = ["QUEUE_FREE_WAITING", "admission_fit_mask", "fit_admission_delay"]

QUEUE_FREE_WAITING = 0.1   # mean waiting requests below which a run counts as queue-free (real and twin)


def admission_fit_mask(n_adapters, max_loras, real_mean_waiting, twin_mean_waiting):
    """The runs the fit uses: queue-free in reality and in the twin, every adapter with a slot."""
    n, slots = np.asarray(n_adapters, float), np.asarray(max_loras, float)
    return ((np.asarray(real_mean_waiting, float) < QUEUE_FREE_WAITING)
            & (np.asarray(twin_mean_waiting, float) < QUEUE_FREE_WAITING) & (n <= slots))


def fit_admission_delay(n_adapters, real_ttft_ms, twin_ttft_ms, groups=None) -> tuple[float, dict]:
    """``admission_ms_per_adapter_sq`` (≥ 0) from the queue-free runs' TTFT gap, and a report.

    ``twin_ttft_ms``: the twin's mean TTFT with no admission delay. ``groups`` (e.g. the model of each
    run): one intercept per group, one ``c`` for all. Needs runs at 2 or more adapter counts."""
    n = np.asarray(n_adapters, float)
    gap = np.asarray(real_ttft_ms, float) - np.asarray(twin_ttft_ms, float)
    if len(np.unique(n)) < 2:
        raise ValueError(f"fit_admission_delay: needs queue-free runs at 2 or more adapter counts, got {sorted(set(n))}")
    g = np.zeros(len(n), dtype=object) if groups is None else np.asarray(groups, dtype=object)
    names = sorted(set(g.tolist()), key=str)
    X = np.column_stack([(g == k).astype(float) for k in names] + [n * n])
    coef, *_ = np.linalg.lstsq(X, gap, rcond=None)
    c = max(0.0, float(coef[-1]))
    resid = gap - X[:, :-1] @ coef[:-1] - c * n * n
    value = float(f"{c:.{SIG_DIGITS}g}")
    report = {"runs": int(len(n)), "adapters": sorted({int(x) for x in n}),
              "model": "real - twin mean TTFT = intercept + c * n_adapters^2",
              "c_ms_per_adapter_sq": value, "residual_rms_ms": round(float(np.sqrt(np.mean(resid ** 2))), 2),
              "gap_ms_at_128_adapters": round(c * 128 * 128, 1)}
    if groups is None:
        report["intercept_ms"] = round(float(coef[0]), 2)
    else:
        report["intercept_ms"] = {str(k): round(float(a), 2) for k, a in zip(names, coef[:-1])}
        report["runs_per_group"] = {str(k): int(np.sum(g == k)) for k in names}
    return value, report
