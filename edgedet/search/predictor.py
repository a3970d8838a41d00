"""Latency predictor fitted on the measurements of one target: latency = w . features(subnet), w >= 0, one weight
vector per precision, fitted by non-negative least squares on relative error (each row divided by its latency, so
a 2 ms and a 50 ms subnet count alike). A precision with too few measurements of its own borrows the best-covered
precision's model with one ratio per cost term, fitted on its few points with a ridge pull towards their median
ratio: with one or two points that is the base model times the median ratio; with more, terms that the precision
speeds up or slows down differently (INT8 attention on a CPU, say) get their own ratio. From min_points on, a
precision gets a model of its own instead, if that predicts its left-out points better (points measured near the
front cluster on small subnets, and an own fit on them can extrapolate worse than the ratios). Leave-one-out
relative errors give the margin the search uses for "predicted near the front"."""
from __future__ import annotations

import numpy as np
from scipy.optimize import lsq_linear, nnls


class LatencyPredictor:
    RIDGES = (0.001, 0.01, 0.1, 1.0)

    def __init__(self, min_points: int = 6, ratio_ridge: float | None = None):
        self.min_points = min_points
        self.ratio_ridge = ratio_ridge  # None: chosen by leave-one-out among RIDGES (0.1 with under 3 points)
        self.ridges: dict[str, float] = {}
        self.models: dict[str, np.ndarray] = {}
        self.borrowed: dict[str, tuple[str, float]] = {}  # precision -> (base precision, median ratio)
        self.loo_rel_err: list[float] = []

    @staticmethod
    def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        w, _ = nnls(x / y[:, None], np.ones(len(y)), maxiter=50 * x.shape[1])
        return w

    def fit(self, feats: dict[str, list[np.ndarray]], lat: dict[str, list[float]]) -> "LatencyPredictor":
        """feats/lat: per precision, the feature rows and measured latencies (ms)."""
        self.models, self.borrowed, self.loo_rel_err, self.ridges = {}, {}, [], {}
        self._base = base = max(lat, key=lambda k: len(lat[k])) if lat else None
        if base is None:
            return self
        xb, yb = np.asarray(feats[base]), np.asarray(lat[base], dtype=float)
        w = self.models[base] = self._fit(xb, yb)
        self.loo_rel_err += self._loo_own(xb, yb)
        for p, v in lat.items():
            if p == base:
                continue
            if not len(v):
                self.borrowed[p], self.models[p] = (base, 1.0), w
                continue
            x, y = np.asarray(feats[p]), np.asarray(v, dtype=float)
            ratio = float(np.median(y / np.maximum(x @ w, 1e-9)))
            lam, loo = self._choose_ridge(x * w, y)
            if len(y) >= self.min_points:  # its own model only where it predicts its held-out points better
                own = self._loo_own(x, y)
                if np.mean(own) < np.mean(loo):
                    self.models[p] = self._fit(x, y)
                    self.loo_rel_err += own
                    continue
            self.borrowed[p], self.ridges[p] = (base, ratio), lam
            self.models[p] = w * self._term_ratios(x * w, y, ratio, lam) if len(y) > 1 else w * ratio
            self.loo_rel_err += loo
        return self

    def _loo_own(self, x: np.ndarray, y: np.ndarray) -> list[float]:
        out = []
        for i in range(len(y) if len(y) > 2 else 0):
            keep = np.arange(len(y)) != i
            out.append(float(abs(x[i] @ self._fit(x[keep], y[keep]) - y[i]) / y[i]))
        return out

    def _loo_ratio(self, c: np.ndarray, y: np.ndarray, lam: float) -> list[float]:
        out = []
        for i in range(len(y) if len(y) > 2 else 0):
            keep = np.arange(len(y)) != i
            ratio = float(np.median(y[keep] / np.maximum(c[keep].sum(1), 1e-9)))
            out.append(float(abs(c[i] @ self._term_ratios(c[keep], y[keep], ratio, lam) - y[i]) / y[i]))
        return out

    def _choose_ridge(self, c: np.ndarray, y: np.ndarray) -> tuple[float, list[float]]:
        """The ridge (fixed, or the one of RIDGES with the lowest mean leave-one-out error) and its LOO errors."""
        lams = [self.ratio_ridge] if self.ratio_ridge else [0.1] if len(y) < 3 else self.RIDGES
        loo = {lam: self._loo_ratio(c, y, lam) for lam in lams}
        lam = min(loo, key=lambda k: np.mean(loo[k]) if loo[k] else 0.0)
        return lam, loo[lam]

    @staticmethod
    def _term_ratios(c: np.ndarray, y: np.ndarray, ratio: float, lam: float) -> np.ndarray:
        """Per-term ratios r >= 0 minimising sum((c r / y - 1)^2) + ridge * sum((r - ratio)^2) (c: each term's
        milliseconds under the base model; terms the base model does not use keep `ratio`)."""
        r = np.full(c.shape[1], ratio)
        act = c.sum(0) > 0
        k = int(act.sum())
        if k:
            a = np.vstack([c[:, act] / y[:, None], np.sqrt(lam) * np.eye(k)])
            b = np.concatenate([np.ones(len(y)), np.sqrt(lam) * ratio * np.ones(k)])
            r[act] = lsq_linear(a, b, bounds=(0, np.inf)).x
        return r

    @property
    def ready(self) -> bool:
        return bool(self.models)

    def predict(self, f: np.ndarray, precision: str) -> float:
        """Latency (ms) of a subnet with features f at `precision` (a precision never measured: the base model)."""
        return float(f @ self.models.get(precision, self.models[self._base]))

    def margin(self, q: float = 0.9, floor: float = 0.03, cap: float = 0.5) -> float:
        """Relative error not exceeded by a fraction q of leave-one-out predictions (clipped to [floor, cap])."""
        if not self.loo_rel_err:
            return cap
        return float(np.clip(np.quantile(self.loo_rel_err, q), floor, cap))
