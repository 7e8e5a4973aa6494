"""Request logs: read them (CSV or JSONL, plain or gzipped) and turn them into a placement workload.

A log has one row per request: when it arrived, which adapter (or model name) it asked for, and its
prompt and output tokens. ``read_request_log`` reads one, counting every bad row by its reason (never
dropping one silently); ``workload_from_log`` measures what a plan needs from it:

- **rates**: each adapter's mean rate, or a peak of its rate over sliding windows (``peak`` = the
  highest window, ``pNN`` = the NNth percentile of the windows). Adapters' peaks rarely coincide, so
  summing them over-plans the cluster: each adapter gets its mean plus one common fraction of its
  own excess (its pNN minus its mean), the fraction that makes the total the cluster's own pNN (the
  same statistic of the total rate); never below its mean, never above its own pNN.
- **lengths**: the log's empirical quantiles of prompt and output tokens with the correlation of their
  normal scores (``LengthSpec.distribution = "empirical"``), or a shipped shape at the log's means.
- **arrivals**: Poisson when the log looks Poisson; else bursty, with the gap dispersion of each
  adapter in the cluster's operational time (``cv``) and the log-normal spread of the cluster rate
  over periods (``multiplier_sigma``); or ``trace``: the log replayed (written beside the workload).

A root-level module: numpy and the shared modules only.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import InputError
from .model import MAX_REQUEST_TOKENS, BURSTY_RANGES

__all__ = ["COLUMN_ALIASES", "RequestLog", "LogSummary", "read_request_log", "workload_from_log", "parse_plan_for",
           "parse_columns", "TIME_UNITS", "write_trace"]

# The four fields a log row needs, and the names they go by (matched case-insensitively, in this order).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": ("timestamp", "arrived_at", "arrival_time", "arrival_s", "time", "ts", "created", "created_at",
                  "request_time", "start_time"),
    "adapter": ("adapter", "adapter_id", "adapter_name", "lora", "lora_name", "lora_id", "model", "model_name"),
    "prompt_tokens": ("prompt_tokens", "input_tokens", "num_prefill_tokens", "prompt_len", "input_len",
                      "context_tokens", "contexttokens", "usage.prompt_tokens"),
    "output_tokens": ("output_tokens", "completion_tokens", "num_decode_tokens", "output_len", "generated_tokens",
                      "generatedtokens", "usage.completion_tokens"),
}
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
QUANTILES = 201  # the empirical length model's grid: every half percent
_MIN_GAPS_FOR_CV = 20  # an adapter's gap dispersion is measured from this many gaps
_POISSON_CV = (0.8, 1.25)  # gap dispersion that still reads as Poisson
_POISSON_SIGMA = 0.15  # and cluster-rate spread
_BURST_PERIOD_S = 300.0
_WINDOW_STEPS = 10  # sliding windows advance by a tenth of their length
_BAD_ROWS_EXAMPLES = 3


@dataclass(frozen=True)
class RequestLog:
    """A log's valid requests sorted by arrival (``arrival_s`` from the first one), and what was wrong
    with the others (``bad_rows``: reason -> count; ``examples``: the first few, with their line)."""

    source: str
    arrival_s: np.ndarray      # float64, sorted, starting at 0
    adapter: np.ndarray        # int32 index into adapter_ids
    adapter_ids: tuple[str, ...]
    prompt_tokens: np.ndarray  # int32 >= 1
    output_tokens: np.ndarray  # int32 >= 1 (a logged 0 counts as 1: the request still took a step)
    rows: int                  # data rows read, good and bad
    bad_rows: Mapping[str, int] = field(default_factory=dict)
    examples: tuple[str, ...] = ()
    columns: Mapping[str, str] = field(default_factory=dict)  # field -> the log's column
    start_epoch_s: float | None = None  # the first request's absolute time, when the log has one

    @property
    def requests(self) -> int:
        return len(self.arrival_s)

    @property
    def span_s(self) -> float:
        """The log's period: first to last arrival plus one mean gap (so n requests / span = the rate)."""
        n = self.requests
        return float(self.arrival_s[-1]) * n / (n - 1)

    def counts(self) -> np.ndarray:
        """Requests per adapter."""
        return np.bincount(self.adapter, minlength=len(self.adapter_ids))

    def bad_summary(self) -> str:
        """One line on the bad rows ("" when there are none)."""
        if not self.bad_rows:
            return ""
        total = sum(self.bad_rows.values())
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.bad_rows.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"{total} of {self.rows} rows skipped ({reasons}); first: {'; '.join(self.examples)}"


