"""Tree model files: reading, checking and writing them (JSON or NPZ, never pickle), finding the shipped
ones, and the stamps (content hashes) that ``TreePredictor.describe()`` keys caches on.

A model file holds one ``TreeModel`` (``tree_model.py``): its heads, each one or more binary trees,
plus metadata.

- JSON (``packer/models/<profile>.json``, the ``tree`` predictor)::

    {"format": "packer-tree-model", "version": 1, "kind": "tree", "profile": ..., "profile_fingerprint": ...,
     "length_shapes": {...}, "feature_names": [...], "training": {...},
     "heads": {"ratio": {"transform": "identity", "trees": [{"feature": [...], "threshold": [...],
                                                               "left": [...], "right": [...], "value": [...]}]},
               "starved": {...}, "itl": {"transform": "exp", ...}}}

- NPZ (``packer/models/<profile>.forest.npz``, the ``forest`` predictor): per head ``<head>.feature``,
  ``.threshold``, ``.left``, ``.right``, ``.value`` (every tree's nodes concatenated, child indices
  local to their tree) and ``<head>.roots`` (each tree's first node), plus ``meta`` (a 0-d unicode
  array with the JSON metadata, heads' transforms included). Loads with ``allow_pickle=False``.

A file that is not a sound model (another format, a newer version, ragged or non-finite node
arrays, trees whose links do not fit) is an ``InputError`` that says to write the model again.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from ..files import dumps, read_json, read_json_text, read_npz
from .tree_model import Head, Tree, TreeModel

__all__ = ["FORMAT", "VERSION", "load_model", "save_model", "model_path", "model_stamp", "shipped_model_stamps"]

FORMAT = "packer-tree-model"
VERSION = 1


# ---- writing --------------------------------------------------------------------------------------

def _tree_json(tree: Tree) -> dict:
    leaf = tree.left < 0
    return {"feature": [int(f) if not l else -1 for f, l in zip(tree.feature, leaf)],
            "threshold": [float(t) if not l else 0.0 for t, l in zip(tree.threshold, leaf)],
            "left": tree.left.tolist(), "right": tree.right.tolist(),
            "value": [float(v) if l else 0.0 for v, l in zip(tree.value, leaf)]}


def _meta(model: TreeModel) -> dict:
    return {"format": FORMAT, "version": VERSION, "kind": model.kind, "profile": model.profile,
            "profile_fingerprint": model.profile_fingerprint, "feature_names": list(model.feature_names),
            "ratio_base": model.ratio_base, "length_shapes": model.length_shapes,
            "twin_fingerprint": model.twin_fingerprint,
            "training": model.training, "head_settings": {n: h.settings() for n, h in model.heads.items()}}


def _model_json(model: TreeModel) -> dict:
    meta = _meta(model)
    settings = meta.pop("head_settings")
    meta["heads"] = {n: {**settings[n], "trees": [_tree_json(t) for t in h.trees]} for n, h in model.heads.items()}
    return meta


def _npz_arrays(model: TreeModel) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {"meta": np.array(dumps(_meta(model)))}  # keeps the head order
    for n, h in model.heads.items():
        offs = np.cumsum([0] + [t.n_nodes for t in h.trees])
        arrays[f"{n}.roots"] = offs[:-1].astype(np.int64)
        for col in ("feature", "threshold", "left", "right", "value"):
            arrays[f"{n}.{col}"] = np.concatenate([getattr(t, col) for t in h.trees])
    return arrays


def save_model(model: TreeModel, path: str | Path) -> Path:
    """Write ``model`` as JSON (``.json``) or NPZ (``.npz``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".json":
        p.write_text(dumps(_model_json(model), separators=(",", ":")), encoding="utf-8")
    elif p.suffix == ".npz":
        with open(p, "wb") as f:
            np.savez_compressed(f, **_npz_arrays(model))
    else:
        raise InputError("out_path", f"a model file must end in .json or .npz (got {p.name!r})")
    _load_cached.cache_clear()
    return p


# ---- reading --------------------------------------------------------------------------------------

def _check_meta(meta: Any, where: str) -> None:
    fmt = meta.get("format") if isinstance(meta, dict) else f"a JSON {type(meta).__name__}"
    if fmt != FORMAT:
        raise InputError("model", f"{where} is not a packer tree model (format {fmt!r}); give a model file "
                         "written by `packer train`")
    version = meta.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InputError("model", f"{where} has model format version {version!r}, not a whole number; "
                         "write the model again")
    if version > VERSION:
        raise InputError("model", f"{where} has model format version {version}; this packer reads "
                         f"up to {VERSION}")


def load_model(path: str | Path) -> TreeModel:
    """Read a model file (JSON or NPZ, never pickle); a file that is not a sound model is an InputError."""
    p = Path(path)
    if p.suffix not in (".json", ".npz"):
        raise InputError("model", f"a model file must end in .json or .npz (got {p.name!r})")
    try:
        mtime_ns = p.stat().st_mtime_ns
    except OSError:
        mtime_ns = -1  # the reader names what is wrong with the path
    return _load_cached(str(p.resolve()), mtime_ns)


_NODE_COLUMNS = {"feature": "i", "threshold": "f", "left": "i", "right": "i", "value": "f"}  # name: numpy kind


def _node_array(a: Any, column: str, where: str) -> np.ndarray:
    """One node column, checked: 1-D, integer (split feature, children) or finite numbers (threshold, value)."""
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in ("iu" if _NODE_COLUMNS[column] == "i" else "iuf"):
        raise InputError("model", f"{where}: the {column!r} node column is not a 1-D array of "
                         f"{'integers' if _NODE_COLUMNS[column] == 'i' else 'numbers'} (dtype {a.dtype}, "
                         f"shape {a.shape}); write the model again")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise InputError("model", f"{where}: the {column!r} node column holds NaN or infinite values; "
                         "write the model again")
    if a.dtype.kind in "iu" and len(a) and (a.max() > np.iinfo(np.int32).max or a.min() < np.iinfo(np.int32).min):
        raise InputError("model", f"{where}: the {column!r} node column holds values out of range; "
                         "write the model again")
    return a.astype(np.int32 if _NODE_COLUMNS[column] == "i" else np.float64)


def _tree_from_json(t: Any, where: str) -> Tree:
    if not isinstance(t, dict) or set(_NODE_COLUMNS) - set(t):
        raise InputError("model", f"{where}: a tree is not an object with the node lists "
                         f"{', '.join(_NODE_COLUMNS)}; write the model again")
    try:
        cols = {c: _node_array(np.asarray(t[c]), c, where) for c in _NODE_COLUMNS}
    except ValueError as e:  # ragged or non-numeric lists
        raise InputError("model", f"{where}: a tree's node lists are not flat lists of numbers ({e}); "
                         "write the model again") from None
    return Tree(**cols)


def _head_settings(h: Mapping[str, Any], where: str) -> dict[str, Any]:
    settings = {k: h[k] for k in ("transform", "combine", "bias", "compare") if k in h}
    bias = settings.get("bias", 0.0)
    if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
        raise InputError("model", f"{where}: a head's bias {bias!r} is not a finite number; write the model again")
    return settings


@lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int) -> TreeModel:
    p = Path(path)
    if p.suffix == ".json":
        # non-finite numbers are allowed in the metadata (a training report's metrics); every node
        # array is checked to be finite below
        d = read_json(p, field="model", allow_nan=True)
        _check_meta(d, str(p))
        try:
            heads = {n: Head(tuple(_tree_from_json(t, str(p)) for t in h["trees"]), **_head_settings(h, str(p)))
                     for n, h in d["heads"].items()}
        except (KeyError, TypeError, AttributeError) as e:
            raise InputError("model", f"{p}: not a packer tree model (its heads lack {e}); "
                             "write the model again") from None
    else:
        z = read_npz(p, field="model", required=("meta",))
        d = read_json_text(str(z["meta"]), f"{p} (meta)", field="model", allow_nan=True)
        _check_meta(d, str(p))
        heads = {}
        settings_of = d.get("head_settings")
        if not isinstance(settings_of, dict):
            raise InputError("model", f"{p}: its metadata has no head_settings; write the model again")
        for n, settings in settings_of.items():
            need = [f"{n}.{c}" for c in ("roots", *_NODE_COLUMNS)]
            missing = [k for k in need if k not in z]
            if missing or not isinstance(settings, dict):
                raise InputError("model", f"{p}: lacks the arrays {', '.join(missing) or 'settings'} of head {n!r}; "
                                 "write the model again")
            cols = {c: _node_array(z[f"{n}.{c}"], c, str(p)) for c in _NODE_COLUMNS}
            roots = z[f"{n}.roots"]
            size = len(cols["feature"])
            if not (roots.ndim == 1 and roots.dtype.kind in "iu" and len(roots) and roots[0] == 0
                    and np.all(np.diff(roots) > 0) and roots[-1] < size
                    and all(len(a) == size for a in cols.values())):
                raise InputError("model", f"{p}: head {n!r} has tree roots or node arrays that do not fit "
                                 "together; write the model again")
            ends = [*roots[1:].tolist(), size]
            heads[n] = Head(tuple(Tree(*(cols[c][a:b] for c in _NODE_COLUMNS)) for a, b in zip(roots.tolist(), ends)),
                            **_head_settings(settings, str(p)))
    try:
        return TreeModel(d["profile"], tuple(d["feature_names"]), heads, d.get("kind", "tree"),
                         d.get("profile_fingerprint", ""), d.get("training", {}), source=str(p),
                         ratio_base=d.get("ratio_base", "offered"), length_shapes=d.get("length_shapes", {}),
                         twin_fingerprint=d.get("twin_fingerprint", ""))
    except (KeyError, TypeError) as e:
        raise InputError("model", f"{p}: not a packer tree model (its metadata lacks {e}); "
                         "write the model again") from None


