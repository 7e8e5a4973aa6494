"""The profile fit (packer.calibration, as calibrate/fit_profiles.py runs it) on the real agullo-h100
micro-benchmarks.

Checks physical properties of the fitted profiles against the measurements (read here with pandas,
independently of the library's reader), and that the shipped profiles in packer/profiles/ are
byte for byte what the script writes. The stages on synthetic data: tests/test_calibration_stages.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "agullo-h100"
SCRIPT = REPO_ROOT / "calibrate" / "fit_profiles.py"
E2E_PATH = REPO_ROOT / "calibrate" / "e2e_params.json"
SHIPPED_DIR = REPO_ROOT / "packer" / "profiles"

pd = pytest.importorskip("pandas", reason="these checks read the measurements with pandas (dev dependency)")
pytest.importorskip("scipy", reason="the fit needs scipy")
if not DATA_DIR.is_dir():
    pytest.skip(f"measurement data not found at {DATA_DIR} (the shared agullo-h100 data set)",
                allow_module_level=True)

from packer.calibration import lora as lora_stage  # noqa: E402
from packer.calibration.assemble import MODELS, build_profiles, fit_micro_benchmarks  # noqa: E402
from packer.calibration.e2e import E2E_DEFAULTS, E2E_KEYS  # noqa: E402
from packer.calibration.fitting import interp_linear  # noqa: E402
from packer.calibration.io import SOURCE_FILES, load_e2e_params, read_measurements  # noqa: E402
from packer.profile import Profile, load_profile  # noqa: E402

MODEL_NAMES = [m.name for m in MODELS]


@pytest.fixture(scope="module")
def fits():
    """The micro-benchmark fits of the real data (they do not depend on the e2e parameters)."""
    return fit_micro_benchmarks(read_measurements(DATA_DIR))


def _build(fits, e2e_path: Path) -> dict[str, dict]:
    return build_profiles(fits, load_e2e_params(e2e_path, relative_to=REPO_ROOT))


@pytest.fixture(scope="module")
def profile_dicts(fits) -> dict[str, dict]:
    """{model name: fitted profile dict}, with the repository's e2e_params.json (or its defaults)."""
    return {d["model"]: d for d in _build(fits, E2E_PATH).values()}


@pytest.fixture(scope="module")
def profiles(profile_dicts) -> dict[str, Profile]:
    return {m: Profile.from_dict(d) for m, d in profile_dicts.items()}


@pytest.fixture(scope="module")
def csv():
    return lambda name: pd.read_csv(DATA_DIR / f"{name}.csv")


def _sched_ms(profile: Profile, running, waiting):
    s = profile.scheduler
    return s.ms_base + s.ms_per_running * np.asarray(running) + s.ms_per_waiting * np.asarray(waiting)


def _decode_ms(profile: Profile, n_seqs):
    return interp_linear(n_seqs, profile.step.decode_batch, profile.step.decode_ms)


# ---- memory -------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODEL_NAMES)
def test_kv_capacity_reproduces_measured_tokens(profiles, csv, model):
    mem = profiles[model].memory
    ok = csv("mb_kv_capacity").query("model == @model and status == 'ok'")
    assert len(ok) >= 20
    measured = ok["kv_cache_tokens"].to_numpy(float)
    predicted = np.array([mem.kv_tokens(int(r.max_loras), int(r.max_lora_rank)) for r in ok.itertuples()], float)
    rel = np.abs(predicted - measured) / measured
    assert rel.mean() < 0.01, f"mean relative error {rel.mean():.2%}"
    # Every start within 2 % of the full capacity; within 3 % of its own value unless nearly full.
    assert np.abs(predicted - measured).max() < 0.02 * measured.max()
    large = measured > 0.25 * measured.max()
    assert rel[large].max() < 0.03, f"worst relative error {rel[large].max():.2%}"


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_startup_failures_are_predicted_and_ok_starts_are_not(profiles, csv, model):
    mem = profiles[model].memory
    rows = csv("mb_kv_capacity").query("model == @model")
    assert (rows["status"] != "ok").sum() >= 5
    for r in rows.itertuples():
        error = mem.startup_error(int(r.max_loras), int(r.max_lora_rank))
        where = f"max_loras={r.max_loras} max_lora_rank={r.max_lora_rank} measured {r.status}"
        if r.status == "ok":
            assert error is None, f"{where}, predicted: {error}"
        else:
            assert error is not None, f"{where}, predicted to start"
        if r.status == "oom_kv_below_max_model_len":
            assert error.startswith("kv_below_max_model_len"), f"{where}, predicted: {error}"
        if r.status == "oom_no_kv_blocks":
            assert error.startswith("no_kv_blocks"), f"{where}, predicted: {error}"


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_refused_starts_report_the_predicted_free_memory(profiles, csv, model):
    """vLLM logs the KV GiB it had when refusing to start; the memory model must agree."""
    mem = profiles[model].memory
    refused = csv("mb_kv_capacity").query("model == @model and kv_avail_gib_reported.notna()")
    for r in refused.itertuples():
        predicted_gib = mem.kv_bytes(int(r.max_loras), int(r.max_lora_rank)) / (1 << 30)
        assert predicted_gib == pytest.approx(r.kv_avail_gib_reported, abs=0.25)


