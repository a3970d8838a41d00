"""Latency predictor fitted on the measurements of one target, in two parts:

- p50 (the stable statistic of a measurement): one cost model shared by every precision, w . features(subnet) with
  w >= 0, times one scale per precision and group of terms. With term kinds given (features() has them: the
  constant, compute terms in GFLOPs, overhead terms), the groups are compute and the rest, so a precision's
  measurements say how much faster its kernels run the matrix products and how much its fixed costs change, and
  nothing more; without kinds every term is its own group. The precision with the most measurements is the base
  (scales 1). All measurements fit w together, alternating non-negative least squares on relative error (each row
  divided by its latency, so a 2 ms and a 50 ms subnet count alike): w with the scales fixed, then each precision's
  scales with w fixed.
  Two ridge pulls keep a small budget from overfitting (15 points for 8 terms and 2 x 2 scales): each precision's
  scales towards its median ratio to the base model (RATIO_RIDGE: one or two points of a precision give about that
  ratio), and w towards the two-term model "constant + one cost per GFLOP" fitted on the same rows (strength in
  units of each term's mean share of the latency, about that many extra rows per term), which the data overrules as
  measurements accumulate. RATIO_RIDGE and W_RIDGES were chosen on the exhaustive measurements of two spaces and
  backends (benchmarks/search_vs_exhaustive.py replays: ONNX Runtime fp32/int8, OpenVINO fp32/bf16/int8;
  tests/search/data): the ratio pull is fixed and the pull on w is chosen per fit by leave-one-out error between
  1 and 3 only (up to MAX_LOO points; W_RIDGE above). Letting leave-one-out drop the pull (0 or 0.3) matched on the
  median but lost badly on some seeds: a search's points cluster near the front (all 30 queries, say), where
  leave-one-out cannot see an extrapolation to the rest of the space. From min_points measurements on, a
  precision gets a model of its own where that predicts its held-out points better; the other precisions keep
  their scales on the shared w. (From 20 points, an own model of the base beside the pooled one cost the worst ONNX
  Runtime replay seed 48% -> 35% of held-out candidates within 10%.)
- the target's percentile = p50 x the precision's tail ratio (the median of percentile / p50 over its measurements;
  the median over all precisions for one not measured yet): the tail of a short benchmark scatters far more than its
  median, so it is not fitted term by term.

Held-out relative errors (leave-one-out; MAX_LOO folds above MAX_LOO points), at p50 and at the percentile (the p50
model and the tail ratio both refitted without the point), say how far to trust it; the percentile's give the
margin the search uses for "predicted near the front"."""
from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

KINDS = ("const", "compute", "overhead")


