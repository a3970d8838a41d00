"""The end of a search: the front of the measured points, its artifacts (moved next to the manifest, runtimes
rendered, sealed), manifest.json, pareto.png, report.html and the table printed at the end of the run."""
from __future__ import annotations

import datetime as dt
import json
import platform
import shutil

from ..backends.base import Artifact
from ..checkpoint import atomic_write
from ..config import FrontPoint, Manifest, ManifestArtifact, MeasuredPoint
from .pareto import front
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


def finish(ctx, ests, meta: dict) -> dict:
    from ..deploy import check_runtimes, compile_subnet, render_runtimes
    from .run import _measured, torch_ap

    t, out = ctx.target, ctx.out
    ids = {c.id for c in meta["cands"]}
    measured = {k: m for k, m in _measured(ctx).items() if k in ids}
    tap = torch_ap(ctx, [c.subnet for c in meta["cands"] if c.id in measured])
    points = []
    for k, m in sorted(measured.items(), key=lambda kv: (kv[1]["latency_ms"] is None, kv[1]["latency_ms"] or 0)):
        points.append(MeasuredPoint(id=k, subnet=m["subnet"], precision=m["precision"], status=m["status"],
                                    latency_ms=m["latency_ms"], ap=m["ap"] or tap.get(m["subnet"]),
                                    ap_source=m["ap_source"] or ("torch" if m["status"] == "ok" else None),
                                    ap_torch=tap.get(m["subnet"]), gflops=_gflops(ctx.net.cfg, m["subnet"]),
                                    device=m["device"] or "", record=m["record"]))
    budget = t.latency.budget_ms
    ok = [p for p in points if p.status == "ok" and (not budget or p.latency_ms <= budget)]
    fidx = front([(p.ap["AP"], p.latency_ms) for p in ok])
    fronts = []
    adir = out / "artifacts"
    for i in fidx:
        p = ok[i]
        work, dest = out / "work" / p.id, adir / p.id
        if (work / "artifact.json").is_file() and not Artifact.open(work).verify():
            art = Artifact.open(work)
        elif (dest / "artifact.json").is_file() and not Artifact.open(dest).verify():
            art = Artifact.open(dest)  # kept from an earlier finish of this search
        else:  # measured by an earlier run whose work folder is gone: compile again (deterministic)
            ctx.say(f"compile {p.id} again (front point measured by an earlier run)")
            art = compile_subnet(ctx.net, p.subnet, ctx.target_path, p.precision, out / "work" / p.id, runtime=())
        if art.dir.resolve() != dest.resolve():
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(art.dir), str(dest))
            art = Artifact.open(dest)
        rendered = render_runtimes(art, check_runtimes(meta["runtime"]))
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
    mids = set(measured)
    predicted = [{"id": e.cand.id, "ap": round(e.ap, 4), "latency_ms": round(e.latency_ms, 3)}
                 for e in ests if not e.measured and e.cand.id not in mids]
    pred = ctx.predictor
    man = Manifest(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        target={"name": t.name, "file": str(ctx.target_path), "fingerprint": ctx.fp, "spec": t.model_dump()},
        device=meta["info"], software=_versions(t.backend, ctx.runtime_version),
        checkpoint={"path": str(meta["ck"]), "sha256": meta["ck_sha"], "supernet": ctx.net.cfg.name},
        dataset={"path": str(meta["ds_root"]), "split": "valid", "images": len(ctx.dataset),
                 "sha256": meta["ds_sha"], "sha256_of": "annotation file + image files"},
        space=meta["space"].model_dump(),
        search={"strategy": "NSGA-II (Optuna) on AP x predicted latency, predict then verify",
                "candidates": len(meta["cands"]), "max_measurements": meta["budget"],
                "measured": len(measured), "rounds": meta["rounds"], "stopped": meta["stop"],
                "generations": meta["generations"], "population": meta["population"], "seed": meta["seed"],
                "store": ctx.store.url if not ctx.store.url.startswith("sqlite") else "search.db",
                "predictor": {"type": "NNLS on cost features, per precision",
                              "loo_rel_err_median": (round(float(sorted(pred.loo_rel_err)[len(pred.loo_rel_err) // 2]), 4)
                                                     if pred and pred.loo_rel_err else None)},
                "wall_s": round(meta["wall_s"], 1)},
        objectives={"ap": "AP@[.5:.95] (pycocotools)", "latency": f"p{t.latency.percentile} ms",
                    "budget_ms": budget},
        points=points, predicted=predicted, front=fronts)
    data = man.model_dump()
    atomic_write(out / "manifest.json", lambda tmp: tmp.write_text(json.dumps(data, indent=1)))
    plot_pareto(data, out / "pareto.png")
    write_html(data, out / "report.html")
    return data


def front_table(man: dict):
    from rich.table import Table

    s = man["search"]
    tb = Table(title=f"Pareto front on {man['target']['name']} ({man['objectives']['latency']}, measured; "
                     f"{s['measured']}/{s['candidates']} candidates measured, stopped: {s['stopped']})")
    for col in ("point", "latency ms", "AP", "AP50", "GFLOPs", "AP from", "artifact"):
        tb.add_column(col, justify="right" if col not in ("point", "artifact") else "left")
    for p in man["front"]:
        tb.add_row(p["id"], f"{p['latency_ms']:.2f}", f"{p['ap']['AP']:.3f}", f"{p['ap']['AP50']:.3f}",
                   f"{p['gflops']:.2f}", p["ap_source"], p["artifact"]["dir"])
    return tb

