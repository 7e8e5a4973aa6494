"""Fuzz suite of issue 19: no wrong answer, no crash, no hang.

Every case runs the real ``packer`` command line on a real file and holds it to one oracle
(``verdict``): either exit code 2 with exactly one ``error: ...`` line on stderr and nothing on
stdout, or exit code 0 with stdout that parses as strict JSON (no NaN / Infinity, no number that
overflows) and passes a sanity check of its own command; never a traceback, never a hang (every
case is bounded by ``CASE_LIMIT_S`` and its memory by ``MEMORY_LIMIT``).

Three layers, cheapest first:
- in-process schema documents (hypothesis, many examples): ``parse_scenario`` / ``parse_workload``
  and the profile lookup, bounded by an alarm: an ``InputError`` of one line, or a model whose
  every number is finite;
- hypothesis batches through the CLI: each example is a batch of documents, written to files and
  run by ``tests/fuzz_harness.py`` (one process runs a batch's command lines through the real click
  entry point, so a start-up is paid per batch, not per case);
- hand-picked hostile files, each in its own ``python -m packer.cli`` process.

A module summary line gives the suite's size and run time.
"""

from __future__ import annotations

import copy
import json
import math
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st

from packer.errors import InputError
from packer.model import parse_scenario
from packer.planner import parse_workload
from packer.profile import load_profile

REPO = Path(__file__).resolve().parents[1]
HARNESS = Path(__file__).with_name("fuzz_harness.py")
LLAMA = "llama-3.1-8b-instruct@h100-64gb"
QWEN = "qwen-2.5-7b-instruct@h100-64gb"
CASE_LIMIT_S = 30  # no single command line may take longer (a hang); valid cases take a few seconds
SCHEMA_LIMIT_S = 10  # parsing one document in-process
MEMORY_LIMIT = 4 << 30  # address space of a CLI process: a units mistake must be refused, not allocated
REFUSE_QUICKLY_S = 20.0  # inputs that must be refused (rate 1e9) must be refused within this

STATS: Counter = Counter()  # cases run, by layer (the summary line)
OUTCOMES: Counter = Counter()  # CLI runs: answered (exit 0), refused (exit 2), failed the oracle
PATHS: dict[str, str] = {}  # the module's hostile files and cache, for the hypothesis tests (kept out of their
#                              falsifying examples, which print every argument)

# Deterministic (derandomize, no example database) and bounded: no shrinking, whose number of tries on a
# failure is open-ended; a failure reports the whole generated document instead of a minimal one.
FUZZ_SETTINGS = dict(derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.filter_too_much, HealthCheck.large_base_example])


# ------------------------------------------------------------------------------------------------
# Writing documents: JSON text that may hold literals json.dumps cannot write


class Raw(str):
    """A JSON number literal written as is (``1e400`` parses to inf in Python's json)."""


def to_json_text(x) -> str:
    """JSON text of ``x``; floats NaN/inf as the NaN/Infinity literals Python's json accepts, ``Raw`` verbatim."""
    if isinstance(x, Raw):
        return str(x)
    if isinstance(x, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {to_json_text(v)}" for k, v in x.items()) + "}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(to_json_text(v) for v in x) + "]"
    return json.dumps(x)


PLACEHOLDER = "@fuzz:"  # "@fuzz:profile:NAME" / "@fuzz:trace:NAME": a hostile file made by the fixture


def resolve(x, files: dict[str, str]):
    """``x`` with every placeholder string replaced by the path of its hostile file."""
    if isinstance(x, Raw):
        return x
    if isinstance(x, str) and x.startswith(PLACEHOLDER):
        return files[x[len(PLACEHOLDER):]]
    if isinstance(x, dict):
        return {k: resolve(v, files) for k, v in x.items()}
    if isinstance(x, list):
        return [resolve(v, files) for v in x]
    return x


# ------------------------------------------------------------------------------------------------
# Hostile profile and trace files


def _shipped_profile() -> dict:
    return json.loads((REPO / "packer" / "profiles" / f"{LLAMA}.json").read_text(encoding="utf-8"))


def _corrupt(path: tuple, value) -> dict:
    d = _shipped_profile()
    d["name"] = "fuzz@corrupt"
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return d


def _zero_costs() -> dict:
    d = _shipped_profile()
    d["name"] = "fuzz@free"
    d["step"].update({"decode_ms": [0.0, 0.0, 0.0], "prefill_ms_per_token": 0.0, "lora_ms_base": 0.0,
                      "lora_ms_per_token": 0.0, "lora_ms_per_adapter": 0.0, "lora_ms_per_token_slot": 0.0,
                      "attention_ms_per_kv_token": 0.0})
    d["scheduler"] = {"ms_base": 0.0, "ms_per_running": 0.0, "ms_per_waiting": 0.0}
    d["loading"].update({"cpu_to_gpu_ms": [0.0, 0.0, 0.0], "disk_to_cpu_ms": [0.0, 0.0, 0.0]})
    return d


def _renamed_copy() -> dict:
    d = _shipped_profile()
    d["name"] = "fuzz@copy"
    return d


HOSTILE_PROFILES = {  # file name -> document (text or bytes for the ones that are not JSON documents)
    "valid_copy.json": _renamed_copy(),
    "nan_decode.json": _corrupt(("step", "decode_ms", 1), math.nan),
    "inf_memory.json": _corrupt(("memory", "gpu_memory_gib"), Raw("1e400")),
    "negative_prefill.json": _corrupt(("step", "prefill_ms_per_token"), -1.0),
    "negative_decode.json": _corrupt(("step", "decode_ms"), [-20.0, -20.0, -20.0]),
    "string_lora.json": _corrupt(("step", "lora_ms_base"), "fast"),
    "zero_kv_bytes.json": _corrupt(("memory", "kv_bytes_per_token"), 0),
    "zero_block_size.json": _corrupt(("memory", "block_size"), 0),
    "empty_decode_table.json": _corrupt(("step", "decode_batch"), []),
    "empty_loading_ranks.json": _corrupt(("loading", "ranks"), []),
    "negative_max_waiting.json": _corrupt(("client", "max_waiting"), -1),
    "zero_costs.json": _zero_costs(),
    "top_level_list.json": [_shipped_profile()],
    "no_memory.json": {k: v for k, v in _shipped_profile().items() if k != "memory"},
    "not_json.json": b"profile: llama\n",
    "non_utf8.json": b"\xff\xfe\x00{\x00",
}

