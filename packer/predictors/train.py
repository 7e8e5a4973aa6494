"""Train the data-driven predictors on a twin sweep and export them (``tree`` and ``forest``).

``train(dataset_dir, profile, out_path)``:

1. loads the sweep (``dataset.load_dataset``) and, where the sweep has replicates, takes each
   replicated sample's outcome over all its runs (``dataset.consensus_labels``: mean throughput,
   majority ``starved``), so the models learn the twin's expected outcome rather than one run's
   luck; rows with a memory error are left out (the predictor answers those with the profile's
   exact memory check) and so are rows without a throughput;
2. splits the rows into train / validation / test (70 / 15 / 15 %, by sample, seeded);
3. fits scikit-learn candidates for three heads and keeps the best on the validation split:
   ``ratio`` (the twin's throughput / min(offered as the twin drew it, the fluid model's capacity);
   the predictor multiplies it by min(the expected offered load, that capacity) (``features.served_base``)
   and caps the product at the expected offered load; candidates: random
   forest, extra trees and histogram gradient boosting, each on the ratio and on its log; scored by
   the throughput's mean absolute relative error, MARE), ``starved`` (the twin's starvation flag; the same three families
   as classifiers; scored by F1) and ``itl`` (log mean inter-token latency; scored by MARE);
4. distils each chosen model into one decision tree: ``DecisionTreeRegressor`` /
   ``DecisionTreeClassifier`` with ``max_leaf_nodes`` in ``leaf_grid``, fitted on the training rows
   alone or on the training rows plus ``extra_rows`` freshly sampled queries (no twin run: only their
   features) labelled by the big model; the best by the same validation score is kept (the starved
   head may also be a regression tree on the big model's probability, thresholded at 0.5);
5. scores the big models and the trees on the test split and writes the tree model (JSON, see
   ``tree.py``) with the report in its ``training`` metadata; with ``forest_out``, also the big
   models themselves for the ``forest`` predictor (gradient boosting exported tree by tree; a random
   forest or extra trees refitted with at most ``forest_trees`` trees of depth ``forest_depth``).

The whole job (sweep, replicates, training, the capacity check of the exported models) is
``packer.capacity.training.build``, behind ``packer train``: the capacity check builds capacity tables, a
layer above the predictors. scikit-learn is needed only here, not by the predictors.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..errors import InputError
from ..profile import load_profile
from ..twin.fingerprint import twin_fingerprint
from ..twin.workload_gen import shipped_length_shapes
from .base import KEEP_UP_RATIO
from .dataset import SweepSpec, consensus_labels, load_dataset, sample_query
from .domain import Domain
from .features import FEATURE_NAMES, expected_offered, features_many, served_base
from .tree import Head, TreeModel, head_from_sklearn, save_model

__all__ = ["train", "mare", "f1"]


def mare(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute relative error over rows with a positive truth."""
    m = np.isfinite(true) & (true > 0) & np.isfinite(pred)
    return float(np.mean(np.abs(pred[m] - true[m]) / true[m])) if m.any() else float("nan")


