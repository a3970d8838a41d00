"""Search vs exhaustive measurement on one space of the demo supernet and one target.

    python benchmarks/search_vs_exhaustive.py [--target local_cpu] [--space benchmarks/spaces/onnxruntime_576.yaml]
        [--out DIR] [--val-images 50] [--replay 20] [--skip-search] [--skip-exhaustive] [--minutes M] [--csv FILE]
    python benchmarks/search_vs_exhaustive.py --target cpu_openvino --space benchmarks/spaces/openvino_288.yaml

The target (a shipped target's name or a YAML file) is used with its own runtime and benchmark settings except a
shorter benchmark (30 runs, >= 0.5 s; its warm-up kept) and 16 calibration images, so that the exhaustive side fits
in about an hour here; the search and the exhaustive run share that target. DIR defaults to
runs/bench/search_vs_exhaustive/<target>-<space>.

1. `edgedet search` on the space with its default budget (5% of the candidates): its measured front (DIR/search).
2. Exhaustive: every candidate compiled and measured the same way (same measurer, AP of each artifact), into its
   own store (DIR/exhaustive.db; resumable: rerun the script and it continues; --minutes bounds one sitting; the
   order is random, so a partial run is a uniform sample). The torch AP of every subnet goes to the same store.
3. Prints: share of candidates the search measured; hypervolume of the search's front / hypervolume of the
   exhaustive front (same reference point: AP 0, the exhaustive maximum latency); the predictor's share of held-out
   candidates within +-10% at p50 and at the target's percentile (fitted on the search's measurements, tested on
   every exhaustive measurement the search did not make); the same model fitted on every exhaustive measurement
   (the ceiling); the same candidates measured twice (the noise floor).
4. With the exhaustive side complete, the search algorithm replayed K times (seeds 0..K-1) with every measurement
   taken from the exhaustive store: the same figures free of the noise between two measurements of one candidate,
   and their spread over seeds.

Both sides measure on the same machine: run it on an idle one (the header prints CPU, flags, load average).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPACE = ROOT / "benchmarks/spaces/onnxruntime_576.yaml"
FLAGS = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
GOAL_HV, GOAL_WITHIN = 0.99, 0.95


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="local_cpu", help="target name or YAML file (default local_cpu)")
    ap.add_argument("--space", type=Path, default=DEFAULT_SPACE, help="search space YAML (default: %(default)s)")
    ap.add_argument("--out", type=Path, help="default runs/bench/search_vs_exhaustive/<target>-<space>")
    ap.add_argument("--val-images", type=int, default=50)
    ap.add_argument("--skip-search", action="store_true", help="no search on the device (figures of replays only)")
    ap.add_argument("--skip-exhaustive", action="store_true", help="measure nothing more on the exhaustive side")
    ap.add_argument("--minutes", type=float, help="stop measuring the exhaustive side after this long (resumable)")
    ap.add_argument("--replay", type=int, default=20, metavar="K", help="replayed seeds (default 20)")
    ap.add_argument("--csv", type=Path, metavar="FILE", help="also write every exhaustive measurement (subnet, "
                    "precision, p50/p90 ms, the 8 cost features) to FILE, as in tests/search/data")
    args = ap.parse_args()

    from edgedet.config import load_target, resolve_target

    t = load_target(args.target)
    out = args.out or ROOT / "runs/bench/search_vs_exhaustive" / f"{t.name}-{args.space.stem}"
    out.mkdir(parents=True, exist_ok=True)
    target = bench_target(resolve_target(args.target), out)
    space = out / "space.yaml"
    space.write_text(args.space.read_text())
    print(conditions(), flush=True)

    from edgedet.search import search

    man = None
    if not args.skip_search:
        t0 = time.time()
        man = search(target, space=space, out=out / "search", resume=True, val_images=args.val_images,
                     say=lambda m: print(m, flush=True))
        man["search"]["bench_wall_s"] = round(time.time() - t0, 1)
        print(f"search: {man['search']['measured']}/{man['search']['candidates']} measured, "
              f"{len(man['front'])} front points, {man['search']['bench_wall_s']:.0f} s; {conditions()}", flush=True)
    elif (out / "search/manifest.json").is_file():
        man = json.loads((out / "search/manifest.json").read_text())
    ex = Exhaustive(target, space, out, args.val_images)
    if not args.skip_exhaustive:
        ex.measure(args.minutes)
    if args.csv:
        export_csv(ex, args.csv)
    figures(ex, man, args.replay, out)


def export_csv(ex: "Exhaustive", path: Path) -> None:
    """The exhaustive measurements with their cost features: what tests/search/test_predictor_measured.py reads."""
    import csv

    from edgedet.config import SubnetConfig
    from edgedet.search.explore import p50_of
    from edgedet.search.space import features

    cfg = ex.inputs.net.cfg
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subnet", "precision", "p50_ms", "p90_ms"] + [f"f{i}" for i in range(8)])
        for _, m in sorted(ex.rows().items()):
            w.writerow([m.subnet, m.precision, f"{p50_of(m):.4f}", f"{m.latency_ms:.4f}"]
                       + [f"{v:.6g}" for v in features(cfg, SubnetConfig.parse(m.subnet))])
    print(f"wrote {path}")


def bench_target(src: Path, out: Path) -> Path:
    """DIR/target.yaml: the target with the benchmark's shorter runs and 16 calibration images."""
    import yaml

    spec = yaml.safe_load(src.read_text())
    spec["benchmark"] = dict(spec.get("benchmark") or {}, runs=30, min_duration_s=0.5)
    (out / "calib.yaml").write_text("dataset: demo\nsplit: train\nimages: 16\nseed: 0\n")
    spec["calibration"] = str((out / "calib.yaml").resolve())
    (out / "target.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return out / "target.yaml"


def conditions() -> str:
    from edgedet.devices.agent import cpu_flags, cpu_model

    model, flags = cpu_model(), cpu_flags()
    return (f"[cpu {model}, {os.cpu_count()} cores, {' '.join(f for f in FLAGS if f in flags) or 'no avx512'}; "
            f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}]")