HOSTILE_TRACES = {  # file name -> CSV text or bytes
    "ok.csv": "arrived_at,num_prefill_tokens,num_decode_tokens\n0,100,50\n0.5,200,80\n1.25,150,60\n2.0,120,40\n",
    "negative_lengths.csv": "arrived_at,num_prefill_tokens,num_decode_tokens\n0,-100,-5\n1,-1,-1\n2,-7,-9\n",
    "huge_lengths.csv": "arrived_at,num_prefill_tokens,num_decode_tokens\n0,100000000,100000000\n1,100000000,5\n"
                        "2,3,100000000\n",
    "nan_times.csv": "arrived_at\n0\nnan\n2\n",
    "inf_text.csv": "arrived_at,num_prefill_tokens,num_decode_tokens\n0,inf,1\n1,2,3\n",
    "huge_times.csv": "arrived_at\n0\n1e308\n",
    "one_time.csv": "arrived_at\n5\n5\n5\n",
    "one_row.csv": "arrived_at\n0\n",
    "header_only.csv": "arrived_at\n",
    "no_arrived_at.csv": "time,tokens\n0,1\n1,2\n",
    "empty.csv": "",
    "non_utf8.csv": b"arrived_at\n\xff\xfe\n",
    "ragged.csv": "arrived_at,num_prefill_tokens,num_decode_tokens\n0\n1,2\n2,3,4,5\n",
}


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory) -> dict[str, str]:
    """Placeholder name ("profile:X" / "trace:X" / "missing:X" / "dir:X") -> path of a hostile file."""
    root = tmp_path_factory.mktemp("fuzz-files")
    files: dict[str, str] = {}
    for kind, docs in (("profile", HOSTILE_PROFILES), ("trace", HOSTILE_TRACES)):
        for name, doc in docs.items():
            p = root / kind / name
            p.parent.mkdir(exist_ok=True)
            if isinstance(doc, bytes):
                p.write_bytes(doc)
            elif isinstance(doc, str):
                p.write_text(doc, encoding="utf-8")
            else:
                p.write_text(to_json_text(doc), encoding="utf-8")
            files[f"{kind}:{name}"] = str(p)
    (root / "dir.json").mkdir()
    files["dir:profile"] = str(root / "dir.json")
    (root / "dir.csv").mkdir()
    files["dir:trace"] = str(root / "dir.csv")
    files["missing:profile"] = str(root / "no-such-profile.json")
    files["missing:trace"] = str(root / "no-such-trace.csv")
    PATHS.update(files)
    return files


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    """PACKER_CACHE_DIR of every CLI run: the capacity tables it builds stay out of the user's cache."""
    PATHS["cache"] = str(tmp_path_factory.mktemp("fuzz-cache"))
    return PATHS["cache"]


@pytest.fixture(scope="module", autouse=True)
def fuzz_summary(request):
    """Prints the suite's size and run time when the module ends."""
    t0 = time.perf_counter()
    yield
    wall = time.perf_counter() - t0
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    total = sum(STATS.values())
    line = (f"fuzz suite: {total} cases in {wall:.0f} s ("
            + ", ".join(f"{n} {layer}" for layer, n in sorted(STATS.items())) + "); CLI runs: "
            + ", ".join(f"{n} {what}" for what, n in sorted(OUTCOMES.items())))
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + line)


# ------------------------------------------------------------------------------------------------
# Strategies: valid documents of the schemas in packer/model.py, then hostile mutations of them.
# A mutation changes one place of a valid document (a hostile value, a field-specific extreme, a
# deleted or an unknown key), so a hostile value is usually the document's only problem and reaches
# the code behind the schema when the schema lets it through.

NAN, INF = math.nan, math.inf
HOSTILE_NUMBERS = [NAN, INF, -INF, Raw("1e400"), Raw("-1e400"), 1e308, -1e308, -1, 0, -0.0, 1e-300, 5e-324,
                   2**63, 2**64, -(2**63), 10**400]
WRONG_TYPES = ["inf", "nan", "NaN", "1e3", "", "12", [], [1], {}, {"x": 1}, None, True, False]
VLLM_RANKS = [8, 16, 32, 64]
HOSTILE_PROFILE_NAMES = (["no-such-model@h100", "", "llama-3.1-8b-instruct", LLAMA.upper(), "../profiles/x.json",
                          PLACEHOLDER + "missing:profile", PLACEHOLDER + "dir:profile"]
                         + [PLACEHOLDER + "profile:" + name for name in HOSTILE_PROFILES])
HOSTILE_TRACE_NAMES = (["nope", "", "AZURE-CONV", PLACEHOLDER + "missing:trace", PLACEHOLDER + "dir:trace"]
                       + [PLACEHOLDER + "trace:" + name for name in HOSTILE_TRACES])
HUGE = 30 * 86400 + 1  # just past the schema's 30-day limit
FIELD_EXTREMES = {  # by field name: values at or past the edges of that field
    "profile": HOSTILE_PROFILE_NAMES,
    "id": ["", "x" * 5000, "🙂", "\u0000", "a" * 3, 5],
    "rank": [0, 7, 513, 512, 2**63, 1.5],
    "rate": [1e9, 1e308, 500.0, 1e-300, Raw("1e400"), "1e9"],
    "max_loras": [0, 4096, 4097, 2**63],
    "max_cpu_loras": [0, 10**6, 2**63],
    "max_lora_rank": [0, 7, 512, 513],
    "max_num_seqs": [0, 1, 65536, 65537],
    "max_num_batched_tokens": [0, 1, 1 << 20, (1 << 20) + 1],
    "gpu_memory_utilization": [0, 1e-300, 1, 1.0000001, 0.01],
    "enable_lora": ["yes", 0, 1, False],
    "input_mean": [1e8, 1e-300, 0.4, 1e308],
    "output_mean": [1e8, 1e-300, 0.4, 1e308],
    "min_input": [0, 1, 10**9, 2**63],
    "max_input": [0, 1, 10**9, 2**63],
    "max_total": [0, 2, 10**9, 2**63],
    "distribution": ["trace", "uniform", "FIXED"],
    "kind": ["weird", "trace", "bursty", "poisson", None],
    "cv": [1e308, 1e-300, 1e6, 1e-6],
    "period_s": [1e-300, 1e308, 1e-3],
    "multiplier_sigma": [50, 1e308, 20, 1e-300],
    "trace": HOSTILE_TRACE_NAMES,
    "scale_to_rates": ["true", 0, None],
    "loop": ["false", 1, None],
    "duration_s": [1e308, HUGE, 1e-300, 0, "NaN"],
    "warmup_s": [1e308, HUGE, 1e-300, "NaN"],
    "seed": [-1, 2**63, 10**400, 1.5, "0"],
    "objective": ["max_gpus", "", "MIN_GPUS"],
    "gpus": [0, -1, 100001, 1],
    "adapters": [[], {}, "a0", [None], [[]]],
}
UNKNOWN_KEYS = ["durations_s", "rates", "Adapters", "max_lora", "ranks", "ünïcödé", "", "workload"]
JUNK_DOCUMENTS = [[], [1, 2], 0, 1e308, "scenario", None, True, {}]


