"""Predictors: one GPU's config and adapters in, throughput / ITL / starvation / memory error out.

Backends are registered by name in ``PREDICTORS``: ``twin`` (the Digital Twin, cached).
"""

from .base import PREDICTORS, GpuQuery, Prediction, Predictor, get_predictor
from .twin import TwinPredictor

__all__ = ["GpuQuery", "Prediction", "Predictor", "PREDICTORS", "get_predictor", "TwinPredictor"]
