"""The one safe reader and writer (packer/files.py) and everything that reads through it: bad files give
one ``InputError`` line naming the file, cached capacities are range-checked and re-measured when they
fail, trace CSVs are range-checked, and no NaN or Infinity ever reaches JSON output."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import LLAMA, llama_scenario, tiny_profile
from packer.errors import InputError
from packer.files import dumps, json_ready, read_csv, read_json, read_npz, write_json_atomic
from packer.model import LengthSpec, PoissonArrivals, Workload
from packer.predictors import TwinPredictor
from packer.predictors.tree_io import load_model, model_path
from packer.profile import Profile, list_profiles, load_profile
from packer.capacity import cache as cap
from packer.capacity import CapacityModel, build_capacity_model
from packer.model import ServerDefaults
from packer.twin.traces import MAX_TRACE_TOKENS
from packer.twin.workload_gen import generate_requests

REPO = Path(__file__).resolve().parents[1]


def strict_loads(text: str):
    """json.loads that refuses NaN / Infinity, as any standard JSON parser does."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def one_line(e: Exception) -> str:
    s = str(e)
    assert "\n" not in s and s.strip() == s and s
    return s


# ---- read_json ----------------------------------------------------------------------------------

BAD_JSON = {
    "latin1.json": (b'{"id": "caf\xe9"}', "not UTF-8 text (byte 0xe9 at offset 11)"),
    "bom-latin1.json": (b'\xef\xbb\xbf{"id": "caf\xe9"}', "not UTF-8 text (byte 0xe9 at offset 14)"),
    "deep.json": (b"[" * 100_000, "nested too deeply"),
    "nan.json": (b'{"adapters": [{"rate": NaN}]}', "adapters[0].rate is NaN, which is not a finite JSON number"),
    "inf.json": (b'{"rate": Infinity}', "rate is Infinity"),
    "neginf.json": (b'[1, -Infinity]', "[1] is -Infinity"),
    "overflow.json": (b'{"a": {"b": [0, 1e999]}}', "a.b[1] is 1e999"),
    "truncated.json": (b'{"profile": "x", "adapters": [', "not valid JSON (line 1, column 31: Expecting value)"),
    "empty.json": (b"", "empty"),
    "digits.json": (b"1" * 5000, "not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD_JSON))
def test_bad_json_is_one_line_naming_the_file(tmp_path, name):
    content, problem = BAD_JSON[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_json(path, field="scenario")
    msg = one_line(info.value)
    assert info.value.field == "scenario"
    assert msg.startswith(f"scenario: {path}: ") and problem in msg and ";" in msg  # the problem, then the fix


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: None, "no such file"),
])
def test_paths_that_are_not_files(tmp_path, make, problem):
    path = tmp_path / "x.json"
    make(path)
    with pytest.raises(InputError) as info:
        read_json(path)
    assert str(path) in one_line(info.value) and problem in str(info.value)


def test_valid_json_reads_as_json_loads(tmp_path):
    data = {"id": "café ü", "rate": 0.1, "n": [1, 2.5, None, True], "nested": {"a": [[]]}}
    plain, bom = tmp_path / "plain.json", tmp_path / "bom.json"
    plain.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(data).encode())
    assert read_json(plain) == data and read_json(bom) == data
    nan = tmp_path / "nan.json"
    nan.write_text('{"x": NaN}')
    assert math.isnan(read_json(nan, allow_nan=True)["x"])  # only where a caller allows it


# ---- read_csv -----------------------------------------------------------------------------------

