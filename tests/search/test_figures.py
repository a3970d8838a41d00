"""pareto.png and report.html from a manifest, checked from the figure's own data and the page's text: the x axis
ends at the budget with outliers at the edge, front points labelled, predicted points pale, a log axis for a wide
range; the report embeds the plot and lists every point, the front's links, the history and the warnings."""
from __future__ import annotations

import re

import pytest

from edgedet.search.figures import pareto_figure, pareto_png, report_html


def _pt(sid: str, ms: float, ap: float, noisy: bool = False, prec: str = "fp32") -> dict:
    return {"id": f"{sid}@{prec}", "subnet": sid, "precision": prec, "status": "ok", "latency_ms": ms,
            "ap": {"AP": ap, "AP50": ap + 0.2}, "ap_source": "artifact", "ap_torch": {"AP": ap + 0.01}, "gflops": 1.0,
            "device": "local", "record": {"noisy": noisy, "spread": 0.3 if noisy else 0.05,
                                          "device": {"load": {"others_cores": 0.1}}}}


def _man(points, front, predicted=(), budget=20.0) -> dict:
    fr = [dict(p, artifact={"dir": f"artifacts/{p['id']}", "backend": "onnxruntime", "model_file": "model.onnx",
                            "files": {}, "runtime": {"python": f"artifacts/{p['id']}/runtime/python/x.py",
                                                     "cpp": "unsupported: no toolchain"}}) for p in front]
    return {"objectives": {"budget_ms": budget, "latency": "p90 ms", "ap": "AP"}, "points": points,
            "predicted": list(predicted), "front": fr, "device": {"cpu": "Test CPU", "cores": 2},
            "target": {"name": "t", "spec": {"runtime": {"threads": 1}, "benchmark": {"runs": 10}}},
            "checkpoint": {"supernet": "tiny"}, "software": {"runtime": {"name": "onnxruntime", "version": "1.0"}},
            "dataset": {"images": 6, "path": "d"},
            "search": {"candidates": 40, "measured": len(points), "rounds": 2, "stopped": "budget spent", "noisy": 1,
                       "warnings": ["1 of 4 measurements stayed noisy <b>"], "predictor": {"loo_rel_err_median": 0.04},
                       "history": [{"started": "2026-01-01T00:00:00+00:00", "ended": "2026-01-01T00:10:00+00:00",
                                    "wall_s": 600.0, "measurements": 4, "rounds": 2, "stopped": "budget spent",
                                    "resumed": False}]}}


@pytest.fixture()
def man():
    pts = [_pt("p24-r192-w2-d0-q25", 3.0, 0.10), _pt("p24-r288-w2-d3-q25", 9.0, 0.30),
           _pt("p16-r384-w2-d3-q100", 15.0, 0.28, noisy=True), _pt("p12-r384-w2-d3-q100", 80.0, 0.45)]
    return _man(pts, pts[:2], predicted=[{"id": "p16-r192-w1-d0-q25@fp32", "ap": 0.2, "latency_ms": 6.0}])


def test_plot_ends_at_the_budget_labels_the_front_and_pales_predictions(man):
    fig = pareto_figure(man)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert hi == pytest.approx(20 * 1.08) and ax.get_xscale() == "linear"
    xs = [x for c in ax.collections for x, _ in c.get_offsets()]
    assert max(xs) == pytest.approx(20 * 1.04)  # the 80 ms point is drawn at the edge
    labels = {t.get_text() for t in ax.texts}
    assert labels == {"p24-r192-w2-d0-q25 fp32", "p24-r288-w2-d3-q25 fp32"}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "budget 20 ms (1 measured beyond it, drawn at the edge)" in legend and "noisy (1)" in legend
    pred = next(c for c, t in zip(ax.collections, legend) if t.startswith("predicted"))
    assert pred.get_alpha() < 1 and pred.get_sizes()[0] < 10
    assert "Test CPU" in ax.get_xlabel()


def test_a_wide_latency_range_gets_a_log_axis():
    pts = [_pt("p24-r192-w2-d0-q25", 0.5, 0.1), _pt("p12-r384-w2-d3-q100", 60.0, 0.4)]
    ax = pareto_figure(_man(pts, pts, budget=None)).axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlim()[1] == pytest.approx(63.0)


def test_report_is_self_contained_and_lists_everything(man):
    png = pareto_png(man)
    page = report_html(man, png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and "data:image/png;base64," in page
    assert not re.search(r'src="(?!data:)', page)  # nothing loaded from a file or the network
    assert all(p["id"] in page for p in man["points"])
    assert 'href="artifacts/p24-r192-w2-d0-q25@fp32/"' in page and 'href="artifacts/p24-r192-w2-d0-q25@fp32/runtime' \
        in page and "cpp: unsupported: no toolchain" in page
    assert "1 of 4 measurements stayed noisy &lt;b&gt;" in page and "<b>warning:</b>" in page  # escaped
    assert "Runs of this search" in page and "budget spent" in page and "Test CPU" in page
    assert 'class="sortable"' in page and "median 0.10 cores" in page and "4.0%" in page
