"""Numeric tools shared by the calibration stages: measurement tables as column arrays, least squares
(plain and non-negative), grouped means and fit statistics.

A measurement table (``Table``) is a mapping of column name to a numpy array, every column of the same
length (``packer.calibration.io`` makes them from CSV files or records). scipy, needed by ``nnls`` only,
is imported on first use.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..files import json_ready

__all__ = ["Table", "SIG_DIGITS", "select", "unique_in_order", "group_mean", "group_max", "nnls",
           "ols_summary", "error_stats", "interp_linear", "rounded"]

Table = Mapping[str, np.ndarray]
SIG_DIGITS = 6                     # significant digits of every number a fitted profile stores


def select(table: Table, mask) -> dict[str, np.ndarray]:
    """The rows of ``table`` where the boolean ``mask`` is true (every column)."""
    mask = np.asarray(mask, bool)
    return {name: column[mask] for name, column in table.items()}


def unique_in_order(values) -> list:
    """The distinct values, in the order they first appear."""
    return list(dict.fromkeys(np.asarray(values).tolist()))


def group_mean(keys, values) -> dict:
    """{key: mean of its values}, keys sorted; NaN values are skipped. Compensated (Kahan) summation in
    row order, so the means do not depend on how the rows are blocked."""
    sums: dict = {}
    for key, value in zip(np.asarray(keys).tolist(), np.asarray(values, float).tolist()):
        total, comp, count = sums.get(key, (0.0, 0.0, 0))
        if value == value:
            y = value - comp
            t = total + y
            comp = t - total - y
            total, count = t, count + 1
        sums[key] = (total, comp, count)
    return {k: (sums[k][0] / sums[k][2] if sums[k][2] else float("nan")) for k in sorted(sums)}


def group_max(keys, values) -> dict:
    """{key: max of its values}, keys sorted."""
    out: dict = {}
    for key, value in zip(np.asarray(keys).tolist(), np.asarray(values, float).tolist()):
        out[key] = max(out.get(key, value), value)
    return {k: out[k] for k in sorted(out)}


def nnls(X, y) -> np.ndarray:
    """Non-negative least squares: the coefficients c >= 0 minimising |X c - y|."""
    from scipy.optimize import nnls as scipy_nnls

    coef, _ = scipy_nnls(np.asarray(X, float), np.asarray(y, float))
    return coef


def error_stats(measured, predicted) -> dict[str, float]:
    """MAE, MAPE (%), max |error| and R² of predicted against measured."""
    y, p = np.asarray(measured, float), np.asarray(predicted, float)
    ss_res, ss_tot = float(((y - p) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    return {
        "n": int(len(y)),
        "mae": float(np.abs(y - p).mean()),
        "mape_pct": float(100 * np.mean(np.abs(y - p) / np.abs(y))),
        "max_abs_err": float(np.abs(y - p).max()),
        "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
    }


def ols_summary(columns: Mapping[str, np.ndarray], y) -> dict:
    """Unconstrained least squares with an intercept: coefficients, R² and MAE (for comparisons)."""
    y = np.asarray(y, float)
    X = np.column_stack([np.ones(len(y)), *(np.asarray(c, float) for c in columns.values())])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    stats = error_stats(y, X @ coef)
    return {"coef": dict(zip(["intercept", *columns], coef)), "r2": stats["r2"], "mae": stats["mae"]}


def interp_linear(x, xs, ys):
    """np.interp with linear extrapolation on both ends (as the twin evaluates the decode table)."""
    x, xs, ys = np.asarray(x, float), np.asarray(xs, float), np.asarray(ys, float)
    y = np.interp(x, xs, ys)
    lo_slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    hi_slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    y = np.where(x < xs[0], ys[0] + lo_slope * (x - xs[0]), y)
    return np.where(x > xs[-1], ys[-1] + hi_slope * (x - xs[-1]), y)


def rounded(obj: Any) -> Any:
    """obj as plain JSON values (``packer.files.json_ready``), every float rounded to SIG_DIGITS
    significant digits (keeps the JSON stable across BLAS builds)."""
    return json_ready(obj, digits=SIG_DIGITS)
