"""`edgedet search`: AP x latency on a target's devices, predict then verify, compiled Pareto front.

1. candidates = subnets of the space x the target's precisions; AP of subnets from the shared evaluator (cached in
   the store, torch fp32); latency from measurements (store) or the predictor.
2. initial design: subnets spread over FLOPs at the best-covered precision, smallest/largest at the others.
3. rounds: fit the predictor; NSGA-II (Optuna) proposes over the estimates; candidates on or near the estimated
   front (within the predictor's leave-one-out error) that are not measured yet are compiled and measured, with
   the AP of each compiled artifact; until no unmeasured candidate is near the front or the budget is spent.
4. the front of the measured points (under the latency budget) is kept: artifacts, runtime modules, manifest.json,
   pareto.png, report.html.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..backends.base import Artifact, Unsupported, sha256
from ..config import SubnetConfig, TargetSpec, load_space, load_target, resolve_target
from ..errors import ConfigError, EdgedetError
from .pareto import dominates, front, hypervolume
from .space import Candidate, candidates, features
from .store import Store, sqlite_url

Say = Callable[[str], None]


class SearchStopped(EdgedetError):
    """The search could not go on (every device lost); what completed is in the store: --resume continues."""


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
class Ctx:
    net: object
    target: TargetSpec
    target_path: Path
    dataset: object
    store: Store
    fp: str
    runtime_version: str
    acc_key: str
    out: Path
    say: Say
    progress: Callable | None
    devices: list = field(default_factory=list)
    space_subnets: list = field(default_factory=list)
    predictor: object = None
    feats: dict = field(default_factory=dict)


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(bytes.fromhex(sha256(p)))
    return h.hexdigest()


def _dataset_sha(ds) -> str:
    base = getattr(ds, "dataset", ds)
    names = {im["file_name"] for im in ds.images}
    files = [base.root / base.split / n for n in names] if hasattr(base, "root") else []
    ann = [Path(base.ann_file)] if getattr(base, "ann_file", None) else []
    return _digest(ann + files)


def _fingerprint(t: TargetSpec, info: dict, runtime_version: str) -> str:
    """Same device kind + runtime + settings -> same fingerprint (host names left out: a pool shares it)."""
    dev = {k: info.get(k) for k in ("cpu", "cores", "machine", "memory_gb", "gpu", "power_mode")}
    key = {"backend": t.backend, "runtime": t.runtime.model_dump(), "benchmark": t.benchmark.model_dump(),
           "device": dev, "runtime_version": runtime_version}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------- accuracy
def torch_ap(ctx: Ctx, subnets: list[SubnetConfig]) -> dict[str, dict]:
    """AP metrics of subnets (fp32 torch), from the store or the shared evaluator (new ones evaluated together)."""
    from ..evaluate import evaluate_subnets

    have = ctx.store.accuracy(ctx.acc_key)
    todo = {s.id: s for s in subnets if s.id not in have}
    # a (patch, resolution, windows) group costs one backbone pass whatever its depths and query counts, so the
    # whole group of the space is evaluated the first time any of it is asked for
    groups = {(s.patch, s.resolution, s.windows) for s in todo.values()}
    todo.update({s.id: s for s in ctx.space_subnets if (s.patch, s.resolution, s.windows) in groups
                 and s.id not in have})
    todo = list(todo.values())
    if todo:
        t0 = time.perf_counter()
        res = evaluate_subnets(ctx.net, todo, ctx.dataset, progress=ctx.progress and ctx.progress("AP", todo))
        ctx.store.put_accuracy(ctx.acc_key, res)
        ctx.say(f"AP of {len(todo)} subnets on {len(ctx.dataset)} images in {time.perf_counter() - t0:.0f} s")
        have.update(res)
    return {s.id: have[s.id] for s in subnets}


# ------------------------------------------------------------------------------------------------- latency
def _measured(ctx: Ctx) -> dict[str, dict]:
    return {f"{m['subnet']}@{m['precision']}": m for m in ctx.store.measurements(ctx.fp, ctx.runtime_version)}


def measure(ctx: Ctx, cands: list[Candidate]) -> None:
    """Compile each candidate (here, one at a time), measure it on the target's devices (in parallel over a pool),
    take the AP of the compiled artifact, and store every result as it completes."""
    from ..backends import get_backend
    from ..deploy import compile_subnet
    from ..devices import DeviceError, DevicePool

    done = _measured(ctx)
    cands = [c for c in cands if c.id not in done]
    arts: dict[str, Artifact] = {}
    for i, c in enumerate(cands):
        ctx.say(f"compile {c.id} ({i + 1}/{len(cands)})")
        t0 = time.perf_counter()
        try:
            arts[c.id] = compile_subnet(ctx.net, c.subnet, ctx.target_path, c.precision,
                                        ctx.out / "work" / c.id, runtime=())
        except Unsupported as e:
            ctx.store.put_measurement(ctx.fp, c.subnet.id, c.precision, ctx.runtime_version, str(e))
            ctx.say(f"  {c.id}: {e}")
        except (RuntimeError, ValueError) as e:  # a runtime's own failure: recorded, the search goes on
            msg = f"error: compile failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ctx.store.put_measurement(ctx.fp, c.subnet.id, c.precision, ctx.runtime_version, msg)
            ctx.say(f"  {c.id}: {msg}")
        else:
            arts[c.id].metadata["compile_wall_s"] = round(time.perf_counter() - t0, 2)
    if not arts:
        return
    by_id = {c.id: c for c in cands}

    def job(dev, cid):
        art = dev.prepare(arts[cid], ctx.target)
        return dev.measure(art, ctx.target)

    pct = ctx.target.latency.percentile
    backend = get_backend(ctx.target.backend)
    local_ok = backend.caps.runs_on_host and backend.available() is None
    lost, pool = None, DevicePool(ctx.devices)
    for cid, res, dev in pool.run(list(arts), job):
        c, art = by_id[cid], arts[cid]
        if isinstance(res, DeviceError):
            lost = res  # not stored: measured again on resume
            ctx.say(f"  {cid}: device {dev} lost ({res})")
            continue
        if isinstance(res, Unsupported):
            ctx.store.put_measurement(ctx.fp, c.subnet.id, c.precision, ctx.runtime_version, str(res), device=dev)
            ctx.say(f"  {cid}: {res}")
            continue
        if isinstance(res, BaseException):
            msg = f"error: {type(res).__name__}: {str(res).splitlines()[0] if str(res) else ''}"
            ctx.store.put_measurement(ctx.fp, c.subnet.id, c.precision, ctx.runtime_version, msg, device=dev)
            ctx.say(f"  {cid}: {msg}")
            continue
        # latency first (nothing else runs on this machine while a local device measures); AP after the pool
        ctx.store.put_measurement(ctx.fp, c.subnet.id, c.precision, ctx.runtime_version, "ok",
                                  latency_ms=res.percentile(pct), record=res.to_dict(),
                                  ap_source=PENDING if local_ok else "torch", device=dev,
                                  compile_s=art.metadata.get("compile_wall_s"))
        ctx.say(f"  {cid}: p{pct} {res.percentile(pct):.2f} ms [{dev}]")
    fill_artifact_ap(ctx)
    if lost is not None and len(pool.dead) == len(ctx.devices):
        raise SearchStopped(f"every device of target {ctx.target.name} was lost ({lost}); completed measurements "
                            f"are kept in {ctx.store.url}: run the same command with --resume")


MAX_BATCH = 4  # measurements per round at most (fewer: more rounds, each refitting on the last's results)
PENDING = "pending"  # ap_source of a measured row whose artifact AP is not taken yet


def fill_artifact_ap(ctx: Ctx) -> None:
    """AP of the compiled artifact for every measured row still pending (after a kill, the artifact is compiled
    again when its work folder is gone: compiling is deterministic, and the latency is not measured again)."""
    from ..backends import get_backend
    from ..deploy import compile_subnet, runtime_options
    from ..evaluate import evaluate_runner

    for key, m in _measured(ctx).items():
        if m["status"] != "ok" or m["ap_source"] != PENDING:
            continue
        work = ctx.out / "work" / key
        art = Artifact.open(work) if (work / "artifact.json").is_file() else None
        if art is None or art.verify():
            art = compile_subnet(ctx.net, m["subnet"], ctx.target_path, m["precision"], work, runtime=())
        runner = get_backend(art.backend).load(art, runtime_options(ctx.target))
        ap = evaluate_runner(runner.infer, art.resolution, ctx.dataset, batch_size=1)
        ctx.store.set_ap(ctx.fp, m["subnet"], m["precision"], ctx.runtime_version, ap, "artifact")
        ctx.say(f"  {key}: AP {ap['AP']:.3f} (from the artifact)")


# ------------------------------------------------------------------------------------------------- estimates
def fit_predictor(ctx: Ctx):
    from .predictor import LatencyPredictor

    feats, lat = {}, {}
    for m in _measured(ctx).values():
        if m["status"] == "ok":
            s = SubnetConfig.parse(m["subnet"])
            feats.setdefault(m["precision"], []).append(_feat(ctx, s))
            lat.setdefault(m["precision"], []).append(m["latency_ms"])
    ctx.predictor = LatencyPredictor().fit(feats, lat) if lat else None
    return ctx.predictor


def _feat(ctx: Ctx, s: SubnetConfig) -> np.ndarray:
    if s.id not in ctx.feats:
        ctx.feats[s.id] = features(ctx.net.cfg, s)
    return ctx.feats[s.id]


def ap_drops(ctx: Ctx, measured: dict[str, dict], tap: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """Per precision over its measured artifacts: the median of (torch AP - artifact AP), and how far 90% of them
    stay from that median (the AP uncertainty of an unmeasured candidate at that precision; quantisation moves
    each subnet's AP its own way)."""
    drops: dict[str, list[float]] = {}
    for m in measured.values():
        if m["status"] == "ok" and m["ap"] and m["subnet"] in tap:
            drops.setdefault(m["precision"], []).append(tap[m["subnet"]]["AP"] - m["ap"]["AP"])
    out = {}
    for p, v in drops.items():
        med = float(np.median(v))
        out[p] = (med, float(np.quantile(np.abs(np.asarray(v) - med), 0.9)) if len(v) >= 3 else 0.0)
    return out


def estimates(ctx: Ctx, cands: list[Candidate]) -> list[Estimate]:
    measured = _measured(ctx)
    tap = torch_ap(ctx, [c.subnet for c in cands])
    drop = ap_drops(ctx, measured, tap)
    out = []
    for c in cands:
        m = measured.get(c.id)
        if m is not None and m["status"] != "ok":
            continue  # unsupported / failed: not a candidate
        if m is not None:
            out.append(Estimate(c, (m["ap"] or tap[c.subnet.id])["AP"], m["latency_ms"], True))
        elif ctx.predictor is not None:
            med, spread = drop.get(c.precision, (0.0, 0.0))
            ap = tap[c.subnet.id]["AP"] - med
            out.append(Estimate(c, ap, ctx.predictor.predict(_feat(ctx, c.subnet), c.precision), False, ap + spread))
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
    the smallest and the largest by FLOPs) at the first precision, and the first n_other of them at each other
    precision (pairs of the same subnet give its per-term ratios). `seed` breaks FLOPs ties."""
    from ..model.cost import subnet_cost
    from .space import d_optimal

    rng = random.Random(seed)
    order = sorted(subs, key=lambda s: (subnet_cost(cfg, s).flops, rng.random()))
    idx = d_optimal(np.stack([features(cfg, s) for s in order]), n, first=[0, len(order) - 1])
    out = [Candidate(order[i], precisions[0]) for i in idx]
    for p in precisions[1:]:
        out += [Candidate(order[i], p) for i in idx[:n_other]]
    return out


def explore(ctx: Ctx, sp, cands: list[Candidate], budget: int, generations: int = 6, population: int = 24,
            seed: int = 0) -> tuple[list[Estimate], int, str]:
    """Initial design, then rounds of predict-then-verify until the front is stable or `budget` measurements of
    `cands` are spent. Returns the final estimates of every candidate seen, the number of rounds and why it
    stopped. Measurements go through the module's `measure` (a benchmark replays stored ones through it)."""
    from .strategy import run_nsga2

    t, say = ctx.target, ctx.say
    by_id = {c.id: c for c in cands}
    subs = list({c.subnet.id: c.subnet for c in cands}.values())

    def spent() -> int:
        return sum(1 for k in _measured(ctx) if k in by_id)

    n = max(6, min(budget // 3, 8))
    init = initial_design(ctx.net.cfg, subs, list(t.precisions), n, max(2, min(n // 2, budget // 6)), seed)
    done = _measured(ctx)  # on --resume: the initial design's measured part is not counted twice
    measure(ctx, [c for c in init if c.id not in done][:max(0, budget - spent())])
    seen: dict[str, Candidate] = {c.id: c for c in init}
    rounds, stop = 0, "budget spent"
    knobs = {"patch": sp.patch, "resolution": sp.resolution, "windows": sp.windows, "dec_layers": sp.dec_layers,
             "queries": sp.queries, "precision": list(t.precisions)}
    while True:
        fit_predictor(ctx)
        if ctx.predictor is None:
            stop = "nothing measurable"
            break

        def score(params: list[dict]) -> list:
            cs = [by_id.get(f"p{p['patch']}-r{p['resolution']}-w{p['windows']}-d{p['dec_layers']}"
                            f"-q{p['queries']}@{p['precision']}") for p in params]
            valid = [c for c in cs if c is not None]
            est = {e.cand.id: e for e in estimates(ctx, valid)}
            for c in valid:
                seen[c.id] = c
            return [(est[c.id].ap, est[c.id].latency_ms) if c is not None and c.id in est else None for c in cs]

        ests = estimates(ctx, list(seen.values()))
        seeds = [_knobs(ests[i].cand) for i in front([(x.ap, x.latency_ms) for x in ests])]
        run_nsga2(ctx.store.url, f"{ctx.fp}-{ctx.acc_key[:8]}-{_space_key(sp, t)}-round{rounds}", knobs, score,
                  generations, population, seed + rounds, seeds)
        rounds += 1
        ests = estimates(ctx, list(seen.values()))
        margin = ctx.predictor.margin()
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
        say(f"round {rounds}: {len(todo)} unmeasured candidates near the front (predictor margin {margin:.0%}); "
            f"measuring {len(take)}")
        measure(ctx, [e.cand for e in take])
        if rounds >= 12:
            stop = "round limit"
            break
    fit_predictor(ctx)
    return estimates(ctx, list(seen.values())), rounds, stop


# ------------------------------------------------------------------------------------------------- main
def search(target: str | Path, checkpoint: str | Path | None = None, data: str | Path | None = None,
           space: str | Path | None = None, out: str | Path = "runs/search/run", max_measurements: int | None = None,
           resume: bool = False, storage: str | None = None, val_images: int | None = None,
           generations: int = 6, population: int = 24, seed: int = 0, runtime: tuple[str, ...] = ("python", "cpp"),
           say: Say = print, progress=None) -> dict:
    """Run a search; returns the manifest (also written to OUT/manifest.json). See the module docstring."""
    from ..api import load_supernet
    from ..data.coco import CocoDetection
    from ..data.demo import demo_checkpoint, demo_data
    from ..devices import open_devices
    from ..evaluate import Subset
    from ..deploy import check_runtimes
    from .report import finish

    t0 = time.time()
    runtime = check_runtimes(runtime)
    tpath = resolve_target(target)
    t = load_target(tpath)
    out = Path(out)
    db = out / "search.db"
    if not resume and (db.exists() or (out / "manifest.json").exists()):
        raise ConfigError(f"{out}: a search is already there; pass --resume to continue it, or choose another -o")
    out.mkdir(parents=True, exist_ok=True)
    ck = Path(checkpoint) if checkpoint else demo_checkpoint()
    net = load_supernet(ck)
    sp = load_space(space, net.cfg)
    cands = candidates(sp, net.cfg, t)
    if not cands:
        raise ConfigError(f"{space or 'space'}: no subnet fits target {t.name} (max_resolution {t.max_resolution})")
    root = Path(data) if data else demo_data()
    ds = CocoDetection(root, "valid", labels=net.cfg)  # the model's labels mapped onto the categories
    if val_images:
        ds = Subset(ds, range(min(val_images, len(ds))))
    budget = max_measurements or max(10, math.ceil(0.05 * len(cands)))
    store = Store(storage or sqlite_url(db.resolve()))
    devices = open_devices(t)
    try:
        chk = devices[0].check(t)
        rt = chk.get("runtime_version") or chk["runtimes"].get(t.backend, "")  # "1.31.1", or why it is missing
        if not chk.get("backend_ok"):
            raise ConfigError(f"{tpath}: backend {t.backend} cannot run on {devices[0].name}: {rt}")
        ck_sha, ds_sha = sha256(ck), _dataset_sha(ds)
        ctx = Ctx(net=net, target=t, target_path=tpath, dataset=ds, store=store,
                  fp=_fingerprint(t, chk["info"], rt), runtime_version=rt,
                  acc_key=hashlib.sha256(f"{ck_sha}:{ds_sha}:{len(ds)}".encode()).hexdigest()[:32],
                  out=out, say=say, progress=progress, devices=devices,
                  space_subnets=list({c.subnet.id: c.subnet for c in cands}.values()))
        say(f"search: {len(cands)} candidates ({len(cands) // len(t.precisions)} subnets x {', '.join(t.precisions)})"
            f" on {t.name} [{devices[0].name}{f' +{len(devices) - 1}' if len(devices) > 1 else ''}, "
            f"{t.backend} {rt}], budget {budget} measurements, AP on {len(ds)} images")
        fill_artifact_ap(ctx)  # rows a killed run measured but did not score yet
        prior = _measured(ctx)
        if prior:
            say(f"store: {len(prior)} measurements of this target already done (not repeated)")
        ests, rounds, stop = explore(ctx, sp, cands, budget, generations, population, seed)
        meta = dict(ck=ck, ck_sha=ck_sha, ds_root=root, ds_sha=ds_sha, space=sp, cands=cands, budget=budget,
                    rounds=rounds, stop=stop, info=chk["info"], wall_s=time.time() - t0, generations=generations,
                    population=population, seed=seed, runtime=runtime)
        return finish(ctx, ests, meta)
    finally:
        for d in devices:
            d.close()
        store.close()


def _knobs(c: Candidate) -> dict:
    s = c.subnet
    return {"patch": s.patch, "resolution": s.resolution, "windows": s.windows, "dec_layers": s.dec_layers,
            "queries": s.queries, "precision": c.precision}


def _space_key(sp, t: TargetSpec) -> str:
    return hashlib.sha256(json.dumps([sp.model_dump(), t.precisions], sort_keys=True).encode()).hexdigest()[:8]