def f1(pred: np.ndarray, true: np.ndarray) -> float:
    """F1 score of the positive class (1.0 when there are no positives and none is predicted)."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    tp = int(np.sum(pred & true))
    fp = int(np.sum(pred & ~true))
    fn = int(np.sum(~pred & true))
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise InputError("train", "training needs scikit-learn; install it with: pip install scikit-learn") from None
    from sklearn import ensemble, tree
    return ensemble, tree


def _regressors(seed: int, n_jobs: int) -> dict[str, Callable[[], Any]]:
    ens, _ = _sklearn()
    return {
        "random_forest": lambda: ens.RandomForestRegressor(n_estimators=200, min_samples_leaf=2, max_features=0.5,
                                                           n_jobs=n_jobs, random_state=seed),
        "extra_trees": lambda: ens.ExtraTreesRegressor(n_estimators=300, min_samples_leaf=2, max_features=0.7,
                                                       n_jobs=n_jobs, random_state=seed),
        "hist_gradient_boosting": lambda: ens.HistGradientBoostingRegressor(
            max_iter=600, learning_rate=0.05, max_leaf_nodes=31, min_samples_leaf=10, l2_regularization=1e-3,
            early_stopping=True, validation_fraction=0.1, n_iter_no_change=30, random_state=seed),
    }


def _classifiers(seed: int, n_jobs: int) -> dict[str, Callable[[], Any]]:
    ens, _ = _sklearn()
    return {
        "random_forest": lambda: ens.RandomForestClassifier(n_estimators=200, min_samples_leaf=1, max_features=0.5,
                                                            n_jobs=n_jobs, random_state=seed),
        "extra_trees": lambda: ens.ExtraTreesClassifier(n_estimators=300, min_samples_leaf=1, max_features=0.7,
                                                        n_jobs=n_jobs, random_state=seed),
        "hist_gradient_boosting": lambda: ens.HistGradientBoostingClassifier(
            max_iter=600, learning_rate=0.05, max_leaf_nodes=31, min_samples_leaf=10, l2_regularization=1e-3,
            early_stopping=True, validation_fraction=0.1, n_iter_no_change=30, random_state=seed),
    }


def _proba(model, X: np.ndarray) -> np.ndarray:
    p = model.predict_proba(X)
    classes = list(model.classes_)
    if True in classes:
        return p[:, classes.index(True)]
    return np.zeros(len(X)) if len(classes) == 1 else p[:, -1]


def extra_features(spec: SweepSpec, n: int, seed: int) -> np.ndarray:
    """Features of ``n`` queries sampled like ``spec`` (under another seed) that start (memory check)."""
    import dataclasses

    prof = load_profile(spec.profile)
    s2 = dataclasses.replace(spec, seed=spec.seed + 7919 + seed, n_samples=max(1, n))
    qs = []
    i = 0
    while len(qs) < n and i < 4 * n + 100:
        q = sample_query(s2, i)
        i += 1
        sv = q.server
        if prof.memory.startup_error(sv.max_loras, sv.max_lora_rank, sv.gpu_memory_utilization, sv.enable_lora) is None:
            qs.append(q)
    return features_many(qs)


def train(dataset_dir: str | Path, profile: str, out_path: str | Path, seed: int = 0, *,
          forest_out: str | Path | None = None, leaf_grid: Iterable[int] = (512, 1024, 2048, 4096),
          extra_rows: int = 300000, candidates: Iterable[str] | None = None, forest_trees: int = 32,
          forest_depth: int = 12, n_jobs: int = 1, use_replicates: bool = True,
          log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Fit, pick, distil, score and export; returns the report (also stored in the model file).

    ``n_jobs`` bounds scikit-learn's processes and OpenMP threads; ``use_replicates=False`` trains on
    each sample's first run even where the sweep has replicates."""
    _sklearn()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(max(1, n_jobs)):
        return _train(dataset_dir, profile, out_path, seed, forest_out=forest_out, leaf_grid=leaf_grid,
                      extra_rows=extra_rows, candidates=candidates, forest_trees=forest_trees,
                      forest_depth=forest_depth, n_jobs=n_jobs, use_replicates=use_replicates, log=log)


