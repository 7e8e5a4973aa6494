"""Latency SLOs on predictions: which targets a GPU meets, by what margin, and a predictor that checks them.

``SloPredictor(inner, slo)`` answers as ``inner`` does, with ``Prediction.slo_misses`` filled in: the
capacity model's criterion (``Prediction.keeps_up``) and verification (``Prediction.ok``) then demand
the SLO too. Its ``describe()`` names the SLO, so capacity tables measured against one are cached apart.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

from ..model import Slo
from .base import GpuQuery, Prediction, Predictor

__all__ = ["SloCheck", "check_slo", "SloPredictor", "missing_metrics", "predicted_field", "PREDICTED_AS"]

# The Prediction field each SLO metric is read from (``per_adapter`` reads the worst adapter's p99 TTFT).
PREDICTED_AS = {"ttft_p99_ms": "p99_ttft_ms", "ttft_mean_ms": "mean_ttft_ms", "itl_mean_ms": "mean_itl_ms",
                "itl_p99_ms": "p99_tpot_ms"}


@dataclass(frozen=True)
class SloCheck:
    """One latency target against a prediction: ``margin`` = (target - predicted) / target (< 0: missed;
    None where the predictor does not predict the metric or nothing finished)."""

    metric: str
    target_ms: float
    predicted_ms: float | None
    margin: float | None

    @property
    def met(self) -> bool:
        return self.margin is not None and self.margin >= 0.0


def predicted_field(slo: Slo, metric: str) -> str:
    """The ``Prediction`` field SLO metric ``metric`` is checked on."""
    return "worst_adapter_p99_ttft_ms" if metric == "ttft_p99_ms" and slo.per_adapter else PREDICTED_AS[metric]


def check_slo(slo: Slo, p: Prediction) -> tuple[SloCheck, ...]:
    """Every target of ``slo`` against ``p`` (a GPU that does not start meets none)."""
    out = []
    for metric, target in slo.targets().items():
        v = None if p.memory_error else getattr(p, predicted_field(slo, metric))
        ok = v is not None and math.isfinite(v)
        out.append(SloCheck(metric, target, float(v) if ok else None, (target - v) / target if ok else None))
    return tuple(out)


def missing_metrics(slo: Slo, p: Prediction) -> list[str]:
    """The SLO's metrics that ``p``'s predictor does not predict at all (None, not NaN)."""
    return [m for m in slo.targets() if not p.memory_error and getattr(p, predicted_field(slo, m)) is None]


def _misses(slo: Slo, p: Prediction) -> tuple[str, ...]:
    if p.memory_error:
        return ()  # it does not start: ``ok`` already says so
    out = []
    for c in check_slo(slo, p):
        if c.predicted_ms is None:
            out.append(f"{c.metric}: nothing to measure it on (no request finished)")
        elif not c.met:
            out.append(f"{c.metric} {c.predicted_ms:,.1f} ms > {c.target_ms:,.6g} ms")
    return tuple(out)


class SloPredictor(Predictor):
    """``inner``'s predictions, each marked with the targets of ``slo`` it misses."""

    def __init__(self, inner: Predictor, slo: Slo):
        self.inner, self.slo = inner, slo
        self.name = inner.name

    def describe(self) -> dict:
        return {**self.inner.describe(), "slo": self.slo.model_dump(exclude_none=True)}

    def _mark(self, p: Prediction) -> Prediction:
        return dataclasses.replace(p, slo_misses=_misses(self.slo, p))

    def predict(self, query: GpuQuery) -> Prediction:
        return self._mark(self.inner.predict(query))

    def predict_many(self, queries: Sequence[GpuQuery]) -> list[Prediction]:
        return [self._mark(p) for p in self.inner.predict_many(queries)]