class Exhaustive:
    """Every candidate of the space measured by the search's own measurer into DIR/exhaustive.db, and the torch AP
    of every subnet (the replays' AP)."""

    def __init__(self, target: Path, space: Path, out: Path, val_images: int):
        from edgedet.search.claims import Claims
        from edgedet.search.run import _inputs, _open
        from edgedet.search.space import candidates
        from edgedet.config import load_space

        self.inputs = i = _inputs(target, None, None, val_images)
        self.setup = s = _open(i, None, out / "exhaustive.db")
        self.space = load_space(space, i.net.cfg)
        self.cands = candidates(self.space, i.net.cfg, i.target)
        self.claims = Claims(s.store, s.scope)
        self.measurer = s.measurer(out / "exhaustive" / "work", self.claims, say=lambda m: None)

    def measure(self, minutes: float | None) -> None:
        done = set(self.measurer.measured())
        todo = [c for c in self.cands if c.id not in done]
        random.Random(0).shuffle(todo)
        t1 = time.time()
        for i in range(0, len(todo), 8):
            if minutes is not None and time.time() - t1 > 60 * minutes:
                print(f"exhaustive: stopped after {minutes:g} min (rerun to continue)")
                break
            self.measurer.measure(todo[i:i + 8])
            k, el = len(done) + min(i + 8, len(todo)), time.time() - t1
            print(f"exhaustive: {k}/{len(self.cands)} measured, {el / 60:.1f} min (~"
                  f"{el / max(k - len(done), 1) * (len(self.cands) - k) / 60:.0f} min left) {conditions()}", flush=True)

    def rows(self) -> dict:
        """Measured and scored rows by candidate id (a killed batch leaves rows pending)."""
        ids = {c.id for c in self.cands}
        return {k: m for k, m in self.measurer.measured().items() if k in ids and m.ok and m.ap}

    def torch_ap(self) -> dict[str, dict]:
        from edgedet.search.measure import TorchAP

        s, subs = self.setup, list({c.subnet.id: c.subnet for c in self.cands}.values())
        tap = TorchAP(self.inputs.net, self.inputs.dataset, s.store, s.acc_key, subs, self.claims,
                      say=lambda m: print(m, flush=True))
        return tap(subs)


def held_out_errors(pred, cfg, rows) -> dict:
    """Relative errors of `pred` on `rows` (Measurements) at p50 and at the target's percentile."""
    from edgedet.config import SubnetConfig
    from edgedet.search.explore import p50_of
    from edgedet.search.space import features

    e50, ept, prec = [], [], []
    for m in rows:
        f = features(cfg, SubnetConfig.parse(m.subnet))
        e50.append(abs(pred.predict_p50(f, m.precision) - p50_of(m)) / p50_of(m))
        ept.append(abs(pred.predict(f, m.precision) - m.latency_ms) / m.latency_ms)
        prec.append(m.precision)
    e50, ept, prec = np.asarray(e50), np.asarray(ept), np.asarray(prec)
    out = {"held_out": len(rows)}
    for stat, e in (("p50", e50), ("pct", ept)):
        out[f"within_10pct_{stat}"] = float(np.mean(e <= 0.10)) if len(e) else None
        out[f"median_err_{stat}"] = float(np.median(e)) if len(e) else None
        out[f"by_precision_{stat}"] = {str(p): round(float(np.mean(e[prec == p] <= 0.10)), 3)
                                       for p in sorted(set(prec))}
    return out