def _train(dataset_dir, profile, out_path, seed, *, forest_out, leaf_grid, extra_rows, candidates, forest_trees,
           forest_depth, n_jobs, use_replicates, log) -> dict[str, Any]:
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

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

    X_all = ds["features"]
    thr, twin_off = ds["throughput_tps"], ds["twin_offered_tps"]
    off = expected_offered(X_all, prof.client.output_len_scale)
    ok = ~ds["memory_error"] & np.isfinite(thr) & (off > 0) & np.isfinite(twin_off) & (twin_off > 0)
    idx = np.flatnonzero(ok)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(idx)
    n_tr, n_va = int(0.7 * len(perm)), int(0.15 * len(perm))
    tr, va, te = np.sort(perm[:n_tr]), np.sort(perm[n_tr:n_tr + n_va]), np.sort(perm[n_tr + n_va:])
    n_rep = int(np.sum(ds["runs"] > 1))
    say(f"{prof.name}: {len(ds['index'])} samples, {int(ds['memory_error'].sum())} memory errors, "
        f"{len(idx)} usable -> train {len(tr)} / validation {len(va)} / test {len(te)}; "
        f"{n_rep} labelled by {int(ds['runs'].max())} runs")

    lf = X_all[:, FEATURE_NAMES.index("load_factor")]
    base = served_base(off, lf)  # what the predictor multiplies its ratio by
    base_drawn = np.where(lf > 1.0, np.minimum(twin_off, base), twin_off)
    ratio = np.where(ok, thr / np.where(ok, base_drawn, 1.0), np.nan)  # throughput / min(drawn offered, capacity)
    bases = {"offered": off, "base": base, "base_drawn": base_drawn}
    starved = ds["starved"].astype(bool)
    itl = ds["mean_itl_ms"]
    has_itl = np.isfinite(itl) & (itl > 0)
    X = X_all

    def thr_mare(pred_ratio: np.ndarray, rows: np.ndarray) -> float:
        return mare(np.minimum(pred_ratio * base[rows], off[rows]), thr[rows])

    report: dict[str, Any] = {"profile": prof.name, "profile_fingerprint": prof.fingerprint(),
                              "dataset": {"dir": str(dataset_dir), "samples": int(len(ds["index"])),
                                          "memory_errors": int(ds["memory_error"].sum()),
                                          "usable": int(len(idx)), "twin_seconds": float(ds["twin_wall_s"].sum()),
                                          "duration_s": spec.duration_s, "warmup_s": spec.warmup_s,
                                          "spec_seed": spec.seed, "replicated": n_rep,
                                          "replicate_spec": replicate_spec},
                              "split": {"seed": seed, "train": int(len(tr)), "validation": int(len(va)),
                                        "test": int(len(te))},
                              "domain": Domain.from_sweep(spec_d).to_dict()}
    # The noise floor: at light load the throughput is what the twin drew, not its expectation.
    kept = te[~starved[te]]
    report["noise_floor_test"] = {"offered_draw_mare_not_starved": mare(off[kept], twin_off[kept])}

    # -- big models ------------------------------------------------------------------------------
    regs, clss = _regressors(seed, n_jobs), _classifiers(seed, n_jobs)
    names = list(candidates) if candidates is not None else list(regs)
    cand: dict[str, Any] = {"ratio": {}, "starved": {}, "itl": {}}
    best: dict[str, Any] = {}

    for name in names:
        for target in ("ratio", "log_ratio"):
            t0 = time.perf_counter()
            m = regs[name]()
            y = ratio[tr] if target == "ratio" else np.log(np.maximum(ratio[tr], 1e-4))
            m.fit(X[tr], y)
            pv = m.predict(X[va])
            pv = pv if target == "ratio" else np.exp(pv)
            score = thr_mare(pv, va)
            cand["ratio"][f"{name}/{target}"] = {"validation_mare": score, "fit_seconds": time.perf_counter() - t0}
            say(f"  ratio   {name:24s} {target:9s} validation throughput MARE {score:.4f}")
            if "ratio" not in best or score < best["ratio"][0]:
                best["ratio"] = (score, f"{name}/{target}", m, target)
    for name in names:
        t0 = time.perf_counter()
        m = clss[name]()
        m.fit(X[tr], starved[tr])
        score = f1(_proba(m, X[va]) > 0.5, starved[va])
        cand["starved"][name] = {"validation_f1": score, "fit_seconds": time.perf_counter() - t0}
        say(f"  starved {name:24s} validation F1 {score:.4f}")
        if "starved" not in best or score > best["starved"][0]:
            best["starved"] = (score, name, m, "proba")
    tr_i, va_i = tr[has_itl[tr]], va[has_itl[va]]
    for name in names:
        t0 = time.perf_counter()
        m = regs[name]()
        m.fit(X[tr_i], np.log(itl[tr_i]))
        score = mare(np.exp(m.predict(X[va_i])), itl[va_i])
        cand["itl"][name] = {"validation_mare": score, "fit_seconds": time.perf_counter() - t0}
        say(f"  itl     {name:24s} validation MARE {score:.4f}")
        if "itl" not in best or score < best["itl"][0]:
            best["itl"] = (score, name, m, "log")
    report["candidates"] = cand
    report["chosen"] = {h: best[h][1] for h in best}

    def full_ratio(rows_X: np.ndarray) -> np.ndarray:
        _, _, m, target = best["ratio"]
        p = m.predict(rows_X)
        return p if target == "ratio" else np.exp(p)

    def full_starved_p(rows_X: np.ndarray) -> np.ndarray:
        return _proba(best["starved"][2], rows_X)

    def full_itl(rows_X: np.ndarray) -> np.ndarray:
        return np.exp(best["itl"][2].predict(rows_X))

    # -- distillation ----------------------------------------------------------------------------
    t0 = time.perf_counter()
    Xe = extra_features(spec, extra_rows, seed) if extra_rows > 0 else np.empty((0, X.shape[1]))
    report["distillation"] = {"extra_rows": int(len(Xe)), "extra_seconds": time.perf_counter() - t0}
    say(f"  distilling on {len(tr)} training rows + {len(Xe)} sampled feature rows labelled by the big models")
    log_ratio = best["ratio"][3] == "log_ratio"

    def ratio_target(r: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(r, 1e-4)) if log_ratio else r

    X_aug = np.vstack([X[tr], Xe])
    teacher_ratio = ratio_target(full_ratio(X_aug))
    teacher_p = full_starved_p(X_aug)
    teacher_itl = np.log(full_itl(X_aug))
    X_aug_itl = np.vstack([X[tr_i], Xe])
    teacher_itl_aug = np.concatenate([np.log(full_itl(X[tr_i])), teacher_itl[len(tr):]])

    trees: dict[str, tuple] = {}
    dist_scores: dict[str, dict] = {"ratio": {}, "starved": {}, "itl": {}}
    for L in leaf_grid:
        variants = {
            "labels": (X[tr], ratio_target(ratio[tr])),
            "teacher+extra": (X_aug, teacher_ratio),
        }
        for vname, (Xf, yf) in variants.items():
            dt = DecisionTreeRegressor(max_leaf_nodes=L, min_samples_leaf=3, random_state=seed).fit(Xf, yf)
            pv = dt.predict(X[va])
            score = thr_mare(np.exp(pv) if log_ratio else pv, va)
            dist_scores["ratio"][f"{L}/{vname}"] = score
            if "ratio" not in trees or score < trees["ratio"][0]:
                trees["ratio"] = (score, f"{L}/{vname}", dt)
        for vname, (Xf, yf, kind) in {
            "labels": (X[tr], starved[tr], "classifier"),
            "teacher+extra": (X_aug, teacher_p > 0.5, "classifier"),
            "teacher_proba+extra": (X_aug, teacher_p, "regressor"),
        }.items():
            if kind == "classifier":
                dt = DecisionTreeClassifier(max_leaf_nodes=L, min_samples_leaf=3, random_state=seed).fit(Xf, yf)
                pv = _proba(dt, X[va]) > 0.5
            else:
                dt = DecisionTreeRegressor(max_leaf_nodes=L, min_samples_leaf=3, random_state=seed).fit(Xf, yf)
                pv = dt.predict(X[va]) > 0.5
            score = f1(pv, starved[va])
            dist_scores["starved"][f"{L}/{vname}"] = score
            if "starved" not in trees or score > trees["starved"][0]:
                trees["starved"] = (score, f"{L}/{vname}", dt)
        for vname, (Xf, yf) in {"labels": (X[tr_i], np.log(itl[tr_i])),
                                "teacher+extra": (X_aug_itl, teacher_itl_aug)}.items():
            dt = DecisionTreeRegressor(max_leaf_nodes=L, min_samples_leaf=3, random_state=seed).fit(Xf, yf)
            score = mare(np.exp(dt.predict(X[va_i])), itl[va_i])
            dist_scores["itl"][f"{L}/{vname}"] = score
            if "itl" not in trees or score < trees["itl"][0]:
                trees["itl"] = (score, f"{L}/{vname}", dt)
        say(f"    {L:4d} leaves: ratio MARE {min(v for k, v in dist_scores['ratio'].items() if k.startswith(f'{L}/')):.4f}"
            f"  starved F1 {max(v for k, v in dist_scores['starved'].items() if k.startswith(f'{L}/')):.4f}"
            f"  itl MARE {min(v for k, v in dist_scores['itl'].items() if k.startswith(f'{L}/')):.4f}")
    report["distillation"].update({"validation": dist_scores, "chosen": {h: trees[h][1] for h in trees},
                                   "seconds": time.perf_counter() - t0})

    heads = {
        "ratio": head_from_sklearn(trees["ratio"][2], "exp" if log_ratio else "identity"),
        "starved": head_from_sklearn(trees["starved"][2]),
        "itl": head_from_sklearn(trees["itl"][2], "exp"),
    }
    model = TreeModel(prof.name, FEATURE_NAMES, heads, "tree", prof.fingerprint(), ratio_base="served",
                      length_shapes=shipped_length_shapes(), twin_fingerprint=twin_fingerprint(prof))

    # -- test scores -----------------------------------------------------------------------------
    te_i = te[has_itl[te]]
    full_test = _scores(full_ratio(X[te]), full_starved_p(X[te]) > 0.5, full_itl(X[te_i]), te, te_i, ds, bases)
    tree_out = model.predict_batch(X[te])
    tree_itl = model.predict_batch(X[te_i])["itl"]
    tree_test = _scores(tree_out["ratio"], tree_out["starved"] > 0.5, tree_itl, te, te_i, ds, bases)
    report["test"] = {"full": full_test, "tree": tree_test}
    report["tree"] = model.sizes()
    say(f"  test  full : throughput MARE {full_test['throughput_mare']:.4f}  starved F1 {full_test['starved_f1']:.4f}"
        f"  itl MARE {full_test['itl_mare']:.4f}")
    say(f"  test  tree : throughput MARE {tree_test['throughput_mare']:.4f}  starved F1 {tree_test['starved_f1']:.4f}"
        f"  itl MARE {tree_test['itl_mare']:.4f}")

    # -- forest ----------------------------------------------------------------------------------
    if forest_out is not None:
        report["forest"] = _export_forest(best, tr, tr_i, X, ratio, starved, itl, log_ratio, te, has_itl, ds, bases,
                                          seed, n_jobs, forest_trees, forest_depth, prof, forest_out, say)

    report["seconds"] = time.perf_counter() - t_start
    model.training = report
    save_model(model, out_path)
    report["out_path"] = str(out_path)
    say(f"  wrote {out_path}")
    return report


