"""Measured runs as scenarios: read a real-runs CSV (the format of ``shared/data/agullo-h100/real_runs.csv``)
and turn each run into the scenario that reproduces it, for validation and calibration.

Only the standard library and numpy are used, so this works in a bare install.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .files import read_csv

__all__ = ["MeasuredRun", "read_runs", "run_key", "PROFILE_FOR_MODEL"]

PROFILE_FOR_MODEL = {
    "llama-3.1-8b-instruct": "llama-3.1-8b-instruct@h100-64gb",
    "qwen-2.5-7b-instruct": "qwen-2.5-7b-instruct@h100-64gb",
}
# Any placeholder rate works for runs whose rates were not recorded: they only matter for the
# start-up memory check, which does not depend on traffic.
_PLACEHOLDER_RATE = 0.1


@dataclass(frozen=True)
class MeasuredRun:
    """One measured run: its config/workload as a scenario dict, and what was measured."""

    key: str
    model: str
    group: str
    status: str
    scenario: dict[str, Any]
    measured: dict[str, float]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def memory_failure(self) -> bool:
        return self.status.startswith("oom")


def _f(row: dict[str, str], k: str) -> float:
    v = row.get(k, "")
    try:
        return float(v)
    except ValueError:
        return math.nan


def _expand(values: str, counts: str, cast) -> list:
    out: list = []
    for v, c in zip(values.split(), counts.split()):
        out += [cast(v)] * int(float(c))
    return out


def _adapters(row: dict[str, str], seed: int) -> list[dict[str, Any]]:
    ranks: list[int] = []
    for part in row["adapter_rank_counts"].split(";"):
        r, c = part.split(":")
        ranks += [int(r)] * int(c)
    n = len(ranks)
    if row.get("rate_values"):
        rates = _expand(row["rate_values"], row["rate_counts"], float)
    else:
        rates = [_PLACEHOLDER_RATE] * n
    # Ranks and rates were assigned independently in the measurements: pair them by a seeded shuffle.
    perm = np.random.default_rng(seed).permutation(n)
    return [{"id": f"a{i}", "rank": ranks[i], "rate": rates[perm[i]]} for i in range(n)]


def _scenario(row: dict[str, str], seed: int) -> dict[str, Any]:
    max_seqs = int(_f(row, "max_num_seqs"))
    return {
        "profile": PROFILE_FOR_MODEL[row["model"]],
        "server": {
            "max_loras": int(_f(row, "max_loras")),
            "max_cpu_loras": int(_f(row, "max_cpu_loras")),
            "max_lora_rank": int(_f(row, "max_lora_rank")),
            "max_num_seqs": max_seqs,
            "max_num_batched_tokens": int(_f(row, "max_num_batched_tokens")),
        },
        "adapters": _adapters(row, seed),
        "lengths": {"input_mean": _f(row, "pool_mean_input_len") if row.get("pool_mean_input_len") else 222.7,
                    "output_mean": _f(row, "pool_mean_output_len") if row.get("pool_mean_output_len") else 196.1},
        "arrivals": "poisson",
        "duration_s": _f(row, "duration_target_s") or 3600.0,
        "seed": seed,
    }


def run_key(row: dict[str, Any]) -> str:
    """The identifier of a measured run: model, group, slots, adapters and max rank."""
    return f"{row['model']}|{row['group']}|L{row['max_loras']}|A{row['n_adapters']}|r{row['max_lora_rank']}"


MEASURED_FIELDS = ("total_throughput_tps", "input_throughput_tps", "output_throughput_tps", "mean_itl_ms",
                   "mean_ttft_ms", "p99_ttft_ms", "est_offered_total_tps", "thr_ratio_est", "mean_running",
                   "mean_waiting", "max_waiting", "last_waiting", "mean_kv_usage", "preemptions",
                   "completed", "sent_requests")


# Columns every row is read from directly; the others may be missing or empty.
REQUIRED_COLUMNS = ("model", "group", "status", "max_loras", "max_cpu_loras", "max_lora_rank", "max_num_seqs",
                    "max_num_batched_tokens", "n_adapters", "adapter_rank_counts")


def read_runs(path: str | Path, seed: int = 0) -> list[MeasuredRun]:
    """Every run in the CSV (any status) whose model has a shipped profile."""
    table = read_csv(path, field="runs", required=REQUIRED_COLUMNS)
    runs = []
    for line, row in table.records():
        if row["model"] not in PROFILE_FOR_MODEL:
            continue
        try:
            scenario = _scenario(row, seed)
        except (ValueError, KeyError, IndexError) as e:
            raise InputError("runs", f"{table.source}, line {line}: a run's server settings or adapters cannot "
                             f"be read ({type(e).__name__}: {e}); fix that row") from None
        measured = {k: _f(row, k) for k in MEASURED_FIELDS}
        measured["starved"] = row.get("starved_est", "") == "True"
        runs.append(MeasuredRun(key=run_key(row), model=row["model"], group=row["group"], status=row["status"],
                                scenario=scenario, measured=measured))
    return runs
