"""A noisy point never pushes a stable one off the front silently, and a run whose measurements stay noisy says so
(tests/devices/test_local_noise.py: noisy measurements repeated and flagged)."""
from __future__ import annotations

from edgedet.config import BenchmarkSettings, MeasuredPoint
from edgedet.search.report import noise_aware_front, noise_summary


def _pt(pid: str, ap: float, ms: float, noisy: bool, spread: float = 0.05, note: str = "") -> MeasuredPoint:
    return MeasuredPoint(id=pid, subnet=pid.split("@")[0], precision="fp32", status="ok", latency_ms=ms,
                         ap={"AP": ap}, record={"noisy": noisy, "spread": spread, "note": note})


def test_a_noisy_point_never_silently_pushes_a_stable_one_off_the_front():
    pts = [_pt("p24-r192-w2-d0-q25@fp32", 0.20, 5.0, False),
           _pt("p24-r288-w2-d0-q25@fp32", 0.30, 9.0, False),  # dominated only by the noisy point below
           _pt("p24-r288-w2-d3-q25@fp32", 0.31, 8.0, True, 0.4),
           _pt("p24-r384-w2-d3-q25@fp32", 0.25, 12.0, False)]  # dominated by a stable point: off the front
    idx, warn = noise_aware_front(pts)
    assert [pts[i].id for i in idx] == [pts[0].id, pts[2].id, pts[1].id]
    assert len(warn) == 1 and pts[1].id in warn[0] and pts[2].id in warn[0]
    assert noise_aware_front([p for p in pts if not p.record["noisy"]])[1] == []
    summary = noise_summary(pts + [_pt("p24-r192-w2-d3-q25@fp32", 0.2, 6, True, 0.1, "other processes used 1.2 "
                                       "cores")], BenchmarkSettings(noise_threshold=0.15, repeat_noisy=2))
    assert summary == ["2 of 5 measurements stayed noisy after up to 2 repeats (spread above the target's "
                       "noise_threshold: 1, other processes busy during the runs: 1): their latencies are uncertain; "
                       "measure on a quieter machine or raise benchmark.runs"]
    assert noise_summary(pts[:2], BenchmarkSettings()) == []