def test_csv_rows_keep_their_line_numbers_and_check_ranges(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('\ufeff a , b\n1,2\n\n"x\ny",3\n4,-5\n', encoding="utf-8")  # BOM, blank line, quoted newline
    t = read_csv(path, required=("a", "b"))
    assert t.header == ["a", "b"] and t.lines == [2, 4, 6]
    assert [r for _, r in t.records()] == [{"a": "1", "b": "2"}, {"a": "x\ny", "b": "3"}, {"a": "4", "b": "-5"}]
    with pytest.raises(InputError) as info:
        t.numbers("b", minimum=0)
    assert one_line(info.value) == (f"file: {path}, line 6, column 'b': '-5' is below 0; "
                                    "write a value of at least 0")
    with pytest.raises(InputError, match=r"line 4, column 'a': 'x\\ny' is not a finite number"):
        t.numbers("a")


@pytest.mark.parametrize("content, problem", [
    (b"", "is empty"),
    (b"\n\n", "is empty"),
    (b"x,y\n1,2\n", "no 'arrived_at' column (columns: x, y)"),
    (b"arrived_at\n\xff\n", "not UTF-8 text (byte 0xff at offset 11)"),
    (b"arrived_at\n" + b"1" * 200_000 + b"\n", "line 2: not valid CSV"),
])
def test_bad_csv_is_one_line_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_csv(path, field="arrivals.trace", required=("arrived_at",))
    msg = one_line(info.value)
    assert str(path) in msg and problem in msg


# ---- read_npz -----------------------------------------------------------------------------------

def test_npz_reader_refuses_truncated_pickled_and_incomplete_files(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, a=np.arange(3), b=np.ones(2))
    assert set(read_npz(good, required=("a",))) == {"a", "b"}
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, a=np.array([{"x": 1}], dtype=object))
    for path, problem in ((truncated, "not a readable NPZ file"), (pickled, "not a readable NPZ file")):
        with pytest.raises(InputError) as info:
            read_npz(path, field="model")
        assert str(path) in one_line(info.value) and problem in str(info.value)
    with pytest.raises(InputError, match="lacks the arrays c"):
        read_npz(good, required=("a", "c"))


# ---- the one JSON encoder -------------------------------------------------------------------------

class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: float
    tags: tuple


def test_json_ready_makes_plain_json_values():
    x = {"f": np.float32(0.5), "i": np.int64(3), "b": np.bool_(True), "arr": np.array([[1.0, np.nan]]),
         "t": (1, math.inf), "e": Colour.RED, "p": Point(-math.inf, ("a",)), 7: "int key", Colour.RED: 1,
         "path": Path("/x/y")}
    assert json_ready(x) == {"f": 0.5, "i": 3, "b": True, "arr": [[1.0, None]], "t": [1, None], "e": "red",
                             "p": {"x": None, "tags": ["a"]}, 7: "int key", "red": 1, "path": "/x/y"}
    assert type(json_ready(np.int64(3))) is int and type(json_ready(np.float64(2.0))) is float
    assert json_ready([1.23456789, 0.0, 1234567.0], digits=3) == [1.23, 0.0, 1230000.0]


def test_dumps_is_json_dumps_for_finite_values():
    obj = {"a": [1, 2.5, "x", None, True], "b": {"c": 1e-300, "d": (0.1,)}, "é": -0.0}
    for kw in ({}, {"indent": 1, "sort_keys": True}, {"separators": (",", ":")}):
        assert dumps(obj, **kw) == json.dumps(obj, **kw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=5)
    | st.floats().map(np.float64) | st.integers(-2**31, 2**31 - 1).map(np.int32),
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=3) | st.integers(), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(json_values)
def test_dumps_never_emits_nan_or_infinity(x):
    text = dumps(x)
    back = strict_loads(text)  # valid standard JSON
    assert back == strict_loads(dumps(back))  # and plain values: a second pass changes nothing


def test_write_json_atomic_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "c.json"
    write_json_atomic(path, {"entries": [[8, 1, 1, 1.5]]})
    before = path.read_bytes()
    assert json.loads(before) == {"entries": [[8, 1, 1, 1.5]]}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"entries": {1, 2}})  # a set is not JSON: nothing is written
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["c.json"]


# ---- the CLI on bad files -------------------------------------------------------------------------

def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "packer.cli", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, cwd=REPO)


def one_error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2 and out.stdout == "", (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out.stderr, out.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["simulate", "solve", "predict"])
def test_cli_refuses_bad_files_in_one_line(tmp_path, command):
    for name in ("latin1.json", "deep.json", "nan.json", "truncated.json", "empty.json"):
        path = tmp_path / name
        path.write_bytes(BAD_JSON[name][0])
        line = one_error_line(cli(command, str(path)))
        assert str(path) in line and BAD_JSON[name][1] in line
    line = one_error_line(cli(command, str(tmp_path / "missing.json")))
    assert "missing.json: no such file" in line


