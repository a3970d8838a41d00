"""Why OpenVINO latency moves between measurements of one IR, and which benchmark settings make it repeatable.

    python benchmarks/openvino_stability.py [--out runs/bench/openvino_stability] [--procs 3] [--repeats 3]
                                            [--only warmup,repeat,settings] [--variants 'A;B'] [--subnet ID]

Artifacts: three subnets of the demo supernet (small, medium, large) compiled for targets/cpu_openvino.yaml at fp32,
bf16 and int8 (NNCF, 16 calibration images), once, into OUT/ir (reused by later runs). Every measurement runs in a
fresh child process that loads the artifact through the shipped runner (runtime/runners.py, the target's settings:
LATENCY hint, one stream, 2 threads, inference precision pinned) and times it with the shared timing loop. Children
run one at a time, interleaved over the artifacts, so slow drift of the machine hits every artifact alike.

Experiments (each prints a table and its finding):
  warmup    the first 400 inferences after compile_model, one by one: how many are slower than steady state
  repeat    the benchmark's settings (warm-up W, >= 30 runs, >= 0.5 s) repeated R times in each of P fresh
            processes: the spread of p50 and p90 within a process and between processes
  settings  the same IR under variants (warm-up length, CPU pinning, 1 thread, longer runs) in fresh processes,
            interleaved: the p50 / p90 spread between processes of each variant

The header names the machine (CPU model, flags, cores), the load average and the CPU time other processes and the
hypervisor (steal) took during the run: run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SUBNETS = ("p24-r192-w1-d1-q25", "p16-r288-w2-d2-q50", "p16-r384-w1-d3-q100")
PRECISIONS = ("fp32", "bf16", "int8")
FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni")
BENCH = {"warmup": 5, "runs": 30, "min_duration_s": 0.5}  # what the search benchmark used when issue 20 was filed


# ---------------------------------------------------------------------------------------------------- the child
def child(spec: dict) -> dict:
    """One fresh process: load the artifact with the runner (options as given), then either time the first
    `series` inferences one by one, or run `repeats` benchmarks (warm-up once, then runs/min_duration each)."""
    sys.path.insert(0, str(ROOT))
    from edgedet.devices import load as machine
    from edgedet.runtime import runners

    art = runners.read_artifact(spec["ir"])
    t0 = time.perf_counter()
    runner = runners.load(spec["ir"], art, spec.get("options") or {})
    x = runners.RUNNERS["openvino"].bench_input(spec["ir"], art, 1)
    out = {"compile_s": time.perf_counter() - t0, "settings": runner.info()["settings"]}
    pin = spec.get("affinity")
    if spec.get("series"):
        times, _ = runners.time_runs(lambda: runner.infer(x), warmup=0, runs=spec["series"], min_duration_s=0)
        out["series"] = times
        return out
    before, stat0 = machine.snapshot(), _steal()
    runners.time_runs(lambda: runner.infer(x), warmup=spec["warmup"], runs=0, min_duration_s=0, pin_cpus=pin)
    reps = []
    for _ in range(spec["repeats"]):
        times, total = runners.time_runs(lambda: runner.infer(x), warmup=0, runs=spec["runs"],
                                         min_duration_s=spec["min_duration_s"], pin_cpus=pin)
        a = np.asarray(times)
        reps.append({"p50": float(np.median(a)), "p90": float(np.percentile(a, 90)), "n": len(a)})
    out["repeats"] = reps
    out["anon_huge_kib"] = _anon_huge_kib()
    out["load"] = machine.between(before, machine.snapshot())
    out["steal_s"] = (_steal() - stat0) / os.sysconf("SC_CLK_TCK")
    return out


def _anon_huge_kib() -> int:
    """This process's anonymous memory backed by transparent huge pages (KiB), -1 where the kernel does not say."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _steal() -> int:
    with open("/proc/stat") as f:
        return int(f.readline().split()[8])


