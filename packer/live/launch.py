"""Starting a vLLM-compatible server from a command template, and never leaving it behind.

The template's placeholders (``{port} {max_loras} {max_cpu_loras} {max_lora_rank} {max_num_seqs}
{max_num_batched_tokens} {gpu_memory_utilization} {lora_modules} {time_scale} {profile}``) are filled
from a scenario's server, so one template runs real vLLM (``vllm serve /models/llama --enable-lora
--max-loras {max_loras} ... --port {port}``) or ``packer serve-twin --profile P ... --port {port}``.
The server runs in its own process group with its output in a log file; ``stop`` sends SIGTERM to
the group, then SIGKILL. A server that exits before ``/health`` answers is a refused start, reported
with its last log lines.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping

from ..errors import InputError, PackerError

__all__ = ["PLACEHOLDERS", "LaunchedServer", "RefusedStart", "free_port", "fill_template", "kv_tokens_from_log"]

PLACEHOLDERS = ("port", "max_loras", "max_cpu_loras", "max_lora_rank", "max_num_seqs", "max_num_batched_tokens",
                "gpu_memory_utilization", "lora_modules", "time_scale", "profile")
_KV_LINE = re.compile(r"KV cache size:\s*([\d,]+)\s*tokens")


class RefusedStart(PackerError):
    """The server exited before it was healthy (vLLM does so on a configuration that does not fit)."""

    def __init__(self, code: int | None, log_tail: str):
        self.code, self.log_tail = code, log_tail
        last = next((ln for ln in reversed(log_tail.splitlines()) if ln.strip()), "")
        self.reason = last.strip()
        super().__init__(f"the server exited with code {code} before it was healthy: {self.reason}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def fill_template(template: str, values: Mapping[str, object]) -> list[str]:
    """The command line of ``template`` with its placeholders filled (``lora_modules``: ``name=path`` words);
    an unknown placeholder is an input error naming the valid ones."""
    filled = {}
    for k, v in values.items():
        if k == "lora_modules":
            filled[k] = " ".join(shlex.quote(f"{n}={p}") for n, p in dict(v).items())
        else:
            filled[k] = shlex.quote(str(v))
    try:
        text = template.format_map(filled)
    except KeyError as e:
        raise InputError("launch", f"unknown placeholder {{{e.args[0]}}} in the launch template; valid: "
                         + " ".join(f"{{{p}}}" for p in PLACEHOLDERS)) from None
    except (ValueError, IndexError) as e:
        raise InputError("launch", f"the launch template is not a valid template ({e}); write literal braces "
                         "as {{ and }}") from None
    argv = shlex.split(text)
    if not argv:
        raise InputError("launch", "the launch template is empty")
    return argv


def kv_tokens_from_log(text: str) -> int | None:
    """The KV cache size in tokens a server logged at start-up ("GPU KV cache size: 123,456 tokens")."""
    m = _KV_LINE.search(text)
    return int(m.group(1).replace(",", "")) if m else None


class LaunchedServer:
    """One server process started from a template; a context manager that always stops it."""

    def __init__(self, argv: list[str], url: str, log_path: str | os.PathLike, env: Mapping[str, str] | None = None):
        self.argv, self.url, self.log_path = argv, url.rstrip("/"), Path(log_path)
        self.env = dict(os.environ if env is None else env)
        self.proc: subprocess.Popen | None = None

    def start(self, health_timeout_s: float = 600.0) -> "LaunchedServer":
        """Start the process and wait until ``/health`` answers 200; ``RefusedStart`` if it exits first,
        ``PackerError`` if it is not healthy in time (it is stopped then)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True)
        except OSError as e:
            raise InputError("launch", f"cannot run {self.argv[0]!r}: {e.strerror}") from None
        finally:
            log.close()
        deadline = time.monotonic() + health_timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                raise RefusedStart(code, self.log_tail())
            if self._healthy():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise PackerError(f"the server did not answer {self.url}/health within {health_timeout_s:g} s; "
                                  f"last log lines:\n{self.log_tail()}")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kv_capacity_tokens(self) -> int | None:
        try:
            return kv_tokens_from_log(self.log_path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after ``grace_s``; waits for it."""
        p, self.proc = self.proc, None
        if p is None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            if p.poll() is not None:
                break
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                p.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # children of the server left in its group (vLLM's engine core, workers)
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> "LaunchedServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
