"""`packer workload from-log`: a placement workload from request logs."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from .common import bare, fail, read_json
from .render import echo_json

__all__ = ["workload"]

_FLAGS = {"log": "LOG", "format": "--format", "columns": "--columns", "time_unit": "--time-unit", "window": "--window",
          "plan_for": "--plan-for", "arrivals": "--arrivals", "lengths": "--lengths", "quantiles": "--quantiles",
          "rank": "--rank", "ranks": "--ranks"}


def _flag_error(e: InputError) -> None:
    """Fail with the flag the bad value came from in place of the library's field name (errors in the
    log itself already name the file)."""
    flag = _FLAGS.get(e.field)
    if flag is None:
        fail(str(e))
    fail(bare(e) if flag == "LOG" else f"{flag}: {bare(e)}")


@click.group()
def workload() -> None:
    """Build placement workloads."""


@workload.command("from-log")
@click.argument("log", type=click.Path(dir_okay=False))
@click.option("--profile", required=True, help="The profile (model x GPU) to plan for; see `packer profiles`.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
              help="The log's format [from the file name, else its first character]; .gz is read too.")
@click.option("--columns", default=None, metavar="FIELD=NAME,...",
              help="The log's names for timestamp, adapter, prompt_tokens, output_tokens (dotted keys for nested "
                   "JSON), where the common aliases do not match.")
@click.option("--time-unit", type=click.Choice(["s", "ms", "us", "ns"]), default="s", show_default=True,
              help="Unit of numeric timestamps (ISO 8601 timestamps are read as such).")
@click.option("--window", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              help="Seconds of the sliding windows over which --plan-for peak/pNN rates are measured.")
@click.option("--plan-for", default="mean", show_default=True,
              help="mean, peak, or pNN (e.g. p95: the 95th percentile of the window rates).")
@click.option("--arrivals", type=click.Choice(["auto", "poisson", "bursty", "trace"]), default="auto",
              show_default=True, help="Arrival model: auto picks poisson or bursty from the log's dispersion; trace "
                                      "replays the log (written beside --out).")
@click.option("--lengths", type=click.Choice(["empirical", "sharegpt", "azure-conv", "fixed"]), default="empirical",
              show_default=True, help="Length model: the log's own quantiles, or a shipped shape at the log's means.")
@click.option("--quantiles", type=click.IntRange(2, 10_001), default=201, show_default=True,
              help="Quantiles kept by the empirical length model.")
@click.option("--rank", type=click.IntRange(1, 512), default=16, show_default=True,
              help="LoRA rank of adapters not in --ranks.")
@click.option("--ranks", default=None, type=click.Path(dir_okay=False), metavar="MAP.json",
              help="Adapter id -> LoRA rank.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), metavar="WORKLOAD.json",
              help="Write the workload here (atomically) [stdout].")
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON object (with the workload when no --out).")
def from_log(log: str, profile: str, fmt: str | None, columns: str | None, time_unit: str, window: float,
             plan_for: str, arrivals: str, lengths: str, quantiles: int, rank: int, ranks: str | None,
             out: str | None, as_json: bool) -> None:
    """Read LOG (one row per request: timestamp, adapter, prompt and output tokens) and write a workload."""
    from .. import files
    from ..planner import parse_workload
    from ..requestlog import read_request_log, workload_from_log, write_trace

    rank_map = None
    if ranks is not None:
        rank_map = read_json(ranks)
        if not isinstance(rank_map, dict) or not all(isinstance(k, str) and isinstance(v, int) and not
                                                         isinstance(v, bool) and v >= 1 for k, v in rank_map.items()):
            fail(f"--ranks: {ranks}: expected a JSON object of adapter id -> positive integer rank")
    if arrivals == "trace" and out is None:
        fail("--arrivals trace replays the log from a file written beside the workload: give --out WORKLOAD.json")
    trace_path = Path(out).with_suffix(".trace.csv") if arrivals == "trace" and out else None
    try:
        req = read_request_log(log, format=fmt, columns=columns, time_unit=time_unit)
        if rank_map is not None:
            unknown = sorted(set(rank_map) - set(req.adapter_ids))
            if unknown:
                fail(f"--ranks: {ranks}: adapters not in the log: {', '.join(unknown[:5])}"
                     + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
        wl, summary = workload_from_log(req, profile, plan_for=plan_for, window_s=window, arrivals=arrivals,
                                        lengths=lengths, rank=rank, ranks=rank_map, quantiles=quantiles,
                                        trace_file=trace_path.name if trace_path else None)
        if trace_path is not None:
            write_trace(req, trace_path)
            wl["arrivals"]["trace"] = str(trace_path.resolve())
        parse_workload(wl)  # what is written is a workload packer solve accepts
    except InputError as e:
        if e.field == "profile":
            fail(f"--profile: {bare(e)}")
        _flag_error(e)
    if out is not None:
        try:
            files.write_json_atomic(out, wl)
        except OSError as e:
            fail(f"--out: {out}: {e.strerror or e}")
    if as_json:
        echo_json({"summary": summary.to_dict(), **({"workload": wl} if out is None else {"out": out})})
        return
    if out is None:
        echo_json(wl)
    s = summary
    say = (lambda m: click.echo(m, err=True)) if out is None else click.echo
    say(f"{s.source}: {s.requests:,} requests over {s.span_s:,.0f} s from {s.adapters} adapters; "
        f"mean {s.mean_rate:.3g} req/s, peak-to-mean {s.peak_to_mean:.2f} ({s.window_s or window:g} s windows)")
    if s.window_s is not None:
        say(f"planned for {s.plan_for}: {s.planned_rate:.3g} req/s in total (cluster {s.plan_for} "
            f"{s.cluster_peak_rate:.3g} req/s; the adapters' own {s.plan_for} rates add up to "
            f"{s.sum_of_adapter_peaks:.3g})")
    else:
        say(f"planned for the mean: {s.planned_rate:.3g} req/s in total")
    pp, op = s.prompt_percentiles, s.output_percentiles
    say(f"prompt tokens p50 {pp['p50']:,} p90 {pp['p90']:,} p99 {pp['p99']:,} max {pp['max']:,}; "
        f"output tokens p50 {op['p50']:,} p90 {op['p90']:,} p99 {op['p99']:,} max {op['max']:,}")
    say(f"lengths: {s.length_model} (means {s.length_means[0]:,.0f} / {s.length_means[1]:,.0f} tokens; the log's "
        f"{s.log_length_means[0]:,.0f} / {s.log_length_means[1]:,.0f})")
    cv = "n/a" if s.gap_cv is None else f"{s.gap_cv:.2f}"
    sig = "n/a" if s.rate_sigma is None else f"{s.rate_sigma:.2f}"
    say(f"arrivals: {s.arrivals['kind']} (gap cv {cv}, rate sigma {sig})"
        + (f"; replay in {trace_path}" if trace_path else ""))
    if s.bad_rows:
        say(f"warning: {req.bad_summary()}")
    if out is not None:
        say(f"wrote {out}; next: packer solve {out}")
