"""Predictors: one GPU's config and adapters in, throughput / ITL / starvation / memory error out.

Backends are registered by name in ``PREDICTORS``: ``twin`` (the Digital Twin, cached), ``tree``
(distilled decision trees trained on twin runs, evaluated by numba) and ``forest`` (the undistilled
tree ensemble, same kernel) and ``vllm`` (a live benchmark on a server started from a launch
template: real vLLM, or ``packer serve-twin``). ``features.py`` and the ``training`` subpackage (sweeps, fitting, distillation)
build the models.
"""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {  # imported on first use: tree and twin load numba
    **dict.fromkeys(["PREDICTORS", "GpuQuery", "Prediction", "Predictor", "get_predictor"], ".base"),
    "TwinPredictor": ".twin", "TreePredictor": ".tree", "ForestPredictor": ".tree", "VllmPredictor": ".vllm"})

__all__ = ["GpuQuery", "Prediction", "Predictor", "PREDICTORS", "get_predictor", "TwinPredictor", "TreePredictor",
           "ForestPredictor", "VllmPredictor"]
