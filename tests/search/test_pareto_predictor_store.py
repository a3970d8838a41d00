import numpy as np
import pytest

from edgedet.search.pareto import dominates, front, hypervolume
from edgedet.search.predictor import LatencyPredictor
from edgedet.search.explore import Estimate, near_front, pick
from edgedet.search.space import Candidate
from edgedet.search.store import Store, sqlite_url


def brute_front(pts):
    return sorted(i for i, p in enumerate(pts) if not any(dominates(q, p) for q in pts)
                  and not any(q == p for q in pts[:i]))


@pytest.mark.parametrize("seed", range(5))
def test_front_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    pts = [(float(a), float(b)) for a, b in zip(rng.integers(0, 8, 40) / 8, rng.integers(1, 9, 40))]
    assert sorted(front(pts)) == brute_front(pts)


def test_hypervolume_hand_computed_and_grid():
    # staircase (AP, ms): (0.2, 1), (0.5, 3) with reference latency 5: 0.2*(3-1) + 0.5*(5-3) = 1.4
    assert hypervolume([(0.2, 1.0), (0.5, 3.0), (0.1, 4.0)], ref_latency=5) == pytest.approx(1.4)
    rng = np.random.default_rng(0)
    pts = [(float(a), float(b)) for a, b in zip(rng.random(15), rng.random(15) * 10)]
    xs, ys = np.meshgrid(np.linspace(0, 10, 801)[:-1] + 10 / 1600, np.linspace(0, 1, 401)[:-1] + 1 / 800)
    covered = np.zeros_like(xs, bool)
    for ap, lat in pts:
        covered |= (xs >= lat) & (ys <= ap)
    assert hypervolume(pts, ref_latency=10) == pytest.approx(covered.mean() * 10, rel=0.01)


def test_predictor_recovers_an_additive_cost_model_and_borrows_ratios():
    rng = np.random.default_rng(0)
    w = np.array([1.0, 8.0, 0, 2.0, 0.5, 0.3, 0.2, 0])
    x = np.abs(rng.normal(size=(30, 8))) + np.eye(8)[rng.integers(0, 8, 30)]
    x[:, 0] = 1
    y = x @ w * (1 + rng.normal(scale=0.02, size=30))
    p = LatencyPredictor().fit({"fp32": list(x[:20]), "int8": list(x[20:22])},
                               {"fp32": list(y[:20]), "int8": list(0.5 * y[20:22])})
    rel = [abs(p.predict(x[i], "fp32") - y[i]) / y[i] for i in range(20, 30)]
    assert max(rel) < 0.1 and 0.02 <= p.margin() < 0.1
    assert p.borrowed["int8"][0] == "fp32" and p.borrowed["int8"][1] == pytest.approx(0.5, rel=0.1)
    assert p.predict(x[25], "int8") == pytest.approx(0.5 * y[25], rel=0.15)


def test_sparse_precision_learns_its_compute_and_overhead_scales_and_keeps_the_median_ratio_with_one_point():
    # int8 halves the compute terms (GFLOPs) and adds 30% to the overhead terms: two measured int8 subnets (a small
    # and a large one) pin both scales; one gives the base model times its ratio
    rng = np.random.default_rng(1)
    kinds = ("const", "compute", "compute", "overhead", "compute")
    w = np.array([2.0, 6.0, 3.0, 0.5, 2.0])
    x = np.abs(rng.normal(size=(40, 5))) + 0.1
    x[:, 0] = 1
    x[:, [1, 2, 4]] *= rng.uniform(0.05, 1.0, size=(40, 1))  # subnet size: small ones are mostly overhead
    y = x @ w
    y8 = x @ (w * np.array([1.3, 0.5, 0.5, 1.3, 0.5]))
    fit = LatencyPredictor(kinds=kinds).fit
    small, large = int(np.argmin(y[20:])) + 20, int(np.argmax(y[20:])) + 20
    two = fit({"fp32": list(x[:20]), "int8": [x[small], x[large]]}, {"fp32": list(y[:20]), "int8": [y8[small], y8[large]]})
    assert two.scales["fp32"] == pytest.approx([1, 1]) and two.scales["int8"] == pytest.approx([1.3, 0.5], rel=0.1)
    err = [abs(two.predict_p50(x[i], "int8") - y8[i]) / y8[i] for i in range(20, 40)]
    assert np.median(err) < 0.03 and max(err) < 0.10  # the pull towards constant + cost per GFLOP costs a little
    exact = LatencyPredictor(kinds=kinds, w_ridge=0.0).fit({"fp32": list(x[:20]), "int8": [x[small], x[large]]},
                                                           {"fp32": list(y[:20]), "int8": [y8[small], y8[large]]})
    assert max(abs(exact.predict_p50(x[i], "int8") - y8[i]) / y8[i] for i in range(20, 40)) < 0.02
    one = fit({"fp32": list(x[:20]), "int8": [x[large]]}, {"fp32": list(y[:20]), "int8": [y8[large]]})
    ratio = y8[large] / y[large]
    assert one.scales["int8"][0] == pytest.approx(one.scales["int8"][1]) == pytest.approx(ratio, rel=0.05)
    assert one.borrowed["int8"] == ("fp32", pytest.approx(ratio, rel=0.05))
    # no term kinds: one scale per term (what a precision does to each term separately), from five points
    per_term = LatencyPredictor(ratio_ridge=0.1).fit({"fp32": list(x[:20]), "int8": list(x[20:25])},
                                                     {"fp32": list(y[:20]), "int8": list(y8[20:25])})
    assert len(per_term.scales["int8"]) == 5
    err = np.median([abs(per_term.predict_p50(x[i], "int8") - y8[i]) / y8[i] for i in range(25, 40)])
    flat = np.median([abs(x[i] @ w * np.median(y8[20:25] / y[20:25]) - y8[i]) / y8[i] for i in range(25, 40)])
    assert err < 0.5 * flat