def _models_dir():
    return resources.files("packer") / "models"


def model_path(profile: str, kind: str = "tree") -> Path | None:
    """The shipped model file of ``profile`` for predictor ``kind`` (``tree``: ``<profile>.json`` or
    ``.npz``; ``forest``: ``<profile>.forest.npz`` or ``.forest.json``), or None."""
    if "/" in profile or "\\" in profile:
        return None
    stems = [profile] if kind == "tree" else [f"{profile}.{kind}"]
    exts = (".json", ".npz") if kind == "tree" else (".npz", ".json")
    d = _models_dir()
    for stem in stems:
        for ext in exts:
            f = d / f"{stem}{ext}"
            if f.is_file():
                return Path(str(f))
    return None


# ---- stamps ---------------------------------------------------------------------------------------

def model_stamp(path: Path) -> str:
    """A model file's content hash (16 hex digits), cached on its resolved path and mtime."""
    return _file_hash(str(path.resolve()), path.stat().st_mtime_ns)


def shipped_model_stamps() -> dict[str, str]:
    """The content hash of every shipped model file, by file name."""
    return {p.name: _file_hash(str(p), p.stat().st_mtime_ns)
            for p in sorted(Path(str(_models_dir())).glob("*")) if p.suffix in (".json", ".npz")}


@lru_cache(maxsize=64)
def _file_hash(path: str, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
