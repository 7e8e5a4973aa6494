"""`packer calibrate` in a closed loop: serve a shipped profile with `packer serve-twin`, calibrate a profile
from it through the launch template, and compare the two on scenarios the plan never measured.

    python benchmarks/calibrate_loop.py [--profile NAME] [--time-scale X] [--budget-minutes M]
                                        [--scenarios N] [--seed S] [--out-dir DIR] [--fresh]

Prints the coefficients of the served (original) and the recovered profile, and on N seeded scenarios
(``loop_scenarios``: 4-128 slots, ranks 8-32, 8-128 adapters, light load to overload, some not fitting
memory) each one's throughput under both profiles, the error, its mean and worst, and how many
starvation and start-up memory verdicts agree. The issue's target: throughput within 3 %, every
verdict the same, on 20 scenarios. The recovered profile takes the original's ``client`` block (the
load generator's waiting cap and EOS behaviour are not server properties; calibrate sends ignore_eos
requests). The calibration's state file stays in DIR: a rerun resumes it (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from packer.calibration.live_plan import compare_profiles, loop_scenarios
from packer.profile import load_profile

ROOT = Path(__file__).resolve().parents[1]
SERVE = (f"{sys.executable} -m packer.cli serve-twin --profile {{served}} --max-loras {{max_loras}} "
         "--max-cpu-loras {max_cpu_loras} --max-lora-rank {max_lora_rank} --max-num-seqs {max_num_seqs} "
         "--port {port} --time-scale {time_scale} --lora-modules {lora_modules}")
TARGET_PCT = 3.0


def step_ms(p, n: int, slots: int, rank: int, ctx: float = 300.0) -> float:
    """The twin's decode step of ``n`` sequences at ``ctx`` tokens of context (no prefill, no loads)."""
    s = p.step
    return (float(np.interp(n, s.decode_batch, s.decode_ms)) + s.attention_ms_per_kv_token * n * (ctx - s.decode_ctx_ref)
            + p.scheduler.ms_per_running * n
            + s.rank_factor(rank) * (s.lora_ms_base + n * (s.lora_ms_per_token + s.lora_ms_per_token_slot * slots)))


