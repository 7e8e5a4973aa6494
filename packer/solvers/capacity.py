"""The capacity model every solver shares: what one GPU can sustain, as the predictor says.

A solver cannot call a simulator inside its constraints, so the predictor is turned into a table.
For each *rank class* R (a vLLM ``--max-lora-rank`` value) and each *adapter count* n on a grid, the
model holds the largest token load (prompt + output tokens/s) that a GPU serving n adapters of rank
R, with equal rates, keeps up with, and the ``max_loras`` that achieves it:

- "keeps up" means the predictor says the GPU starts, is not starved, and serves at least
  ``KEEP_UP_RATIO`` (95 %) of the offered tokens in its window. That is stricter than the 90 %
  starvation line, so a placement packed to the table's capacity passes verification with margin.
- for each (R, n) the load is found by a bracketed bisection (relative tolerance ``tolerance``),
  starting from the neighbouring count's answer; ``max_loras`` is searched downward from
  ``min(n, memory limit)`` while fewer slots sustain more load (fewer slots: more KV cache and less
  per-slot LoRA cost, but adapters contend for slots).
- the table is made non-increasing in n (a running minimum), so a GPU with n adapters may use the
  entry of any grid count >= n: the step function is conservative between grid points.
- equal rates are the hard case for a given count and load (the most adapters active at once); a
  skewed set of the same count and load has fewer distinct adapters per step. Verification with
  the twin on the real rates catches the rest.

Tables are cached on disk (``$PACKER_CACHE_DIR``, default ``~/.cache/packer``) under a key made of
everything that changes them: the profile's fingerprint, lengths, arrivals, base server settings,
the predictor's settings and ``MODEL_VERSION`` (bump it when the twin's behaviour or this search
changes). packer ships tables for the default settings of both profiles (``packer/data/capacity``,
made by ``calibrate/ship_capacity.py``), found under the same keys.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..errors import InputError
from ..files import read_json, read_json_text, write_json_atomic
from ..model import ArrivalSpec, LengthSpec, ServerConfig
from ..predictors.base import GpuQuery, Prediction, Predictor
from ..profile import Profile, load_profile
from ..executor import process_pool
from ..twin.workload_gen import shipped_length_shapes

__all__ = ["VLLM_MAX_LORA_RANKS", "rank_class", "count_grid", "GpuConfig", "ServerBase", "CapacityModel",
           "build_capacity_model", "keeps_up"]

VLLM_MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # values vLLM accepts for --max-lora-rank
KEEP_UP_RATIO = 0.95
MODEL_VERSION = 1


def rank_class(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds an adapter of ``rank``."""
    for r in VLLM_MAX_LORA_RANKS:
        if rank <= r:
            return r
    raise InputError("rank", f"rank {rank} is above vLLM's largest max_lora_rank ({VLLM_MAX_LORA_RANKS[-1]})")


def count_grid(max_count: int) -> tuple[int, ...]:
    """Adapter counts at which capacity is measured: every count to 8, then steps of at most 1/8."""
    grid, n = [], 1
    while n < max_count:
        grid.append(n)
        n = n + 1 if n < 8 else n + max(1, 2 ** (n.bit_length() - 4))
    grid.append(max_count)
    return tuple(grid)


def keeps_up(p: Prediction) -> bool:
    """The capacity model's criterion: starts, not starved, serves >= KEEP_UP_RATIO of the offered tokens."""
    if not p.ok:
        return False
    ratio = p.throughput_ratio
    return ratio is None or ratio >= KEEP_UP_RATIO


@dataclass(frozen=True)
class GpuConfig:
    """One capacity-table entry: up to ``max_adapters`` adapters of rank <= ``max_lora_rank`` with
    ``max_loras`` GPU slots sustain ``capacity_tps`` tokens/s."""

    max_lora_rank: int
    max_adapters: int
    max_loras: int
    capacity_tps: float


@dataclass(frozen=True)
class ServerBase:
    """Server settings shared by every GPU of a placement (the solver picks the LoRA flags)."""

    max_num_seqs: int = 2048
    max_num_batched_tokens: int = 2048
    gpu_memory_utilization: float = 0.9

    def server(self, max_loras: int, max_lora_rank: int, max_cpu_loras: int | None = None) -> ServerConfig:
        return ServerConfig(max_loras=max_loras, max_lora_rank=max_lora_rank, max_cpu_loras=max_cpu_loras,
                            max_num_seqs=self.max_num_seqs, max_num_batched_tokens=self.max_num_batched_tokens,
                            gpu_memory_utilization=self.gpu_memory_utilization)


