"""The ``packer`` command line."""

from __future__ import annotations

import io
import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

# Only click and light packer modules here (no numpy, numba, pydantic, rich or solvers): each
# command imports what it needs, so `packer --help` and `packer profiles` start fast.
from . import files
from .defaults import DEFAULT_DURATION_S, DEFAULT_WARMUP_S, GRACE_S
from .errors import InputError, PackerError

if TYPE_CHECKING:
    from .model import Scenario

__all__ = ["main"]

EXIT_INPUT = 2


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_INPUT)


def _read_json(path: str) -> Any:
    try:
        return files.read_json(path)
    except InputError as e:
        _fail(_bare(e))


def _load_scenario(path: str) -> Scenario:
    from .model import parse_scenario
    from .profile import load_profile

    data = _read_json(path)
    try:
        sc = parse_scenario(data)
        load_profile(sc.profile)  # an unknown profile is an input error too, before anything runs
        return sc
    except InputError as e:
        _fail(f"{path}: {e}")


def _summary(name: str, r) -> str:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{name} — {r.profile}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    if r.memory_error:
        t.add_row("memory error", r.memory_error)
        t.add_row("offered (tok/s)", f"{r.offered_tps:,.0f} ({r.offered_rps:,.2f} req/s)")
    else:
        verdict = "STARVED" if r.starved else "keeps up"
        why = []
        if r.starved_by_throughput:
            why.append(f"throughput {r.throughput_ratio:.0%} of offered")
        if r.queue_diverging:
            why.append(f"queue grows {r.waiting_growth_rps:.2f} req/s")
        t.add_row("verdict", verdict + (f" ({'; '.join(why)})" if why else ""))
        t.add_row("throughput (tok/s)", f"{r.throughput_tps:,.0f} of {r.offered_tps:,.0f} offered")
        t.add_row("  input / output", f"{r.input_tps:,.0f} / {r.output_tps:,.0f}")
        t.add_row("requests", f"{r.finished:,} finished / {r.arrived:,} arrived"
                  + (f" ({r.not_sent:,} not sent: queue full)" if r.not_sent else ""))
        t.add_row("TTFT mean / p50 / p99 (ms)", f"{r.mean_ttft_ms:,.0f} / {r.p50_ttft_ms:,.0f} / {r.p99_ttft_ms:,.0f}")
        t.add_row("ITL mean (ms); TPOT p99", f"{r.mean_itl_ms:.1f}; {r.p99_tpot_ms:.1f}")
        t.add_row("worst adapter p99 TTFT (ms)", f"{r.worst_adapter_p99_ttft_ms:,.0f}")
        t.add_row("batch mean / max", f"{r.mean_running:.1f} / {r.max_running}")
        t.add_row("waiting mean / max / end", f"{r.mean_waiting:,.0f} / {r.max_waiting:,} / {r.end_waiting:,}")
        t.add_row("distinct adapters per step", f"{r.mean_distinct_adapters:.1f}")
        t.add_row("KV capacity (tokens); usage mean / max",
                  f"{r.kv_capacity_tokens:,}; {r.mean_kv_usage:.0%} / {r.max_kv_usage:.0%}")
        t.add_row("preemptions; adapter loads GPU / disk",
                  f"{r.preemptions:,}; {r.gpu_adapter_loads:,} / {r.disk_adapter_loads:,}")
    t.add_row("simulated / wall", f"{r.sim_seconds:,.0f} s / {r.wall_seconds:.2f} s ({r.speedup:,.0f}x real time)")
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(t)
    return console.export_text()


class _OneLineErrors(click.Group):
    """Usage errors (bad flags, missing arguments) as one ``error:`` line and exit code 2."""

    def main(self, *args, **kwargs):
        warnings.showwarning = _one_line_warning
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except click.ClickException as e:
            where = f"{e.ctx.command_path}: " if getattr(e, "ctx", None) is not None else ""
            click.echo(f"error: {where}{e.format_message()} (see --help)", err=True)
            sys.exit(EXIT_INPUT)
        sys.exit(rv if isinstance(rv, int) else 0)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="packer")