def coefficient_rows(a, b) -> list[tuple[str, float, float]]:
    rows = [("memory.non_kv_gib", a.memory.non_kv_gib, b.memory.non_kv_gib),
            ("memory.slot_mib(rank 16)", a.memory.slot_mib(16), b.memory.slot_mib(16)),
            ("memory.slot_mib_per_rank", a.memory.slot_mib_per_rank, b.memory.slot_mib_per_rank)]
    for n, slots, rank in ((1, 1, 8), (64, 1, 8), (256, 1, 8), (128, 96, 32), (200, 128, 16)):
        rows.append((f"step ms n={n} slots={slots} rank={rank}", step_ms(a, n, slots, rank), step_ms(b, n, slots, rank)))
    # what a rank-8, one-slot step pays per prompt token (the only split of the two the plan identifies well)
    tok = lambda p: p.step.prefill_ms_per_token + p.step.lora_ms_per_token + p.step.lora_ms_per_token_slot  # noqa: E731
    rows.append(("prefill + LoRA token ms/prompt token", tok(a), tok(b)))
    for k in ("prefill_ms_per_token", "attention_ms_per_kv_token", "lora_ms_base", "lora_ms_per_token",
              "lora_ms_per_token_slot", "lora_rank_slope", "lora_ms_per_adapter"):
        rows.append((f"step.{k}", getattr(a.step, k), getattr(b.step, k)))
    rows.append(("step.rank_factor(32)", a.step.rank_factor(32), b.step.rank_factor(32)))
    for r in (8, 32):
        rows.append((f"loading.cpu_to_gpu_ms(rank {r})", a.loading.cpu_to_gpu(r), b.loading.cpu_to_gpu(r)))
        rows.append((f"loading.disk_to_cpu_ms(rank {r})", a.loading.disk_to_cpu(r), b.loading.disk_to_cpu(r)))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="llama-3.1-8b-instruct@h100-64gb", help="the shipped profile to serve")
    ap.add_argument("--time-scale", type=float, default=2.0)
    ap.add_argument("--budget-minutes", type=float, default=5.0, help="the plan's size (< 1: the short CI plan)")
    ap.add_argument("--scenarios", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1, help="the scenarios' seed")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "out" / "calibrate_loop")
    ap.add_argument("--fresh", action="store_true", help="drop the state file of an earlier run first")
    args = ap.parse_args(argv)

    original = load_profile(args.profile)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"recovered-{args.budget_minutes:g}min-x{args.time_scale:g}.json"
    if args.fresh:
        out.with_suffix(".state.jsonl").unlink(missing_ok=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "packer", "calibrate", "--launch", SERVE.replace("{served}", args.profile),
                        "--model-name", original.model, "--gpu-name", original.gpu,
                        "--time-scale", f"{args.time_scale:g}", "--budget-minutes", f"{args.budget_minutes:g}",
                        "--out", str(out)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        print(r.stderr[-3000:], file=sys.stderr)
        return 1
    progress = [line for line in r.stderr.splitlines() if line.startswith("calibrate:")]
    print(f"calibrate ({args.budget_minutes:g}-minute plan, time scale {args.time_scale:g}) against serve-twin "
          f"--profile {args.profile}: {wall:.1f} s wall; {progress[0] if progress else ''}")
    print(r.stdout.rstrip())

    d = json.loads(out.read_text())
    d["client"] = {"max_waiting": original.client.max_waiting, "output_len_scale": original.client.output_len_scale}
    with_client = out.with_name(out.stem + ".with-client.json")
    with_client.write_text(json.dumps(d, indent=1))
    recovered = load_profile(with_client)

    print(f"\n{'coefficient':40s} {'original':>12s} {'recovered':>12s} {'diff %':>8s}")
    for name, a, b in coefficient_rows(original, recovered):
        diff = f"{100 * (b - a) / a:+.2f}" if a else "-"
        print(f"{name:40s} {a:12.5g} {b:12.5g} {diff:>8s}")

    scenarios = loop_scenarios(args.scenarios, seed=args.seed)
    rep = compare_profiles(original, recovered, scenarios)
    print(f"\n{args.scenarios} unseen scenarios (loop_scenarios seed {args.seed}):")
    print(f"{'#':>3s} {'slots':>5s} {'rank':>4s} {'adapt':>5s} {'req/s':>6s} {'in/out':>8s} "
          f"{'tput orig':>10s} {'tput rec':>10s} {'err %':>6s} {'starved':>12s} {'memory err':>12s}")
    for i, (sc, row) in enumerate(zip(scenarios, rep["rows"])):
        srv, ads = sc["server"], sc["adapters"]
        rate = sum(a["rate"] for a in ads)
        print(f"{i:3d} {srv['max_loras']:5d} {srv['max_lora_rank']:4d} {len(ads):5d} {rate:6.2f} "
              f"{sc['lengths']['input_mean']:>4d}/{sc['lengths']['output_mean']:<3d} "
              f"{row['throughput_original']:10.1f} {row['throughput_recovered']:10.1f} {row['err_pct']:6.2f} "
              f"{'/'.join(map(str, row['starved'])):>12s} {'/'.join(map(str, row['memory_error'])):>12s}")
    ok = (rep["throughput_max_err_pct"] <= TARGET_PCT and rep["starvation_agree"] == rep["scenarios"]
          and rep["memory_agree"] == rep["scenarios"])
    print(f"\nthroughput error: mean {rep['throughput_mape_pct']:.2f} %, worst {rep['throughput_max_err_pct']:.2f} % "
          f"(over the {sum(r['throughput_original'] > 0 for r in rep['rows'])} scenarios that start); "
          f"starvation verdicts {rep['starvation_agree']}/{rep['scenarios']}, memory verdicts "
          f"{rep['memory_agree']}/{rep['scenarios']}; target (worst <= {TARGET_PCT:g} %, all verdicts): "
          f"{'met' if ok else 'NOT met'}")
    print(f"recovered profile: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
