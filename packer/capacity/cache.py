"""The capacity tables' on-disk cache: the user's (``$PACKER_CACHE_DIR``, default ``~/.cache/packer``) and
the tables shipped in ``packer/data/capacity`` (made by ``calibrate/ship_capacity.py``), under one key made
of everything that changes a table. Rows are range-checked when read: one that fails is measured again."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from functools import lru_cache
from pathlib import Path

from ..errors import InputError
from ..files import cache_root, read_json, read_json_text, write_json_atomic
from ..model import ArrivalSpec, LengthSpec, ServerDefaults
from ..predictors.base import KEEP_UP_RATIO, Predictor
from ..profile import Profile
from ..twin.fingerprint import twin_fingerprint
from .table import GpuConfig

__all__ = ["cache_dir", "cache_key", "search_code_hash", "read_cached", "write_cached", "trusted_rows"]


def cache_dir() -> Path:
    return cache_root() / "capacity"


def cache_key(predictor: Predictor, prof: Profile, lengths: LengthSpec, arrivals: ArrivalSpec, base: ServerDefaults,
               R: int, tol: float) -> str:
    blob = json.dumps({"twin": twin_fingerprint(prof), "search": search_code_hash(),
                       "lengths": lengths.model_dump(),
                       "arrivals": arrivals.model_dump(), "base": base.model_dump(), "rank": R, "tol": tol,
                       "keep_up": KEEP_UP_RATIO, "predictor": predictor.describe()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@lru_cache(maxsize=1)
def search_code_hash() -> str:
    """A hash of the code that measures a table (``search.py``, ``table.py``): a change to the search
    makes every cached table stale, as a change to the twin does (``twin_fingerprint``)."""
    here = Path(__file__).resolve().parent
    return hashlib.sha256(b"".join((here / f).read_bytes() for f in ("search.py", "table.py"))).hexdigest()[:16]


def _shipped_dir():
    from importlib import resources
    return resources.files("packer") / "data" / "capacity"


# A cached capacity above this is not a measurement: an H100 sustains about 2e4 tokens/s of an 8B
# model, and the hand-checkable test profile (1 ms steps of 2048 tokens) at most 2e6.
MAX_CACHED_CAPACITY_TPS = 1e7
MAX_CACHED_LORAS = 4096  # the slot search's own bound (_SearchSpec.max_loras_limit)


def read_cached(key: str, R: int, prof: Profile, base: ServerDefaults) -> dict[int, GpuConfig] | None:
    """Entries measured before: the tables shipped with packer, then the user's cache (same key).
    Only entries that pass ``trusted_rows`` are returned: the others are measured again."""
    found: dict[int, GpuConfig] = {}
    for path, source in ((_shipped_dir() / f"{key}.json", f"packer/data/capacity/{key}.json"),
                         (cache_dir() / f"{key}.json", None)):
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
            found.update(trusted_rows(rows, R, prof, base))
    return found or None


def trusted_rows(rows: list, R: int, prof: Profile, base: ServerDefaults) -> dict[int, GpuConfig]:
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


def write_cached(key: str, entries: dict[int, GpuConfig]) -> None:
    """Store a rank class's entries (atomically); a cache that cannot be written is warned about once."""
    path = cache_dir() / f"{key}.json"
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
