"""The on-disk store of a sweep: its directory's files, how they are written and how they are read back.

A sweep directory holds ``spec.json`` (the spec without n_samples, its fingerprint and n_samples; a
directory holds one sweep: ``claim_directory`` refuses another), ``chunk_00000.npz``, ... (the first
twin runs, ``chunk_size`` consecutive samples each) and, after ``replicate``, ``replicates_00000.npz``,
... (one per chunk). Every file is written to a temporary name and renamed, so a file that exists is
complete; a chunk whose file exists and carries the sweep's fingerprint (``SweepSpec.fingerprint``) and
its sample range is kept, so an interrupted run resumes. Chunk columns (one row per sample unless noted):

- ``index`` (int64), ``twin_seed`` (int64), ``features`` (float64, rows x features),
  ``feature_names`` (unicode, one per feature column) and ``features_code`` (the feature code's hash);
- ``throughput_tps`` (NaN on a memory error), ``offered_tps`` (nominal, ``query.offered_tps``),
  ``twin_offered_tps`` (what the twin drew), ``throughput_ratio`` (throughput_tps / offered_tps),
  ``twin_throughput_ratio`` (throughput_tps / twin_offered_tps, the twin's own ratio),
  ``starved``, ``starved_by_throughput``, ``queue_diverging``, ``memory_error`` (bool),
  ``mean_itl_ms``, ``mean_ttft_ms``, ``p99_ttft_ms``, ``worst_adapter_p99_ttft_ms`` (the worst adapter's
  p99 TTFT; not in sweeps written before it: a column missing from any chunk is left out; NaN where the
  twin reports none),
  ``twin_wall_s``;
- the query: ``adapter_offsets`` (int64, rows + 1) into ``adapter_ranks`` (int32) and
  ``adapter_rates`` (float64), and ``query_json`` (fixed-width unicode: profile, server, lengths,
  arrivals); ``query_from_dataset(ds, row)`` rebuilds the ``GpuQuery``;
- ``spec_json`` (a 0-d unicode array): the sweep's spec (without n_samples); ``fingerprint``.

Replicate files hold ``rep_index`` (the replicated samples), (samples x seeds) arrays ``rep_seeds``,
``rep_throughput_tps``, ``rep_twin_offered_tps``, ``rep_mean_itl_ms``, ``rep_starved``,
``rep_memory_error``, and ``fingerprint``, ``chunk_bounds``, ``replicate_spec_json``.

``load_dataset(dir)`` reads a directory back as one dict of arrays. Files load with
``numpy.load(..., allow_pickle=False)``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import InputError
from ...files import read_json, read_npz, write_json_atomic
from ...model import ArrivalSpec, LengthSpec, ServerConfig
from ..base import GpuQuery
from ..features import FEATURE_NAMES, features_code, features_many
from .spec import SweepSpec

__all__ = ["FLOAT_COLS", "BOOL_COLS", "chunk_path", "replicate_path", "chunk_ok", "replicate_ok", "write_npz",
           "claim_directory", "query_columns", "query_from_dataset", "load_dataset"]

FLOAT_COLS = ("throughput_tps", "offered_tps", "twin_offered_tps", "throughput_ratio", "twin_throughput_ratio",
              "mean_itl_ms", "mean_ttft_ms", "p99_ttft_ms", "worst_adapter_p99_ttft_ms", "twin_wall_s")
BOOL_COLS = ("starved", "starved_by_throughput", "queue_diverging", "memory_error")


def chunk_path(out_dir: Path, k: int) -> Path:
    """The file of chunk ``k``."""
    return out_dir / f"chunk_{k:05d}.npz"


def replicate_path(out_dir: Path, k: int) -> Path:
    """The replicate file of chunk ``k``."""
    return out_dir / f"replicates_{k:05d}.npz"


def chunk_ok(path: Path, spec: SweepSpec, start: int, stop: int) -> bool:
    """Whether ``path`` is a complete chunk of ``spec`` holding samples start..stop-1."""
    try:
        with np.load(path, allow_pickle=False) as z:
            idx = z["index"]
            return (str(z["fingerprint"]) == spec.fingerprint() and len(idx) == stop - start
                    and int(idx[0]) == start and int(idx[-1]) == stop - 1)
    except (OSError, KeyError, ValueError, IndexError, EOFError, zipfile.BadZipFile):
        return False  # a chunk cut short (a killed run) is run again


def replicate_ok(path: Path, fingerprint: str, start: int, stop: int) -> bool:
    """Whether ``path`` is a complete replicate file of ``fingerprint`` for the chunk start..stop-1."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["fingerprint"]) == fingerprint and z["chunk_bounds"].tolist() == [start, stop]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def write_npz(path: Path, cols: dict[str, np.ndarray]) -> None:
    """Write ``cols`` to ``path`` as a compressed NPZ, under a temporary name renamed when complete."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, **cols)
    os.replace(tmp, path)


def claim_directory(out: Path, spec: SweepSpec) -> None:
    """Create ``out`` and write its ``spec.json``; refuse a directory that holds another sweep."""
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "spec.json"
    meta = {"fingerprint": spec.fingerprint(), "spec": spec.to_dict(with_size=False)}
    if spec_file.is_file():
        old = read_json(spec_file, field="out_dir")
        old_fingerprint = old.get("fingerprint") if isinstance(old, dict) else None
        if old_fingerprint != meta["fingerprint"]:
            raise InputError("out_dir", f"{out} holds a different sweep (fingerprint {old_fingerprint} vs "
                             f"{meta['fingerprint']}); use another directory or empty this one")
    write_json_atomic(spec_file, {**meta, "n_samples": spec.n_samples}, indent=1, sort_keys=True)


def _query_json(q: GpuQuery) -> str:
    return json.dumps({"profile": q.profile.name, "server": q.server.model_dump(), "lengths": q.lengths.model_dump(),
                       "arrivals": q.arrivals.model_dump()}, sort_keys=True, separators=(",", ":"))


def query_columns(queries: Sequence[GpuQuery]) -> dict[str, np.ndarray]:
    """The query columns of a chunk (adapter offsets, ranks and rates, ``query_json``)."""
    sizes = np.array([q.num_adapters for q in queries], dtype=np.int64)
    offsets = np.zeros(len(queries) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return {
        "adapter_offsets": offsets,
        "adapter_ranks": np.array([r for q in queries for r in q.ranks], dtype=np.int32),
        "adapter_rates": np.array([r for q in queries for r in q.rates], dtype=np.float64),
        "query_json": np.array([_query_json(q) for q in queries]),
    }


def query_from_dataset(ds: dict[str, np.ndarray], row: int) -> GpuQuery:
    """The ``GpuQuery`` of dataset row ``row`` (as ``load_dataset`` returns it)."""
    from pydantic import TypeAdapter

    meta = json.loads(str(ds["query_json"][row]))
    a, b = int(ds["adapter_offsets"][row]), int(ds["adapter_offsets"][row + 1])
    arrivals = TypeAdapter(ArrivalSpec).validate_python(meta["arrivals"])
    return GpuQuery(meta["profile"], ServerConfig(**meta["server"]),
                    tuple(int(x) for x in ds["adapter_ranks"][a:b]), tuple(float(x) for x in ds["adapter_rates"][a:b]),
                    LengthSpec(**meta["lengths"]), arrivals)


def load_dataset(directory: str | os.PathLike, recompute_features: bool | None = None) -> dict[str, np.ndarray]:
    """All chunks of a sweep directory, concatenated in sample order (a dict of arrays).

    Per-row columns are concatenated; ``adapter_offsets`` is re-based; ``feature_names`` and
    ``spec_json`` are kept once. Features are recomputed from the stored queries when the chunks were
    written with other ``FEATURE_NAMES`` or by other feature code (``features_code``), or when
    ``recompute_features`` is true."""
    d = Path(directory)
    paths = sorted(d.glob("chunk_*.npz"))
    if not paths:
        raise InputError("dataset", f"no chunk_*.npz files in {d}; generate the sweep first")
    parts, fps = _read_parts(paths)
    if len(fps) > 1:
        raise InputError("dataset", f"{d} mixes chunks of different sweeps ({', '.join(sorted(fps))})")
    out: dict[str, np.ndarray] = {}
    per_row = [k for k in parts[0] if k not in ("feature_names", "features_code", "spec_json", "fingerprint",
                                                 "adapter_offsets", "adapter_ranks", "adapter_rates")
               and all(k in p for p in parts)]  # a column added since some chunks were written is left out
    for k in per_row:
        out[k] = np.concatenate([p[k] for p in parts])
    out["adapter_ranks"] = np.concatenate([p["adapter_ranks"] for p in parts])
    out["adapter_rates"] = np.concatenate([p["adapter_rates"] for p in parts])
    offs, base = [np.zeros(1, dtype=np.int64)], 0
    for p in parts:
        offs.append(p["adapter_offsets"][1:] + base)
        base += int(p["adapter_offsets"][-1])
    out["adapter_offsets"] = np.concatenate(offs)
    out["feature_names"] = parts[0]["feature_names"]
    out["spec_json"] = parts[0]["spec_json"]
    order = np.argsort(out["index"], kind="stable")
    if not np.array_equal(order, np.arange(len(order))):
        raise InputError("dataset", f"{d}: chunk rows are not in sample order")
    stale = (tuple(str(x) for x in out["feature_names"]) != FEATURE_NAMES
             or any(str(p.get("features_code", "")) != features_code() for p in parts))
    if recompute_features or (recompute_features is None and stale):
        out["features"] = features_many([query_from_dataset(out, i) for i in range(len(out["index"]))])
        out["feature_names"] = np.array(FEATURE_NAMES)
    out.update(_load_replicates(d, out["index"]))
    return out


def _read_parts(paths: Sequence[Path]) -> tuple[list[dict[str, np.ndarray]], set[str]]:
    """The arrays of each NPZ file, and the set of their fingerprints."""
    parts = [read_npz(p, field="dataset", required=("fingerprint",)) for p in paths]
    return parts, {str(p["fingerprint"]) for p in parts}


def _load_replicates(d: Path, index: np.ndarray) -> dict[str, np.ndarray]:
    """The ``rep_*`` columns of the directory's replicate files (none when there are none)."""
    paths = sorted(d.glob("replicates_*.npz"))
    if not paths:
        return {}
    parts, fps = _read_parts(paths)
    if len(fps) > 1:
        raise InputError("dataset", f"{d} mixes replicate files of different runs ({', '.join(sorted(fps))}); "
                         f"delete the replicates_*.npz files and replicate again")
    cols = [k for k in parts[0] if k.startswith("rep_")]
    out = {k: np.concatenate([p[k] for p in parts]) for k in cols}
    if not np.isin(out["rep_index"], index).all():
        raise InputError("dataset", f"{d}: replicate files name samples the sweep does not have; "
                         f"delete the replicates_*.npz files and replicate again")
    out["replicate_spec_json"] = parts[0]["replicate_spec_json"]
    return out
