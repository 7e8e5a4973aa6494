"""Performance profiles (model x GPU): the fitted numbers the twin runs on.

A profile is a plain JSON file in ``packer/profiles/`` written by ``calibrate/fit_profiles.py`` (with the
fitting code of ``packer.calibration``).
Each number has a documented meaning (see ``Profile`` and the sub-dataclasses below); the file also
carries a ``fit_report`` with the fit error of each part.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from .errors import InputError
from .files import loaded_numpy, read_json, read_json_text

__all__ = [
    "MemoryModel",
    "StepModel",
    "SchedulerModel",
    "LoadingModel",
    "ClientModel",
    "Profile",
    "list_profiles",
    "load_profile",
    "MIN_STEP_MS",
    "PROVENANCES",
]

MIB = 1 << 20
GIB = 1 << 30
# No engine step is shorter: a profile whose costs add up to less describes no real server. The
# twin refuses such a step (so a run always advances its clock and ends), and decode_ms starts here.
MIN_STEP_MS = 0.05


# ---- the schema: type and plausible range of every number -------------------------------------
# Ranges are generous (a 70B model on eight GPUs and a tiny test profile both fit) but exclude what
# no server does: a NaN or negative cost, a zero KV size, a step of nanoseconds. Every section checks
# itself on construction, so a profile built in code is held to the same schema as one read from JSON.


@dataclass(frozen=True)
class _Num:
    """A number's schema: bounds (``lo`` exclusive when ``lo_open``), whole or not, and what it is."""

    lo: float | None
    hi: float | None
    what: str
    lo_open: bool = False
    integer: bool = False


@dataclass(frozen=True)
class _Seq:
    """A list of numbers: each within ``item``; ``order`` "increasing" (strictly) or "non-decreasing"."""

    item: _Num
    order: str | None = None
    max_len: int = 64