def test_predict_json_is_standard_json(tmp_path):
    paths = []
    for name, over in (("light.json", {}), ("memory.json", {"server": {"max_loras": 384, "max_cpu_loras": 384,
                                                                      "max_lora_rank": 256}})):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(llama_scenario(duration_s=60, **over)))
    out = cli("predict", *map(str, paths), "--json")
    assert out.returncode == 0, out.stderr
    objs = [strict_loads(line) for line in out.stdout.strip().splitlines()]
    assert len(objs) == 2 and objs[0]["memory_error"] is None and objs[1]["memory_error"]
    assert objs[1]["throughput_tps"] is None or math.isfinite(objs[1]["throughput_tps"])


# ---- model files --------------------------------------------------------------------------------

def _npz_with(tmp_path, name: str, change) -> Path:
    arrays = dict(np.load(model_path(LLAMA, "forest"), allow_pickle=False))
    change(arrays)
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _bad_models(tmp_path) -> dict[str, tuple[Path, str]]:
    shipped_npz, shipped_json = model_path(LLAMA, "forest"), model_path(LLAMA, "tree")
    truncated_npz = tmp_path / "truncated.npz"
    truncated_npz.write_bytes(shipped_npz.read_bytes()[: shipped_npz.stat().st_size // 2])
    truncated_json = tmp_path / "truncated.json"
    truncated_json.write_bytes(shipped_json.read_bytes()[:1000])
    d = json.loads(shipped_json.read_text())
    del d["heads"]["ratio"]["trees"][0]["threshold"]
    no_threshold = tmp_path / "no_threshold.json"
    no_threshold.write_text(json.dumps(d))
    return {
        "truncated npz": (truncated_npz, "not a readable NPZ file"),
        "missing arrays": (_npz_with(tmp_path, "missing.npz", lambda a: a.pop("itl.value")),
                           "lacks the arrays itl.value"),
        "text thresholds": (_npz_with(tmp_path, "text.npz",
                                      lambda a: a.update({"ratio.threshold": a["ratio.threshold"].astype(str)})),
                            "'threshold' node column is not a 1-D array of numbers"),
        "NaN leaves": (_npz_with(tmp_path, "nan.npz", lambda a: a["starved.value"].__setitem__(3, np.nan)),
                       "NaN or infinite"),
        "bad roots": (_npz_with(tmp_path, "roots.npz", lambda a: a["ratio.roots"].__setitem__(1, 10**9)),
                      "do not fit together"),
        "truncated json": (truncated_json, "not valid JSON"),
        "tree without thresholds": (no_threshold, "node lists"),
    }


def test_corrupt_model_files_are_one_clear_error(tmp_path):
    for case, (path, problem) in _bad_models(tmp_path).items():
        with pytest.raises(InputError) as info:
            load_model(path)
        msg = one_line(info.value)
        assert info.value.field == "model" and str(path) in msg and problem in msg, case


def test_predict_refuses_a_corrupt_model_in_one_line(tmp_path):
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps(llama_scenario(duration_s=60)))
    for path, problem in list(_bad_models(tmp_path).values())[:2]:
        line = one_error_line(cli("predict", str(scenario), "--predictor", "forest", "--model", str(path)))
        assert line.startswith(f"error: --model: {path}: ") and problem in line


# ---- trace CSVs ---------------------------------------------------------------------------------

def _trace_workload(path: Path) -> Workload:
    return Workload(adapters=[{"id": "a", "rank": 8, "rate": 1.0}], duration_s=10.0,
                    arrivals={"kind": "trace", "trace": str(path)}, lengths={"distribution": "trace"})


@pytest.mark.parametrize("row, problem", [
    ("2,-5,3", "line 3, column 'num_prefill_tokens': '-5' is below 0"),
    ("2,5,100000000", f"line 3, column 'num_decode_tokens': '100000000' is above {MAX_TRACE_TOKENS}"),
    ("2,5.5,3", "line 3, column 'num_prefill_tokens': '5.5' is not a whole number"),
    ("nan,5,3", "line 3, column 'arrived_at': 'nan' is not a finite number"),
    ("-1,5,3", "line 3, column 'arrived_at': '-1' is below 0"),
    ("inf,5,3", "line 3, column 'arrived_at': 'inf' is not a finite number"),
])
def test_trace_csv_values_are_range_checked(tmp_path, row, problem):
    path = tmp_path / "trace.csv"
    path.write_text(f"arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,2\n{row}\n4,7,1\n")
    with pytest.raises(InputError) as info:
        generate_requests(_trace_workload(path))
    assert info.value.field == "arrivals.trace" and f"{path}, {problem}" in one_line(info.value)


def test_trace_csv_in_range_is_replayed(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text(f"arrived_at,num_prefill_tokens,num_decode_tokens\n0,{MAX_TRACE_TOKENS},0\n2.5,7.0,3\n")
    req = generate_requests(_trace_workload(path))
    assert req.prompt_len[:2].tolist() == [MAX_TRACE_TOKENS, 7] and req.output_len[:2].tolist() == [1, 3]


# ---- the capacity cache -------------------------------------------------------------------------

TINY = tiny_profile(step_ms=10.0)
LENGTHS = LengthSpec(distribution="fixed", input_mean=16, output_mean=4)
BASE = ServerDefaults(max_num_seqs=256)


def _build(max_count: int = 3):
    """A small real capacity build (the twin on the tiny profile); returns (model, twin calls)."""
    twin = TwinPredictor(duration_s=5.0, warmup_s=0.0, profile=TINY)
    model = build_capacity_model(twin, TINY, LENGTHS, PoissonArrivals(), BASE, [8], max_count, workers=1)
    return model, twin.calls


def _cache_file() -> Path:
    (path,) = cap.cache_dir().glob("*.json")
    return path


def _same(a: CapacityModel, b: CapacityModel) -> bool:
    """The same table, up to the last bits of a capacity (a re-measurement starts from a capacity
    divided back into a rate, which may differ from the rate first found by an ulp)."""
    return a.table.keys() == b.table.keys() and all(
        [(c.max_adapters, c.max_loras) for c in a.table[R]] == [(c.max_adapters, c.max_loras) for c in b.table[R]]
        and np.allclose([c.capacity_tps for c in a.table[R]], [c.capacity_tps for c in b.table[R]], rtol=1e-9, atol=0)
        for R in a.table)


def _rewritten_as(path: Path, good: bytes) -> bool:
    """The cache file holds the measured rows again (every one trusted)."""
    rows, want = json.loads(path.read_bytes())["entries"], json.loads(good)["entries"]
    return ([r[:3] for r in rows] == [r[:3] for r in want]
            and np.allclose([r[3] for r in rows], [r[3] for r in want], rtol=1e-9, atol=0))


CORRUPT_ROWS = {  # (row index, how the row is spoiled)
    "NaN": (0, lambda r: r.__setitem__(3, math.nan)),
    "Infinity": (1, lambda r: r.__setitem__(3, math.inf)),
    "1e308": (2, lambda r: r.__setitem__(3, 1e308)),
    "zero": (0, lambda r: r.__setitem__(3, 0.0)),
    "negative": (1, lambda r: r.__setitem__(3, -1)),
    "string rank": (0, lambda r: r.__setitem__(0, "8")),
    "other rank class": (1, lambda r: r.__setitem__(0, 16)),
    "fractional slots": (2, lambda r: r.__setitem__(2, 1.5)),
    "no slots": (2, lambda r: r.__setitem__(2, 0)),
    "boolean count": (0, lambda r: r.__setitem__(1, True)),
    "short row": (1, lambda r: r.pop()),
}


def test_corrupt_cache_entries_are_measured_again_and_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path))
    honest, calls = _build()
    assert calls > 0
    path = _cache_file()
    good = path.read_bytes()
    assert _build() == (honest, 0)  # a sound cache is trusted: no predictor call
    for case, (i, spoil) in CORRUPT_ROWS.items():
        data = json.loads(good)
        spoil(data["entries"][i])
        path.write_text(json.dumps(data))  # json.dumps writes NaN / Infinity as the literals
        model, calls = _build()
        assert calls > 0, f"{case}: the spoiled entry was trusted"
        assert _same(model, honest), case
        assert _rewritten_as(path, good), f"{case}: the cache was not rewritten with the measurement"
    for case, text in (("truncated", good[: len(good) // 2]), ("not an object", b"[1, 2]"),
                       ("no entries", b'{"rows": []}'), ("not UTF-8", b"\xff" + good)):
        path.write_bytes(text)
        model, calls = _build()
        assert calls > 0 and _same(model, honest) and _rewritten_as(path, good), case


def test_a_false_zero_capacity_does_not_stick(tmp_path, monkeypatch):
    # A zero at one adapter once made every later run fail with "cannot serve" until the file was deleted.
    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path))
    honest, _ = _build()
    path = _cache_file()
    good = path.read_bytes()
    path.write_text(json.dumps({"entries": [[8, n, 1, 0.0] for n in (1, 2, 3)]}))
    model, calls = _build()
    assert calls > 0 and _same(model, honest) and _rewritten_as(path, good)