@dataclass(frozen=True)
class CapacityModel:
    """Capacity per rank class and adapter-count grid point (see the module docstring)."""

    profile: Profile             # the numbers the table was measured on, which every GPU query carries
    lengths: LengthSpec
    arrivals: ArrivalSpec
    base: ServerBase
    tokens_per_request: float
    table: dict[int, tuple[GpuConfig, ...]]  # rank class -> entries in increasing max_adapters

    @property
    def rank_classes(self) -> tuple[int, ...]:
        return tuple(sorted(self.table))

    @property
    def configs(self) -> tuple[GpuConfig, ...]:
        return tuple(c for r in self.rank_classes for c in self.table[r])

    def config_for(self, max_rank: int, count: int) -> GpuConfig | None:
        """The entry a GPU with ``count`` adapters of rank <= ``max_rank`` uses (None: count too large)."""
        entries = self.table.get(rank_class(max_rank))
        if not entries:
            return None
        k = bisect.bisect_left([c.max_adapters for c in entries], count)
        return entries[k] if k < len(entries) else None

    def capacity(self, max_rank: int, count: int) -> float:
        """Sustainable tokens/s for ``count`` adapters of rank <= ``max_rank`` (0 if none fits)."""
        c = self.config_for(max_rank, count)
        return c.capacity_tps if c is not None else 0.0

    def max_single_load(self, rank: int) -> float:
        """The most tokens/s one adapter of ``rank`` can get from one GPU."""
        return self.capacity(rank, 1)

    def to_dict(self) -> dict:
        return {"profile": self.profile.name, "profile_fingerprint": self.profile.fingerprint(),
                "tokens_per_request": self.tokens_per_request,
                "table": {str(r): [[c.max_adapters, c.max_loras, c.capacity_tps] for c in es]
                          for r, es in self.table.items()}}


# ---- building -----------------------------------------------------------------------------------

def build_capacity_model(predictor: Predictor, profile: str | Profile, lengths: LengthSpec, arrivals: ArrivalSpec,
                         base: ServerBase, ranks: Iterable[int], max_count: int, *, min_load_tps: float = 0.0,
                         tolerance: float = 0.02,
                         workers: int | None = None, cache: bool = True,
                         progress: Callable[[str], None] | None = None) -> CapacityModel:
    """Measure the capacity table for the rank classes of ``ranks`` and counts up to ``max_count``."""
    prof = load_profile(profile)
    classes = sorted({rank_class(r) for r in ranks})
    grid = count_grid(max(1, int(max_count)))
    tokens = lengths.input_mean + lengths.output_mean
    jobs = []
    table: dict[int, tuple[GpuConfig, ...]] = {}
    for R in classes:
        key = _cache_key(predictor, prof, lengths, arrivals, base, R, tolerance)
        cached = _cache_read(key, R, prof, base) if cache else None
        if cached is not None and _covers(cached, grid, min_load_tps):
            table[R] = _monotone([cached[n] for n in grid if n in cached])
        else:
            jobs.append((R, key, cached or {}))
    if jobs:
        spec = _SearchSpec(predictor, prof, lengths, arrivals, base, tolerance, tokens)
        n_workers = min(len(jobs), workers or os.cpu_count() or 1)
        if progress:
            progress(f"measuring GPU capacity for max_lora_rank {', '.join(str(j[0]) for j in jobs)} "
                     f"(up to {grid[-1]} adapters, {n_workers} process{'es' if n_workers > 1 else ''})")
        if n_workers > 1:
            with process_pool(n_workers) as pool:
                results = list(pool.map(_measure_class, [spec] * len(jobs), [j[0] for j in jobs],
                                        [grid] * len(jobs), [j[2] for j in jobs], [min_load_tps] * len(jobs)))
        else:
            results = [_measure_class(spec, R, grid, known, min_load_tps) for R, _, known in jobs]
        for (R, key, known), measured in zip(jobs, results):
            if cache:
                _cache_write(key, {**known, **measured})
            table[R] = _monotone([measured[n] for n in grid if n in measured])
    for R in classes:
        if not table[R] or table[R][0].capacity_tps <= 0:
            raise InputError("adapters", f"no {prof.name} server can serve an adapter of rank {R}: even with "
                             "max_loras=1 it does not start or keeps up with nothing; use lower ranks or a larger GPU")
        table[R] = tuple(c for c in table[R] if c.capacity_tps > 0)
    return CapacityModel(prof, lengths, arrivals, base, tokens, table)


