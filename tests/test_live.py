"""The live path over real loopback HTTP against real server processes (no mocks): `packer serve-twin`
answers vLLM's API with vLLM's semantics, and `packer bench` against it agrees with `packer simulate`
on the same scenario; refused starts, a server killed mid-run and process clean-up."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import aiohttp
import pytest

from packer.live.bench import bench
from packer.live.launch import LaunchedServer, free_port
from packer.live.session import launch_and_bench
from packer.model import parse_scenario
from packer.profile import load_profile
from packer.twin import simulate

LLAMA = "llama-3.1-8b-instruct@h100-64gb"
SERVE = [sys.executable, "-m", "packer.cli", "serve-twin"]


def _template(marker: str) -> str:
    return " ".join(SERVE) + (f" --profile {LLAMA} --max-loras {{max_loras}} --max-cpu-loras {{max_cpu_loras}} "
                              "--max-lora-rank {max_lora_rank} --max-num-seqs {max_num_seqs} "
                              "--max-num-batched-tokens {max_num_batched_tokens} "
                              "--gpu-memory-utilization {gpu_memory_utilization} --port {port} "
                              f"--time-scale {{time_scale}} --served-model-name {marker} --lora-modules {{lora_modules}}")


def _scenario(slots, n, rate, rank=16, duration=60.0, warmup=20.0, gmu=0.9, seqs=256):
    return parse_scenario({"profile": LLAMA, "server": {"max_loras": slots, "max_lora_rank": max(16, rank),
                                                        "max_num_seqs": seqs, "gpu_memory_utilization": gmu},
                           "adapters": [{"id": f"a{i}", "rank": rank if i % 2 else 8, "rate": rate} for i in range(n)],
                           "duration_s": duration, "warmup_s": warmup, "seed": 1})


def _leftovers(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "pgrep" not in ln]


@pytest.fixture
def marker():
    m = f"packer-test-{uuid.uuid4().hex[:10]}"
    yield m
    assert _leftovers(m) == []  # no server left behind


@pytest.mark.parametrize("slots,n,rate,scale", [
    (8, 4, 1.0, 10.0),    # light: every adapter in a slot
    (16, 24, 0.25, 10.0),  # moderate: 24 adapters on 16 slots
    (1, 8, 0.5, 10.0),    # LoRA-starved: one slot, skip-and-continue
    (8, 4, 1.0, 2.0),     # a slower clock, the same answer
])
def test_bench_against_serve_twin_agrees_with_simulate(slots, n, rate, scale, marker):
    sc = _scenario(slots, n, rate, duration=60.0 if scale > 5 else 20.0, warmup=20.0 if scale > 5 else 5.0)
    prof = load_profile(LLAMA)
    for _ in range(2):  # a client that says its own timing is suspect (blocked, behind schedule) measures again
        res = launch_and_bench(sc, prof, _template(marker), time_scale=scale, health_timeout_s=60)
        if not res.client["behind_schedule"]:
            break
    live, twin = res.result, simulate(sc)
    why = (live.throughput_tps, twin.throughput_tps, live.mean_itl_ms, twin.mean_itl_ms, res.client)
    assert live.memory_error is None and live.finished > 20
    assert live.starved == twin.starved, why
    assert abs(live.throughput_tps - twin.throughput_tps) <= 0.05 * twin.throughput_tps, why
    assert abs(live.mean_itl_ms - twin.mean_itl_ms) <= 0.15 * twin.mean_itl_ms, why
    assert live.generated == twin.generated and live.offered_tps == twin.offered_tps  # the same requests


def test_a_refused_start_is_a_memory_error(marker):
    sc = _scenario(512, 2, 1.0, rank=64, gmu=0.5)
    prof = load_profile(LLAMA)
    twin = simulate(sc)
    assert twin.memory_error
    res = launch_and_bench(sc, prof, _template(marker), time_scale=10, health_timeout_s=60)
    assert res.result.memory_error and twin.memory_error.split(":")[0] in res.result.memory_error
    assert res.result.offered_tps == twin.offered_tps and res.result.finished == 0


@pytest.fixture
def server(marker, tmp_path):
    adapters = tmp_path / "adapters"
    for name, r in (("sql", 8), ("chat", 16)):
        (adapters / name).mkdir(parents=True)
        (adapters / name / "adapter_config.json").write_text(json.dumps({"r": r, "peft_type": "LORA"}))
    (adapters / "big").mkdir()
    (adapters / "big" / "adapter_config.json").write_text(json.dumps({"r": 64}))
    port = free_port()
    argv = SERVE + ["--profile", LLAMA, "--max-loras", "2", "--max-lora-rank", "16", "--port", str(port),
                    "--time-scale", "10", "--served-model-name", marker, "--lora-modules", f"sql={adapters / 'sql'}"]
    with LaunchedServer(argv, f"http://127.0.0.1:{port}", tmp_path / "server.log").start(60) as s:
        yield s, adapters


def _call(method, url, body=None):
    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.request(method, url, json=body) as r:
                text = await r.text()
                return r.status, text
    return asyncio.run(go())


def test_load_unload_and_unknown_adapters(server, marker):
    s, adapters = server
    models = json.loads(_call("GET", s.url + "/v1/models")[1])
    assert [m["id"] for m in models["data"]] == [marker, "sql"] and models["data"][1]["parent"] == marker
    status, text = _call("POST", s.url + "/v1/completions", {"model": "chat", "prompt": [1, 2, 3], "max_tokens": 2})
    assert status == 404 and json.loads(text)["type"] == "NotFoundError"
    assert _call("POST", s.url + "/v1/load_lora_adapter", {"lora_name": "chat"})[0] == 400
    assert _call("POST", s.url + "/v1/load_lora_adapter", {"lora_name": "big", "lora_path": str(adapters / "big")})[0] == 400
    status, text = _call("POST", s.url + "/v1/load_lora_adapter", {"lora_name": "chat", "lora_path": str(adapters / "chat")})
    assert status == 200 and "added successfully" in text
    assert _call("POST", s.url + "/v1/load_lora_adapter", {"lora_name": "chat", "lora_path": str(adapters / "chat")})[0] == 400
    status, text = _call("POST", s.url + "/v1/completions", {"model": "chat", "prompt": [1, 2, 3], "max_tokens": 4})
    body = json.loads(text)
    assert status == 200 and body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert _call("POST", s.url + "/v1/unload_lora_adapter", {"lora_name": "chat"})[0] == 200
    assert _call("POST", s.url + "/v1/unload_lora_adapter", {"lora_name": "chat"})[0] == 404
    assert _call("POST", s.url + "/v1/completions", {"model": "chat", "prompt": "hi", "max_tokens": 2})[0] == 404
    base = _call("POST", s.url + "/v1/chat/completions",
                 {"model": marker, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3})
    assert base[0] == 200 and json.loads(base[1])["choices"][0]["message"]["content"] == " tok" * 3


def test_streaming_and_metrics(server):
    s, _ = server

    async def go():
        async with aiohttp.ClientSession() as session:
            body = {"model": "sql", "prompt": [7] * 50, "max_tokens": 5, "stream": True,
                    "stream_options": {"include_usage": True}}
            async with session.post(s.url + "/v1/completions", json=body) as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")
                raw = (await r.read()).decode()
            async with session.get(s.url + "/metrics") as r:
                return raw, await r.text()

    raw, metrics = asyncio.run(go())
    events = [e[len("data: "):] for e in raw.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    tokens = [c for c in chunks if c["choices"]]
    assert len(tokens) == 5 and tokens[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"] == {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:num_preemptions_total", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 "vllm:lora_requests_info", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:inter_token_latency_seconds_bucket"):
        assert name in metrics, name
    assert 'vllm:generation_tokens_total{engine="0"' in metrics and "} 5.0" in metrics


def test_a_server_killed_mid_run_gives_partial_results(marker, tmp_path):
    sc = _scenario(8, 4, 1.0, duration=60.0, warmup=0.0)
    prof = load_profile(LLAMA)
    port = free_port()
    argv = SERVE + ["--profile", LLAMA, "--max-loras", "8", "--port", str(port), "--time-scale", "10",
                    "--served-model-name", marker, "--lora-modules"] + [f"a{i}={tmp_path}/a{i}" for i in range(4)]
    for i in range(4):
        (tmp_path / f"a{i}").mkdir()
        (tmp_path / f"a{i}" / "adapter_config.json").write_text(json.dumps({"r": 8 if i % 2 == 0 else 16}))
    srv = LaunchedServer(argv, f"http://127.0.0.1:{port}", tmp_path / "server.log").start(60)
    try:
        import threading

        killer = threading.Timer(2.0, lambda: os.killpg(srv.proc.pid, 9))
        killer.start()
        t0 = time.monotonic()
        res = bench(sc, prof, srv.url, time_scale=10, alive=srv.alive)
        assert time.monotonic() - t0 < 5.5  # it stops soon after the server dies, not at the window's end
    finally:
        srv.stop()
    assert res.partial and ("stopped answering" in res.error or "exited" in res.error)
    assert 0 < res.result.finished < simulate(sc).finished


def test_bench_cli_reports_like_simulate_and_cleans_up(marker, tmp_path):
    sc_path = tmp_path / "sc.json"
    sc_path.write_text(json.dumps({"profile": LLAMA, "server": {"max_loras": 4, "max_lora_rank": 16},
                                   "adapters": [{"id": "x", "rank": 8, "rate": 1.0}, {"id": "y", "rank": 16, "rate": 1.0}],
                                   "duration_s": 20, "warmup_s": 5, "seed": 2}))
    records = tmp_path / "requests.npz"
    run = subprocess.run([sys.executable, "-m", "packer.cli", "bench", str(sc_path), "--json", "--time-scale", "10",
                          "--requests-out", str(records), "--launch", _template(marker)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    live = json.loads(run.stdout)
    import numpy as np

    z = np.load(records)
    done = np.flatnonzero(z["status"] == 3)
    assert len(done) >= live["finished"] > 0
    for i in done:  # every token of a finished request, in order, from its first token to its finish
        t = z["token_times_s"][z["token_offsets"][i]:z["token_offsets"][i + 1]]
        assert len(t) == z["output_len"][i] and np.all(np.diff(t) >= 0)
        assert t[0] == z["first_token_s"][i] and t[-1] == z["finish_s"][i] and z["send_s"][i] >= z["arrival_s"][i]
    sim = json.loads(subprocess.run([sys.executable, "-m", "packer.cli", "simulate", str(sc_path), "--json"],
                                    capture_output=True, text=True, check=True).stdout)
    assert set(sim) <= set(live) and live["partial"] is False and live["metrics_series"]
    assert abs(live["throughput_tps"] - sim["throughput_tps"]) <= 0.05 * sim["throughput_tps"]


def test_bench_cli_bad_input_is_one_line(tmp_path):
    sc_path = tmp_path / "sc.json"
    sc_path.write_text(json.dumps({"profile": LLAMA, "server": {"max_loras": 4, "max_lora_rank": 16},
                                   "adapters": [{"id": "x", "rank": 8, "rate": 1.0}], "duration_s": 20}))
    for args in (["--url", "http://x", "--launch", "y"], [], ["--launch", "serve {nope}"]):
        run = subprocess.run([sys.executable, "-m", "packer.cli", "bench", str(sc_path), *args],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and run.stderr.startswith("error:") and len(run.stderr.strip().splitlines()) == 1, \
            (args, run.stderr)


def test_solve_verifies_a_plan_on_the_live_server(marker, tmp_path):
    wl = tmp_path / "wl.json"
    wl.write_text(json.dumps({"profile": LLAMA, "adapters": [{"id": f"a{i}", "rank": 8 if i % 2 else 16, "rate": 0.3}
                                                             for i in range(6)]}))
    template = _template(marker).replace(f"--profile {LLAMA}", "--profile {profile}")
    env = {**os.environ, "PACKER_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "packer.cli", "solve", str(wl), "--json", "--verify-with", "vllm",
           "--vllm-launch", template, "--vllm-time-scale", "25", "--executor", "serial"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["verified_with"] == "vllm" and out["verified"] is True and out["num_gpus"] == 1
    assert list((tmp_path / "cache" / "vllm").glob("*.json"))  # the benchmark is cached by query
    bad = subprocess.run(cmd[:6] + ["--vllm-gpus", "zero"] + cmd[6:], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --vllm-gpus")


def test_sigterm_stops_serve_twin_cleanly(server):
    s, _ = server
    pid = s.proc.pid
    os.kill(pid, 15)
    assert s.proc.wait(timeout=10) == 0  # aiohttp's graceful shutdown: exit code 0
    assert "KV cache size" in s.log_tail()


def test_the_waiting_cap_bounds_the_queue_with_503s(marker, tmp_path):
    # a profile whose waiting cap is 3 and whose steps are slow: the fourth waiting request is refused
    from importlib import resources

    prof = json.loads((resources.files("packer") / "profiles" / f"{LLAMA}.json").read_text())
    prof["name"] = "llama-capped@test"
    prof["client"]["max_waiting"] = 3
    path = tmp_path / "capped.json"
    path.write_text(json.dumps(prof))
    port = free_port()
    argv = SERVE + ["--profile", str(path), "--max-loras", "1", "--max-num-seqs", "1", "--port", str(port),
                    "--served-model-name", marker]
    with LaunchedServer(argv, f"http://127.0.0.1:{port}", tmp_path / "log").start(60) as s:
        async def go():
            async with aiohttp.ClientSession() as session:
                async def one():
                    async with session.post(s.url + "/v1/completions",
                                            json={"model": marker, "prompt": [1] * 10, "max_tokens": 200}) as r:
                        return r.status
                return await asyncio.gather(*[one() for _ in range(8)])
        codes = asyncio.run(go())
    assert codes.count(503) >= 3 and codes.count(200) >= 2


def test_ctrl_c_during_bench_leaves_no_server(marker, tmp_path):
    sc_path = tmp_path / "sc.json"
    sc_path.write_text(json.dumps({"profile": LLAMA, "server": {"max_loras": 4, "max_lora_rank": 16},
                                   "adapters": [{"id": "x", "rank": 8, "rate": 1.0}], "duration_s": 600, "seed": 2}))
    p = subprocess.Popen([sys.executable, "-m", "packer.cli", "bench", str(sc_path), "--launch", _template(marker)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def server_running() -> bool:  # the bench's own command line carries the marker too: not it
        return any(not ln.startswith(f"{p.pid} ") for ln in _leftovers(marker))

    deadline = time.monotonic() + 60
    while not server_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server_running(), "the server never started"
    time.sleep(2.0)
    p.send_signal(2)  # Ctrl-C
    p.wait(timeout=30)
    deadline = time.monotonic() + 15
    while _leftovers(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert p.returncode != 0


def test_dummy_adapters_for_real_vllm(tmp_path):
    from safetensors.numpy import load_file

    from packer.live.adapters import adapter_rank, write_dummy_adapters

    cfg = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
           "num_hidden_layers": 2}
    paths = write_dummy_adapters(tmp_path, {"a": 8, "b": 16, "c": 8}, cfg)
    assert [adapter_rank(p) for p in paths.values()] == [8, 16, 8]
    w = load_file(os.path.join(paths["b"], "adapter_model.safetensors"))
    assert w["base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight"].shape == (16, 64)
    assert w["base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"].shape == (32, 16)
    assert w["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"].shape == (16, 128)
    assert not any(v.any() for v in w.values())  # zero: the base model's answers
    assert os.path.realpath(os.path.join(paths["a"], "adapter_model.safetensors")) == \
        os.path.realpath(os.path.join(paths["c"], "adapter_model.safetensors"))  # one weights file per rank


def test_a_client_that_goes_away_aborts_its_request(server):
    s, _ = server

    async def go():
        async with aiohttp.ClientSession() as session:
            body = {"model": "sql", "prompt": [3] * 20, "max_tokens": 5000, "stream": True}
            async with session.post(s.url + "/v1/completions", json=body) as r:
                await r.content.readany()  # the first token, then hang up mid-stream
            await asyncio.sleep(0.5)
            async with session.get(s.url + "/metrics") as r:
                return await r.text()

    metrics = asyncio.run(go())
    running = [ln for ln in metrics.splitlines() if ln.startswith("vllm:num_requests_running{")]
    assert running and running[0].endswith(" 0.0"), running  # vLLM aborts it and frees its KV
    assert any(ln.startswith("vllm:kv_cache_usage_perc{") and ln.endswith(" 0.0") for ln in metrics.splitlines())


_SILENT_SERVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(512)
held = []
while True:  # accepts every connection, reads nothing and never answers
    held.append(s.accept()[0])
"""


