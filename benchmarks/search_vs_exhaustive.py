"""Search vs exhaustive measurement on one space (>= 500 candidates) of the demo supernet on the local CPU target.

1. `edgedet search` on the space with its default budget (5% of the candidates): its measured front.
2. Exhaustive: every candidate compiled and measured the same way (same target, benchmark settings, AP of each
   artifact), into its own store (resumable: rerun the script and it continues).
3. Prints: share of candidates the search measured, hypervolume of the search's front / hypervolume of the
   exhaustive front (same reference point: AP 0, the exhaustive maximum latency), and the predictor's share of
   held-out subnets within +-10% of measured (fitted on the search's measurements, tested on every exhaustive
   measurement the search did not make).

4. With the exhaustive side complete, the search algorithm replayed K times (seeds 0..K-1, --replay) with every
   measurement taken from the exhaustive store: the same figures free of the noise between two measurements of one
   candidate, and their spread over seeds.

Both sides measure on the same machine; latency noise on a shared machine moves both.
    python benchmarks/search_vs_exhaustive.py [--out runs/bench/search_vs_exhaustive] [--val-images 50] [--replay 20]
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# patch 12 left out to keep the exhaustive side affordable on 2 cores (its subnets take 40-270 ms per run here)
SPACE = ("# 2 x 3 x 2 x 4 x 6 = 288 subnets x (fp32, int8) = 576 candidates\n"
         "patch: [16, 24]\nresolution: [192, 288, 384]\nwindows: [1, 2]\ndec_layers: [0, 1, 2, 3]\n"
         "queries: [10, 25, 40, 50, 75, 100]\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs/bench/search_vs_exhaustive")
    ap.add_argument("--val-images", type=int, default=50)
    ap.add_argument("--skip-exhaustive", action="store_true", help="only the search (and its figures so far)")
    ap.add_argument("--replay", type=int, default=20, metavar="K",
                    help="also replay the search K times (seeds 0..K-1) over the exhaustive measurements (default 20)")
    args = ap.parse_args()

    from edgedet.api import load_supernet
    from edgedet.config import load_space
    from edgedet.data.demo import demo_checkpoint
    from edgedet.search import search
    from edgedet.search.pareto import front, hypervolume
    from edgedet.search.predictor import LatencyPredictor
    from edgedet.search.claims import Claims
    from edgedet.search.measure import DeviceMeasurer
    from edgedet.search.run import fingerprint
    from edgedet.search.space import candidates, features
    from edgedet.search.store import Store, sqlite_url

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    space = out / "space.yaml"
    space.write_text(SPACE)
    # targets/local_cpu.yaml with a lighter calibration (16 images) and benchmark (30 runs, >= 0.5 s), so that
    # measuring all 576 candidates fits in about an hour here; the search and the exhaustive run share it
    import yaml

    spec = yaml.safe_load((ROOT / "targets/local_cpu.yaml").read_text())
    spec["benchmark"] = {"warmup": 5, "runs": 30, "min_duration_s": 0.5}
    spec["calibration"] = "calib.yaml"
    (out / "calib.yaml").write_text("dataset: demo\nsplit: train\nimages: 16\nseed: 0\n")
    target = out / "target.yaml"
    target.write_text(yaml.safe_dump(spec, sort_keys=False))

    t0 = time.time()
    man = search(target, space=space, out=out / "search", resume=True, val_images=args.val_images,
                 say=lambda m: print(m, flush=True))
    t_search = time.time() - t0
    n = man["search"]["candidates"]
    print(f"search: {man['search']['measured']}/{n} measured, {len(man['front'])} front points, {t_search:.0f} s")

    # exhaustive: the same measurer as the search's, its own store, every candidate
    from edgedet.config import load_target
    from edgedet.data.coco import CocoDetection
    from edgedet.data.demo import demo_data
    from edgedet.devices import open_devices
    from edgedet.evaluate import Subset

    net = load_supernet(demo_checkpoint())
    t = load_target(target)
    cands = candidates(load_space(space, net.cfg), net.cfg, t)
    ds = Subset(CocoDetection(demo_data(), "valid"), range(args.val_images))
    devices = open_devices(t)
    chk = devices[0].check(t)
    rt = chk["runtimes"][t.backend]
    store = Store(sqlite_url(out / "exhaustive.db"))
    measurer = DeviceMeasurer(net, t, target, ds, store, fingerprint(t, chk["info"], rt), rt,
                              out / "exhaustive" / "work", devices, Claims(store, "exhaustive"), say=lambda m: None)
    done = set(measurer.measured())
    todo = [c for c in cands if c.id not in done]
    random.Random(0).shuffle(todo)  # a partial exhaustive run is a uniform sample of the space
    t1 = time.time()
    if not args.skip_exhaustive:
        for i in range(0, len(todo), 8):
            measurer.measure(todo[i:i + 8])
            k = len(done) + min(i + 8, len(todo))
            el = time.time() - t1
            print(f"exhaustive: {k}/{len(cands)} measured, {el / 60:.1f} min "
                  f"(~{el / max(k - len(done), 1) * (len(cands) - k) / 60:.0f} min left)", flush=True)
    ex = {k: m for k, m in measurer.measured().items() if m.ok and m.ap}  # scored (a killed batch leaves pending)
    complete = len(ex) >= len(cands)
    if not complete:
        print(f"EXHAUSTIVE INCOMPLETE ({len(ex)}/{len(cands)}, a uniform sample): the hypervolume ratio below is "
              f"against the sample's front (an upper bound of the true ratio); rerun to continue")
    if not ex:
        return
    # hypervolume: the search's front (its own measurements) vs the exhaustive front, same reference
    ex_pts = [(m.ap["AP"], m.latency_ms) for m in ex.values()]
    ref = max(p[1] for p in ex_pts) * 1.0001
    hv_ex = hypervolume([ex_pts[i] for i in front(ex_pts)], ref)
    s_pts = [(p["ap"]["AP"], p["latency_ms"]) for p in man["front"]]
    hv_s = hypervolume(s_pts, ref)
    # the same front re-scored with the exhaustive run's measurements of the same candidates (removes the noise
    # between the two measurements of one candidate)
    s_ex = [(ex[p["id"]].ap["AP"], ex[p["id"]].latency_ms) for p in man["front"] if p["id"] in ex]
    hv_s_ex = hypervolume(s_ex, ref)
    # predictor on held-out subnets: fitted on the search's measurements
    smeas = [p for p in man["points"] if p["status"] == "ok"]
    feats, lat = {}, {}
    from edgedet.config import SubnetConfig

    for p in smeas:
        feats.setdefault(p["precision"], []).append(features(net.cfg, SubnetConfig.parse(p["subnet"])))
        lat.setdefault(p["precision"], []).append(p["latency_ms"])
    pred = LatencyPredictor().fit(feats, lat)
    sids = {p["id"] for p in smeas}
    held = [(k, m) for k, m in ex.items() if k not in sids]
    rel = np.array([abs(pred.predict(features(net.cfg, SubnetConfig.parse(m.subnet)), m.precision)
                        - m.latency_ms) / m.latency_ms for k, m in held])
    per_prec = {pr: float(np.mean([r <= 0.10 for (k, m), r in zip(held, rel) if m.precision == pr]))
                for pr in t.precisions}
    # noise floor: the same candidates measured twice (search run vs exhaustive run)
    twice = [abs(p["latency_ms"] - ex[p["id"]].latency_ms) / ex[p["id"]].latency_ms for p in smeas
             if p["id"] in ex]
    # ceiling: the same model fitted on every exhaustive measurement, scored on them (in-sample), at the target's
    # percentile and at p50 (less noisy): how far the measurements themselves follow the cost terms
    ceiling = {}
    for stat in (f"p{t.latency.percentile}", "p50"):
        fx, ly = {}, {}
        for m in ex.values():
            fx.setdefault(m.precision, []).append(features(net.cfg, SubnetConfig.parse(m.subnet)))
            ly.setdefault(m.precision, []).append(m.record[f"{stat}_ms"])
        hits = []
        for pr_ in fx:
            full = LatencyPredictor().fit({pr_: fx[pr_]}, {pr_: ly[pr_]})
            hits += [abs(full.predict(f, pr_) - y) / y <= 0.10 for f, y in zip(fx[pr_], ly[pr_])]
        ceiling[stat] = float(np.mean(hits))
    res = {
        "exhaustive_complete": complete, "predictor_in_sample_within_10pct": ceiling,
        "candidates": len(cands), "search_measured": man["search"]["measured"],
        "share_measured": man["search"]["measured"] / len(cands), "search_wall_s": round(t_search, 1),
        "exhaustive_measured": len(ex), "hv_ratio": hv_s / hv_ex, "hv_ratio_rescored": hv_s_ex / hv_ex,
        "predictor_within_10pct": float(np.mean(rel <= 0.10)), "predictor_within_10pct_by_precision": per_prec,
        "predictor_median_rel_err": float(np.median(rel)), "held_out": len(held),
        "remeasure_median_rel_diff": float(np.median(twice)) if twice else None,
        "remeasure_within_10pct": float(np.mean(np.asarray(twice) <= 0.10)) if twice else None,
        "front_search": [p["id"] for p in man["front"]],
        "front_exhaustive": [list(ex)[i] for i in front(ex_pts)],
    }
    (out / "result.json").write_text(json.dumps(res, indent=1))
    print(f"\ncandidates {len(cands)}; search measured {res['search_measured']} ({res['share_measured']:.1%}) "
          f"in {t_search / 60:.1f} min")
    print(f"hypervolume search / exhaustive: {res['hv_ratio']:.3f} (search front as it measured it), "
          f"{res['hv_ratio_rescored']:.3f} (same points, exhaustive run's measurements)")
    print(f"predictor: {res['predictor_within_10pct']:.1%} of {len(held)} held-out candidates within +-10% "
          f"(median error {res['predictor_median_rel_err']:.1%}; by precision {per_prec})")
    print(f"ceiling: the model fitted on all {len(ex)} measurements is within 10% of "
          + ", ".join(f"{v:.1%} at {k}" for k, v in ceiling.items()))
    if twice:
        print(f"noise floor: the same candidate measured twice differs by {res['remeasure_median_rel_diff']:.1%} "
              f"(median); {res['remeasure_within_10pct']:.0%} within 10%")
    print(f"fronts: search {len(res['front_search'])} points, exhaustive {len(res['front_exhaustive'])}")
    if complete and args.replay:
        rep = replay(net.cfg, t, load_space(space, net.cfg), cands, man["search"]["max_measurements"], ex, ref, hv_ex,
                     args.replay, acc=Store(sqlite_url(out / "search" / "search.db")))
        res["replay"] = rep
        (out / "result.json").write_text(json.dumps(res, indent=1))


class ReplayMeasurer:
    """The explorer's Measurer over the exhaustive store: a candidate 'measured' is its stored measurement."""

    def __init__(self, ex: dict):
        self.ex, self.rows = ex, {}

    def measured(self) -> dict:
        return dict(self.rows)

    def measure(self, cands) -> dict:
        self.rows.update({c.id: self.ex[c.id] for c in cands})
        return {c.id: self.rows[c.id] for c in cands}


