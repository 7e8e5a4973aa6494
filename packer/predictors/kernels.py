"""The predictors' numba kernels, in one module behind the plain Python APIs of ``features.py`` and
``tree_model.py``: the feature kernel, the tree walk, the heads' decode, and the whole single-query path
in one call.

They live in one file because numba's on-disk cache (``cache=True``) is invalidated only when the
file that defines a kernel changes, not when a kernel it calls changes in another file: a kernel that
computes features and walks trees must sit with both. Layouts shared with the Python side (the
per-profile constants, the per-query scalars, the decode plan) are defined here too, for the same
reason: numba compiles module globals in as constants. (The one kernel called from elsewhere is the
twin's ``_interp``, shared on purpose so that the fluid model interpolates the step cost exactly as
the twin does; a change to it needs numba's cache in ``__pycache__`` cleared.)
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ..twin.kernel import _interp  # the twin's own step-cost interpolation

N_FEATURES = 38  # the feature vector's length, written by _fill (features.FEATURE_NAMES names them)

# Per-profile constants, in the kernel's order.
(_C_PREFILL, _C_ATTN, _C_CTX_REF, _C_LORA_BASE, _C_LORA_TOK, _C_LORA_SLOT, _C_LORA_ADAPTER, _C_RANK_REF,
 _C_RANK_SLOPE, _C_SCHED_BASE, _C_SCHED_RUNNING, _C_OUT_SCALE, _C_BLOCK, _C_N) = range(14)
# Per-query scalars, in the kernel's order.
(_S_A, _S_R, _S_SEQS, _S_BATCHED, _S_UTIL, _S_LORA, _S_IN, _S_OUT, _S_DIST, _S_CV, _S_SIGMA, _S_PERIOD, _S_KV,
 _S_RK_MAX, _S_RK_MEAN, _S_RK_STD, _S_N) = range(17)

# The decode plan (``TreeModel.plan``): transform codes, head positions (-1: no such head), the ratio
# base and the feature columns the decode reads (looked up in the model's own feature names); then, per
# latency head (``tree_model.LATENCY_HEADS``, in order), its position and its transform code.
(_P_RATIO_T, _P_STARVED, _P_STARVED_T, _P_SERVED, _P_TOTAL_RATE, _P_INPUT_MEAN, _P_OUTPUT_MEAN,
 _P_LOAD_FACTOR, _P_LATENCY) = range(9)
N_LATENCY = 4  # mean ITL, mean TTFT, p99 TTFT, the worst adapter's p99 TTFT
_P_N = _P_LATENCY + 2 * N_LATENCY
N_OUTCOMES = 3 + N_LATENCY  # throughput, offered, starved 0/1, then the latency heads' values (NaN: no head)
# A head's transform in the plan (``_transformed``).
_TRANSFORM_CODES = {"identity": 0, "exp": 1, "sigmoid": 2}


# ---- features -----------------------------------------------------------------------------------

@nb.njit(cache=True, nogil=True)
def _solve_linear(t, base, lin, xs, ys, b_max):
    """The B in [0, b_max] with B = t·(interp(B, xs, ys) + lin·B + base) (b_max if none below it)."""
    n = xs.shape[0]
    if n == 1:
        b = 1.0 - t * lin
        return min(t * (ys[0] + base) / b, b_max) if b > 0 else b_max
    for j in range(n - 1):
        slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
        a = ys[j] - slope * xs[j] + base
        b = 1.0 - t * (slope + lin)
        if b <= 0:
            continue
        B = t * a / b
        if (j == n - 2 or B <= xs[j + 1]) and (j == 0 or B >= xs[j]):
            return min(max(B, 0.0), b_max)
    return b_max


@nb.njit(cache=True, nogil=True)
def _distinct_ms(B, eff, A, la):
    if la == 0.0:
        return 0.0
    return la * min(eff * (1.0 - math.exp(-B / eff)), A)


@nb.njit(cache=True, nogil=True)
def _busy_period_s(rate, life_s):
    """Mean busy period of an M/G/inf queue, (e^rho - 1) / rate with rho = rate * life_s (life_s as
    rho -> 0; capped at 1e300 s, since e^rho overflows long before a busy period matters)."""
    rho = rate * life_s
    if rho < 1e-9:
        return life_s
    if rho > 690.0:
        return 1e300
    return math.expm1(rho) / rate


@nb.njit(cache=True, nogil=True)
def _features_kernel(S, offsets, rates, xs, ys, c, out):
    """Features of a batch: row i from scalars S[i] and the adapter rates offsets[i]..offsets[i+1]-1."""
    for i in range(S.shape[0]):
        _fill(out[i], S[i], rates[offsets[i]:offsets[i + 1]], xs, ys, c)


@nb.njit(cache=True, nogil=True)
def features_packed(v, xs, ys, c):
    """Features of one query packed by ``pack`` (scalars, rates) for profile arrays xs, ys, c."""
    out = np.empty(N_FEATURES, dtype=np.float64)
    _fill(out, v[:_S_N], v[_S_N:], xs, ys, c)
    return out


@nb.njit(cache=True, nogil=True)
def _fill(o, sc, rates, xs, ys, c):
    """One query's features into ``o``, from its scalars ``sc`` (the _S_* layout) and its rates."""
    n = rates.shape[0]
    tot = 0.0
    sq = 0.0
    mx = rates[0]
    for k in range(n):
        r = rates[k]
        tot += r
        sq += r * r
        if r > mx:
            mx = r
    mean = tot / n
    std = math.sqrt(max(sq / n - mean * mean, 0.0))
    cv = std / mean if mean > 0 else 0.0
    share = mx / tot if tot > 0 else 1.0 / n
    eff = tot * tot / sq if sq > 0 else float(n)

    A = sc[_S_A]
    R = sc[_S_R]
    lora = sc[_S_LORA] != 0.0
    I = sc[_S_IN]
    out_nominal = sc[_S_OUT]
    kv = sc[_S_KV]
    tokens = I + out_nominal
    offered = tot * tokens
    if A >= n or tot <= 0:
        top = 1.0
        srt = np.empty(0)
    else:
        srt = np.sort(rates)
        top = srt[n - int(A):].sum() / tot

    # Fluid model (see the module docstring).
    O = max(out_nominal * c[_C_OUT_SCALE], 1.0)
    io = I / O
    b_lim = min(sc[_S_SEQS], sc[_S_BATCHED] / (1.0 + io), kv / (I + 0.5 * O + c[_C_BLOCK]))
    b_lim = max(b_lim, 1.0)
    lin = c[_C_ATTN] * (I + 0.5 * O - c[_C_CTX_REF]) + c[_C_PREFILL] * io + c[_C_SCHED_RUNNING]
    const = c[_C_SCHED_BASE]
    la = 0.0
    if lora:
        rf = 1.0 + c[_C_RANK_SLOPE] * (R - c[_C_RANK_REF]) / c[_C_RANK_REF]
        lin += rf * (c[_C_LORA_TOK] + c[_C_LORA_SLOT] * A) * (1.0 + io)
        const += rf * c[_C_LORA_BASE]
        la = c[_C_LORA_ADAPTER]
    step_max = _interp(b_lim, xs, ys) + lin * b_lim + const + _distinct_ms(b_lim, eff, A, la)
    lam_max = 1000.0 * b_lim / (O * step_max)
    cap = lam_max * tokens
    if tot >= lam_max:
        itl = step_max
    else:
        # The batch B* with B = t·step(B), t = rate·O/1000 (Little's law over O decode steps).
        # With the distinct-adapter term frozen, step is piecewise linear in B: solve each
        # segment exactly; then refresh that term at the answer and solve once more.
        t = tot * O / 1000.0
        B = 0.0
        base = const
        for _ in range(2):
            base = const + _distinct_ms(B, eff, A, la)
            B = _solve_linear(t, base, lin, xs, ys, b_lim)
        itl = _interp(B, xs, ys) + lin * B + base

    # Slot contention (see the module docstring).
    life_s = O * itl / 1000.0
    held_rho = 0.0
    hold_log = -10.0
    turnover_log = 6.0
    unslotted = 0.0
    if lora and srt.shape[0] > 0:
        k0 = n - int(A)
        held_rho = srt[k0] * life_s
        hold_log = math.log(_busy_period_s(srt[k0], life_s))
        releases = 0.0
        for k in range(k0, n):
            releases += 1.0 / _busy_period_s(srt[k], life_s)
        for k in range(k0):
            unslotted += srt[k]
        if unslotted > 0:
            turnover_log = min(max(math.log10(releases / unslotted), -12.0), 6.0)

    o[0] = n
    o[1] = tot
    o[2] = mean
    o[3] = std
    o[4] = mx
    o[5] = cv
    o[6] = share
    o[7] = eff
    o[8] = sc[_S_RK_MAX]
    o[9] = sc[_S_RK_MEAN]
    o[10] = sc[_S_RK_STD]
    o[11] = R
    o[12] = A
    o[13] = A / n
    o[14] = eff / A
    o[15] = top
    o[16] = tot / min(A, n)
    o[17] = offered
    o[18] = I
    o[19] = out_nominal
    o[20] = sc[_S_DIST]
    o[21] = sc[_S_CV]
    o[22] = sc[_S_SIGMA]
    o[23] = sc[_S_PERIOD]
    o[24] = kv
    o[25] = offered / kv if kv > 0 else offered
    o[26] = sc[_S_SEQS]
    o[27] = sc[_S_BATCHED]
    o[28] = sc[_S_UTIL]
    o[29] = b_lim
    o[30] = cap
    o[31] = offered / cap if cap > 0 else 0.0
    o[32] = itl
    o[33] = mx * life_s
    o[34] = held_rho
    o[35] = hold_log
    o[36] = turnover_log
    o[37] = unslotted


