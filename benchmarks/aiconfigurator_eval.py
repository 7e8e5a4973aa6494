"""NVIDIA aiconfigurator's vLLM step estimates against the measured profiles and the roofline.

    /work/aic-venv/bin/python benchmarks/aiconfigurator_eval.py [--system h100_sxm] [--data PATH] [--json OUT]
    (run with a Python that has ``aiconfigurator`` installed and the worktree on PYTHONPATH; packer does NOT
    depend on it)

For the two measured H100-64GB profiles (Llama-3.1-8B, Qwen-2.5-7B; vLLM 0.8.5, bf16, tp=1) prints, per
decode batch size, the base-model decode step ms of

- ``measured``: the measured profile's table (``step.decode_ms`` at ``decode_ctx_ref``; batch 1 is an
  extrapolation: the smallest measured batch is ~47 sequences);
- ``roofline``: ``packer.derive.derive_profile`` with only the OTHER model as reference (as
  benchmarks/derive.py);
- ``aic raw``: aiconfigurator's ``static_gen`` estimate on its ``--system`` (its perf database has no
  H100 64 GB) times ``bw_scale`` = catalog h100-80gb / h100-64gb HBM bandwidth (decode is memory-bound);
- ``aic x ref``: aiconfigurator's estimate times the OTHER model's measured / aiconfigurator ratio at the
  same batch (the roofline's leave-one-model-out calibration with aiconfigurator in place of the roofline;
  the bandwidth scale cancels in the ratio);

then the same four against every measured decode row of mb_base_step_latency.csv (mean ITL minus the
profile's scheduler model, at the row's mean running sequences and mean context), and prefill ms per token.
Each aiconfigurator point is one ``cli_estimate`` call (~2 s on one core); the whole run takes 2-4 minutes.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
from pathlib import Path

from packer.derive import catalog_gpus, catalog_models, derive_profile
from packer.profile import load_profile

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "agullo-h100"
PROFILES = {"llama-3.1-8b-instruct": "llama-3.1-8b-instruct@h100-64gb",
            "qwen-2.5-7b-instruct": "qwen-2.5-7b-instruct@h100-64gb"}
OTHER = {"llama-3.1-8b-instruct": "qwen-2.5-7b-instruct", "qwen-2.5-7b-instruct": "llama-3.1-8b-instruct"}
BATCHES = (1, 8, 32, 64, 128, 200, 256, 512, 1024)
PREFILL_TOKENS = 2048      # max_num_batched_tokens of the measured runs


def _hf_config(model: str, where: Path) -> str:
    """aiconfigurator's model path: its bundled Llama-3.1-8B config, else a config.json written from packer's catalog."""
    if model == "llama-3.1-8b-instruct":
        return "meta-llama/Meta-Llama-3.1-8B"  # same architecture as -Instruct; bundled in aiconfigurator_core
    c = catalog_models()[model]
    d = where / model
    d.mkdir(parents=True, exist_ok=True)
    keys = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "intermediate_size", "vocab_size", "tie_word_embeddings", "max_position_embeddings")
    cfg = {"architectures": [c["architecture"]], "torch_dtype": "bfloat16", "model_type": "qwen2",
           "rms_norm_eps": 1e-6, "hidden_act": "silu", **{k: c[k] for k in keys}}
    (d / "config.json").write_text(json.dumps(cfg))
    return str(d)


class Aic:
    """Cached aiconfigurator estimates (ms) for one system."""

    def __init__(self, system: str):
        from aiconfigurator.cli.api import cli_estimate  # the optional dependency, imported here only

        self._est, self.system, self._cache = cli_estimate, system, {}

    def decode(self, path: str, b: int, ctx: int) -> float:
        key = ("d", path, b, ctx)
        if key not in self._cache:
            r = self._est(path, self.system, mode="static_gen", backend_name="vllm", isl=max(1, ctx), osl=2,
                          batch_size=b, tp_size=1, gemm_quant_mode="bfloat16", kvcache_quant_mode="bfloat16")
            self._cache[key] = float(r.tpot)
        return self._cache[key]

    def prefill(self, path: str, tokens: int) -> float:
        key = ("p", path, tokens)
        if key not in self._cache:
            r = self._est(path, self.system, mode="static_ctx", backend_name="vllm", isl=tokens, osl=1,
                          batch_size=1, tp_size=1, gemm_quant_mode="bfloat16", kvcache_quant_mode="bfloat16")
            self._cache[key] = float(r.ttft)
        return self._cache[key]


def _interp(x: float, xs, ys) -> float:
    """Linear interpolation, linear extrapolation past the last knot (batches below the first are not asked)."""
    for x0, y0, x1, y1 in zip(xs, ys, xs[1:], ys[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    x0, y0, x1, y1 = xs[-2], ys[-2], xs[-1], ys[-1]
    return y1 + (y1 - y0) / (x1 - x0) * (x - x1)


def _table(p, b: float) -> float:
    """The profile's decode step at batch b and context decode_ctx_ref (as the twin reads it)."""
    return _interp(b, p.step.decode_batch, p.step.decode_ms)