def percent(p: int):
    """True ``p`` % of the time. (Hypothesis favours the ends of a range, 0 above all, so the True values sit
    in the middle of 0..99: ``st.integers(0, 99) < p`` would be True far more often than ``p`` %.)"""
    return st.integers(0, 99).map(lambda k: 40 <= k < 40 + p)


def _paths(x, here=()):
    """Every place in a JSON tree: key / index paths below the root."""
    out = []
    items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
    for k, v in items:
        out.append((*here, k))
        out.extend(_paths(v, (*here, k)))
    return out


def _mutate(draw, doc):
    """A copy of ``doc`` with one place changed for the worse (the strategies' constants are never changed)."""
    doc = copy.deepcopy(doc)
    paths = _paths(doc)
    if not paths:
        return doc
    path = draw(st.sampled_from(paths))
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    field = key if isinstance(key, str) else path[-2] if len(path) > 1 else ""
    action = draw(st.sampled_from(["hostile", "hostile", "extreme", "extreme", "delete", "unknown", "duplicate"]))
    if action == "extreme" and isinstance(key, str) and key in FIELD_EXTREMES:
        parent[key] = draw(st.sampled_from(FIELD_EXTREMES[key]))
    elif action == "delete" and isinstance(parent, dict):
        del parent[key]
    elif action == "unknown" and isinstance(parent, dict):
        parent[draw(st.sampled_from(UNKNOWN_KEYS))] = draw(st.sampled_from(HOSTILE_NUMBERS + WRONG_TYPES))
    elif action == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))  # a second adapter with the same id
    else:
        parent[key] = draw(st.sampled_from(HOSTILE_NUMBERS + WRONG_TYPES + FIELD_EXTREMES.get(field, [])))
    return doc


def hostile(valid):
    """Documents of ``valid``: about half untouched, the rest with one to three mutations (a few junk)."""
    @st.composite
    def build(draw):
        if draw(percent(3)):
            return draw(st.sampled_from(JUNK_DOCUMENTS))
        doc = draw(valid)
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 1, 2, 3]))):
            doc = _mutate(draw, doc)
        return doc
    return build()


ADAPTER_IDS = st.one_of(st.text(min_size=1, max_size=10), st.from_regex(r"[a-z]{1,6}-[0-9]{1,3}", fullmatch=True))


def adapters(ranks, max_rate: float, max_size: int):
    """1..max_size adapters with unique ids."""
    return st.lists(ADAPTER_IDS, min_size=1, max_size=max_size, unique=True).flatmap(lambda ids: st.tuples(*[
        st.fixed_dictionaries({"id": st.just(i), "rank": ranks, "rate": st.floats(0.0, max_rate)})
        for i in ids]).map(list))


@st.composite
def valid_lengths(draw, distributions=("sharegpt", "azure-conv", "fixed")):
    spec = {"distribution": draw(st.sampled_from(distributions))}
    if spec["distribution"] == "trace":
        return spec
    min_input = draw(st.integers(1, 16))
    max_input = draw(st.integers(256, 2048))
    input_mean = draw(st.floats(max(min_input, 16), min(max_input, 800)))
    max_total = draw(st.integers(math.ceil(input_mean) + 2, 4096))
    output_mean = draw(st.floats(1.0, max_total - input_mean - 1))
    spec.update(input_mean=input_mean, output_mean=output_mean)
    optional = {"min_input": min_input, "max_input": max_input, "max_total": max_total}
    spec.update({k: v for k, v in optional.items() if draw(st.booleans()) or k == "max_total"})
    if "max_input" not in spec and input_mean > 1024 or "min_input" not in spec and input_mean < 4:
        spec.update(min_input=min_input, max_input=max_input)
    return spec


VALID_ARRIVALS = st.one_of(
    st.sampled_from(["poisson", {"kind": "poisson"}, "bursty"]),
    st.fixed_dictionaries({"kind": st.just("bursty")}, optional={
        "cv": st.floats(0.2, 8.0), "period_s": st.floats(1.0, 600.0), "multiplier_sigma": st.floats(0.0, 2.0)}),
    st.fixed_dictionaries({"kind": st.just("trace"),
                           "trace": st.sampled_from(["azure-conv", "azure-code", PLACEHOLDER + "trace:ok.csv"])},
                          optional={"scale_to_rates": st.booleans(), "loop": st.booleans()}),
)


