"""Base-model step costs: the decode table (GPU ms vs sequences in the step, with a KV-context term)
and the prefill cost per prompt token, from base-step-latency probes of one model.

Columns used: ``probe`` (``decode`` / ``prefill``), ``mean_itl_ms``, ``mean_running``, ``mean_waiting``,
``input_tokens_per_req``, ``output_tokens_per_req``, ``preemptions``, ``max_num_seqs``, ``output_len``;
prefill rows also ``duration``, ``total_input_tokens`` and ``num_prompts``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fitting import Table, error_stats, group_mean, interp_linear, nnls, select, unique_in_order
from .scheduler import SchedulerFit

__all__ = ["DecodeFit", "DECODE_KNOT_CANDIDATES", "STEP_TOKEN_BUDGET", "MIN_PREFILL_STEPS", "hinge_basis",
           "fit_decode", "prefill_rows", "fit_prefill_per_token", "unusable_prefill_note"]

STEP_TOKEN_BUDGET = 2048              # max_num_batched_tokens in every measured run
MIN_PREFILL_STEPS = 20                # a prefill probe row needs this many engine steps to be usable
# Candidate knots of the decode table; the set with the lowest leave-one-batch-size-out error wins.
DECODE_KNOT_CANDIDATES = (
    (1, 200, 1024),
    (1, 100, 400, 1024),
    (1, 100, 200, 400, 1024),
    (1, 100, 200, 400, 700, 1024),
)


@dataclass(frozen=True)
class DecodeFit:
    """The fitted decode table and its KV-context term (the profile's decode_* and attention fields)."""
    batch: tuple[float, ...]
    ms: tuple[float, ...]
    ms_per_context_token: float    # extra ms per sequence per context token above ctx_ref (per KV token read)
    ctx_ref: float                 # mean context (prompt + half the output) the table stands for

    def table_ms(self, n_seqs):
        """The table at ``n_seqs`` (linear interpolation and extrapolation)."""
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


def _design(rows: Table, knots: np.ndarray, ctx_ref: float) -> np.ndarray:
    x = np.asarray(rows["mean_running"], float)
    return np.column_stack([hinge_basis(x, knots), x * (np.asarray(rows["context"], float) - ctx_ref)])


def _fit_spline_with_context(rows: Table, knots: np.ndarray, ctx_ref: float) -> np.ndarray:
    return nnls(_design(rows, knots, ctx_ref), rows["gpu_ms"])


def _leave_one_batch_out_mape(rows: Table, knots: np.ndarray, ctx_ref: float) -> float:
    """MAPE (%) when each max_num_seqs group is predicted by a fit on the other groups."""
    errors = []
    for group in unique_in_order(rows["max_num_seqs"]):
        held = rows["max_num_seqs"] == group
        train, test = select(rows, ~held), select(rows, held)
        coef = _fit_spline_with_context(train, knots, ctx_ref)
        pred = _design(test, knots, ctx_ref) @ coef
        errors.extend(np.abs(pred - test["gpu_ms"]) / test["gpu_ms"])
    return float(100 * np.mean(errors))


def fit_decode(steps: Table, sched: SchedulerFit,
               knot_candidates: tuple[tuple[float, ...], ...] = DECODE_KNOT_CANDIDATES) -> tuple[DecodeFit, dict]:
    """Monotone linear spline of base-model GPU step time vs batch, from the decode probe rows of ``steps``.

    y = mean_itl_ms - scheduler(mean_running, mean_waiting). ITL at a fixed batch also grows with the
    context length (attention reads the KV cache), and dropping preempted runs would unbalance the
    output lengths of a batch size; so each run is fitted with a covariate x * (context - ctx_ref),
    where context = prompt + output/2 is the mean context of a running request and ctx_ref its mean
    over the probe design. The table is the spline at ctx_ref, i.e. averaged over output lengths.
    The knots are the candidate set with the lowest leave-one-batch-size-out MAPE.
    """
    probe = select(steps, steps["probe"] == "decode")
    probe["context"] = probe["input_tokens_per_req"] + probe["output_tokens_per_req"] / 2
    ctx_ref = float(np.mean(probe["context"]))
    preempted = select(probe, probe["preemptions"] > 0)
    rows = select(probe, probe["preemptions"] == 0)
    rows["gpu_ms"] = rows["mean_itl_ms"] - sched.ms(rows["mean_running"], rows["mean_waiting"])

    cv = {str(k): _leave_one_batch_out_mape(rows, np.array(k, float), ctx_ref) for k in knot_candidates}
    knots = np.array(min(knot_candidates, key=lambda k: cv[str(k)]), float)
    coef = _fit_spline_with_context(rows, knots, ctx_ref)
    table = hinge_basis(knots, knots) @ coef[:-1]
    fit = DecodeFit(tuple(knots), tuple(table), float(coef[-1]), ctx_ref)

    with_context = fit.gpu_ms(rows["mean_running"], rows["context"])
    group_running = group_mean(rows["max_num_seqs"], rows["mean_running"])
    group_gpu_ms = group_mean(rows["max_num_seqs"], rows["gpu_ms"])
    report = {
        "rows_used": int(len(rows["gpu_ms"])),
        "rows_excluded": [f"max_num_seqs={int(seqs)} output_len={int(out)}: {int(pre)} preemptions"
                          for seqs, out, pre in zip(preempted["max_num_seqs"], preempted["output_len"],
                                                    preempted["preemptions"])],
        "fit_with_context_term": error_stats(rows["gpu_ms"], with_context),
        "table_only_vs_runs": error_stats(rows["gpu_ms"], fit.table_ms(rows["mean_running"])),
        "table_vs_batch_size_means": error_stats(list(group_gpu_ms.values()),
                                                 fit.table_ms(list(group_running.values()))),
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


def prefill_rows(steps: Table) -> tuple[dict, dict]:
    """(usable, unusable) prefill-probe rows of ``steps``, with a ``steps`` column (engine steps of the
    run at STEP_TOKEN_BUDGET prompt tokens each): usable rows span >= MIN_PREFILL_STEPS steps."""
    probe = select(steps, steps["probe"] == "prefill")
    probe["steps"] = probe["total_input_tokens"] / STEP_TOKEN_BUDGET
    usable = probe["steps"] >= MIN_PREFILL_STEPS
    return select(probe, usable), select(probe, ~usable)


def fit_prefill_per_token(rows: Table, decode: DecodeFit, sched: SchedulerFit) -> tuple[float, dict]:
    """Extra GPU ms per prompt token: each step carries ~2048 prompt tokens of a flood of 1-token requests.

    ``rows``: the usable rows of ``prefill_rows``. step_ms = duration / steps; seqs per step =
    2048 / prompt_len + 1 (one request straddles the chunk boundary); per token = (step_ms -
    decode_table(seqs) - scheduler) / 2048, averaged over the rows.
    """
    step_ms = rows["duration"] * 1000 / rows["steps"]
    seqs = STEP_TOKEN_BUDGET / rows["input_tokens_per_req"] + 1
    sched_ms = sched.ms(rows["mean_running"], rows["mean_waiting"])
    residual = step_ms - decode.table_ms(seqs) - sched_ms
    per_token = residual / STEP_TOKEN_BUDGET
    value = float(np.mean(per_token))
    predicted_step = decode.table_ms(seqs) + sched_ms + value * STEP_TOKEN_BUDGET
    by_len = {int(k): float(v) for k, v in group_mean(rows["input_tokens_per_req"], per_token).items()}
    ms_per_request = float(np.polyfit(seqs, residual, 1)[0])
    report = {
        "rows_used": int(len(step_ms)),
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


def unusable_prefill_note(rows: Table) -> str:
    """Report note on the prefill rows ``prefill_rows`` found too short to use."""
    return (f"{len(rows['steps'])} prefill rows unusable: {int(np.max(rows['num_prompts']))} prompts, "
            f"{np.min(rows['duration']):.2f}-{np.max(rows['duration']):.2f} s, "
            f"{np.min(rows['steps']):.1f}-{np.max(rows['steps']):.1f} engine steps each (< {MIN_PREFILL_STEPS}); "
            "dominated by request latency, not step time")
