"""Training the fast predictors with the capacity check that keeps them honest: ``build`` runs the twin
sweep and its replicates (resumable), trains the tree (and forest) models on it
(``packer.predictors.training.train``) and compares the capacity tables built with the exported models
against the twin's (``capacity_check``: the test split scores random GPUs, while solvers only ask near
the keep-up knee). ``packer train`` is this ``build``."""

from __future__ import annotations

import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import InputError
from ..model import LengthSpec, PoissonArrivals, ServerDefaults
from ..predictors.base import DEFAULT_DURATION_S, DEFAULT_WARMUP_S
from ..predictors.training import ReplicateSpec, SweepSpec, generate, replicate, train
from ..predictors.tree import ForestPredictor, TreePredictor
from ..predictors.tree_io import load_model, save_model
from ..predictors.twin import TwinPredictor
from ..profile import load_profile
from .build import build_capacity_model

__all__ = ["build", "capacity_check"]


def capacity_check(profile: str, models: dict[str, Any], ranks: Iterable[int] = (8, 32), max_count: int = 256,
                   workers: int | None = None, duration_s: float = DEFAULT_DURATION_S,
                   warmup_s: float = DEFAULT_WARMUP_S, executor: "str | Executor | None" = None,
                   ray_address: str | None = None) -> dict[str, Any]:
    """Compare the capacity tables (default lengths, Poisson, default server)
    built with each of ``models`` (name -> ``Predictor``) against the twin's.

    Per model: the mean and largest absolute relative difference of the capacity over every
    (rank class, adapter count) grid entry, and the mean signed difference (negative: pessimistic)."""
    def table(pred) -> dict:
        cm = build_capacity_model(pred, profile, LengthSpec(), PoissonArrivals(), ServerDefaults(), list(ranks), max_count,
                                  workers=workers, cache=False, executor=executor, ray_address=ray_address)
        return {(c.max_lora_rank, c.max_adapters): c.capacity_tps for c in cm.configs}

    t0 = time.perf_counter()
    ref = table(TwinPredictor(duration_s=duration_s, warmup_s=warmup_s))
    out: dict[str, Any] = {"ranks": list(ranks), "max_count": max_count, "twin_seconds": time.perf_counter() - t0}
    for name, pred in models.items():
        t0 = time.perf_counter()
        got = table(pred)
        rel = np.array([got.get(k, 0.0) / v - 1.0 for k, v in ref.items() if v > 0])
        out[name] = {"mean_abs_rel_diff": float(np.mean(np.abs(rel))), "max_abs_rel_diff": float(np.max(np.abs(rel))),
                     "mean_rel_diff": float(np.mean(rel)), "entries": int(len(rel)),
                     "seconds": time.perf_counter() - t0}
    return out




def build(profile: str, samples: int, dataset_dir: str | Path, out_path: str | Path, *, seed: int = 0,
          workers: int | None = None, forest_out: str | Path | None = None,
          duration_s: float = DEFAULT_DURATION_S, warmup_s: float = DEFAULT_WARMUP_S,
          chunk_size: int = 256, executor: "str | Executor" = "process", progress: bool = True,
          check_capacity: bool = True, replicates: int = 4, ray_address: str | None = None,
          **train_kw) -> dict[str, Any]:
    """Generate (or resume) the sweep for ``profile`` in ``dataset_dir``, run ``replicates`` more
    seeds of its ambiguous samples (``ReplicateSpec``; 0: none), ``train`` on it and (with
    ``check_capacity``) compare the capacity tables of the exported models with the twin's."""
    if replicates < 0:
        raise InputError("replicates", f"must be >= 0 extra seeds (got {replicates})")
    spec = SweepSpec(profile=load_profile(profile).name, n_samples=samples, seed=seed, duration_s=duration_s,
                     warmup_s=warmup_s)
    gen = generate(spec, dataset_dir, workers=workers, chunk_size=chunk_size, executor=executor, progress=progress,
                   ray_address=ray_address)
    if replicates:
        gen["replicates"] = replicate(spec, dataset_dir, ReplicateSpec(seeds=replicates), workers=workers,
                                      executor=executor, progress=progress, chunk_size=chunk_size,
                                      ray_address=ray_address)
    rep = train(dataset_dir, spec.profile, out_path, seed=seed, forest_out=forest_out, use_replicates=replicates > 0,
                **train_kw)
    rep["generation"] = gen
    if check_capacity:
        models = {"tree": TreePredictor(model=out_path)}
        if forest_out is not None:
            models["forest"] = ForestPredictor(model=forest_out)
        rep["capacity_check"] = capacity_check(spec.profile, models, workers=workers, duration_s=duration_s,
                                               warmup_s=warmup_s, executor=executor if executor != "process" else None,
                                               ray_address=ray_address)
        m = load_model(out_path)
        m.training = {**m.training, "generation": gen, "capacity_check": rep["capacity_check"]}
        save_model(m, out_path)
    return rep