@st.composite
def valid_scenarios(draw):
    """A valid scenario file (flat format, sometimes nested) of small sizes: its twin run is quick."""
    max_rank = draw(st.sampled_from(VLLM_RANKS))
    max_loras = draw(st.integers(1, 32))
    server = {"max_loras": max_loras, "max_lora_rank": max_rank}
    for key, strat in (("max_cpu_loras", st.integers(max_loras, 96)), ("max_num_seqs", st.integers(1, 512)),
                       ("max_num_batched_tokens", st.integers(16, 8192)),
                       ("gpu_memory_utilization", st.floats(0.3, 1.0)), ("enable_lora", st.booleans())):
        if draw(st.booleans()):
            server[key] = draw(strat)
    ranks = st.one_of(st.sampled_from([r for r in VLLM_RANKS if r <= max_rank]), st.integers(1, max_rank))
    workload = {"adapters": draw(adapters(ranks, 5.0, 5))}
    arrivals = draw(st.none() | VALID_ARRIVALS)
    if arrivals is not None:
        workload["arrivals"] = arrivals
    traced = isinstance(arrivals, dict) and arrivals["kind"] == "trace"
    if draw(st.booleans()):
        workload["lengths"] = draw(valid_lengths(("sharegpt", "azure-conv", "fixed") + (("trace",) if traced else ())))
    for key, strat in (("duration_s", st.floats(1.0, 120.0)), ("warmup_s", st.floats(0.0, 30.0)),
                       ("seed", st.integers(0, 2**32))):
        if draw(st.booleans()) or key == "duration_s":  # the default duration is an hour: too long here
            workload[key] = draw(strat)
    profile = draw(st.sampled_from([LLAMA, LLAMA, QWEN, PLACEHOLDER + "profile:valid_copy.json"]))
    if draw(percent(5)):
        return {"profile": profile, "server": server, "workload": workload}  # the nested form
    return {"profile": profile, "server": server, **workload}


# A few lengths and arrivals for the placement workloads, so that the capacity tables they need are few
# (each new one is measured, seconds with the tree predictor) and cached after the first.
WORKLOAD_LENGTHS = st.sampled_from([{"distribution": "fixed", "input_mean": 100, "output_mean": 100},
                                    {"input_mean": 400.0, "output_mean": 150.0}])
WORKLOAD_ARRIVALS = st.sampled_from([{"kind": "bursty", "cv": 2.0}, {"kind": "trace", "trace": "azure-conv"}])


@st.composite
def valid_workloads(draw):
    """A valid placement workload; lengths and arrivals mostly at their defaults."""
    ranks = st.one_of(st.sampled_from([8, 16, 32]), st.integers(1, 64))
    doc = {"profile": draw(st.sampled_from([LLAMA, LLAMA, QWEN])), "adapters": draw(adapters(ranks, 60.0, 8))}
    if draw(percent(25)):
        doc["lengths"] = draw(WORKLOAD_LENGTHS)
    if draw(percent(25)):
        doc["arrivals"] = draw(WORKLOAD_ARRIVALS)
    server = draw(st.fixed_dictionaries({}, optional={
        "max_num_seqs": st.integers(1, 4096), "max_num_batched_tokens": st.integers(16, 8192),
        "gpu_memory_utilization": st.floats(0.3, 1.0)}))
    if server:
        doc["server"] = server
    if draw(st.booleans()):
        doc["objective"] = draw(st.sampled_from(["min_gpus", "min_latency"]))
    if draw(st.booleans()):
        doc["gpus"] = draw(st.integers(1, 8))
    return doc


def scenario_docs():
    return hostile(valid_scenarios())


def workload_docs():
    return hostile(valid_workloads())


# ------------------------------------------------------------------------------------------------
# The oracle


def _refuse(constant):
    raise ValueError(f"non-finite JSON literal {constant}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is not finite")
    return value


def strict_json(line: str):
    """JSON without NaN / Infinity literals or numbers that overflow to inf."""
    return json.loads(line, parse_constant=_refuse, parse_float=_finite_float)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_simulate(d: dict) -> str | None:
    need = ("throughput_tps", "offered_tps", "starved", "memory_error", "arrived", "finished")
    if missing := [k for k in need if k not in d]:
        return f"simulate answer lacks {missing}"
    if not isinstance(d["starved"], bool):
        return f"starved is {d['starved']!r}, not a bool"
    if d["memory_error"] is not None:
        return None if isinstance(d["memory_error"], str) else f"memory_error is {d['memory_error']!r}"
    thr, offered = d["throughput_tps"], d["offered_tps"]
    if not (_number(thr) and _number(offered) and thr >= 0 and offered >= 0):
        return f"throughput_tps={thr!r}, offered_tps={offered!r}: not non-negative numbers"
    if thr > 1.5 * offered + 1e-6:
        return f"throughput_tps={thr:g} exceeds 1.5 x offered_tps={offered:g}"
    # (finished may exceed arrived: the window also sees requests that arrived during the warm-up finish)
    if not all(isinstance(d[k], int) and d[k] >= 0 for k in ("finished", "arrived")):
        return f"finished={d['finished']!r} arrived={d['arrived']!r}: not counts"
    return None


def _check_predict(d: dict, predictor: str) -> str | None:
    if d.get("predictor") != predictor:
        return f"predictor is {d.get('predictor')!r}, not {predictor!r}"
    if not isinstance(d.get("starved"), bool):
        return f"starved is {d.get('starved')!r}, not a bool"
    offered, thr = d.get("offered_tps"), d.get("throughput_tps")
    if not (_number(offered) and offered >= 0):
        return f"offered_tps={offered!r}"
    if thr is not None and not (_number(thr) and 0 <= thr <= 1.5 * offered + 1e-6):
        return f"throughput_tps={thr!r} with offered_tps={offered:g}"
    return None


def _check_solve(d: dict, adapter_ids: list | None) -> str | None:
    gpus = d.get("gpus")
    if not isinstance(gpus, list) or d.get("num_gpus") != len(gpus):
        return f"num_gpus={d.get('num_gpus')!r} but {len(gpus) if isinstance(gpus, list) else gpus!r} GPU plans"
    if d.get("status") not in ("optimal", "feasible", "time_limit", "infeasible"):
        return f"status {d.get('status')!r}"
    if d["status"] == "infeasible" or adapter_ids is None:
        return None
    shares: dict = {}
    for g in gpus:
        for a in g["adapters"]:
            shares[a["id"]] = shares.get(a["id"], 0.0) + a["share"]
    if set(shares) != set(adapter_ids):
        return f"placed ids {sorted(shares)[:5]} differ from the workload's {sorted(adapter_ids)[:5]}"
    off = {k: v for k, v in shares.items() if abs(v - 1.0) > 1e-6}
    return f"adapter shares do not sum to 1: {off}" if off else None


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "(nothing)"


