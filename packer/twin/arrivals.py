"""The twin's arrival processes: Poisson and bursty arrival times, and the choice of adapter.

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
"""

from __future__ import annotations

import math

import numpy as np

from ..model import BurstyArrivals

__all__ = ["poisson_arrivals", "bursty_arrivals", "choose_adapters", "below_end"]


def poisson_arrivals(rates: np.ndarray, duration: float, rng: np.random.Generator):
    """Sorted arrival times in [0, duration) and adapter indices of Poisson traffic at ``rates``."""
    total = float(rates.sum())
    n = int(rng.poisson(total * duration)) if total > 0 else 0
    return _sorted_uniform(n, duration, rng), choose_adapters(rates, n, rng)


def _sorted_uniform(n: int, duration: float, rng: np.random.Generator) -> np.ndarray:
    """n sorted uniform times in [0, duration): S_i / S_{n+1} for cumulative exponentials S."""
    cumulative = np.cumsum(rng.standard_exponential(n + 1))
    times = cumulative[:n] * (duration / cumulative[n])
    return below_end(times, duration)


def below_end(times: np.ndarray, duration: float) -> np.ndarray:
    """``times`` with any that rounding landed on the window's end moved just below it."""
    return np.minimum(times, np.nextafter(duration, 0.0))


def choose_adapters(rates: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n adapter indices drawn with probability ∝ rate."""
    total = float(rates.sum())
    if n == 0 or total <= 0:
        return np.zeros(0, dtype=np.int32)
    return rng.choice(len(rates), size=n, p=rates / total).astype(np.int32)


def bursty_arrivals(spec: BurstyArrivals, rates: np.ndarray, duration: float,
                    rng: np.random.Generator):
    """Sorted arrival times in [0, duration) and adapter indices of bursty traffic at ``rates``."""
    clock_t, clock_u = _operational_clock(spec, duration, rng)
    per_adapter = [_gamma_renewal(rate, spec.cv, clock_u[-1], rng) for rate in rates]
    operational = np.concatenate(per_adapter)
    adapter = np.repeat(np.arange(len(rates), dtype=np.int32), [len(t) for t in per_adapter])
    order = np.argsort(operational, kind="stable")
    times = np.interp(operational[order], clock_u, clock_t)
    return below_end(times, duration), adapter[order]


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
