"""Reading and writing the files packer uses, safely: one reader for JSON, CSV and NPZ, one JSON encoder.

Every file packer reads (scenarios, workloads, profiles, traces, models, caches, sweep data) goes
through here, so a bad file always ends in one ``InputError`` whose message is one line:
``<path>: <problem>; <fix>``, never an encoding, nesting or zip traceback. JSON output goes through
``dumps``, which turns NaN and infinities into ``null`` (so the output is always valid JSON), and
``write_json_atomic`` never leaves a half-written file behind.

A root-level utility: it imports only the standard library and ``packer.errors`` (numpy only in the
functions that read CSV numbers and NPZ files, so the CLI starts without it).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import enum
import io
import itertools
import json
import math
import os
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .errors import InputError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["cache_root", "MAX_FILE_BYTES", "read_text", "read_json", "read_json_text", "read_csv", "CsvTable", "read_npz",
           "write_json_atomic", "write_text_atomic", "json_ready", "dumps", "loaded_numpy"]

MAX_FILE_BYTES = 256 << 20  # far above any file packer reads; a bigger one is a wrong path, not data


# ---- reading ------------------------------------------------------------------------------------

def cache_root() -> Path:
    """Where packer keeps what it measured (capacity tables, live benchmarks): ``$PACKER_CACHE_DIR``,
    default ``~/.cache/packer``."""
    return Path(os.environ.get("PACKER_CACHE_DIR") or Path.home() / ".cache" / "packer")


def _read_bytes(path: str | os.PathLike, field: str, kind: str) -> bytes:
    p = Path(path)
    try:
        if p.is_dir():
            raise InputError(field, f"{p}: is a directory, not a file; give the path of a {kind} file")
        with open(p, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InputError(field, f"{p}: no such file; check the path") from None
    except PermissionError:
        raise InputError(field, f"{p}: permission denied; make the file readable") from None
    except OSError as e:
        raise InputError(field, f"{p}: cannot read the file ({e.strerror or type(e).__name__}); "
                                f"check the path") from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError(field, f"{p}: larger than {MAX_FILE_BYTES >> 20} MiB, too large for a {kind} file; "
                                "check the path")
    return data


def read_text(path: str | os.PathLike, *, field: str = "file", kind: str = "text") -> str:
    """A file's text, decoded as UTF-8 (a leading byte-order mark is dropped)."""
    data = _read_bytes(path, field, kind)
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = skip + e.start
        raise InputError(field, f"{Path(path)}: not UTF-8 text (byte 0x{data[at]:02x} at offset {at}); "
                                f"save it as UTF-8") from None


class _Literal(float):
    """A non-finite number as it was written (NaN, Infinity, -Infinity, 1e999), to name it in the error."""

    def __new__(cls, text: str):
        self = super().__new__(cls, text)
        self.text = text
        return self


