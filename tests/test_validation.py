"""Measured runs as scenarios (packer.replay) and twin-vs-real scoring (packer.validation)."""

from __future__ import annotations

import csv
import math
from concurrent.futures import ProcessPoolExecutor

import pytest
from conftest import SHARED_DATA

from packer.model import parse_scenario
from packer.replay import read_runs
from packer.validation import holdout_split, replay, summarise


REAL_RUNS = SHARED_DATA / "agullo-h100" / "real_runs.csv"
pytestmark = pytest.mark.skipif(not REAL_RUNS.is_file(), reason="shared/data is not next to the repository")


@pytest.fixture(scope="module")
def runs():
    return read_runs(REAL_RUNS)


@pytest.fixture(scope="module")
def light_runs(runs):
    """A few small ok runs of each model (quick to simulate)."""
    out = []
    for model in sorted({r.model for r in runs}):
        small = [r for r in runs if r.model == model and r.ok and len(r.scenario["adapters"]) <= 16]
        out += small[:3]
    return out


def test_every_run_becomes_a_valid_scenario_with_the_measured_adapters(runs):
    with open(REAL_RUNS, newline="", encoding="utf-8") as f:
        rows = {r["model"] + "|" + r["run_dir"]: r for r in csv.DictReader(f)}
    assert len(runs) == len(rows)
    for run, row in zip(runs, rows.values()):
        sc = parse_scenario(run.scenario)
        assert len(sc.workload.adapters) == int(row["n_adapters"])
        ranks = sorted(a.rank for a in sc.workload.adapters)
        expected = sorted(int(r) for part in row["adapter_rank_counts"].split(";")
                          for r in [part.split(":")[0]] * int(part.split(":")[1]))
        assert ranks == expected
        if row["rate_values"]:
            total = sum(a.rate for a in sc.workload.adapters)
            assert total == pytest.approx(float(row["aggregate_rate_rps"]), rel=0.01)


def test_holdout_split_is_a_stable_partition(runs):
    fit, hold = holdout_split(runs, "fit"), holdout_split(runs, "holdout")
    assert {r.key for r in fit}.isdisjoint({r.key for r in hold})
    assert len(fit) + len(hold) == len(runs) == len(holdout_split(runs, "all"))
    assert [r.key for r in holdout_split(list(reversed(runs)), "fit")] == [r.key for r in reversed(fit)]
    assert 0.35 < len(fit) / len(runs) < 0.65


def test_replay_is_the_same_in_process_in_a_pool_and_in_a_reused_executor(light_runs):
    inline = replay(light_runs, workers=1)
    pooled = replay(light_runs, workers=2)
    with ProcessPoolExecutor(max_workers=2) as ex:
        reused = replay(light_runs, executor=ex)
        again = replay(light_runs, executor=ex)
    for rows in (pooled, reused, again):
        assert [r.key for r in rows] == [r.key for r in light_runs]
        assert [r.sim["throughput_tps"] for r in rows] == [r.sim["throughput_tps"] for r in inline]


def test_summarise_is_the_mean_of_the_per_run_errors(light_runs):
    rows = replay(light_runs, workers=1)
    summary = summarise(rows)
    assert set(summary) == {r.model for r in light_runs}
    for model, s in summary.items():
        mine = [r for r in rows if r.model == model]
        errs = [abs(r.rel_err("throughput_tps", "total_throughput_tps")) for r in mine]
        assert s["throughput_mare_pct"] == pytest.approx(100 * sum(errs) / len(errs))
        agree = sum(bool(r.sim["starved"]) == bool(r.measured["starved"]) for r in mine)
        assert s["starvation_agreement_pct"] == pytest.approx(100 * agree / len(mine))
        assert all(math.isfinite(r.rel_err("mean_itl_ms", "mean_itl_ms")) for r in mine)