@pytest.mark.parametrize("model, measured_mib", [
    ("llama-3.1-8b-instruct", (50, 94, 181)),       # background.md §2
    ("qwen-2.5-7b-instruct", (39, 77, 154)),
])
def test_slot_cost_increases_with_rank_and_matches_measured(profiles, model, measured_mib):
    mem = profiles[model].memory
    slot = [mem.slot_mib(r) for r in (8, 16, 32)]
    assert slot[0] < slot[1] < slot[2]
    assert slot == pytest.approx(measured_mib, rel=0.05)
    assert mem.slot_mib_base >= 0 and mem.slot_mib_per_rank > 0
    # More slots or a larger max rank never leaves more KV cache.
    for rank in (8, 16, 32):
        kv = [mem.kv_tokens(n, rank) for n in (8, 64, 128)]
        assert kv[0] > kv[1] > kv[2]
    assert 15 < mem.non_kv_gib < 30


# ---- step time ----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODEL_NAMES)
def test_decode_step_time_increases_with_batch(profiles, model):
    step = profiles[model].step
    assert step.decode_batch[0] == 1 and step.decode_batch[-1] >= 1024
    assert np.all(np.diff(step.decode_batch) > 0)
    assert np.all(np.diff(step.decode_ms) > 0)
    grid = np.arange(1, 2049)
    ms = _decode_ms(profiles[model], grid)
    assert np.all(np.diff(ms) > 0) and ms[0] > 5


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_decode_table_plus_scheduler_reproduces_measured_itl(profiles, csv, model):
    p = profiles[model]
    rows = csv("mb_base_step_latency").query("model == @model and probe == 'decode' and preemptions == 0")
    by_batch = rows.groupby("max_num_seqs")[["mean_running", "mean_waiting", "mean_itl_ms"]].mean()
    predicted = _decode_ms(p, by_batch["mean_running"]) + _sched_ms(p, by_batch["mean_running"], by_batch["mean_waiting"])
    rel = np.abs(predicted - by_batch["mean_itl_ms"]) / by_batch["mean_itl_ms"]
    assert len(by_batch) == 7
    assert rel.mean() < 0.04 and rel.max() < 0.10


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_attention_term_follows_the_context_dependence_of_decode(profiles, csv, model):
    """The profile's KV-read term (attention_ms_per_kv_token around decode_ctx_ref) fits the decode runs."""
    p = profiles[model]
    s = p.step
    rows = csv("mb_base_step_latency").query("model == @model and probe == 'decode' and preemptions == 0")
    context = rows["input_tokens_per_req"] + rows["output_tokens_per_req"] / 2
    assert s.attention_ms_per_kv_token >= 0
    assert context.min() < s.decode_ctx_ref < context.max()
    x = rows["mean_running"]
    base = _decode_ms(p, x) + _sched_ms(p, x, rows["mean_waiting"])
    # ctx_tokens - n_decode * decode_ctx_ref, with n_decode = x sequences of mean context `context`
    with_attention = base + s.attention_ms_per_kv_token * x * (context - s.decode_ctx_ref)
    err = lambda pred: float(np.mean(np.abs(pred - rows["mean_itl_ms"]) / rows["mean_itl_ms"]))
    assert err(with_attention) < 0.03
    assert err(with_attention) <= err(base) + 1e-9
    if model == "llama-3.1-8b-instruct":
        # background: Llama's ITL at ~800 seqs grows with the output length (37 / 39.5 / 49 ms); the
        # term is a few e-5 ms per KV token (one 8B model's K+V reads of ~128 KiB per token).
        assert 2e-5 < s.attention_ms_per_kv_token < 2e-4


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_lora_overhead_reproduces_measured_itl(profiles, profile_dicts, csv, model):
    """ITL(LoRA) = base step (+ KV-read term) + scheduler + c0 + lora_ms_per_adapter * distinct adapters."""
    p = profiles[model]
    s = p.step
    c0 = profile_dicts[model]["fit_report"]["lora"]["intercept_ms"]
    assert s.lora_ms_per_adapter > 0 and c0 > 0
    rows = csv("mb_lora_decode_overhead").query(
        "model == @model and experiment == 'lora_decode' and status == 'ok' and preemptions == 0")
    assert (rows["max_loras"] == lora_stage.LORA_PROBE_SLOTS).all()
    x, context = rows["mean_running"], rows["input_tokens_per_req"] + rows["output_tokens_per_req"] / 2
    base = (_decode_ms(p, x) + s.attention_ms_per_kv_token * x * (context - s.decode_ctx_ref)
            + _sched_ms(p, x, rows["mean_waiting"]))
    logged = rows["mean_loras_by_batch"].notna()
    assert logged.sum() >= 10
    predicted = base + c0 + s.lora_ms_per_adapter * rows["mean_loras_by_batch"]
    rel = (np.abs(predicted - rows["mean_itl_ms"]) / rows["mean_itl_ms"])[logged]
    assert rel.mean() < 0.02 and rel.max() < 0.05
    # Held-out rows (distinct adapters not logged): the occupancy estimate stands in for them.
    held = rows[~logged]
    assert len(held) >= 10
    adapters = lora_stage.expected_distinct_adapters(held["n_adapters_used"], held["mean_running"])
    predicted = base[~logged] + c0 + s.lora_ms_per_adapter * adapters
    rel = np.abs(predicted - held["mean_itl_ms"]) / held["mean_itl_ms"]
    assert rel.mean() < 0.03 and rel.max() < 0.08


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_one_adapter_roughly_doubles_the_step_and_each_adapter_adds_about_two_percent(profiles, profile_dicts, model):
    """background.md §2: LoRA roughly doubles the decode step; each extra adapter adds ~1.7-1.9 %."""
    s = profiles[model].step
    lora = profile_dicts[model]["fit_report"]["lora"]
    n = lora["mean_running"]
    assert 180 < n < 250 and lora["running_range"][0] <= n <= lora["running_range"][1]
    base = float(_decode_ms(profiles[model], n))
    assert 1.6 < (base + lora["intercept_ms"] + s.lora_ms_per_adapter) / base < 2.4
    assert 0.01 < s.lora_ms_per_adapter / base < 0.03
    assert s.rank_factor(32) >= s.rank_factor(8)
    # The end-to-end token terms, at the probe's point (300 slots, rank 8), are reported next to c0
    # (not fitted to it) and must be of the same order: both are the LoRA cost of the same steps.
    check = lora["e2e_cross_check"]
    slots_per_token = s.lora_ms_per_token + s.lora_ms_per_token_slot * lora_stage.LORA_PROBE_SLOTS
    e2e = s.rank_factor(lora_stage.LORA_PROBE_RANK) * (s.lora_ms_base + slots_per_token * n)
    assert check["e2e_prediction_ms"] == pytest.approx(e2e, rel=1e-4)
    assert check["micro_intercept_ms"] == lora["intercept_ms"]
    assert 0.25 < e2e / lora["intercept_ms"] < 4


