"""`packer solve` and `packer demo`: place a workload's adapters on GPUs."""

from __future__ import annotations

from importlib import resources

import click

from .. import files
from ..defaults import GRACE_S
from ..errors import InputError, PackerError
from .common import bare, executor_options, fail, load_workload, progress_display, solver_choice
from .render import echo_json, placement_table, profile_info

__all__ = ["solve", "demo"]


@click.command()
@click.argument("workload", type=click.Path(dir_okay=False))
@click.option("--solver", default="greedy", show_default=True,
              help="greedy, greedy-split, ladder, loraserve, dlora, cpsat, milp or colgen.")
@click.option("--min-share", type=float, default=None, metavar="F",
              help="With --solver greedy-split: the smallest share of a split adapter, as a fraction of what one "
                   "GPU sustains for it alone, in (0, 0.5] [0.05].")
@click.option("--predictor", default="twin", show_default=True, help="Predictor behind the capacity model.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help=f"Seconds for the solver phase, start-up and model building included: cpsat and milp "
              f"return within it + {GRACE_S:g} s (with greedy's placement if they find nothing better); ladder "
              "stops before a predictor call that would end past it.")
@click.option("--objective", type=click.Choice(["min_gpus", "min_latency"]), default=None,
              help="Overrides the workload's objective (default min_gpus).")
@click.option("--gpus", type=click.IntRange(min=1), default=None, help="GPU budget.")
@click.option("--latency-metric", type=click.Choice(["utilisation", "ttft_p99_ms", "itl_mean_ms"]), default=None,
              help="With --objective min_latency: what the worst GPU minimises (overrides the workload's): the "
                   "capacity model's utilisation (proven bounds), or the twin's p99 TTFT or mean ITL.")
@click.option("--slo", default=None, metavar="METRIC=MS,...",
              help="Latency targets every GPU must meet (overrides the workload's \"slo\"): any of ttft_p99_ms, "
                   "ttft_mean_ms, itl_mean_ms, itl_p99_ms, and per_adapter (p99 TTFT of each adapter), "
                   "e.g. ttft_p99_ms=500,itl_mean_ms=30.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--no-verify", is_flag=True, help="Skip the verification of every GPU.")
@click.option("--verify-with", type=click.Choice(["twin", "vllm"]), default="twin", show_default=True,
              help="Verify each GPU with the twin, or with a live benchmark on vLLM (--vllm-launch).")
@click.option("--vllm-launch", default=None, metavar="CMD",
              help="With --verify-with vllm: the server's launch template [$PACKER_VLLM_LAUNCH] "
                   "(placeholders as in `packer bench --launch`).")
@click.option("--vllm-gpus", default=None, metavar="0,1,...",
              help="With --verify-with vllm: GPU indices, one server each, benchmarked in parallel.")
@click.option("--vllm-model-config", default=None, type=click.Path(dir_okay=False),
              help="With --verify-with vllm: the base model's config.json (shapes the dummy adapters' weights).")
@click.option("--vllm-time-scale", type=float, default=None,
              help="With --verify-with vllm: simulated seconds per wall second, for a template that runs "
                   "`packer serve-twin --time-scale {time_scale}` [1: real vLLM].")
@click.option("--export", "export_dir", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Write the plan as deployable files: per server a vllm serve script, compose.yaml, "
                   "Kubernetes manifests, routing.json and a README.")
@click.option("--adapter-paths", default=None, type=click.Path(dir_okay=False), metavar="MAP.json",
              help="With --export: adapter id -> its path on the servers [placeholders /adapters/<id>].")
@click.option("--model-path", default=None, metavar="PATH",
              help="With --export: the base model vllm serves [the profile's model name].")
@click.option("--verify-trace", default=None, type=click.Path(dir_okay=False), metavar="LOG",
              help="Also replay a request log (as read by `packer workload from-log`) on every GPU: each gets the "
                   "log's own requests for its adapters (a split adapter's by its shares).")
@click.option("--trace-columns", default=None, metavar="FIELD=NAME,...",
              help="With --verify-trace: the log's column names, as in `packer workload from-log --columns`.")
@click.option("--current", default=None, type=click.Path(), metavar="PLAN.json",
              help="Re-plan this deployed plan (what `solve --json` printed, or an --export directory) for the "
                   "new workload with few moves: adapters stay where their GPU still keeps up (greedy), or fewest "
                   "GPUs then fewest moves (--solver cpsat|milp).")
