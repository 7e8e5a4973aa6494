"""How the commands show their answers: rich tables for people, one JSON object per line for programs
(through ``files.dumps``, the one JSON encoder: never NaN or Infinity)."""

from __future__ import annotations

import io

import click

from .. import files

__all__ = ["echo_json", "simulation_table", "placement_table", "prediction_dict", "prediction_table",
           "train_summary"]


def echo_json(obj) -> None:
    """Print ``obj`` as one JSON line on stdout."""
    click.echo(files.dumps(obj))


def profile_info(profile) -> dict:
    """What outputs say about the profile a result was made with: its name, how it was obtained
    (``provenance``: measured or derived) and the GPUs one server spans."""
    from ..profile import load_profile

    p = load_profile(profile)
    return {"profile_name": p.name, "profile_provenance": p.provenance, "tensor_parallel_size": p.tensor_parallel_size}


def _profile_head(info: dict | None) -> str:
    if not info:
        return ""
    tp = info["tensor_parallel_size"]
    return f" (provenance: {info['profile_provenance']}" + (f"; {tp} GPUs per server" if tp > 1 else "") + ")"


def simulation_table(name: str, r, info: dict | None = None) -> str:
    """`packer simulate`'s table of one simulation result."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{name} — {r.profile}{_profile_head(info)}", show_header=False, title_justify="left")
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


def placement_table(name: str, r, info: dict | None = None) -> str:
    """`packer solve`'s (and `packer demo`'s) text: the placement, vLLM flags per GPU, timings."""
    from rich.console import Console
    from rich.table import Table

    tp = info["tensor_parallel_size"] if info else 1
    console = Console(width=120, record=True, file=io.StringIO())
    bound = "" if r.lower_bound is None else f", lower bound {r.lower_bound:g}{(' server' + ('s' if r.lower_bound != 1 else '')) if tp > 1 else ''}"
    gap = "" if r.gap is None else f", gap {r.gap:.1%}"
    count = (f"{r.num_gpus} GPU{'s' if r.num_gpus != 1 else ''}" if tp == 1 else  # bounds count servers too
             f"{r.num_gpus} server{'s' if r.num_gpus != 1 else ''} x {tp} GPUs = {r.num_gpus * tp} GPUs")
    head = (f"{name}: {count} ({r.status.value}{bound}{gap}); "
            f"solver {r.solver}, predictor {r.predictor}; "
            f"{'every GPU verified by the twin' if r.verified else 'NOT verified by the twin'}; "
            f"{r.wall_seconds:.1f} s")
    console.print(head)
    if info:
        console.print(f"profile {info['profile_name']} (provenance: {info['profile_provenance']}); "
                      + (f"each server (a row below, 'GPU') spans {tp} GPUs (tensor parallelism): "
                         f"{tp * r.num_gpus} GPUs in all" if tp > 1 else "1 GPU per server"),
                      soft_wrap=True, markup=False, highlight=False)
    for warning in r.warnings:
        console.print(f"warning: {warning}")
    if r.message:
        console.print(r.message)
    t = Table(show_lines=False)
    slo_cols = list(r.slo.targets()) if getattr(r, "slo", None) is not None else []
    for col, just in (("GPU", "right"), ("adapters", "right"), ("max-loras", "right"), ("max-cpu-loras", "right"),
                      ("max-lora-rank", "right"), ("load tok/s", "right"), ("util", "right"),
                      ("pred. tok/s", "right"), ("pred. ITL ms", "right"),
                      *((f"{_SLO_LABEL[m]} ms ≤{r.slo.targets()[m]:g}", "right") for m in slo_cols),
                      ("twin", "left")):
        t.add_column(col, justify=just)
    for g, p in enumerate(r.gpus):
        replicated = sum(1 for a in p.adapters if a.share < 1.0)
        count = f"{len(p.adapters)}" + (f" ({replicated} split)" if replicated else "")
        thr = "-" if p.predicted_throughput_tps is None else f"{p.predicted_throughput_tps:,.0f}"
        itl = "-" if p.predicted_itl_ms is None else f"{p.predicted_itl_ms:.1f}"
        ok = {True: "ok", False: "FAILS", None: "-"}[p.verified]
        checks = {c.metric: c for c in p.slo}
        slo_cells = [_slo_cell(checks.get(m)) for m in slo_cols]
        t.add_row(str(g), count, str(p.max_loras), str(p.max_cpu_loras), str(p.max_lora_rank),
                  f"{p.offered_tps:,.0f}", f"{p.utilisation:.0%}", thr, itl, *slo_cells, ok)
    console.print(t)
    shown = r.gpus[:8]
    for g, p in enumerate(shown):
        console.print(f"GPU {g}: vllm serve <model> {p.vllm_flags()}" + (f" --tensor-parallel-size {tp}" if tp > 1 else ""),
                      soft_wrap=True, markup=False, highlight=False)
    if len(r.gpus) > len(shown):
        console.print(f"... and {len(r.gpus) - len(shown)} more GPUs, each with the flags of its row")
    tail = ""
    if slo_cols:
        tail = "; SLO columns: the twin's prediction in ms and its margin to the target"
        if "ttft_p99_ms" in slo_cols:
            tail += f" (p99 TTFT of the {'worst adapter' if r.slo.per_adapter else 'whole GPU'})"
    console.print("util = load / the capacity model's sustainable load" + tail, soft_wrap=True)
    if r.repaired_items:
        console.print(f"{r.repaired_items} adapter placement(s) moved by verification and repair")
    if r.replan is not None:
        console.print(_moves_summary(r.replan), soft_wrap=True, markup=False, highlight=False)
    phases = ", ".join(f"{name} {seconds:.2f}" for name, seconds in r.phases.items())
    console.print(f"time: capacity model {r.capacity_seconds:.1f} s, solver {r.solver_seconds:.1f} s"
                  + (f" ({phases})" if phases else "") + f", verification {r.verify_seconds:.1f} s")
    return console.export_text()


_SLO_LABEL = {"ttft_p99_ms": "p99 TTFT", "ttft_mean_ms": "TTFT", "itl_mean_ms": "ITL", "itl_p99_ms": "p99 TPOT"}


def _slo_cell(c) -> str:
    if c is None:
        return "-"
    if c.predicted_ms is None:
        return "none finished"
    return f"{c.predicted_ms:,.0f} ({c.margin:+.0%})"


def _moves_summary(s, shown: int = 10) -> str:
    """A re-plan's moves, servers added and removed, and adapters added and removed, a few lines."""
    moves = ", ".join(f"{m.adapter} {m.from_gpu}->{m.to_gpu}" for m in s.moves[:shown])
    more = f" and {len(s.moves) - shown} more" if len(s.moves) > shown else ""
    lines = [f"moves ({len(s.moves)}; from the current plan's GPU -> this plan's): {moves + more or 'none'}",
             f"servers: {len(s.servers_added)} added (GPUs {', '.join(map(str, s.servers_added)) or '-'}), "
             f"{len(s.servers_removed)} removed (current plan's GPUs {', '.join(map(str, s.servers_removed)) or '-'})",
             f"adapters: {len(s.adapters_added)} added, {len(s.adapters_removed)} removed"
             + (f"; split instead of moved (max-moves {s.max_moves}): {', '.join(sorted(set(s.split)))}"
                if s.split else "")]
    return "\n".join(lines)


