"""Profiles without measurements: a model's architecture and a GPU's datasheet, scaled by measured profiles.

``derive_profile(model, gpu, tp=1, references=...)`` builds a ``Profile`` (``provenance: derived``) from

- the architecture (a Hugging Face ``config.json``, or an entry of ``packer/catalog/models.json``):
  weight bytes, KV bytes per token, LoRA slot bytes per rank for vLLM's target modules
  (q, k, v, o, gate, up, down; plus embed_tokens and lm_head where vLLM's LoRA covers them), the
  default ``max_model_len``;
- the GPU (``packer/catalog/gpus.json`` or a spec JSON): HBM size and bandwidth, dense BF16 FLOPS, link
  bandwidth for tensor parallelism;
- efficiency factors fitted on the reference (measured) profiles: every step cost is its roofline
  time on the target times the reference's measured / roofline ratio (geometric mean over references).

The rooflines (per GPU of a server of ``tp`` GPUs; W weight bytes, F matmul FLOPs per token, K KV bytes
per token, BW the HBM bandwidth, FLOPS the dense BF16 rate):

  decode(b)       = W / BW + b F / FLOPS + b ctx_ref K / BW + allreduce(b)        at each decode knot b
                    (summed, not max(): the measured steps grow linearly from batch 1 on, well below
                    the ridge point, so the per-sequence work does not hide under the weight reads)
  attention       = K / BW                     per context token of a decoding request
  prefill         = F / FLOPS + allreduce per token
  LoRA token terms  ∝ LoRA bytes per rank / BW (the shrink/expand kernels are memory-bound)
  LoRA base       ∝ layers (kernel launches)
  per adapter     ∝ an adapter's bytes / BW
  memory          non_kv = W + sampler + overhead,  sampler = SAMPLER_BYTES_PER_LOGIT x 2048 x vocab
                  (vLLM's start-up dummy sampler run over max_num_seqs=2048 rows of logits),
                  overhead (CUDA context, activations) fitted on the references
  allreduce(b)    = 2 layers (AR_LATENCY_MS + 2 (tp-1)/tp x b x hidden x 2 bytes / link)   (0 at tp=1)

The scheduler (CPU), adapter loading and client sections are the references' (mean; loading scaled by
the adapter bytes). Everything is arithmetic: deriving takes microseconds, so a ``MODEL@GPU[xN]``
profile name is derived on use (and kept in a small in-process cache).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from .errors import InputError
from .files import read_json, read_json_text
from .profile import GIB, MIB, Profile, load_profile

__all__ = ["Architecture", "GpuSpec", "catalog_models", "catalog_gpus", "load_architecture", "load_gpu",
           "derive_profile", "derived_profile", "parse_profile_name", "profile_dict", "DEFAULT_REFERENCES",
           "SAMPLER_BYTES_PER_LOGIT"]

DEFAULT_REFERENCES = ("llama-3.1-8b-instruct@h100-64gb", "qwen-2.5-7b-instruct@h100-64gb")
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "bfloat16": 2, "float16": 2}
# vLLM 0.8.5 sizes the KV cache after a dummy forward pass and a dummy sampler run over
# min(max_num_seqs, max_num_batched_tokens) = 2048 rows of logits: bf16 logits (2 B), their float32
# copy (4), probabilities (4) and float32 temporaries (4), plus masks: ~16 bytes per logit. A prior, not
# fitted; with both measured profiles the data give 17.6 (see benchmarks/derive.py).
SAMPLER_BYTES_PER_LOGIT = 16.0
SAMPLER_ROWS = 2048
AR_LATENCY_MS = 0.008          # one all-reduce's fixed latency (NCCL over NVLink, small messages)
LORA_EXTRA_VOCAB = 256         # vLLM's lora_extra_vocab_size (embedding LoRA buffers)
_NAME = re.compile(r"^(?P<model>[^@]+)@(?P<gpu>[a-z0-9.\-]+?)(?:x(?P<tp>\d+))?$")


def _catalog(kind: str) -> dict[str, dict]:
    path = resources.files("packer") / "catalog" / f"{kind}.json"
    return read_json_text(path.read_text(encoding="utf-8"), f"packer/catalog/{kind}.json", field="catalog")[kind]


@lru_cache(maxsize=1)
def catalog_models() -> dict[str, dict]:
    """The shipped architectures: {name: config fields and source}."""
    return _catalog("models")


@lru_cache(maxsize=1)
def catalog_gpus() -> dict[str, dict]:
    """The shipped GPUs: {name: datasheet fields and source}."""
    return _catalog("gpus")


def _need(d: dict, key: str, where: str, kind: type = int, positive: bool = True):
    if key not in d:
        raise InputError(f"{where}.{key}", "missing; a model config needs num_hidden_layers, hidden_size, "
                         "num_attention_heads, intermediate_size and vocab_size" if where == "model"
                         else "missing; a GPU spec needs memory_gib, hbm_tb_s and bf16_dense_tflops")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and v != int(v)) \
            or not math.isfinite(v) or (positive and v <= 0):
        raise InputError(f"{where}.{key}", f"must be a positive {'whole ' if kind is int else ''}number, got {v!r}")
    return kind(v)


@dataclass(frozen=True)
class Architecture:
    """The numbers of a model's config.json that size its weights, KV cache and LoRA slots."""

    name: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    attention_bias: bool
    lora_embeddings: bool
    title: str = ""
    source: str = ""

    @classmethod
    def from_config(cls, d: Any, name: str, source: str = "") -> "Architecture":
        if not isinstance(d, dict):
            raise InputError("model", f"expected a config.json object, got {type(d).__name__}")
        L, H = _need(d, "num_hidden_layers", "model"), _need(d, "hidden_size", "model")
        nh = _need(d, "num_attention_heads", "model")
        nkv = _need(d, "num_key_value_heads", "model") if "num_key_value_heads" in d else nh
        hd = _need(d, "head_dim", "model") if d.get("head_dim") is not None else H // nh
        archs = d.get("architectures") or [d.get("architecture", "")]
        arch = d.get("architecture") or (archs[0] if archs else "")
        emb = d.get("lora_embeddings", arch in ("LlamaForCausalLM", "MistralForCausalLM"))
        return cls(name=name, num_hidden_layers=L, hidden_size=H, num_attention_heads=nh, num_key_value_heads=nkv,
                   head_dim=hd, intermediate_size=_need(d, "intermediate_size", "model"),
                   vocab_size=_need(d, "vocab_size", "model"), tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                   max_position_embeddings=int(d.get("max_position_embeddings", 4096)),
                   attention_bias=bool(d.get("attention_bias", arch == "Qwen2ForCausalLM")),
                   lora_embeddings=bool(emb), title=d.get("title", name), source=d.get("source", source))

    def layer_params(self) -> int:
        H, q, kv = self.hidden_size, self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        bias = (q + 2 * kv) if self.attention_bias else 0
        return H * q + 2 * H * kv + q * H + 3 * H * self.intermediate_size + bias + 2 * H

    def params(self) -> int:
        emb = self.vocab_size * self.hidden_size
        return emb * (1 if self.tie_word_embeddings else 2) + self.num_hidden_layers * self.layer_params() + self.hidden_size

    def matmul_params(self) -> int:
        """Parameters a token multiplies through (the layers and lm_head; not the embedding lookup)."""
        return self.num_hidden_layers * self.layer_params() + self.vocab_size * self.hidden_size

    def lora_modules(self) -> list[tuple[int, int, bool]]:
        """(in, out, column-parallel) of every LoRA target module of one layer."""
        H, q, kv, I = self.hidden_size, self.num_attention_heads * self.head_dim, \
            self.num_key_value_heads * self.head_dim, self.intermediate_size
        return [(H, q, True), (H, kv, True), (H, kv, True), (q, H, False), (H, I, True), (H, I, True), (I, H, False)]


