"""Replicates: more twin runs of a sweep's ambiguous samples, and the consensus labels made from them.

Near the starvation boundary one twin run is a noisy label (a bursty run's label depends on which
bursts its window drew; a run at the knee on whether its queue happened to grow). Samples that look
ambiguous from their first run (see ``ReplicateSpec``) are run again with ``seeds`` more workload seeds
by ``replicate(spec, out_dir, ReplicateSpec(...))``, into one replicate file per chunk (``store.py``,
same resumability). ``load_dataset`` returns their ``rep_*`` columns as they are, and
``consensus_labels(ds)`` replaces the outcome columns of replicated samples by the mean (throughput,
drawn offered load, ITL) and the majority (starved) over all their runs: the twin's expected outcome,
which training learns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...files import read_npz
from .runs import SweepProgress, chunk_bounds, executor_name, pick_executor, run_jobs, run_query
from .spec import SweepSpec
from .store import BOOL_COLS, chunk_ok, chunk_path, query_from_dataset, replicate_ok, replicate_path, write_npz

__all__ = ["ReplicateSpec", "replicate", "consensus_labels"]

_REP_COLS = ("throughput_tps", "twin_offered_tps", "mean_itl_ms", "starved", "memory_error")


@dataclass(frozen=True)
class ReplicateSpec:
    """Which samples get more twin runs, and how many.

    A sample is replicated when it started and its first run was ambiguous: bursty arrivals with a
    load factor (offered / fluid capacity) in ``bursty_load_range``, or a throughput ratio (the twin's
    own: throughput / what it drew) in ``ratio_range``, or a queue that diverged while the ratio
    stayed at or above the starvation ratio. The defaults pick about a fifth of a sweep and, in a
    five-seed pilot on 1,200 samples of the Llama sweep, 87 % of the samples whose seeds disagree."""

    seeds: int = 4
    bursty_load_range: tuple[float, float] = (0.3, 1.5)
    ratio_range: tuple[float, float] = (0.85, 0.99)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise InputError("seeds", f"replicates need >= 1 extra seed (got {self.seeds}); use no ReplicateSpec "
                             f"for none")
        for name in ("bursty_load_range", "ratio_range"):
            lo, hi = getattr(self, name)
            if not (0 <= lo < hi):
                raise InputError(name, f"needs 0 <= low < high (got {(lo, hi)})")

    def fingerprint(self, spec: SweepSpec) -> str:
        """The base sweep's fingerprint joined with this spec: what a replicate file was made from."""
        blob = json.dumps({"sweep": spec.fingerprint(), "replicates": dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def select(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """Row positions of a chunk (its first-run columns) to replicate."""
        from ...twin.engine import STARVED_RATIO

        X = cols["features"]
        names = [str(x) for x in cols["feature_names"]]
        lf = X[:, names.index("load_factor")]
        bursty = np.array([json.loads(str(q))["arrivals"]["kind"] == "bursty" for q in cols["query_json"]])
        r = cols["twin_throughput_ratio"]
        with np.errstate(invalid="ignore"):
            pick = bursty & (lf >= self.bursty_load_range[0]) & (lf < self.bursty_load_range[1])
            pick |= (r >= self.ratio_range[0]) & (r < self.ratio_range[1])
            pick |= cols["queue_diverging"].astype(bool) & (r >= STARVED_RATIO)
        return np.flatnonzero(pick & ~cols["memory_error"].astype(bool))


def _replicate_seed(spec: SweepSpec, i: int, k: int) -> int:
    """Workload seed of replicate k (1, 2, ...) of sample i."""
    return int(np.random.SeedSequence([spec.seed, i, k]).generate_state(1)[0])


def _replicate_chunk(spec: SweepSpec, rspec: ReplicateSpec, out_dir: str, k: int) -> int:
    """Replicate the ambiguous samples of base chunk k; returns the number of twin runs."""
    from ...twin.engine import warm_up

    warm_up()
    cols = read_npz(chunk_path(Path(out_dir), k), field="dataset", required=("index",))
    rows = rspec.select(cols)
    idx = cols["index"][rows]
    S = rspec.seeds
    out: dict[str, np.ndarray] = {"rep_index": idx.astype(np.int64),
                                  "rep_seeds": np.zeros((len(idx), S), dtype=np.int64)}
    for c in _REP_COLS:
        out[f"rep_{c}"] = np.zeros((len(idx), S), dtype=bool if c in BOOL_COLS else np.float64)
    for j, i in enumerate(idx):
        q = query_from_dataset(cols, int(rows[j]))
        for kk in range(S):
            seed = _replicate_seed(spec, int(i), kk + 1)
            r = run_query(q, spec.duration_s, seed, spec.warmup_s)
            out["rep_seeds"][j, kk] = seed
            for c in _REP_COLS:
                out[f"rep_{c}"][j, kk] = r[c]
    out["fingerprint"] = np.array(rspec.fingerprint(spec))
    out["chunk_bounds"] = np.array([int(cols["index"][0]), int(cols["index"][-1]) + 1], dtype=np.int64)
    out["replicate_spec_json"] = np.array(json.dumps(dataclasses.asdict(rspec), sort_keys=True))
    write_npz(replicate_path(Path(out_dir), k), out)
    return len(idx) * S


def replicate(spec: SweepSpec, out_dir: str | os.PathLike, rspec: ReplicateSpec | None = None,
              workers: int | None = None, executor: "str | Executor" = "process", progress: bool = True,
              chunk_size: int = 256, ray_address: str | None = None) -> dict[str, Any]:
    """Run the ambiguous samples of a generated sweep again (``rspec.seeds`` more seeds each) and write
    ``replicates_*.npz`` next to its chunks (complete files are kept: resumable). ``chunk_size`` must
    be the one the sweep was generated with. Returns a summary (samples replicated, runs, seconds)."""
    rspec = rspec or ReplicateSpec()
    bounds = chunk_bounds(spec, chunk_size)
    pick_executor(executor, workers, 0)  # a bad name is refused before anything runs
    out = Path(out_dir)
    missing = [k for k, s, e in bounds if not chunk_ok(chunk_path(out, k), spec, s, e)]
    if missing:
        raise InputError("dataset", f"{out}: {len(missing)} sweep chunks are missing or stale (first: "
                         f"{chunk_path(out, missing[0]).name}); generate the sweep before replicating it")
    fp = rspec.fingerprint(spec)
    todo = [k for k, s, e in bounds if not replicate_ok(replicate_path(out, k), fp, s, e)]
    executor, n_workers = pick_executor(executor, workers, len(todo))
    t0 = time.perf_counter()
    with SweepProgress(progress, spec, len(bounds), len(bounds) - len(todo), "replicates (chunks)") as advance:
        run_jobs(_replicate_chunk, [(spec, rspec, str(out), k) for k in todo], executor, n_workers,
                 lambda _runs: advance(1), ray_address)
    n_rep = 0
    for k, _, _ in bounds:
        n_rep += len(read_npz(replicate_path(out, k), field="dataset", required=("rep_index",))["rep_index"])
    return {"replicated_samples": n_rep, "seeds": rspec.seeds, "runs": n_rep * rspec.seeds,
            "chunks_run": len(todo), "chunks_skipped": len(bounds) - len(todo),
            "seconds": time.perf_counter() - t0, "executor": executor_name(executor)}


def consensus_labels(ds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``ds`` with each replicated sample's outcome columns taken over all its runs (a new dict;
    ``ds`` is not changed): mean ``throughput_tps``, ``twin_offered_tps`` and ``mean_itl_ms`` (over
    the runs that have one), majority ``starved`` (a tie counts as starved), and the ratios
    recomputed from those; ``runs`` counts the runs behind each row. Without replicates, ``runs`` is
    all ones and the rest is unchanged."""
    out = dict(ds)
    n = len(ds["index"])
    out["runs"] = np.ones(n, dtype=np.int64)
    if "rep_index" not in ds or len(ds["rep_index"]) == 0:
        return out
    rows = np.searchsorted(ds["index"], ds["rep_index"])
    first_ok = ~ds["memory_error"][rows]
    rep_ok = ~ds["rep_memory_error"] & first_ok[:, None]
    for c in ("throughput_tps", "twin_offered_tps", "mean_itl_ms"):
        runs = np.column_stack([ds[c][rows], np.where(rep_ok, ds[f"rep_{c}"], np.nan)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (no run has an ITL)
            mean = np.nanmean(runs, axis=1)
        col = ds[c].copy()
        col[rows] = mean  # NaN only where every run, the first included, has none
        out[c] = col
    votes = ds["starved"][rows].astype(int) + np.sum(ds["rep_starved"] & rep_ok, axis=1)
    n_runs = 1 + np.sum(rep_ok, axis=1)
    starved = ds["starved"].copy()
    starved[rows] = 2 * votes >= n_runs
    out["starved"] = starved
    out["runs"][rows] = n_runs
    with np.errstate(invalid="ignore", divide="ignore"):
        out["throughput_ratio"] = out["throughput_tps"] / ds["offered_tps"]
        out["twin_throughput_ratio"] = out["throughput_tps"] / out["twin_offered_tps"]
    return out
