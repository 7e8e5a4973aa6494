"""The error measures of training (``mare``, ``f1``) and the test scores of a model's predictions."""

from __future__ import annotations

import numpy as np

from ..base import KEEP_UP_RATIO
from ..features import FEATURE_NAMES
from .labels import Labels

__all__ = ["mare", "f1", "throughput_mare", "scores_on_test", "latency_predictions", "score_line"]


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


def throughput_mare(lab: Labels, pred_ratio: np.ndarray, rows: np.ndarray) -> float:
    """The throughput MARE on ``rows`` of a predicted ratio, as the predictor turns it into throughput."""
    return mare(np.minimum(pred_ratio * lab.base[rows], lab.offered[rows]), lab.thr[rows])


def scores_on_test(lab: Labels, ratio_pred: np.ndarray, starved_pred: np.ndarray,
                   latency_pred: dict[str, np.ndarray]) -> dict[str, float]:
    """Scores on the test split (``latency_pred[head]`` on the head's test rows, ``Labels.rows``: each
    latency head's MARE as ``<head>_mare``). ``throughput_mare`` compares
    the prediction (from the query alone) with one seeded twin run, so it includes the run's own
    sampling noise; ``throughput_mare_given_arrivals`` scales the predicted ratio by the load the run
    actually drew instead (the predictor's modelling error)."""
    rows = lab.test
    thr, off, starved = lab.thr[rows], lab.offered[rows], lab.starved[rows]
    twin_off = lab.twin_off[rows]
    twin_ratio = thr / twin_off
    # the capacity model's criterion (Prediction.keeps_up): not starved and ratio >= KEEP_UP_RATIO
    keep_true = ~starved & (twin_ratio >= KEEP_UP_RATIO)
    bursty = lab.X[rows, FEATURE_NAMES.index("arrival_sigma")] > 0
    bursty |= lab.X[rows, FEATURE_NAMES.index("arrival_cv")] != 1.0
    pred_thr = np.minimum(ratio_pred * lab.base[rows], off)
    pred_thr_drawn = np.minimum(ratio_pred * lab.base_drawn[rows], twin_off)
    ratio_pred = pred_thr / off  # throughput / expected offered, as the predictor reports it
    keep_pred = ~np.asarray(starved_pred, bool) & (ratio_pred >= KEEP_UP_RATIO)
    return {"rows": int(len(rows)), "throughput_mare": mare(pred_thr, thr),
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
            **{f"{h}_mare": mare(p, lab.latency[h][lab.rows(h, "test")]) for h, p in latency_pred.items()}}


def latency_predictions(model, lab: Labels) -> dict[str, np.ndarray]:
    """A model's (``TreeModel`` or ``fit.BigModels``) latency heads on each head's test rows."""
    X = lab.X
    if hasattr(model, "predict_batch"):
        return {h: model.predict_batch(X[lab.rows(h, "test")])[h] for h in model.latency_heads}
    return {h: model.latency(h, X[lab.rows(h, "test")]) for h in model.latency_heads}


def score_line(scores: dict[str, float]) -> str:
    """The printed summary of ``scores_on_test``: throughput MARE, starved F1, each latency head's MARE."""
    lat = "".join(f"  {k.removesuffix('_mare')} MARE {v:.4f}" for k, v in scores.items()
                  if k.endswith("_mare") and not k.startswith("throughput"))
    return f"throughput MARE {scores['throughput_mare']:.4f}  starved F1 {scores['starved_f1']:.4f}{lat}"
