"""Derive the workload artefacts packer ships, from the Azure 2023 traces.

Reads ``<repo>/../shared/data/traces/azure2023_{conv,code}.csv`` and writes
- ``packer/data/azure2023_conv.npz`` and ``packer/data/azure2023_code.npz``: the traces as arrays
  (``arrived_at`` float64 s, ``num_prefill_tokens`` / ``num_decode_tokens`` int32), loadable with
  ``numpy.load(..., allow_pickle=False)``;
- ``packer/data/length_shape.json``: the shape of the request-length distribution.

How the shape is estimated. Take the conversation trace's rows that pass the ShareGPT filter of
the measurements (the ``LengthSpec`` defaults: 4 <= prompt <= 1024, prompt + output <= 2048,
output >= 1). Model (log prompt, log output) as a bivariate normal truncated to that filter, exactly
the law the generator samples from (same continuous region, via
``packer.twin.lengths.truncated_length_moments``), and fit its five parameters by maximum
likelihood: mean log-density of the rows minus log P(filter). The truncated normal is an exponential
family, so the fit matches the first and second moments of the log lengths inside the filter. The
generator keeps only the shape (both sigmas and the correlation) and re-solves the two locations
for any requested means. Plain moments of the filtered rows would understate the sigmas, because the
filter has already cut the tails, and the generator truncates again.

Run from anywhere: ``python calibrate/derive_workload_data.py [--traces DIR] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize

from packer.model import LengthSpec
from packer.twin.lengths import LengthShape, truncated_length_moments

REPO = Path(__file__).resolve().parents[1]

TRACES = {"conv": "azure2023_conv", "code": "azure2023_code"}
COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")


def main() -> None:
    args = _parse_args()
    traces = {kind: _read_trace(args.traces / f"{stem}.csv") for kind, stem in TRACES.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    for kind, stem in TRACES.items():
        _write_npz(traces[kind], args.out / f"{stem}.npz")
    shape = _fit_length_shape(traces["conv"], LengthSpec())
    (args.out / "length_shape.json").write_text(json.dumps(shape, indent=2) + "\n")
    print(f"wrote {args.out / 'length_shape.json'}:")
    print(json.dumps({k: v for k, v in shape.items() if k not in ("method", "source")}, indent=2))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=REPO.parent / "shared" / "data" / "traces",
                        help="folder with azure2023_conv.csv and azure2023_code.csv")
    parser.add_argument("--out", type=Path, default=REPO / "packer" / "data",
                        help="where to write the .npz traces and length_shape.json")
    return parser.parse_args()


def _read_trace(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise SystemExit(f"{path}: missing columns {missing}")
    frame = frame[list(COLUMNS)]
    if frame.isna().any().any() or not frame["arrived_at"].is_monotonic_increasing:
        raise SystemExit(f"{path}: expected complete rows sorted by arrived_at")
    return frame


def _write_npz(frame: pd.DataFrame, path: Path) -> None:
    arrays = {
        "arrived_at": frame["arrived_at"].to_numpy(np.float64),
        "num_prefill_tokens": frame["num_prefill_tokens"].to_numpy(np.int32),
        "num_decode_tokens": frame["num_decode_tokens"].to_numpy(np.int32),
    }
    np.savez_compressed(path, **arrays)
    span = arrays["arrived_at"][-1] - arrays["arrived_at"][0]
    print(f"wrote {path}: {len(frame)} requests over {span:.0f} s "
          f"({(len(frame) - 1) / span:.3f} req/s), mean prompt {arrays['num_prefill_tokens'].mean():.1f}, "
          f"mean output {arrays['num_decode_tokens'].mean():.1f} tokens")


def _sharegpt_rows(frame: pd.DataFrame, spec: LengthSpec) -> pd.DataFrame:
    prompt, output = frame["num_prefill_tokens"], frame["num_decode_tokens"]
    keep = ((prompt >= spec.min_input) & (prompt <= spec.max_input) & (output >= 1)
            & (prompt + output <= spec.max_total))
    return frame[keep]


def _fit_length_shape(frame: pd.DataFrame, spec: LengthSpec) -> dict:
    rows = _sharegpt_rows(frame, spec)
    logs = np.log(rows[["num_prefill_tokens", "num_decode_tokens"]].to_numpy(np.float64))
    bounds = (spec.min_input, spec.max_input, spec.max_total)
    naive = _log_moments(logs)
    start = np.array([naive["mu_log_prompt"], naive["mu_log_output"], math.log(naive["sigma_log_prompt"]),
                      math.log(naive["sigma_log_output"]), math.atanh(naive["rho"])])
    fit = optimize.minimize(_negative_log_likelihood, start, args=(logs, bounds), method="Nelder-Mead",
                            options={"xatol": 1e-7, "fatol": 1e-11, "maxiter": 20000, "maxfev": 20000})
    if not fit.success:
        raise SystemExit(f"length-shape fit failed: {fit.message}")
    mu_p, mu_o, sigma_p, sigma_o, rho = _unpack(fit.x)
    acceptance, model_prompt, model_output = truncated_length_moments(
        mu_p, mu_o, LengthShape(sigma_p, sigma_o, rho), *bounds)
    return {
        "sigma_log_prompt": round(sigma_p, 6),
        "sigma_log_output": round(sigma_o, 6),
        "rho": round(rho, 6),
        "source": "azure2023_conv.csv (Azure LLM inference trace 2023, conversation service, via Vidur)",
        "filter": {"min_input": spec.min_input, "max_input": spec.max_input,
                   "max_total": spec.max_total, "min_output": 1},
        "method": ("maximum likelihood of a bivariate normal of (log prompt, log output) truncated to the "
                   "filter, fitted to the trace rows inside the filter; only the shape is used, the "
                   "locations are re-solved per LengthSpec so that the truncated means hit the targets"),
        "rows_total": int(len(frame)),
        "rows_in_filter": int(len(rows)),
        "fitted_mu_log_prompt": round(mu_p, 6),
        "fitted_mu_log_output": round(mu_o, 6),
        "fitted_filter_acceptance": round(acceptance, 6),
        "filtered_mean_prompt": round(float(rows["num_prefill_tokens"].mean()), 3),
        "filtered_mean_output": round(float(rows["num_decode_tokens"].mean()), 3),
        "model_mean_prompt": round(model_prompt, 3),
        "model_mean_output": round(model_output, 3),
        "filtered_log_moments": {k: round(v, 6) for k, v in naive.items()},
    }


def _log_moments(logs: np.ndarray) -> dict:
    return {
        "mu_log_prompt": float(logs[:, 0].mean()), "mu_log_output": float(logs[:, 1].mean()),
        "sigma_log_prompt": float(logs[:, 0].std()), "sigma_log_output": float(logs[:, 1].std()),
        "rho": float(np.corrcoef(logs.T)[0, 1]),
    }


def _unpack(theta: np.ndarray) -> tuple[float, float, float, float, float]:
    return (float(theta[0]), float(theta[1]), math.exp(theta[2]), math.exp(theta[3]),
            math.tanh(theta[4]))


def _negative_log_likelihood(theta: np.ndarray, logs: np.ndarray, bounds: tuple[int, int, int]) -> float:
    """Per-row negative log-likelihood of the truncated bivariate normal (in log space)."""
    mu_p, mu_o, sigma_p, sigma_o, rho = _unpack(theta)
    acceptance = truncated_length_moments(mu_p, mu_o, LengthShape(sigma_p, sigma_o, rho), *bounds)[0]
    if not acceptance > 0:
        return math.inf
    u = (logs[:, 0] - mu_p) / sigma_p
    v = (logs[:, 1] - mu_o) / sigma_o
    one_minus = 1.0 - rho * rho
    log_density = (-(u * u - 2 * rho * u * v + v * v) / (2 * one_minus)
                   - math.log(2 * math.pi * sigma_p * sigma_o * math.sqrt(one_minus)))
    return float(-log_density.mean() + math.log(acceptance))


if __name__ == "__main__":
    main()