def test_a_server_that_never_answers_ends_at_the_window(tmp_path):
    # the client's run is bounded by its window however the server behaves: no request hangs it
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _SILENT_SERVER, str(port)])
    try:
        time.sleep(0.5)
        sc = _scenario(8, 4, 2.0, duration=30.0, warmup=0.0)
        t0 = time.monotonic()
        res = bench(sc, load_profile(LLAMA), f"http://127.0.0.1:{port}", time_scale=10)
        wall = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
    assert wall < 3.0 + 10.0 + 5.0  # the 3 s window, the cancelled requests' grace, start-up
    assert res.result.finished == 0 and res.client["sent"] > 0


def test_bench_signal_handlers_route_through_the_loop_and_restore_the_callers():
    import signal

    from packer.live.bench import _install_signal_handlers, _remove_signal_handlers

    def callers_handler(signum, frame):  # e.g. the session's SIGTERM handler
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, callers_handler)
    loop = asyncio.new_event_loop()
    try:
        hits = []
        installed = _install_signal_handlers(loop, lambda: hits.append(1))
        assert set(installed) == {signal.SIGINT, signal.SIGTERM}
        os.kill(os.getpid(), signal.SIGTERM)  # queued to the loop, not raised here
        loop.run_until_complete(asyncio.sleep(0.05))
        assert hits == [1]
        _remove_signal_handlers(loop, installed)
        assert signal.getsignal(signal.SIGTERM) is callers_handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        loop.close()
        signal.signal(signal.SIGTERM, before)
