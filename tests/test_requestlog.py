"""Workloads from request logs (issue 16, section 1): the shipped Azure conversation trace with a Zipf
adapter column added, JSONL logs with nested keys and ISO timestamps, bad rows counted, the planned
rates against the cluster's peak, the empirical length model, and `packer solve --verify-trace`."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import packer_cli as cli
from packer.errors import InputError
from packer.model import LengthSpec
from packer.planner import parse_workload
from packer.planner import solve as run_solve
from packer.requestlog import _normal_score_corr, read_request_log, workload_from_log
from packer.twin.lengths import draw_lengths

LLAMA = "llama-3.1-8b-instruct@h100-64gb"
AZURE = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "azure2023_conv.csv"


@pytest.fixture(scope="module")
def azure_log(tmp_path_factory) -> Path:
    """The Azure conversation trace, its own columns, with an adapter column drawn Zipf over 30 adapters."""
    if not AZURE.is_file():
        pytest.skip(f"{AZURE} is not here (the shared data sits beside the checkout)")
    rows = list(csv.DictReader(AZURE.open()))
    w = 1.0 / np.arange(1, 31) ** 1.1
    pick = np.random.default_rng(7).choice(30, size=len(rows), p=w / w.sum())
    path = tmp_path_factory.mktemp("logs") / "azure_with_adapters.csv"
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["arrived_at", "num_prefill_tokens", "num_decode_tokens", "adapter"])
        for r, a in zip(rows, pick):
            out.writerow([r["arrived_at"], r["num_prefill_tokens"], r["num_decode_tokens"], f"lora-{a:02d}"])
    return path


def test_the_azure_trace_reads_with_its_own_column_names(azure_log):
    log = read_request_log(azure_log)
    raw = list(csv.DictReader(AZURE.open()))
    assert log.requests == log.rows == len(raw) and not log.bad_rows
    assert log.columns == {"timestamp": "arrived_at", "adapter": "adapter", "prompt_tokens": "num_prefill_tokens",
                           "output_tokens": "num_decode_tokens"}
    assert log.prompt_tokens.mean() == pytest.approx(np.mean([int(r["num_prefill_tokens"]) for r in raw]))
    assert np.all(np.diff(log.arrival_s) >= 0) and log.arrival_s[0] == 0
    assert len(log.adapter_ids) == 30


def test_mean_rates_add_up_to_the_logs_rate(azure_log):
    log = read_request_log(azure_log)
    wl, s = workload_from_log(log, LLAMA, plan_for="mean")
    rates = {a["id"]: a["rate"] for a in wl["adapters"]}
    counts = dict(zip(log.adapter_ids, log.counts()))
    for aid, r in rates.items():
        assert r == pytest.approx(counts[aid] / log.span_s, rel=1e-5)
    assert s.planned_rate == pytest.approx(log.requests / log.span_s, rel=1e-5)


@pytest.mark.parametrize("plan_for", ["p90", "p95", "peak"])
def test_peak_rates_respect_the_cluster_peak(azure_log, plan_for):
    log = read_request_log(azure_log)
    mean_wl, _ = workload_from_log(log, LLAMA, plan_for="mean")
    wl, s = workload_from_log(log, LLAMA, plan_for=plan_for, window_s=300)
    mean = {a["id"]: a["rate"] for a in mean_wl["adapters"]}
    assert s.cluster_peak_rate < s.sum_of_adapter_peaks  # peaks that do not coincide ...
    assert s.planned_rate == pytest.approx(s.cluster_peak_rate, rel=1e-3)  # ... are not simply added
    assert s.planned_rate > s.mean_rate
    for a in wl["adapters"]:
        assert a["rate"] >= mean[a["id"]] * (1 - 1e-5)
    parse_workload(wl)


def test_the_empirical_length_model_keeps_the_logs_shape(azure_log):
    log = read_request_log(azure_log)
    wl, s = workload_from_log(log, LLAMA)
    spec = LengthSpec.model_validate(wl["lengths"])
    assert spec.distribution == "empirical" and spec.max_input == int(log.prompt_tokens.max()) > 10_000
    # the planned means are those of the quantiles the twin draws from: within 2 % of the log's
    assert spec.input_mean == pytest.approx(log.prompt_tokens.mean(), rel=0.02)
    assert spec.output_mean == pytest.approx(log.output_tokens.mean(), rel=0.02)
    p, o = draw_lengths(spec, 200_000, None, np.random.default_rng(1))
    assert p.mean() == pytest.approx(spec.input_mean, rel=0.01) and o.mean() == pytest.approx(spec.output_mean, rel=0.01)
    for q in (50, 90, 99):
        assert np.percentile(p, q) == pytest.approx(np.percentile(log.prompt_tokens, q), rel=0.03)
    rho = wl["lengths"]["empirical"]["rho"]  # the copula's correlation, drawn as measured
    assert _normal_score_corr(p[:20_000], o[:20_000]) == pytest.approx(rho, abs=0.05)
    assert s.prompt_percentiles["max"] == int(log.prompt_tokens.max())


def test_jsonl_nested_keys_iso_timestamps_and_bad_rows_counted(tmp_path):
    lines = []
    for i in range(40):
        lines.append(json.dumps({"created_at": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}.123456789Z",
                                 "model": f"ad-{i % 3}",
                                 "usage": {"prompt_tokens": 100 + i, "completion_tokens": 20}}))
    lines += ['{"created_at": "yesterday", "model": "ad-0", "usage": {"prompt_tokens": 5, "completion_tokens": 5}}',
              '{"model": "ad-0", "usage": {"prompt_tokens": 5, "completion_tokens": 5}}',
              'not json at all',
              '{"created_at": "2026-01-01T00:00:10Z", "model": "ad-1", "usage": {"prompt_tokens": -3, '
              '"completion_tokens": 5}}']
    path = tmp_path / "log.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    log = read_request_log(path)
    assert log.requests == 40 and log.rows == 44
    assert sum(log.bad_rows.values()) == 4 and "with a bad timestamp" in log.bad_rows
    assert log.arrival_s[-1] == pytest.approx(39.0) and log.start_epoch_s is not None
    assert log.adapter_ids == ("ad-0", "ad-1", "ad-2")
    assert "4 of 44 rows skipped" in log.bad_summary()


def test_tsv_logs_read_like_csv(tmp_path):
    rows = [(i * 0.5, f"ad-{i % 2}", 100 + i, 10 + i) for i in range(20)]
    tsv, csv_ = tmp_path / "log.tsv", tmp_path / "log.csv"
    for path, sep in ((tsv, "\t"), (csv_, ",")):
        path.write_text("timestamp" + sep + "adapter" + sep + "prompt_tokens" + sep + "output_tokens\n"
                        + "".join(sep.join(map(str, r)) + "\n" for r in rows))
    a, b = read_request_log(tsv), read_request_log(csv_)
    assert a.requests == 20 and not a.bad_rows and a.adapter_ids == ("ad-0", "ad-1")
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert np.array_equal(a.output_tokens, b.output_tokens) and np.array_equal(a.adapter, b.adapter)


def test_bad_logs_are_one_clear_error(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("when,who,in,out\n1,a,10,10\n2,b,10,10\n")
    with pytest.raises(InputError, match="timestamp"):
        read_request_log(p)
    log = read_request_log(p, columns="timestamp=when,adapter=who,prompt_tokens=in,output_tokens=out")
    assert log.requests == 2
    with pytest.raises(InputError, match="p95"):
        workload_from_log(log, LLAMA, plan_for="p200")
    with pytest.raises(InputError, match="window"):
        workload_from_log(log, LLAMA, plan_for="p95", window_s=300)
    p.write_text("timestamp,adapter,prompt_tokens,output_tokens\n1,a,x,1\n2,a,y,1\n3,a,5,1\n")
    with pytest.raises(InputError, match="bad rows"):
        read_request_log(p)


def _compressed(src: Path, dst: Path, factor: float) -> Path:
    """The same log with its timestamps divided by ``factor`` (``factor`` times the rate)."""
    with src.open() as f, dst.open("w", newline="") as g:
        r, w = csv.reader(f), csv.writer(g)
        w.writerow(next(r))
        for row in r:
            w.writerow([float(row[0]) / factor, *row[1:]])
    return dst


def test_from_log_then_solve_with_verify_trace(env, azure_log, tmp_path):
    out = tmp_path / "w.json"
    r = cli(env, "workload", "from-log", str(azure_log), "--profile", LLAMA, "--plan-for", "p95", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "30 adapters" in r.stdout and "peak-to-mean" in r.stdout and "prompt tokens p50" in r.stdout
    wl = json.loads(out.read_text())
    assert wl["lengths"]["distribution"] == "empirical" and len(wl["adapters"]) == 30
    r = cli(env, "solve", str(out), "--verify-trace", str(azure_log), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    tv = d["trace_verification"]
    assert tv["ok"] and sum(g["requests"] for g in tv["gpus"]) == read_request_log(azure_log).requests
    # the same plan on the log at 4x its rate: the GPUs are starved, and the table says so
    fast = _compressed(azure_log, tmp_path / "fast.csv", 4.0)
    r = cli(env, "solve", str(out), "--verify-trace", str(fast))
    assert r.returncode == 0, r.stderr
    assert "STARVED" in r.stdout and "on the log's own arrivals" in r.stdout


def test_verify_trace_routes_a_split_adapter_by_its_shares(azure_log):
    from packer.deploy.trace import verify_on_trace

    log = read_request_log(azure_log)
    wl, _ = workload_from_log(log, LLAMA, plan_for="mean", lengths="sharegpt")
    wl["adapters"] = [dict(a, rate=a["rate"] * 3) for a in wl["adapters"]]  # the hot adapters split
    w = parse_workload(wl)
    result = run_solve(w, verify=False, executor="serial")
    split = {aid: where for aid, where in result.placement().items() if len(where) > 1}
    check = verify_on_trace(result, w, log, executor="serial")
    assert check.unplanned_requests == 0 and len(check.gpus) == result.num_gpus
    assert sum(g.requests for g in check.gpus) == log.requests
    assert verify_on_trace(result, w, log, executor="serial") == check  # seeded routing
    if split:
        from packer.deploy.trace import _route

        gpu_of = _route(result, log, 0)
        aid, where = next(iter(split.items()))
        mine = gpu_of[log.adapter == log.adapter_ids.index(aid)]
        for g, share in where:
            assert np.mean(mine == g) == pytest.approx(share / sum(s for _, s in where), abs=0.05)


def test_cli_errors_are_one_line(env, tmp_path, azure_log):
    r = cli(env, "workload", "from-log", str(tmp_path / "missing.csv"), "--profile", LLAMA)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such file" in r.stderr
    r = cli(env, "workload", "from-log", str(azure_log), "--profile", LLAMA, "--arrivals", "trace")
    assert r.returncode == 2 and "--out" in r.stderr
    r = cli(env, "workload", "from-log", str(azure_log), "--profile", "nope")
    assert r.returncode == 2 and r.stderr.startswith("error: --profile:")


@pytest.mark.parametrize("empirical, match", [
    ({"prompt": [10, 5, 20], "output": [1, 2, 3]}, "must not decrease"),
    ({"prompt": [10, 20, 30], "output": [1, 2]}, "same"),
    ({"prompt": [0, 20, 30], "output": [1, 2, 3]}, "at least 1"),
])
def test_a_bad_empirical_length_model_is_one_clear_error(empirical, match):
    with pytest.raises(InputError, match="lengths") as e:
        parse_workload({"profile": LLAMA, "adapters": [{"id": "a", "rank": 8, "rate": 1.0}],
                        "lengths": {"distribution": "empirical", "empirical": empirical}})
    assert match in str(e.value)
