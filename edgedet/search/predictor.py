"""Latency predictor fitted on the measurements of one target, in two parts:

- p50 (the stable statistic of a measurement) = w . features(subnet), w >= 0, one weight vector per precision,
  fitted by non-negative least squares on relative error (each row divided by its latency, so a 2 ms and a 50 ms
  subnet count alike). A precision with too few measurements of its own borrows the best-covered precision's model
  with one ratio per cost term, fitted on its few points with a ridge pull towards their median ratio: with one or
  two points that is the base model times the median ratio; with more, terms that the precision speeds up or slows
  down differently (INT8 attention on a CPU, say) get their own ratio. From min_points on, a precision gets a model
  of its own instead, if that predicts its left-out points better (points measured near the front cluster on small
  subnets, and an own fit on them can extrapolate worse than the ratios).
- the target's percentile = p50 x the precision's tail ratio (the median of percentile / p50 over its measurements;
  the median over all precisions for one not measured yet): the tail of a short benchmark scatters far more than its
  median, so it is not fitted term by term.

Leave-one-out relative errors, at p50 and at the percentile (the p50 model and the tail ratio both refitted without
the point), say how far to trust it; the percentile's give the margin the search uses for "predicted near the
front"."""
from __future__ import annotations

import numpy as np
from scipy.optimize import lsq_linear, nnls


