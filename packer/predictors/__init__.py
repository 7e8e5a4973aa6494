"""Predictors: one GPU's config and adapters in, throughput / ITL / starvation / memory error out.

Backends are registered by name in ``PREDICTORS``: ``twin`` (the Digital Twin, cached), ``tree``
(distilled decision trees trained on twin runs, evaluated by numba) and ``forest`` (the undistilled
tree ensemble, same kernel). ``features.py``, ``dataset.py`` and ``train.py`` build the models.
"""

from .base import PREDICTORS, GpuQuery, Prediction, Predictor, get_predictor
from .tree import ForestPredictor, TreePredictor
from .twin import TwinPredictor

__all__ = ["GpuQuery", "Prediction", "Predictor", "PREDICTORS", "get_predictor", "TwinPredictor", "TreePredictor",
           "ForestPredictor"]