class LatencyPredictor:
    RATIO_RIDGE = 0.01
    W_RIDGE = 1.0
    W_RIDGES = (1.0, 3.0)  # the first wins ties
    MAX_LOO = 60
    ITERS = 200

    def __init__(self, percentile: int = 90, min_points: int = 40, kinds: tuple[str, ...] | None = None,
                 ratio_ridge: float | None = None, w_ridge: float | None = None):
        if kinds is not None and not set(kinds) <= set(KINDS):
            raise ValueError(f"term kinds must be among {KINDS}, got {sorted(set(kinds) - set(KINDS))}")
        self.percentile = percentile
        self.min_points = min_points
        self.kinds = kinds
        self.ratio_ridge = self.RATIO_RIDGE if ratio_ridge is None else ratio_ridge
        self.w_ridge_fixed = w_ridge  # None: chosen per fit (no pull without term kinds)
        self.w_ridge = 0.0  # the pull on w of the last fit
        self._const = np.array([kd == "const" for kd in kinds]) if kinds is not None else None
        self._compute = np.array([kd == "compute" for kd in kinds]) if kinds is not None else None
        self.models: dict[str, np.ndarray] = {}  # effective p50 weights per precision (shared w x its scales)
        self.scales: dict[str, np.ndarray] = {}  # per precision, one scale per group of terms (base: ones)
        self.borrowed: dict[str, tuple[str, float]] = {}  # pooled precision -> (base precision, median ratio)
        self.own: set[str] = set()  # precisions with a model of their own
        self.tails: dict[str, float] = {}  # precision -> percentile / p50
        self.loo_p50: dict[str, np.ndarray] = {}  # precision -> held-out p50 prediction of each point (nan: none)
        self.loo_rel_err_p50: list[float] = []
        self.loo_rel_err: list[float] = []  # at the target's percentile

    # ------------------------------------------------------------------------------------------------- fitting
    def _groups(self, k: int) -> np.ndarray:
        """The scale group of each term: 0 the constant and overhead terms, 1 the compute terms (with kinds; see
        scale_groups), else one group per term."""
        if self.kinds is None:
            return np.arange(k)
        if len(self.kinds) != k:
            raise ValueError(f"{len(self.kinds)} term kinds for {k} features")
        return self._compute.astype(int)

    @property
    def scale_groups(self) -> tuple[str, ...] | None:
        """Names of the entries of each precision's scales (None without kinds: one per feature)."""
        return ("overhead", "compute") if self.kinds is not None else None

    def _prior(self, a: np.ndarray, mu: float) -> np.ndarray:
        """Weights of "constant + one cost per GFLOP" fitted on the relative rows a (zeros without kinds or pull)."""
        if self.kinds is None or not mu:
            return np.zeros(a.shape[1])
        c, _ = nnls(np.stack([a[:, self._const].sum(1), a[:, self._compute].sum(1)], 1), np.ones(len(a)))
        return np.where(self._const, c[0], np.where(self._compute, c[1], 0.0))

    def _joint(self, x: np.ndarray, y: np.ndarray, prec: np.ndarray,
               mu: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Shared weights w (pulled towards the prior with strength mu) and per-precision group scales (the base's:
        ones) on rows x, p50 y, precisions prec."""
        g = self._groups(x.shape[1])
        n_g = int(g.max()) + 1
        s = {p: np.ones(n_g) for p in dict.fromkeys(prec.tolist())}
        rows = {p: prec == p for p in s if p != self._base}
        lam = self.ratio_ridge
        last = None
        for _ in range(self.ITERS):
            a = x * np.stack([s[p][g] for p in prec]) / y[:, None]
            d = np.sqrt(mu) * np.maximum(a.mean(0), 1e-12)  # pull in units of each term's mean latency share
            w, _ = nnls(np.vstack([a, np.diag(d)]), np.concatenate([np.ones(len(y)), d * self._prior(a, mu)]),
                        maxiter=50 * x.shape[1])
            for p, m in rows.items():
                c = np.stack([(x[m] * w * (g == j)).sum(1) for j in range(n_g)], 1) / y[m][:, None]
                ratio = float(np.median(1 / np.maximum(c.sum(1), 1e-9)))
                s[p], _ = nnls(np.vstack([c, np.sqrt(lam) * np.eye(n_g)]),
                               np.concatenate([np.ones(int(m.sum())), np.sqrt(lam) * ratio * np.ones(n_g)]),
                               maxiter=50 * n_g)
            pred = (x * np.stack([s[p][g] for p in prec])) @ w
            if last is not None and np.max(np.abs(pred - last) / y) < 1e-5:
                break
            last = pred
        return w, s

    def _held_out(self, n: int) -> list[np.ndarray]:
        """Index sets each left out once: single points up to MAX_LOO, else MAX_LOO folds (none with <= 2)."""
        if n <= 2:
            return []
        if n <= self.MAX_LOO:
            return [np.array([i]) for i in range(n)]
        return [np.flatnonzero(np.arange(n) % self.MAX_LOO == f) for f in range(self.MAX_LOO)]

    def _joint_loo(self, x: np.ndarray, y: np.ndarray, prec: np.ndarray, mu: float) -> np.ndarray:
        out = np.full(len(y), np.nan)
        g = self._groups(x.shape[1])
        for idx in self._held_out(len(y)):
            keep = np.ones(len(y), bool)
            keep[idx] = False
            if not (prec[keep] == self._base).any():
                continue
            w, s = self._joint(x[keep], y[keep], prec[keep], mu)
            for i in idx:
                out[i] = x[i] @ (w * s[prec[i]][g]) if prec[i] in s else np.nan
        return out

    def _own_loo(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.full(len(y), np.nan)
        for idx in self._held_out(len(y)):
            keep = np.ones(len(y), bool)
            keep[idx] = False
            out[idx] = x[idx] @ _nnls(x[keep], y[keep])
        return out

    def fit(self, feats: dict[str, list[np.ndarray]], p50: dict[str, list[float]],
            pct: dict[str, list[float]] | None = None) -> "LatencyPredictor":
        """feats / p50 / pct: per precision, the feature rows, the measured p50 and the measured latency at the
        target's percentile (ms; None: the p50 itself, a tail ratio of 1)."""
        self.models, self.scales, self.borrowed, self.own, self.tails, self.loo_p50 = {}, {}, {}, set(), {}, {}
        self.loo_rel_err_p50, self.loo_rel_err = [], []
        self._base = base = max(p50, key=lambda k: len(p50[k])) if any(len(v) for v in p50.values()) else None
        if base is None:
            return self
        ys = {p: np.asarray(v, dtype=float) for p, v in p50.items()}
        k = len(feats[base][0])
        xs = {p: np.asarray(feats[p], dtype=float).reshape(len(ys[p]), k) for p in ys}
        had = [p for p in ys if len(ys[p])]
        x, y = np.vstack([xs[p] for p in had]), np.concatenate([ys[p] for p in had])
        prec = np.concatenate([[p] * len(ys[p]) for p in had])
        if self.w_ridge_fixed is not None or self.kinds is None or len(y) > self.MAX_LOO:
            mu = self.w_ridge_fixed if self.w_ridge_fixed is not None else self.W_RIDGE if self.kinds else 0.0
            tried = {mu: self._joint_loo(x, y, prec, mu)}
        else:
            tried = {mu: self._joint_loo(x, y, prec, mu) for mu in self.W_RIDGES}
        self.w_ridge = mu = min(tried, key=lambda v: _mean_rel(tried[v], y))  # min keeps the first of ties
        loo = tried[mu]
        w, s = self._joint(x, y, prec, mu)
        g = self._groups(k)
        for p in ys:
            self.scales[p] = s.get(p, np.ones(int(g.max()) + 1))
            self.models[p] = w * self.scales[p][g]
            self.loo_p50[p] = loo[prec == p]
            if p != base:
                self.borrowed[p] = (base, float(np.median(ys[p] / np.maximum(xs[p] @ w, 1e-9))) if len(ys[p])
                                    else 1.0)
            if len(ys[p]) >= self.min_points and len(had) > 1:
                own = self._own_loo(xs[p], ys[p])
                if _mean_rel(own, ys[p]) < _mean_rel(self.loo_p50[p], ys[p]):  # it predicts its own points better
                    self.models[p], self.loo_p50[p] = _nnls(xs[p], ys[p]), own
                    self.own.add(p)
                    self.borrowed.pop(p, None)
        self._fit_tails(ys, {p: np.asarray(pct[p], dtype=float) for p in ys} if pct else ys)
        return self

    def _fit_tails(self, p50: dict[str, np.ndarray], pct: dict[str, np.ndarray]) -> None:
        """Tail ratios, and the held-out errors at p50 and at the percentile."""
        ratios = {p: pct[p] / p50[p] for p in p50}
        every = np.concatenate([r for r in ratios.values()]) if ratios else np.ones(0)
        pooled = float(np.median(every)) if len(every) else 1.0
        for p, r in ratios.items():
            self.tails[p] = float(np.median(r)) if len(r) else pooled
            loo = self.loo_p50.get(p)
            for i in range(len(r) if loo is not None else 0):
                if np.isnan(loo[i]):
                    continue
                self.loo_rel_err_p50.append(float(abs(loo[i] - p50[p][i]) / p50[p][i]))
                # the tail ratio without point i: its own precision's, else the pooled one
                rest = np.delete(r, i) if len(r) > 1 else np.delete(every, np.flatnonzero(every == r[i])[:1])
                tail = float(np.median(rest)) if len(rest) else 1.0
                self.loo_rel_err.append(float(abs(loo[i] * tail - pct[p][i]) / pct[p][i]))
        self._pooled_tail = pooled

    # ---------------------------------------------------------------------------------------------- predicting
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
        """Relative error at the percentile not exceeded by a fraction q of held-out predictions (clipped to
        [floor, cap])."""
        if not self.loo_rel_err:
            return cap
        return float(np.clip(np.quantile(self.loo_rel_err, q), floor, cap))

    def summary(self) -> dict:
        """Held-out error at p50 and at the percentile (median, share within +-10%), the tail ratios."""
        out = {}
        for stat, err in (("p50", self.loo_rel_err_p50), (f"p{self.percentile}", self.loo_rel_err)):
            e = np.asarray(err)
            out[f"loo_rel_err_median_{stat}"] = round(float(np.median(e)), 4) if len(e) else None
            out[f"loo_within_10pct_{stat}"] = round(float(np.mean(e <= 0.10)), 4) if len(e) else None
        out["tail_ratio"] = {p: round(v, 4) for p, v in self.tails.items()}
        return out


def _nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative weights minimising the relative error of x w against y."""
    w, _ = nnls(x / y[:, None], np.ones(len(y)), maxiter=50 * x.shape[1])
    return w


def _mean_rel(pred: np.ndarray, y: np.ndarray) -> float:
    ok = ~np.isnan(pred)
    return float(np.mean(np.abs(pred[ok] - y[ok]) / y[ok])) if ok.any() else 0.0