def replay(cfg, target, sp, cands, budget, ex, ref, hv_ex, k, acc) -> dict:
    """The search algorithm run k times (seeds 0..k-1) with every measurement taken from the exhaustive store
    instead of the device: what the search finds over the same measurements, free of the noise between two runs
    of one candidate, and how much its result depends on the seed."""
    from edgedet.config import SubnetConfig
    from edgedet.search.explore import Explorer
    from edgedet.search.pareto import front, hypervolume
    from edgedet.search.space import features

    tap = acc.accuracy(_acc_key(acc))
    budget_ms = target.latency.budget_ms
    hv, pred, meas, measured_ids = [], [], [], []
    for seed in range(k):
        m = ReplayMeasurer(ex)
        found = Explorer(cfg, target, m, lambda subs: {s.id: tap[s.id] for s in subs}, say=lambda s: None).run(
            sp, cands, budget, seed=seed)
        got = m.measured()
        ok = [r for r in got.values() if not budget_ms or r.latency_ms <= budget_ms]
        pts = [(r.ap["AP"], r.latency_ms) for r in ok]
        hv.append(hypervolume([pts[i] for i in front(pts)], ref) / hv_ex)
        meas.append(len(got))
        measured_ids.append(sorted(got))
        held = [r for i, r in ex.items() if i not in got]
        rel = [abs(found.predictor.predict(features(cfg, SubnetConfig.parse(r.subnet)), r.precision)
                   - r.latency_ms) / r.latency_ms for r in held]
        pred.append(float(np.mean(np.asarray(rel) <= 0.10)))
        print(f"replay seed {seed}: measured {len(got)}, hypervolume ratio {hv[-1]:.3f}, predictor "
              f"{pred[-1]:.1%} within 10%", flush=True)
    out = {"seeds": k, "hv_ratio_median": float(np.median(hv)), "hv_ratio_min": float(np.min(hv)),
           "hv_ratio_max": float(np.max(hv)), "measured_median": float(np.median(meas)),
           "predictor_within_10pct_median": float(np.median(pred)), "predictor_within_10pct_min": float(np.min(pred)),
           "hv_ratio": hv, "predictor_within_10pct": pred, "measured_ids": measured_ids}
    print(f"replay over the exhaustive measurements, {k} seeds: hypervolume ratio median {out['hv_ratio_median']:.3f} "
          f"(min {out['hv_ratio_min']:.3f}, max {out['hv_ratio_max']:.3f}); measured median "
          f"{out['measured_median']:.0f}/{len(cands)}; predictor within 10% median "
          f"{out['predictor_within_10pct_median']:.1%} (min {out['predictor_within_10pct_min']:.1%})")
    return out


def _acc_key(store) -> str:
    """The search's AP cache key (one checkpoint + dataset in its store)."""
    import sqlalchemy as sa

    from edgedet.search.store import ACCURACY

    with store.engine.connect() as conn:
        keys = {r[0] for r in conn.execute(sa.select(ACCURACY.c.key).distinct())}
    if len(keys) != 1:
        raise SystemExit(f"expected one AP cache key in {store.url}, found {len(keys)}")
    return keys.pop()


if __name__ == "__main__":
    main()