@dataclass(frozen=True)
class LogSummary:
    """What ``workload_from_log`` measured, for the command's summary."""

    source: str
    requests: int
    rows: int
    bad_rows: Mapping[str, int]
    adapters: int
    span_s: float
    mean_rate: float            # requests/s over the whole log
    planned_rate: float         # the workload's total rate
    plan_for: str
    window_s: float | None
    cluster_peak_rate: float | None   # the plan_for statistic of the cluster's window rates
    sum_of_adapter_peaks: float | None
    peak_to_mean: float         # the highest window rate of the cluster over its mean rate
    prompt_percentiles: Mapping[str, int]
    output_percentiles: Mapping[str, int]
    length_model: str
    length_means: tuple[float, float]   # (prompt, output) of the workload's length model
    log_length_means: tuple[float, float]
    arrivals: Mapping[str, Any]
    gap_cv: float | None
    rate_sigma: float | None
    trace_file: str | None = None

    def to_dict(self) -> dict:
        from .files import json_ready

        return json_ready({k: getattr(self, k) for k in self.__dataclass_fields__})


# ---- reading ------------------------------------------------------------------------------------

def parse_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """``timestamp=ts,adapter=lora_name`` (or a mapping) -> {field: column}; unknown fields are refused."""
    if spec is None:
        return {}
    pairs = spec.items() if isinstance(spec, Mapping) else [p.partition("=")[::2] for p in spec.split(",") if p.strip()]
    out = {}
    for k, v in pairs:
        k, v = str(k).strip(), str(v).strip()
        if k not in COLUMN_ALIASES:
            raise InputError("columns", f"unknown field {k!r} in {spec!r}; the fields are "
                                        f"{', '.join(COLUMN_ALIASES)} (e.g. timestamp=ts,adapter=model)")
        if not v:
            raise InputError("columns", f"{k}= names no column in {spec!r}; write {k}=<the log's column>")
        out[k] = v
    return out


def read_request_log(path: str | Path, *, format: str | None = None, columns: str | Mapping[str, str] | None = None,
                     time_unit: str = "s") -> RequestLog:
    """Read a request log (``format`` ``csv`` or ``jsonl``, else from the name or the first character)."""
    p = Path(path)
    given = parse_columns(columns)
    if time_unit not in TIME_UNITS:
        raise InputError("time_unit", f"unknown unit {time_unit!r}; valid: {', '.join(TIME_UNITS)}")
    if not p.is_file():
        raise InputError("log", f"{p}: {'is a directory' if p.is_dir() else 'no such file'}; give the path of a "
                                "CSV or JSONL request log")
    fmt = format or _format_of(p)
    if fmt not in ("csv", "jsonl"):
        raise InputError("format", f"unknown log format {fmt!r}; valid: csv, jsonl")
    rows = _Rows(str(p), TIME_UNITS[time_unit])
    try:
        with _open_text(p) as f:
            if fmt == "csv":
                mapping = _read_csv(f, p, given, rows)
            else:
                mapping = _read_jsonl(f, p, given, rows)
    except UnicodeDecodeError as e:
        raise InputError("log", f"{p}: not UTF-8 text ({e.reason}); save it as UTF-8") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError("log", f"{p}: cannot read it ({getattr(e, 'strerror', None) or e}); check the file") from None
    return rows.finish(mapping)