# ---- trees --------------------------------------------------------------------------------------

@nb.njit(cache=True, nogil=True)
def _walk(x, node, nodes, node_values, f32):
    """The leaf value row x reaches from ``node`` (the node layout: ``predict_nodes``)."""
    while True:
        word = nodes[node, 0]
        feature = np.int32(word & 0xFFFFFFFF)
        if feature < 0:
            return node_values[node, 1]
        v = np.float32(x[feature]) if f32 else x[feature]
        if v <= node_values[node, 1]:
            node += 1
        else:
            node = np.int64(word >> 32)


@nb.njit(cache=True, nogil=True)
def _heads(x, nodes, node_values, roots, heads, bias, out):
    for h in range(heads.shape[0]):
        a = heads[h, 0]
        b = heads[h, 1]
        f32 = heads[h, 3] != 0
        acc = 0.0
        for t in range(a, b):
            acc += _walk(x, roots[t], nodes, node_values, f32)
        out[h] = acc + bias[h] if heads[h, 2] != 0 else acc / (b - a)


@nb.njit(cache=True, nogil=True)
def predict_nodes(X, nodes, node_values, roots, heads, bias):
    """Every head on every row (2-D X), before transforms: shape (rows, heads).

    Every tree's nodes are concatenated in depth-first pre-order, one 16-byte record per node, so
    that a step reads one cache line and a left step reads the next record: ``nodes`` (int64, shape
    (nodes, 2)) holds in column 0 the split feature in its low 32 bits (-1 at a leaf) and the
    *absolute* index of the right child in its high 32 bits (the left child is the next node);
    ``node_values`` is the same memory seen as float64, whose column 1 holds the threshold (go left
    when x <= threshold), or the value at a leaf (``TreeModel`` packs them). ``roots`` holds every
    tree's root node; head h owns trees ``heads[h, 0] .. heads[h, 1] - 1`` and its output is their
    leaf values' mean, or (``heads[h, 2]``) their sum plus ``bias[h]``; ``heads[h, 3]`` compares
    float32(x) with the thresholds (scikit-learn's decision trees cast X to float32) instead of x
    (its histogram gradient boosting does not)."""
    n = X.shape[0]
    out = np.empty((n, heads.shape[0]), dtype=np.float64)
    for i in range(n):
        _heads(X[i], nodes, node_values, roots, heads, bias, out[i])
    return out


