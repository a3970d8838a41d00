"""The latency predictor's two parts: a p50 cost model and a per-precision tail ratio for the target's percentile,
with held-out (leave-one-out) errors reported at both; and the explorer's fit on Measurements."""
from __future__ import annotations

import time

import numpy as np
import pytest

from edgedet.search.explore import fit_predictor, p50_of
from edgedet.search.predictor import LatencyPredictor
from edgedet.search.store import Measurement

W = np.array([1.0, 8.0, 0.0, 2.0, 0.5, 0.3, 0.2, 0.0])
TAIL = {"fp32": 1.06, "int8": 1.18}


def _data(n: int, seed: int = 0, noise_p50: float = 0.01, noise_tail: float = 0.03):
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(size=(n, 8))) + np.eye(8)[rng.integers(0, 8, n)]
    x[:, 0] = 1
    p50 = x @ W * (1 + rng.normal(scale=noise_p50, size=n))
    return x, p50, rng


def test_recovers_a_known_p50_model_and_tail_ratio_and_reports_both_errors():
    x, p50, rng = _data(40)
    p50_8 = 0.6 * p50
    pct = {p: y * TAIL[p] * (1 + np.abs(rng.normal(scale=0.03, size=len(y)))) for p, y in
           (("fp32", p50), ("int8", p50_8))}
    pred = LatencyPredictor(percentile=90).fit({"fp32": list(x[:30]), "int8": list(x[:30])},
                                               {"fp32": list(p50[:30]), "int8": list(p50_8[:30])},
                                               {"fp32": list(pct["fp32"][:30]), "int8": list(pct["int8"][:30])})
    for i in range(30, 40):  # held out: p50 from the cost model, p90 = p50 x the precision's tail ratio
        assert pred.predict_p50(x[i], "fp32") == pytest.approx(x[i] @ W, rel=0.05)
        assert pred.predict_p50(x[i], "int8") == pytest.approx(0.6 * x[i] @ W, rel=0.05)
        assert pred.predict(x[i], "int8") == pytest.approx(pred.predict_p50(x[i], "int8") * pred.tail("int8"))
    med_noise = 1 + np.median(np.abs(rng.normal(scale=0.03, size=10000)))  # median of the tail noise above
    for p in TAIL:
        assert pred.tail(p) == pytest.approx(TAIL[p] * med_noise, rel=0.02)
    s = pred.summary()
    assert set(s) == {"loo_rel_err_median_p50", "loo_within_10pct_p50", "loo_rel_err_median_p90",
                      "loo_within_10pct_p90", "tail_ratio"}
    assert s["loo_within_10pct_p50"] == 1.0 and s["loo_rel_err_median_p50"] < 0.03
    assert s["loo_rel_err_median_p90"] > s["loo_rel_err_median_p50"]  # the tail scatters more than the median
    assert len(pred.loo_rel_err) == len(pred.loo_rel_err_p50) == 60
    assert 0.03 <= pred.margin() < 0.1


def test_the_tail_ratio_is_not_fitted_term_by_term():
    # a noisy p90 (a few slow runs, independent of the cost terms) does not leak into the p50 model: the p50
    # predictions are as good as with a clean tail, only the percentile's error grows
    x, p50, rng = _data(30, seed=1)
    wild = p50 * (1.1 + np.abs(rng.standard_cauchy(30)) * 0.05)
    clean = LatencyPredictor().fit({"fp32": list(x)}, {"fp32": list(p50)}, {"fp32": list(p50 * 1.1)})
    noisy = LatencyPredictor().fit({"fp32": list(x)}, {"fp32": list(p50)}, {"fp32": list(wild)})
    assert np.allclose(clean.models["fp32"], noisy.models["fp32"])
    assert clean.tail("fp32") == pytest.approx(1.1)
    assert noisy.summary()["loo_rel_err_median_p90"] > clean.summary()["loo_rel_err_median_p90"]


def test_a_precision_without_measurements_uses_the_pooled_tail_and_no_percentile_means_p50():
    x, p50, _ = _data(12, seed=2)
    pred = LatencyPredictor().fit({"fp32": list(x), "bf16": []}, {"fp32": list(p50), "bf16": []},
                                  {"fp32": list(1.2 * p50), "bf16": []})
    assert pred.tail("bf16") == pytest.approx(1.2) and pred.tail("int8") == pytest.approx(1.2)
    assert pred.predict(x[0], "bf16") == pytest.approx(pred.predict(x[0], "fp32"))
    same = LatencyPredictor(percentile=50).fit({"fp32": list(x)}, {"fp32": list(p50)})
    assert same.tail("fp32") == 1.0 and same.loo_rel_err == pytest.approx(same.loo_rel_err_p50)


def _row(sid: str, prec: str, p50: float, p90: float, record: bool = True) -> Measurement:
    rec = {"p50_ms": p50, "p90_ms": p90, "p99_ms": p90 * 1.1} if record else None
    return Measurement(sid, prec, "ok", p90, rec, {"AP": 0.1}, "artifact", "fake", None, time.time())


def test_fit_predictor_reads_p50_from_the_record_and_the_percentile_from_the_latency(tiny_cfg):
    from edgedet.config import SubnetConfig
    from edgedet.search.space import features

    subs = [f"p{p}-r{r}-w1-d{d}-q{q}" for p in (16, 24) for r in (192, 288, 384) for d in (0, 2) for q in (25, 100)]
    w = np.abs(np.random.default_rng(3).normal(size=len(features(tiny_cfg, SubnetConfig.parse(subs[0]))))) + 0.1
    rows = [_row(s, "fp32", features(tiny_cfg, SubnetConfig.parse(s)) @ w,
                 1.25 * features(tiny_cfg, SubnetConfig.parse(s)) @ w) for s in subs]
    rows.append(Measurement(subs[0], "int8", "unsupported: no int8", None, None, None, None, "fake", None, 0.0))
    assert p50_of(rows[0]) == rows[0].record["p50_ms"] and p50_of(_row(subs[0], "fp32", 1, 2, False)) == 2
    pred = fit_predictor(tiny_cfg, rows, 90)
    assert set(pred.models) == {"fp32"} and pred.tail("fp32") == pytest.approx(1.25)
    f = features(tiny_cfg, SubnetConfig.parse("p16-r288-w2-d1-q50"))
    assert pred.predict(f, "fp32") == pytest.approx(1.25 * f @ w, rel=0.05)
    assert fit_predictor(tiny_cfg, rows[-1:], 90) is None
