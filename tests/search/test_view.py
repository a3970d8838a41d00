"""pareto.png and report.html from a manifest: zoom to the budget, outliers at the edge, labelled front, faint
predictions, a self-contained report that escapes what devices and datasets put in it."""
from __future__ import annotations

import re

import matplotlib.pyplot as plt

from edgedet.search.view import pareto_figure, write_html


def _point(sid, prec, lat, ap, noisy=False):
    return {"id": f"{sid}@{prec}", "subnet": sid, "precision": prec, "status": "ok", "latency_ms": lat,
            "ap": {"AP": ap, "AP50": ap + 0.1, "AP75": ap}, "ap_source": "artifact", "ap_torch": {"AP": ap},
            "gflops": 1.0, "device": "local", "record": {"p50_ms": lat * 0.9, "spread": 0.3 if noisy else 0.05,
                                                           "noisy": noisy, "device": {"load": {"load1": 0.5}}}}


def manifest(budget=30.0):
    pts = [_point("p24-r192-w2-d0-q25", "fp32", 3.0, 0.01), _point("p24-r192-w2-d1-q25", "int8", 4.0, 0.20),
           _point("p16-r288-w2-d2-q25", "fp32", 12.0, 0.38, noisy=True), _point("p12-r384-w1-d3-q100", "fp32",
                                                                               55.0, 0.42)]
    pts.append({"id": "p12-r384-w2-d3-q100@int8", "subnet": "p12-r384-w2-d3-q100", "precision": "int8",
                "status": "unsupported: no int8 here", "latency_ms": None, "ap": None, "record": None})
    front = [dict(p, artifact={"dir": f"artifacts/{p['id']}", "backend": "onnxruntime", "model_file": "model.onnx",
                               "files": {}, "runtime": {"python": f"artifacts/{p['id']}/runtime/python/x.py",
                                                        "cpp": "unsupported: no C++ here"}})
             for p in pts[:3]]
    return {"target": {"name": "local_cpu", "spec": {"runtime": {"threads": 2}, "benchmark": {"runs": 50}}},
            "device": {"cpu": "<script>alert(1)</script> Xeon", "cores": 2, "memory_gb": 23.0,
                       "cpu_flags": ["avx512_bf16", "amx_bf16"]},
            "software": {"python": "3.11.7", "runtime": {"name": "onnxruntime", "version": "1.32.0"}},
            "checkpoint": {"supernet": "tiny"}, "dataset": {"images": 50, "path": "/data/<b>x</b>"},
            "search": {"candidates": 100, "measured": 5, "rounds": 2, "stopped": "budget spent", "wall_s": 61.0,
                       "predictor": {"loo_rel_err_median": 0.031, "loo_rel_err_median_p50": 0.031,
                                     "loo_within_10pct_p50": 0.9, "loo_rel_err_median_p90": 0.062,
                                     "loo_within_10pct_p90": 0.75}, "history": [
                           {"start": "2026-12-03T08:00:00", "end": "2026-12-03T08:10:00", "wall_s": 600,
                            "measurements": 5, "rounds": 2, "stopped": "budget spent"},
                           {"start": "2026-12-03T09:00:00", "end": "2026-12-03T09:00:05", "wall_s": 5,
                            "measurements": 0, "rounds": 0, "stopped": "front stable"}]},
            "objectives": {"ap": "AP@[.5:.95] (pycocotools)", "latency": "p90 ms", "budget_ms": budget},
            "points": pts, "predicted": [{"id": "p24-r288-w2-d0-q25@fp32", "ap": 0.1, "latency_ms": 6.0},
                                         {"id": "p12-r384-w2-d0-q25@fp32", "ap": 0.1, "latency_ms": 80.0}],
            "front": front}


def test_plot_zooms_to_the_budget_marks_outliers_and_labels_the_front():
    fig = pareto_figure(manifest())
    ax = fig.axes[0]
    assert ax.get_xlim()[1] <= 30 * 1.1 and ax.get_xscale() == "linear"
    labels = {t.get_text() for t in ax.texts}
    assert labels == {"p24-r192-w2-d0-q25 fp32", "p24-r192-w2-d1-q25 int8", "p16-r288-w2-d2-q25 fp32"}
    legend = {t.get_text(): h for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
    beyond = [k for k in legend if k.startswith("measured beyond the budget (1")]
    assert beyond
    coll = {c.get_label(): c for c in ax.collections}
    edge = coll[beyond[0]].get_offsets()
    assert edge.shape == (1, 2) and 30 < edge[0, 0] <= 30 * 1.08 and edge[0, 1] == 0.42  # the 55 ms point
    pred = coll["predicted, not measured (2)"]
    assert pred.get_offsets().shape[0] == 1 and pred.get_alpha() <= 0.5  # the 80 ms prediction is left out
    assert max(pred.get_sizes()) < min(coll["measured fp32"].get_sizes())
    assert "measured fp32 (noisy)" in coll  # noisy measurements are their own (hollow) series
    plt.close(fig)


def test_plot_uses_a_log_axis_when_the_range_is_wide_and_there_is_no_budget():
    fig = pareto_figure(manifest(budget=None))
    assert fig.axes[0].get_xscale() == "log"
    plt.close(fig)


def test_report_is_self_contained_and_escapes_data(tmp_path):
    write_html(manifest(), tmp_path / "report.html")
    text = (tmp_path / "report.html").read_text()
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "/data/&lt;b&gt;x&lt;/b&gt;" in text
    assert 'href="artifacts/p24-r192-w2-d0-q25@fp32/"' in text
    assert 'href="artifacts/p24-r192-w2-d0-q25@fp32/runtime/python/x.py"' in text
    assert "cpp: unsupported: no C++ here" in text
    assert 'class="sortable"' in text and text.count("<tr>") >= 3 + 5 + 2
    assert "1 of 4 measurements were flagged noisy" in text
    assert "at p50 (leave-one-out over the measured candidates): median error 3.1%, 90% within +-10%" in text
    assert "at p90 (leave-one-out over the measured candidates): median error 6.2%, 75% within +-10%" in text
    assert "2026-12-03T09:00:05" in text and "avx512_bf16, amx_bf16" in text
