"""The admission delay (``client.admission_ms_per_adapter_sq``, issue 18 §1): off by default with the
same fingerprint as a profile without the field, a delay of each request's first token alone when on,
its fit (``packer.calibration.admission``) and the fitted value's plumbing into profiles."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from packer.calibration.admission import admission_fit_mask, fit_admission_delay
from packer.calibration.assemble import build_profiles, fit_micro_benchmarks
from packer.calibration.e2e import ADMISSION_FITTED, with_fitted_admission
from packer.calibration.io import load_e2e_params, read_measurements
from packer.errors import InputError
from packer.profile import Profile, load_profile
from packer.twin import Twin
from packer.twin.online import OnlineTwin
from packer.model import parse_scenario

from conftest import LLAMA, SHARED_DATA, llama_scenario


def _with_delay(prof: Profile, c: float) -> Profile:
    return dataclasses.replace(prof, client=dataclasses.replace(prof.client, admission_ms_per_adapter_sq=c))


def test_off_by_default_with_the_fingerprint_of_a_profile_without_the_field():
    prof = load_profile(LLAMA)
    d = json.loads(json.dumps({k: dataclasses.asdict(getattr(prof, k)) for k in
                               ("memory", "step", "scheduler", "loading", "client")}))
    d["client"].pop("admission_ms_per_adapter_sq")
    old = Profile.from_dict({"name": prof.name, "model": prof.model, "gpu": prof.gpu, **d})
    assert old.client.admission_ms_per_adapter_sq == 0.0
    assert old.fingerprint() == prof.fingerprint()
    assert _with_delay(prof, 0.006).fingerprint() != prof.fingerprint()


def test_negative_delay_is_refused_naming_the_field():
    prof = load_profile(LLAMA)
    d = {k: dataclasses.asdict(getattr(prof, k)) for k in ("memory", "step", "scheduler", "loading", "client")}
    d["client"]["admission_ms_per_adapter_sq"] = -0.1
    with pytest.raises(InputError, match="client.admission_ms_per_adapter_sq"):
        Profile.from_dict({"name": "x", "model": "m", "gpu": "g", **d})


def test_the_delay_moves_the_first_token_only():
    sc = llama_scenario(duration_s=300)
    base = Twin.from_scenario(sc).run()
    c = 0.05   # 28.8 ms at 24 adapters
    delayed = Twin.from_scenario(sc, _with_delay(load_profile(LLAMA), c)).run()
    d_ms = c * 24 * 24
    assert Twin.from_scenario(sc, _with_delay(load_profile(LLAMA), c)).admission_delay_s() == pytest.approx(d_ms / 1e3)
    # The engine sees the same arrivals shifted by the delay: every latency after the first token is the
    # same, the first token comes d_ms later for every request.
    assert delayed.mean_ttft_ms == pytest.approx(base.mean_ttft_ms + d_ms, abs=0.05 * d_ms)
    assert delayed.p50_ttft_ms == pytest.approx(base.p50_ttft_ms + d_ms, abs=0.05 * d_ms)
    assert delayed.mean_itl_ms == pytest.approx(base.mean_itl_ms, rel=2e-3)
    assert delayed.throughput_tps == pytest.approx(base.throughput_tps, rel=5e-3)
    assert delayed.starved == base.starved


def test_no_delay_without_lora():
    sc = llama_scenario(duration_s=60)
    sc["server"] = dict(sc["server"], enable_lora=False)
    assert Twin.from_scenario(sc, _with_delay(load_profile(LLAMA), 0.05)).admission_delay_s() == 0.0


def test_online_twin_admits_after_the_delay():
    sc = parse_scenario(llama_scenario(duration_s=60))
    online = OnlineTwin(sc, _with_delay(load_profile(LLAMA), 0.5))
    a = online.add_adapter(8)
    n = online.state.n_adapters   # the scenario's 24 and the one added
    assert n == 25
    r = online.submit(a, 16, 4, at_s=1.0)
    assert online.state.arrival_s[r] == pytest.approx(1.0 + 0.5 * n * n / 1e3)


def test_fit_recovers_a_quadratic_delay_with_one_intercept_per_group():
    n = np.array([8, 16, 32, 64, 128, 192, 8, 16, 64, 128])
    groups = ["a"] * 6 + ["b"] * 4
    twin = np.full(len(n), 40.0)
    real = twin + np.where(np.array(groups) == "a", 3.0, -1.0) + 0.006 * n * n
    c, report = fit_admission_delay(n, real, twin, groups=groups)
    assert c == pytest.approx(0.006, rel=1e-6)
    assert report["intercept_ms"] == {"a": 3.0, "b": -1.0}
    assert report["residual_rms_ms"] == 0.0 and report["runs_per_group"] == {"a": 6, "b": 4}
    c1, _ = fit_admission_delay(n, twin - 0.001 * n * n, twin)   # real faster than the twin: no negative delay
    assert c1 == 0.0
    with pytest.raises(ValueError, match="2 or more adapter counts"):
        fit_admission_delay([64, 64], [100.0, 101.0], [50.0, 50.0])


def test_fit_mask_keeps_queue_free_runs_with_a_slot_per_adapter():
    mask = admission_fit_mask([8, 32, 64, 64], [8, 16, 64, 64], [0.0, 0.0, 0.05, 0.0], [0.0, 0.0, 0.0, 0.3])
    assert mask.tolist() == [True, False, True, False]


@pytest.mark.skipif(not (SHARED_DATA / "agullo-h100").is_dir(), reason="needs the agullo-h100 data")
def test_fitted_value_goes_into_the_profile_only_when_asked(tmp_path):
    fits = fit_micro_benchmarks(read_measurements(SHARED_DATA / "agullo-h100"))
    given = {m: {"admission_ms_per_adapter_sq": 0.0, ADMISSION_FITTED: 0.00612} for m in
             ("llama-3.1-8b-instruct", "qwen-2.5-7b-instruct")}
    path = tmp_path / "e2e.json"
    path.write_text(json.dumps(given))
    e2e = load_e2e_params(path)
    shipped = build_profiles(fits, e2e)
    fitted = build_profiles(fits, with_fitted_admission(e2e))
    for name in shipped:
        assert shipped[name]["client"]["admission_ms_per_adapter_sq"] == 0.0
        assert fitted[name]["client"]["admission_ms_per_adapter_sq"] == 0.00612
        assert shipped[name]["fit_report"]["e2e"]["other_keys_in_file"] == {ADMISSION_FITTED: 0.00612}
        assert Profile.from_dict(fitted[name]).client.admission_delay_ms(128) == pytest.approx(0.00612 * 128 ** 2)