def figures(ex: Exhaustive, man: dict | None, k: int, out: Path) -> None:
    from edgedet.search.explore import fit_predictor
    from edgedet.search.pareto import front, hypervolume

    cfg, t, cands = ex.inputs.net.cfg, ex.inputs.target, ex.cands
    pct = f"p{t.latency.percentile}"
    rows = ex.rows()
    complete = len(rows) >= len(cands)
    res = {"candidates": len(cands), "exhaustive_measured": len(rows), "exhaustive_complete": complete,
           "target": t.name, "percentile": t.latency.percentile, "conditions": conditions()}
    print(f"\nexhaustive: {len(rows)}/{len(cands)} candidates measured and scored")
    if not complete:
        print("EXHAUSTIVE INCOMPLETE: the figures below are against a uniform sample's front (an upper bound of "
              "the true ratio); rerun to continue")
    if not rows:
        return
    ex_pts = [(m.ap["AP"], m.latency_ms) for m in rows.values()]
    ref = max(p[1] for p in ex_pts) * 1.0001
    hv_ex = hypervolume([ex_pts[i] for i in front(ex_pts)], ref)
    res["front_exhaustive"] = [list(rows)[i] for i in front(ex_pts)]
    # ceiling: the model fitted on every exhaustive measurement, scored in-sample
    full = fit_predictor(cfg, list(rows.values()), t.latency.percentile)
    res["ceiling"] = held_out_errors(full, cfg, list(rows.values()))
    print(f"ceiling: the predictor fitted on all {len(rows)} measurements is within +-10% of "
          f"{res['ceiling']['within_10pct_p50']:.1%} at p50 and {res['ceiling']['within_10pct_pct']:.1%} at {pct} "
          f"(tail ratios {full.summary()['tail_ratio']})")
    if man is not None:
        res["device"] = device_run(ex, man, rows, ref, hv_ex, out / "search/search.db")
    if complete and k:
        res["replay"] = replay(ex, rows, ref, hv_ex, k, man["search"]["max_measurements"] if man else None)
    (out / "result.json").write_text(json.dumps(res, indent=1))
    print(f"\nfigures in {out / 'result.json'}; {conditions()}")


def device_run(ex: Exhaustive, man: dict, rows: dict, ref: float, hv_ex: float, db: Path) -> dict:
    """The search's own run: its front's hypervolume, its predictor on the held-out candidates, the noise floor."""
    from edgedet.search.explore import fit_predictor, p50_of
    from edgedet.search.pareto import hypervolume
    from edgedet.search.store import Store, sqlite_url

    cfg, t, n = ex.inputs.net.cfg, ex.inputs.target, len(ex.cands)
    pct = f"p{t.latency.percentile}"
    st = Store(sqlite_url(db))
    ids = {c.id for c in ex.cands}
    mine = [m for m in st.measurements(ex.setup.fp, ex.setup.runtime_version) if m.ok and m.id in ids]
    st.close()
    s_pts = [(p["ap"]["AP"], p["latency_ms"]) for p in man["front"]]
    s_ex = [(rows[p["id"]].ap["AP"], rows[p["id"]].latency_ms) for p in man["front"] if p["id"] in rows]
    pred = fit_predictor(cfg, mine, t.latency.percentile)
    got = {m.id for m in mine}
    err = held_out_errors(pred, cfg, [m for k, m in rows.items() if k not in got])
    twice = [(abs(p50_of(m) - p50_of(rows[m.id])) / p50_of(rows[m.id]),
              abs(m.latency_ms - rows[m.id].latency_ms) / rows[m.id].latency_ms) for m in mine if m.id in rows]
    d = {"measured": len(mine), "share_measured": len(mine) / n, "wall_s": man["search"].get("bench_wall_s"),
         "hv_ratio": hypervolume(s_pts, ref) / hv_ex, "hv_ratio_rescored": hypervolume(s_ex, ref) / hv_ex,
         "predictor": err, "predictor_loo": pred.summary(), "front_search": [p["id"] for p in man["front"]],
         "remeasure_median_rel_diff_p50": float(np.median([a for a, _ in twice])) if twice else None,
         "remeasure_median_rel_diff_pct": float(np.median([b for _, b in twice])) if twice else None,
         "remeasure_within_10pct_p50": float(np.mean([a <= 0.1 for a, _ in twice])) if twice else None,
         "remeasure_within_10pct_pct": float(np.mean([b <= 0.1 for _, b in twice])) if twice else None}
    print(f"\n[one search on the device] candidates {n}; measured {len(mine)} ({d['share_measured']:.1%})"
          + (f" in {d['wall_s'] / 60:.1f} min" if d["wall_s"] else ""))
    print(f"  hypervolume search / exhaustive: {d['hv_ratio']:.3f} (as the search measured its front), "
          f"{d['hv_ratio_rescored']:.3f} (the same points, exhaustive run's measurements)")
    print(f"  predictor on {err['held_out']} held-out candidates: within +-10% {err['within_10pct_p50']:.1%} at p50 "
          f"(by precision {err['by_precision_p50']}, median error {err['median_err_p50']:.1%}), "
          f"{err['within_10pct_pct']:.1%} at {pct} ({err['by_precision_pct']}, median {err['median_err_pct']:.1%})")
    if twice:
        print(f"  noise floor: {len(twice)} candidates measured by both runs differ by "
              f"{d['remeasure_median_rel_diff_p50']:.1%} at p50, {d['remeasure_median_rel_diff_pct']:.1%} at {pct} "
              f"(median); within 10%: {d['remeasure_within_10pct_p50']:.0%} at p50, "
              f"{d['remeasure_within_10pct_pct']:.0%} at {pct}")
        if d["remeasure_within_10pct_p50"] < 0.5:
            print(f"  WARNING: most candidates measured by both runs differ by more than 10% (median "
                  f"{d['remeasure_median_rel_diff_p50']:.1%}): the machine's speed moved between the exhaustive run "
                  "and this search, so the figures above compare two speed levels; the replays (one store) do not")
    return d


