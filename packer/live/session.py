"""One benchmark of one scenario on a server started from a launch template: adapters on disk, the
server started and always stopped, a refused start reported as the scenario's ``memory_error``.

Used by ``packer bench --launch`` and by the ``vllm`` predictor."""

from __future__ import annotations

import os
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping

from ..model import Scenario
from ..profile import Profile
from .adapters import write_dummy_adapters
from .bench import BenchResult, bench, refused
from .launch import LaunchedServer, RefusedStart, fill_template, free_port

__all__ = ["launch_and_bench", "template_values"]


def template_values(sc: Scenario, port: int, lora_modules: Mapping[str, str], time_scale: float) -> dict:
    """The launch template's placeholders for the scenario's server."""
    s = sc.server
    return {"port": port, "max_loras": s.max_loras, "max_cpu_loras": sc.cpu_loras, "max_lora_rank": s.max_lora_rank,
            "max_num_seqs": s.max_num_seqs, "max_num_batched_tokens": s.max_num_batched_tokens,
            "gpu_memory_utilization": s.gpu_memory_utilization, "lora_modules": dict(lora_modules),
            "time_scale": time_scale, "profile": sc.profile}


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt here, so that the ``finally`` that stops the server runs."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: the caller owns signals
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def launch_and_bench(sc: Scenario, prof: Profile, template: str, *, time_scale: float = 1.0,
                     adapter_paths: Mapping[str, str] | None = None, adapters_dir: str | os.PathLike | None = None,
                     model_config: Mapping | None = None, health_timeout_s: float = 600.0,
                     max_waiting: int | None = None, log_path: str | os.PathLike | None = None,
                     env: Mapping[str, str] | None = None, on_log=None,
                     requests_out: str | None = None) -> BenchResult:
    """Start the server from ``template`` for the scenario, benchmark it, stop it (also on Ctrl-C or
    SIGTERM). Adapters: ``adapter_paths`` (id -> path) or dummy adapters of the scenario's ranks written
    under ``adapters_dir`` (a temporary directory by default; weights too with ``model_config``)."""
    with tempfile.TemporaryDirectory(prefix="packer-bench-") as tmp:
        if adapter_paths is None:
            ranks = {a.id: a.rank for a in sc.workload.adapters}
            adapter_paths = write_dummy_adapters(adapters_dir or Path(tmp) / "adapters", ranks, model_config)
        else:
            missing = [a.id for a in sc.workload.adapters if a.id not in adapter_paths]
            if missing:
                from ..errors import InputError
                raise InputError("adapters", f"no path for adapter(s) {', '.join(missing[:5])}"
                                 f"{' ...' if len(missing) > 5 else ''}; map every adapter id to its directory")
        port = free_port()
        argv = fill_template(template, template_values(sc, port, adapter_paths, time_scale))
        log = Path(log_path) if log_path is not None else Path(tmp) / "server.log"
        server = LaunchedServer(argv, f"http://127.0.0.1:{port}", log, env=env)
        with _sigterm_as_interrupt():
            try:
                try:
                    server.start(health_timeout_s)
                except RefusedStart as e:
                    if on_log is not None:
                        on_log(e.log_tail)
                    return refused(sc, prof, e.reason or f"the server exited with code {e.code}")
                return bench(sc, prof, server.url, time_scale=time_scale, max_waiting=max_waiting,
                             kv_tokens=server.kv_capacity_tokens(), alive=server.alive, requests_out=requests_out)
            finally:
                server.stop()
