"""Re-key the shipped artefacts after a change to the twin's code that leaves its outputs unchanged.

    python calibrate/restamp.py --from REV [--check-only]

The shipped capacity tables (``packer/data/capacity``) and tree models (``packer/models``) are keyed on
the twin's fingerprint, which hashes its code: a refactor that moves code without changing one number
still makes them stale. This script proves the "without changing one number" part before it re-keys:
it runs the same scenarios (light load to overload, Poisson, bursty and trace arrivals, every shipped
profile, per-adapter rows and series included) with the twin at ``REV`` (extracted with ``git archive``
into a temporary directory) and with the working tree's, and re-keys only if every result is identical
(wall times excepted). Otherwise it refuses: the artefacts must then be regenerated
(``calibrate/ship_capacity.py``, ``packer train``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANKS = (8, 16, 32, 64)

# Run inside the tree being probed (the old one, then this one): print the twin's outputs on the probe
# scenarios, the shipped capacity tables' keys and the twin fingerprints, as JSON.
_PROBE = r'''
import json, sys
from packer.capacity.cache import cache_key
from packer.model import LengthSpec, PoissonArrivals, ServerDefaults
from packer.predictors import TwinPredictor
from packer.profile import list_profiles, load_profile
from packer.twin import simulate
from packer.twin.fingerprint import twin_fingerprint

def scenario(profile, n, rates, slots, arrivals, seed, seqs=2048, budget=2048, duration=300):
    ranks = (8, 16, 32)
    return {"profile": profile, "server": {"max_loras": slots, "max_cpu_loras": max(slots, n // 2),
            "max_lora_rank": 32, "max_num_seqs": seqs, "max_num_batched_tokens": budget},
            "adapters": [{"id": f"a{i}", "rank": ranks[i % 3], "rate": rates[i % len(rates)]} for i in range(n)],
            "arrivals": arrivals, "duration_s": duration, "warmup_s": 60, "seed": seed}

out = {"results": [], "keys": {}, "fingerprints": {}}
for p in list_profiles():
    for seed in range(2):
        for case in ((8, (0.1, 0.05), 8, "poisson"), (64, (0.1, 0.05, 0.025), 16, "poisson"),
                     (32, (1.6, 0.8), 32, "poisson"), (64, (1.6, 0.8, 0.4), 16, "poisson"),
                     (128, (0.3,), 8, {"kind": "bursty"}), (96, (0.2,), 32, {"kind": "trace"})):
            r = simulate(scenario(p, *case, seed))
            d = r.to_dict(per_adapter=True, series=True)
            d.pop("wall_seconds")
            out["results"].append(d)
        r = simulate(scenario(p, 40, (1.0,), 16, "poisson", 0, seqs=32, budget=512))
        d = r.to_dict(per_adapter=True, series=True); d.pop("wall_seconds"); out["results"].append(d)
    prof = load_profile(p)
    out["fingerprints"][p] = twin_fingerprint(prof)
    out["keys"][p] = {str(R): cache_key(TwinPredictor(), prof, LengthSpec(), PoissonArrivals(), ServerDefaults(), R, 0.02)
                      for R in RANKS}
json.dump(out, sys.stdout, sort_keys=True)
'''.replace("RANKS", repr(RANKS))


def probe(tree: Path) -> dict:
    run = subprocess.run([sys.executable, "-c", _PROBE], cwd=tree, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "PACKER_CACHE_DIR": str(tree / ".cache")})
    if run.returncode != 0:
        sys.exit(f"probing {tree} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout)


def extract(rev: str, into: Path) -> Path:
    blob = subprocess.run(["git", "archive", rev, "packer"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="rev", required=True, help="the git revision whose twin made the shipped artefacts")
    ap.add_argument("--check-only", action="store_true", help="compare the twins, change nothing")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = probe(extract(args.rev, Path(tmp)))
    new = probe(ROOT)
    n = len(new["results"])
    differ = [i for i, (a, b) in enumerate(zip(old["results"], new["results"])) if a != b]
    if len(old["results"]) != n or differ:
        print(f"the twin's outputs changed on {len(differ)} of {n} probe scenarios (first: #{differ[:1]}): "
              "regenerate the artefacts instead (calibrate/ship_capacity.py, packer train)", file=sys.stderr)
        return 1
    print(f"{n} probe scenarios: identical outputs at {args.rev} and in the working tree")
    if args.check_only:
        return 0
    cap = ROOT / "packer" / "data" / "capacity"
    stale = [k for keys in old["keys"].values() for k in keys.values() if not (cap / f"{k}.json").is_file()]
    current = all((cap / f"{k}.json").is_file() for keys in new["keys"].values() for k in keys.values())
    if stale and not current:
        print(f"the shipped capacity tables are not keyed on the twin at {args.rev} ({len(stale)} of its keys have "
              "no file): pass the revision they were made or last re-keyed with", file=sys.stderr)
        return 1
    for p, keys in old["keys"].items():
        for R, k_old in keys.items():
            k_new = new["keys"][p][R]
            src, dst = cap / f"{k_old}.json", cap / f"{k_new}.json"
            if src.is_file() and k_old != k_new:
                subprocess.run(["git", "mv", str(src), str(dst)], cwd=ROOT, check=True)
                print(f"capacity {p} R={R}: {k_old} -> {k_new}")
    for model in sorted((ROOT / "packer" / "models").glob("*")):
        if model.suffix == ".json":
            restamp_json(model, old["fingerprints"], new["fingerprints"])
        elif model.suffix == ".npz":
            restamp_npz(model, old["fingerprints"], new["fingerprints"])
    return 0


def _restamped(meta_text: str, old: dict, new: dict, name: str) -> str | None:
    """The model metadata with its twin fingerprint moved from the old twin's to the new one's, or None."""
    profile = json.loads(meta_text).get("profile")
    f_old, f_new = old.get(profile), new.get(profile)
    field = re.compile(f'("twin_fingerprint":\\s*"){f_old}"')
    if not f_old or f_old == f_new or not field.search(meta_text):
        return None
    print(f"model {name}: twin fingerprint {f_old} -> {f_new}")
    return field.sub(lambda m: f'{m.group(1)}{f_new}"', meta_text, count=1)


def restamp_json(path: Path, old: dict, new: dict) -> None:
    text = _restamped(path.read_text(encoding="utf-8"), old, new, path.name)
    if text is not None:
        path.write_text(text, encoding="utf-8")


def restamp_npz(path: Path, old: dict, new: dict) -> None:
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = _restamped(str(arrays["meta"]), old, new, path.name)
    if meta is not None:
        arrays["meta"] = np.array(meta)
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)


if __name__ == "__main__":
    sys.exit(main())