class LatencyPredictor:
    RIDGES = (0.001, 0.01, 0.1, 1.0)

    def __init__(self, percentile: int = 90, min_points: int = 6, ratio_ridge: float | None = None):
        self.percentile = percentile
        self.min_points = min_points
        self.ratio_ridge = ratio_ridge  # None: chosen by leave-one-out among RIDGES (0.1 with under 3 points)
        self.ridges: dict[str, float] = {}
        self.models: dict[str, np.ndarray] = {}  # p50 weights per precision
        self.borrowed: dict[str, tuple[str, float]] = {}  # precision -> (base precision, median ratio)
        self.tails: dict[str, float] = {}  # precision -> percentile / p50
        self.loo_p50: dict[str, np.ndarray] = {}  # precision -> leave-one-out p50 prediction of each point
        self.loo_rel_err_p50: list[float] = []
        self.loo_rel_err: list[float] = []  # at the target's percentile

    @staticmethod
    def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        w, _ = nnls(x / y[:, None], np.ones(len(y)), maxiter=50 * x.shape[1])
        return w

    def fit(self, feats: dict[str, list[np.ndarray]], p50: dict[str, list[float]],
            pct: dict[str, list[float]] | None = None) -> "LatencyPredictor":
        """feats / p50 / pct: per precision, the feature rows, the measured p50 and the measured latency at the
        target's percentile (ms; None: the p50 itself, a tail ratio of 1)."""
        self.models, self.borrowed, self.ridges, self.tails, self.loo_p50 = {}, {}, {}, {}, {}
        self.loo_rel_err_p50, self.loo_rel_err = [], []
        self._base = base = max(p50, key=lambda k: len(p50[k])) if any(len(v) for v in p50.values()) else None
        if base is None:
            return self
        ys = {p: np.asarray(v, dtype=float) for p, v in p50.items()}
        k = len(feats[base][0])
        xs = {p: np.asarray(feats[p], dtype=float).reshape(len(ys[p]), k) for p in ys}
        w = self.models[base] = self._fit(xs[base], ys[base])
        self.loo_p50[base] = self._loo_own(xs[base], ys[base])
        for p in ys:
            if p != base:
                self._fit_other(p, xs[p], ys[p], w, base)
        self._fit_tails(ys, {p: np.asarray(pct[p], dtype=float) for p in ys} if pct else ys)
        return self

    def _fit_other(self, p: str, x: np.ndarray, y: np.ndarray, w: np.ndarray, base: str) -> None:
        if not len(y):
            self.borrowed[p], self.models[p] = (base, 1.0), w
            return
        ratio = float(np.median(y / np.maximum(x @ w, 1e-9)))
        lam, loo = self._choose_ridge(x * w, y)
        if len(y) >= self.min_points:  # its own model only where it predicts its held-out points better
            own = self._loo_own(x, y)
            if np.mean(_rel(own, y)) < np.mean(_rel(loo, y)):
                self.models[p], self.loo_p50[p] = self._fit(x, y), own
                return
        self.borrowed[p], self.ridges[p], self.loo_p50[p] = (base, ratio), lam, loo
        self.models[p] = w * self._term_ratios(x * w, y, ratio, lam) if len(y) > 1 else w * ratio

    def _fit_tails(self, p50: dict[str, np.ndarray], pct: dict[str, np.ndarray]) -> None:
        """Tail ratios, and the leave-one-out errors at p50 and at the percentile."""
        ratios = {p: pct[p] / p50[p] for p in p50}
        every = np.concatenate([r for r in ratios.values()]) if ratios else np.ones(0)
        pooled = float(np.median(every)) if len(every) else 1.0
        for p, r in ratios.items():
            self.tails[p] = float(np.median(r)) if len(r) else pooled
            loo = self.loo_p50.get(p)
            if loo is None or not len(loo):
                continue
            self.loo_rel_err_p50 += _rel(loo, p50[p]).tolist()
            for i in range(len(r)):  # the tail ratio without point i: its own precision's, else the pooled one
                rest = np.delete(r, i) if len(r) > 1 else np.delete(every, np.flatnonzero(every == r[i])[:1])
                tail = float(np.median(rest)) if len(rest) else 1.0
                self.loo_rel_err.append(float(abs(loo[i] * tail - pct[p][i]) / pct[p][i]))
        self._pooled_tail = pooled

    def _loo_own(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Leave-one-out predictions of an own fit (empty with 2 points or fewer)."""
        out = []
        for i in range(len(y) if len(y) > 2 else 0):
            keep = np.arange(len(y)) != i
            out.append(float(x[i] @ self._fit(x[keep], y[keep])))
        return np.asarray(out)

    def _loo_ratio(self, c: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
        out = []
        for i in range(len(y) if len(y) > 2 else 0):
            keep = np.arange(len(y)) != i
            ratio = float(np.median(y[keep] / np.maximum(c[keep].sum(1), 1e-9)))
            out.append(float(c[i] @ self._term_ratios(c[keep], y[keep], ratio, lam)))
        return np.asarray(out)

    def _choose_ridge(self, c: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """The ridge (fixed, or the one of RIDGES with the lowest mean leave-one-out error) and its LOO
        predictions."""
        lams = [self.ratio_ridge] if self.ratio_ridge else [0.1] if len(y) < 3 else self.RIDGES
        loo = {lam: self._loo_ratio(c, y, lam) for lam in lams}
        lam = min(loo, key=lambda k: np.mean(_rel(loo[k], y)) if len(loo[k]) else 0.0)
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

    def predict_p50(self, f: np.ndarray, precision: str) -> float:
        """p50 (ms) of a subnet with features f at `precision` (a precision never measured: the base model)."""
        return float(f @ self.models.get(precision, self.models[self._base]))

    def tail(self, precision: str) -> float:
        return self.tails.get(precision, getattr(self, "_pooled_tail", 1.0))

    def predict(self, f: np.ndarray, precision: str) -> float:
        """Latency (ms) at the target's percentile: predicted p50 x the precision's tail ratio."""
        return self.predict_p50(f, precision) * self.tail(precision)

    def margin(self, q: float = 0.9, floor: float = 0.03, cap: float = 0.5) -> float:
        """Relative error at the percentile not exceeded by a fraction q of leave-one-out predictions (clipped to
        [floor, cap])."""
        if not self.loo_rel_err:
            return cap
        return float(np.clip(np.quantile(self.loo_rel_err, q), floor, cap))

    def summary(self) -> dict:
        """Leave-one-out error at p50 and at the percentile (median, share within +-10%), the tail ratios."""
        out = {}
        for stat, err in (("p50", self.loo_rel_err_p50), (f"p{self.percentile}", self.loo_rel_err)):
            e = np.asarray(err)
            out[f"loo_rel_err_median_{stat}"] = round(float(np.median(e)), 4) if len(e) else None
            out[f"loo_within_10pct_{stat}"] = round(float(np.mean(e <= 0.10)), 4) if len(e) else None
        out["tail_ratio"] = {p: round(v, 4) for p, v in self.tails.items()}
        return out


def _rel(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(pred) - y[:len(pred)]) / y[:len(pred)]
