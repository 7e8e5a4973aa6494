"""Distillation: each chosen big model becomes one decision tree per head (the latency heads' trees on
their own rows, ``labels.Labels.rows``; the TTFT heads' extra rows only those the teacher calls not starved).

``DecisionTreeRegressor`` / ``DecisionTreeClassifier`` with ``max_leaf_nodes`` in ``leaf_grid``, fitted
on the training rows alone or on the training rows plus ``extra_rows`` freshly sampled queries (no twin
run: only their features) labelled by the big model; the best by the head's validation score is kept
(the starved head may also be a regression tree on the big model's probability, thresholded at 0.5).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable

import numpy as np

from ...profile import load_profile
from ..features import features_many
from ..tree_export import head_from_sklearn
from ..tree_model import Head
from .fit import BigModels, proba
from .labels import NOT_STARVED_ONLY, Labels
from .scores import f1, mare, throughput_mare
from .spec import SweepSpec, sample_query

__all__ = ["extra_features", "distill"]


def extra_features(spec: SweepSpec, n: int, seed: int) -> np.ndarray:
    """Features of ``n`` queries sampled like ``spec`` (under another seed) that start (memory check)."""
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


def distill(big: BigModels, lab: Labels, spec: SweepSpec, extra_rows: int, leaf_grid: Iterable[int], seed: int,
            say: Callable[[str], None]) -> tuple[dict[str, Head], dict[str, Any]]:
    """The distilled tree of each head (as model heads) and the distillation's report."""
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    X, tr, va, starved = lab.X, lab.train, lab.val, lab.starved
    t0 = time.perf_counter()
    Xe = extra_features(spec, extra_rows, seed) if extra_rows > 0 else np.empty((0, X.shape[1]))
    report: dict[str, Any] = {"extra_rows": int(len(Xe)), "extra_seconds": time.perf_counter() - t0}
    say(f"  distilling on {len(tr)} training rows + {len(Xe)} sampled feature rows labelled by the big models")
    log_ratio = big.log_ratio

    def ratio_target(r: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(r, 1e-4)) if log_ratio else r

    X_aug = np.vstack([X[tr], Xe])
    teacher_ratio = ratio_target(big.ratio(X_aug))
    teacher_p = big.starved_p(X_aug)
    latency: dict[str, tuple] = {}  # head -> (its training rows, its validation rows, X, teacher's log)
    for head in big.latency_heads:
        tr_h = lab.rows(head, "train")
        # the TTFT heads learn not-starved GPUs: the extra rows the teacher calls starved are left out
        Xe_h = Xe[teacher_p[len(tr):] <= 0.5] if head in NOT_STARVED_ONLY else Xe
        X_h = np.vstack([X[tr_h], Xe_h])
        latency[head] = (tr_h, lab.rows(head, "val"), X_h, np.log(big.latency(head, X_h)))

    trees: dict[str, tuple] = {}
    scores: dict[str, dict] = {"ratio": {}, "starved": {}, **{h: {} for h in latency}}
    for L in leaf_grid:
        for vname, (Xf, yf) in {"labels": (X[tr], ratio_target(lab.ratio[tr])),
                                "teacher+extra": (X_aug, teacher_ratio)}.items():
            dt = DecisionTreeRegressor(max_leaf_nodes=L, min_samples_leaf=3, random_state=seed).fit(Xf, yf)
            pv = dt.predict(X[va])
            score = throughput_mare(lab, np.exp(pv) if log_ratio else pv, va)
            scores["ratio"][f"{L}/{vname}"] = score
            if "ratio" not in trees or score < trees["ratio"][0]:
                trees["ratio"] = (score, f"{L}/{vname}", dt)
        for vname, (Xf, yf, kind) in {
            "labels": (X[tr], starved[tr], "classifier"),
            "teacher+extra": (X_aug, teacher_p > 0.5, "classifier"),
            "teacher_proba+extra": (X_aug, teacher_p, "regressor"),
        }.items():
            if kind == "classifier":
                dt = DecisionTreeClassifier(max_leaf_nodes=L, min_samples_leaf=3, random_state=seed).fit(Xf, yf)
                pv = proba(dt, X[va]) > 0.5
            else:
                dt = DecisionTreeRegressor(max_leaf_nodes=L, min_samples_leaf=3, random_state=seed).fit(Xf, yf)
                pv = dt.predict(X[va]) > 0.5
            score = f1(pv, starved[va])
            scores["starved"][f"{L}/{vname}"] = score
            if "starved" not in trees or score > trees["starved"][0]:
                trees["starved"] = (score, f"{L}/{vname}", dt)
        for head, (tr_h, va_h, X_h, teacher) in latency.items():
            y = lab.latency[head]
            for vname, (Xf, yf) in {"labels": (X[tr_h], np.log(y[tr_h])), "teacher+extra": (X_h, teacher)}.items():
                dt = DecisionTreeRegressor(max_leaf_nodes=L, min_samples_leaf=3, random_state=seed).fit(Xf, yf)
                score = mare(np.exp(dt.predict(X[va_h])), y[va_h])
                scores[head][f"{L}/{vname}"] = score
                if head not in trees or score < trees[head][0]:
                    trees[head] = (score, f"{L}/{vname}", dt)
        best = {h: (min if h != "starved" else max)(v for k, v in scores[h].items() if k.startswith(f"{L}/"))
                for h in scores}
        say(f"    {L:4d} leaves: ratio MARE {best['ratio']:.4f}  starved F1 {best['starved']:.4f}"
            + "".join(f"  {h} MARE {best[h]:.4f}" for h in latency))
    report.update({"validation": scores, "chosen": {h: trees[h][1] for h in trees},
                   "seconds": time.perf_counter() - t0})
    heads = {
        "ratio": head_from_sklearn(trees["ratio"][2], "exp" if log_ratio else "identity"),
        "starved": head_from_sklearn(trees["starved"][2]),
        **{h: head_from_sklearn(trees[h][2], "exp") for h in latency},
    }
    return heads, report
