"""vLLM's Prometheus metrics: what ``packer serve-twin`` exposes at ``/metrics`` (vLLM's names, labels and
histogram buckets) and how ``packer bench`` reads any vLLM-compatible server's page."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["ServerMetrics", "scrape_values", "TTFT_BUCKETS", "ITL_BUCKETS"]

# vLLM's bucket edges (seconds).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
               80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
               960.0, 1920.0, 7680.0)


class ServerMetrics:
    """The metrics of one served model, in a registry of their own. Latencies are the simulated
    server's (simulated seconds: wall seconds x the time scale)."""

    def __init__(self, model_name: str, max_lora: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        self._labels = {"model_name": model_name, "engine": "0"}
        self.max_lora = max_lora

        def gauge(name, doc):
            return Gauge(name, doc, labels, registry=self.registry).labels(**self._labels)

        def counter(name, doc):
            return Counter(name, doc, labels, registry=self.registry).labels(**self._labels)

        def hist(name, doc, buckets):
            return Histogram(name, doc, labels, buckets=buckets, registry=self.registry).labels(**self._labels)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.gpu_cache_usage = gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage (the older name).")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self.success = Counter("vllm:request_success", "Count of successfully processed requests.",
                               labels + ["finished_reason"], registry=self.registry)
        self.ttft = hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                         TTFT_BUCKETS)
        self.itl = hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                        ITL_BUCKETS)
        self.e2e = hist("vllm:e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.",
                        E2E_BUCKETS)
        self.lora_info = Gauge("vllm:lora_requests_info", "Running stats on lora requests.",
                               ["running_lora_adapters", "max_lora", "waiting_lora_adapters"], registry=self.registry)
        self._preemptions_seen = 0

    def finished(self, reason: str = "length") -> None:
        self.success.labels(**self._labels, finished_reason=reason).inc()

    def render(self, running: int, waiting: int, kv_usage: float, preemptions: int,
               running_adapters: list[str], waiting_adapters: list[str]) -> bytes:
        """The page, with the gauges set to the engine's state now."""
        from prometheus_client import generate_latest

        self.running.set(running)
        self.waiting.set(waiting)
        self.kv_usage.set(kv_usage)
        self.gpu_cache_usage.set(kv_usage)
        if preemptions > self._preemptions_seen:
            self.preemptions.inc(preemptions - self._preemptions_seen)
            self._preemptions_seen = preemptions
        self.lora_info.clear()
        self.lora_info.labels(running_lora_adapters=",".join(running_adapters), max_lora=str(self.max_lora),
                              waiting_lora_adapters=",".join(waiting_adapters)).set(time.time())
        return generate_latest(self.registry)


def scrape_values(text: str) -> dict[str, Any]:
    """The numbers ``packer bench`` keeps from one ``/metrics`` page: each sample summed over its labels
    (``vllm:num_requests_running``, ``vllm:time_to_first_token_seconds_count``, ...), and the adapters
    in ``vllm:lora_requests_info`` (lists under ``running_lora_adapters`` / ``waiting_lora_adapters``)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "vllm:lora_requests_info":
                for key in ("running_lora_adapters", "waiting_lora_adapters"):
                    v = s.labels.get(key, "")
                    out[key] = [a for a in v.split(",") if a]
                if "max_lora" in s.labels:
                    out["max_lora"] = s.labels["max_lora"]
                continue
            if s.name.startswith("vllm:") and not s.name.endswith("_created") and "le" not in s.labels:
                out[s.name] = out.get(s.name, 0.0) + float(s.value)
    return out