def _format_of(p: Path) -> str:
    name = p.name.lower().removesuffix(".gz")
    if name.endswith(".csv") or name.endswith(".tsv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    with _open_text(p) as f:
        for line in f:
            if line.strip():
                return "jsonl" if line.lstrip().startswith("{") else "csv"
    return "csv"


def _open_text(p: Path):
    raw = gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


class _Rows:
    """Accumulates valid rows and counts the bad ones by reason."""

    def __init__(self, source: str, time_scale: float):
        self.source, self.time_scale = source, time_scale
        self.times: list[float] = []
        self.adapters: list[str] = []
        self.prompts: list[int] = []
        self.outputs: list[int] = []
        self.rows = 0
        self.bad: dict[str, int] = {}
        self.examples: list[str] = []
        self.absolute = False

    def add(self, line: int, ts: Any, adapter: Any, prompt: Any, output: Any) -> None:
        self.rows += 1
        why = None
        t = self._time(ts)
        if t is None:
            why = "without a timestamp" if _missing(ts) else "with a bad timestamp"
        elif _missing(adapter) or not str(adapter).strip():
            why = "without an adapter"
        else:
            p, o = _tokens(prompt, 1), _tokens(output, 0)
            if p is None:
                why = "without prompt_tokens" if _missing(prompt) else "with bad prompt_tokens"
            elif o is None:
                why = "without output_tokens" if _missing(output) else "with bad output_tokens"
        if why is not None:
            self.reject(line, why, f"{ts!r}" if why.endswith("timestamp") else "")
            return
        self.times.append(t)
        self.adapters.append(str(adapter).strip())
        self.prompts.append(p)
        self.outputs.append(max(1, o))

    def reject(self, line: int, why: str, detail: str = "") -> None:
        self.bad[why] = self.bad.get(why, 0) + 1
        if len(self.examples) < _BAD_ROWS_EXAMPLES:
            self.examples.append(f"line {line} {why}" + (f" ({detail})" if detail else ""))

    def _time(self, v: Any) -> float | None:
        if _missing(v):
            return None
        if isinstance(v, bool):
            return None
        if isinstance(v, (int, float)):
            x = float(v) * self.time_scale
        else:
            s = str(v).strip()
            try:
                x = float(s) * self.time_scale
            except ValueError:
                x = _iso_seconds(s)
                if x is None:
                    return None
                self.absolute = True
        return x if math.isfinite(x) else None

    def finish(self, columns: Mapping[str, str]) -> RequestLog:
        n = len(self.times)
        bad = sum(self.bad.values())
        if n < 2:
            raise InputError("log", f"{self.source}: {n} valid request{'' if n == 1 else 's'} in {self.rows} rows; a "
                                    "log needs at least two" + (f" ({self._bad_line()})" if bad else ""))
        if bad > n:
            raise InputError("log", f"{self.source}: more bad rows than good ones ({self._bad_line()}); check "
                                    "--columns, --format and --time-unit")
        times = np.asarray(self.times, dtype=np.float64)
        order = np.argsort(times, kind="stable")
        times = times[order]
        if times[-1] <= times[0]:
            raise InputError("log", f"{self.source}: every request has the same timestamp; a rate needs a span")
        ids, index = np.unique(np.asarray(self.adapters, dtype=object)[order].astype(str), return_inverse=True)
        start = float(times[0])
        return RequestLog(self.source, times - start, index.astype(np.int32), tuple(str(i) for i in ids),
                          np.asarray(self.prompts, dtype=np.int32)[order],
                          np.asarray(self.outputs, dtype=np.int32)[order], self.rows, dict(self.bad),
                          tuple(self.examples), dict(columns), start if self.absolute or start > 1e8 else None)

    def _bad_line(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.bad.items()))
        return f"bad rows {reasons}; first: {'; '.join(self.examples)}"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _tokens(v: Any, minimum: int) -> int | None:
    if _missing(v) or isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(x) and x == round(x) and minimum <= x <= MAX_REQUEST_TOKENS):
        return None
    return int(x)