def main() -> None:
    """packer: plan GPUs, adapter placement and vLLM settings for multi-LoRA serving."""


@main.command()
@click.argument("scenarios", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per scenario, one per line.")
@click.option("--per-adapter", is_flag=True, help="Include per-adapter rows in the JSON output.")
def simulate(scenarios: tuple[str, ...], as_json: bool, per_adapter: bool) -> None:
    """Simulate each SCENARIO.json with the Digital Twin."""
    from .twin import Twin

    parsed = [_load_scenario(p) for p in scenarios]  # validate every file before running any
    for path, sc in zip(scenarios, parsed):
        try:
            r = Twin.from_scenario(sc).run()
        except PackerError as e:
            _fail(f"{path}: {e}")
        if as_json:
            click.echo(files.dumps(r.to_dict(per_adapter=per_adapter)))
        else:
            click.echo(_summary(path, r))


def _load_workload(path: str):
    from .planner import parse_workload

    data = _read_json(path)
    try:
        return parse_workload(data)
    except InputError as e:
        _fail(f"{path}: {e}")


def _solver_choice(name: str) -> str:
    from .solvers import SOLVERS
    return name if name in SOLVERS.names() else _fail(
        f"--solver: unknown solver {name!r}; valid: {', '.join(SOLVERS.names())}")


_EXECUTOR_HELP = ("Where parallel twin runs go: a local process pool, this process, or Ray (needs the packer[ray] "
                  "extra). Every executor gives the same answer.")


def _executor_options(f):
    """--executor and --ray-address, shared by the commands that run many twin simulations."""
    f = click.option("--ray-address", default=None, metavar="ADDRESS",
                     help="Ray cluster to use with --executor ray [default: start a local Ray].")(f)
    return click.option("--executor", type=click.Choice(["process", "serial", "ray"]), default="process",
                        show_default=True, help=_EXECUTOR_HELP)(f)


@main.command()
@click.argument("workload", type=click.Path(dir_okay=False))
@click.option("--solver", default="greedy", show_default=True, help="greedy, ladder, cpsat or milp.")
@click.option("--predictor", default="twin", show_default=True, help="Predictor behind the capacity model.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help=f"Seconds for the solver phase, start-up and model building included: cpsat and milp "
              f"return within it + {GRACE_S:g} s (with greedy's placement if they find nothing better); ladder "
              "stops before a predictor call that would end past it.")
@click.option("--objective", type=click.Choice(["min_gpus", "min_latency"]), default=None,
              help="Overrides the workload's objective (default min_gpus).")
@click.option("--gpus", type=click.IntRange(min=1), default=None, help="GPU budget.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--no-verify", is_flag=True, help="Skip the twin verification of every GPU.")
@_executor_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def solve(workload: str, solver: str, predictor: str, time_limit: float, objective: str | None, gpus: int | None,
          seed: int, no_verify: bool, executor: str, ray_address: str | None, as_json: bool) -> None:
    """Place WORKLOAD.json's adapters on the fewest GPUs (or the lowest latency on --gpus GPUs)."""
    from .planner import solve as run_solve

    wl = _load_workload(workload)
    _solver_choice(solver)
    progress = None if as_json else (lambda msg: click.echo(msg, err=True))
    try:
        result = run_solve(wl, solver=solver, predictor=predictor, objective=objective, gpus=gpus,
                           time_limit=time_limit, seed=seed, verify=not no_verify, progress=progress,
                           executor=executor, ray_address=ray_address)
    except InputError as e:
        _fail(f"{workload}: {e}")
    if as_json:
        click.echo(files.dumps(result.to_dict()))
    else:
        click.echo(_placement_table(workload, result))


def _placement_table(name: str, r) -> str:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120, record=True, file=io.StringIO())
    bound = "" if r.lower_bound is None else f", lower bound {r.lower_bound:g}"
    gap = "" if r.gap is None else f", gap {r.gap:.1%}"
    head = (f"{name}: {r.num_gpus} GPU{'s' if r.num_gpus != 1 else ''} ({r.status.value}{bound}{gap}); "
            f"solver {r.solver}, predictor {r.predictor}; "
            f"{'every GPU verified by the twin' if r.verified else 'NOT verified by the twin'}; "
            f"{r.wall_seconds:.1f} s")
    console.print(head)
    for warning in r.warnings:
        console.print(f"warning: {warning}")
    if r.message:
        console.print(r.message)
    t = Table(show_lines=False)
    for col, just in (("GPU", "right"), ("adapters", "right"), ("max-loras", "right"), ("max-cpu-loras", "right"),
                      ("max-lora-rank", "right"), ("load tok/s", "right"), ("util", "right"),
                      ("pred. tok/s", "right"), ("pred. ITL ms", "right"), ("twin", "left")):
        t.add_column(col, justify=just)
    for g, p in enumerate(r.gpus):
        replicated = sum(1 for a in p.adapters if a.share < 1.0)
        count = f"{len(p.adapters)}" + (f" ({replicated} split)" if replicated else "")
        thr = "-" if p.predicted_throughput_tps is None else f"{p.predicted_throughput_tps:,.0f}"
        itl = "-" if p.predicted_itl_ms is None else f"{p.predicted_itl_ms:.1f}"
        ok = {True: "ok", False: "FAILS", None: "-"}[p.verified]
        t.add_row(str(g), count, str(p.max_loras), str(p.max_cpu_loras), str(p.max_lora_rank),
                  f"{p.offered_tps:,.0f}", f"{p.utilisation:.0%}", thr, itl, ok)
    console.print(t)
    shown = r.gpus[:8]
    for g, p in enumerate(shown):
        console.print(f"GPU {g}: vllm serve <model> {p.vllm_flags()}", soft_wrap=True, markup=False, highlight=False)
    if len(r.gpus) > len(shown):
        console.print(f"... and {len(r.gpus) - len(shown)} more GPUs, each with the flags of its row")
    console.print("util = load / the capacity model's sustainable load")
    if r.repaired_items:
        console.print(f"{r.repaired_items} adapter placement(s) moved by verification and repair")
    phases = ", ".join(f"{name} {seconds:.2f}" for name, seconds in r.phases.items())
    console.print(f"time: capacity model {r.capacity_seconds:.1f} s, solver {r.solver_seconds:.1f} s"
                  + (f" ({phases})" if phases else "") + f", verification {r.verify_seconds:.1f} s")
    return console.export_text()


