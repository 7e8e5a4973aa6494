"""Talking to vLLM servers: the twin behind vLLM's HTTP API (``serve-twin``), the benchmark client
(``bench``), launching servers from a command template, LoRA adapters on disk, vLLM's metrics.

Sits on the twin (it serves it and draws the twin's workloads) and under the predictors (the ``vllm``
predictor runs benchmarks through it). aiohttp and prometheus_client are imported on first use.
"""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "TwinServer": ".server", "parse_lora_modules": ".adapters", "adapter_rank": ".adapters",
    "write_dummy_adapters": ".adapters"})

__all__ = ["TwinServer", "parse_lora_modules", "adapter_rank", "write_dummy_adapters"]