@dataclass(frozen=True)
class _SearchSpec:
    predictor: Predictor
    profile: Profile
    lengths: LengthSpec
    arrivals: ArrivalSpec
    base: ServerBase
    tolerance: float
    tokens_per_request: float

    def keeps_up(self, R: int, n: int, A: int, total_rate: float) -> bool:
        if total_rate <= 0:
            return True
        q = GpuQuery(self.profile, self.base.server(A, R), (R,) * n, (total_rate / n,) * n,
                     self.lengths, self.arrivals)
        return keeps_up(self.predictor.predict(q))

    def max_loras_limit(self, R: int) -> int:
        mem, lim = self.profile.memory, 0
        lo, hi = 1, 4096  # the memory check is monotone in slots: bisect the largest that starts
        if mem.startup_error(1, R, self.base.gpu_memory_utilization, True) is not None:
            return 0
        while lo <= hi:
            mid = (lo + hi) // 2
            if mem.startup_error(mid, R, self.base.gpu_memory_utilization, True) is None:
                lim, lo = mid, mid + 1
            else:
                hi = mid - 1
        return lim


def _measure_class(spec: _SearchSpec, R: int, grid: Sequence[int], known: dict[int, GpuConfig],
                   min_load_tps: float = 0.0) -> dict[int, GpuConfig]:
    """Capacity entries of one rank class for the grid counts (reusing ``known`` ones).

    Stops early once ``count * min_load_tps`` exceeds the capacity: no GPU can hold that many."""
    a_limit = spec.max_loras_limit(R)
    step = 1.0 - spec.tolerance
    out: dict[int, GpuConfig] = {}
    rate = None  # the previous count's capacity (req/s): capacity only falls with the count
    slots_per_adapter = 1.0  # the previous count's best max_loras / count
    for n in grid:
        if n in known:
            out[n] = known[n]
            rate = known[n].capacity_tps / spec.tokens_per_request
            slots_per_adapter = known[n].max_loras / n
        elif a_limit == 0 or rate == 0.0:
            out[n] = GpuConfig(R, n, 1, 0.0)
            rate = 0.0
        else:
            top = min(n, a_limit)
            A = max(1, min(top, round(slots_per_adapter * n)))

            def ok_at(A: int) -> Callable[[float], bool]:
                return lambda x: spec.keeps_up(R, n, A, x)

            rate = _search_down(ok_at(A), rate, step) if rate else _max_rate(ok_at(A), spec.tolerance)
            # Neighbouring slot counts: fewer slots leave more KV and cost less per token, but
            # adapters contend for them. Move while a neighbour sustains one tolerance step more.
            for direction in (4 / 3, 0.75):
                moved = False
                while rate > 0:
                    B = min(top, max(1, int(A * direction))) if n > 8 else top
                    if B == A or not ok_at(B)(rate / step):
                        break
                    A, rate, moved = B, _search_up(ok_at(B), rate / step, 1.0 / step), True
                if moved:
                    break
            slots_per_adapter = A / n
            out[n] = GpuConfig(R, n, A, rate * spec.tokens_per_request)
        if n * min_load_tps > out[n].capacity_tps:
            break
    return out


def _covers(known: dict[int, GpuConfig], grid: Sequence[int], min_load_tps: float) -> bool:
    """Whether cached entries answer every grid count that a GPU could hold."""
    for n in grid:
        if n not in known:
            return False
        if n * min_load_tps > known[n].capacity_tps:
            return True
    return True


def _search_down(ok: Callable[[float], bool], start: float, factor: float) -> float:
    """The first of start, start*factor, start*factor^2, ... with ok() (0 if none above 1e-6)."""
    x = start
    while x > 1e-6:
        if ok(x):
            return x
        x *= factor
    return 0.0


def _search_up(ok: Callable[[float], bool], start: float, factor: float) -> float:
    """The last of start, start*factor, ... with ok(), given ok(start)."""
    x = start
    while x < 1e7 and ok(x * factor):
        x *= factor
    return x