def _bare(e: InputError) -> str:
    """An InputError's message without its ``field: `` prefix (to name the CLI flag instead)."""
    s, head = str(e), f"{e.field}: "
    return s[len(head):] if e.field and s.startswith(head) else s


def _check_model_file(path: str) -> None:
    """--model: a readable packer tree model (JSON or NPZ), checked before anything is predicted."""
    from .predictors.tree import load_model

    try:
        load_model(path)
    except InputError as e:
        _fail(f"--model: {_bare(e)}")


def _prediction_dict(pred, wall_seconds: float) -> dict:
    return {**pred.to_dict(), "throughput_ratio": pred.throughput_ratio, "wall_seconds": wall_seconds}


def _prediction_table(name: str, p, wall_seconds: float) -> str:
    from rich.console import Console
    from rich.table import Table

    t = Table(show_header=False)
    t.add_column(style="bold")
    t.add_column()
    if p.memory_error:
        t.add_row("verdict", "memory error (vLLM would not start)")
        t.add_row("memory error", p.memory_error)
        t.add_row("offered (tok/s)", f"{p.offered_tps:,.0f}")
    else:
        t.add_row("verdict", "STARVED" if p.starved else "keeps up")
        ratio = p.throughput_ratio
        if p.throughput_tps is None:
            t.add_row("throughput (tok/s)", f"not predicted; {p.offered_tps:,.0f} offered")
        else:
            t.add_row("throughput (tok/s)", f"{p.throughput_tps:,.0f} of {p.offered_tps:,.0f} offered"
                      + ("" if ratio is None else f" ({ratio:.0%})"))
        t.add_row("ITL mean (ms)", "-" if p.mean_itl_ms is None else f"{p.mean_itl_ms:.1f}")
        if p.p99_ttft_ms is not None:
            t.add_row("TTFT p99 (ms)", f"{p.p99_ttft_ms:,.0f}")
    for w in p.warnings:
        t.add_row("warning", w)
    t.add_row("prediction time", f"{wall_seconds * 1e3:,.3f} ms" if wall_seconds < 1 else f"{wall_seconds:,.2f} s")
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(f"{name} — predictor {p.predictor}", soft_wrap=True, markup=False, highlight=False)
    console.print(t)
    return console.export_text()