def test_zero_capacity_is_trusted_only_where_no_server_starts():
    # Rank 8 slots of 1 GiB leave a 1 GiB tiny GPU no KV cache: no server, so capacity 0 is the truth.
    starved = dataclasses.replace(TINY, memory=dataclasses.replace(TINY.memory, slot_mib_per_rank=128.0))
    assert starved.memory.startup_error(1, 8, BASE.gpu_memory_utilization, True) is not None
    zeros = [[8, 1, 1, 0.0], [8, 2, 1, 0.0]]
    assert set(cap.trusted_rows(zeros, 8, starved, BASE)) == {1, 2}
    assert cap.trusted_rows([[8, 1, 1, 500.0]], 8, starved, BASE) == {}  # capacity where nothing starts
    assert cap.trusted_rows(zeros, 8, TINY, BASE) == {}  # a server starts: a zero must be measured
    # more slots than the memory model lets start
    huge = dataclasses.replace(TINY, memory=dataclasses.replace(TINY.memory, slot_mib_per_rank=4.0))
    assert set(cap.trusted_rows([[8, 20, 2, 10.0], [8, 40, 40, 10.0]], 8, huge, BASE)) == {20}


@pytest.mark.parametrize("name", list_profiles())
def test_every_shipped_capacity_row_passes_the_checks(name):
    prof = load_profile(name)
    for R in (8, 16, 32, 64):
        key = cap.cache_key(TwinPredictor(), prof, LengthSpec(), PoissonArrivals(), ServerDefaults(), R, 0.02)
        path = cap._shipped_dir() / f"{key}.json"
        rows = json.loads(path.read_text(encoding="utf-8"))["entries"]
        trusted = cap.trusted_rows(rows, R, prof, ServerDefaults())
        assert len(rows) > 10 and len(trusted) == len(rows), f"{name} rank {R}: a shipped row fails the checks"


def test_unwritable_cache_warns_once(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("PACKER_CACHE_DIR", str(blocker))  # mkdir under a file fails, even as root
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, calls1 = _build(2)
        second, calls2 = _build(2)
    assert first == second and calls1 > 0 and calls2 > 0  # nothing cached: every run measures again
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1, msgs
    assert str(blocker / "capacity") in msgs[0] and "every run" in msgs[0] and "PACKER_CACHE_DIR" in msgs[0]


# ---- profiles -----------------------------------------------------------------------------------

def test_profile_files_are_read_safely(tmp_path):
    shipped = load_profile(LLAMA)
    path = tmp_path / "p.json"
    path.write_bytes(b"\xef\xbb\xbf" + (REPO / "packer" / "profiles" / f"{LLAMA}.json").read_bytes())
    assert Profile.from_json(path).fingerprint() == shipped.fingerprint()
    for content, problem in ((b"[1, 2]", "expected a JSON object"), (b'{"name": NaN}', "NaN"),
                             (b"\x80", "not UTF-8")):
        path.write_bytes(content)
        with pytest.raises(InputError) as info:
            load_profile(str(path))
        assert info.value.field == "profile" and str(path) in one_line(info.value) and problem in str(info.value)