class ReplayMeasurer:
    """The explorer's Measurer over the exhaustive store: a candidate 'measured' is its stored measurement."""

    def __init__(self, ex: dict):
        self.ex, self.rows = ex, {}

    def measured(self) -> dict:
        return dict(self.rows)

    def measure(self, cands) -> dict:
        self.rows.update({c.id: self.ex[c.id] for c in cands})
        return {c.id: self.rows[c.id] for c in cands}


def replay(ex: Exhaustive, rows: dict, ref: float, hv_ex: float, k: int, budget: int | None) -> dict:
    """The search algorithm run k times (seeds 0..k-1) with every measurement taken from the exhaustive store
    instead of the device: what the search finds over the same measurements, free of the noise between two runs
    of one candidate, and how much its result depends on the seed."""
    import math

    from edgedet.search.explore import Explorer
    from edgedet.search.pareto import front, hypervolume

    cfg, t, cands = ex.inputs.net.cfg, ex.inputs.target, ex.cands
    budget = budget or max(10, math.ceil(0.05 * len(cands)))
    tap = ex.torch_ap()
    pct = f"p{t.latency.percentile}"
    hv, errs, meas, ids = [], [], [], []
    for seed in range(k):
        m = ReplayMeasurer(rows)
        found = Explorer(cfg, t, m, lambda subs: {s.id: tap[s.id] for s in subs}, say=lambda s: None).run(
            ex.space, cands, budget, seed=seed)
        got = m.measured()
        ok = [r for r in got.values() if not t.latency.budget_ms or r.latency_ms <= t.latency.budget_ms]
        pts = [(r.ap["AP"], r.latency_ms) for r in ok]
        hv.append(hypervolume([pts[i] for i in front(pts)], ref) / hv_ex)
        meas.append(len(got))
        ids.append(sorted(got))
        errs.append(held_out_errors(found.predictor, cfg, [r for i, r in rows.items() if i not in got]))
        print(f"replay seed {seed}: measured {len(got)}, hypervolume ratio {hv[-1]:.3f}, predictor within +-10% "
              f"{errs[-1]['within_10pct_p50']:.1%} at p50, {errs[-1]['within_10pct_pct']:.1%} at {pct} "
              f"({errs[-1]['by_precision_pct']})", flush=True)
    w50 = [e["within_10pct_p50"] for e in errs]
    wpt = [e["within_10pct_pct"] for e in errs]
    out = {"seeds": k, "budget": budget, "hv_ratio": hv, "share_hv_goal": float(np.mean(np.asarray(hv) >= GOAL_HV)),
           "measured_median": float(np.median(meas)), "within_10pct_p50": w50, "within_10pct_pct": wpt,
           "share_predictor_goal": float(np.mean([a >= GOAL_WITHIN and b >= GOAL_WITHIN for a, b in zip(w50, wpt)])),
           "measured_ids": ids}
    print(f"\n[replays over the exhaustive measurements, {k} seeds, budget {budget}/{len(cands)} "
          f"({budget / len(cands):.1%})]")
    print(f"  hypervolume ratio: median {np.median(hv):.3f} (min {min(hv):.3f}, max {max(hv):.3f}); "
          f">= {GOAL_HV} in {out['share_hv_goal']:.0%} of seeds")
    print(f"  predictor within +-10% of held-out: median {np.median(w50):.1%} at p50 (min {min(w50):.1%}), "
          f"{np.median(wpt):.1%} at {pct} (min {min(wpt):.1%}); both >= {GOAL_WITHIN:.0%} in "
          f"{out['share_predictor_goal']:.0%} of seeds")
    return out


if __name__ == "__main__":
    main()