def verdict(argv: list[str], rc: int, stdout: str, stderr: str, *, ended: str = "exit", outputs: int = 1,
            expect: int | None = None, adapter_ids: list | None = None) -> str | None:
    """None if the outcome is acceptable, else its one-line symptom.

    ``expect`` pins the exit code where the answer is known (a valid file must be answered, a
    units mistake must be refused); ``adapter_ids`` are a workload's ids, checked against a placement.
    """
    if ended == "timeout":
        return f"no answer within {CASE_LIMIT_S} s (hang)"
    if ended == "killed":
        return f"the process died ({_last_line(stderr)})"
    if "Traceback" in stdout or "Traceback" in stderr:
        return f"traceback: {_last_line(stderr)}"
    if rc == 2:
        lines = stderr.splitlines()
        if stdout.strip():
            return f"exit 2 with output on stdout: {_last_line(stdout)}"
        if len(lines) != 1 or not lines[0].startswith("error: ") or not lines[0][len("error: "):].strip():
            return f"exit 2 without exactly one 'error: ...' line on stderr ({len(lines)} lines: {stderr[:200]!r})"
        if expect == 0:
            return f"refused an input it must answer: {lines[0][:200]}"
        return None
    if rc != 0:
        return f"exit code {rc}: {_last_line(stderr)}"
    lines = stdout.splitlines()
    if len(lines) != outputs:
        return f"exit 0 with {len(lines)} stdout lines, expected {outputs} JSON objects"
    command = argv[0]
    for line in lines:
        try:
            d = strict_json(line)
        except ValueError as e:
            return f"exit 0 but stdout is not strict finite JSON ({e})"
        if not isinstance(d, dict):
            return f"exit 0 but the JSON is a {type(d).__name__}"
        if command == "simulate":
            problem = _check_simulate(d)
        elif command == "predict":
            problem = _check_predict(d, argv[argv.index("--predictor") + 1] if "--predictor" in argv else "tree")
        else:
            problem = _check_solve(d, adapter_ids)
        if problem:
            return f"wrong answer: {problem}"
    if expect == 2:
        return f"answered an input it must refuse: {_last_line(stdout)}"
    return None


# ------------------------------------------------------------------------------------------------
# Running the CLI


# `python -m packer.cli ARGS` with its address space limited first (set in the child itself: a preexec_fn is not
# safe in a parent with threads, and run_batch's readers are threads).
LIMITED_CLI = ("import resource, runpy, sys; limit = int(sys.argv.pop(1)); "
               "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); sys.argv[0] = 'packer'; "
               "runpy.run_module('packer.cli', run_name='__main__', alter_sys=True)")


