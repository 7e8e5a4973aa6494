"""One fingerprint of the twin: everything that decides what a twin run returns.

It hashes the twin's code (kernel, engine state, engine, workload generation and result summary), the data files the
workload generator reads (length shapes and arrival traces) and the profile's numbers. Every artefact made
from twin output (capacity tables, sweeps, trained models, benchmark caches) is keyed on it, so a change
to one line of the kernel, a shape file or a coefficient makes them all stale: nothing relies on a version
number someone must remember to bump.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..profile import Profile

__all__ = ["TWIN_CODE", "code_hash", "data_hash", "twin_fingerprint"]

TWIN_CODE = ("kernel.py", "state.py", "engine.py", "workload_gen.py", "arrivals.py", "traces.py", "lengths.py",
             "result.py")  # beside this file
_DATA_SUFFIXES = (".json", ".npz")  # packer/data itself: shapes and traces, not the capacity tables below it


@lru_cache(maxsize=1)
def code_hash() -> str:
    """A hash of the twin's source files."""
    here = Path(__file__).resolve().parent
    return hashlib.sha256(b"".join((here / name).read_bytes() for name in TWIN_CODE)).hexdigest()[:16]


@lru_cache(maxsize=1)
def data_hash() -> str:
    """A hash of the data files the workload generator reads (``packer/data/*.json``, ``*.npz``)."""
    data = resources.files("packer") / "data"
    files = sorted((f for f in data.iterdir() if f.is_file() and f.name.endswith(_DATA_SUFFIXES)), key=lambda f: f.name)
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def twin_fingerprint(profile: Profile) -> str:
    """The fingerprint of twin runs on ``profile``: its code, its data files and the profile's numbers."""
    blob = json.dumps({"code": code_hash(), "data": data_hash(), "profile": profile.fingerprint()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