def run_child(spec: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), **spec.get("env", {})), timeout=600)
    if r.returncode:
        raise SystemExit(f"child failed: {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------- the driver
def conditions() -> str:
    import openvino

    from edgedet.devices.agent import cpu_flags, cpu_model

    model, flags = cpu_model(), cpu_flags()

    return (f"cpu {model}, {os.cpu_count()} cores, flags {' '.join(f for f in FLAGS if f in flags)}, load average "
            f"{os.getloadavg()[0]:.2f}; openvino {openvino.get_version()}")


def prepare(out: Path) -> dict[str, str]:
    """The artifacts (compiled once into OUT/ir) -> {candidate id: folder}."""
    import yaml

    from edgedet.checkpoint import load_supernet
    from edgedet.data.demo import demo_checkpoint
    from edgedet.deploy import compile_subnet

    spec = yaml.safe_load((ROOT / "targets/cpu_openvino.yaml").read_text())
    spec["calibration"] = "calib.yaml"
    (out / "calib.yaml").write_text("dataset: demo\nsplit: train\nimages: 16\nseed: 0\n")
    target = out / "target.yaml"
    target.write_text(yaml.safe_dump(spec, sort_keys=False))
    net, irs = None, {}
    for s, p in itertools.product(SUBNETS, PRECISIONS):
        d = out / "ir" / f"{s}@{p}"
        if not (d / "artifact.json").is_file():
            net = net or load_supernet(demo_checkpoint())
            t0 = time.time()
            compile_subnet(net, s, target, p, d, runtime=())
            print(f"compiled {s}@{p} in {time.time() - t0:.0f} s", flush=True)
        irs[f"{s}@{p}"] = str(d)
    return irs


def rel_range(v) -> float:
    v = np.asarray(v, dtype=float)
    return float((v.max() - v.min()) / np.median(v))


def exp_warmup(irs: dict, n: int = 400) -> dict:
    print("\n== warmup: the first inferences after compile_model, relative to the median of the last 200")
    print(f"{'artifact':34} {'compile s':>9} {'#1':>6} {'#2-5':>6} {'#6-20':>6} {'#21-50':>6} {'#51-200':>7} "
          f"{'ms steady':>9}")
    res = {}
    for cid in [f"{SUBNETS[1]}@{p}" for p in PRECISIONS] + [f"{SUBNETS[0]}@int8", f"{SUBNETS[2]}@int8"]:
        r = run_child({"ir": irs[cid], "series": n})
        a = np.asarray(r["series"])
        steady = float(np.median(a[-200:]))
        parts = [a[0:1], a[1:5], a[5:20], a[20:50], a[50:200]]
        rel = [float(np.median(p) / steady) for p in parts]
        res[cid] = {"compile_s": r["compile_s"], "rel": rel, "steady_ms": steady}
        print(f"{cid:34} {r['compile_s']:9.2f} " + " ".join(f"{v:6.2f}" for v in rel[:4]) + f" {rel[4]:7.2f} "
              f"{steady:9.2f}", flush=True)
    return res


def exp_repeat(irs: dict, procs: int, repeats: int, bench: dict) -> dict:
    print(f"\n== repeat: {bench}, {repeats} benchmarks in each of {procs} fresh processes (interleaved)")
    got: dict[str, list] = {k: [] for k in irs}
    for _ in range(procs):
        for cid, d in irs.items():
            got[cid].append(run_child({"ir": d, "repeats": repeats, **bench}))
    print(f"{'artifact':34} {'p50 ms':>8} {'within p50':>10} {'between p50':>11} {'within p90':>10} "
          f"{'between p90':>11} {'others':>6} {'steal':>5}")
    res = {}
    for cid, rs in got.items():
        row = {}
        for st in ("p50", "p90"):
            per = [[x[st] for x in r["repeats"]] for r in rs]
            row[f"within_{st}"] = float(np.median([rel_range(v) for v in per]))  # spread of repeats in a process
            row[f"between_{st}"] = rel_range([np.median(v) for v in per])  # spread of process medians
            row[f"first_{st}"] = rel_range([v[0] for v in per])  # one benchmark per process, as the search does
        row["p50_ms"] = float(np.median([x["p50"] for r in rs for x in r["repeats"]]))
        row["others_cores"] = float(np.max([r["load"]["others_cores"] or 0 for r in rs]))
        row["steal_s"] = float(np.sum([r["steal_s"] for r in rs]))
        res[cid] = row
        print(f"{cid:34} {row['p50_ms']:8.2f} {row['within_p50']:10.1%} {row['first_p50']:11.1%} "
              f"{row['within_p90']:10.1%} {row['first_p90']:11.1%} {row['others_cores']:6.2f} "
              f"{row['steal_s']:5.1f}", flush=True)
    return res


VARIANTS = {
    "bench (warm-up 5, 30 runs, >= 0.5 s)": ({}, BENCH),
    "warm-up 50": ({}, dict(BENCH, warmup=50)),
    "warm-up 1 s worth (200)": ({}, dict(BENCH, warmup=200)),
    "runs >= 2 s": ({}, dict(BENCH, min_duration_s=2.0)),
    "ENABLE_CPU_PINNING": ({"pin_threads": True}, BENCH),
    "1 thread": ({"threads": 1}, BENCH),
    # glibc >= 2.35: malloc asks for transparent huge pages (madvise) for its heaps and large blocks, so the
    # weights and activations land on 2 MiB pages whatever the physical placement of a fresh process
    "malloc huge pages": ({"env": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}}, BENCH),
}


