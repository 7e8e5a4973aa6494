"""Golden outputs: about twenty `packer simulate`, `predict` and `solve --json` runs on fixed seeds.

``python tests/golden/make_golden.py`` (re)writes ``tests/golden/outputs.json`` from the code on the path;
``tests/test_golden.py`` runs the same commands and compares. The file was first written by the code of
bac3bbd, before the structure refactor (issue 13), so the test proves the refactor kept behaviour: every
key the golden output has must come out the same (wall times excluded); keys added since are allowed.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "outputs.json"
LLAMA, QWEN = "llama-3.1-8b-instruct@h100-64gb", "qwen-2.5-7b-instruct@h100-64gb"
# Keys that measure this machine, not packer's answer.
TIMING_KEYS = {"wall_seconds", "capacity_seconds", "solver_seconds", "verify_seconds", "phases", "speedup"}


def _adapters(n: int, rate: float, ranks=(8, 16, 32), skew: float = 0.0) -> list[dict]:
    w = [1.0 / (i + 1) ** skew for i in range(n)]
    total = sum(w)
    return [{"id": f"a{i:03d}", "rank": ranks[i % len(ranks)], "rate": round(rate * n * w[i] / total, 6)}
            for i in range(n)]


def _scenario(profile=LLAMA, n=24, rate=0.5, max_loras=16, rank=32, **over) -> dict:
    sc = {"profile": profile, "server": {"max_loras": max_loras, "max_lora_rank": rank, "max_num_seqs": 2048},
          "adapters": _adapters(n, rate), "duration_s": 300, "warmup_s": 60, "seed": 7}
    sc.update(over)
    return sc


def cases() -> list[tuple[str, list[str], dict]]:
    """(name, CLI arguments after the file, the file's content)."""
    sim = [
        ("simulate-light", _scenario(rate=0.2)),
        ("simulate-near-capacity", _scenario(n=32, rate=0.9, max_loras=32)),
        ("simulate-lora-starved", _scenario(n=96, rate=0.2, max_loras=4)),
        ("simulate-bursty", _scenario(n=48, rate=0.25, arrivals={"kind": "bursty", "cv": 2.0, "period_s": 60,
                                                                  "multiplier_sigma": 0.5})),
        ("simulate-trace", _scenario(n=32, rate=0.3, arrivals={"kind": "trace", "trace": "azure-conv"})),
        ("simulate-azure-lengths", _scenario(lengths={"input_mean": 400, "output_mean": 150,
                                                      "distribution": "azure-conv", "max_input": 4096,
                                                      "max_total": 8192})),
        ("simulate-fixed-lengths", _scenario(lengths={"input_mean": 128, "output_mean": 64, "distribution": "fixed"})),
        ("simulate-memory-error", _scenario(max_loras=4000, rank=512)),
        ("simulate-qwen", _scenario(profile=QWEN, n=64, rate=0.3, max_loras=32)),
    ]
    out = [(name, ["simulate", "--json", "--per-adapter"], sc) for name, sc in sim]
    for name, sc in sim[:4] + sim[8:]:
        out.append((name.replace("simulate", "predict-tree"), ["predict", "--json"], sc))
    out.append(("predict-forest", ["predict", "--json", "--predictor", "forest"], sim[2][1]))
    out.append(("predict-twin", ["predict", "--json", "--predictor", "twin"], sim[1][1]))
    wl = {"profile": LLAMA, "adapters": _adapters(120, 0.4, skew=1.0)}
    out += [
        ("solve-greedy", ["solve", "--json"], wl),
        ("solve-greedy-no-verify", ["solve", "--json", "--no-verify"], wl),
        ("solve-ladder", ["solve", "--json", "--solver", "ladder"], wl),
        ("solve-min-latency", ["solve", "--json", "--objective", "min_latency", "--gpus", "6"], wl),
        ("solve-qwen", ["solve", "--json"], {"profile": QWEN, "adapters": _adapters(60, 0.8, ranks=(8, 16))}),
        ("solve-hot-adapter", ["solve", "--json"],
         {"profile": LLAMA, "adapters": [{"id": "hot", "rank": 8, "rate": 30.0}] + _adapters(20, 0.3)}),
    ]
    return out


def strip(x):
    """The output without the keys that time this machine."""
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in TIMING_KEYS}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def run(args: list[str], doc: dict, workdir: Path) -> dict:
    from click.testing import CliRunner

    from packer.cli import main

    path = workdir / "input.json"
    path.write_text(json.dumps(doc))
    result = CliRunner().invoke(main, [args[0], str(path), *args[1:]])
    if result.exit_code != 0:
        raise RuntimeError(f"{args}: exit {result.exit_code}: {result.output}")
    return strip(json.loads(result.output.strip().splitlines()[-1]))


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        golden = {name: run(args, doc, Path(d)) for name, args, doc in cases()}
    OUT.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(golden)} golden outputs to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