@dataclass(frozen=True)
class GpuSpec:
    """A GPU's datasheet numbers."""

    name: str
    memory_gib: float
    hbm_tb_s: float
    bf16_dense_tflops: float
    link_gb_s: float = 32.0
    title: str = ""
    source: str = ""

    @classmethod
    def from_spec(cls, d: Any, name: str) -> "GpuSpec":
        if not isinstance(d, dict):
            raise InputError("gpu", f"expected a GPU spec object, got {type(d).__name__}")
        return cls(name=name, memory_gib=_need(d, "memory_gib", "gpu", float), hbm_tb_s=_need(d, "hbm_tb_s", "gpu", float),
                   bf16_dense_tflops=_need(d, "bf16_dense_tflops", "gpu", float),
                   link_gb_s=_need(d, "link_gb_s", "gpu", float) if "link_gb_s" in d else 32.0,
                   title=d.get("title", name), source=d.get("source", ""))


def load_architecture(name_or_path: str | Path) -> Architecture:
    """A catalog model by name, or a Hugging Face config.json by path."""
    s = str(name_or_path)
    if s in catalog_models():
        return Architecture.from_config(catalog_models()[s], s)
    if s.endswith(".json") and Path(s).is_file():
        d = read_json(s, field="model")
        name = (d.get("_name_or_path") or Path(s).parent.name or Path(s).stem) if isinstance(d, dict) else s
        return Architecture.from_config(d, str(name).split("/")[-1].lower(), source=s)
    raise InputError("model", f"unknown model {s!r}; valid: {', '.join(catalog_models())}, or a path to a "
                     "Hugging Face config.json")