def exp_settings(irs: dict, procs: int, variants: list[str], subnet: str = SUBNETS[1]) -> dict:
    cids = [f"{subnet}@{p}" for p in PRECISIONS]
    print(f"\n== settings: {', '.join(cids)}; {procs} fresh processes per variant (interleaved), one benchmark each")
    got = {(v, c): [] for v in variants for c in cids}
    huge = {v: [] for v in variants}
    for _ in range(procs):
        for v in variants:
            opts, bench = VARIANTS[v]
            env = opts.get("env", {})
            opts = {k: x for k, x in opts.items() if k != "env"}
            for c in cids:
                r = run_child({"ir": irs[c], "options": opts, "env": env, "repeats": 1, **bench})
                got[v, c].append(r["repeats"][0])
                huge[v].append(r.get("anon_huge_kib", -1))
    res = {}
    print(f"{'variant':40} " + " ".join(f"{c.split('@')[1] + ' p50 (spread)':>22}" for c in cids)
          + "  THP MiB")
    for v in variants:
        cells = []
        for c in cids:
            p50 = [r["p50"] for r in got[v, c]]
            p90 = [r["p90"] for r in got[v, c]]
            res[f"{v} | {c}"] = {"p50_ms": float(np.median(p50)), "between_p50": rel_range(p50),
                                 "between_p90": rel_range(p90), "p50s": p50, "p90s": p90}
            cells.append(f"{np.median(p50):7.2f} ({rel_range(p50):5.1%}/{rel_range(p90):5.1%})")
        res[f"{v} | anon_huge_mib"] = float(np.median(huge[v])) / 1024
        print(f"{v:40} " + " ".join(f"{c:>22}" for c in cells) + f"  {np.median(huge[v]) / 1024:7.1f}", flush=True)
    print("(spread: (max - min) / median over the processes, of p50 / of p90)")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs/bench/openvino_stability")
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=BENCH["warmup"], help="warm-up of the repeat experiment")
    ap.add_argument("--only", default="warmup,repeat,settings")
    ap.add_argument("--variants", default=";".join(VARIANTS),
                    help="settings experiment: variants separated by ';' (default: all): " + "; ".join(VARIANTS))
    ap.add_argument("--subnet", default=SUBNETS[1], choices=SUBNETS, help="settings experiment: the subnet")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    irs = prepare(args.out)
    print(conditions(), flush=True)
    t0, res = time.time(), {}
    only = args.only.split(",")
    if "warmup" in only:
        res["warmup"] = exp_warmup(irs)
    if "repeat" in only:
        res["repeat"] = exp_repeat(irs, args.procs, args.repeats, dict(BENCH, warmup=args.warmup))
    if "settings" in only:
        variants = [v.strip() for v in args.variants.split(";") if v.strip()]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            sys.exit(f"error: --variants: unknown {unknown}; known: {list(VARIANTS)}")
        res["settings"] = exp_settings(irs, args.procs, variants, args.subnet)
    print(f"\n{conditions()}; {time.time() - t0:.0f} s")
    (args.out / "result.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
