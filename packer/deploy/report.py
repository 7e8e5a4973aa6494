"""``packer report PLAN.json --out report.html``: a plan as one self-contained HTML page (issue 16, section 4).

The page has the plan's summary (status, GPUs, the bound and gap), its warnings, four plots drawn with
matplotlib (Agg, embedded as base64 PNG: per-GPU utilisation, predicted ITL, the adapters on each GPU
with their rates, the capacity curve with every GPU's operating point), the per-GPU vLLM flags and the
placement. Nothing on the page loads from elsewhere. A plan without ``capacity_curve`` (solved before it
was recorded) renders with a note to re-solve instead of the curve. matplotlib is imported on first use.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import files

if TYPE_CHECKING:
    from ..solvers.result import LoadedPlan

__all__ = ["render_report", "write_report", "NO_CURVE"]

NO_CURVE = ("The capacity curve is not in this plan (it was solved before plans recorded it): "
            "re-solve with `packer solve --json` to see it.")
MAX_LEGEND = 24  # adapters named in the stacked-bar legend; beyond that the placement table names them


def _num(v: Any) -> float | None:
    """``v`` as a finite float, else None (missing, null, not a number)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _fmt(v: Any, spec: str = ".3g", none: str = "—") -> str:
    x = _num(v)
    return none if x is None else format(x, spec)


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _png(fig: Any) -> str:
    """The figure as a ``data:image/png;base64`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure  # the Agg canvas; no pyplot, no display

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _curve(data: dict) -> dict[int, list[tuple[int, float]]] | None:
    """The plan's capacity curve (rank class -> [(count, tokens/s)]), None when the plan has none."""
    raw = data.get("capacity_curve")
    if not isinstance(raw, dict) or not raw:
        return None
    out: dict[int, list[tuple[int, float]]] = {}
    for r, pts in raw.items():
        try:
            rank = int(r)
        except (TypeError, ValueError):
            continue
        good = [(int(p[0]), float(p[1])) for p in pts if isinstance(p, (list, tuple)) and len(p) == 2
                and _num(p[0]) is not None and _num(p[1]) is not None] if isinstance(pts, list) else []
        if good:
            out[rank] = sorted(good)
    return out or None


