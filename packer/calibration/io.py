"""Reading measurements and writing profiles: CSV files or records as measurement tables (column name ->
numpy array), the end-to-end parameters file, and the fitted profiles as JSON.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..files import dumps, read_csv, read_json
from ..profile import Profile
from .e2e import E2EParams, merge_e2e_params

__all__ = ["SOURCE_FILES", "table_from_columns", "table_from_records", "read_table", "read_measurements",
           "load_e2e_params", "write_profiles"]

# The micro-benchmark files of a calibration data set (agullo-h100), one per stage.
SOURCE_FILES = ("mb_kv_capacity.csv", "mb_base_step_latency.csv", "mb_lora_decode_overhead.csv",
                "mb_scheduler_overhead.csv", "mb_adapter_loading.csv")


def _column(cells: Sequence[Any]) -> np.ndarray:
    """One column as int64 (every cell a whole number), float64 (numbers, NaN for blank or None cells) or
    an object array of the cells as given (strings)."""
    def blank(c):
        return c is None or (isinstance(c, str) and not c.strip())

    try:
        if not any(blank(c) or isinstance(c, (float, bool, np.floating)) for c in cells):
            return np.array([int(c) for c in cells], dtype=np.int64)
    except (TypeError, ValueError):
        pass
    try:
        return np.array([np.nan if blank(c) else float(c) for c in cells], dtype=float)
    except (TypeError, ValueError):
        return np.array(list(cells), dtype=object)


def table_from_columns(columns: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
    """A measurement table from {column: values} (values as numbers or CSV cells), typed per column."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths: {sorted(lengths)}")
    return {name: _column(list(values)) for name, values in columns.items()}


def table_from_records(records: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """A measurement table from one mapping per measurement (live measurements); a key missing from a
    record is a blank cell."""
    records = list(records)
    names = list(dict.fromkeys(k for r in records for k in r))
    return table_from_columns({n: [r.get(n) for r in records] for n in names})


def read_table(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A CSV file (header row first) as a measurement table."""
    csv = read_csv(path)
    return table_from_columns({name: [row[j] if j < len(row) else "" for row in csv.rows]
                               for j, name in enumerate(csv.header)})


def read_measurements(data_dir: str | os.PathLike, files: Sequence[str] = SOURCE_FILES) -> dict[str, dict]:
    """{file stem: table} for each of ``files`` in ``data_dir`` (every file must be there)."""
    data_dir = Path(data_dir)
    missing = [f for f in files if not (data_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"missing in {data_dir}: {', '.join(missing)}")
    return {f.removesuffix(".csv"): read_table(data_dir / f) for f in files}


def load_e2e_params(path: str | os.PathLike, relative_to: str | os.PathLike | None = None) -> E2EParams:
    """The end-to-end parameters file at ``path`` merged with the defaults (the defaults alone if there is
    no such file). The source is named relative to ``relative_to`` when the file lies below it."""
    path = Path(path)
    if not path.is_file():
        return merge_e2e_params(None, f"defaults ({path.name} not found)")
    given = read_json(path, field="e2e")
    path = path.resolve()
    root = Path(relative_to).resolve() if relative_to is not None else None
    source = str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)
    return merge_e2e_params(given, source)


def write_profiles(profiles: Mapping[str, dict], out_dir: str | os.PathLike) -> list[Path]:
    """Write each profile dict to ``<out_dir>/<name>.json`` after checking it against the schema."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, profile in profiles.items():
        Profile.from_dict(profile)                      # the schema contract
        path = out_dir / f"{name}.json"
        path.write_text(dumps(profile, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
