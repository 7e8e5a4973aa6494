"""Request generator: turns a ``Workload`` into arrays of requests for the twin.

Everything is drawn from ``numpy.random.SeedSequence(workload.seed)``: one child stream for the
arrivals (times and adapter choice), one for the lengths, so the same workload always gives the
same arrays.

Arrivals
- ``poisson``: one global Poisson process at the total rate, each request given to adapter i with
  probability rate_i / total. By the superposition theorem this is the same in distribution as
  independent per-adapter Poisson processes. The N arrival times are uniform order statistics,
  built from normalised cumulative exponential spacings (no sort needed).
- ``bursty``: time rescaling. A global multiplier M_k ~ LogNormal(-sigma^2/2, sigma) (mean 1) is
  drawn for each period of ``period_s``; it defines an operational clock U(t) = int_0^t M(s) ds.
  Each adapter is a stationary gamma renewal process in operational time (mean gap 1/rate, coefficient
  of variation ``cv``; the first arrival is the equilibrium forward-recurrence time). Mapping the
  operational times back through U^-1 gives instantaneous rate rate_i * M(t): the gamma burstiness of
  each source plus a common slow modulation. Since E[M] = 1 the long-run rate is the adapters' rate.
- ``trace``: replay of a shipped (``azure-conv``, ``azure-code``) or CSV trace. The trace's period
  is its span plus one mean gap, so its mean rate is (n - 1) / span; with ``scale_to_rates`` the time
  axis is stretched so that this rate equals ``workload.total_rate``; with ``loop`` the (scaled)
  trace repeats until ``duration_s``. Each request goes to an adapter with probability ∝ rate (so
  adapters whose rates are all zero get an empty replay).

Lengths
- ``sharegpt`` / ``azure-conv``: (log prompt, log output) is bivariate normal with a shipped shape
  (two sigmas, a correlation; ``packer/data/sharegpt_length_shape.json`` from calibrate/fit_e2e.py,
  ``packer/data/length_shape.json`` from the Azure conversation trace), truncated exactly like the ShareGPT
  filter (min_input <= prompt <= max_input, prompt + output <= max_total, output >= 1). Draws are
  rounded to integers and rejected draws are redrawn (never clipped, which would pile mass on the
  bounds). The two location parameters are solved (Newton on an exact 1-D quadrature of the
  truncated means, cached) so that the truncated means equal ``input_mean`` / ``output_mean``.
- ``fixed``: every request gets round(mean) (at least 1).
- ``trace``: lengths of the replayed trace rows, clipped to >= 1.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import InputError
from ..files import read_csv, read_json_text
from ..model import BurstyArrivals, LengthSpec, TraceArrivals, Workload, check_twin_requests

__all__ = ["Requests", "generate_requests", "LengthShape", "length_shape", "shipped_length_shapes", "lognormal_lengths",
           "truncated_length_moments", "SHIPPED_TRACES"]

SHIPPED_TRACES = {"azure-conv": "azure2023_conv.npz", "azure-code": "azure2023_code.npz"}
# A trace row's prompt or output length is at most this (above any model's context window); 0 is
# read as 1 (an output of no tokens still takes a step).
MAX_TRACE_TOKENS = 1 << 20
MAX_TRACE_TIME_S = 1e9  # about 32 years: arrival times beyond are a unit mistake (ms or ns, not s)

_QUAD_NODES = 2049  # odd: composite Simpson over log(prompt)
_MIN_ACCEPTANCE = 0.01  # below this, rejection sampling would need > 100 draws per request
_MAX_DRAW_BATCH = 1 << 21
_NEWTON_TOL = 1e-9  # on log(mean); far below the 1 % the generator promises
_NEWTON_MAX_ITER = 60


class Requests(NamedTuple):
    """Requests sorted by arrival time; all four arrays have the same length."""

    arrival_s: np.ndarray  # float64, in [0, warmup_s + duration_s)
    adapter: np.ndarray  # int32 index into workload.adapters
    prompt_len: np.ndarray  # int32 >= 1
    output_len: np.ndarray  # int32 >= 1


class LengthShape(NamedTuple):
    """Shape of the bivariate normal of (log prompt, log output), before truncation."""

    sigma_log_prompt: float
    sigma_log_output: float
    rho: float


class _Trace(NamedTuple):
    arrived_at: np.ndarray  # float64, sorted, first arrival at 0
    period_s: float  # span plus one mean gap
    prompt_len: np.ndarray | None  # int32 >= 1
    output_len: np.ndarray | None


class _Region(NamedTuple):
    """Continuous region whose rounded points are exactly (up to the sum's rounding) the filter."""

    prompt_lo: float
    prompt_hi: float
    output_lo: float
    total_hi: float


def generate_requests(workload: Workload) -> Requests:
    """Draw the requests of ``workload`` (deterministic in ``workload.seed``)."""
    arrivals_seed, lengths_seed = np.random.SeedSequence(workload.seed).spawn(2)
    arrival_s, adapter, trace_lengths = _arrivals(workload, np.random.default_rng(arrivals_seed))
    prompt_len, output_len = _lengths(workload.lengths, len(arrival_s), trace_lengths,
                                      np.random.default_rng(lengths_seed))
    return Requests(arrival_s.astype(np.float64, copy=False), adapter.astype(np.int32, copy=False),
                    prompt_len, output_len)


# ----------------------------------------------------------------------------------------------
# Arrivals


def _arrivals(workload: Workload, rng: np.random.Generator):
    """Arrival times, adapter indices and (for trace lengths) the trace rows' lengths."""
    rates = np.array([a.rate for a in workload.adapters], dtype=np.float64)
    spec = workload.arrivals
    if isinstance(spec, TraceArrivals):
        need_lengths = workload.lengths.distribution == "trace"
        return _trace_arrivals(spec, rates, workload.horizon_s, need_lengths, rng)
    if isinstance(spec, BurstyArrivals):
        return (*_bursty_arrivals(spec, rates, workload.horizon_s, rng), None)
    return (*_poisson_arrivals(rates, workload.horizon_s, rng), None)


def _poisson_arrivals(rates: np.ndarray, duration: float, rng: np.random.Generator):
    total = float(rates.sum())
    n = int(rng.poisson(total * duration)) if total > 0 else 0
    return _sorted_uniform(n, duration, rng), _choose_adapters(rates, n, rng)


def _sorted_uniform(n: int, duration: float, rng: np.random.Generator) -> np.ndarray:
    """n sorted uniform times in [0, duration): S_i / S_{n+1} for cumulative exponentials S."""
    cumulative = np.cumsum(rng.standard_exponential(n + 1))
    times = cumulative[:n] * (duration / cumulative[n])
    return _below(times, duration)


def _below(times: np.ndarray, duration: float) -> np.ndarray:
    # Rounding can land a time a hair onto the end of the window.
    return np.minimum(times, np.nextafter(duration, 0.0))


def _choose_adapters(rates: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n adapter indices drawn with probability ∝ rate."""
    total = float(rates.sum())
    if n == 0 or total <= 0:
        return np.zeros(0, dtype=np.int32)
    return rng.choice(len(rates), size=n, p=rates / total).astype(np.int32)


def _bursty_arrivals(spec: BurstyArrivals, rates: np.ndarray, duration: float,
                     rng: np.random.Generator):
    clock_t, clock_u = _operational_clock(spec, duration, rng)
    per_adapter = [_gamma_renewal(rate, spec.cv, clock_u[-1], rng) for rate in rates]
    operational = np.concatenate(per_adapter)
    adapter = np.repeat(np.arange(len(rates), dtype=np.int32), [len(t) for t in per_adapter])
    order = np.argsort(operational, kind="stable")
    times = np.interp(operational[order], clock_u, clock_t)
    return _below(times, duration), adapter[order]


def _operational_clock(spec: BurstyArrivals, duration: float, rng: np.random.Generator):
    """Breakpoints (real time, operational time) of U(t) = integral of the rate multiplier."""
    n_periods = max(1, math.ceil(duration / spec.period_s))
    sigma = spec.multiplier_sigma
    multipliers = np.exp(sigma * rng.standard_normal(n_periods) - 0.5 * sigma * sigma)
    clock_t = np.minimum(np.arange(n_periods + 1) * spec.period_s, duration)
    clock_u = np.concatenate(([0.0], np.cumsum(multipliers * np.diff(clock_t))))
    return clock_t, clock_u


def _gamma_renewal(rate: float, cv: float, horizon: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times in [0, horizon) of a stationary gamma renewal process (mean gap 1/rate)."""
    expected = rate * horizon
    if not expected > 0:
        return np.zeros(0)
    # Work in units of the mean gap (events fall in [0, expected)) and rescale at the end, which
    # stays finite for any rate.
    shape = 1.0 / (cv * cv)
    # Stationary start: the gap covering t=0 is length-biased, Gamma(shape + 1), and t=0 falls
    # uniformly inside it.
    first = rng.random() * rng.gamma(shape + 1.0, 1.0 / shape)
    batch = int(expected + 6.0 * math.sqrt(expected * (1.0 + cv * cv)) + 16)
    events = first + np.concatenate(([0.0], np.cumsum(rng.gamma(shape, 1.0 / shape, batch))))
    while events[-1] < expected:
        more = events[-1] + np.cumsum(rng.gamma(shape, 1.0 / shape, batch))
        events = np.concatenate((events, more))
    return events[: np.searchsorted(events, expected, side="left")] / rate


def _trace_arrivals(spec: TraceArrivals, rates: np.ndarray, duration: float, need_lengths: bool,
                    rng: np.random.Generator):
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
    return _below(times[:n] * stretch, duration), _choose_adapters(rates, n, rng), lengths


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
    with _data_file(SHIPPED_TRACES[name]).open("rb") as f, np.load(f, allow_pickle=False) as npz:
        trace = _make_trace(name, npz["arrived_at"], npz["num_prefill_tokens"], npz["num_decode_tokens"])
    for array in (trace.arrived_at, trace.prompt_len, trace.output_len):
        array.setflags(write=False)  # cached and shared between calls
    return trace


def _data_file(filename: str):
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


# ----------------------------------------------------------------------------------------------
# Lengths


def _lengths(spec: LengthSpec, n: int, trace_lengths, rng: np.random.Generator):
    if spec.distribution == "trace":
        prompt_len, output_len = trace_lengths
        return prompt_len.astype(np.int32, copy=True), output_len.astype(np.int32, copy=True)
    if spec.distribution == "fixed":
        return (np.full(n, max(1, round(spec.input_mean)), dtype=np.int32),
                np.full(n, max(1, round(spec.output_mean)), dtype=np.int32))
    return lognormal_lengths(spec, n, rng, length_shape(spec.distribution))


def lognormal_lengths(spec: LengthSpec, n: int, rng: np.random.Generator, shape: LengthShape):
    """n (prompt, output) pairs from the truncated log-normal of ``shape``, by rejection of draws outside."""
    mu_prompt, mu_output, acceptance = _solve_location(
        spec.input_mean, spec.output_mean, spec.min_input, spec.max_input, spec.max_total, shape)
    prompts, outputs, have = [], [], 0
    while have < n:
        batch = min(int((n - have) / acceptance * 1.05) + 64, _MAX_DRAW_BATCH)
        prompt, output = _draw_filtered(batch, mu_prompt, mu_output, spec, shape, rng)
        prompts.append(prompt)
        outputs.append(output)
        have += len(prompt)
    if not prompts:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)
    return np.concatenate(prompts)[:n], np.concatenate(outputs)[:n]


def _draw_filtered(batch: int, mu_prompt: float, mu_output: float, spec: LengthSpec, shape: LengthShape,
                   rng: np.random.Generator):
    """Rounded log-normal draws that pass the ShareGPT filter (the others are dropped)."""
    s_p, s_o, rho = shape
    z = rng.standard_normal((2, batch))
    # Capping the exponent keeps huge draws finite; they fail the filter anyway.
    log_prompt = np.minimum(mu_prompt + s_p * z[0], 50.0)
    log_output = np.minimum(mu_output + s_o * (rho * z[0] + math.sqrt(1 - rho * rho) * z[1]), 50.0)
    prompt = np.rint(np.exp(log_prompt))
    output = np.rint(np.exp(log_output))
    ok = ((prompt >= spec.min_input) & (prompt <= spec.max_input) & (output >= 1)
          & (prompt + output <= spec.max_total))
    return prompt[ok].astype(np.int32), output[ok].astype(np.int32)


SHAPE_FILES = {"azure-conv": "length_shape.json", "sharegpt": "sharegpt_length_shape.json"}


@lru_cache(maxsize=4)
def length_shape(name: str = "azure-conv") -> LengthShape:
    """A shipped shape (sigmas and correlation of log lengths).

    ``azure-conv``: fitted to the Azure conversation trace (calibrate/derive_workload_data.py).
    ``sharegpt``: the ShareGPT pool of the measurements, whose output dispersion is inferred from the
    measured KV tokens per running request (calibrate/fit_e2e.py)."""
    data = read_json_text(_data_file(SHAPE_FILES[name]).read_text(encoding="utf-8"), f"packer/data/{SHAPE_FILES[name]}")
    return LengthShape(float(data["sigma_log_prompt"]), float(data["sigma_log_output"]), float(data["rho"]))


def shipped_length_shapes() -> dict[str, list[float]]:
    """Every shipped shape as plain numbers (for the fingerprints of cached twin results)."""
    return {name: list(length_shape(name)) for name in sorted(SHAPE_FILES)}


def _region(min_input: int, max_input: int, max_total: int) -> _Region:
    # A draw x rounds to an integer in [a, b] iff x is in [a - 0.5, b + 0.5); output >= 1 leaves a
    # prompt of at most max_total - 1.
    prompt_hi = min(max_input, max_total - 1) + 0.5
    return _Region(min_input - 0.5, prompt_hi, 0.5, max_total + 0.5)


def truncated_length_moments(mu_prompt: float, mu_output: float, shape: LengthShape,
                             min_input: int, max_input: int, max_total: int) -> tuple[float, float, float]:
    """(acceptance, mean prompt, mean output) of the log-normal truncated to the ShareGPT filter.

    Exact up to quadrature: integrate over x = log prompt the normal density times the closed-form
    conditional mass (and partial mean) of log output inside its bounds given x.
    """
    region = _region(min_input, max_input, max_total)
    s_p, s_o, rho = shape
    x = np.linspace(math.log(region.prompt_lo), math.log(region.prompt_hi), _QUAD_NODES)
    density = np.exp(-0.5 * ((x - mu_prompt) / s_p) ** 2) / (s_p * math.sqrt(2 * math.pi))
    weight = _simpson_weights(x) * density
    cond_mean = mu_output + rho * s_o / s_p * (x - mu_prompt)
    cond_sd = s_o * math.sqrt(1.0 - rho * rho)
    lo = (math.log(region.output_lo) - cond_mean) / cond_sd
    hi = (np.log(region.total_hi - np.exp(x)) - cond_mean) / cond_sd
    inside = _normal_mass(lo, hi)
    # E[e^Y 1{Y in bounds}] for Y ~ N(m, s^2) is e^(m + s^2/2) P(lo - s < Z < hi - s).
    output_scale = np.exp(np.minimum(cond_mean + 0.5 * cond_sd ** 2, 700.0))
    output_part = output_scale * _normal_mass(lo - cond_sd, hi - cond_sd)
    acceptance = float(np.dot(weight, inside))
    if not acceptance > 0:
        return 0.0, math.nan, math.nan
    return (acceptance, float(np.dot(weight, inside * np.exp(x))) / acceptance,
            float(np.dot(weight, output_part)) / acceptance)


def _simpson_weights(x: np.ndarray) -> np.ndarray:
    w = np.ones(len(x))
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    return w * (x[1] - x[0]) / 3.0


def _erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function, relative error < 1.2e-7 everywhere (Numerical Recipes erfcc)."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.zeros_like(t)
    for c in (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806,
              0.09678418, 0.37409196, 1.00002368):
        poly = (poly + c) * t
    tail = t * np.exp(-z * z - 1.26551223 + poly)
    return np.where(x >= 0, tail, 2.0 - tail)


def _normal_mass(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """P(lo < Z < hi) for a standard normal Z, from the tail that keeps relative accuracy."""
    r2 = math.sqrt(2.0)
    upper_tails = 0.5 * (_erfc(lo / r2) - _erfc(hi / r2))
    lower_tails = 0.5 * (_erfc(-hi / r2) - _erfc(-lo / r2))
    return np.maximum(np.where(lo > 0, upper_tails, lower_tails), 0.0)


@lru_cache(maxsize=256)
def _solve_location(input_mean: float, output_mean: float, min_input: int, max_input: int,
                    max_total: int, shape: LengthShape) -> tuple[float, float, float]:
    """Locations (mu of log prompt, mu of log output) whose truncated means hit the targets."""
    bounds = (min_input, max_input, max_total)
    target = np.log([input_mean, output_mean])
    sigmas = np.array([shape.sigma_log_prompt, shape.sigma_log_output])
    # Locations more than 8 sigmas outside the filter would let almost no draw pass: search inside.
    region = _region(*bounds)
    lowest = np.log([region.prompt_lo, region.output_lo]) - 8 * sigmas
    highest = np.log([region.prompt_hi, region.total_hi]) + 8 * sigmas

    def residual(mu: np.ndarray) -> np.ndarray:
        _, mean_prompt, mean_output = truncated_length_moments(mu[0], mu[1], shape, *bounds)
        r = np.log([mean_prompt, mean_output]) - target
        return r if np.all(np.isfinite(r)) else np.full(2, np.inf)

    mu = np.clip(target - 0.5 * sigmas ** 2, lowest, highest)
    r = residual(mu)
    for _ in range(_NEWTON_MAX_ITER):
        if np.max(np.abs(r)) < _NEWTON_TOL:
            break
        mu, r = _newton_step(residual, mu, r, lowest, highest)
        if mu is None:
            break
    converged = mu is not None and np.max(np.abs(r)) < _NEWTON_TOL
    acceptance = truncated_length_moments(mu[0], mu[1], shape, *bounds)[0] if converged else 0.0
    if converged and acceptance >= _MIN_ACCEPTANCE:
        return float(mu[0]), float(mu[1]), acceptance
    why = "no location of the log-normal reaches them"
    if converged:
        why = (f"only {100 * acceptance:.2g} % of its draws would pass the filter "
               f"(at least {100 * _MIN_ACCEPTANCE:g} % needed)")
    raise InputError(
        "lengths.input_mean/output_mean",
        f"means ({input_mean:g}, {output_mean:g}) cannot be reached by the ShareGPT-shaped length "
        f"distribution truncated to {min_input} <= prompt <= {max_input}, prompt + output <= {max_total}: "
        f"{why}; move the means away from the filter's edges, widen min_input/max_input/max_total, "
        "or use distribution='fixed'")


def _newton_step(residual, mu: np.ndarray, r: np.ndarray, lowest: np.ndarray, highest: np.ndarray):
    """One damped Newton step (finite-difference Jacobian); (None, r) when no step improves."""
    h = 1e-6
    jacobian = np.column_stack([(residual(mu + h * e) - r) / h for e in np.eye(2)])
    try:
        step = np.linalg.solve(jacobian, -r)
    except np.linalg.LinAlgError:
        return None, r
    if not np.all(np.isfinite(step)):
        return None, r
    norm = np.max(np.abs(r))
    t = 1.0
    while t > 1e-6:
        candidate = np.clip(mu + t * step, lowest, highest)
        r_new = residual(candidate)
        if np.max(np.abs(r_new)) < norm:
            return candidate, r_new
        t *= 0.5
    return None, r