def _scores(ratio_pred: np.ndarray, starved_pred: np.ndarray, itl_pred: np.ndarray, rows: np.ndarray,
            itl_rows: np.ndarray, ds: dict, bases: dict[str, np.ndarray]) -> dict[str, float]:
    """Test scores. ``throughput_mare`` compares the prediction (from the query alone) with one seeded
    twin run, so it includes the run's own sampling noise; ``throughput_mare_given_arrivals`` scales the
    predicted ratio by the load the run actually drew instead (the predictor's modelling error)."""
    thr, off, starved = ds["throughput_tps"][rows], bases["offered"][rows], ds["starved"][rows].astype(bool)
    twin_off = ds["twin_offered_tps"][rows]
    twin_ratio = thr / twin_off
    # the capacity model's criterion (Prediction.keeps_up): not starved and ratio >= KEEP_UP_RATIO
    keep_true = ~starved & (twin_ratio >= KEEP_UP_RATIO)
    bursty = ds["features"][rows, FEATURE_NAMES.index("arrival_sigma")] > 0
    bursty |= ds["features"][rows, FEATURE_NAMES.index("arrival_cv")] != 1.0
    pred_thr = np.minimum(ratio_pred * bases["base"][rows], off)
    pred_thr_drawn = np.minimum(ratio_pred * bases["base_drawn"][rows], twin_off)
    ratio_pred = pred_thr / off  # throughput / expected offered, as the predictor reports it
    keep_pred = ~np.asarray(starved_pred, bool) & (ratio_pred >= KEEP_UP_RATIO)
    out = {"rows": int(len(rows)), "throughput_mare": mare(pred_thr, thr),
           "throughput_mare_given_arrivals": mare(pred_thr_drawn, thr),
           "throughput_mare_given_arrivals_poisson": mare(pred_thr_drawn[~bursty], thr[~bursty]),
           "throughput_mare_given_arrivals_bursty": mare(pred_thr_drawn[bursty], thr[bursty]),
           "throughput_mare_poisson": mare(pred_thr[~bursty], thr[~bursty]),
           "throughput_mare_bursty": mare(pred_thr[bursty], thr[bursty]),
           "throughput_mare_not_starved": mare(pred_thr[~starved], thr[~starved]),
           "throughput_mare_starved": mare(pred_thr[starved], thr[starved]),
           "ratio_mae": float(np.mean(np.abs(ratio_pred - twin_ratio))),
           "keep_up_accuracy": float(np.mean(keep_pred == keep_true)), "keep_up_f1": f1(keep_pred, keep_true),
           "starved_f1": f1(starved_pred, starved), "starved_accuracy": float(np.mean(starved_pred == starved)),
           "starved_f1_poisson": f1(starved_pred[~bursty], starved[~bursty]),
           "starved_f1_bursty": f1(starved_pred[bursty], starved[bursty]),
           "itl_mare": mare(itl_pred, ds["mean_itl_ms"][itl_rows])}
    return out