def cli_env(cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PACKER_CACHE_DIR"] = cache
    env["FUZZ_CASE_LIMIT_S"] = str(CASE_LIMIT_S)
    env["FUZZ_MEMORY_LIMIT"] = str(MEMORY_LIMIT)
    return env


def run_cli(argv: list[str], cache: str, cwd: Path) -> dict:
    """``python -m packer.cli ARGV`` in its own process (memory-limited): rc, stdout, stderr, how it ended, seconds."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-c", LIMITED_CLI, str(MEMORY_LIMIT), *argv], capture_output=True,
                           text=True, errors="replace", timeout=CASE_LIMIT_S, env=cli_env(cache), cwd=cwd,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"rc": -1, "stdout": "", "stderr": "", "ended": "timeout", "seconds": time.perf_counter() - t0}
    killed = r.returncode < 0
    return {"rc": r.returncode, "stdout": r.stdout, "ended": "killed" if killed else "exit",
            "stderr": f"{r.stderr}\nsignal {signal.Signals(-r.returncode).name}" if killed else r.stderr,
            "seconds": time.perf_counter() - t0}


def run_batch(cases: list[list[str]], cache: str, cwd: Path) -> list[dict]:
    """Every command line of ``cases`` through tests/fuzz_harness.py; one result dict per case.

    A case that gives no result within CASE_LIMIT_S (a hang the harness's alarm cannot break, such as a
    numba loop) or that kills the process is recorded as such, and the cases after it run in a new process.
    """
    results: list[dict | None] = [None] * len(cases)
    start = 0
    while start < len(cases):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=cwd) as f:
            json.dump(cases[start:], f)
        proc = subprocess.Popen([sys.executable, str(HARNESS), f.name], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace", env=cli_env(cache), cwd=cwd,
                                stdin=subprocess.DEVNULL)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout] + [lines.put(None)], daemon=True).start()
        errors: list[str] = []
        threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True).start()
        in_flight = None
        deadline = time.monotonic() + CASE_LIMIT_S + 30  # start-up, then each case
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                proc.kill()
                proc.wait()
                ended, why = "timeout", ""
                break
            if line is None:  # the process ended
                proc.wait()
                ended, why = "killed", f"harness exit {proc.returncode}: {''.join(errors)[-300:]}"
                break
            if not line.startswith("@@fuzz "):
                continue
            _, what, index, *rest = line.split(" ", 3)
            i = start + int(index)
            if what == "begin":
                in_flight = i
                deadline = time.monotonic() + CASE_LIMIT_S + 5
            else:
                results[i] = json.loads(rest[0])
                in_flight = None
        if in_flight is None:  # died between cases, or ended after the last one
            if all(r is not None for r in results[start:]):
                break
            raise RuntimeError(f"fuzz harness failed outside a case ({ended}): {why}")
        results[in_flight] = {"ended": ended, "rc": -1, "stdout": "", "stderr": why, "seconds": CASE_LIMIT_S}
        start = in_flight + 1
    return results  # type: ignore[return-value]


def judge(argv: list[str], result: dict, **expectations) -> str | None:
    """``verdict`` on a harness result (or the same keys from ``run_cli``), tallied for the summary line."""
    problem = verdict(argv, result["rc"], result["stdout"], result["stderr"], ended=result["ended"], **expectations)
    OUTCOMES["failed the oracle" if problem else "answered (exit 0)" if result["rc"] == 0 else "refused (exit 2)"] += 1
    return problem


def _write(directory: Path, name: str, doc) -> Path:
    p = directory / name
    p.write_text(to_json_text(doc), encoding="utf-8")
    return p


def _ids(doc) -> list | None:
    """The adapter ids of a workload document, when it has a plain list of adapters."""
    if isinstance(doc, dict) and isinstance(doc.get("adapters"), list):
        return [a.get("id") if isinstance(a, dict) else None for a in doc["adapters"]]
    return None


def _report(failures: list[str]) -> str:
    return f"{len(failures)} fuzz case(s) failed:\n" + "\n".join(failures)


# ------------------------------------------------------------------------------------------------
# Layer 1: the schema layer in-process


@contextmanager
def alarm(seconds: int):
    def on_alarm(signum, frame):
        raise TimeoutError(f"did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _all_finite(x, where: str = "") -> str | None:
    if isinstance(x, dict):
        return next((p for k, v in x.items() if (p := _all_finite(v, f"{where}.{k}"))), None)
    if isinstance(x, (list, tuple)):
        return next((p for i, v in enumerate(x) if (p := _all_finite(v, f"{where}[{i}]"))), None)
    if isinstance(x, float) and not math.isfinite(x):
        return f"{where.lstrip('.')} = {x}"
    return None


def _schema_outcome(parse, doc, files) -> None:
    """The document as the CLI reads it, parsed: an InputError of one line, or a model of finite numbers."""
    data = json.loads(to_json_text(resolve(doc, files)))
    with alarm(SCHEMA_LIMIT_S):
        try:
            model = parse(data)
        except InputError as e:
            message = str(e)
            assert message.strip() and "\n" not in message, f"InputError is not one non-empty line: {message!r}"
            return
    bad = _all_finite(model.model_dump())
    assert bad is None, f"accepted a non-finite value: {bad}"


def _parse_scenario_and_profile(data):
    sc = parse_scenario(data)
    load_profile(sc.profile)  # as the CLI does before running anything
    return sc


@settings(max_examples=400, **FUZZ_SETTINGS)
@given(doc=scenario_docs())
@pytest.mark.usefixtures("hostile_files")
def test_scenario_schema_in_process(doc):
    """Scenario documents: refused with one line, or parsed into finite values; never another exception."""
    STATS["in-process scenario documents"] += 1
    _schema_outcome(_parse_scenario_and_profile, doc, PATHS)


@settings(max_examples=400, **FUZZ_SETTINGS)
@given(doc=workload_docs())
@pytest.mark.usefixtures("hostile_files")
def test_workload_schema_in_process(doc):
    """Placement workload documents, the same oracle."""
    STATS["in-process workload documents"] += 1
    _schema_outcome(parse_workload, doc, PATHS)


@pytest.mark.parametrize("name", sorted(HOSTILE_PROFILES))
def test_hostile_profile_file_in_process(name, hostile_files):
    """A profile file is refused with one line, or loads with finite, usable numbers."""
    STATS["in-process profile files"] += 1
    try:
        with alarm(SCHEMA_LIMIT_S):
            prof = load_profile(hostile_files[f"profile:{name}"])
    except InputError as e:
        assert str(e).strip() and "\n" not in str(e)
        return
    import dataclasses
    values = {k: dataclasses.asdict(getattr(prof, k)) for k in ("memory", "step", "scheduler", "loading", "client")}
    assert _all_finite(values) is None, f"profile {name} loaded with {_all_finite(values)}"
    assert prof.memory.kv_bytes_per_token > 0 and prof.memory.block_size > 0, f"profile {name} loaded unusable memory"
    assert min(prof.step.decode_ms) >= 0 and prof.step.prefill_ms_per_token >= 0, f"profile {name}: negative costs"


# ------------------------------------------------------------------------------------------------
# Layer 2: hypothesis batches through the CLI

# Each example is a batch run by one harness process; its falsifying example is not printed (the assertion
# names every failing document of the batch instead).
SCENARIO_BATCH = 30
WORKLOAD_BATCH = 15


def _run_generated(docs: list, stem: str, commands, stat: str, judge_kw=lambda doc: {}) -> None:
    """Write each generated document, run ``commands(i, path)`` (argument lists) for it in one harness
    batch, and judge every run; the failures name the command and the document."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cases, owner = [], []
        for i, doc in enumerate(docs):
            path = str(_write(d, f"{stem}-{i}.json", resolve(doc, PATHS)))
            for argv in commands(i, path):
                cases.append(argv)
                owner.append(i)
        results = run_batch(cases, PATHS["cache"], d)
    STATS[stat] += len(cases)
    failures = [f"{' '.join(argv[:1] + argv[2:])}: {problem}\n    {to_json_text(docs[i])[:400]}"
                for argv, r, i in zip(cases, results, owner) if (problem := judge(argv, r, **judge_kw(docs[i])))]
    assert not failures, _report(failures)


@settings(max_examples=4, verbosity=Verbosity.quiet, **FUZZ_SETTINGS)
@given(docs=st.lists(scenario_docs(), min_size=SCENARIO_BATCH, max_size=SCENARIO_BATCH))
@pytest.mark.usefixtures("hostile_files", "cache_dir")
def test_scenario_files_through_cli(docs):
    """simulate, predict (tree) and predict (twin) on each generated scenario file."""
    _run_generated(docs, "scenario", lambda i, path: [["simulate", path, "--json"], ["predict", path, "--json"],
                                                      ["predict", path, "--json", "--predictor", "twin"]],
                   "CLI runs of generated scenario files")


@settings(max_examples=4, verbosity=Verbosity.quiet, **FUZZ_SETTINGS)
@given(docs=st.lists(workload_docs(), min_size=WORKLOAD_BATCH, max_size=WORKLOAD_BATCH))
@pytest.mark.usefixtures("hostile_files", "cache_dir")
def test_workload_files_through_cli(docs):
    """solve (tree predictor) on each generated workload file; the first few with twin verification."""
    _run_generated(docs, "workload",
                   lambda i, path: [["solve", path, "--json", "--predictor", "tree", *([] if i < 3 else ["--no-verify"])]],
                   "CLI runs of generated workload files", lambda doc: {"adapter_ids": _ids(doc)})


# ------------------------------------------------------------------------------------------------
# Layer 3: hand-picked hostile files, each in its own `python -m packer.cli` process


def small_scenario(**over) -> dict:
    """A valid, quick scenario on the shipped Llama profile."""
    doc = {"profile": LLAMA, "server": {"max_loras": 4, "max_lora_rank": 16},
           "adapters": [{"id": "a", "rank": 8, "rate": 0.5}, {"id": "b", "rank": 16, "rate": 0.3}],
           "duration_s": 60, "seed": 1}
    doc.update(over)
    return doc


def small_workload(**over) -> dict:
    doc = {"profile": LLAMA, "adapters": [{"id": "a", "rank": 8, "rate": 0.5}, {"id": "b", "rank": 16, "rate": 1.5}]}
    doc.update(over)
    return doc


def rate(value) -> list[dict]:
    return [{"id": "a", "rank": 8, "rate": value}]


def bursty(**spec) -> dict:
    return {"kind": "bursty", **spec}


def trace(name: str, lengths: bool = True) -> dict:
    over = {"arrivals": {"kind": "trace", "trace": PLACEHOLDER + name}}
    if lengths:
        over["lengths"] = {"distribution": "trace"}
    return over


VALID_TEXT = to_json_text(small_scenario())
CRASH_WORKLOAD = {"profile": LLAMA, "adapters": [{"id": "hot", "rank": 8, "rate": 42.4075}]}

# case id -> (command before the file, the file (document, text or bytes; "DIR" / "MISSING" for those),
#             the command after the file, the exit code it must have (None: 0 or 2))
HAND_PICKED = {
    # the file itself
    "simulate-non-utf8": (["simulate"], b'{"profile": "\xff\xfe"}', ["--json"], 2),
    "simulate-utf8-bom": (["simulate"], "\ufeff" + VALID_TEXT, ["--json"], None),
    "simulate-deep-nesting": (["simulate"], "[" * 100000, ["--json"], 2),
    "solve-deep-nesting-objects": (["solve"], '{"a":' * 100000, ["--json", "--no-verify"], 2),
    "simulate-truncated": (["simulate"], VALID_TEXT[: len(VALID_TEXT) // 2], ["--json"], 2),
    "simulate-nan-literal-rate": (["simulate"], small_scenario(adapters=rate(NAN)), ["--json"], 2),
    "simulate-top-level-list": (["simulate"], [small_scenario()], ["--json"], 2),
    "simulate-top-level-number": (["simulate"], "42", ["--json"], 2),
    "simulate-top-level-string": (["simulate"], '"scenario"', ["--json"], 2),
    "simulate-empty-file": (["simulate"], b"", ["--json"], 2),
    "simulate-directory": (["simulate"], "DIR", ["--json"], 2),
    "simulate-missing-path": (["simulate"], "MISSING", ["--json"], 2),
    "solve-missing-path": (["solve"], "MISSING", ["--json"], 2),
    # numbers that no server could mean
    "simulate-rate-1e308": (["simulate"], small_scenario(adapters=rate(1e308)), ["--json"], 2),
    "simulate-rate-1e9": (["simulate"], small_scenario(adapters=rate(1e9)), ["--json"], 2),
    "simulate-rate-1e400-literal": (["simulate"], small_scenario(adapters=rate(Raw("1e400"))), ["--json"], 2),
    "simulate-rate-string-inf": (["simulate"], small_scenario(adapters=rate("inf")), ["--json"], 2),
    "solve-rate-10**400": (["solve"], small_workload(adapters=rate(10**400)), ["--json", "--no-verify"], 2),
    "simulate-rank-2**63": (["simulate"], small_scenario(adapters=[{"id": "a", "rank": 2**63, "rate": 1}]), ["--json"], 2),
    "simulate-seed-10**400": (["simulate"], small_scenario(seed=10**400), ["--json"], None),
    "simulate-duration-nan-string": (["simulate"], small_scenario(duration_s="NaN"), ["--json"], 2),
    "simulate-duration-nan-literal": (["simulate"], small_scenario(duration_s=NAN), ["--json"], 2),
    "simulate-duration-string-inf": (["simulate"], small_scenario(duration_s="inf"), ["--json"], 2),
    "simulate-bursty-sigma-50": (["simulate"], small_scenario(arrivals=bursty(multiplier_sigma=50)), ["--json"], None),
    "simulate-bursty-cv-1e308": (["simulate"], small_scenario(arrivals=bursty(cv=1e308)), ["--json"], None),
    "simulate-bursty-cv-1e-300": (["simulate"], small_scenario(arrivals=bursty(cv=1e-300)), ["--json"], None),
    "simulate-bursty-period-1e-300": (["simulate"], small_scenario(arrivals=bursty(period_s=1e-300)), ["--json"], None),
    "simulate-fixed-lengths-1e8": (["simulate"], small_scenario(lengths={
        "distribution": "fixed", "input_mean": 1e8, "output_mean": 1e8, "max_input": 10**9, "max_total": 10**9}),
        ["--json"], None),
    "simulate-unicode-duplicate-ids": (["simulate"], small_scenario(adapters=[
        {"id": "ü🙂", "rank": 8, "rate": 1}, {"id": "ü🙂", "rank": 8, "rate": 1}]), ["--json"], 2),
    "simulate-empty-adapters": (["simulate"], small_scenario(adapters=[]), ["--json"], 2),
    # trace arrivals
    "simulate-trace-negative-lengths": (["simulate"], small_scenario(**trace("trace:negative_lengths.csv")),
                                        ["--json"], None),
    "simulate-trace-100M-token-lengths": (["simulate"], small_scenario(**trace("trace:huge_lengths.csv")),
                                          ["--json"], None),
    "simulate-trace-missing-csv": (["simulate"], small_scenario(**trace("missing:trace")), ["--json"], 2),
    "simulate-trace-non-utf8-csv": (["simulate"], small_scenario(**trace("trace:non_utf8.csv", False)), ["--json"], 2),
    "simulate-trace-huge-times": (["simulate"], small_scenario(**trace("trace:huge_times.csv", False)), ["--json"], None),
    "simulate-trace-directory": (["simulate"], small_scenario(**trace("dir:trace", False)), ["--json"], 2),
    # hostile profile files
    "simulate-profile-nan-coefficient": (["simulate"], small_scenario(profile=PLACEHOLDER + "profile:nan_decode.json"),
                                         ["--json"], 2),
    "simulate-profile-negative-coefficient": (["simulate"], small_scenario(
        profile=PLACEHOLDER + "profile:negative_decode.json"), ["--json"], 2),
    "simulate-profile-string-coefficient": (["simulate"], small_scenario(
        profile=PLACEHOLDER + "profile:string_lora.json"), ["--json"], 2),
    "simulate-profile-zero-kv-bytes": (["simulate"], small_scenario(profile=PLACEHOLDER + "profile:zero_kv_bytes.json"),
                                       ["--json"], 2),
    "simulate-profile-zero-block-size": (["simulate"], small_scenario(
        profile=PLACEHOLDER + "profile:zero_block_size.json"), ["--json"], 2),
    "simulate-profile-top-level-list": (["simulate"], small_scenario(profile=PLACEHOLDER + "profile:top_level_list.json"),
                                        ["--json"], 2),
    "simulate-profile-zero-costs": (["simulate"], small_scenario(profile=PLACEHOLDER + "profile:zero_costs.json"),
                                    ["--json"], None),
    "simulate-profile-unknown-name": (["simulate"], small_scenario(profile="gpt-5@h100"), ["--json"], 2),
    "simulate-profile-copy-of-shipped": (["simulate"], small_scenario(profile=PLACEHOLDER + "profile:valid_copy.json"),
                                         ["--json"], 0),
    # predict
    "predict-tree-rate-1e308": (["predict"], small_scenario(adapters=rate(1e308)), ["--json"], 2),
    "predict-tree-profile-nan-coefficient": (["predict"], small_scenario(
        profile=PLACEHOLDER + "profile:nan_decode.json"), ["--json"], 2),
    "predict-twin-profile-zero-costs": (["predict"], small_scenario(profile=PLACEHOLDER + "profile:zero_costs.json"),
                                        ["--json", "--predictor", "twin"], None),
    "predict-twin-rate-1e9": (["predict"], small_scenario(adapters=rate(1e9)), ["--json", "--predictor", "twin"], 2),
    "predict-tree-valid-then-invalid": (["predict", "VALID"], small_scenario(duration_s=-1), ["--json"], 2),
    # solve
    "solve-reported-crash-no-verify": (["solve"], CRASH_WORKLOAD, ["--json", "--no-verify"], 0),
    "solve-reported-crash-verified": (["solve"], CRASH_WORKLOAD, ["--json"], 0),
    "solve-rate-1e9": (["solve"], small_workload(adapters=rate(1e9)), ["--json", "--no-verify"], 2),
    "solve-rate-1e308": (["solve"], small_workload(adapters=rate(1e308)), ["--json", "--no-verify"], 2),
    "solve-empty-adapters": (["solve"], small_workload(adapters=[]), ["--json", "--no-verify"], 2),
    "solve-all-rates-zero": (["solve"], small_workload(adapters=[{"id": "a", "rank": 8, "rate": 0}]),
                             ["--json", "--no-verify"], None),
    "solve-profile-nan-coefficient": (["solve"], small_workload(profile=PLACEHOLDER + "profile:nan_decode.json"),
                                      ["--json", "--no-verify"], 2),
    "solve-bursty-extreme-verified": (["solve"], small_workload(arrivals=bursty(cv=1e-300, multiplier_sigma=50)),
                                      ["--json", "--predictor", "tree"], None),
    "solve-shipped-example-verified": (["solve"], json.loads((REPO / "packer" / "examples" / "workload.json")
                                                             .read_text(encoding="utf-8")), ["--json"], 0),
    "simulate-valid-small": (["simulate"], small_scenario(), ["--json"], 0),
}


# Cases where the process itself matters (its stack, its memory, several files on one command line), or
# that the lead's list names as the must-answer examples: each in its own `python -m packer.cli`.
OWN_PROCESS = {"simulate-non-utf8", "simulate-deep-nesting", "simulate-directory", "simulate-missing-path",
               "simulate-empty-file", "simulate-rate-1e9", "predict-tree-valid-then-invalid",
               "solve-reported-crash-verified", "solve-shipped-example-verified", "simulate-valid-small"}


def _materialize(case: str, directory: Path, hostile_files: dict[str, str]) -> list[str]:
    """The case's file(s) written under ``directory``; its command line."""
    before, doc, after, _ = HAND_PICKED[case]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "input.json"
    if doc == "DIR":
        path.mkdir()
    elif doc == "MISSING":
        path = directory / "no-such-file.json"
    elif isinstance(doc, bytes):
        path.write_bytes(doc)
    elif isinstance(doc, str):
        path.write_text(doc, encoding="utf-8")
    else:
        _write(directory, path.name, resolve(doc, hostile_files))
    before = [b if b != "VALID" else str(_write(directory, "valid.json", small_scenario())) for b in before]
    return [*before, str(path), *after]


@pytest.fixture(scope="module")
def hand_picked_batch(hostile_files, cache_dir, tmp_path_factory) -> dict[str, tuple[list[str], dict]]:
    """The hand-picked cases not run in their own process, through one harness batch: case -> (argv, result)."""
    root = tmp_path_factory.mktemp("hand-picked")
    cases = {case: _materialize(case, root / case, hostile_files) for case in sorted(HAND_PICKED) if case not in OWN_PROCESS}
    results = run_batch(list(cases.values()), cache_dir, root)
    return {case: (argv, r) for (case, argv), r in zip(cases.items(), results)}


@pytest.mark.parametrize("case", sorted(HAND_PICKED))
def test_hand_picked_file(case, hostile_files, cache_dir, tmp_path, request):
    """One hostile file through the CLI: the oracle, and the exit code where it is known."""
    expect = HAND_PICKED[case][3]
    if case in OWN_PROCESS:
        STATS["hand-picked files, own CLI process"] += 1
        argv = _materialize(case, tmp_path, hostile_files)
        r = run_cli(argv, cache_dir, tmp_path)
    else:
        STATS["hand-picked files, harness batch"] += 1
        argv, r = request.getfixturevalue("hand_picked_batch")[case]
    doc = HAND_PICKED[case][1]
    problem = judge(argv, r, expect=expect, outputs=len(argv) - len(HAND_PICKED[case][2]) - 1,
                    adapter_ids=_ids(doc) if argv[0] == "solve" else None)
    assert problem is None, f"{case}: {problem}"
    if expect == 2:
        assert r["seconds"] < REFUSE_QUICKLY_S, f"{case}: refused after {r['seconds']:.1f} s, not quickly"