def test_prefill_cost_is_plausible_and_qwen_is_scaled_from_llama(profiles):
    llama = profiles["llama-3.1-8b-instruct"].step.prefill_ms_per_token
    qwen = profiles["qwen-2.5-7b-instruct"].step.prefill_ms_per_token
    # A 2048-token chunk of an 8B model on an H100 takes tens of milliseconds.
    assert 20 < llama * 2048 < 100
    assert qwen == pytest.approx(llama * 7.6 / 8.0, rel=1e-4)


# ---- scheduler and loading ----------------------------------------------------------------------

@pytest.mark.parametrize("model", MODEL_NAMES)
def test_scheduler_overhead_grows_with_running_and_waiting(profiles, profile_dicts, model):
    sc = profiles[model].scheduler
    assert sc.ms_base >= 0 and sc.ms_per_running > 0 and sc.ms_per_waiting > 0
    assert 0.3 < sc.ms_base + 200 * sc.ms_per_running < 1.5          # ~0.6 ms at batch 200, empty queue
    assert _sched_ms(profiles[model], 200, 20000) > 3 * _sched_ms(profiles[model], 200, 0)
    report = profile_dicts[model]["fit_report"]["scheduler"]
    assert report["r2"] > 0.6 and report["rows_used"] == 788


def test_scheduler_is_shared_up_to_a_measured_scale(profiles):
    llama, qwen = profiles["llama-3.1-8b-instruct"].scheduler, profiles["qwen-2.5-7b-instruct"].scheduler
    factor = qwen.ms_per_running / llama.ms_per_running
    assert 0.8 < factor < 1.25
    assert qwen.ms_per_waiting / llama.ms_per_waiting == pytest.approx(factor, rel=1e-4)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_loading_tables(profiles, csv, model):
    ld = profiles[model].loading
    assert ld.ranks == (8, 16, 32)
    assert all(1 < ms < 20 for ms in ld.cpu_to_gpu_ms)
    assert np.all(np.diff(ld.disk_to_cpu_ms) > 0)                    # bigger adapters read slower
    rows = csv("mb_adapter_loading").query("model == @model")
    for rank, disk in zip(ld.ranks, ld.disk_to_cpu_ms):
        at_rank = rows[rows["adapter_rank"] == rank]
        assert disk == pytest.approx(at_rank["disk_load_median_ms"].mean(), rel=1e-4)
        assert disk <= at_rank["disk_load_mean_ms"].mean()            # median: cold start left out


