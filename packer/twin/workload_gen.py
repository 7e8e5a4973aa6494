"""Request generator: turns a ``Workload`` into arrays of requests for the twin.

Everything is drawn from ``numpy.random.SeedSequence(workload.seed)``: one child stream for the
arrivals (times and adapter choice), one for the lengths, so the same workload always gives the
same arrays. The arrival processes are in ``arrivals`` (poisson, bursty) and ``traces`` (trace
replay), the length distributions in ``lengths``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..model import BurstyArrivals, TraceArrivals, Workload
from .arrivals import bursty_arrivals, poisson_arrivals
from .lengths import draw_lengths
from .traces import trace_arrivals

__all__ = ["Requests", "generate_requests"]


class Requests(NamedTuple):
    """Requests sorted by arrival time; all four arrays have the same length."""

    arrival_s: np.ndarray  # float64, in [0, warmup_s + duration_s)
    adapter: np.ndarray  # int32 index into workload.adapters
    prompt_len: np.ndarray  # int32 >= 1
    output_len: np.ndarray  # int32 >= 1


def generate_requests(workload: Workload) -> Requests:
    """Draw the requests of ``workload`` (deterministic in ``workload.seed``)."""
    arrivals_seed, lengths_seed = np.random.SeedSequence(workload.seed).spawn(2)
    rng = np.random.default_rng(arrivals_seed)
    rates = np.array([a.rate for a in workload.adapters], dtype=np.float64)
    spec, trace_lengths = workload.arrivals, None
    if isinstance(spec, TraceArrivals):
        need_lengths = workload.lengths.distribution == "trace"
        arrival_s, adapter, trace_lengths = trace_arrivals(spec, rates, workload.horizon_s, need_lengths, rng)
    elif isinstance(spec, BurstyArrivals):
        arrival_s, adapter = bursty_arrivals(spec, rates, workload.horizon_s, rng)
    else:
        arrival_s, adapter = poisson_arrivals(rates, workload.horizon_s, rng)
    prompt_len, output_len = draw_lengths(workload.lengths, len(arrival_s), trace_lengths,
                                          np.random.default_rng(lengths_seed))
    return Requests(arrival_s.astype(np.float64, copy=False), adapter.astype(np.int32, copy=False),
                    prompt_len, output_len)