def _shown(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_number(path: str, v: Any, spec: _Num) -> None:
    kind = "a whole number" if spec.integer else "a number"
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise InputError(path, f"must be {kind}, got {type(v).__name__} {_shown(v)}; it is {spec.what}")
    x = float(v)
    if not math.isfinite(x):
        raise InputError(path, f"must be a finite number, got {_shown(v)}; it is {spec.what}")
    if spec.integer and x != math.floor(x):
        raise InputError(path, f"must be a whole number, got {v!r}; it is {spec.what}")
    if spec.lo is not None and (x <= spec.lo if spec.lo_open else x < spec.lo):
        raise InputError(path, f"must be {'>' if spec.lo_open else '>='} {spec.lo:g}, got {v!r}; it is {spec.what}")
    if spec.hi is not None and x > spec.hi:
        raise InputError(path, f"must be <= {spec.hi:g}, got {v!r}: implausible for {spec.what}")


def _check_section(obj: Any, section: str) -> None:
    """Check every field of a profile section against its class's ``_SCHEMA``; lists become tuples."""
    for name, spec in type(obj)._SCHEMA.items():
        path = f"profile.{section}.{name}"
        v = getattr(obj, name)
        if isinstance(spec, _Num):
            _check_number(path, v, spec)
            continue
        np = loaded_numpy()  # (not imported here: listing the profiles needs no numpy)
        if isinstance(v, list) or (np is not None and isinstance(v, np.ndarray)):
            v = tuple(v if isinstance(v, list) else v.tolist())
            object.__setattr__(obj, name, v)  # hashable, as a frozen dataclass's fields must be
        if not isinstance(v, tuple) or not 1 <= len(v) <= spec.max_len:
            raise InputError(path, f"must be a list of 1 to {spec.max_len} numbers, got {_shown(v)}; "
                             f"each is {spec.item.what}")
        for i, x in enumerate(v):
            _check_number(f"{path}[{i}]", x, spec.item)
        steps = [b - a for a, b in zip(v, v[1:])]
        if spec.order == "increasing" and any(d <= 0 for d in steps):
            raise InputError(path, f"must be strictly increasing, got {_shown(v)}")
        if spec.order == "non-decreasing" and any(d < 0 for d in steps):
            raise InputError(path, f"must not decrease, got {_shown(v)}; it is {spec.item.what}")


def _same_length(section: str, a: str, b: str, obj: Any) -> None:
    if len(getattr(obj, a)) != len(getattr(obj, b)):
        raise InputError(f"profile.{section}.{b}", f"has {len(getattr(obj, b))} values for the "
                         f"{len(getattr(obj, a))} of {a}; give one per {a} entry")




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

    _SCHEMA: ClassVar[dict[str, _Num | _Seq]] = {
        "gpu_memory_gib": _Num(0, 4096, "the GPU's memory in GiB", lo_open=True),
        "non_kv_gib": _Num(0, 4096, "the GiB of weights, activations and CUDA graphs outside the KV cache"),
        "kv_bytes_per_token": _Num(1, 1 << 26, "the KV-cache bytes of one token (2 x layers x KV heads x head "
                                   "dim x dtype bytes)", integer=True),
        "slot_mib_base": _Num(0, 1e6, "the MiB one LoRA slot reserves besides its rank term"),
        "slot_mib_per_rank": _Num(0, 1e5, "the MiB one LoRA slot reserves per unit of max_lora_rank"),
        "max_model_len": _Num(1, 1 << 24, "the model's context length in tokens", integer=True),
        "block_size": _Num(1, 4096, "the KV block size in tokens (vLLM's --block-size, usually 16)", integer=True),
    }

    def __post_init__(self) -> None:
        _check_section(self, "memory")
        if self.non_kv_gib >= self.gpu_memory_gib:
            raise InputError("profile.memory.non_kv_gib", f"must be below gpu_memory_gib ({self.gpu_memory_gib:g}), "
                             f"got {self.non_kv_gib!r}: nothing would be left for the KV cache")

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

    def max_loras_that_start(self, max_lora_rank: int, gpu_memory_utilization: float = 0.9, limit: int = 4096) -> int:
        """The most LoRA slots at ``max_lora_rank`` with which vLLM starts (at most ``limit``; 0 if even one
        slot does not): a bisection, since more slots only take memory."""
        best, lo, hi = 0, 1, limit
        while lo <= hi:
            mid = (lo + hi) // 2
            if self.startup_error(mid, max_lora_rank, gpu_memory_utilization, True) is None:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        return best

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

    _SCHEMA: ClassVar[dict[str, _Num | _Seq]] = {
        "decode_batch": _Seq(_Num(1, 1 << 20, "a batch size (requests per step) at which decode_ms was measured"),
                             order="increasing"),
        "decode_ms": _Seq(_Num(MIN_STEP_MS, 1e6, "the milliseconds of one decode step at that batch size"),
                          order="non-decreasing"),
        "prefill_ms_per_token": _Num(0, 1e3, "the milliseconds per prompt token in a step"),
        "lora_ms_base": _Num(0, 1e4, "the milliseconds a step with LoRA on costs extra"),
        "lora_ms_per_token": _Num(0, 1e3, "the LoRA milliseconds per token in a step"),
        "lora_ms_per_adapter": _Num(0, 1e4, "the milliseconds per distinct adapter in a step"),
        "lora_ms_per_token_slot": _Num(0, 1e2, "the LoRA milliseconds per token and reserved slot"),
        "lora_rank_ref": _Num(0, 512, "the rank at which the LoRA terms were measured", lo_open=True),
        "lora_rank_slope": _Num(-1, 100, "the LoRA cost's relative growth per lora_rank_ref of rank"),
        "attention_ms_per_kv_token": _Num(0, 1, "the milliseconds per context token of a decoding request"),
        "decode_ctx_ref": _Num(0, 1 << 24, "the context length (tokens) at which decode_ms was measured"),
    }

    def __post_init__(self) -> None:
        _check_section(self, "step")
        _same_length("step", "decode_batch", "decode_ms", self)
        for r in (1, 512):  # linear in the rank: positive at both ends of vLLM's range means positive on it
            if self.rank_factor(r) <= 0:
                raise InputError("profile.step.lora_rank_slope", f"gives a LoRA cost factor of "
                                 f"{self.rank_factor(r):.3g} at rank {r}; it must stay positive for ranks 1-512")

    def rank_factor(self, max_lora_rank: int) -> float:
        return 1.0 + self.lora_rank_slope * (max_lora_rank - self.lora_rank_ref) / self.lora_rank_ref


@dataclass(frozen=True)
class SchedulerModel:
    """CPU time of the scheduler per step (ms): ms_base + ms_per_running * running + ms_per_waiting * waiting."""

    ms_base: float
    ms_per_running: float
    ms_per_waiting: float

    _SCHEMA: ClassVar[dict[str, _Num | _Seq]] = {
        "ms_base": _Num(0, 1e4, "the scheduler's milliseconds per step"),
        "ms_per_running": _Num(0, 1e3, "the scheduler's milliseconds per running request"),
        "ms_per_waiting": _Num(0, 1e3, "the scheduler's milliseconds per waiting request"),
    }

    def __post_init__(self) -> None:
        _check_section(self, "scheduler")


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

    _SCHEMA: ClassVar[dict[str, _Num | _Seq]] = {
        "ranks": _Seq(_Num(1, 4096, "an adapter rank at which loading was measured"), order="increasing"),
        "cpu_to_gpu_ms": _Seq(_Num(0, 1e7, "the milliseconds to copy an adapter of that rank into a GPU slot")),
        "disk_to_cpu_ms": _Seq(_Num(0, 1e7, "the milliseconds to read an adapter of that rank from disk")),
    }

    def __post_init__(self) -> None:
        _check_section(self, "loading")
        _same_length("loading", "ranks", "cpu_to_gpu_ms", self)
        _same_length("loading", "ranks", "disk_to_cpu_ms", self)

    def cpu_to_gpu(self, rank):
        """Milliseconds at ``rank`` (a number: a float; an array of ranks: an array)."""
        import numpy as np

        ms = np.interp(np.asarray(rank, dtype=np.float64), self.ranks, self.cpu_to_gpu_ms)
        return float(ms) if ms.ndim == 0 else ms

    def disk_to_cpu(self, rank):
        """Milliseconds at ``rank`` (a number: a float; an array of ranks: an array)."""
        import numpy as np

        ms = np.interp(np.asarray(rank, dtype=np.float64), self.ranks, self.disk_to_cpu_ms)
        return float(ms) if ms.ndim == 0 else ms


@dataclass(frozen=True)
class ClientModel:
    """What the end-to-end runs show about the load generator and the model's outputs.

    max_waiting: waiting-queue length at which the measured load generator stopped sending
      (requests that would arrive while the queue is this long are not sent).
    output_len_scale: mean generated / requested output tokens (early EOS).
    admission_ms_per_adapter_sq: the delay between a request being sent and its entry into the engine's
      waiting queue, per squared adapter the server serves (``admission_delay_ms``); it delays that
      request's first token alone, not the steps. 0: none (the default).
    """

    max_waiting: int
    output_len_scale: float = 1.0
    admission_ms_per_adapter_sq: float = 0.0

    _SCHEMA: ClassVar[dict[str, _Num | _Seq]] = {
        "max_waiting": _Num(1, 1 << 31, "the waiting-queue length at which the load generator stops sending",
                            integer=True),
        "output_len_scale": _Num(0, 10, "the mean generated / requested output tokens", lo_open=True),
        "admission_ms_per_adapter_sq": _Num(0, 1e3, "the admission delay in ms per squared adapter served"),
    }

    def __post_init__(self) -> None:
        _check_section(self, "client")

    def admission_delay_ms(self, n_adapters: int) -> float:
        """Milliseconds between a request being sent and its entry into the waiting queue of a server that
        serves ``n_adapters`` LoRA adapters: ``admission_ms_per_adapter_sq * n_adapters ** 2``."""
        return self.admission_ms_per_adapter_sq * n_adapters * n_adapters


PROVENANCES = ("measured", "derived")
_OPTIONAL = ("provenance", "tensor_parallel_size")  # top-level fields a profile file may leave out
_SECTIONS = {"memory": MemoryModel, "step": StepModel, "scheduler": SchedulerModel, "loading": LoadingModel,
             "client": ClientModel}


@dataclass(frozen=True)
class Profile:
    """A calibrated performance profile for one model on one GPU type.

    Equal profiles hash alike by name and fingerprint (cached), so a profile can key caches and ride
    in every ``GpuQuery`` at no cost."""

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
    # how the numbers were obtained: "measured" (fitted on measurements; a file without the field) or
    # "derived" (from the architecture and the GPU, ``packer.derive``); and the GPUs one server spans
    provenance: str = field(default="measured", compare=False)
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        for key in ("name", "model", "gpu", "description"):
            v = getattr(self, key)
            if not isinstance(v, str) or (key == "name" and not v.strip()):
                raise InputError(f"profile.{key}", f"must be a{' non-empty' if key == 'name' else ''} string, "
                                 f"got {_shown(v)}")
        for key, cls in _SECTIONS.items():
            if not isinstance(getattr(self, key), cls):
                raise InputError(f"profile.{key}", f"must be a {cls.__name__}, got {type(getattr(self, key)).__name__}")
        if not isinstance(self.fit_report, dict):
            raise InputError("profile.fit_report", f"must be an object, got {type(self.fit_report).__name__}")
        if self.provenance not in PROVENANCES:
            raise InputError("profile.provenance", f"must be one of {', '.join(PROVENANCES)}, got {_shown(self.provenance)}")
        _check_number("profile.tensor_parallel_size", self.tensor_parallel_size,
                      _Num(1, 64, "the GPUs one server spans (vLLM's --tensor-parallel-size)", integer=True))

    def __hash__(self) -> int:
        return hash((self.name, self._fingerprint))

    @classmethod
    def from_dict(cls, d: Any, source: str | None = None) -> "Profile":
        """A profile from its JSON form, checked against the schema; ``source`` (a file) is named in errors."""
        try:
            if not isinstance(d, dict):
                raise InputError("profile", f"expected a JSON object with name, model, gpu and the sections "
                                 f"{', '.join(_SECTIONS)}, got {type(d).__name__}")
            missing = [k for k in ("name", "model", "gpu", *_SECTIONS) if k not in d]
            if missing:
                raise InputError(f"profile.{missing[0]}", f"missing; a profile needs name, model, gpu and the "
                                 f"sections {', '.join(_SECTIONS)}")
            unknown = sorted(set(d) - {"name", "model", "gpu", "description", "fit_report", *_OPTIONAL, *_SECTIONS})
            if unknown:
                raise InputError(f"profile.{unknown[0]}", "unknown field; check the spelling against the documented "
                                 f"fields (name, model, gpu, description, fit_report, {', '.join(_OPTIONAL)}, "
                                 f"{', '.join(_SECTIONS)})")
            sections = {key: _section(klass, key, d[key]) for key, klass in _SECTIONS.items()}
            return cls(name=d["name"], model=d["model"], gpu=d["gpu"], description=d.get("description", ""),
                       fit_report=d.get("fit_report", {}), **{k: d[k] for k in _OPTIONAL if k in d}, **sections)
        except InputError as e:
            if source is None:
                raise
            raise InputError(e.field, f"{e.detail} (in {source})") from None

    def fingerprint(self) -> str:
        """A short hash of everything that changes a simulation (not the name or the fit report)."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        parts = {k: dataclasses.asdict(getattr(self, k)) for k in _SECTIONS}
        if not self.client.admission_ms_per_adapter_sq:  # off: the same simulations as before the field existed
            del parts["client"]["admission_ms_per_adapter_sq"]
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, path: str | Path) -> "Profile":
        return cls.from_dict(read_json(path, field="profile"), source=str(path))


def _section(cls: type, key: str, values: Any):
    """One section of a profile's JSON form as its dataclass (unknown, missing and mistyped fields named)."""
    if not isinstance(values, dict):
        raise InputError(f"profile.{key}", f"must be an object of {cls.__name__} fields, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"profile.{key}.{unknown[0]}", f"unknown field; valid: {', '.join(fields)}")
    needed = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in values]
    if needed:
        raise InputError(f"profile.{key}.{needed[0]}", f"missing; {cls.__name__} needs {', '.join(needed)}")
    return cls(**values)


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


def load_profile(name_or_path: str | Path | Profile) -> Profile:
    """A shipped profile by name, or a profile JSON file by path (a ``Profile`` is returned as is).

    A file is read once per change (cached by its path, size and modification time), so a path can
    stand for its profile wherever a name can."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    if not isinstance(name_or_path, (str, Path)):
        raise InputError("profile", f"expected a profile name or a path to a profile .json file, got "
                         f"{type(name_or_path).__name__}")
    if isinstance(name_or_path, str) and name_or_path in list_profiles():
        return _load_shipped(name_or_path)
    p = Path(name_or_path)
    if p.suffix == ".json" and p.is_file():
        st = p.stat()
        return _load_file(str(p.resolve()), st.st_mtime_ns, st.st_size)
    if isinstance(name_or_path, str) and "@" in name_or_path and p.suffix != ".json":
        from .derive import derived_profile  # MODEL@GPU[xN] from the catalog (arithmetic, cached)

        return derived_profile(name_or_path)
    raise InputError("profile", f"unknown profile {str(name_or_path)!r}; known profiles: "
                     f"{', '.join(list_profiles()) or '(none)'}, MODEL@GPU or MODEL@GPUxN from the catalog "
                     f"(`packer profiles`), or a path to a profile .json file")


@lru_cache(maxsize=32)
def _load_file(path: str, mtime_ns: int, size: int) -> Profile:
    return Profile.from_json(path)