def _export_forest(best, tr, tr_i, X, ratio, starved, itl, log_ratio, te, has_itl, ds, bases, seed, n_jobs, n_trees,
                   depth, prof, out, say, forest_min_leaf: int = 5) -> dict:
    """The chosen big models as one ensemble model: gradient boosting exported tree by tree; a random
    forest / extra trees refitted with at most ``n_trees`` trees of depth at most ``depth`` and leaves
    of at least ``forest_min_leaf`` rows (which keeps the file near a megabyte)."""
    ens, _ = _sklearn()
    capped = {"random_forest": (ens.RandomForestRegressor, ens.RandomForestClassifier, 0.5),
              "extra_trees": (ens.ExtraTreesRegressor, ens.ExtraTreesClassifier, 0.7)}

    def export(head: str, transform: str, rows, y, classify: bool) -> Head:
        family = best[head][1].split("/")[0]
        m = best[head][2]
        if family in capped:
            R, C, mf = capped[family]
            cls = C if classify else R
            m = cls(n_estimators=n_trees, max_depth=depth, min_samples_leaf=forest_min_leaf, max_features=mf,
                    n_jobs=n_jobs, random_state=seed).fit(X[rows], y)
            return head_from_sklearn(m, transform)
        return head_from_sklearn(m, "sigmoid" if classify else transform)

    heads = {
        "ratio": export("ratio", "exp" if log_ratio else "identity", tr,
                        np.log(np.maximum(ratio[tr], 1e-4)) if log_ratio else ratio[tr], False),
        "starved": export("starved", "identity", tr, starved[tr], True),
        "itl": export("itl", "exp", tr_i, np.log(itl[tr_i]), False),
    }
    model = TreeModel(prof.name, FEATURE_NAMES, heads, "forest", prof.fingerprint(), ratio_base="served",
                      length_shapes=shipped_length_shapes(), twin_fingerprint=twin_fingerprint(prof))
    te_i = te[has_itl[te]]
    o = model.predict_batch(X[te])
    scores = _scores(o["ratio"], o["starved"] > 0.5, model.predict_batch(X[te_i])["itl"], te, te_i, ds, bases)
    say(f"  test  forest: throughput MARE {scores['throughput_mare']:.4f}  starved F1 {scores['starved_f1']:.4f}"
        f"  itl MARE {scores['itl_mare']:.4f}")
    rep = {"families": {h: best[h][1] for h in best}, "capped_trees": n_trees, "capped_depth": depth,
           "capped_min_leaf": forest_min_leaf,
           "test": scores, "sizes": model.sizes(), "out_path": str(out)}
    model.training = {"profile": prof.name, "forest": rep,
                      "domain": Domain.from_sweep(json.loads(str(ds["spec_json"]))).to_dict()}
    save_model(model, out)
    say(f"  wrote {out}")
    return rep