def _first_literal(value: Any) -> tuple[str, str] | None:
    """(where, literal) of the first non-finite number in parsed JSON, e.g. ('adapters[0].rate', 'NaN')."""
    stack = [("", value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, _Literal):
            return where or "the top-level value", v.text
        if isinstance(v, dict):
            stack.extend((f"{where}.{k}" if where else str(k), x) for k, x in reversed(list(v.items())))
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", x) for i, x in reversed(list(enumerate(v))))
    return None


def read_json_text(text: str, source: str, *, field: str = "file", allow_nan: bool = False) -> Any:
    """Parse JSON ``text`` read from ``source`` (named in errors). NaN / Infinity literals and numbers
    that overflow a float are refused (the error names where they are) unless ``allow_nan``."""
    literals: list[str] = []

    def literal(s: str) -> float:
        literals.append(s)
        return _Literal(s)

    def number(s: str) -> float:
        v = float(s)
        return v if math.isfinite(v) else literal(s)

    hooks = {} if allow_nan else {"parse_constant": literal, "parse_float": number}
    try:
        value = json.loads(text, **hooks)
    except json.JSONDecodeError as e:
        if not text.strip():
            raise InputError(field, f"{source}: the file is empty; write a JSON value into it") from None
        raise InputError(field, f"{source}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                                "fix the JSON") from None
    except RecursionError:
        raise InputError(field, f"{source}: JSON nested too deeply (more than about {sys.getrecursionlimit()} "
                                "levels); flatten the file") from None
    except ValueError as e:  # e.g. an integer literal of more digits than Python converts
        raise InputError(field, f"{source}: not valid JSON ({str(e).splitlines()[0]}); fix the JSON") from None
    if literals:
        where, written = _first_literal(value) or ("a value", literals[0])
        raise InputError(field, f"{source}: {where} is {written}, which is not a finite JSON number; "
                                "write a finite number (or null)")
    return value


def read_json(path: str | os.PathLike, *, field: str = "file", allow_nan: bool = False) -> Any:
    """The JSON value in the file at ``path`` (UTF-8, at most ``MAX_FILE_BYTES``); see ``read_json_text``."""
    return read_json_text(read_text(path, field=field, kind="JSON"), str(Path(path)), field=field,
                          allow_nan=allow_nan)


class CsvTable:
    """A CSV file's header (names stripped) and rows (blank lines skipped), with the line each row starts on."""

    def __init__(self, source: str, header: list[str], rows: list[list[str]], lines: list[int], field: str):
        self.source, self.header, self.rows, self.lines, self.field = source, header, rows, lines, field

    def __len__(self) -> int:
        return len(self.rows)

    def records(self) -> Iterator[tuple[int, dict[str, str]]]:
        """(line number, {column: cell}) per row; cells missing from a short row are ''."""
        for line, row in zip(self.lines, self.rows):
            yield line, {name: (row[j] if j < len(row) else "") for j, name in enumerate(self.header)}

    def numbers(self, name: str, *, minimum: float | None = None, maximum: float | None = None,
                integer: bool = False) -> np.ndarray:
        """Column ``name`` as float64, every value finite, in [minimum, maximum] and (``integer``) whole;
        the error names the file, line, column and value."""
        import numpy as np

        j = self.header.index(name)
        values = np.empty(len(self.rows))
        for i, row in enumerate(self.rows):
            cell = row[j].strip() if j < len(row) else ""
            try:
                v = float(cell)
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                problem, fix = "is not a finite number", "fix or drop that row"
            elif integer and not v.is_integer():
                problem, fix = "is not a whole number", "write a whole number"
            elif minimum is not None and v < minimum:
                problem, fix = f"is below {_number(minimum)}", f"write a value of at least {_number(minimum)}"
            elif maximum is not None and v > maximum:
                problem, fix = f"is above {_number(maximum)}", f"write a value of at most {_number(maximum)}"
            else:
                values[i] = v
                continue
            raise InputError(self.field, f"{self.source}, line {self.lines[i]}, column {name!r}: {cell!r} "
                                         f"{problem}; {fix}")
        return values


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def read_csv(path: str | os.PathLike, *, field: str = "file", required: Sequence[str] = ()) -> CsvTable:
    """A CSV file (UTF-8, a header row first) that has every ``required`` column."""
    p = Path(path)
    text = read_text(p, field=field, kind="CSV")
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, lines, start = [], [], 1
    try:
        for row in reader:
            if row:
                rows.append(row)
                lines.append(start)  # the line the row starts on (a quoted cell may span lines)
            start = reader.line_num + 1
    except csv.Error as e:
        raise InputError(field, f"{p}, line {reader.line_num}: not valid CSV ({e}); fix that line") from None
    need = f" (with the columns {', '.join(required)})" if required else ""
    if not rows:
        raise InputError(field, f"{p}: is empty; it needs a header row{need} and one row per record")
    header = [h.strip() for h in rows[0]]
    for name in required:
        if name not in header:
            raise InputError(field, f"{p}: no {name!r} column (columns: {', '.join(header) or 'none'}); "
                                    f"add a column named {name!r}")
    return CsvTable(str(p), header, rows[1:], lines[1:], field)


def read_npz(path: str | os.PathLike, *, field: str = "file", required: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (never unpickling), which must hold the ``required`` names."""
    import numpy as np

    p = Path(path)
    data = _read_bytes(p, field, "NPZ")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zipfile.LargeZipFile) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(field, f"{p}: not a readable NPZ file ({why}); write it again") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise InputError(field, f"{p}: lacks the arrays {', '.join(missing)}; write it again")
    return arrays


# ---- writing ------------------------------------------------------------------------------------

def loaded_numpy() -> Any:
    """numpy if some module has imported it, else None. A value can be a numpy object only then, so
    a check for numpy types needs no import of its own (which would slow down the CLI's start-up)."""
    return sys.modules.get("numpy")


def json_ready(x: Any, *, digits: int | None = None) -> Any:
    """``x`` as plain JSON values: numpy scalars and arrays as Python numbers and lists, non-finite
    floats as None, tuples as lists, enums as their values, dataclasses as dicts, paths as strings,
    dict keys as strings (those JSON keys can be are kept). ``digits``: round floats to that many
    significant digits."""
    if isinstance(x, enum.Enum):
        x = x.value
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
        return float(f"{x:.{digits}g}") if digits is not None and x != 0 else float(x)
    np = loaded_numpy()
    if np is not None and isinstance(x, np.generic):
        return json_ready(x.item(), digits=digits)
    if np is not None and isinstance(x, np.ndarray):
        return json_ready(x.tolist(), digits=digits)
    if isinstance(x, dict):
        return {_json_key(k): json_ready(v, digits=digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v, digits=digits) for v in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: json_ready(getattr(x, f.name), digits=digits) for f in dataclasses.fields(x)}
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x  # anything else: json.dumps names the type it cannot encode


def _json_key(k: Any) -> Any:
    if isinstance(k, enum.Enum):
        k = k.value
    np = loaded_numpy()
    if np is not None and isinstance(k, np.generic):
        k = k.item()
    if k is None or isinstance(k, (str, bool, int)) or (isinstance(k, float) and math.isfinite(k)):
        return k  # json.dumps writes these keys itself
    return str(k)


def dumps(obj: Any, **kwargs) -> str:
    """``json.dumps`` of ``json_ready(obj)``: never NaN or Infinity, which are not JSON."""
    return json.dumps(json_ready(obj), allow_nan=False, **kwargs)


_tmp_serial = itertools.count()


def write_json_atomic(path: str | os.PathLike, obj: Any, **kwargs) -> Path:
    """Write ``dumps(obj, **kwargs)`` to ``path`` atomically (see ``write_text_atomic``). Raises OSError."""
    return write_text_atomic(path, dumps(obj, **kwargs))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same directory (then renamed
    over it), so a reader never sees a half-written file. Raises OSError."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{next(_tmp_serial)}.tmp")
    created = False
    try:
        with open(tmp, "x", encoding="utf-8") as f:  # a fresh file, with the permissions of any other
            created = True
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        if created:
            tmp.unlink(missing_ok=True)
        raise
    return p
