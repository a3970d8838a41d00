"""What a search shows a reader, from its manifest (a dict, as written to manifest.json):

- pareto_figure / pareto_png: AP vs latency. The x axis ends just past the latency budget (points beyond it are
  drawn at the edge, with a count); a log axis when the measured latencies span more than 20x; front points
  labelled with their subnet id and precision; predicted points small and pale; noisy measurements ringed in red.
- report_html: one self-contained page (the plot embedded): what was searched on what (device, runtime, threads,
  load), warnings (noise), the front with links to each artifact folder and its runtimes, the run history, the
  predictor's error, and every measured point in a table sortable by any column.
"""
from __future__ import annotations

import base64
import html
import io
import statistics

MARKERS = (("fp32", "o"), ("fp16", "s"), ("bf16", "D"), ("int8", "^"))


def pareto_figure(man: dict):
    """-> a matplotlib Figure (Agg) of the manifest's points, predictions and front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = man["objectives"]["budget_ms"]
    ok = [p for p in man["points"] if p["status"] == "ok"]
    lats = [p["latency_ms"] for p in ok] or [1.0]
    hi = b * 1.08 if b else max(lats) * 1.05
    edge = b * 1.04 if b else None

    def x(v: float) -> float:  # beyond the budget: at the edge
        return min(v, edge) if edge else v

    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=110)
    pr = [p for p in man["predicted"] if not b or p["latency_ms"] <= hi]
    if pr:
        ax.scatter([p["latency_ms"] for p in pr], [p["ap"] for p in pr], s=6, c="#c8c8c8", alpha=0.5, zorder=1,
                   label="predicted (not measured)")
    for prec, mk in MARKERS:
        pts = [p for p in ok if p["precision"] == prec]
        if pts:
            ax.scatter([x(p["latency_ms"]) for p in pts], [p["ap"]["AP"] for p in pts], s=30, marker=mk, zorder=3,
                       label=f"measured {prec}", edgecolors="k", linewidths=0.4)
    noisy = [p for p in ok if (p["record"] or {}).get("noisy")]
    if noisy:
        ax.scatter([x(p["latency_ms"]) for p in noisy], [p["ap"]["AP"] for p in noisy], s=90, facecolors="none",
                   edgecolors="red", linewidths=1.0, zorder=4, label=f"noisy ({len(noisy)})")
    beyond = [p for p in ok if b and p["latency_ms"] > b]
    f = man["front"]
    if f:
        ax.step([p["latency_ms"] for p in f], [p["ap"]["AP"] for p in f], where="post", c="crimson", lw=1.5,
                zorder=2, label="front (measured, AP of the artifact)")
        for p in f:
            ax.annotate(f"{p['subnet']} {p['precision']}", (p["latency_ms"], p["ap"]["AP"]), fontsize=6,
                        xytext=(4, -9), textcoords="offset points", zorder=5)
    if b:
        ax.axvline(b, ls="--", c="k", lw=1, label=f"budget {b:g} ms"
                   + (f" ({len(beyond)} measured beyond it, drawn at the edge)" if beyond else ""))
    lo = min([p["latency_ms"] for p in ok] + [p["latency_ms"] for p in pr] or [hi / 100])
    if hi / max(lo, 1e-6) > 20:
        ax.set_xscale("log")
        ax.set_xlim(lo * 0.8, hi)
    else:
        ax.set_xlim(0, hi)
    dev = man["device"].get("cpu") or man["device"].get("gpu") or ""
    ax.set_xlabel(f"latency {man['objectives']['latency']} on {man['target']['name']} ({dev})")
    ax.set_ylabel("AP@[.5:.95]")
    ax.set_title(f"edgedet search: {man['checkpoint']['supernet']} on {man['target']['name']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def pareto_png(man: dict) -> bytes:
    import matplotlib.pyplot as plt

    fig = pareto_figure(man)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------- html
SORT_JS = """<script>
for (const t of document.querySelectorAll('table.sortable')) {
  t.querySelectorAll('th').forEach((th, i) => th.onclick = () => {
    const rows = [...t.tBodies[0].rows], asc = th.dataset.asc !== '1';
    const key = r => { const v = r.cells[i].dataset.v ?? r.cells[i].textContent; const n = parseFloat(v);
                       return isNaN(n) ? v : n; };
    rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (asc ? 1 : -1));
    th.dataset.asc = asc ? '1' : '0'; rows.forEach(r => t.tBodies[0].appendChild(r)); });
}
</script>"""


def _table(head: list[str], rows: list[list[str]], sortable: bool = False) -> str:
    cls = ' class="sortable"' if sortable else ""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{cls}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _spread(p: dict) -> str:
    r = p.get("record") or {}
    if "spread" not in r:
        return ""
    return f"{r['spread']:.0%}" + (' <b style="color:#a40000">NOISY</b>' if r.get("noisy") else "")


def report_html(man: dict, png: bytes) -> str:
    """The search's report.html: self-contained (no file or network reference but links to the artifacts)."""
    e = html.escape
    s, t, sw = man["search"], man["target"], man["software"]
    ok = [p for p in man["points"] if p["status"] == "ok"]
    loads = [p["record"]["device"]["load"]["others_cores"] for p in ok
             if isinstance(((p["record"] or {}).get("device") or {}).get("load"), dict)
             and isinstance(p["record"]["device"]["load"].get("others_cores"), (int, float))]
    rt = t["spec"]["runtime"]
    cond = (f"Device: {e(str(man['device'].get('cpu', '')))} ({e(str(man['device'].get('cores', '?')))} cores"
            f"{', ' + e(str(man['device'].get('gpu'))) if man['device'].get('gpu') else ''}); "
            f"{e(sw['runtime']['name'])} {e(str(sw['runtime']['version']))}, threads {e(str(rt.get('threads')))}; "
            f"benchmark {e(str(t['spec']['benchmark']))}; other processes during the measurements: "
            + (f"median {statistics.median(loads):.2f} cores, max {max(loads):.2f}" if loads else "not reported")
            + ".")
    loo = (s.get("predictor") or {}).get("loo_rel_err_median")
    front_rows = [[e(p["id"]), f"{p['latency_ms']:.2f}", _spread(p), f"{p['ap']['AP']:.3f}", f"{p['ap']['AP50']:.3f}",
                   f"{p['gflops']}", e(p["ap_source"] or ""),
                   f'<a href="{e(p["artifact"]["dir"])}/">{e(p["artifact"]["dir"])}</a>',
                   " ".join(f'<a href="{e(v)}">{e(k)}</a>' if not v.startswith("unsupported") else e(f"{k}: {v}")
                            for k, v in p["artifact"]["runtime"].items())] for p in man["front"]]
    point_rows = [[e(p["id"]), e(p["status"][:80]),
                   f"{p['latency_ms']:.2f}" if p["latency_ms"] is not None else "", _spread(p),
                   f"{p['ap']['AP']:.3f}" if p.get("ap") else "",
                   f"{p['ap_torch']['AP']:.3f}" if p.get("ap_torch") else "",
                   f"{p['gflops']}", e(p["device"])] for p in man["points"]]
    hist = [[str(i + 1), e(h["started"]), e(h["ended"]), f"{h['wall_s']:.0f}", str(h["measurements"]),
             str(h["rounds"]), e(h["stopped"])] for i, h in enumerate(s.get("history", []))]
    warn = "".join(f'<p class="warn"><b>warning:</b> {e(w)}</p>' for w in s.get("warnings", []))
    img = base64.b64encode(png).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>edgedet search {e(t['name'])}</title>