def _max_rate(ok: Callable[[float], bool], tol: float) -> float:
    """The largest x with ok(x), for ok monotone (true below a threshold), to relative ``tol``."""
    lo, hi = 0.0, 1.0
    while ok(hi):
        lo, hi = hi, hi * 2.0
        if hi > 1e7:
            return lo
    if lo == 0.0:
        lo = _search_down(ok, hi / 2, 0.5)
        if lo == 0.0:
            return 0.0
    while hi - lo > tol * lo:
        mid = math.sqrt(lo * hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _monotone(entries: Sequence[GpuConfig]) -> tuple[GpuConfig, ...]:
    """Make capacity non-increasing in the adapter count (a running minimum)."""
    out, cap = [], math.inf
    for c in entries:
        if c.capacity_tps < cap:
            cap = c.capacity_tps
            out.append(c)
        else:
            out.append(GpuConfig(c.max_lora_rank, c.max_adapters, c.max_loras, cap))
    return tuple(out)


# ---- disk cache ---------------------------------------------------------------------------------

def _cache_dir() -> Path:
    return Path(os.environ.get("PACKER_CACHE_DIR") or Path.home() / ".cache" / "packer") / "capacity"


def _cache_key(predictor: Predictor, prof: Profile, lengths: LengthSpec, arrivals: ArrivalSpec, base: ServerBase,
               R: int, tol: float) -> str:
    blob = json.dumps({"v": MODEL_VERSION, "profile": prof.fingerprint(), "length_shapes": shipped_length_shapes(),
                       "lengths": lengths.model_dump(),
                       "arrivals": arrivals.model_dump(), "base": base.__dict__, "rank": R, "tol": tol,
                       "keep_up": KEEP_UP_RATIO, "predictor": predictor.describe()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _shipped_dir():
    from importlib import resources
    return resources.files("packer") / "data" / "capacity"


# A cached capacity above this is not a measurement: an H100 sustains about 2e4 tokens/s of an 8B
# model, and the hand-checkable test profile (1 ms steps of 2048 tokens) at most 2e6.
MAX_CACHED_CAPACITY_TPS = 1e7
MAX_CACHED_LORAS = 4096  # the slot search's own bound (_SearchSpec.max_loras_limit)


def _cache_read(key: str, R: int, prof: Profile, base: ServerBase) -> dict[int, GpuConfig] | None:
    """Entries measured before: the tables shipped with packer, then the user's cache (same key).
    Only entries that pass ``_trusted_rows`` are returned: the others are measured again."""
    found: dict[int, GpuConfig] = {}
    for path, source in ((_shipped_dir() / f"{key}.json", f"packer/data/capacity/{key}.json"),
                         (_cache_dir() / f"{key}.json", None)):
        try:
            if source is None:
                data = read_json(path, field="cache")
            elif path.is_file():
                data = read_json_text(path.read_text(encoding="utf-8"), source, field="cache")
            else:
                continue
        except InputError:  # missing, unreadable or truncated: measured again and rewritten
            continue
        rows = data.get("entries") if isinstance(data, dict) else None
        if isinstance(rows, list):
            found.update(_trusted_rows(rows, R, prof, base))
    return found or None


def _trusted_rows(rows: list, R: int, prof: Profile, base: ServerBase) -> dict[int, GpuConfig]:
    """The rows ``[max_lora_rank, max_adapters, max_loras, capacity_tps]`` that a measurement of rank
    class ``R`` can have produced: whole numbers with max_lora_rank == R, max_adapters >= 1,
    1 <= max_loras <= min(max_adapters, MAX_CACHED_LORAS), a finite capacity in
    [0, MAX_CACHED_CAPACITY_TPS], and a server the memory model lets start. A zero capacity is
    trusted only where the memory model refuses even max_loras=1 at rank R (the search writes zeros
    there without measuring, and every larger count follows); elsewhere the search can only reach a
    zero by measuring, and a false one would make every later run fail, so it is measured again."""
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    util = base.gpu_memory_utilization
    no_server = prof.memory.startup_error(1, R, util, True) is not None
    out: dict[int, GpuConfig] = {}
    for r in rows:
        if not (isinstance(r, list) and len(r) == 4 and all(whole(v) for v in r[:3])
                and isinstance(r[3], (int, float)) and not isinstance(r[3], bool)):
            continue
        rank, n, slots, cap = r[0], r[1], r[2], float(r[3])
        if not (rank == R and n >= 1 and 1 <= slots <= min(n, MAX_CACHED_LORAS)
                and math.isfinite(cap) and 0.0 <= cap <= MAX_CACHED_CAPACITY_TPS):
            continue
        if cap == 0.0 if no_server else (cap > 0.0 and prof.memory.startup_error(slots, R, util, True) is None):
            out[n] = GpuConfig(rank, n, slots, cap)
    return out


_unwritable_warned: set[str] = set()  # cache directories already warned about in this process


def _cache_write(key: str, entries: dict[int, GpuConfig]) -> None:
    """Store a rank class's entries (atomically); a cache that cannot be written is warned about once."""
    path = _cache_dir() / f"{key}.json"
    rows = [[c.max_lora_rank, c.max_adapters, c.max_loras, c.capacity_tps] for _, c in sorted(entries.items())]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"entries": rows})
    except OSError as e:
        where = str(path.parent)
        if where not in _unwritable_warned:
            _unwritable_warned.add(where)
            warnings.warn(f"cannot write the capacity cache in {where} ({e.strerror or type(e).__name__}), so "
                          "every run measures the GPU capacity again; set PACKER_CACHE_DIR to a writable "
                          "directory", RuntimeWarning, stacklevel=2)
