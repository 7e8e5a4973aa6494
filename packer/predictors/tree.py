"""The ``tree`` and ``forest`` predictors: one GPU's query answered by the distilled decision trees shipped
for its profile (``tree_model.py``, read by ``tree_io.py``), evaluated by numba.

``TreePredictor`` (registered as ``tree``) computes the features (``features.py``), runs the kernel and
answers with ``memory_error`` from the profile's exact memory check (no ML), ``offered_tps`` = the offered load
the twin would draw in expectation (``features.expected_offered``: the nominal load with the
profile's early-EOS output scale), ``throughput_tps`` = the ratio head x a base, capped at that load
(the model's ``ratio_base``: ``served`` multiplies min(offered, the fluid model's capacity),
``features.served_base``, so that the prediction extrapolates to heavy overload; ``offered``, the
first models' target, multiplies the offered load), ``starved`` = P(starved) > 0.5 and the latencies
of the model's latency heads (``tree_model.LATENCY_HEADS``: ``mean_itl_ms`` and, in models trained with
them, ``mean_ttft_ms``, ``p99_ttft_ms`` and ``worst_adapter_p99_ttft_ms``; None without the head). A query outside the model's training domain (``domain.py``: the ranges its sweep
drew) carries ``Prediction.warnings``, or is answered by the twin or refused (``extrapolation``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from ..profile import Profile, load_profile
from ..twin.fingerprint import twin_fingerprint
from ..twin.lengths import shipped_length_shapes
from .base import PREDICTORS, GpuQuery, Prediction, Predictor
from .domain import predict_packed_row_checked
from .features import FEATURE_NAMES, _consts, features_many, pack, profile_of
from .kernels import _C_OUT_SCALE, N_OUTCOMES
from .tree_io import load_model, model_path, model_stamp, shipped_model_stamps
from .tree_model import LATENCY_HEADS, TreeModel

__all__ = ["TreePredictor", "ForestPredictor", "EXTRAPOLATION", "LATENCY_GATE", "code_files"]

LATENCY_GATE = 0.25  # the largest test-split MARE of a latency head the predictor reports (see TreePredictor)
EXTRAPOLATION = ("warn", "twin", "error")  # what TreePredictor does with a query outside the training domain


class TreePredictor(Predictor):
    """Predicts one GPU with the distilled decision trees shipped for its profile.

    ``model`` is a model file to use instead of the shipped one (for every profile); ``profile``
    overrides the query's profile (a custom, unshipped ``Profile``) for the features and the memory
    check. Memory errors come from the profile's exact start-up memory check, not from a model.

    A query outside the model's training domain (``TreeModel.domain``: adapter count, load, lengths,
    ranks, server flags, arrivals) is, by ``extrapolation``: ``"warn"`` (default) predicted by the
    tree with ``Prediction.warnings`` naming each feature, its value and the trained range;
    ``"twin"`` answered by ``twin`` (default: a ``TwinPredictor`` on the same profile), the
    warnings saying so; ``"error"`` refused with an ``InputError``.

    A latency head whose error on its training's test split exceeds ``latency_gate`` (a MARE; default
    25 %) is withheld: its field stays None, so an SLO on it is checked with the twin (``withheld``).
    """

    name = "tree"
    kind = "tree"

    def __init__(self, model: str | Path | None = None, profile: Profile | None = None, extrapolation: str = "warn",
                 twin: Predictor | None = None, latency_gate: float = LATENCY_GATE):
        self.model_file = Path(model) if model is not None else None
        if self.model_file is not None and not self.model_file.is_file():
            raise InputError("model", f"no model file at {self.model_file}")
        if extrapolation not in EXTRAPOLATION:
            raise InputError("extrapolation", f"unknown mode {extrapolation!r}; valid: {', '.join(EXTRAPOLATION)}")
        if isinstance(latency_gate, bool) or not isinstance(latency_gate, (int, float)) or not latency_gate > 0:
            raise InputError("latency_gate", f"expected a relative error > 0 (e.g. 0.25), got {latency_gate!r}")
        self.profile = profile
        self.extrapolation = extrapolation
        self.latency_gate = float(latency_gate)
        self._twin = twin
        self._models: dict[str | None, TreeModel] = {}

    @property
    def twin(self) -> Predictor:
        """The predictor behind ``extrapolation="twin"``."""
        if self._twin is None:
            from .twin import TwinPredictor

            self._twin = TwinPredictor(profile=self.profile)
        return self._twin

    def describe(self) -> dict:
        d: dict[str, Any] = {"name": self.name}
        if self.extrapolation != "warn":  # "warn" only adds warnings; the others change answers
            d["extrapolation"] = self.extrapolation
            if self.extrapolation == "twin":
                d["twin"] = self.twin.describe()
        if self.model_file is not None:
            d["model"] = model_stamp(self.model_file)
        else:
            d["models"] = shipped_model_stamps()
        if self.profile is not None:
            d["profile"] = self.profile.fingerprint()
        if self.latency_gate != LATENCY_GATE:
            d["latency_gate"] = self.latency_gate
        d["code"] = _code_hash()  # the features, the kernels and the decode: a change in any changes answers
        return d

    def withheld(self, profile: str) -> dict[str, str]:
        m = self.model_for(profile)
        out = {}
        for head in m.latency_heads:
            err = m.latency_test_mare(head)
            if err is not None and err > self.latency_gate:
                out[LATENCY_HEADS[head]] = (f"its {head} head's test error ({err:.0%}) exceeds the accuracy gate "
                                            f"(latency_gate {self.latency_gate:.0%})")
        return out

    def _reported(self, m: TreeModel) -> tuple[tuple[int, str], ...]:
        """(outcome column, Prediction field) of the model's latency heads within the accuracy gate."""
        return m.gated_latencies(self.latency_gate)

    def model_for(self, profile: str | Profile) -> TreeModel:
        """The model for ``profile`` (a name, a profile file or a ``Profile``), checked against its numbers."""
        if self.profile is not None:
            key = None  # one profile for every query
        elif isinstance(profile, str):
            key = profile
        else:
            key = f"{profile.name}#{profile.fingerprint()}"
        m = self._models.get(key)
        if m is not None:
            return m
        prof = self.profile if self.profile is not None else load_profile(profile)
        path = self.model_file or model_path(prof.name, self.kind)
        if path is None:
            raise InputError("profile", f"no {self.kind} model is shipped for profile {prof.name!r}; train one "
                             f"with `packer train` (packer.predictors.training.train) and pass it as "
                             f"model=PATH, or use predictor 'twin'")
        m = load_model(path)
        if tuple(m.feature_names) != FEATURE_NAMES:
            raise InputError("model", f"{path} was trained on other features than this packer computes; "
                             "retrain it with `packer train`")
        if m.profile_fingerprint and m.profile_fingerprint != prof.fingerprint():
            raise InputError("model", f"{path} was trained on another calibration of profile {m.profile!r} "
                             f"than {prof.name!r} has now; retrain it with `packer train`")
        if m.length_shapes and m.length_shapes != shipped_length_shapes():
            raise InputError("model", f"{path} was trained on other request-length shapes than packer/data now "
                             "ships; retrain it with `packer train`")
        if m.twin_fingerprint != twin_fingerprint(prof):
            raise InputError("model", f"{path} was trained on runs of another twin than this packer's (its code, its "
                             "data files or the profile changed since); retrain it with `packer train`")
        self._models[key] = m
        return m

    def _memory_error(self, query: GpuQuery) -> str | None:
        s = query.server
        return _startup_error(self.profile if self.profile is not None else query.profile, s.max_loras,
                              s.max_lora_rank, s.gpu_memory_utilization, s.enable_lora)

    def predict(self, query: GpuQuery) -> Prediction:
        err = self._memory_error(query)
        if err is not None:
            return Prediction(predictor=self.name, starved=False, memory_error=err, throughput_tps=None,
                              offered_tps=query.offered_tps)
        m = self.model_for(query.profile)
        key = self.profile if self.profile is not None else query.profile
        xs, ys, c, _ = _consts(key)
        check = m.domain_check()
        r = predict_packed_row_checked(pack(query, key), xs, ys, c, *m.arrays, m.plan, c[_C_OUT_SCALE],
                                       check.intervals)
        values = r[:N_OUTCOMES + 1].tolist()
        thr, offered, starved, mask = values[0], values[1], values[2], values[N_OUTCOMES]
        warnings = check.messages(int(mask), r[N_OUTCOMES + 1:], query) if mask or not check.plain(query) else ()
        if warnings and self.extrapolation != "warn":
            return self._outside([query], [warnings])[0]
        return Prediction(predictor=self.name, starved=starved != 0.0, memory_error=None, throughput_tps=thr,
                          offered_tps=offered, warnings=warnings,
                          **{f: values[k] for k, f in self._reported(m)})

    def predict_many(self, queries: Sequence[GpuQuery]) -> list[Prediction]:
        """``predict`` on every query, the features and trees of each profile's queries in one batch."""
        out: list[Prediction | None] = [None] * len(queries)
        by_profile: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            err = self._memory_error(q)
            if err is not None:
                out[i] = Prediction(predictor=self.name, starved=False, memory_error=err, throughput_tps=None,
                                    offered_tps=q.offered_tps)
            else:
                by_profile.setdefault(q.profile, []).append(i)
        outside: list[int] = []
        outside_warnings: list[tuple[str, ...]] = []
        for profile, idx in by_profile.items():
            m = self.model_for(profile)
            group = [queries[i] for i in idx]
            X = features_many(group, self.profile)
            warnings = m.domain_check().warnings(X, group)
            c = _consts(self.profile if self.profile is not None else profile)[2]
            res = m.outcomes(X, float(c[_C_OUT_SCALE]))
            name, reported = self.name, self._reported(m)
            for i, row, w in zip(idx, res.tolist(), warnings):
                out[i] = Prediction(predictor=name, starved=row[2] != 0.0, memory_error=None, throughput_tps=row[0],
                                    offered_tps=row[1], warnings=w, **{f: row[k] for k, f in reported})
                if w and self.extrapolation != "warn":
                    outside.append(i)
                    outside_warnings.append(w)
        if outside:
            for i, p in zip(outside, self._outside([queries[i] for i in outside], outside_warnings)):
                out[i] = p
        return out  # type: ignore[return-value]

    def _outside(self, queries: Sequence[GpuQuery], warnings: Sequence[tuple[str, ...]]) -> list[Prediction]:
        """Queries outside the training domain, by ``extrapolation``: refused, or answered by the twin."""
        if self.extrapolation == "error":
            raise InputError("extrapolation", f"the {self.name} model would extrapolate: "
                             f"{warnings[0][0].removeprefix('extrapolating: ')}; use predictor 'twin', or "
                             "extrapolation='twin' (the twin answers such queries) or 'warn'")
        note = f"answered by the twin: the query is outside the {self.name} model's training domain"
        return [dataclasses.replace(p, warnings=(*w, note))
                for p, w in zip(self.twin.predict_many(list(queries)), warnings)]


