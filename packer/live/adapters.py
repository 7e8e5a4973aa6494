"""LoRA adapters on disk, as vLLM reads them: ``--lora-modules`` entries, an adapter's rank from its
``adapter_config.json``, and dummy adapters of given ranks for benchmarks (a PEFT config, and for real
vLLM zero-initialised weights in safetensors shaped from the base model's ``config.json``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import InputError

__all__ = ["parse_lora_modules", "adapter_rank", "write_dummy_adapters", "TARGET_MODULES"]

# vLLM's usual LoRA targets for Llama / Qwen / Mistral style decoders.
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def parse_lora_modules(items: Iterable[str]) -> dict[str, str]:
    """``--lora-modules`` entries (``name=path``, or vLLM's JSON form ``{"name": ..., "path": ...}``) as
    name -> path."""
    out: dict[str, str] = {}
    for item in items:
        item = item.strip()
        if item.startswith("{"):
            try:
                d = json.loads(item)
                name, path = str(d["name"]), str(d["path"])
            except (ValueError, KeyError, TypeError):
                raise InputError("lora_modules", f"{item!r}: expected name=path or "
                                 '{"name": "...", "path": "..."}') from None
        else:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise InputError("lora_modules", f"{item!r}: expected name=path (e.g. sql=/adapters/sql)")
        if name in out:
            raise InputError("lora_modules", f"adapter name {name!r} given twice")
        out[name] = path
    return out


def adapter_rank(path: str | os.PathLike) -> int:
    """The rank ``r`` in ``path/adapter_config.json``, as vLLM reads it."""
    cfg = Path(path) / "adapter_config.json"
    try:
        d = json.loads(cfg.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("lora_modules", f"{cfg}: no adapter_config.json (a LoRA adapter directory has one)") from None
    except (OSError, ValueError) as e:
        raise InputError("lora_modules", f"{cfg}: not readable JSON ({e})") from None
    r = d.get("r") if isinstance(d, dict) else None
    if not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= 512:
        raise InputError("lora_modules", f"{cfg}: 'r' must be the adapter's rank, an integer in 1..512 (got {r!r})")
    return r


def _module_shapes(model_config: Mapping) -> dict[str, tuple[int, int]]:
    """(in, out) features of each target module of one decoder layer."""
    try:
        hidden = int(model_config["hidden_size"])
        heads = int(model_config["num_attention_heads"])
        kv_heads = int(model_config.get("num_key_value_heads", heads))
        head_dim = int(model_config.get("head_dim") or hidden // heads)
        inter = int(model_config["intermediate_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError("model_config", f"the model's config.json lacks {e} (hidden_size, num_attention_heads, "
                         "intermediate_size are needed to shape LoRA weights)") from None
    return {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv_heads * head_dim),
            "v_proj": (hidden, kv_heads * head_dim), "o_proj": (heads * head_dim, hidden),
            "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden)}


def _write_weights(path: Path, rank: int, model_config: Mapping) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    shapes = _module_shapes(model_config)
    layers = int(model_config.get("num_hidden_layers", 0))
    if layers <= 0:
        raise InputError("model_config", "the model's config.json lacks num_hidden_layers")
    tensors = {}
    for i in range(layers):
        for m, (fan_in, fan_out) in shapes.items():
            part = "self_attn" if m.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            base = f"base_model.model.model.layers.{i}.{part}.{m}"
            tensors[f"{base}.lora_A.weight"] = np.zeros((rank, fan_in), dtype=np.float16)
            tensors[f"{base}.lora_B.weight"] = np.zeros((fan_out, rank), dtype=np.float16)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def write_dummy_adapters(directory: str | os.PathLike, ranks: Mapping[str, int], model_config: Mapping | None = None,
                         base_model: str = "base") -> dict[str, str]:
    """Write one adapter directory per id (an ``adapter_config.json`` with its rank; with ``model_config``,
    also zero LoRA weights, one file per rank shared by symlinks); returns id -> path. Existing dummy
    adapters are reused."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    weights: dict[int, Path] = {}
    for name, rank in ranks.items():
        d = root / _safe(name)
        d.mkdir(exist_ok=True)
        cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": int(rank), "lora_alpha": 2 * int(rank),
               "lora_dropout": 0.0, "bias": "none", "target_modules": list(TARGET_MODULES),
               "base_model_name_or_path": base_model}
        (d / "adapter_config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
        if model_config is not None:
            if rank not in weights:
                weights[rank] = root / f"_weights_r{rank}.safetensors"
                if not weights[rank].is_file():
                    _write_weights(weights[rank], int(rank), model_config)
            link = d / "adapter_model.safetensors"
            if not link.exists():
                link.symlink_to(weights[rank].resolve())
        out[name] = str(d)
    return out


def _safe(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return keep or "adapter"