@nb.njit(cache=True, nogil=True)
def predict_nodes_row(x, nodes, node_values, roots, heads, bias):
    """``predict_nodes`` for one row (1-D x): one output per head."""
    out = np.empty(heads.shape[0], dtype=np.float64)
    _heads(x, nodes, node_values, roots, heads, bias, out)
    return out


@nb.njit(cache=True, nogil=True)
def _transformed(v, code):
    if code == 1:
        return math.exp(v)
    if code == 2:
        return 1.0 / (1.0 + math.exp(-v))
    return v


@nb.njit(cache=True, nogil=True)
def _decode(raw, x, plan, output_len_scale, out):
    """(throughput, offered, starved as 0/1, each latency head's value or NaN) of one row from its heads'
    raw outputs and its features: ``features.expected_offered`` and ``features.served_base`` for one row."""
    offered = x[plan[_P_TOTAL_RATE]] * (x[plan[_P_INPUT_MEAN]] + x[plan[_P_OUTPUT_MEAN]] * output_len_scale)
    base = offered
    lf = x[plan[_P_LOAD_FACTOR]]
    if plan[_P_SERVED] != 0 and math.isfinite(lf) and lf > 1.0:
        base = offered / lf
    thr = min(max(_transformed(raw[0], plan[_P_RATIO_T]), 0.0) * base, offered)
    if plan[_P_STARVED] >= 0:
        starved = _transformed(raw[plan[_P_STARVED]], plan[_P_STARVED_T]) > 0.5
    else:
        starved = thr < 0.9 * offered
    out[0] = thr
    out[1] = offered
    out[2] = 1.0 if starved else 0.0
    for k in range(N_LATENCY):
        pos = plan[_P_LATENCY + 2 * k]
        out[3 + k] = _transformed(raw[pos], plan[_P_LATENCY + 2 * k + 1]) if pos >= 0 else np.nan


