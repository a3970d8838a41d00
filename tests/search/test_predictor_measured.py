"""The latency predictor on real measurements: every candidate of two search spaces measured on this project's
CI-class machine (tests/search/data/*.csv, written by `benchmarks/search_vs_exhaustive.py ... --csv FILE` from its
exhaustive store: an Intel Xeon VM, 2 cores, AVX-512 / AMX; OpenVINO fp32/bf16/int8 and ONNX Runtime fp32/int8;
columns: subnet, precision, p50 and p90 in ms, then the 8 cost features of the demo supernet). Fitted on 5% of the
candidates (6 subnets by D-optimal design at the first precision, the first two of them at every other one, the
rest at random), it must predict the held-out candidates."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from edgedet.search.predictor import LatencyPredictor
from edgedet.search.space import FEATURE_KINDS, d_optimal

DATA = Path(__file__).parent / "data"


def _load(name: str):
    with open(DATA / f"{name}.csv") as f:
        rows = list(csv.DictReader(f))
    x = np.array([[float(r[f"f{i}"]) for i in range(8)] for r in rows])
    return ([r["subnet"] for r in rows], np.array([r["precision"] for r in rows]), x,
            np.array([float(r["p50_ms"]) for r in rows]), np.array([float(r["p90_ms"]) for r in rows]))


def _design(subs, prec, x, precisions, budget, seed):
    """Row indices a search measures: 6 subnets by D-optimal design at the first precision (from the smallest and
    the largest by FLOPs), the first 2 of them at every other precision, the rest of the budget at random."""
    rng = np.random.default_rng(seed)
    first = np.flatnonzero(prec == precisions[0])
    flops = x[first, 1] + x[first, 2] + x[first, 7] + 1e-6 * rng.random(len(first))
    order = first[np.argsort(flops)]
    pick = [int(order[i]) for i in d_optimal(x[order], 6, first=[0, len(order) - 1])]
    for p in precisions[1:]:
        for i in pick[:2]:
            pick.append(int(np.flatnonzero((prec == p) & (np.array(subs) == subs[i]))[0]))
    rest = [i for i in range(len(subs)) if i not in pick]
    return pick + [int(i) for i in rng.choice(rest, budget - len(pick), replace=False)]


def _within(name: str, kinds, seeds: int = 6) -> list[float]:
    subs, prec, x, p50, p90 = _load(name)
    precisions = ["fp32"] + sorted(set(prec) - {"fp32"})
    budget = int(np.ceil(0.05 * len(subs)))
    out = []
    for seed in range(seeds):
        tr = _design(subs, prec, x, precisions, budget, seed)
        feats, y50, y90 = {}, {}, {}
        for i in tr:
            feats.setdefault(prec[i], []).append(x[i])
            y50.setdefault(prec[i], []).append(p50[i])
            y90.setdefault(prec[i], []).append(p90[i])
        pred = LatencyPredictor(90, kinds=kinds).fit(feats, y50, y90)
        te = np.setdiff1d(np.arange(len(subs)), tr)
        got = np.array([pred.predict_p50(x[i], prec[i]) for i in te])
        out.append(float(np.mean(np.abs(got - p50[te]) / p50[te] <= 0.10)))
    return out


@pytest.mark.parametrize("name,floor,gain", [("openvino_288", 0.75, 0.03), ("onnxruntime_576", 0.60, -0.02)])
def test_a_search_budget_predicts_held_out_candidates(name, floor, gain):
    pooled = _within(name, FEATURE_KINDS)
    apart = _within(name, None)  # no term kinds: one scale per term and precision, no pull towards FLOPs
    assert np.median(pooled) >= floor, (name, pooled)
    assert np.median(pooled) >= np.median(apart) + gain, (name, pooled, apart)


def test_fitted_on_everything_it_is_as_close_as_the_measurements_allow():
    # the model's ceiling: in-sample, most candidates within 10% (the rest is the noise between two measurements)
    subs, prec, x, p50, p90 = _load("openvino_288")
    feats, y50 = {}, {}
    for i in range(len(subs)):
        feats.setdefault(prec[i], []).append(x[i])
        y50.setdefault(prec[i], []).append(p50[i])
    pred = LatencyPredictor(90, kinds=FEATURE_KINDS).fit(feats, y50)
    got = np.array([pred.predict_p50(x[i], prec[i]) for i in range(len(subs))])
    assert np.mean(np.abs(got - p50) / p50 <= 0.10) >= 0.85
    assert 0.80 <= pred.summary()["loo_within_10pct_p50"] <= 1.0
