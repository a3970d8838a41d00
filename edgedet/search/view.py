"""What a user reads of a search: pareto.png and a self-contained report.html, both drawn from the manifest dict
alone (so they can be redrawn from any manifest.json).

Plot: the x axis stops at the latency budget (points beyond it are drawn as arrows at the edge and counted), or
becomes logarithmic when latencies span more than WIDE_RANGE x; front points are labelled with subnet id and
precision; predicted (unmeasured) points are small and faint; noisy measurements are hollow.
Report: conditions (device, runtime versions, threads, benchmark settings, machine load), how far to trust the
front (noisy measurements, predictor error), the front with links to each artifact and its runtimes, every measured
point in a sortable table, and the run history. Every string from data is HTML-escaped.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

WIDE_RANGE = 20.0  # max / min latency above which the axis is logarithmic (no budget to zoom to)
MARKERS = {"fp32": "o", "fp16": "s", "bf16": "D", "int8": "^"}


def _ok(man: dict) -> list[dict]:
    return [p for p in man["points"] if p["status"] == "ok" and p.get("latency_ms") is not None and p.get("ap")]


def _noisy(p: dict) -> bool:
    return bool((p.get("record") or {}).get("noisy"))


def pareto_figure(man: dict):
    """The Pareto plot as a matplotlib Figure (tests read its data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok, pred, front = _ok(man), man.get("predicted") or [], man.get("front") or []
    budget = man["objectives"].get("budget_ms")
    lat = [p["latency_ms"] for p in ok] + [p["latency_ms"] for p in pred]
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=110)
    if budget:
        right = budget * 1.08
        edge = budget * 1.04
    else:
        right = max(lat) * 1.08 if lat else 1.0
        edge = None
    wide = not budget and lat and min(lat) > 0 and max(lat) / min(lat) > WIDE_RANGE

    def x_of(v: float) -> float:
        return min(v, edge) if edge is not None else v

    inside_pred = [p for p in pred if edge is None or p["latency_ms"] <= budget]
    if inside_pred:
        ax.scatter([p["latency_ms"] for p in inside_pred], [p["ap"] for p in inside_pred], s=6, c="#c8c8c8",
                   alpha=0.5, zorder=1, label=f"predicted, not measured ({len(pred)})")
    for prec, mk in MARKERS.items():
        for noisy in (False, True):
            pts = [p for p in ok if p["precision"] == prec and _noisy(p) == noisy
                   and (edge is None or p["latency_ms"] <= budget)]
            if not pts:
                continue
            ax.scatter([p["latency_ms"] for p in pts], [p["ap"]["AP"] for p in pts], s=30, marker=mk, zorder=3,
                       facecolors="none" if noisy else None, edgecolors="k", linewidths=0.6,
                       label=f"measured {prec}" + (" (noisy)" if noisy else ""))
    out = [p for p in ok if edge is not None and p["latency_ms"] > budget]
    if out:
        ax.scatter([edge] * len(out), [p["ap"]["AP"] for p in out], marker=">", s=30, c="#888888", zorder=2,
                   label=f"measured beyond the budget ({len(out)}, drawn at the edge)")
    if front:
        xs, ys = [x_of(p["latency_ms"]) for p in front], [p["ap"]["AP"] for p in front]
        ax.step(xs, ys, where="post", c="crimson", lw=1.5, zorder=4, label="front (measured, AP of the artifact)")
        for i, p in enumerate(front):
            ax.annotate(f"{p['subnet']} {p['precision']}", (xs[i], ys[i]), xytext=(4, -10 if i % 2 else 4),
                        textcoords="offset points", fontsize=6, color="crimson", zorder=5)
    if budget:
        ax.axvline(budget, ls="--", c="k", lw=1, label=f"budget {budget:g} ms")
        ax.set_xlim(0, right)
    elif wide:
        ax.set_xscale("log")
    else:
        ax.set_xlim(0, right)
    target = man["target"]["name"]
    ax.set_xlabel(f"latency {man['objectives']['latency']} on {target}" + (" (log scale)" if wide else ""))
    ax.set_ylabel(man["objectives"].get("ap", "AP").split(" ")[0])
    ax.set_title(f"edgedet search: {man['checkpoint']['supernet']} on {target}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_pareto(man: dict, path: Path) -> None:
    from ..checkpoint import atomic_write

    import matplotlib.pyplot as plt

    fig = pareto_figure(man)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _png_base64(man: dict) -> str:
    import matplotlib.pyplot as plt

    fig = pareto_figure(man)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _fmt(v, nd=3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return html.escape(str(v))


def _table(cols: list[str], rows: list[list[str]], sortable: bool = False, tid: str = "") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    attrs = (' class="sortable"' if sortable else "") + (f' id="{tid}"' if tid else "")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def trust_lines(man: dict) -> list[str]:
    """Plain sentences on how far to trust the front: noisy measurements, predictor error, warnings."""
    ok = _ok(man)
    noisy = [p for p in ok if _noisy(p)]
    out = []
    for w in man.get("warnings") or man["search"].get("warnings") or []:
        out.append(str(w))
    if noisy:
        out.append(f"{len(noisy)} of {len(ok)} measurements were flagged noisy (spread above the target's threshold "
                   f"or later runs slower than earlier ones): their latencies are less certain.")
    else:
        out.append(f"none of the {len(ok)} measurements was flagged noisy.")
    pred = man["search"].get("predictor") or {}
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    stats = [k[len("loo_rel_err_median_"):] for k in pred if k.startswith("loo_rel_err_median_")]
    for stat in stats:  # p50 and the target's percentile
        med, within = pred.get(f"loo_rel_err_median_{stat}"), pred.get(f"loo_within_10pct_{stat}")
        if num(med):
            out.append(f"latency predictor at {stat} (leave-one-out over the measured candidates): median error "
                       f"{100 * med:.1f}%" + (f", {100 * within:.0f}% within +-10%" if num(within) else "") + ".")
    if not stats and num(pred.get("loo_rel_err_median")):
        out.append(f"latency predictor leave-one-out median error: {100 * pred['loo_rel_err_median']:.1f}%.")
    return out


def write_html(man: dict, path: Path) -> None:
    """report.html next to the manifest: self-contained (the plot is embedded), links relative to its folder."""
    from ..checkpoint import atomic_write

    e = html.escape
    s, dev, sw = man["search"], man.get("device") or {}, man.get("software") or {}
    spec = man["target"].get("spec") or {}
    rt = spec.get("runtime") or {}
    bench = spec.get("benchmark") or {}
    loads = [((p.get("record") or {}).get("device") or {}).get("load") for p in _ok(man)]
    loads = [x for x in loads if isinstance(x, dict)]
    cond = [
        ["device", e(str(dev.get("cpu", ""))) + f" ({_fmt(dev.get('cores'))} cores, {_fmt(dev.get('memory_gb'))} GB)"],
        ["CPU flags", e(", ".join(dev.get("cpu_flags") or [])) or "-"],
        ["runtime", e(f"{sw.get('runtime', {}).get('name', '')} {sw.get('runtime', {}).get('version', '')}")],
        ["software", e(", ".join(f"{k} {v}" for k, v in sw.items() if isinstance(v, str)))],
        ["threads", _fmt(rt.get("threads"))],
        ["benchmark", e(", ".join(f"{k} {v}" for k, v in bench.items()))],
        ["latency", e(f"{man['objectives']['latency']}, budget {man['objectives'].get('budget_ms')} ms")],
        ["machine load during measurements",
         e("; ".join(f"{k} {v}" for k, v in loads[0].items())) + f" (first of {len(loads)})" if loads else "-"],
    ]
    front_rows = []
    for p in man.get("front") or []:
        a = p["artifact"]
        links = [f'<a href="{e(a["dir"])}/">{e(a["dir"])}</a>']
        for name, where in (a.get("runtime") or {}).items():
            links.append(e(f"{name}: {where}") if str(where).startswith("unsupported")
                         else f'<a href="{e(where)}">{e(name)}</a>')
        front_rows.append([e(p["id"]), _fmt(p["latency_ms"], 2), _fmt(p["ap"]["AP"]), _fmt(p["ap"].get("AP50")),
                           _fmt(p["ap"].get("AP75")), _fmt(p.get("gflops"), 2), e(str(p.get("ap_source"))),
                           "yes" if _noisy(p) else "", " ".join(links)])
    pts = []
    for p in man["points"]:
        r = p.get("record") or {}
        pts.append([e(p["id"]), e(p["status"]), _fmt(p.get("latency_ms"), 2), _fmt(r.get("p50_ms"), 2),
                    _fmt(r.get("spread")), "yes" if r.get("noisy") else "", _fmt((p.get("ap") or {}).get("AP")),
                    _fmt((p.get("ap_torch") or {}).get("AP")), _fmt(p.get("gflops"), 2), e(p.get("device") or "")])
    hist = man.get("history") or s.get("history") or []
    hist_rows = [[_fmt(i + 1)] + [e(str(h.get(k, "-"))) for k in ("start", "end", "wall_s", "measurements",
                                                                    "rounds", "stopped")]
                 for i, h in enumerate(hist)]
    text = f"""<!doctype html><html><head><meta charset="utf-8">
<title>edgedet search {e(man['target']['name'])}</title>
<style>body{{font-family:sans-serif;max-width:72em;margin:2em auto;color:#222}}td,th{{padding:2px 8px;text-align:right}}
table{{border-collapse:collapse;margin-bottom:1.5em}}tr:nth-child(even){{background:#f4f4f4}}
th{{background:#e8e8e8}}table.sortable th{{cursor:pointer}}.warn{{color:#a40}}</style></head><body>
<h1>edgedet search: {e(man['checkpoint']['supernet'])} on {e(man['target']['name'])}</h1>
<p>{s['candidates']} candidates, {s['measured']} measured ({100 * s['measured'] / max(s['candidates'], 1):.1f}%),
{s['rounds']} rounds, stopped: {e(str(s['stopped']))}, {_fmt(s.get('wall_s'), 0)} s. AP on {man['dataset']['images']}
images of {e(str(man['dataset']['path']))}.</p>
<h2>How far to trust it</h2><ul>{''.join(f'<li class="warn">{e(x)}</li>' for x in trust_lines(man))}</ul>
<img alt="Pareto plot" src="data:image/png;base64,{_png_base64(man)}">
<h2>Front (measured; AP from each compiled artifact)</h2>
{_table(["point", "latency ms", "AP", "AP50", "AP75", "GFLOPs", "AP from", "noisy", "artifact / runtimes"],
        front_rows)}
<h2>Conditions</h2>{_table(["", ""], cond)}
<h2>Every measured point</h2><p>Click a column to sort.</p>
{_table(["point", "status", "latency ms", "p50 ms", "spread", "noisy", "AP", "AP torch", "GFLOPs", "device"],
        pts, sortable=True, tid="points")}
<h2>Run history</h2>
{_table(["run", "start", "end", "wall s", "measurements", "rounds", "stopped"], hist_rows) if hist_rows
 else "<p>one run</p>"}
<p>Full data: <a href="manifest.json">manifest.json</a>.</p>
<script>
document.querySelectorAll("table.sortable th").forEach(function (th, i) {{
  th.addEventListener("click", function () {{
    var body = th.closest("table").tBodies[0], rows = Array.from(body.rows), asc = th.dataset.asc !== "1";
    rows.sort(function (a, b) {{
      var x = a.cells[i].textContent, y = b.cells[i].textContent, nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    }});
    th.dataset.asc = asc ? "1" : "0";
    rows.forEach(function (r) {{ body.appendChild(r); }});
  }});
}});
</script></body></html>
"""
    atomic_write(path, lambda tmp: tmp.write_text(text))