@click.option("--max-moves", type=int, default=None, metavar="K",
              help="With --current: move at most K adapters; beyond that, greedy splits onto added servers "
                   "instead (an exact solver keeps that plan where it proves no plan of whole adapters exists).")
@executor_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def solve(workload: str, solver: str, min_share: float | None, predictor: str, time_limit: float, objective: str | None, gpus: int | None,
          latency_metric: str | None, slo: str | None, seed: int, no_verify: bool, verify_with: str, vllm_launch: str | None, vllm_gpus: str | None,
          vllm_model_config: str | None, vllm_time_scale: float | None, export_dir: str | None,
          adapter_paths: str | None, model_path: str | None, verify_trace: str | None, trace_columns: str | None,
          current: str | None, max_moves: int | None,
          executor: str, ray_address: str | None, as_json: bool) -> None:
    """Place WORKLOAD.json's adapters on the fewest GPUs (or the lowest latency on --gpus GPUs)."""
    from ..planner import solve as run_solve

    wl = load_workload(workload)
    if slo is not None:
        wl = wl.model_copy(update={"slo": _parse_slo(slo)})
    if latency_metric is not None:
        wl = wl.model_copy(update={"latency_metric": latency_metric})
    solver_choice(solver)
    chosen: object = solver
    if min_share is not None:
        if solver != "greedy-split":
            fail(f"--min-share goes with --solver greedy-split, not --solver {solver}")
        from ..solvers import get_solver

        try:
            chosen = get_solver("greedy-split", min_share=min_share)
        except InputError as e:
            fail(f"--min-share: {bare(e)}")
    plan = None
    if max_moves is not None and max_moves < 0:
        fail(f"--max-moves: expected an integer >= 0 (adapters that may move), got {max_moves}")
    if max_moves is not None and current is None:
        fail("--max-moves goes with --current PLAN.json")
    if current is not None:
        from ..solvers.result import read_plan

        try:  # refused before the capacity model is built
            plan = read_plan(current)
        except InputError as e:
            fail(f"--current: {bare(e)}")
    paths = None
    if export_dir is None:
        if adapter_paths is not None or model_path is not None:
            fail("--adapter-paths and --model-path go with --export")
    else:
        from ..deploy.export import check_adapter_paths, check_export_dir, load_adapter_paths

        try:  # refused before the solve, not after it
            check_export_dir(export_dir)
            if adapter_paths is not None:
                paths = load_adapter_paths(adapter_paths)
                check_adapter_paths([a.id for a in wl.adapters], paths)
        except InputError as e:
            fail(f"--{e.field.replace('_', '-')}: {bare(e)}")
    log = None
    if verify_trace is not None:
        from ..requestlog import read_request_log

        try:  # a bad log is refused before the solve, not after it
            log = read_request_log(verify_trace, columns=trace_columns)
        except InputError as e:
            fail(f"--{'trace-columns' if e.field == 'columns' else 'verify-trace'}: {bare(e)}")
    elif trace_columns is not None:
        fail("--trace-columns goes with --verify-trace")
    verifier: object = verify_with
    if verify_with == "vllm" and not no_verify:
        from ..predictors.vllm import VllmPredictor

        try:
            verifier = VllmPredictor(launch=vllm_launch, gpus=vllm_gpus, seed=seed, model_config=vllm_model_config,
                                     time_scale=1.0 if vllm_time_scale is None else vllm_time_scale)
        except InputError as e:
            fail(f"--vllm-{e.field.replace('_', '-')}: {bare(e)}"
                 if e.field in ("launch", "gpus", "model_config", "time_scale") else str(e))
    elif vllm_launch or vllm_gpus or vllm_model_config or vllm_time_scale is not None:
        fail("--vllm-launch, --vllm-gpus, --vllm-model-config and --vllm-time-scale go with --verify-with vllm")
    try:
        with progress_display(quiet=as_json) as progress:
            result = run_solve(wl, solver=chosen, predictor=predictor, objective=objective, gpus=gpus,
                               time_limit=time_limit, seed=seed, verify=not no_verify, progress=progress,
                               executor=executor, ray_address=ray_address, verify_with=verifier, current=plan,
                               max_moves=max_moves)
    except InputError as e:
        fail(f"--{e.field.replace('_', '-')}: {bare(e)}" if e.field in ("current", "max_moves")
             else f"{workload}: {e}")
    except PackerError as e:
        fail(f"{workload}: {e}")
    trace_check = None
    if log is not None and result.gpus:
        from ..deploy.trace import verify_on_trace

        with progress_display(quiet=as_json) as progress:
            if progress:
                progress(f"replaying {log.requests:,} requests of {verify_trace} on {result.num_gpus} GPUs")
            trace_check = verify_on_trace(result, wl, log, seed=seed, executor=executor, ray_address=ray_address)
    if export_dir is not None:
        from ..deploy.export import export_plan

        try:
            manifest = export_plan(result, wl, export_dir, adapter_paths=paths, model_path=model_path)
        except InputError as e:
            fail(f"--{e.field.replace('_', '-')}: {bare(e)}")
        except OSError as e:
            fail(f"--export: {export_dir}: {e.strerror or e}")
        n = len(manifest.servers)
        click.echo(f"exported {n} server{'' if n == 1 else 's'} to {manifest.out_dir}"
                   + (" (adapter paths are placeholders: see its README.md)" if manifest.placeholders else ""),
                   err=True)
    if as_json:
        info = profile_info(wl.profile)
        echo_json({**result.to_dict(), **info, "gpus_per_server": info["tensor_parallel_size"],
                   "total_gpus": result.num_gpus * info["tensor_parallel_size"],
                   **({"trace_verification": trace_check.to_dict()} if trace_check else {})})
    else:
        click.echo(placement_table(workload, result, profile_info(wl.profile)))
        if trace_check is not None:
            click.echo(trace_lines(trace_check))


