"""Derived against measured profiles: leave-one-model-out on the two measured H100-64GB setups.

    python benchmarks/derive.py [--data PATH] [--out DIR]

For each measured profile, derives the same model on the same GPU with only the OTHER measured profile
as reference (``packer.derive.derive_profile``), prints every coefficient derived next to measured,
checks the derived memory model against the measured start-up table (mb_kv_capacity.csv: KV tokens of
every ok start, and every refused start predicted refused), and writes the derived profiles to
``--out`` (default benchmarks/out/derived/) for ``benchmarks/twin_fidelity.py --profile-file``.
Also prints the sampler bytes per logit that the two measured profiles together imply (the prior is
``packer.derive.SAMPLER_BYTES_PER_LOGIT``). Arithmetic only: runs in about a second.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from packer.derive import (SAMPLER_ROWS, _Physics, catalog_gpus, derive_profile, load_architecture, load_gpu,
                           profile_dict)
from packer.errors import InputError
from packer.files import write_json_atomic
from packer.profile import GIB, load_profile

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "agullo-h100"
PAIRS = (("qwen-2.5-7b-instruct@h100-64gb", "llama-3.1-8b-instruct@h100-64gb"),
         ("llama-3.1-8b-instruct@h100-64gb", "qwen-2.5-7b-instruct@h100-64gb"))


def _flat(p) -> dict[str, float]:
    d = profile_dict(p)
    out = {}
    for sec in ("memory", "step", "scheduler", "loading", "client"):
        for k, v in d[sec].items():
            if isinstance(v, list):
                for i, x in enumerate(v):
                    out[f"{sec}.{k}[{i}]"] = x
            else:
                out[f"{sec}.{k}"] = v
    return out


def kv_table_check(p, rows: list[dict]) -> dict:
    """The memory model against the measured start-ups of its model."""
    ok = [r for r in rows if r["status"] == "ok"]
    errs = [(p.memory.kv_tokens(int(r["max_loras"]), int(r["max_lora_rank"])) - int(r["kv_cache_tokens"]))
            / int(r["kv_cache_tokens"]) for r in ok]
    full = max(int(r["kv_cache_tokens"]) for r in ok)
    abs_full = [abs(p.memory.kv_tokens(int(r["max_loras"]), int(r["max_lora_rank"])) - int(r["kv_cache_tokens"])) / full
                for r in ok]
    fails = [r for r in rows if r["status"].startswith("oom")]
    caught = sum(p.memory.startup_error(int(r["max_loras"]), int(r["max_lora_rank"])) is not None for r in fails)
    false = sum(p.memory.startup_error(int(r["max_loras"]), int(r["max_lora_rank"])) is not None for r in ok)
    return {"n_ok": len(ok), "mape_pct": 100 * sum(map(abs, errs)) / len(errs), "max_rel_pct": 100 * max(map(abs, errs)),
            "max_pct_of_full": 100 * max(abs_full), "refused": len(fails), "refused_predicted": caught, "false_alarms": false}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "derived")
    args = ap.parse_args()
    kv_csv = args.data / "mb_kv_capacity.csv"
    rows = list(csv.DictReader(open(kv_csv))) if kv_csv.is_file() else []
    args.out.mkdir(parents=True, exist_ok=True)
    for target, reference in PAIRS:
        m = load_profile(target)
        d = derive_profile(m.model, m.gpu, references=[reference])
        path = args.out / f"{m.model}-from-{reference.split('@')[0]}.json"
        write_json_atomic(path, profile_dict(d), indent=2)
        print(f"\n{target}: derived with only {reference} as reference -> {path}")
        print(f"  {'coefficient':34} {'measured':>12} {'derived':>12} {'derived/measured':>17}")
        fm, fd = _flat(m), _flat(d)
        for k in fm:
            a, b = fm[k], fd[k]
            ratio = f"{b / a:17.3f}" if a else f"{'':>17}"
            print(f"  {k:34} {a:12.6g} {b:12.6g} {ratio}")
        if rows:
            for label, p in (("measured", m), ("derived", d)):
                c = kv_table_check(p, [r for r in rows if r["model"] == m.model])
                print(f"  KV table ({label:8}): {c['n_ok']} ok starts, KV tokens MAPE {c['mape_pct']:.2f} %, max "
                      f"{c['max_rel_pct']:.1f} % relative / {c['max_pct_of_full']:.2f} % of full; refused starts "
                      f"predicted {c['refused_predicted']}/{c['refused']}, false alarms {c['false_alarms']}")
    print("\nderived with both references, per catalog GPU (decode ms at batch 1 / 200; KV tokens with 8 slots at "
          "rank 16; the most rank-16 slots that start):")
    for model, tp_for in (("llama-3.1-8b-instruct", {}), ("llama-3.1-70b-instruct", {"h200": 2, "b200": 2})):
        for gpu in catalog_gpus():
            tp = tp_for.get(gpu, 1 if model.endswith("8b-instruct") else 4)
            try:
                p = derive_profile(model, gpu, tp=tp)
            except InputError as e:
                print(f"  {model}@{gpu}x{tp}: {e}")
                continue
            print(f"  {p.name:36} {p.step.decode_ms[0]:7.2f} / {p.step.decode_ms[1]:7.2f} ms   "
                  f"KV {p.memory.kv_tokens(8, 16):>9,}   slots {p.memory.max_loras_that_start(16):>4}")
    # what both measured profiles together say about the sampler's start-up memory
    (la, lb), (qa, qb) = [(load_profile(n), _Physics(load_architecture(load_profile(n).model), load_gpu("h100-64gb"), 1, 2))
                          for n in (PAIRS[1][0], PAIRS[0][0])]
    rest_l, rest_q = la.memory.non_kv_gib - lb.weight_bytes / GIB, qa.memory.non_kv_gib - qb.weight_bytes / GIB
    per_logit = (rest_q - rest_l) * GIB / (SAMPLER_ROWS * (qb.arch.vocab_size - lb.arch.vocab_size))
    print(f"\nnon-KV GiB beyond the weights: Llama {rest_l:.3f}, Qwen {rest_q:.3f}; the difference over the "
          f"{SAMPLER_ROWS} x vocabulary logits of vLLM's dummy sampler run = {per_logit:.1f} bytes per logit "
          f"(prior used: {__import__('packer.derive').derive.SAMPLER_BYTES_PER_LOGIT:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