@main.command()
@click.argument("scenarios", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--predictor", default="tree", show_default=True, help="tree, forest or twin.")
@click.option("--model", default=None, metavar="PATH",
              help="Model file (.json / .npz, from `packer train`) for tree / forest instead of the shipped one.")
@click.option("--extrapolation", type=click.Choice(["warn", "twin", "error"]), default="warn", show_default=True,
              help="tree / forest on a query outside their training domain: answer with a warning, answer with "
                   "the twin instead, or refuse.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per scenario, one per line.")
def predict(scenarios: tuple[str, ...], predictor: str, model: str | None, extrapolation: str,
            as_json: bool) -> None:
    """Predict each SCENARIO.json's throughput, starvation and ITL with a fast predictor.

    Same scenario files as `packer simulate`; `--predictor twin` runs the twin with each scenario's
    duration_s and seed (the numbers of `packer simulate`), `tree` / `forest` answer in microseconds."""
    import time

    from .predictors import PREDICTORS, GpuQuery

    parsed = [_load_scenario(p) for p in scenarios]  # validate every file before predicting any
    if predictor not in PREDICTORS.names():
        _fail(f"--predictor: unknown predictor {predictor!r}; valid: {', '.join(PREDICTORS.names())}")
    if model is not None:
        if predictor == "twin":
            _fail("--model: applies to the tree and forest predictors, not twin")
        _check_model_file(model)
    if extrapolation != "warn" and predictor == "twin":
        _fail("--extrapolation: applies to the tree and forest predictors, not twin")
    options: dict[str, Any] = {} if model is None else {"model": model}
    if extrapolation != "warn":
        options["extrapolation"] = extrapolation

    def make(**extra):
        try:
            return PREDICTORS.get(predictor, field="--predictor", **options, **extra)
        except InputError as e:  # a missing optional dependency, a bad model file
            _fail(str(e))

    queries = [GpuQuery.from_scenario(sc) for sc in parsed]
    results: list[tuple] = []  # (prediction, wall seconds) per scenario
    if predictor == "twin":
        from .twin.engine import warm_up

        make(duration_s=parsed[0].workload.duration_s, seed=parsed[0].workload.seed,
             warmup_s=parsed[0].workload.warmup_s)  # checks the name first
        warm_up()  # the kernel's compilation (or cache load) is loading, not predicting
        for path, sc, q in zip(scenarios, parsed, queries):
            pred = make(duration_s=sc.workload.duration_s, seed=sc.workload.seed, warmup_s=sc.workload.warmup_s)
            t0 = time.perf_counter()
            try:
                p = pred.predict(q)
            except PackerError as e:
                _fail(f"{path}: {e}")
            results.append((p, time.perf_counter() - t0))
    else:
        pred = make()
        model_for = getattr(pred, "model_for", None)
        for path, sc in zip(scenarios, parsed):  # load (and check) each profile's model before predicting
            try:
                if model_for is not None:
                    model_for(sc.profile)
            except PackerError as e:
                _fail(f"{path}: {e}")
        try:
            pred.predict_many(queries[:1])  # warm-up: numba's compiled kernels load from its cache
            t0 = time.perf_counter()
            preds = pred.predict_many(queries)  # one batch: every scenario of a profile in one kernel call
            each = (time.perf_counter() - t0) / len(queries)
        except PackerError as e:
            for path, q in zip(scenarios, queries):  # name the scenario that fails
                try:
                    pred.predict(q)
                except PackerError as e1:
                    _fail(f"{path}: {e1}")
            _fail(f"{scenarios[0]}: {e}")
        results = [(p, each) for p in preds]
    for path, (p, wall) in zip(scenarios, results):
        if as_json:
            click.echo(files.dumps(_prediction_dict(p, wall)))
        else:
            click.echo(_prediction_table(path, p, wall))


def _train_summary(profile: str, out: str, forest_out: str | None, rep: dict, wall: float) -> str:
    def num(v, fmt="{:.3f}") -> str:
        return "n/a" if v is None or (isinstance(v, float) and v != v) else fmt.format(v)

    ds, split, gen = rep.get("dataset", {}), rep.get("split", {}), rep.get("generation", {})
    tree = rep.get("test", {}).get("tree", {})
    lines = [
        f"trained the tree predictor for {profile} on {ds.get('samples', '?')} twin runs "
        f"({ds.get('usable', '?')} usable: train {split.get('train', '?')} / validation {split.get('validation', '?')}"
        f" / test {split.get('test', '?')}; sweep in {gen.get('out_dir', ds.get('dir', '?'))})",
        f"test split, tree: throughput MARE {num(tree.get('throughput_mare'))}, starvation F1 "
        f"{num(tree.get('starved_f1'))}, ITL MARE {num(tree.get('itl_mare'))}",
    ]
    if "forest" in rep:
        ft = rep["forest"].get("test", {})
        lines.append(f"test split, forest: throughput MARE {num(ft.get('throughput_mare'))}, starvation F1 "
                     f"{num(ft.get('starved_f1'))}, ITL MARE {num(ft.get('itl_mare'))}")
    cc = rep.get("capacity_check")
    if cc:
        for name in ("tree", "forest"):
            if name in cc:
                lines.append(f"capacity check, {name}: capacity within {num(cc[name]['mean_abs_rel_diff'], '{:.1%}')} "
                             f"of the twin's on average (at most {num(cc[name]['max_abs_rel_diff'], '{:.1%}')})")
    reps = gen.get("replicates")
    if reps:
        lines.append(f"replicates: {reps['replicated_samples']} ambiguous samples run with {reps['seeds']} more seeds "
                     f"each ({reps['runs']} runs, {num(reps.get('seconds'), '{:,.1f}')} s); "
                     f"their labels are the runs' mean / majority")
    lines.append(f"time: sweep {num(gen.get('seconds'), '{:,.1f}')} s ({gen.get('chunks_run', '?')} chunks run, "
                 f"{gen.get('chunks_skipped', '?')} reused), training {num(rep.get('seconds'), '{:,.1f}')} s, "
                 f"total {wall:,.1f} s")
    lines.append(f"wrote the tree model to {out}" + (f" and the forest model to {forest_out}" if forest_out else ""))
    lines.append(f"use it: packer predict SCENARIO.json --predictor tree --model {out}"
                 f"  (Python: TreePredictor(model={str(out)!r}))")
    if forest_out:
        lines.append(f"        packer predict SCENARIO.json --predictor forest --model {forest_out}")
    return "\n".join(lines)


@main.command()
@click.option("--profile", "profile_name", required=True, metavar="NAME",
              help="Profile to train for (see `packer profiles`).")
@click.option("--samples", type=click.IntRange(min=1), default=24000, show_default=True,
              help="Twin runs in the sweep (a larger sweep in the same directory reuses the runs done).")
@click.option("--dataset", default=None, metavar="DIR",
              help="Sweep directory, created or resumed [default: benchmarks/out/sweeps/<short name>].")
@click.option("--out", default=None, metavar="FILE.json", help="Tree model file to write [default: ./<profile>.json].")
@click.option("--forest-out", default=None, metavar="FILE.npz", help="Also write the forest model here.")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_DURATION_S,
              show_default=True, help="Measured simulated seconds per twin run.")
