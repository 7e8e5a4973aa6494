"""Scheduler overhead: CPU ms per engine step = base + per_running * running + per_waiting * waiting.

Fitted on scheduler-overhead runs (columns ``sched_time_per_step_ms``, ``avg_batch_size``,
``avg_waiting_queue``, ``cpu_loras``, ``gpu_loras``), then rescaled per model from the scheduler time
logged by decode probes of other models (``scheduler_scale_by_model``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fitting import Table, error_stats, nnls, ols_summary, select, unique_in_order

__all__ = ["SchedulerFit", "fit_scheduler", "scheduler_scale_by_model"]


@dataclass(frozen=True)
class SchedulerFit:
    """The fitted scheduler cost (the profile's ``scheduler`` section)."""
    ms_base: float
    ms_per_running: float
    ms_per_waiting: float

    def ms(self, running, waiting):
        """Scheduler ms per step at ``running`` requests in the batch and ``waiting`` in the queue."""
        return self.ms_base + self.ms_per_running * np.asarray(running) + self.ms_per_waiting * np.asarray(waiting)

    def scaled(self, factor: float) -> "SchedulerFit":
        """Every coefficient multiplied by ``factor``."""
        return SchedulerFit(self.ms_base * factor, self.ms_per_running * factor, self.ms_per_waiting * factor)


def fit_scheduler(sched: Table, *, model_note: str) -> tuple[SchedulerFit, dict]:
    """NNLS of sched_time_per_step_ms on [1, avg_batch_size, avg_waiting_queue]; checks richer forms.

    ``model_note`` (in the report) says which model the runs stand for."""
    y = np.asarray(sched["sched_time_per_step_ms"], float)
    running, waiting = np.asarray(sched["avg_batch_size"], float), np.asarray(sched["avg_waiting_queue"], float)
    X = np.column_stack([np.ones(len(y)), running, waiting])
    coef = nnls(X, y)
    fit = SchedulerFit(*(float(c) for c in coef))
    stats = error_stats(y, X @ coef)

    # Do cpu_loras / gpu_loras explain more? (unconstrained least squares, for comparison only)
    cpu, gpu = np.asarray(sched["cpu_loras"], float), np.asarray(sched["gpu_loras"], float)
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
            f"NNLS on all rows; {model_note}",
            f"cpu_loras and gpu_loras add explanatory power: R² {extended['ols_3_terms']['r2']:.3f} -> "
            f"{plus['r2']:.3f} (MAE {extended['ols_3_terms']['mae']:.3f} -> {plus['mae']:.3f} ms) with "
            f"{plus['coef']['cpu_loras']:+.4f} ms per served adapter and {plus['coef']['gpu_loras']:+.4f} ms "
            "per GPU slot: the scheduler scans the requests that the max_loras limit skips. The JSON keeps "
            "the 3-parameter form (schema), i.e. an average over the measured LoRA configurations",
        ],
    }
    return fit, report


def scheduler_scale_by_model(lora: Table, fit: SchedulerFit, reference_model: str) -> tuple[dict[str, float], dict]:
    """Per-model factor for the scheduler fit, from the ``sched_time_mean_ms`` of LoRA decode probes.

    ratio(model) = mean(measured / predicted) over that model's decode-probe rows (``experiment``
    ``baseline_no_lora`` or ``lora_decode``); the factor is ratio(model) / ratio(reference_model), so
    the reference model (the one the scheduler runs were measured on) keeps the fit as is.
    """
    measured = np.asarray(lora["sched_time_mean_ms"], float)
    rows = select(lora, np.isin(lora["experiment"], ["baseline_no_lora", "lora_decode"]) & ~np.isnan(measured))
    ratio = {}
    for model in sorted(unique_in_order(rows["model"])):
        g = select(rows, rows["model"] == model)
        ratio[model] = float(np.mean(g["sched_time_mean_ms"] / fit.ms(g["mean_running"], g["mean_waiting"])))
    ref = ratio[reference_model]
    factors = {m: r / ref for m, r in ratio.items()}
    report = {
        "measured_over_predicted": ratio,
        "rows": {m: int((rows["model"] == m).sum()) for m in ratio},
        "notes": [
            f"sched_time_mean_ms of the decode probes in mb_lora_decode_overhead (no max_loras limit, "
            f"~2k waiting) is {ref:.2f}x what the fit predicts for {reference_model}: the "
            "fit's costs come from LoRA-limited runs with many adapters",
            "each model's coefficients are multiplied by its measured/predicted ratio divided by "
            f"{reference_model}'s (the model mb_scheduler_overhead is taken to be)",
        ],
    }
    return factors, report