@nb.njit(cache=True, nogil=True)
def predict_outcomes(X, nodes, node_values, roots, heads, bias, plan, output_len_scale):
    """Every row's outcomes (``_decode``), shape (rows, N_OUTCOMES): the trees and the decode in one call
    (``TreeModel.outcomes``)."""
    n = X.shape[0]
    raw = np.empty(heads.shape[0], dtype=np.float64)
    out = np.empty((n, N_OUTCOMES), dtype=np.float64)
    for i in range(n):
        _heads(X[i], nodes, node_values, roots, heads, bias, raw)
        _decode(raw, X[i], plan, output_len_scale, out[i])
    return out


@nb.njit(cache=True, nogil=True)
def predict_outcomes_row(x, nodes, node_values, roots, heads, bias, plan, output_len_scale):
    """``predict_outcomes`` for one row (1-D x): N_OUTCOMES values."""
    raw = np.empty(heads.shape[0], dtype=np.float64)
    out = np.empty(N_OUTCOMES, dtype=np.float64)
    _heads(x, nodes, node_values, roots, heads, bias, raw)
    _decode(raw, x, plan, output_len_scale, out)
    return out


@nb.njit(cache=True, nogil=True)
def predict_packed_row(v, xs, ys, c, nodes, node_values, roots, heads, bias, plan, output_len_scale):
    """One query packed by ``features.pack`` to its outcomes (``predict_outcomes_row``): the
    features and the trees in one call, the single-query path of ``TreePredictor.predict``."""
    x = np.empty(N_FEATURES, dtype=np.float64)
    _fill(x, v[:_S_N], v[_S_N:], xs, ys, c)
    return predict_outcomes_row(x, nodes, node_values, roots, heads, bias, plan, output_len_scale)