# ---- the files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODEL_NAMES)
def test_fit_report_has_every_part_with_errors(profile_dicts, model):
    report = profile_dicts[model]["fit_report"]
    assert report["memory"]["kv_tokens"]["mape_pct"] < 1
    assert report["memory"]["startup_check"]["mismatches"] == []
    for stats in (report["scheduler"], report["decode"]["fit_with_context_term"], report["lora"]["delta_fit"]):
        assert {"mae", "mape_pct", "r2", "n"} <= set(stats)
    assert report["decode"]["rows_used"] >= 20 and "notes" in report["prefill"]
    assert all(f"agullo-h100/{f}" in report["sources"] for f in SOURCE_FILES)


def test_shipped_profiles_are_the_script_output(tmp_path):
    """The script as a user runs it (the packer installed, or this checkout): byte-identical files."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(SCRIPT), "--data", str(DATA_DIR), "--out", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "=== llama-3.1-8b-instruct@h100-64gb ===" in out.stdout and "fit errors:" in out.stdout
    written = sorted(p.name for p in tmp_path.glob("*.json"))
    assert written == [f"{m}@h100-64gb.json" for m in MODEL_NAMES]
    for name in written:
        shipped = SHIPPED_DIR / name
        assert shipped.is_file(), f"{shipped} missing: run python calibrate/fit_profiles.py"
        assert shipped.read_bytes() == (tmp_path / name).read_bytes(), \
            f"{shipped} is stale: re-run python calibrate/fit_profiles.py"


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_shipped_profiles_load(model):
    profile = load_profile(str(SHIPPED_DIR / f"{model}@h100-64gb.json"))
    assert profile.name == f"{model}@h100-64gb" and profile.gpu == "h100-64gb"
    assert profile.memory.startup_error(8, 8) is None


def test_fit_is_deterministic(fits):
    again = fit_micro_benchmarks(read_measurements(DATA_DIR))
    assert _build(again, E2E_PATH) == _build(fits, E2E_PATH)


E2E_STEP_KEYS = ("lora_ms_base", "lora_ms_per_token", "lora_ms_per_token_slot", "lora_rank_ref", "lora_rank_slope")
E2E_CLIENT_KEYS = ("max_waiting", "output_len_scale", "admission_ms_per_adapter_sq")


def test_e2e_keys_are_the_profile_fields_not_fitted_from_micro_benchmarks():
    assert set(E2E_KEYS) == set(E2E_STEP_KEYS) | set(E2E_CLIENT_KEYS)
    for model in MODEL_NAMES:
        assert set(E2E_DEFAULTS[model]) == set(E2E_KEYS)
    assert not hasattr(lora_stage, "lora_slopes_given_e2e")


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_profile_writes_every_step_field_and_loads(profile_dicts, profiles, model):
    step = profile_dicts[model]["step"]
    fields = {f.name for f in dataclasses.fields(type(profiles[model].step))}
    assert set(step) == fields                          # no stale key (lora_prefill_ms_per_token), none missing
    loaded = Profile.from_dict(json.loads(json.dumps(profile_dicts[model])))
    assert loaded == profiles[model]
    for k, v in step.items():
        assert getattr(loaded.step, k) == (tuple(v) if isinstance(v, list) else v)
    decode = profile_dicts[model]["fit_report"]["decode"]
    assert step["attention_ms_per_kv_token"] == decode["ms_per_seq_per_context_token"]
    assert step["decode_ctx_ref"] == decode["ctx_ref_tokens"]


def test_missing_e2e_params_fall_back_to_defaults(fits, tmp_path):
    fitted = _build(fits, tmp_path / "absent.json")
    for profile in fitted.values():
        defaults = E2E_DEFAULTS[profile["model"]]
        assert profile["fit_report"]["e2e"]["source"].startswith("defaults")
        for k in E2E_STEP_KEYS:
            assert profile["step"][k] == defaults[k], k
        assert profile["client"] == {"max_waiting": defaults["max_waiting"],
                                     "output_len_scale": defaults["output_len_scale"],
                                     "admission_ms_per_adapter_sq": 0.0}
    assert E2E_DEFAULTS["llama-3.1-8b-instruct"]["output_len_scale"] == 0.99
    assert E2E_DEFAULTS["qwen-2.5-7b-instruct"]["output_len_scale"] == 0.96


def test_every_e2e_param_is_honoured_and_the_micro_fit_does_not_depend_on_them(fits, tmp_path):
    custom = {m: {"lora_ms_base": 4.5, "lora_ms_per_token": 0.021, "lora_ms_per_token_slot": 0.00017,
                  "lora_rank_ref": 16, "lora_rank_slope": 0.25, "max_waiting": 12345,
                  "output_len_scale": 0.9 + i / 100, "admission_ms_per_adapter_sq": 0.002 + i / 1000,
                  "fit_rmse_ms": 1.5 + i}
              for i, m in enumerate(MODEL_NAMES)}
    path = tmp_path / "e2e_params.json"
    path.write_text(json.dumps(custom))
    reference = {d["model"]: d for d in _build(fits, tmp_path / "absent.json").values()}
    merged = {d["model"]: d for d in _build(fits, path).values()}
    for model in MODEL_NAMES:
        step, ref, given = merged[model]["step"], reference[model]["step"], custom[model]
        for k in E2E_STEP_KEYS:
            assert step[k] == given[k] and step[k] != ref[k], k
        for k in E2E_CLIENT_KEYS:
            assert merged[model]["client"][k] == given[k] and merged[model]["client"][k] != reference[model]["client"][k], k
        e2e_report = merged[model]["fit_report"]["e2e"]
        assert e2e_report["other_keys_in_file"] == {"fit_rmse_ms": given["fit_rmse_ms"]}   # reported, not used
        assert "defaults" not in e2e_report["source"]
        assert "fit_rmse_ms" not in step
        # Everything fitted from the micro-benchmarks is the same whatever the e2e parameters.
        for k in set(step) - set(E2E_STEP_KEYS):
            assert step[k] == ref[k], k
        for part in ("memory", "scheduler", "loading"):
            assert merged[model][part] == reference[model][part]
        lora, lora_ref = merged[model]["fit_report"]["lora"], reference[model]["fit_report"]["lora"]
        assert lora["intercept_ms"] == lora_ref["intercept_ms"] and lora["delta_fit"] == lora_ref["delta_fit"]
        # ... only the cross-check moves with them.
        rank_factor = 1 + 0.25 * (8 - 16) / 16
        n = lora["mean_running"]
        expected = rank_factor * (4.5 + (0.021 + 0.00017 * 300) * n)
        assert lora["e2e_cross_check"]["e2e_prediction_ms"] == pytest.approx(expected, rel=1e-4)


def test_partial_e2e_file_takes_defaults_for_the_missing_keys(fits, tmp_path):
    path = tmp_path / "e2e_params.json"
    path.write_text(json.dumps({"llama-3.1-8b-instruct": {"lora_ms_per_token_slot": 0.0005}}))
    fitted = {d["model"]: d for d in _build(fits, path).values()}
    llama, qwen = fitted["llama-3.1-8b-instruct"], fitted["qwen-2.5-7b-instruct"]
    assert llama["step"]["lora_ms_per_token_slot"] == 0.0005
    assert llama["step"]["lora_ms_base"] == E2E_DEFAULTS["llama-3.1-8b-instruct"]["lora_ms_base"]
    assert qwen["step"]["lora_ms_per_token_slot"] == E2E_DEFAULTS["qwen-2.5-7b-instruct"]["lora_ms_per_token_slot"]
    source = llama["fit_report"]["e2e"]["source"]
    assert "defaults for" in source and "llama-3.1-8b-instruct.lora_ms_base" in source
    assert "llama-3.1-8b-instruct.lora_ms_per_token_slot" not in source