def _row_step(p, b: float, ctx: float) -> float:
    return _table(p, b) + p.step.attention_ms_per_kv_token * b * (ctx - p.step.decode_ctx_ref)


def decode_rows(data: Path, model: str, p) -> list[dict]:
    """Measured decode probes of ``model``: GPU step ms (ITL minus the profile's scheduler), batch, context."""
    out = []
    for r in csv.DictReader(open(data / "mb_base_step_latency.csv")):
        if r["model"] != model or r["probe"] != "decode" or r["status"] != "ok" or int(r["preemptions"]):
            continue
        run, wait = float(r["mean_running"]), float(r["mean_waiting"])
        sched = p.scheduler.ms_base + p.scheduler.ms_per_running * run + p.scheduler.ms_per_waiting * wait
        out.append({"b": run, "ctx": int(r["input_len"]) + int(r["output_len"]) / 2,
                    "y": float(r["mean_itl_ms"]) - sched, "label": f"seqs={r['max_num_seqs']} out={r['output_len']}"})
    return out


def _pct(a: float, m: float) -> str:
    return f"{100 * (a - m) / m:+6.1f}%"


def _mape(errs) -> float:
    return 100 * sum(abs(e) for e in errs) / len(errs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", default="h100_sxm", help="aiconfigurator system (default h100_sxm: H100 SXM 80 GB)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # aiconfigurator logs every estimate
    try:
        import aiconfigurator
    except ImportError:
        print("aiconfigurator is not installed in this Python; packer does not depend on it. Run with a venv that "
              "has it: python3.11 -m venv /work/aic-venv && /work/aic-venv/bin/pip install aiconfigurator", file=sys.stderr)
        return 2

    gpus = catalog_gpus()
    bw_scale = gpus["h100-80gb"]["hbm_tb_s"] / gpus["h100-64gb"]["hbm_tb_s"]
    aic = Aic(args.system)
    tmp = Path(tempfile.mkdtemp(prefix="aic-eval-"))
    paths = {m: _hf_config(m, tmp) for m in PROFILES}
    meas = {m: load_profile(n) for m, n in PROFILES.items()}
    roof = {m: derive_profile(m, "h100-64gb", references=[PROFILES[OTHER[m]]]) for m in PROFILES}
    ctx_ref = {m: int(round(meas[m].step.decode_ctx_ref)) for m in PROFILES}
    print(f"aiconfigurator {getattr(aiconfigurator, '__version__', '?')}, system {args.system}, backend vllm "
          f"(its perf-database version), bf16, tp=1; bw_scale = {gpus['h100-80gb']['hbm_tb_s']}/"
          f"{gpus['h100-64gb']['hbm_tb_s']} = {bw_scale:.3f} on decode (prefill unscaled: same BF16 FLOPS)")
    report: dict = {"system": args.system, "bw_scale": bw_scale, "models": {}}

    def aic_ratio(m: str, b: float, ctx: float) -> float:
        """The other model's measured / aiconfigurator ratio at batch b (its table at its ctx_ref)."""
        o = OTHER[m]
        return _table(meas[o], b) / aic.decode(paths[o], max(1, int(round(b))), ctx_ref[o])

    for m in PROFILES:
        rep = report["models"][m] = {"knots": [], "rows": [], "prefill": {}}
        print(f"\n{m}: decode step ms at context {ctx_ref[m]} (decode_ctx_ref), relative error vs measured")
        print(f"  {'batch':>5} {'measured':>9} {'roofline':>9} {'err':>7} {'aic raw':>9} {'err':>7} "
              f"{'aic x ref':>9} {'err':>7}")
        for b in BATCHES:
            mv, rv = _table(meas[m], b), _table(roof[m], b)
            a = aic.decode(paths[m], b, ctx_ref[m])
            av, cv = a * bw_scale, a * aic_ratio(m, b, ctx_ref[m])
            rep["knots"].append({"batch": b, "measured": mv, "roofline": rv, "aic_h100_sxm": a, "aic_raw": av, "aic_x_ref": cv})
            print(f"  {b:5d} {mv:9.2f} {rv:9.2f} {_pct(rv, mv)} {av:9.2f} {_pct(av, mv)} {cv:9.2f} {_pct(cv, mv)}")
        rows = decode_rows(args.data, m, meas[m])
        errs = {"measured fit": [], "roofline": [], "aic raw": [], "aic x ref": []}
        for r in rows:
            b, ctx, y = r["b"], r["ctx"], r["y"]
            a = aic.decode(paths[m], max(1, int(round(b))), int(round(ctx)))
            preds = {"measured fit": _row_step(meas[m], b, ctx), "roofline": _row_step(roof[m], b, ctx),
                     "aic raw": a * bw_scale, "aic x ref": a * aic_ratio(m, b, ctx_ref[m])}
            for k, v in preds.items():
                errs[k].append((v - y) / y)
            rep["rows"].append({**r, **preds})
        print(f"  measured decode rows (n={len(rows)}, {min(r['b'] for r in rows):.0f}-{max(r['b'] for r in rows):.0f} "
              f"seqs, context {min(r['ctx'] for r in rows):.0f}-{max(r['ctx'] for r in rows):.0f}): MAPE / max |err| / mean err")
        for k, e in errs.items():
            rep[f"rows_{k.replace(' ', '_')}"] = {"mape_pct": _mape(e), "max_abs_pct": 100 * max(map(abs, e)),
                                                  "bias_pct": 100 * sum(e) / len(e)}
            print(f"    {k:13} {_mape(e):6.1f}%  {100 * max(map(abs, e)):6.1f}%  {100 * sum(e) / len(e):+6.1f}%")
        # context slope: ms per KV token per decoding sequence, between the measured contexts 51 and 201
        b0 = 200
        slope = (aic.decode(paths[m], b0, 201) - aic.decode(paths[m], b0, 51)) / (b0 * 150) * bw_scale
        rep["attention_ms_per_kv_token"] = {"measured": meas[m].step.attention_ms_per_kv_token,
                                            "roofline": roof[m].step.attention_ms_per_kv_token, "aic_raw": slope}
        print(f"  attention ms per KV token per sequence: measured {meas[m].step.attention_ms_per_kv_token:.3g}, "
              f"roofline {roof[m].step.attention_ms_per_kv_token:.3g}, aic raw {slope:.3g} (batch {b0}, context 51->201)")
        full, short = aic.prefill(paths[m], PREFILL_TOKENS), aic.prefill(paths[m], 128)
        marg = (full - short) / (PREFILL_TOKENS - 128)
        rep["prefill"] = {"measured": meas[m].step.prefill_ms_per_token, "roofline": roof[m].step.prefill_ms_per_token,
                          "aic_mean": full / PREFILL_TOKENS, "aic_marginal": marg}
        print(f"  prefill ms per token: measured {meas[m].step.prefill_ms_per_token:.4f}, roofline "
              f"{roof[m].step.prefill_ms_per_token:.4f} ({_pct(roof[m].step.prefill_ms_per_token, meas[m].step.prefill_ms_per_token)}), "
              f"aic {PREFILL_TOKENS}-token prefill / {PREFILL_TOKENS} {full / PREFILL_TOKENS:.4f} "
              f"({_pct(full / PREFILL_TOKENS, meas[m].step.prefill_ms_per_token)}), aic marginal 128->{PREFILL_TOKENS} "
              f"{marg:.4f} ({_pct(marg, meas[m].step.prefill_ms_per_token)})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