def _gpu_plots(gpus: list[dict]) -> str:
    fig, (ax_u, ax_i) = _figure(11, 3.2, 2)
    xs = list(range(len(gpus)))
    util = [_num(g.get("utilisation")) for g in gpus]
    itl = [_num(g.get("predicted_itl_ms")) for g in gpus]
    ax_u.bar(xs, [u if u is not None else 0.0 for u in util],
             color=["#c0392b" if u is not None and u > 1 else "#2e86c1" for u in util])
    ax_u.axhline(1.0, color="0.4", ls="--", lw=1)
    ax_u.set(title="Utilisation (offered / capacity)", xlabel="GPU", ylabel="utilisation")
    ax_i.bar(xs, [v if v is not None else 0.0 for v in itl], color="#28b463")
    ax_i.set(title="Predicted inter-token latency", xlabel="GPU", ylabel="ITL (ms)")
    for ax in (ax_u, ax_i):
        ax.set_xticks(xs)
        ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _adapter_plot(gpus: list[dict]) -> str:
    from matplotlib import colormaps

    fig, (ax,) = _figure(11, 4.0)
    ids = list(dict.fromkeys(a.get("id") for g in gpus for a in g.get("adapters", [])))
    cmap = colormaps["tab20"]
    colour = {aid: cmap(k % 20) for k, aid in enumerate(ids)}
    bottoms = [0.0] * len(gpus)
    labelled: set[str] = set()
    for g, gpu in enumerate(gpus):
        for a in gpu.get("adapters", []):
            rate = _num(a.get("rate")) or 0.0
            aid = a.get("id")
            show = len(ids) <= MAX_LEGEND and aid not in labelled
            ax.bar(g, rate, bottom=bottoms[g], color=colour[aid], edgecolor="white", lw=0.5,
                   label=str(aid) if show else None)
            labelled.add(aid)
            bottoms[g] += rate
    ax.set(title="Adapters per GPU and the requests/s each gets there", xlabel="GPU", ylabel="requests/s")
    ax.set_xticks(range(len(gpus)))
    ax.grid(axis="y", alpha=0.3)
    if ids and len(ids) <= MAX_LEGEND:
        ax.legend(fontsize=7, ncols=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def _curve_plot(curve: dict[int, list[tuple[int, float]]], gpus: list[dict]) -> str:
    from matplotlib import colormaps

    fig, (ax,) = _figure(9, 4.5)
    cmap = colormaps["tab10"]
    colour = {r: cmap(k % 10) for k, r in enumerate(sorted(curve))}
    for r in sorted(curve):
        ns, caps = zip(*curve[r])
        ax.plot(ns, caps, marker=".", color=colour[r], label=f"rank ≤ {r}")
    for g, gpu in enumerate(gpus):
        n, off = len(gpu.get("adapters", [])), _num(gpu.get("offered_tps"))
        if off is None:
            continue
        r = gpu.get("max_lora_rank")
        ax.scatter([n], [off], marker="o", s=60, zorder=3, edgecolor="black",
                   color=colour.get(r, "black") if isinstance(r, int) else "black")
        ax.annotate(f"GPU {g}", (n, off), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set(title="Capacity curve: sustainable load against adapter count (dots: each GPU's operating point)",
           xlabel="adapters on the GPU", ylabel="tokens/s")
    ax.set_xscale("symlog", linthresh=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _summary(data: dict) -> list[tuple[str, str]]:
    obj = data.get("objective")
    lb, gap = data.get("lower_bound"), data.get("gap")
    if obj == "min_gpus":
        bound = _fmt(lb, ".0f", "not known") + (" GPUs" if _num(lb) is not None else "")
    else:
        bound = _fmt(lb, ".4g", "not known")
    rows = [("profile", data.get("profile") or "—"), ("status", data.get("status", "—")),
            ("objective", obj or "—"), ("GPUs", data.get("num_gpus", len(data.get("gpus", [])))),
            ("objective value", _fmt(data.get("objective_value"), ".4g")),
            ("lower bound", bound),
            ("gap", "not known" if _num(gap) is None else f"{100 * _num(gap):.1f}%"),
            ("solver", data.get("solver", "—")), ("predictor", data.get("predictor", "—")),
            ("verified", f"{data.get('verified', '—')}"
             + (f" (with {data['verified_with']})" if data.get("verified_with") else "")),
            ("max predicted ITL", _fmt(data.get("max_predicted_itl_ms"), ".1f") + " ms"),
            ("GPU budget", data.get("gpu_budget") if data.get("gpu_budget") is not None else "none")]
    if data.get("short_by"):
        rows.append(("short by", f"{data['short_by']} GPUs"))
    if data.get("message"):
        rows.append(("message", data["message"]))
    return [(k, str(v)) for k, v in rows]


def _table(head: list[str], rows: list[list[Any]], cls: str = "") -> str:
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f0f0f0}td.num{text-align:right}img{max-width:100%;display:block;margin:0.5em 0 1.5em}
.warn{background:#fff4e0;border-left:4px solid #e67e22;padding:0.5em 1em}.note{color:#666;font-style:italic}"""


def render_report(plan: LoadedPlan, *, title: str | None = None) -> str:
    """The HTML page for ``plan`` (see the module docstring)."""
    data = plan.data
    gpus = [g for g in data.get("gpus", []) if isinstance(g, dict)]
    title = title or f"packer plan: {data.get('num_gpus', len(gpus))} GPUs, {data.get('profile') or 'unknown profile'}"
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_esc(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{_esc(title)}</h1>",
             f'<p class="note">From {_esc(plan.path)}.</p>',
             "<h2>Summary</h2>", _table(["", ""], [list(r) for r in _summary(data)], "summary")]
    warns = [w for w in data.get("warnings", []) if isinstance(w, str)]
    parts.append("<h2>Warnings</h2>")
    parts.append('<div class="warn"><ul>' + "".join(f"<li>{_esc(w)}</li>" for w in warns) + "</ul></div>"
                 if warns else "<p>None.</p>")
    if gpus:
        parts += ["<h2>Utilisation and latency per GPU</h2>",
                  f'<img alt="utilisation and predicted ITL per GPU" src="{_gpu_plots(gpus)}">',
                  "<h2>Adapters per GPU</h2>",
                  f'<img alt="adapters per GPU with their rates" src="{_adapter_plot(gpus)}">']
        if len({a.id for p in plan.gpus for a in p.adapters}) > MAX_LEGEND:
            parts.append(f'<p class="note">More than {MAX_LEGEND} adapters: the placement table below names '
                         "the adapter of each band.</p>")
    parts.append("<h2>Capacity curve</h2>")
    curve = _curve(data)
    if curve is None:
        parts.append(f'<p class="note" id="no-curve">{_esc(NO_CURVE)}</p>')
    else:
        parts.append(f'<img alt="capacity curve with each GPU\'s operating point" src="{_curve_plot(curve, gpus)}">')
    parts.append("<h2>vLLM flags per GPU</h2>")
    parts.append(_table(["GPU", "max_loras", "max_cpu_loras", "max_lora_rank", "adapters", "offered tokens/s",
                         "capacity tokens/s", "utilisation", "predicted ITL (ms)", "verified", "starved",
                         "memory error"],
                        [[f"GPU {g}", p.max_loras, p.max_cpu_loras, p.max_lora_rank, len(p.adapters),
                          _fmt(d.get("offered_tps"), ".0f"), _fmt(d.get("capacity_tps"), ".0f"),
                          _fmt(d.get("utilisation"), ".3f"), _fmt(d.get("predicted_itl_ms"), ".1f"),
                          d.get("verified", "—") if d.get("verified") is not None else "not verified",
                          d.get("starved", "—"), d.get("memory_error") or ""]
                         for g, (p, d) in enumerate(zip(plan.gpus, gpus))], "flags"))
    parts.append("<h2>Placement</h2>")
    parts.append(_table(["GPU", "adapter", "rank", "requests/s here", "share of its traffic"],
                        [[f"GPU {g}", a.id, a.rank, f"{a.rate:.4g}", f"{a.share:.3f}"]
                         for g, p in enumerate(plan.gpus) for a in p.adapters], "placement"))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(plan: LoadedPlan, out: str | os.PathLike, *, title: str | None = None) -> Path:
    """Render ``plan`` and write it to ``out`` atomically. Raises OSError."""
    return files.write_text_atomic(out, render_report(plan, title=title))
