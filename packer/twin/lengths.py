"""Request lengths for the twin: the truncated bivariate log-normal length model, fixed and trace lengths.

- ``sharegpt`` / ``azure-conv``: (log prompt, log output) is bivariate normal with a shipped shape
  (two sigmas, a correlation; ``packer/data/sharegpt_length_shape.json`` from calibrate/fit_e2e.py,
  ``packer/data/length_shape.json`` from the Azure conversation trace), truncated exactly like the ShareGPT
  filter (min_input <= prompt <= max_input, prompt + output <= max_total, output >= 1). Draws are
  rounded to integers and rejected draws are redrawn (never clipped, which would pile mass on the
  bounds). The two location parameters are solved (Newton on an exact 1-D quadrature of the
  truncated means, cached) so that the truncated means equal ``input_mean`` / ``output_mean``.
- ``fixed``: every request gets round(mean) (at least 1).
- ``empirical``: measured quantiles (``LengthSpec.empirical``) joined by a Gaussian copula: a pair of
  standard normals with correlation rho, each mapped through the normal CDF and the piecewise-linear
  quantile function, rounded. The means are those of the quantile functions (up to rounding).
- ``trace``: lengths of the replayed trace rows, clipped to >= 1 (by ``traces``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ..errors import InputError
from ..files import read_json_text
from ..model import LengthSpec
from .traces import data_file

__all__ = ["LengthShape", "SHAPE_FILES", "draw_lengths", "empirical_lengths", "lognormal_lengths", "length_shape",
           "shipped_length_shapes", "truncated_length_moments"]

_QUAD_NODES = 2049  # odd: composite Simpson over log(prompt)
_MIN_ACCEPTANCE = 0.01  # below this, rejection sampling would need > 100 draws per request
_MAX_DRAW_BATCH = 1 << 21
_NEWTON_TOL = 1e-9  # on log(mean); far below the 1 % the generator promises
_NEWTON_MAX_ITER = 60


class LengthShape(NamedTuple):
    """Shape of the bivariate normal of (log prompt, log output), before truncation."""

    sigma_log_prompt: float
    sigma_log_output: float
    rho: float


class _Region(NamedTuple):
    """Continuous region whose rounded points are exactly (up to the sum's rounding) the filter."""

    prompt_lo: float
    prompt_hi: float
    output_lo: float
    total_hi: float


def draw_lengths(spec: LengthSpec, n: int, trace_lengths, rng: np.random.Generator):
    """(prompt, output) lengths of n requests; ``trace_lengths`` are the replayed rows' (trace only)."""
    if spec.distribution == "trace":
        prompt_len, output_len = trace_lengths
        return prompt_len.astype(np.int32, copy=True), output_len.astype(np.int32, copy=True)
    if spec.distribution == "fixed":
        return (np.full(n, max(1, round(spec.input_mean)), dtype=np.int32),
                np.full(n, max(1, round(spec.output_mean)), dtype=np.int32))
    if spec.distribution == "empirical":
        return empirical_lengths(spec.empirical, n, rng)
    return lognormal_lengths(spec, n, rng, length_shape(spec.distribution))


def empirical_lengths(emp, n: int, rng: np.random.Generator):
    """n (prompt, output) pairs from measured quantiles joined by a Gaussian copula of correlation rho."""
    z = rng.standard_normal((2, n))
    rho = emp.rho
    z_output = rho * z[0] + math.sqrt(max(0.0, 1.0 - rho * rho)) * z[1]
    grid = np.linspace(0.0, 1.0, len(emp.prompt))
    out = []
    for scores, quantiles in ((z[0], emp.prompt), (z_output, emp.output)):
        u = 0.5 * _erfc(-scores / math.sqrt(2.0))  # the normal CDF
        tokens = np.rint(np.interp(u, grid, np.asarray(quantiles, dtype=np.float64)))
        out.append(np.maximum(tokens, 1).astype(np.int32))
    return out[0], out[1]


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
    data = read_json_text(data_file(SHAPE_FILES[name]).read_text(encoding="utf-8"), f"packer/data/{SHAPE_FILES[name]}")
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
