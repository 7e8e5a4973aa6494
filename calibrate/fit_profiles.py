"""Fit packer's performance profiles from the agullo-h100 micro-benchmarks.

    python calibrate/fit_profiles.py [--data ../shared/data/agullo-h100] [--out packer/profiles]
                                     [--e2e calibrate/e2e_params.json] [--with-admission-delay]

Writes ``<out>/<model>@h100-64gb.json`` for Llama-3.1-8B-Instruct and Qwen-2.5-7B-Instruct and prints
every coefficient with its meaning and the fit error of each part. The fitting is the library's
(``packer.calibration``, one module per part); this script reads the shared data and calls it:

  memory     mb_kv_capacity.csv           least squares on the ok server starts       (calibration.memory)
  scheduler  mb_scheduler_overhead.csv    non-negative least squares (Qwen rescaled)  (calibration.scheduler)
  decode     mb_base_step_latency.csv     monotone linear spline + KV-context term    (calibration.step)
  prefill    mb_base_step_latency.csv     probe=prefill (Llama; Qwen scaled by size)  (calibration.step)
  lora       mb_lora_decode_overhead.csv  least squares on the ITL increase           (calibration.lora)
  loading    mb_adapter_loading.csv       per-rank means                              (calibration.loading)
  e2e        calibrate/e2e_params.json    calibrated end-to-end by calibrate/fit_e2e.py (or defaults):
                                          the LoRA token costs (lora_ms_base, lora_ms_per_token,
                                          lora_ms_per_token_slot), rank scaling, client parameters and
                                          the admission delay (shipped 0; --with-admission-delay: fitted)

The LoRA token cost depends on the number of reserved slots (max_loras); the LoRA micro-benchmark
ran with max_loras=300 only, so it pins the per-distinct-adapter cost but not the token terms.

Deterministic: no randomness, and every number written is rounded to 6 significant digits.
Needs numpy and scipy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packer.calibration.assemble import build_profiles, fit_micro_benchmarks
from packer.calibration.e2e import with_fitted_admission
from packer.calibration.io import load_e2e_params, read_measurements, write_profiles
from packer.calibration.report import print_profile

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "agullo-h100"
DEFAULT_OUT_DIR = REPO_ROOT / "packer" / "profiles"
DEFAULT_E2E_PATH = REPO_ROOT / "calibrate" / "e2e_params.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="agullo-h100 data directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="where to write the profile JSONs")
    parser.add_argument("--e2e", type=Path, default=DEFAULT_E2E_PATH, help="end-to-end parameters JSON")
    parser.add_argument("--with-admission-delay", action="store_true",
                        help="use the fitted admission delay (admission_ms_per_adapter_sq_fitted) instead of the "
                             "file's shipped admission_ms_per_adapter_sq; write to another --out to compare")
    args = parser.parse_args(argv)
    e2e = load_e2e_params(args.e2e, relative_to=REPO_ROOT)
    if args.with_admission_delay:
        e2e = with_fitted_admission(e2e)
    profiles = build_profiles(fit_micro_benchmarks(read_measurements(args.data)), e2e)
    if e2e.source.startswith("defaults"):
        print(f"NOTE: {args.e2e} not found; using the default end-to-end parameters")
    for profile in profiles.values():
        print_profile(profile)
    print()
    for path in write_profiles(profiles, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
