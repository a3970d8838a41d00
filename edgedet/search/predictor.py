"""Latency predictor fitted on the measurements of one target: latency = w . features(subnet), w >= 0, one weight
vector per precision, fitted by non-negative least squares on relative error (each row divided by its latency, so
a 2 ms and a 50 ms subnet count alike). A precision with too few measurements borrows the best-covered precision's
model times the median measured ratio between the two. Leave-one-out relative errors give the margin the search
uses for "predicted near the front"."""
from __future__ import annotations

import numpy as np
from scipy.optimize import nnls


class LatencyPredictor:
    def __init__(self, min_points: int = 6):
        self.min_points = min_points
        self.models: dict[str, np.ndarray] = {}
        self.borrowed: dict[str, tuple[str, float]] = {}  # precision -> (base precision, ratio)
        self.loo_rel_err: list[float] = []

    @staticmethod
    def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        w, _ = nnls(x / y[:, None], np.ones(len(y)), maxiter=50 * x.shape[1])
        return w

    def fit(self, feats: dict[str, list[np.ndarray]], lat: dict[str, list[float]]) -> "LatencyPredictor":
        """feats/lat: per precision, the feature rows and measured latencies (ms)."""
        self.models, self.borrowed, self.loo_rel_err = {}, {}, []
        own = {p: len(v) for p, v in lat.items() if len(v) >= self.min_points}
        if not own and lat:  # too few everywhere: the best-covered precision fits with what it has
            p = max(lat, key=lambda k: len(lat[k]))
            own = {p: len(lat[p])}
        for p in own:
            x, y = np.asarray(feats[p]), np.asarray(lat[p], dtype=float)
            self.models[p] = self._fit(x, y)
            for i in range(len(y) if len(y) > 2 else 0):  # leave-one-out
                keep = np.arange(len(y)) != i
                w = self._fit(x[keep], y[keep])
                self.loo_rel_err.append(float(abs(x[i] @ w - y[i]) / y[i]))
        base = max(own, key=own.get) if own else None
        for p, v in lat.items():
            if p in self.models or base is None:
                continue
            pred = np.asarray(feats[p]) @ self.models[base]
            ratio = float(np.median(np.asarray(v) / pred)) if len(v) else 1.0
            self.borrowed[p] = (base, ratio)
        self._base = base
        return self

    @property
    def ready(self) -> bool:
        return bool(self.models)

    def predict(self, f: np.ndarray, precision: str) -> float:
        if precision in self.models:
            return float(f @ self.models[precision])
        base, ratio = self.borrowed.get(precision, (self._base, 1.0))
        return float(f @ self.models[base]) * ratio

    def margin(self, q: float = 0.9, floor: float = 0.03, cap: float = 0.5) -> float:
        """Relative error not exceeded by a fraction q of leave-one-out predictions (clipped to [floor, cap])."""
        if not self.loo_rel_err:
            return cap
        return float(np.clip(np.quantile(self.loo_rel_err, q), floor, cap))