@click.option("--warmup", "warmup_s", type=click.FloatRange(min=0), default=DEFAULT_WARMUP_S, show_default=True,
              help="Simulated seconds before each run's measured window (steady state).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Twin processes [default: CPU count].")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="scikit-learn processes / threads.")
@click.option("--extra-rows", type=click.IntRange(min=0), default=300000, show_default=True,
              help="Sampled feature rows labelled by the big models for the distillation.")
@click.option("--replicates", type=click.IntRange(min=0), default=4, show_default=True,
              help="Extra twin seeds for the sweep's ambiguous samples (near the starvation boundary), whose "
                   "labels become the runs' mean / majority; 0 for none.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--no-capacity-check", is_flag=True, help="Skip comparing the capacity tables with the twin's.")
@_executor_options
@click.option("--json", "as_json", is_flag=True, help="The training report as one JSON object.")
def train(profile_name: str, samples: int, dataset: str | None, out: str | None, forest_out: str | None,
          duration_s: float, warmup_s: float, workers: int | None, jobs: int, extra_rows: int, replicates: int, seed: int,
          no_capacity_check: bool, executor: str, ray_address: str | None, as_json: bool) -> None:
    """Run a twin sweep for a profile and train the tree (and forest) predictor on it."""
    import importlib.util
    import time

    from .profile import load_profile

    try:
        prof = load_profile(profile_name)
    except InputError as e:
        _fail(f"--profile: {_bare(e)}")
    short = prof.name.split("@")[0].split("-")[0] or prof.name
    dataset = dataset or str(Path("benchmarks") / "out" / "sweeps" / short)
    out = out or f"./{prof.name}.json"
    for flag, path in (("--out", out), ("--forest-out", forest_out)):
        if path is not None and Path(path).suffix not in (".json", ".npz"):
            _fail(f"{flag}: a model file must end in .json or .npz (got {Path(path).name!r})")
    if Path(dataset).exists() and not Path(dataset).is_dir():
        _fail(f"--dataset: {dataset} is not a directory")
    if importlib.util.find_spec("sklearn") is None:  # before a long sweep, not after it
        _fail("training needs scikit-learn; install it with: pip install scikit-learn")
    from .capacity.training import build

    log = None if as_json else (lambda msg: click.echo(msg, err=True))
    t0, started = time.perf_counter(), time.time()
    try:
        rep = build(profile_name, samples, dataset, out, seed=seed, workers=workers, forest_out=forest_out,
                    duration_s=duration_s, warmup_s=warmup_s, progress=not as_json, check_capacity=not no_capacity_check,
                    n_jobs=jobs, extra_rows=extra_rows, replicates=replicates, log=log, executor=executor,
                    ray_address=ray_address)
    except InputError as e:
        written = Path(out).is_file() and Path(out).stat().st_mtime >= started - 1
        if written and not no_capacity_check:  # the model is saved last in training: the capacity check failed
            _fail(f"wrote {out}, but its capacity check failed ({e}); the model is too coarse to plan with: "
                  f"train on more --samples (or skip the check with --no-capacity-check)")
        _fail(str(e))
    except ValueError as e:  # scikit-learn refusing a split too small to fit
        _fail(f"training on {samples} samples failed ({e}); use more --samples")
    wall = time.perf_counter() - t0
    if as_json:
        click.echo(files.dumps({**rep, "wall_seconds": wall}))
    else:
        click.echo(_train_summary(prof.name, out, forest_out, rep, wall))


@main.command()
def profiles() -> None:
    """List the shipped performance profiles."""
    from .profile import list_profiles, load_profile

    for name in list_profiles():
        p = load_profile(name)
        click.echo(f"{name}\t{p.description}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output instead of a table.")
def demo(as_json: bool) -> None:
    """Solve the shipped example workload (120 adapters, Zipf rates, ranks 8-32, Llama-3.1-8B on H100)."""
    from .planner import parse_workload
    from .planner import solve as run_solve

    path = resources.files("packer") / "examples" / "workload.json"
    wl = parse_workload(files.read_json_text(path.read_text(encoding="utf-8"), "packer/examples/workload.json"))
    if not as_json:
        click.echo(f"Example workload: {len(wl.adapters)} adapters, {wl.total_rate:.1f} req/s in total, "
                   f"profile {wl.profile}; placing them with the greedy solver and verifying with the twin.")
    result = run_solve(wl, progress=None if as_json else (lambda m: click.echo(m, err=True)))
    click.echo(files.dumps(result.to_dict()) if as_json else _placement_table("example workload", result))


if __name__ == "__main__":  # pragma: no cover
    main()