def load_gpu(name_or_path: str | Path) -> GpuSpec:
    """A catalog GPU by name, or a GPU spec JSON (memory_gib, hbm_tb_s, bf16_dense_tflops[, link_gb_s])."""
    s = str(name_or_path)
    if s in catalog_gpus():
        return GpuSpec.from_spec(catalog_gpus()[s], s)
    if s.endswith(".json") and Path(s).is_file():
        d = read_json(s, field="gpu")
        return GpuSpec.from_spec(d, str(d.get("name", Path(s).stem)) if isinstance(d, dict) else s)
    raise InputError("gpu", f"unknown GPU {s!r}; valid: {', '.join(catalog_gpus())}, or a path to a GPU spec "
                     "JSON (memory_gib, hbm_tb_s, bf16_dense_tflops, link_gb_s)")


# ---- the per-GPU physics -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Physics:
    """One model on one GPU type with tensor parallelism ``tp``: bytes, FLOPs and times per GPU."""

    arch: Architecture
    gpu: GpuSpec
    tp: int
    dtype_bytes: int

    @property
    def weight_bytes(self) -> float:
        return self.arch.params() * self.dtype_bytes / self.tp

    @property
    def kv_bytes_per_token(self) -> int:
        a = self.arch
        kv_heads = max(1, a.num_key_value_heads // self.tp)  # replicated when fewer KV heads than GPUs
        return 2 * a.num_hidden_layers * kv_heads * a.head_dim * self.dtype_bytes

    def lora_bytes_per_rank(self) -> float:
        """One slot's bytes per unit of rank on one GPU: A (in x r) and B (r x out) of each target module;
        column-parallel layers shard B, row-parallel ones A (vLLM without fully-sharded LoRA)."""
        a, n = self.arch, self.tp
        per_layer = sum((i + o / n) if col else (i / n + o) for i, o, col in a.lora_modules())
        total = a.num_hidden_layers * per_layer
        if a.lora_embeddings:  # embed_tokens (A: vocab x r, B: r x H) and lm_head (A: H x r, B: r x vocab/n)
            v = a.vocab_size + LORA_EXTRA_VOCAB
            total += (v + a.hidden_size) + (a.hidden_size + v / n)
        return total * self.dtype_bytes

    def lora_bytes_base(self) -> float:
        """A slot's bytes besides its rank term: the extra-vocabulary embeddings (embedding LoRA only)."""
        return 3 * LORA_EXTRA_VOCAB * self.arch.hidden_size * self.dtype_bytes if self.arch.lora_embeddings else 0.0

    @property
    def bw(self) -> float:  # bytes per ms
        return self.gpu.hbm_tb_s * 1e12 / 1e3

    @property
    def flops(self) -> float:  # FLOPs per ms
        return self.gpu.bf16_dense_tflops * 1e12 / 1e3

    def allreduce_ms(self, tokens: float) -> float:
        if self.tp == 1:
            return 0.0
        per = 2 * (self.tp - 1) / self.tp * tokens * self.arch.hidden_size * self.dtype_bytes / (self.gpu.link_gb_s * 1e6)
        return 2 * self.arch.num_hidden_layers * (AR_LATENCY_MS + per)

    def decode_roof(self, b: float, ctx: float) -> float:
        weights = self.weight_bytes / self.bw
        compute = b * 2 * self.arch.matmul_params() / self.tp / self.flops
        return weights + compute + b * ctx * self.kv_bytes_per_token / self.bw + self.allreduce_ms(b)

    def attention_roof(self) -> float:
        return self.kv_bytes_per_token / self.bw

    def prefill_roof(self) -> float:
        per_token_ar = self.allreduce_ms(1.0) - (2 * self.arch.num_hidden_layers * AR_LATENCY_MS if self.tp > 1 else 0)
        return 2 * self.arch.matmul_params() / self.tp / self.flops + per_token_ar

    def lora_token_roof(self) -> float:
        return self.lora_bytes_per_rank() / self.bw

    def sampler_gib(self) -> float:
        return SAMPLER_BYTES_PER_LOGIT * SAMPLER_ROWS * self.arch.vocab_size / GIB


def _geo(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else 0.0


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _reference_physics(ref: Profile, dtype_bytes: int) -> _Physics:
    try:
        arch, gpu = load_architecture(ref.model), load_gpu(ref.gpu)
    except InputError as e:
        raise InputError("reference", f"{ref.name}: its model {ref.model!r} or GPU {ref.gpu!r} is not in the "
                         f"catalog ({e.detail}); a reference must be a measured profile of a catalog model and GPU") from None
    return _Physics(arch, gpu, ref.tensor_parallel_size, dtype_bytes)


def derive_profile(model: str | Path | Architecture, gpu: str | Path | GpuSpec, tp: int = 1, dtype: str = "bf16",
                   references: Sequence[str | Path | Profile] = DEFAULT_REFERENCES,
                   max_model_len: int | None = None, name: str | None = None) -> Profile:
    """A profile of ``model`` on ``gpu`` (``tp`` GPUs per server) from the rooflines and the references'
    efficiency factors; ``provenance: derived``, the factors and inputs in ``fit_report.derivation``."""
    arch = model if isinstance(model, Architecture) else load_architecture(model)
    spec = gpu if isinstance(gpu, GpuSpec) else load_gpu(gpu)
    if dtype not in DTYPE_BYTES:
        raise InputError("dtype", f"unsupported dtype {dtype!r}; valid: {', '.join(DTYPE_BYTES)}")
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise InputError("tp", f"must be a whole number >= 1, got {tp!r}")
    if arch.num_attention_heads % tp:
        raise InputError("tp", f"{tp} does not divide {arch.name}'s {arch.num_attention_heads} attention heads "
                         f"(vLLM needs it to); valid: {', '.join(str(n) for n in range(1, 9) if arch.num_attention_heads % n == 0)}")
    if arch.num_key_value_heads % tp and tp % arch.num_key_value_heads:
        raise InputError("tp", f"{tp} neither divides nor is a multiple of {arch.name}'s {arch.num_key_value_heads} KV heads")
    refs = [load_profile(r) for r in references]
    if not refs:
        raise InputError("reference", "give at least one measured profile (e.g. "
                         f"{', '.join(DEFAULT_REFERENCES)})")
    for r in refs:
        if r.provenance != "measured":
            raise InputError("reference", f"{r.name} is {r.provenance}; efficiency factors come from measured profiles only")
    nbytes = DTYPE_BYTES[dtype]
    tgt = _Physics(arch, spec, tp, nbytes)
    rp = [_reference_physics(r, nbytes) for r in refs]

    # ---- memory
    overhead = [r.memory.non_kv_gib - p.weight_bytes / GIB - p.sampler_gib() for r, p in zip(refs, rp)]
    rank_eff = [r.memory.slot_mib_per_rank * MIB / p.lora_bytes_per_rank() for r, p in zip(refs, rp)]
    base_eff = [(r.memory.slot_mib_base * MIB, p.lora_bytes_base()) for r, p in zip(refs, rp)]
    base_ratio = (sum(a for a, _ in base_eff) / sum(b for _, b in base_eff)) if sum(b for _, b in base_eff) else 1.0
    non_kv = tgt.weight_bytes / GIB + tgt.sampler_gib() + _mean(overhead)
    mml = int(max_model_len if max_model_len is not None else arch.max_position_embeddings)
    if non_kv >= spec.memory_gib:
        raise InputError("gpu", f"{arch.name} needs {non_kv:.1f} GiB per GPU before any KV cache at tp={tp}, more than "
                         f"{spec.name}'s {spec.memory_gib:g} GiB; raise --tp")
    memory = dict(gpu_memory_gib=float(spec.memory_gib), non_kv_gib=_r(non_kv), kv_bytes_per_token=tgt.kv_bytes_per_token,
                  slot_mib_base=_r(tgt.lora_bytes_base() * base_ratio / MIB),
                  slot_mib_per_rank=_r(tgt.lora_bytes_per_rank() * _mean(rank_eff) / MIB),
                  max_model_len=mml, block_size=refs[0].memory.block_size)

    # ---- step
    knots = list(refs[0].step.decode_batch)
    ctx = _mean([r.step.decode_ctx_ref for r in refs])
    eff_decode = [_geo([float(_interp(b, r.step.decode_batch, r.step.decode_ms)) / p.decode_roof(b, r.step.decode_ctx_ref)
                        for r, p in zip(refs, rp)]) for b in knots]
    decode_ms, top = [], 0.0
    for b, e in zip(knots, eff_decode):
        top = max(top, tgt.decode_roof(b, ctx) * e)
        decode_ms.append(_r(top))
    eff = {
        "attention": _geo([r.step.attention_ms_per_kv_token / p.attention_roof() for r, p in zip(refs, rp)]),
        "prefill": _geo([r.step.prefill_ms_per_token / p.prefill_roof() for r, p in zip(refs, rp)]),
        "lora_token": _geo([r.step.lora_ms_per_token / p.lora_token_roof() for r, p in zip(refs, rp)]),
        "lora_token_slot": _geo([r.step.lora_ms_per_token_slot / p.lora_token_roof() for r, p in zip(refs, rp)]),
        "lora_base_per_layer": _geo([r.step.lora_ms_base / p.arch.num_hidden_layers for r, p in zip(refs, rp)]),
        "lora_adapter": _geo([r.step.lora_ms_per_adapter / (r.step.lora_rank_ref * p.lora_token_roof()) for r, p in zip(refs, rp)]),
    }
    rank_ref = _mean([r.step.lora_rank_ref for r in refs])
    step = dict(decode_batch=knots, decode_ms=decode_ms,
                prefill_ms_per_token=_r(tgt.prefill_roof() * eff["prefill"]),
                lora_ms_base=_r(eff["lora_base_per_layer"] * arch.num_hidden_layers),
                lora_ms_per_token=_r(eff["lora_token"] * tgt.lora_token_roof()),
                lora_ms_per_adapter=_r(eff["lora_adapter"] * rank_ref * tgt.lora_token_roof()),
                lora_ms_per_token_slot=_r(eff["lora_token_slot"] * tgt.lora_token_roof()),
                lora_rank_ref=rank_ref, lora_rank_slope=_r(_mean([r.step.lora_rank_slope for r in refs])),
                attention_ms_per_kv_token=_r(eff["attention"] * tgt.attention_roof()), decode_ctx_ref=_r(ctx))

    # ---- CPU-side sections: the references' (loading scaled by the adapter's bytes on one GPU)
    scheduler = {k: _r(_mean([getattr(r.scheduler, k) for r in refs])) for k in ("ms_base", "ms_per_running", "ms_per_waiting")}
    size = _mean([tgt.lora_bytes_per_rank() / p.lora_bytes_per_rank() for p in rp])
    ranks = list(refs[0].loading.ranks)
    loading = dict(ranks=ranks, cpu_to_gpu_ms=[_r(size * _mean([float(r.loading.cpu_to_gpu(k)) for r in refs])) for k in ranks],
                   disk_to_cpu_ms=[_r(size * _mean([float(r.loading.disk_to_cpu(k)) for r in refs])) for k in ranks])
    client = dict(max_waiting=int(round(_mean([r.client.max_waiting for r in refs]))),
                  output_len_scale=_r(_mean([r.client.output_len_scale for r in refs])))

    gpu_part = spec.name + (f"x{tp}" if tp > 1 else "")
    report = {"derivation": {
        "method": "roofline x efficiency factors fitted on the references (packer/derive.py)",
        "references": [r.name for r in refs], "tensor_parallel_size": tp, "dtype": dtype,
        "model": {"name": arch.name, "source": arch.source, "params": arch.params(), "weight_gib_per_gpu": _r(tgt.weight_bytes / GIB),
                  "kv_bytes_per_token_per_gpu": tgt.kv_bytes_per_token, "lora_mib_per_rank_per_gpu": _r(tgt.lora_bytes_per_rank() / MIB)},
        "gpu": {"name": spec.name, "source": spec.source, "memory_gib": spec.memory_gib, "hbm_tb_s": spec.hbm_tb_s,
                "bf16_dense_tflops": spec.bf16_dense_tflops, "link_gb_s": spec.link_gb_s},
        "efficiency": {"decode_at_knots": [_r(e) for e in eff_decode], **{k: _r(v) for k, v in eff.items()},
                       "slot_bytes_measured_over_derived": _r(_mean(rank_eff))},
        "memory_overhead_gib": _r(_mean(overhead)), "sampler_gib": _r(tgt.sampler_gib()),
        "sampler_bytes_per_logit": SAMPLER_BYTES_PER_LOGIT,
        "not_modelled": ["scheduler, client and loading sections are the references' (CPU, load generator, storage)",
                         "efficiency factors are those of the references' GPU; another GPU's kernels may be more or less efficient"],
    }}
    d = {"name": name or f"{arch.name}@{gpu_part}", "model": arch.name, "gpu": spec.name,
         "description": (f"{arch.title or arch.name} on {tp} x {spec.title or spec.name}, {dtype}: DERIVED (no measurements) "
                         f"from the architecture and the GPU datasheet, efficiency factors from {', '.join(r.name for r in refs)}"),
         "provenance": "derived", "tensor_parallel_size": tp,
         "memory": memory, "step": step, "scheduler": scheduler, "loading": loading, "client": client, "fit_report": report}
    return Profile.from_dict(d)


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1] + (ys[-1] - ys[-2]) * (x - xs[-1]) / (xs[-1] - xs[-2])


def _r(x: float) -> float:
    return float(f"{x:.6g}")


def parse_profile_name(name: str) -> tuple[str, str, int]:
    """``MODEL@GPU`` or ``MODEL@GPUxN`` as (model, gpu, tp); unknown names are one InputError listing the valid ones."""
    from .profile import list_profiles

    measured = f"measured profiles: {', '.join(list_profiles())}"
    m = _NAME.match(name)
    if not m:
        raise InputError("profile", f"unknown profile {name!r}: not MODEL@GPU or MODEL@GPUxN; {measured}")
    model, gpu, tp = m["model"], m["gpu"], int(m["tp"] or 1)
    if model not in catalog_models():
        raise InputError("profile", f"unknown profile {name!r}: unknown model {model!r}; valid models: "
                         f"{', '.join(catalog_models())}; {measured}")
    if gpu not in catalog_gpus():
        raise InputError("profile", f"unknown profile {name!r}: unknown GPU {gpu!r}; valid GPUs: "
                         f"{', '.join(catalog_gpus())} (append xN for N-way tensor parallelism, e.g. h100-80gbx4); "
                         f"{measured}")
    return model, gpu, tp


@lru_cache(maxsize=64)
def derived_profile(name: str) -> Profile:
    """The profile a ``MODEL@GPU[xN]`` name stands for: derived from the catalog with the shipped references."""
    model, gpu, tp = parse_profile_name(name)
    return derive_profile(model, gpu, tp)


def profile_dict(p: Profile) -> dict:
    """A profile's JSON form (what ``Profile.from_dict`` reads)."""
    import dataclasses

    d = {"name": p.name, "model": p.model, "gpu": p.gpu, "description": p.description, "provenance": p.provenance,
         "tensor_parallel_size": p.tensor_parallel_size}
    for key in ("memory", "step", "scheduler", "loading", "client"):
        sec = dataclasses.asdict(getattr(p, key))
        d[key] = {k: list(v) if isinstance(v, tuple) else v for k, v in sec.items()}
    d["fit_report"] = p.fit_report
    return d
