"""Fitting the big models: scikit-learn candidates (random forest, extra trees, histogram gradient
boosting) for every head, each kept by its validation score: ``ratio`` (fitted on the ratio and on
its log; scored by the throughput's MARE), ``starved`` (classifiers; scored by F1) and the latency heads
the sweep has (``itl``, ``ttft_mean``, ``ttft_p99``, ``ttft_worst_p99``: the log of the latency on its
rows, ``labels.Labels.rows``; scored by MARE). scikit-learn is needed only here and by the modules that use
these models, not by the predictors."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from ...errors import InputError
from ..tree_model import LATENCY_HEADS
from .labels import Labels
from .scores import f1, mare, throughput_mare

__all__ = ["require_sklearn", "regressors", "classifiers", "proba", "BigModels", "fit_big_models"]


def require_sklearn():
    """scikit-learn's ``ensemble`` and ``tree`` modules; a clear error without scikit-learn."""
    try:
        from sklearn import ensemble, tree
    except ImportError:
        raise InputError("train", "training needs scikit-learn; install it with: pip install scikit-learn") from None
    return ensemble, tree


def regressors(seed: int, n_jobs: int) -> dict[str, Callable[[], Any]]:
    """The regressor candidates by family name (factories)."""
    ens, _ = require_sklearn()
    return {
        "random_forest": lambda: ens.RandomForestRegressor(n_estimators=200, min_samples_leaf=2, max_features=0.5,
                                                           n_jobs=n_jobs, random_state=seed),
        "extra_trees": lambda: ens.ExtraTreesRegressor(n_estimators=300, min_samples_leaf=2, max_features=0.7,
                                                       n_jobs=n_jobs, random_state=seed),
        "hist_gradient_boosting": lambda: ens.HistGradientBoostingRegressor(
            max_iter=600, learning_rate=0.05, max_leaf_nodes=31, min_samples_leaf=10, l2_regularization=1e-3,
            early_stopping=True, validation_fraction=0.1, n_iter_no_change=30, random_state=seed),
    }


def classifiers(seed: int, n_jobs: int) -> dict[str, Callable[[], Any]]:
    """The classifier candidates by family name (factories)."""
    ens, _ = require_sklearn()
    return {
        "random_forest": lambda: ens.RandomForestClassifier(n_estimators=200, min_samples_leaf=1, max_features=0.5,
                                                            n_jobs=n_jobs, random_state=seed),
        "extra_trees": lambda: ens.ExtraTreesClassifier(n_estimators=300, min_samples_leaf=1, max_features=0.7,
                                                        n_jobs=n_jobs, random_state=seed),
        "hist_gradient_boosting": lambda: ens.HistGradientBoostingClassifier(
            max_iter=600, learning_rate=0.05, max_leaf_nodes=31, min_samples_leaf=10, l2_regularization=1e-3,
            early_stopping=True, validation_fraction=0.1, n_iter_no_change=30, random_state=seed),
    }


def proba(model, X: np.ndarray) -> np.ndarray:
    """A classifier's probability of ``True`` for each row."""
    p = model.predict_proba(X)
    classes = list(model.classes_)
    if True in classes:
        return p[:, classes.index(True)]
    return np.zeros(len(X)) if len(classes) == 1 else p[:, -1]


@dataclass
class BigModels:
    """The chosen model per head, ``best[head] = (validation score, name, model, target)`` (target:
    ``ratio`` / ``log_ratio``, ``proba``, ``log``), and every candidate's validation score."""

    best: dict[str, tuple[float, str, Any, str]]
    candidates: dict[str, dict[str, dict[str, float]]]

    @property
    def log_ratio(self) -> bool:
        """Whether the chosen ratio model learned the log of the ratio."""
        return self.best["ratio"][3] == "log_ratio"

    def ratio(self, X: np.ndarray) -> np.ndarray:
        """The chosen ratio model's ratio."""
        _, _, m, target = self.best["ratio"]
        p = m.predict(X)
        return p if target == "ratio" else np.exp(p)

    def starved_p(self, X: np.ndarray) -> np.ndarray:
        """The chosen starvation classifier's probability."""
        return proba(self.best["starved"][2], X)

    def latency(self, head: str, X: np.ndarray) -> np.ndarray:
        """The chosen model's latency (ms) of latency head ``head``."""
        return np.exp(self.best[head][2].predict(X))

    def itl(self, X: np.ndarray) -> np.ndarray:
        """The chosen ITL model's mean inter-token latency (ms)."""
        return self.latency("itl", X)

    @property
    def latency_heads(self) -> tuple[str, ...]:
        """The latency heads fitted, in ``LATENCY_HEADS`` order."""
        return tuple(h for h in LATENCY_HEADS if h in self.best)


def fit_big_models(lab: Labels, seed: int, n_jobs: int, candidates: Iterable[str] | None,
                   say: Callable[[str], None]) -> BigModels:
    """Fit every candidate family (``candidates``, default all) for every head on the training rows
    and keep the best on the validation rows."""
    regs, clss = regressors(seed, n_jobs), classifiers(seed, n_jobs)
    names = list(candidates) if candidates is not None else list(regs)
    X, tr, va = lab.X, lab.train, lab.val
    cand: dict[str, Any] = {"ratio": {}, "starved": {}}
    best: dict[str, Any] = {}

    for name in names:
        for target in ("ratio", "log_ratio"):
            t0 = time.perf_counter()
            m = regs[name]()
            y = lab.ratio[tr] if target == "ratio" else np.log(np.maximum(lab.ratio[tr], 1e-4))
            m.fit(X[tr], y)
            pv = m.predict(X[va])
            pv = pv if target == "ratio" else np.exp(pv)
            score = throughput_mare(lab, pv, va)
            cand["ratio"][f"{name}/{target}"] = {"validation_mare": score, "fit_seconds": time.perf_counter() - t0}
            say(f"  ratio   {name:24s} {target:9s} validation throughput MARE {score:.4f}")
            if "ratio" not in best or score < best["ratio"][0]:
                best["ratio"] = (score, f"{name}/{target}", m, target)
    for name in names:
        t0 = time.perf_counter()
        m = clss[name]()
        m.fit(X[tr], lab.starved[tr])
        score = f1(proba(m, X[va]) > 0.5, lab.starved[va])
        cand["starved"][name] = {"validation_f1": score, "fit_seconds": time.perf_counter() - t0}
        say(f"  starved {name:24s} validation F1 {score:.4f}")
        if "starved" not in best or score > best["starved"][0]:
            best["starved"] = (score, name, m, "proba")
    for head in lab.latency_heads():
        tr_h, va_h, y = lab.rows(head, "train"), lab.rows(head, "val"), lab.latency[head]
        cand[head] = {}
        for name in names:
            t0 = time.perf_counter()
            m = regs[name]()
            m.fit(X[tr_h], np.log(y[tr_h]))
            score = mare(np.exp(m.predict(X[va_h])), y[va_h])
            cand[head][name] = {"validation_mare": score, "fit_seconds": time.perf_counter() - t0}
            say(f"  {head:7s} {name:24s} validation MARE {score:.4f}")
            if head not in best or score < best[head][0]:
                best[head] = (score, name, m, "log")
    return BigModels(best, cand)