def trace_lines(check) -> str:
    """The --verify-trace verdict, one line per GPU and a warning line when the plan fails the log."""
    lines = [f"replayed on {check.source} ({check.span_s:,.0f} s):"]
    for g in check.gpus:
        verdict = "ok" if g.ok else ("out of memory" if g.memory_error else "STARVED")
        itl = "n/a" if g.mean_itl_ms is None else f"{g.mean_itl_ms:.1f} ms"
        served = "n/a" if g.throughput_tps is None else f"{g.throughput_tps:,.0f}"
        lines.append(f"  GPU {g.gpu}: {g.requests:,} requests, {served} of {g.offered_tps:,.0f} tokens/s served, "
                     f"mean ITL {itl}: {verdict}")
    if check.unplanned_requests:
        names = ", ".join(check.unplanned_adapters[:5]) + (" ..." if len(check.unplanned_adapters) > 5 else "")
        lines.append(f"warning: {check.unplanned_requests:,} requests of the log are for adapters the plan does not "
                     f"place ({names})")
    failing = [g.gpu for g in check.gpus if not g.ok]
    if failing:
        lines.append(f"warning: GPU{'s' if len(failing) > 1 else ''} {', '.join(map(str, failing))} "
                     f"fail{'' if len(failing) > 1 else 's'} on the log's own arrivals; plan with the log's lengths "
                     "(packer workload from-log), for a higher percentile (--plan-for p99 or peak), or add GPUs")
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output instead of a table.")
def demo(as_json: bool) -> None:
    """Solve the shipped example workload (120 adapters, Zipf rates, ranks 8-32, Llama-3.1-8B on H100)."""
    from ..planner import parse_workload
    from ..planner import solve as run_solve

    path = resources.files("packer") / "examples" / "workload.json"
    wl = parse_workload(files.read_json_text(path.read_text(encoding="utf-8"), "packer/examples/workload.json"))
    if not as_json:
        click.echo(f"Example workload: {len(wl.adapters)} adapters, {wl.total_rate:.1f} req/s in total, "
                   f"profile {wl.profile}; placing them with the greedy solver and verifying with the twin.")
    with progress_display(quiet=as_json) as progress:
        result = run_solve(wl, progress=progress)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(placement_table("example workload", result, profile_info(wl.profile)))


def _parse_slo(text: str):
    """``--slo ttft_p99_ms=500,itl_mean_ms=30,per_adapter`` as an ``Slo`` (one error line if bad)."""
    from ..model import SLO_METRICS, Slo, parse_model

    d: dict = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = key.strip()
        if key == "per_adapter":
            d[key] = value.strip().lower() not in ("0", "false", "no") if eq else True
        elif key in SLO_METRICS and eq:
            d[key] = value.strip()
        else:
            fail(f"--slo: {part!r} is not METRIC=MS with METRIC one of {', '.join(SLO_METRICS)} (or per_adapter)")
    try:
        return parse_model(Slo, d)
    except InputError as e:
        fail(f"--slo: {e}")
