"""The end of a search: the front of the measured points (noise-aware), its artifacts (moved next to the manifest,
runtimes rendered, sealed), manifest.json with the run history and warnings, pareto.png, report.html and the table
printed at the end of the run."""
from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..backends.base import Artifact
from ..checkpoint import atomic_write
from ..config import FrontPoint, Manifest, ManifestArtifact, MeasuredPoint, SearchSpace, TargetSpec
from .explore import Exploration
from .pareto import dominates, front
from .space import Candidate
from .store import Measurement
from .view import plot_pareto, write_html


def _versions(backend: str, runtime_version: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "runtime": {"name": backend, "version": runtime_version}}
    for pkg in ("edgedet", "torch", "numpy", "onnx", "onnxruntime", "openvino", "nncf", "optuna"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _gflops(cfg, sid: str) -> float:
    from ..config import SubnetConfig
    from ..model.cost import subnet_cost

    return round(subnet_cost(cfg, SubnetConfig.parse(sid)).gflops, 3)


@dataclass
class SearchRun:
    """What a search ran on and with: everything the manifest records besides what it found."""

    net: object  # the supernet (front points are compiled from it; its config names it)
    target: TargetSpec
    target_path: Path
    fingerprint: str
    runtime_version: str
    device: dict  # device info where the measurements ran
    checkpoint: Path
    checkpoint_sha: str
    dataset_root: Path
    dataset_sha: str
    dataset_images: int
    space: SearchSpace
    candidates: list[Candidate]
    budget: int
    generations: int
    population: int
    seed: int
    runtime: tuple[str, ...]  # runtimes rendered next to front artifacts
    store: str  # "search.db" (the default, in the folder) or the store's URL, password hidden
    out: Path
    started: float  # time.time() at the start
    resumed: bool = False


HISTORY_KEYS = {"start": str, "end": str, "wall_s": (int, float), "measurements": int, "rounds": int,
                "stopped": str, "resumed": bool}


def earlier_runs(out: Path) -> list[dict]:
    """The run history of the manifest already in OUT (a resumed search), entries that are not well-formed
    left out; [] when there is none."""
    try:
        hist = json.loads((out / "manifest.json").read_text())["search"]["history"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [h for h in hist if _entry_ok(h)] if isinstance(hist, list) else []


def _entry_ok(h) -> bool:
    if not isinstance(h, dict) or set(h) != set(HISTORY_KEYS):
        return False
    for k, t in HISTORY_KEYS.items():
        v = h[k]
        if isinstance(v, bool) != (t is bool) or not isinstance(v, t) or (isinstance(v, str) and len(v) > 500):
            return False
    return True


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")


def finish(run: SearchRun, found: Exploration, measured: dict[str, Measurement], tap: dict[str, dict],
           say: Callable[[str], None] = print) -> dict:
    """Front of the measured points (under the latency budget): artifacts moved next to the manifest with their
    runtimes (compiled again when another process or an earlier run measured them), manifest.json, pareto.png,
    report.html. `measured`: the search's candidates measured; `tap`: their torch AP. -> the manifest."""
    from ..deploy import check_runtimes, compile_subnet, render_runtimes

    t, out = run.target, run.out
    points = []
    for k, m in sorted(measured.items(), key=lambda kv: (kv[1].latency_ms is None, kv[1].latency_ms or 0)):
        points.append(MeasuredPoint(id=k, subnet=m.subnet, precision=m.precision, status=m.status,
                                    latency_ms=m.latency_ms, ap=m.ap or tap.get(m.subnet),
                                    ap_source=m.ap_source or ("torch" if m.ok else None),
                                    ap_torch=tap.get(m.subnet), gflops=_gflops(run.net.cfg, m.subnet),
                                    device=m.device, record=m.record))
    budget = t.latency.budget_ms
    ok = [p for p in points if p.status == "ok" and (not budget or p.latency_ms <= budget)]
    fidx, warnings = noise_aware_front(ok)
    warnings = noise_summary(points, t.benchmark) + warnings
    fronts = []
    adir = out / "artifacts"
    for i in fidx:
        p = ok[i]
        work, dest = out / "work" / p.id, adir / p.id
        if (work / "artifact.json").is_file() and not Artifact.open(work).verify():
            art = Artifact.open(work)
        elif (dest / "artifact.json").is_file() and not Artifact.open(dest).verify():
            art = Artifact.open(dest)  # kept from an earlier finish of this search
        else:  # measured by an earlier run or another process: compile again (deterministic)
            say(f"compile {p.id} again (front point measured by an earlier run or another process)")
            art = compile_subnet(run.net, p.subnet, run.target_path, p.precision, out / "work" / p.id, runtime=())
        if art.dir.resolve() != dest.resolve():
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(art.dir), str(dest))
            art = Artifact.open(dest)
        rendered = render_runtimes(art, check_runtimes(run.runtime))
        art.metadata["runtimes"] = rendered
        rt = {k: (str((dest / v).relative_to(out)) if not v.startswith("unsupported") else v)
              for k, v in rendered.items()}
        art.seal()
        fronts.append(FrontPoint(**p.model_dump(), artifact=ManifestArtifact(
            dir=str(dest.relative_to(out)), backend=art.backend, model_file=art.model_file, files=art.files,
            runtime=rt)))
    keep = {f.id for f in fronts}
    if adir.is_dir():  # front points of an earlier finish that are no longer on the front
        for d in adir.iterdir():
            if d.name not in keep:
                shutil.rmtree(d)
    shutil.rmtree(out / "work", ignore_errors=True)
    predicted = [{"id": e.cand.id, "ap": round(e.ap, 4), "latency_ms": round(e.latency_ms, 3)}
                 for e in found.estimates if not e.measured and e.cand.id not in measured]
    pred = found.predictor
    loo = sorted(pred.loo_rel_err) if pred and pred.loo_rel_err else None
    now = time.time()
    history = (earlier_runs(out) if run.resumed else []) + [{
        "start": _iso(run.started), "end": _iso(now), "wall_s": round(now - run.started, 1),
        "measurements": found.measurements, "rounds": found.rounds, "stopped": found.stop, "resumed": run.resumed}]
    man = Manifest(
        created=_iso(now),
        target={"name": t.name, "file": str(run.target_path), "fingerprint": run.fingerprint, "spec": t.model_dump()},
        device=run.device, software=_versions(t.backend, run.runtime_version),
        checkpoint={"path": str(run.checkpoint), "sha256": run.checkpoint_sha, "supernet": run.net.cfg.name},
        dataset={"path": str(run.dataset_root), "split": "valid", "images": run.dataset_images,
                 "sha256": run.dataset_sha, "sha256_of": "annotation file + image files"},
        space=run.space.model_dump(),
        search={"strategy": "NSGA-II (Optuna) on AP x predicted latency, predict then verify",
                "candidates": len(run.candidates), "max_measurements": run.budget,
                "measured": len(measured), "rounds": found.rounds, "stopped": found.stop,
                "generations": run.generations, "population": run.population, "seed": run.seed,
                "store": run.store,
                "predictor": {"type": "p50: NNLS on cost features shared by all precisions x per-precision "
                                      "compute/overhead scales; percentile: p50 x the precision's tail ratio",
                              "w_ridge": pred.w_ridge if pred else None,
                              "scales": ({p: dict(zip(pred.scale_groups or range(len(sc)),
                                                      [round(float(v), 4) for v in sc]))
                                              for p, sc in pred.scales.items()} if pred else None),
                              "loo_rel_err_median": round(float(loo[len(loo) // 2]), 4) if loo else None,
                              **(pred.summary() if pred else {})},
                "wall_s": round(now - run.started, 1),
                "wall_s_all_runs": round(sum(h["wall_s"] for h in history), 1), "history": history,
                "noisy": sum(1 for p in points if _noisy(p)), "warnings": warnings},
        objectives={"ap": "AP@[.5:.95] (pycocotools)", "latency": f"p{t.latency.percentile} ms",
                    "budget_ms": budget},
        points=points, predicted=predicted, front=fronts)
    data = man.model_dump()
    atomic_write(out / "manifest.json", lambda tmp: tmp.write_text(json.dumps(data, indent=1)))
    plot_pareto(data, out / "pareto.png")
    write_html(data, out / "report.html")
    return data


def _noisy(p: MeasuredPoint) -> bool:
    return p.status == "ok" and bool((p.record or {}).get("noisy"))


def noise_aware_front(ok: list[MeasuredPoint]) -> tuple[list[int], list[str]]:
    """Indices of the front of measured points (latency ascending), where a noisy measurement never pushes a stable
    one off the front silently: a stable point dominated only by noisy points stays on it, and a warning says so."""
    pts = [(p.ap["AP"], p.latency_ms) for p in ok]
    stable = [i for i, p in enumerate(ok) if not _noisy(p)]
    idx = set(front(pts))
    kept = [stable[k] for k in front([pts[i] for i in stable]) if stable[k] not in idx]
    warnings = [f"{ok[j].id} is kept on the front although noisy measurements dominate it ("
                + ", ".join(ok[i].id for i in range(len(ok)) if _noisy(ok[i]) and dominates(pts[i], pts[j])) + ")"
                for j in kept]
    return sorted(idx | set(kept), key=lambda i: (pts[i][1], -pts[i][0])), warnings


def noise_summary(points: list[MeasuredPoint], bench) -> list[str]:
    """One warning naming how many measurements stayed noisy and why ([] when none did)."""
    noisy = [p for p in points if _noisy(p)]
    if not noisy:
        return []
    notes = [p.record.get("note") or "" for p in noisy]
    why = {"spread above the target's noise_threshold": sum(p.record.get("spread", 0) > bench.noise_threshold
                                                             for p in noisy),
           "other processes busy during the runs": sum("other processes" in n for n in notes),
           "later runs slower (throttling)": sum("last third" in n for n in notes)}
    ok = sum(1 for p in points if p.status == "ok")
    return [f"{len(noisy)} of {ok} measurements stayed noisy after up to {bench.repeat_noisy} repeats ("
            + ", ".join(f"{k}: {v}" for k, v in why.items() if v) + "): their latencies are uncertain; measure "
            "on a quieter machine or raise benchmark.runs"]


def history_line(man: dict) -> str:
    """The CLI's summary of this run and of the search so far."""
    s = man["search"]
    h = s["history"][-1]
    return (f"run {len(s['history'])} of this search: {h['measurements']} measurements, {h['rounds']} rounds, "
            f"stopped: {h['stopped']}, {h['wall_s']:.0f} s (all runs: {s['measured']} measured, "
            f"{s['wall_s_all_runs']:.0f} s)")


def front_table(man: dict):
    from rich.table import Table

    s = man["search"]
    tb = Table(title=f"Pareto front on {man['target']['name']} ({man['objectives']['latency']}, measured; "
                     f"{s['measured']}/{s['candidates']} candidates measured, stopped: {s['stopped']})")
    for col in ("point", "latency ms", "spread", "AP", "AP50", "GFLOPs", "AP from", "artifact"):
        tb.add_column(col, justify="right" if col not in ("point", "artifact") else "left")
    for p in man["front"]:
        r = p["record"] or {}
        spread = f"{r['spread']:.0%}{' NOISY' if r.get('noisy') else ''}" if "spread" in r else ""
        tb.add_row(p["id"], f"{p['latency_ms']:.2f}", spread, f"{p['ap']['AP']:.3f}", f"{p['ap']['AP50']:.3f}",
                   f"{p['gflops']:.2f}", p["ap_source"], p["artifact"]["dir"])
    return tb