def prediction_dict(pred, wall_seconds: float) -> dict:
    """`packer predict --json`'s object for one prediction."""
    return {**pred.to_dict(), "throughput_ratio": pred.throughput_ratio, "wall_seconds": wall_seconds}


def prediction_table(name: str, p, wall_seconds: float) -> str:
    """`packer predict`'s table of one prediction."""
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
        for label, v in (("TTFT mean (ms)", p.mean_ttft_ms), ("TTFT p99 (ms)", p.p99_ttft_ms),
                         ("worst adapter p99 TTFT (ms)", p.worst_adapter_p99_ttft_ms)):
            if v is not None:
                t.add_row(label, f"{v:,.0f}")
    for w in p.warnings:
        t.add_row("warning", w)
    t.add_row("prediction time", f"{wall_seconds * 1e3:,.3f} ms" if wall_seconds < 1 else f"{wall_seconds:,.2f} s")
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(f"{name} — predictor {p.predictor}", soft_wrap=True, markup=False, highlight=False)
    console.print(t)
    return console.export_text()


def train_summary(profile: str, out: str, forest_out: str | None, rep: dict, wall: float) -> str:
    """`packer train`'s summary of its training report."""

    def num(v, fmt="{:.3f}") -> str:
        return "n/a" if v is None or (isinstance(v, float) and v != v) else fmt.format(v)

    def latencies(scores: dict) -> str:  # the latency heads' MAREs (the TTFT ones on not-starved runs)
        names = {"itl": "ITL", "ttft_mean": "mean TTFT", "ttft_p99": "p99 TTFT", "ttft_worst_p99": "worst adapter p99 TTFT"}
        return ", ".join(f"{label} MARE {num(scores.get(f'{h}_mare'))}" for h, label in names.items()
                         if h == "itl" or f"{h}_mare" in scores)

    ds, split, gen = rep.get("dataset", {}), rep.get("split", {}), rep.get("generation", {})
    tree = rep.get("test", {}).get("tree", {})
    lines = [
        f"trained the tree predictor for {profile} on {ds.get('samples', '?')} twin runs "
        f"({ds.get('usable', '?')} usable: train {split.get('train', '?')} / validation {split.get('validation', '?')}"
        f" / test {split.get('test', '?')}; sweep in {gen.get('out_dir', ds.get('dir', '?'))})",
        f"test split, tree: throughput MARE {num(tree.get('throughput_mare'))}, starvation F1 "
        f"{num(tree.get('starved_f1'))}, {latencies(tree)}",
    ]
    if "forest" in rep:
        ft = rep["forest"].get("test", {})
        lines.append(f"test split, forest: throughput MARE {num(ft.get('throughput_mare'))}, starvation F1 "
                     f"{num(ft.get('starved_f1'))}, {latencies(ft)}")
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