class ForestPredictor(TreePredictor):
    """The ``forest`` predictor: the undistilled models as one ensemble (``train(..., forest_out=...)``:
    gradient boosting exported tree by tree, or a random forest / extra trees refitted with at most
    32 trees of depth 12), shipped as ``packer/models/<profile>.forest.npz``; same kernel and
    interface as ``tree``, more accurate on average, tens of µs per GPU."""

    name = "forest"
    kind = "forest"


@lru_cache(maxsize=4096)
def _startup_error(profile: str | Profile, max_loras: int, max_lora_rank: int, util: float, lora: bool) -> str | None:
    return profile_of(profile).memory.startup_error(max_loras, max_lora_rank, util, lora)


def code_files() -> tuple[Path, ...]:
    """The source files whose code turns a query into a tree prediction (features, kernels, the domain
    check, the model and its file reader, this module): ``describe()`` hashes them, so caches keyed on
    it notice a change in any of them."""
    from . import domain, features, kernels, tree_io, tree_model
    return tuple(Path(m.__file__) for m in (features, kernels, domain, tree_model, tree_io)) + (Path(__file__),)


@lru_cache(maxsize=1)
def _code_hash() -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in code_files())).hexdigest()[:16]


PREDICTORS.register("tree", TreePredictor, summary="a distilled decision tree trained on twin runs (numba; µs per GPU)")
PREDICTORS.register("forest", ForestPredictor, summary="the undistilled tree ensemble trained on twin runs (numba)")