<style>body{{font-family:sans-serif;max-width:72em;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}
table{{border-collapse:collapse;margin-bottom:1em}}tr:nth-child(even){{background:#f4f4f4}}th{{cursor:pointer}}
.warn{{color:#a40000}}img{{max-width:100%}}</style></head><body>
<h1>edgedet search: {e(man['checkpoint']['supernet'])} on {e(t['name'])}</h1>
<p>{s['candidates']} candidates, {s['measured']} measured ({100 * s['measured'] / max(s['candidates'], 1):.1f}%),
{s['rounds']} rounds in the last run, stopped: {e(s['stopped'])}. Latency: {e(man['objectives']['latency'])}, budget
{man['objectives']['budget_ms']} ms; AP on {man['dataset']['images']} images of {e(man['dataset']['path'])}.</p>
<p>{cond}</p>
<p>Noise: {s.get('noisy', 0)} of {len(ok)} measurements flagged noisy. Predictor: leave-one-out median relative error
{f"{loo:.1%}" if loo is not None else "n/a"}.</p>
{warn}
<img src="data:image/png;base64,{img}" alt="AP vs latency: measured points, predictions and the front">
<h2>Front (measured; AP from each compiled artifact)</h2>
{_table(["point", "latency ms", "spread", "AP", "AP50", "GFLOPs", "AP from", "artifact", "runtimes"], front_rows)}
<h2>Runs of this search</h2>
<p>Rounds: rounds of proposals after the initial design, in that run (a resumed run starts again from round 1 over
everything measured so far; it measures nothing twice).</p>
{_table(["run", "started", "ended", "wall s", "measurements", "rounds", "stopped"], hist)}
<h2>Every measured point (click a column to sort)</h2>
{_table(["point", "status", "latency ms", "spread", "AP", "torch AP", "GFLOPs", "device"], point_rows, True)}
<p>Full data: <a href="manifest.json">manifest.json</a>.</p>
{SORT_JS}</body></html>
"""