def test_d_optimal_design_spreads_over_the_cost_terms_not_only_flops():
    from edgedet.search.space import d_optimal

    # rows that mostly grow together (like FLOPs, tokens, memory) plus a few that vary one term alone
    rng = np.random.default_rng(0)
    t = rng.random(50)
    x = np.stack([np.ones(50), t, t + 0.01 * rng.random(50), t ** 2], 1)
    x[[7, 31], 2] = [0.0, 1.0]  # the rows that separate term 2 from term 1
    got = d_optimal(x, 5, first=[int(np.argmin(t)), int(np.argmax(t))])
    assert got[:2] == [int(np.argmin(t)), int(np.argmax(t))] and len(set(got)) == 5
    assert {7, 31} & set(got)
    rank = np.linalg.matrix_rank(x[got])
    assert rank == 4  # every term identifiable from 5 rows
    assert d_optimal(x, 60) == sorted(d_optimal(x, 60), key=d_optimal(x, 60).index) and len(d_optimal(x, 60)) == 50


def test_near_front_selects_unmeasured_candidates_that_could_be_optimal(tiny_cfg):
    subs = [tiny_cfg.smallest(), tiny_cfg.largest()]
    e = [Estimate(Candidate(subs[0], "fp32"), 0.30, 10.0, True),
         Estimate(Candidate(subs[1], "fp32"), 0.50, 20.0, True),
         Estimate(Candidate(subs[0], "int8"), 0.29, 10.5, False),  # dominated, but within a 10% margin
         Estimate(Candidate(subs[1], "int8"), 0.20, 30.0, False),  # dominated by far
         Estimate(Candidate(subs[0], "fp16"), 0.60, 25.0, False)]  # on the front
    got = [x.cand.id for x in near_front(e, 0.10, None)]
    assert got == [e[4].cand.id, e[2].cand.id]
    assert [x.cand.id for x in near_front(e, 0.10, 12.0)] == [e[2].cand.id]  # the budget line
    # dominated on latency alone, but quantisation may move its AP by up to 0.04: it could still be on the front
    unsure = Estimate(Candidate(subs[1], "int8"), 0.47, 20.5, False, ap_hi=0.51)
    sure = Estimate(Candidate(subs[1], "int8"), 0.47, 20.5, False)
    assert near_front(e[:2] + [unsure], 0.0, None) == [unsure] and near_front(e[:2] + [sure], 0.0, None) == []


RECORD = {"p50_ms": 3.0, "p90_ms": 3.2, "p99_ms": 3.5, "mean_ms": 3.1, "min_ms": 2.9, "spread": 0.1, "noisy": False,
          "runs": 10}


A, B = "p16-r192-w1-d1-q25", "p16-r384-w2-d3-q100"


def test_store_roundtrip_and_replace(tmp_path):
    s = Store(sqlite_url(tmp_path / "s.db"))
    s.put_measurement("fp", "p16-r192-w1-d1-q25", "fp32", "1.0", "ok", 3.5, RECORD, {"AP": 0.1}, "artifact")
    s.put_measurement("fp", "p16-r192-w1-d1-q25", "int8", "1.0", "unsupported: no")
    s.put_measurement("fp", "p16-r192-w1-d1-q25", "fp32", "1.0", "ok", 3.0, RECORD)  # replaced, not duplicated
    rows = s.measurements("fp", "1.0")
    m = s.measurement("fp", "p16-r192-w1-d1-q25", "fp32", "1.0")
    assert len(rows) == 2 and m.latency_ms == 3.0 and m.record == RECORD and m.id == "p16-r192-w1-d1-q25@fp32"
    assert s.measurements("fp", "2.0") == [] and s.measurements("other", "1.0") == []
    s.put_accuracy("k", {A: {"AP": 0.1}, B: {"AP": 0.2}})
    assert Store(sqlite_url(tmp_path / "s.db")).accuracy("k") == {A: {"AP": 0.1}, B: {"AP": 0.2}}


def test_pick_spends_a_batch_where_the_front_gains_most(tiny_cfg):
    subs = [tiny_cfg.smallest(), tiny_cfg.largest()]
    c = [Candidate(s, p) for s in subs for p in ("fp32", "int8", "fp16")]
    measured = [Estimate(c[0], 0.10, 2.0, True), Estimate(c[1], 0.50, 20.0, True)]
    fill_gap = Estimate(c[2], 0.40, 5.0, False)  # fills the wide gap between 2 and 20 ms
    top = Estimate(c[3], 0.52, 19.0, False)  # highest AP, adds a sliver
    near_gap = Estimate(c[4], 0.38, 5.5, False)  # mostly shadowed by fill_gap once that one is believed
    todo = [top, near_gap, fill_gap]
    got = pick(todo, measured + todo, 2, 0.05, ref_ms=30.0)
    assert got[0] is fill_gap and got[1] is top  # the second pick counts fill_gap as already there
    assert pick(todo, measured + todo, 5, 0.05, ref_ms=30.0)[2] is near_gap  # all of them when k allows
