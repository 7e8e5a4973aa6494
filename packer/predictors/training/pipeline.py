"""The training job: ``train(dataset_dir, profile, out_path)`` fits the data-driven predictors on a
twin sweep and exports them (``tree`` and ``forest``).

1. loads the sweep (``store.load_dataset``) and, where the sweep has replicates, takes each
   replicated sample's outcome over all its runs (``replicates.consensus_labels``: mean throughput,
   majority ``starved``), so the models learn the twin's expected outcome rather than one run's luck;
2. makes the targets and the train / validation / test split (``labels.py``);
3. fits the scikit-learn candidates of every head (the latency heads the sweep has columns for) and keeps the best on the validation split
   (``fit.py``);
4. distils each chosen model into one decision tree (``distill.py``);
5. scores the big models and the trees on the test split (``scores.py``) and writes the tree model
   (JSON, see ``tree_io.py``) with the report in its ``training`` metadata; with ``forest_out``, also
   the big models themselves for the ``forest`` predictor (``export.py``).

The whole job (sweep, replicates, training, the capacity check of the exported models) is
``packer.capacity.training.build``, behind ``packer train``: the capacity check builds capacity tables, a
layer above the predictors.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ...errors import InputError
from ...profile import load_profile
from ..domain import Domain
from ..tree_io import save_model
from .distill import distill
from .export import export_forest, predictor_model
from .fit import fit_big_models, require_sklearn
from .labels import make_labels
from .replicates import consensus_labels
from .scores import latency_predictions, mare, score_line, scores_on_test
from .spec import SweepSpec
from .store import load_dataset

__all__ = ["train"]


def train(dataset_dir: str | Path, profile: str, out_path: str | Path, seed: int = 0, *,
          forest_out: str | Path | None = None, leaf_grid: Iterable[int] = (512, 1024, 2048, 4096),
          extra_rows: int = 300000, candidates: Iterable[str] | None = None, forest_trees: int = 32,
          forest_depth: int = 12, n_jobs: int = 1, use_replicates: bool = True,
          log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Fit, pick, distil, score and export; returns the report (also stored in the model file).

    ``n_jobs`` bounds scikit-learn's processes and OpenMP threads; ``use_replicates=False`` trains on
    each sample's first run even where the sweep has replicates."""
    require_sklearn()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(max(1, n_jobs)):
        return _train(dataset_dir, profile, out_path, seed, forest_out=forest_out, leaf_grid=leaf_grid,
                      extra_rows=extra_rows, candidates=candidates, forest_trees=forest_trees,
                      forest_depth=forest_depth, n_jobs=n_jobs, use_replicates=use_replicates, log=log)


def _train(dataset_dir, profile, out_path, seed, *, forest_out, leaf_grid, extra_rows, candidates, forest_trees,
           forest_depth, n_jobs, use_replicates, log) -> dict[str, Any]:
    say = log or (lambda s: None)
    t_start = time.perf_counter()
    prof = load_profile(profile)
    ds = load_dataset(dataset_dir)
    if not use_replicates:  # the replicate columns (rep_*, replicate_spec_json) are dropped
        ds = {k: v for k, v in ds.items() if not k.startswith("rep")}
    replicate_spec = json.loads(str(ds["replicate_spec_json"])) if "rep_index" in ds else None
    ds = consensus_labels(ds)
    spec_d = json.loads(str(ds["spec_json"]))
    if spec_d["profile"] != prof.name:
        raise InputError("profile", f"the sweep in {dataset_dir} is for profile {spec_d['profile']!r}, not {prof.name!r}")
    spec = SweepSpec(**{k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
                        for k, v in spec_d.items()}, n_samples=len(ds["index"]))

    lab = make_labels(ds, prof, seed)
    tr, va, te = lab.train, lab.val, lab.test
    n_rep = int(np.sum(ds["runs"] > 1))
    say(f"{prof.name}: {len(ds['index'])} samples, {int(ds['memory_error'].sum())} memory errors, "
        f"{len(lab.usable)} usable -> train {len(tr)} / validation {len(va)} / test {len(te)}; "
        f"{n_rep} labelled by {int(ds['runs'].max())} runs")
    domain = Domain.from_sweep(spec_d).to_dict()
    report: dict[str, Any] = {"profile": prof.name, "profile_fingerprint": prof.fingerprint(),
                              "dataset": {"dir": str(dataset_dir), "samples": int(len(ds["index"])),
                                          "memory_errors": int(ds["memory_error"].sum()),
                                          "usable": int(len(lab.usable)),
                                          "twin_seconds": float(ds["twin_wall_s"].sum()),
                                          "duration_s": spec.duration_s, "warmup_s": spec.warmup_s,
                                          "spec_seed": spec.seed, "replicated": n_rep,
                                          "replicate_spec": replicate_spec},
                              "split": {"seed": seed, "train": int(len(tr)), "validation": int(len(va)),
                                        "test": int(len(te))},
                              "domain": domain}
    # The noise floor: at light load the throughput is what the twin drew, not its expectation.
    kept = te[~lab.starved[te]]
    report["noise_floor_test"] = {"offered_draw_mare_not_starved": mare(lab.offered[kept], lab.twin_off[kept])}

    big = fit_big_models(lab, seed, n_jobs, candidates, say)
    report["candidates"] = big.candidates
    report["chosen"] = {h: big.best[h][1] for h in big.best}

    heads, report["distillation"] = distill(big, lab, spec, extra_rows, leaf_grid, seed, say)
    model = predictor_model(prof, heads, "tree")

    X = lab.X
    full_test = scores_on_test(lab, big.ratio(X[te]), big.starved_p(X[te]) > 0.5, latency_predictions(big, lab))
    tree_out = model.predict_batch(X[te])
    tree_test = scores_on_test(lab, tree_out["ratio"], tree_out["starved"] > 0.5, latency_predictions(model, lab))
    report["test"] = {"full": full_test, "tree": tree_test}
    report["tree"] = model.sizes()
    say(f"  test  full : {score_line(full_test)}")
    say(f"  test  tree : {score_line(tree_test)}")

    if forest_out is not None:
        report["forest"] = export_forest(big, lab, seed, n_jobs, forest_trees, forest_depth, prof, domain,
                                         forest_out, say)

    report["seconds"] = time.perf_counter() - t_start
    model.training = report
    save_model(model, out_path)
    report["out_path"] = str(out_path)
    say(f"  wrote {out_path}")
    return report
