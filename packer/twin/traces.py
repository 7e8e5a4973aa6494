"""Arrival traces for the twin: the shipped and CSV traces, loaded, validated and replayed.

``trace`` arrivals replay a shipped (``azure-conv``, ``azure-code``) or CSV trace. The trace's period
is its span plus one mean gap, so its mean rate is (n - 1) / span; with ``scale_to_rates`` the time
axis is stretched so that this rate equals ``workload.total_rate``; with ``loop`` the (scaled)
trace repeats until ``duration_s``. Each request goes to an adapter with probability ∝ rate (so
adapters whose rates are all zero get an empty replay). The replayed rows' lengths, clipped to >= 1,
are the ``trace`` length distribution.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import InputError
from ..files import read_csv
from ..model import TraceArrivals, check_twin_requests
from .arrivals import below_end, choose_adapters

__all__ = ["SHIPPED_TRACES", "MAX_TRACE_TOKENS", "MAX_TRACE_TIME_S", "trace_arrivals", "data_file"]

SHIPPED_TRACES = {"azure-conv": "azure2023_conv.npz", "azure-code": "azure2023_code.npz"}
# A trace row's prompt or output length is at most this (above any model's context window); 0 is
# read as 1 (an output of no tokens still takes a step).
MAX_TRACE_TOKENS = 1 << 20
MAX_TRACE_TIME_S = 1e9  # about 32 years: arrival times beyond are a unit mistake (ms or ns, not s)


class _Trace(NamedTuple):
    arrived_at: np.ndarray  # float64, sorted, first arrival at 0
    period_s: float  # span plus one mean gap
    prompt_len: np.ndarray | None  # int32 >= 1
    output_len: np.ndarray | None


def trace_arrivals(spec: TraceArrivals, rates: np.ndarray, duration: float, need_lengths: bool,
                   rng: np.random.Generator):
    """Arrival times in [0, duration), adapter indices and (if ``need_lengths``) the replayed rows'
    (prompt, output) lengths of the trace ``spec`` mapped onto ``rates``."""
    trace = _load_trace(spec.trace, need_lengths)
    total = float(rates.sum())
    if total <= 0:  # no traffic to map the trace onto
        empty = np.zeros(0, dtype=np.int32)
        return np.zeros(0), empty, ((empty, empty) if need_lengths else None)
    trace_rate = (len(trace.arrived_at) - 1) / float(trace.arrived_at[-1])
    stretch = trace_rate / total if spec.scale_to_rates else 1.0
    horizon = duration / stretch  # the window in trace time
    copies = max(1, math.ceil(horizon / trace.period_s)) if spec.loop else 1
    expected = len(trace.arrived_at) * min(copies, horizon / trace.period_s)
    check_twin_requests(expected, f"trace {spec.trace} replayed at {expected / duration:.3g} req/s for "
                        f"{duration:,.10g} s", "arrivals.trace")
    times = (trace.arrived_at[None, :] + trace.period_s * np.arange(copies)[:, None]).ravel()
    n = int(np.searchsorted(times, horizon, side="left"))
    rows = np.tile(np.arange(len(trace.arrived_at)), copies)[:n]
    lengths = (trace.prompt_len[rows], trace.output_len[rows]) if need_lengths else None
    return below_end(times[:n] * stretch, duration), choose_adapters(rates, n, rng), lengths


def _load_trace(name: str, need_lengths: bool) -> _Trace:
    trace = _shipped_trace(name) if name in SHIPPED_TRACES else _csv_trace(name)
    if need_lengths and trace.prompt_len is None:
        raise InputError(
            "arrivals.trace",
            f"{name} has no num_prefill_tokens/num_decode_tokens columns, which "
            "lengths.distribution='trace' needs; add them or use lengths.distribution='sharegpt'")
    return trace


@lru_cache(maxsize=None)
def _shipped_trace(name: str) -> _Trace:
    with data_file(SHIPPED_TRACES[name]).open("rb") as f, np.load(f, allow_pickle=False) as npz:
        trace = _make_trace(name, npz["arrived_at"], npz["num_prefill_tokens"], npz["num_decode_tokens"])
    for array in (trace.arrived_at, trace.prompt_len, trace.output_len):
        array.setflags(write=False)  # cached and shared between calls
    return trace


def data_file(filename: str):
    """The shipped workload data file ``packer/data/<filename>`` (a trace or a length shape)."""
    path = resources.files("packer") / "data" / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"packer/data/{filename} is missing; regenerate it with calibrate/derive_workload_data.py")
    return path


def _csv_trace(name: str) -> _Trace:
    path = Path(name).expanduser()
    if not path.is_file():
        raise InputError(
            "arrivals.trace",
            f"{name!r} is neither a shipped trace ({', '.join(SHIPPED_TRACES)}) nor an existing file; "
            "give one of those names or the path of a CSV with an 'arrived_at' column")
    table = read_csv(path, field="arrivals.trace", required=("arrived_at",))
    column = {"arrived_at": table.numbers("arrived_at", minimum=0.0, maximum=MAX_TRACE_TIME_S)}
    for name in ("num_prefill_tokens", "num_decode_tokens"):
        if name in table.header:
            column[name] = table.numbers(name, minimum=0, maximum=MAX_TRACE_TOKENS, integer=True)
    has_lengths = "num_prefill_tokens" in column and "num_decode_tokens" in column
    return _make_trace(str(path), column["arrived_at"],
                       column["num_prefill_tokens"] if has_lengths else None,
                       column["num_decode_tokens"] if has_lengths else None)


def _make_trace(source: str, arrived_at, prompt_len, output_len) -> _Trace:
    """Sorted, zero-based arrivals and lengths clipped to >= 1; needs two distinct times."""
    arrived_at = np.asarray(arrived_at, dtype=np.float64)
    order = np.argsort(arrived_at, kind="stable")
    arrived_at = arrived_at[order] - arrived_at[order[0]] if len(order) else arrived_at
    if len(arrived_at) < 2 or arrived_at[-1] <= 0:
        raise InputError("arrivals.trace", f"{source} needs at least two requests with different "
                                           "'arrived_at' times to define a rate")
    period = arrived_at[-1] * len(arrived_at) / (len(arrived_at) - 1)
    if prompt_len is None or output_len is None:
        return _Trace(arrived_at, period, None, None)
    return _Trace(arrived_at, period, _token_counts(prompt_len, order), _token_counts(output_len, order))


def _token_counts(values, order: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.rint(np.asarray(values, dtype=np.float64)[order]), 1, np.iinfo(np.int32).max)
    return clipped.astype(np.int32)
