"""Performance profiles (model x GPU): the fitted numbers the twin runs on.

A profile is a plain JSON file in ``packer/profiles/`` written by ``calibrate/fit_profiles.py``.
Each number has a documented meaning (see ``Profile`` and the sub-dataclasses below); the file also
carries a ``fit_report`` with the fit error of each part.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .files import read_json, read_json_text

__all__ = [
    "MemoryModel",
    "StepModel",
    "SchedulerModel",
    "LoadingModel",
    "ClientModel",
    "Profile",
    "list_profiles",
    "load_profile",
]

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class MemoryModel:
    """Start-up memory: what vLLM leaves to the KV cache.

    kv_bytes = gpu_memory_utilization * gpu_memory_gib - non_kv_gib - max_loras * slot_mib(max_lora_rank)
    where slot_mib(r) = slot_mib_base + slot_mib_per_rank * r (every slot is reserved at max_lora_rank).
    """

    gpu_memory_gib: float
    non_kv_gib: float
    kv_bytes_per_token: int
    slot_mib_base: float
    slot_mib_per_rank: float
    max_model_len: int
    block_size: int = 16

    def slot_mib(self, max_lora_rank: int) -> float:
        return self.slot_mib_base + self.slot_mib_per_rank * max_lora_rank

    def kv_bytes(self, max_loras: int, max_lora_rank: int, gpu_memory_utilization: float = 0.9,
                 enable_lora: bool = True) -> float:
        lora = max_loras * self.slot_mib(max_lora_rank) * MIB if enable_lora else 0.0
        return gpu_memory_utilization * self.gpu_memory_gib * GIB - self.non_kv_gib * GIB - lora

    def kv_tokens(self, max_loras: int, max_lora_rank: int, gpu_memory_utilization: float = 0.9,
                  enable_lora: bool = True) -> int:
        """KV-cache capacity in tokens (a whole number of blocks), 0 if nothing is left."""
        b = self.kv_bytes(max_loras, max_lora_rank, gpu_memory_utilization, enable_lora)
        blocks = int(max(b, 0.0) // (self.kv_bytes_per_token * self.block_size))
        return blocks * self.block_size

    def startup_error(self, max_loras: int, max_lora_rank: int, gpu_memory_utilization: float = 0.9,
                      enable_lora: bool = True) -> str | None:
        """The reason vLLM would refuse to start with this config, or None if it starts."""
        kv = self.kv_tokens(max_loras, max_lora_rank, gpu_memory_utilization, enable_lora)
        if kv <= 0:
            return (f"no_kv_blocks: weights and {max_loras} LoRA slots at rank {max_lora_rank} leave no "
                    f"memory for the KV cache")
        if kv < self.max_model_len:
            return (f"kv_below_max_model_len: KV cache holds {kv} tokens, fewer than one max_model_len "
                    f"sequence ({self.max_model_len}); lower max_loras or max_lora_rank")
        return None


@dataclass(frozen=True)
class StepModel:
    """GPU time of one engine step, in milliseconds.

    step_ms = interp(decode_batch, decode_ms, n_seqs)                  # base model at context decode_ctx_ref
            + attention_ms_per_kv_token * (ctx_tokens - n_decode * decode_ctx_ref)   # longer contexts
            + prefill_ms_per_token * n_prefill_tokens
            + [LoRA on] rank_factor * (lora_ms_base + lora_ms_per_token * n_tokens
                                       + lora_ms_per_token_slot * n_tokens * max_loras)
                        + lora_ms_per_adapter * n_distinct_adapters
    rank_factor = 1 + lora_rank_slope * (max_lora_rank - lora_rank_ref) / lora_rank_ref.
    ``n_seqs`` counts every request in the step, ``n_tokens`` every token it processes (decode and
    prefill), ``ctx_tokens`` the context length summed over the decoding requests. The per-token-per-
    slot term reflects vLLM's LoRA kernels launching work for every reserved slot.
    """

    decode_batch: tuple[float, ...]
    decode_ms: tuple[float, ...]
    prefill_ms_per_token: float
    lora_ms_base: float
    lora_ms_per_token: float
    lora_ms_per_adapter: float
    lora_ms_per_token_slot: float = 0.0
    lora_rank_ref: float = 8.0
    lora_rank_slope: float = 0.0
    attention_ms_per_kv_token: float = 0.0
    decode_ctx_ref: float = 0.0

    def rank_factor(self, max_lora_rank: int) -> float:
        return 1.0 + self.lora_rank_slope * (max_lora_rank - self.lora_rank_ref) / self.lora_rank_ref


@dataclass(frozen=True)
class SchedulerModel:
    """CPU time of the scheduler per step (ms): ms_base + ms_per_running * running + ms_per_waiting * waiting."""

    ms_base: float
    ms_per_running: float
    ms_per_waiting: float


@dataclass(frozen=True)
class LoadingModel:
    """Adapter loading, by adapter rank (linear interpolation between the measured ranks).

    cpu_to_gpu_ms: activating an adapter from the CPU cache into a GPU slot (stalls the step).
    disk_to_cpu_ms: reading an adapter from disk into the CPU cache (once per adapter when the CPU
    cache holds every served adapter; again after each eviction otherwise).
    """

    ranks: tuple[float, ...]
    cpu_to_gpu_ms: tuple[float, ...]
    disk_to_cpu_ms: tuple[float, ...]

    def cpu_to_gpu(self, rank: int) -> float:
        return float(np.interp(rank, self.ranks, self.cpu_to_gpu_ms))

    def disk_to_cpu(self, rank: int) -> float:
        return float(np.interp(rank, self.ranks, self.disk_to_cpu_ms))


@dataclass(frozen=True)
class ClientModel:
    """What the end-to-end runs show about the load generator and the model's outputs.

    max_waiting: waiting-queue length at which the measured load generator stopped sending
      (requests that would arrive while the queue is this long are not sent).
    output_len_scale: mean generated / requested output tokens (early EOS).
    """

    max_waiting: int
    output_len_scale: float = 1.0


@dataclass(frozen=True)
class Profile:
    """A calibrated performance profile for one model on one GPU type."""

    name: str
    model: str
    gpu: str
    description: str
    memory: MemoryModel
    step: StepModel
    scheduler: SchedulerModel
    loading: LoadingModel
    client: ClientModel
    fit_report: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Profile":
        try:
            return cls(
                name=d["name"], model=d["model"], gpu=d["gpu"], description=d.get("description", ""),
                memory=MemoryModel(**d["memory"]),
                step=StepModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["step"].items()}),
                scheduler=SchedulerModel(**d["scheduler"]),
                loading=LoadingModel(**{k: tuple(v) for k, v in d["loading"].items()}),
                client=ClientModel(**d["client"]),
                fit_report=d.get("fit_report", {}),
            )
        except (KeyError, TypeError) as e:
            raise InputError("profile", f"malformed profile {d.get('name', '?')!r}: {e}") from e

    def fingerprint(self) -> str:
        """A short hash of everything that changes a simulation (not the name or the fit report)."""
        parts = {k: dataclasses.asdict(getattr(self, k)) for k in ("memory", "step", "scheduler", "loading", "client")}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, path: str | Path) -> "Profile":
        data = read_json(path, field="profile")
        if not isinstance(data, dict):
            raise InputError("profile", f"{path}: holds a JSON {type(data).__name__}, not a profile object; "
                             "give a profile file written by calibrate/fit_profiles.py")
        return cls.from_dict(data)


def _profile_dir():
    return resources.files("packer") / "profiles"


def list_profiles() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.name[:-5] for p in _profile_dir().iterdir() if p.name.endswith(".json"))


@lru_cache(maxsize=32)
def _load_shipped(name: str) -> Profile:
    path = _profile_dir() / f"{name}.json"
    return Profile.from_dict(read_json_text(path.read_text(encoding="utf-8"), f"packer/profiles/{name}.json",
                                            field="profile"))


def load_profile(name_or_path: str | Profile) -> Profile:
    """A shipped profile by name, or a profile JSON file by path."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    if name_or_path in list_profiles():
        return _load_shipped(name_or_path)
    p = Path(name_or_path)
    if p.suffix == ".json" and p.is_file():
        return Profile.from_json(p)
    raise InputError("profile", f"unknown profile {name_or_path!r}; known profiles: "
                     f"{', '.join(list_profiles()) or '(none)'}, or a path to a profile .json file")
