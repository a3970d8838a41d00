"""The search algorithm, decoupled from where its numbers come from (DESIGN style 8): predict, then verify.

explore() reads latency through a Measurer (the device in edgedet search, the exhaustive store in the benchmark's
replay, a fake in unit tests), torch AP through a function, and proposals through a `propose` function (NSGA-II in
Optuna: in memory by default, shared through the store in edgedet search). Given the same measurements, AP and seed
it makes the same choices, which is what lets several processes sharing one store split the work (each computes
the same next batch; search/claims.py hands out its candidates).

1. initial design: a few subnets spread over the cost terms at the first precision (4 for budgets up to 29), the
   smallest of them at every other precision (its ratio to the first; more from budgets of 48 on).
2. rounds: fit the predictor; NSGA-II proposes over the estimates; candidates on or near the estimated front (within
   the predictor's leave-one-out error) that are not measured yet are measured, a few per round, picked by
   hypervolume gain; until no unmeasured candidate is near the front or the budget is spent.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from ..config import SearchSpace, SubnetConfig, SupernetConfig, TargetSpec
from .pareto import dominates, front, hypervolume
from .predictor import LatencyPredictor
from .space import FEATURE_KINDS, Candidate, features
from .store import Measurement

Say = Callable[[str], None]
TorchAP = Callable[[list[SubnetConfig]], dict[str, dict]]  # subnets -> {subnet id: AP metrics of the torch subnet}
MAX_BATCH = 4  # measurements per round at most (fewer: more rounds, each refitting on the last's results)
MAX_ROUNDS = 12


class Measurer(Protocol):
    """Where latencies (and the AP of compiled artifacts) come from."""

    def measured(self) -> dict[str, Measurement]:
        """Every finished measurement known, by candidate id (`p16-r384-w2-d3-q100@int8`)."""

    def measure(self, cands: list[Candidate]) -> dict[str, Measurement]:
        """Measure the candidates not measured yet; -> the measurements of `cands` now known (unsupported and
        failed ones included; a candidate whose device was lost may be missing)."""


class Propose(Protocol):
    def __call__(self, name: str, choices: dict[str, Sequence], score: Callable[[list[dict]], list],
                 generations: int, population: int, seed: int, seeds: Sequence[dict]) -> list[dict]:
        """Run NSGA-II `name` over `choices`, scoring proposals with `score`; -> the params of every completed
        trial, in trial order."""


def propose_in_memory(name, choices, score, generations, population, seed, seeds) -> list[dict]:
    from .strategy import run_nsga2

    return run_nsga2(None, name, choices, score, generations, population, seed, seeds)


@dataclass
class Estimate:
    cand: Candidate
    ap: float  # AP (0.5:0.95) estimate: artifact AP when measured, else torch AP minus the precision's drop
    latency_ms: float
    measured: bool
    ap_hi: float | None = None  # optimistic AP of an unmeasured candidate (AP + the precision's spread of drops)

    @property
    def ap_opt(self) -> float:
        return self.ap if self.ap_hi is None else self.ap_hi


@dataclass
class Exploration:
    """What explore() found: the final estimates of every candidate it saw, why it stopped, the fitted predictor."""

    estimates: list[Estimate]
    rounds: int  # rounds of proposals after the initial design (the same count in CLI, manifest and report)
    stop: str
    predictor: LatencyPredictor | None
    measurements: int  # measurements made by this run (not those found in the store)


@dataclass
class Explorer:
    cfg: SupernetConfig
    target: TargetSpec
    measurer: Measurer
    torch_ap: TorchAP
    propose: Propose = propose_in_memory
    study_prefix: str = "edgedet"
    say: Say = print
    predictor: LatencyPredictor | None = None
    feats: dict = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------------ estimates
    def feat(self, s: SubnetConfig) -> np.ndarray:
        if s.id not in self.feats:
            self.feats[s.id] = features(self.cfg, s)
        return self.feats[s.id]

    def fit_predictor(self) -> LatencyPredictor | None:
        self.predictor = fit_predictor(self.cfg, list(self.measurer.measured().values()),
                                       self.target.latency.percentile, self.feat)
        return self.predictor

    def estimates(self, cands: list[Candidate]) -> list[Estimate]:
        measured = self.measurer.measured()
        tap = self.torch_ap([c.subnet for c in cands])
        drop = ap_drops(measured, tap)
        out = []
        for c in cands:
            m = measured.get(c.id)
            if m is not None and not m.ok:
                continue  # unsupported / failed: not a candidate
            if m is not None:
                out.append(Estimate(c, (m.ap or tap[c.subnet.id])["AP"], m.latency_ms, True))
            elif self.predictor is not None:
                med, spread = drop.get(c.precision, (0.0, 0.0))
                ap = tap[c.subnet.id]["AP"] - med
                out.append(Estimate(c, ap, self.predictor.predict(self.feat(c.subnet), c.precision), False,
                                    ap + spread))
        return out

    # ---------------------------------------------------------------------------------------------------- run
    def run(self, space: SearchSpace, cands: list[Candidate], budget: int, generations: int = 6,
            population: int = 24, seed: int = 0) -> Exploration:
        """Initial design, then rounds of predict-then-verify until the front is stable or `budget` measurements
        of `cands` are spent (measurements already in the store count)."""
        t = self.target
        by_id = {c.id: c for c in cands}
        subs = list({c.subnet.id: c.subnet for c in cands}.values())
        before = set(self.measurer.measured())

        def spent() -> int:
            return sum(1 for k in self.measurer.measured() if k in by_id)

        n = max(4, min(budget // 6, 8))  # small: the pooled cost model needs few points, the front needs the rest
        init = initial_design(self.cfg, subs, list(t.precisions), n, max(1, min(n // 4, budget // 24)), seed)
        done = self.measurer.measured()  # on --resume: the initial design's measured part is not counted twice
        self.measurer.measure([c for c in init if c.id not in done][:max(0, budget - spent())])
        seen: dict[str, Candidate] = {c.id: c for c in init}
        rounds, proposals, stop = 0, 0, "budget spent"  # rounds: those that measured (the CLI's "round N:" lines)
        knobs = {"patch": space.patch, "resolution": space.resolution, "windows": space.windows,
                 "dec_layers": space.dec_layers, "queries": space.queries, "precision": list(t.precisions)}
        while True:
            if self.fit_predictor() is None:
                stop = "nothing measurable"
                break

            def score(params: list[dict]) -> list:
                cs = [by_id.get(_cand_id(p)) for p in params]
                valid = [c for c in cs if c is not None]
                est = {e.cand.id: e for e in self.estimates(valid)}
                return [(est[c.id].ap, est[c.id].latency_ms) if c is not None and c.id in est else None for c in cs]

            ests = self.estimates(list(seen.values()))
            seeds = [_knobs(ests[i].cand) for i in front([(x.ap, x.latency_ms) for x in ests])]
            trials = self.propose(f"{self.study_prefix}-round{proposals}", knobs, score, generations, population,
                                  seed + proposals, seeds)
            for p in trials:  # every process sharing the store sees the same trials, in the same order
                c = by_id.get(_cand_id(p))
                if c is not None:
                    seen.setdefault(c.id, c)
            proposals += 1
            ests = self.estimates(list(seen.values()))
            margin = self.predictor.margin()
            todo = near_front(ests, margin, t.latency.budget_ms)
            left = budget - spent()
            if not todo:
                stop = "front stable (no unmeasured candidate near the front)"
                break
            if left <= 0:
                break
            k = min(left, max(2, min(math.ceil(left / 2), MAX_BATCH)))
            ref = t.latency.budget_ms or max(e.latency_ms for e in ests) * 1.0001
            take = pick(todo, ests, k, margin, ref)
            rounds += 1
            self.say(f"round {rounds}: {len(todo)} unmeasured candidates near the front (predictor margin "
                     f"{margin:.0%}); measuring {len(take)}")
            self.measurer.measure([e.cand for e in take])
            if proposals >= MAX_ROUNDS:
                stop = "round limit"
                break
        self.fit_predictor()
        made = len(set(self.measurer.measured()) - before)
        return Exploration(self.estimates(list(seen.values())), rounds, stop, self.predictor, made)


# ------------------------------------------------------------------------------------------------- choices
def fit_predictor(cfg: SupernetConfig, rows: list[Measurement], percentile: int,
                  feat: Callable[[SubnetConfig], np.ndarray] | None = None) -> LatencyPredictor | None:
    """The latency predictor (predictor.py: p50 model and tail ratios) fitted on every ok row; None without one."""
    feat = feat or (lambda s: features(cfg, s))
    feats, p50, pct = {}, {}, {}
    for m in rows:
        if m.ok:
            feats.setdefault(m.precision, []).append(feat(SubnetConfig.parse(m.subnet)))
            p50.setdefault(m.precision, []).append(p50_of(m))
            pct.setdefault(m.precision, []).append(m.latency_ms)
    return LatencyPredictor(percentile, kinds=FEATURE_KINDS).fit(feats, p50, pct) if p50 else None


def p50_of(m: Measurement) -> float:
    """The p50 of a measurement (its record's; the latency itself for a record-less one)."""
    v = (m.record or {}).get("p50_ms")
    return float(v) if isinstance(v, (int, float)) and v > 0 else m.latency_ms


def ap_drops(measured: dict[str, Measurement], tap: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """Per precision over its measured artifacts: the median of (torch AP - artifact AP), and how far 90% of them
    stay from that median (the AP uncertainty of an unmeasured candidate at that precision; quantisation moves
    each subnet's AP its own way)."""
    drops: dict[str, list[float]] = {}
    for m in measured.values():
        if m.ok and m.ap and m.subnet in tap:
            drops.setdefault(m.precision, []).append(tap[m.subnet]["AP"] - m.ap["AP"])
    out = {}
    for p, v in drops.items():
        med = float(np.median(v))
        out[p] = (med, float(np.quantile(np.abs(np.asarray(v) - med), 0.9)) if len(v) >= 3 else 0.0)
    return out


def near_front(ests: list[Estimate], margin: float, budget_ms: float | None) -> list[Estimate]:
    """Unmeasured estimates that could be on the front if their latency were `margin` lower and their AP at its
    optimistic value, ordered on-front first, then by AP descending."""
    pts = [(e.ap, e.latency_ms) for e in ests]
    on = set(front(pts))
    out = []
    for i, e in enumerate(ests):
        if e.measured:
            continue
        opt = (e.ap_opt, e.latency_ms * (1 - margin))
        if budget_ms and opt[1] > budget_ms:
            continue
        if not any(dominates(p, opt) for j, p in enumerate(pts) if j != i):
            out.append(e)
    pos = {id(e): i for i, e in enumerate(ests)}
    return sorted(out, key=lambda e: (pos[id(e)] not in on, -e.ap))


def pick(todo: list[Estimate], ests: list[Estimate], k: int, margin: float, ref_ms: float) -> list[Estimate]:
    """k of the near-front candidates, greedily: each step the one whose optimistic point (latency `margin` lower,
    AP at its optimistic value) adds the most hypervolume to the front of the measured points and of those picked
    before it (believed at their estimates); ties by the gain at the estimate itself. Spends a batch where the
    front can gain most, rather than on high-AP candidates only."""
    have = [(e.ap, e.latency_ms) for e in ests if e.measured]
    left, out = list(todo), []
    while left and len(out) < k:
        hv0 = hypervolume(have, ref_ms)
        gain = [(hypervolume(have + [(e.ap_opt, e.latency_ms * (1 - margin))], ref_ms) - hv0,
                 hypervolume(have + [(e.ap, e.latency_ms)], ref_ms) - hv0) for e in left]
        i = max(range(len(left)), key=lambda j: gain[j])
        e = left.pop(i)
        out.append(e)
        have.append((e.ap, e.latency_ms))
    return out


def initial_design(cfg, subs: list[SubnetConfig], precisions: list[str], n: int, n_other: int,
                   seed: int = 0) -> list[Candidate]:
    """n subnets chosen to pin the latency model's terms (greedy D-optimal over their cost features, starting from
    the smallest and the largest by FLOPs) at the first precision, and the first n_other of them (the smallest first)
    at each other precision: the same subnet at two precisions gives their ratio, from which the pooled cost model
    starts. `seed` breaks FLOPs ties."""
    from ..model.cost import subnet_cost
    from .space import d_optimal

    rng = random.Random(seed)
    order = sorted(subs, key=lambda s: (subnet_cost(cfg, s).flops, rng.random()))
    idx = d_optimal(np.stack([features(cfg, s) for s in order]), n, first=[0, len(order) - 1])
    out = [Candidate(order[i], precisions[0]) for i in idx]
    for p in precisions[1:]:
        out += [Candidate(order[i], p) for i in idx[:n_other]]
    return out


def _cand_id(p: dict) -> str:
    g = p.get
    return f"p{g('patch')}-r{g('resolution')}-w{g('windows')}-d{g('dec_layers')}-q{g('queries')}@{g('precision')}"


def _knobs(c: Candidate) -> dict:
    s = c.subnet
    return {"patch": s.patch, "resolution": s.resolution, "windows": s.windows, "dec_layers": s.dec_layers,
            "queries": s.queries, "precision": c.precision}