def _iso_seconds(s: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (naive times are UTC); None if it is not one."""
    text = s.replace("Z", "+00:00").replace("z", "+00:00")
    # Python reads at most six fractional digits: trim longer ones (e.g. Azure's 7-digit times)
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if digits > 6:
            rest = rest[:6] + rest[digits:]
        text = head + dot + rest
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp()


def _resolve(names: list[str], given: Mapping[str, str], p: Path, kind: str) -> dict[str, str]:
    """Which of the log's columns holds each field: ``given`` first, else the first alias present."""
    lower = {n.strip().lower(): n for n in names}
    out = {}
    for fld, aliases in COLUMN_ALIASES.items():
        if fld in given:
            if given[fld] not in names and given[fld].lower() not in lower and kind == "csv":
                raise InputError("columns", f"{p}: --columns {fld}={given[fld]}, but the log has no column "
                                            f"{given[fld]!r} (it has {', '.join(names[:20])})")
            out[fld] = given[fld] if given[fld] in names else lower.get(given[fld].lower(), given[fld])
            continue
        hit = next((lower[a] for a in aliases if a in lower), None)
        if hit is None:
            raise InputError("columns", f"{p}: no {fld} column (looked for {', '.join(aliases[:6])}, ...; the log "
                                        f"has {', '.join(names[:20]) or 'none'}); name it with --columns "
                                        f"{fld}=<column>")
        out[fld] = hit
    return out


def _read_csv(f, p: Path, given: Mapping[str, str], rows: _Rows) -> dict[str, str]:
    sample = f.read(65536)
    f.seek(0)
    delimiter = "\t" if p.name.lower().removesuffix(".gz").endswith(".tsv") or (
        "\t" in sample.partition("\n")[0] and "," not in sample.partition("\n")[0]) else ","
    reader = csv.reader(f, delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise InputError("log", f"{p}: empty; a CSV log needs a header row and one row per request")
    header = [h.strip() for h in header]
    mapping = _resolve(header, given, p, "csv")
    idx = [header.index(mapping[fld]) for fld in COLUMN_ALIASES]
    width = len(header)
    for line, rec in enumerate(reader, start=2):
        if not rec or (len(rec) == 1 and not rec[0].strip()):
            continue
        if len(rec) != width:
            rows.rows += 1
            rows.reject(line, "with the wrong number of fields", f"{len(rec)}, the header has {width}")
            continue
        rows.add(line, *(rec[i] for i in idx))
    return mapping


def _lookup(obj: Mapping[str, Any], key: str) -> Any:
    if key in obj:
        return obj[key]
    cur: Any = obj
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _keys(obj: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for k, v in obj.items():
        yield prefix + str(k)
        if isinstance(v, Mapping):
            yield from _keys(v, prefix + str(k) + ".")


def _read_jsonl(f, p: Path, given: Mapping[str, str], rows: _Rows) -> dict[str, str]:
    parsed: list[tuple[int, Any]] = []
    mapping: dict[str, str] | None = None
    names: dict[str, None] = {}
    for line, text in enumerate(f, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if mapping is None:
            parsed.append((line, obj))
            if isinstance(obj, dict):
                names.update(dict.fromkeys(_keys(obj)))
            if len(parsed) < 100:
                continue
            mapping = _resolve(list(names), given, p, "jsonl")
            for ln, o in parsed:
                _json_row(rows, ln, o, mapping)
            continue
        _json_row(rows, line, obj, mapping)
    if mapping is None:
        if not parsed:
            raise InputError("log", f"{p}: empty; a JSONL log has one JSON object per request per line")
        mapping = _resolve(list(names), given, p, "jsonl")
        for ln, o in parsed:
            _json_row(rows, ln, o, mapping)
    return mapping


def _json_row(rows: _Rows, line: int, obj: Any, mapping: Mapping[str, str]) -> None:
    if not isinstance(obj, dict):
        rows.rows += 1
        rows.reject(line, "that are not a JSON object")
        return
    rows.add(line, *(_lookup(obj, mapping[fld]) for fld in COLUMN_ALIASES))


# ---- measuring ----------------------------------------------------------------------------------

def parse_plan_for(value: str) -> float | None:
    """``mean`` -> None, ``peak`` -> 100, ``pNN`` (e.g. p95, p99.9) -> NN."""
    v = str(value).strip().lower()
    if v == "mean":
        return None
    if v == "peak":
        return 100.0
    if v.startswith("p"):
        try:
            q = float(v[1:])
        except ValueError:
            q = math.nan
        if 0 < q <= 100:
            return q
    raise InputError("plan_for", f"{value!r}: use mean, peak or pNN with 0 < NN <= 100 (e.g. p95)")


def _window_rates(log: RequestLog, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Requests/s of each adapter (rows) and of the cluster over windows sliding by a tenth of their length."""
    span = float(log.arrival_s[-1])
    step = window_s / _WINDOW_STEPS
    starts = np.arange(0.0, span - window_s + step * 1e-9, step)
    per_adapter = np.zeros((len(log.adapter_ids), len(starts)))
    for a in range(len(log.adapter_ids)):
        t = log.arrival_s[log.adapter == a]
        per_adapter[a] = np.searchsorted(t, starts + window_s, side="left") - np.searchsorted(t, starts, side="left")
    total = (np.searchsorted(log.arrival_s, starts + window_s, side="left")
             - np.searchsorted(log.arrival_s, starts, side="left"))
    return per_adapter / window_s, total / window_s


def _planned_rates(log: RequestLog, q: float | None, window_s: float):
    """(rates, cluster statistic, sum of the adapters' own statistics, peak-to-mean) for ``plan_for``."""
    mean = log.counts() / log.span_s
    span = float(log.arrival_s[-1])
    if span < window_s:
        if q is not None:
            raise InputError("window", f"the log spans {span:.4g} s, shorter than one {window_s:g} s window; "
                                       "use a shorter --window or --plan-for mean")
        return mean, None, None, math.nan
    per_adapter, total = _window_rates(log, window_s)
    peak_to_mean = float(total.max() / (log.requests / log.span_s))
    if q is None:
        return mean, None, None, peak_to_mean
    own = np.maximum(np.percentile(per_adapter, q, axis=1), mean)
    cluster = float(np.percentile(total, q))
    # Peaks that do not coincide are not added: every adapter gets its mean plus the same fraction of
    # its own excess (pNN - mean), the fraction that makes the total the cluster's own pNN (never
    # below the means, never above the adapters' own pNN).
    excess = float((own - mean).sum())
    s = min(1.0, max(0.0, (cluster - float(mean.sum())) / excess)) if excess > 0 else 1.0
    rates = mean + (own - mean) * s
    return rates, cluster, float(own.sum()), peak_to_mean


def _operational_dispersion(log: RequestLog, period_s: float) -> tuple[float | None, float | None]:
    """(gap cv of the adapters in operational time, log-normal sigma of the cluster rate over periods)."""
    span = log.span_s
    n_periods = int(span // period_s)
    sigma = None
    edges = np.linspace(0.0, span, max(1, n_periods) + 1)
    counts = np.histogram(log.arrival_s, bins=edges)[0].astype(np.float64)
    if n_periods >= 4:
        m = counts.mean()
        excess = counts.var() / (m * m) - 1.0 / m if m > 0 else 0.0
        sigma = math.sqrt(math.log1p(max(0.0, excess)))
    # operational clock: U(t) grows at the cluster's rate relative to its mean (constant when the
    # log is too short for periods), so a rate that swings is not read as gap dispersion twice
    rel = counts / counts.mean() if counts.mean() > 0 else np.ones_like(counts)
    clock = np.concatenate(([0.0], np.cumsum(rel * np.diff(edges))))
    cvs, weights = [], []
    for a in range(len(log.adapter_ids)):
        t = log.arrival_s[log.adapter == a]
        if len(t) <= _MIN_GAPS_FOR_CV:
            continue
        gaps = np.diff(np.interp(t, edges, clock))
        if gaps.mean() > 0:
            cvs.append(gaps.std() / gaps.mean())
            weights.append(len(t))
    if not cvs:
        return None, sigma
    order = np.argsort(cvs)
    cum = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    return float(np.asarray(cvs)[order][np.searchsorted(cum, cum[-1] / 2)]), sigma


def _arrival_model(kind: str, log: RequestLog, trace_file: str | None):
    cv, sigma = _operational_dispersion(log, min(_BURST_PERIOD_S, log.span_s / 4))
    if kind == "auto":
        poisson_like = (cv is None or _POISSON_CV[0] <= cv <= _POISSON_CV[1]) and (sigma or 0.0) <= _POISSON_SIGMA
        kind = "poisson" if poisson_like else "bursty"
    if kind == "poisson":
        return {"kind": "poisson"}, cv, sigma
    if kind == "bursty":
        lo, hi, _ = BURSTY_RANGES["cv"]
        slo, shi, _ = BURSTY_RANGES["multiplier_sigma"]
        period = max(BURSTY_RANGES["period_s"][0], min(_BURST_PERIOD_S, log.span_s / 4))
        return {"kind": "bursty", "cv": round(min(hi, max(lo, cv if cv is not None else 1.0)), 4),
                "period_s": round(period, 3), "multiplier_sigma": round(min(shi, max(slo, sigma or 0.0)), 4)}, cv, sigma
    if kind == "trace":
        if trace_file is None:
            raise InputError("arrivals", "trace arrivals replay the log from a file written beside the workload: "
                                         "give --out WORKLOAD.json")
        return {"kind": "trace", "trace": trace_file, "scale_to_rates": True, "loop": True}, cv, sigma
    raise InputError("arrivals", f"unknown arrival model {kind!r}; valid: auto, poisson, bursty, trace")


def _length_model(kind: str, log: RequestLog, quantiles: int) -> dict[str, Any]:
    p, o = log.prompt_tokens, log.output_tokens
    bounds = {"min_input": int(p.min()), "max_input": int(p.max()), "max_total": int((p + o).max())}
    if kind == "empirical":
        grid = np.linspace(0.0, 100.0, quantiles)
        qp = [int(x) for x in np.rint(np.percentile(p, grid))]
        qo = [max(1, int(x)) for x in np.rint(np.percentile(o, grid))]
        return {"distribution": "empirical", **bounds, "empirical": {"prompt": qp, "output": qo,
                                                                      "rho": round(_normal_score_corr(p, o), 4)}}
    if kind in ("sharegpt", "azure-conv", "fixed"):
        out = {"distribution": kind, "input_mean": round(float(p.mean()), 3), "output_mean": round(float(o.mean()), 3)}
        return out if kind == "fixed" else {**out, **bounds}
    raise InputError("lengths", f"unknown length model {kind!r}; valid: empirical, sharegpt, azure-conv, fixed")


def _normal_score_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of the normal scores of two samples (the Gaussian copula's rho); ties share a rank."""
    from statistics import NormalDist

    def scores(x: np.ndarray) -> np.ndarray:
        values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        mid_rank = np.cumsum(counts) - 0.5 * counts  # the middle of each tie block, in [0, n]
        inv = NormalDist().inv_cdf
        z = np.array([inv(r / len(x)) for r in mid_rank])
        return z[inverse]

    za, zb = scores(a), scores(b)
    if za.std() == 0 or zb.std() == 0:
        return 0.0
    return float(np.clip(np.corrcoef(za, zb)[0, 1], -1.0, 1.0))


def _percentiles(x: np.ndarray) -> dict[str, int]:
    return {k: int(round(float(np.percentile(x, q)))) for k, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}


def workload_from_log(log: RequestLog, profile: str, *, plan_for: str = "mean", window_s: float = 300.0,
                      arrivals: str = "auto", lengths: str = "empirical", rank: int = 16,
                      ranks: Mapping[str, int] | None = None, trace_file: str | None = None,
                      quantiles: int = QUANTILES) -> tuple[dict[str, Any], LogSummary]:
    """A placement workload (a plain dict, for ``packer.solve`` or a file) and what was measured.

    ``trace_file``: where the replay of the log is written for ``arrivals="trace"`` (the caller writes
    it with ``write_trace``)."""
    if not (window_s > 0 and math.isfinite(window_s)):
        raise InputError("window", f"must be a positive number of seconds (got {window_s!r})")
    if not 2 <= quantiles <= 10_001:
        raise InputError("quantiles", f"must be in [2, 10001] (got {quantiles})")
    q = parse_plan_for(plan_for)
    rates, cluster, own_sum, peak_to_mean = _planned_rates(log, q, window_s)
    ranks = dict(ranks or {})
    adapters = [{"id": aid, "rank": int(ranks.get(aid, rank)), "rate": float(f"{r:.6g}")}
                for aid, r in zip(log.adapter_ids, rates)]
    adapters.sort(key=lambda a: (-a["rate"], a["id"]))
    length_spec = _length_model(lengths, log, quantiles)
    arrival_spec, cv, sigma = _arrival_model(arrivals, log, trace_file)
    workload = {"profile": profile, "adapters": adapters, "lengths": length_spec, "arrivals": arrival_spec}
    from .model import LengthSpec

    spec = LengthSpec.model_validate(length_spec)
    summary = LogSummary(
        source=log.source, requests=log.requests, rows=log.rows, bad_rows=dict(log.bad_rows),
        adapters=len(adapters), span_s=log.span_s, mean_rate=log.requests / log.span_s,
        planned_rate=float(sum(a["rate"] for a in adapters)), plan_for=plan_for,
        window_s=window_s if q is not None else None, cluster_peak_rate=cluster, sum_of_adapter_peaks=own_sum,
        peak_to_mean=peak_to_mean, prompt_percentiles=_percentiles(log.prompt_tokens),
        output_percentiles=_percentiles(log.output_tokens), length_model=lengths,
        length_means=(spec.input_mean, spec.output_mean),
        log_length_means=(float(log.prompt_tokens.mean()), float(log.output_tokens.mean())),
        arrivals=arrival_spec, gap_cv=cv, rate_sigma=sigma, trace_file=trace_file)
    return workload, summary


def write_trace(log: RequestLog, path: str | Path) -> Path:
    """The log as a twin trace CSV (``arrived_at``, ``num_prefill_tokens``, ``num_decode_tokens``,
    ``adapter``), written atomically."""
    import io

    from .files import write_text_atomic

    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["arrived_at", "num_prefill_tokens", "num_decode_tokens", "adapter"])
    ids = log.adapter_ids
    for t, p, o, a in zip(log.arrival_s.tolist(), log.prompt_tokens.tolist(), log.output_tokens.tolist(),
                          log.adapter.tolist()):
        w.writerow([repr(t), p, o, ids[a]])
    return write_text_atomic(path, buf.getvalue())
