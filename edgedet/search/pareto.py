"""Two-objective Pareto tools: maximise AP, minimise latency."""
from __future__ import annotations

from typing import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(ap, latency) a dominates b: no worse in both, better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, sorted by latency (then AP descending). Exact duplicates: the first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0], i))
    out, best_ap = [], float("-inf")
    for i in order:
        if points[i][0] > best_ap:
            out.append(i)
            best_ap = points[i][0]
    return out


def hypervolume(points: Sequence[tuple[float, float]], ref_latency: float, ref_ap: float = 0.0) -> float:
    """Area dominated by the points inside the box AP in [ref_ap, .], latency in [., ref_latency]."""
    pts = [p for p in points if p[1] < ref_latency and p[0] > ref_ap]
    hv = 0.0
    f = [pts[i] for i in front(pts)]  # latency ascending, AP ascending: a staircase
    for k, (ap, lat) in enumerate(f):
        nxt = f[k + 1][1] if k + 1 < len(f) else ref_latency
        hv += (ap - ref_ap) * (nxt - lat)  # this point's AP holds from its latency to the next point's
    return hv
