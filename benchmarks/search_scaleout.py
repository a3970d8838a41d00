"""Scale-out of one search over a shared store: wall time of one search measuring on one SSH device vs the same
search with a worker attached on a second SSH device (`edgedet search --worker`), same space, budget and settings.

The two "devices" are two workdirs on an OpenSSH server started here on 127.0.0.1 (throwaway keys), so both measure
on this machine: on a machine with few cores they disturb each other's timings, and the speed-up is bounded by the
compile and AP work that both do on this host too. Each run has its own SQLite store. Prints the wall times, their
ratio, the measurements each process made, both fronts and whether they are the same, and the machine (CPU, cores,
load average before and after).

    python benchmarks/search_scaleout.py [--out runs/bench/search_scaleout] [--budget 10] [--val-images 20]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPACE = "patch: [16, 24]\nresolution: [192, 288, 384]\nwindows: [2]\ndec_layers: [1, 3]\nqueries: [25, 100]\n"
MEASURED = re.compile(r"^  (\S+@\w+): p\d+ [\d.]+ ms \[", re.M)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs/bench/search_scaleout")
    ap.add_argument("--budget", type=int, default=10, help="measurements per search (default 10)")
    ap.add_argument("--val-images", type=int, default=20)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import yaml

    from edgedet.devices.agent import cpu_model
    from tests.devices.conftest import Sshd, make_key

    out = args.out.resolve()
    if out.exists():
        raise SystemExit(f"{out} exists: remove it or give another --out")
    (out / "ssh").mkdir(parents=True)
    key = out / "ssh" / "client_ed25519"
    make_key(key)
    sshd = Sshd(out / "ssh" / "sshd", Path(f"{key}.pub")).start()
    try:
        (out / "ssh" / "known_hosts").write_text(sshd.known_hosts_line() + "\n")
        (out / "space.yaml").write_text(SPACE)
        (out / "calib.yaml").write_text("dataset: demo\nsplit: train\nimages: 16\nseed: 0\n")
        targets = []
        for i in (1, 2):
            host = {"host": "127.0.0.1", "port": sshd.port, "user": os.environ.get("USER") or "root",
                    "key": str(key), "known_hosts": str(out / "ssh" / "known_hosts"),
                    "workdir": str(out / f"device{i}"), "python": sys.executable}
            spec = {"name": "scaleout", "device": {"type": "ssh", "hosts": [host]}, "backend": "onnxruntime",
                    "precisions": ["fp32", "int8"], "runtime": {"threads": 1},
                    "latency": {"budget_ms": 200, "percentile": 90},
                    "benchmark": {"warmup": 5, "runs": 30, "min_duration_s": 0.5}, "calibration": "calib.yaml"}
            targets.append(out / f"target{i}.yaml")
            targets[-1].write_text(yaml.safe_dump(spec, sort_keys=False))

        def cmd(target: Path, name: str, *extra: str) -> list[str]:
            return [sys.executable, "-m", "edgedet.cli", "search", "-t", str(target), "--space", str(out / "space.yaml"),
                    "-o", str(out / name), "--storage", f"sqlite:///{out / (name.split('-')[0] + '.db')}",
                    "--max-measurements", str(args.budget), "--val-images", str(args.val_images), "--runtime",
                    "python", *extra]

        env = dict(os.environ, PYTHONPATH=str(ROOT))
        load0 = os.getloadavg()
        t0 = time.time()
        one = subprocess.run(cmd(targets[0], "one"), capture_output=True, text=True, env=env)
        t_one = time.time() - t0
        _check(one.returncode, one.stdout + one.stderr, "one search")
        t0 = time.time()
        procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
                 for c in (cmd(targets[0], "two-search"), cmd(targets[1], "two-worker", "--worker"))]
        logs = [p.communicate()[0] for p in procs]
        t_two = time.time() - t0
        for p, log, what in zip(procs, logs, ("search", "worker")):
            _check(p.returncode, log, what)
        load1 = os.getloadavg()
    finally:
        sshd.kill()
    fronts = [[p["id"] for p in json.loads((out / d / "manifest.json").read_text())["front"]]
              for d in ("one", "two-search")]
    res = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg_before": load0, "loadavg_after": load1},
           "budget": args.budget, "val_images": args.val_images,
           "one_search_s": round(t_one, 1), "search_plus_worker_s": round(t_two, 1), "speedup": round(t_one / t_two, 2),
           "measured": {"one": len(MEASURED.findall(one.stdout)), "two_search": len(MEASURED.findall(logs[0])),
                        "two_worker": len(MEASURED.findall(logs[1]))},
           "front_one": fronts[0], "front_two": fronts[1], "same_front": fronts[0] == fronts[1]}
    (out / "result.json").write_text(json.dumps(res, indent=1))
    print(f"machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, load average "
          f"{load0[0]:.2f} before, {load1[0]:.2f} after (both devices are workdirs on this machine)")
    print(f"one search, one SSH device: {t_one:.0f} s, {res['measured']['one']} measurements")
    print(f"search + worker, two SSH devices: {t_two:.0f} s, {res['measured']['two_search']} measured by the search, "
          f"{res['measured']['two_worker']} by the worker; speed-up {res['speedup']:.2f}x")
    print(f"fronts: {'the same' if res['same_front'] else 'different'} ({len(fronts[0])} vs {len(fronts[1])} points)"
          + ("" if res["same_front"] else f": {fronts[0]} vs {fronts[1]}"))


def _check(code: int, log: str, what: str) -> None:
    if code != 0 or "Traceback" in log:
        raise SystemExit(f"{what} failed (exit {code}):\n{log[-3000:]}")


if __name__ == "__main__":
    main()
