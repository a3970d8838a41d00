import numpy as np
import pytest

from edgedet.search.pareto import dominates, front, hypervolume
from edgedet.search.predictor import LatencyPredictor
from edgedet.search.run import Estimate, near_front
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


def test_store_roundtrip_and_replace(tmp_path):
    s = Store(sqlite_url(tmp_path / "s.db"))
    s.put_measurement("fp", "p16-r192-w1-d1-q25", "fp32", "1.0", "ok", 3.5, {"p50_ms": 3}, {"AP": 0.1}, "artifact")
    s.put_measurement("fp", "p16-r192-w1-d1-q25", "int8", "1.0", "unsupported: no")
    s.put_measurement("fp", "p16-r192-w1-d1-q25", "fp32", "1.0", "ok", 3.0)  # replaced, not duplicated
    rows = s.measurements("fp", "1.0")
    assert len(rows) == 2 and s.measurement("fp", "p16-r192-w1-d1-q25", "fp32", "1.0")["latency_ms"] == 3.0
    assert s.measurements("fp", "2.0") == [] and s.measurements("other", "1.0") == []
    s.put_accuracy("k", {"a": {"AP": 0.1}, "b": {"AP": 0.2}})
    assert Store(sqlite_url(tmp_path / "s.db")).accuracy("k") == {"a": {"AP": 0.1}, "b": {"AP": 0.2}}
