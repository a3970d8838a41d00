"""compile: one subnet -> a compiled, sealed artifact folder with its runtime; benchmark: latency (and AP) of an
artifact on a target. Both hide the backend behind the target file."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from typing import Callable

import numpy as np

from .backends import get_backend
from .backends.base import Artifact, Unsupported
from .config import SubnetConfig, TargetSpec, load_calibration, load_target, resolve_target
from .errors import ConfigError
from .runtime import runners


def _target(target: TargetSpec | str | Path) -> tuple[TargetSpec, Path | None]:
    if isinstance(target, TargetSpec):
        return target, None
    path = resolve_target(target)
    return load_target(path), path.resolve().parent


def runtime_options(t: TargetSpec) -> dict:
    """The target's runtime options as the runners take them (runtime/runners.py)."""
    return dict(t.runtime.model_dump(), batch=t.benchmark.batch)


def resolve_recipe(t: TargetSpec, base: Path | None, calibration: str | Path | None):
    path = calibration or t.calibration
    if path is None:
        return None, None
    p = Path(path)
    if calibration is None and base is not None and not p.is_absolute():
        p = (base / p).resolve()
    return load_calibration(p), p.parent


RUNTIMES = ("python", "cpp")


def check_runtimes(runtime) -> tuple[str, ...]:
    """Runtime names, as a tuple (a comma list is split); unknown names raise ConfigError."""
    names = (runtime,) if isinstance(runtime, str) else tuple(runtime)
    names = tuple(dict.fromkeys(n.strip() for x in names for n in x.split(",") if n.strip()))
    bad = [n for n in names if n not in RUNTIMES]
    if bad:
        raise ConfigError(f"unknown runtime {bad[0]!r}: runtimes are {', '.join(RUNTIMES)}")
    return names


def render_runtimes(art: Artifact, runtime: tuple[str, ...]) -> dict[str, str]:
    """Write the requested runtimes into the (not yet sealed) artifact folder -> {runtime: its path in the folder,
    or 'unsupported: <reason>' for a backend without that runtime}."""
    from .runtime.cpp import render_cpp, unsupported_reason
    from .runtime.render import render_python

    done = {}
    if "python" in runtime:
        if get_backend(art.backend).caps.python_runtime:
            done["python"] = str(render_python(art).relative_to(art.dir))
        else:
            done["python"] = (f"unsupported: {art.backend} artifacts run through their own scripts "
                              f"(tensorrt: build_engine.py, bench_engine.py on the device)")
    if "cpp" in runtime:
        reason = unsupported_reason(art.backend)
        done["cpp"] = reason or str(render_cpp(art).relative_to(art.dir))
    return done


def check_output(out: Path, t: TargetSpec, subnet_id: str, precision: str, overwrite: bool = False) -> None:
    """`out` may be written by this compile: absent, empty, an earlier artifact of the same compile (same backend,
    precision, subnet and target name), or anything when `overwrite`. ConfigError otherwise (one line)."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"{out}: exists and is not a folder; choose another output folder")
    if not out.exists() or overwrite or not any(out.iterdir()):
        return
    try:
        old = Artifact.open(out)
        same = (old.backend, old.precision, old.metadata.get("subnet"), old.metadata.get("target")) == \
            (t.backend, precision, subnet_id, t.name)
    except ConfigError:
        same = False
    if not same:
        raise ConfigError(f"{out}: not empty and not an earlier artifact of this compile ({subnet_id}, {precision}, "
                          f"target {t.name}); choose an empty folder or pass --overwrite to replace it")


def compile_subnet(net, subnet: SubnetConfig | str, target: TargetSpec | str | Path, precision: str, out: Path,
                   calibration: str | Path | None = None, runtime: tuple[str, ...] = ("python",),
                   options: dict | None = None, overwrite: bool = False,
                   step: Callable[[str], None] | None = None) -> Artifact:
    """Export `subnet` of `net`, compile it for the target's backend at `precision` into `out`, write the runtimes
    (`runtime`: "python" -> the package runtime/python/edgedet_runtime, "cpp" -> the CMake project runtime/cpp), and
    seal the folder (sha256 of every file, runtimes included, in artifact.json). artifact.json records the target's
    runtime options (runtime_options), which every runtime applies by default. Raises Unsupported for what the
    backend cannot do; a runtime a backend lacks is recorded as 'unsupported: ...' in metadata["runtimes"].

    `out` must be absent, empty or an earlier artifact of the same compile (check_output; `overwrite` replaces
    anything). The artifact is built in a sibling temporary folder and renamed onto `out` once sealed: a failed
    compile leaves nothing, and nothing of an earlier folder (a stale runtime project, a build) is ever sealed.
    step(text) is told what is being done (export, calibration images n/N, the backend's compile, checks)."""
    from .calibration import calibration_fn

    t, base = _target(target)
    runtime = check_runtimes(runtime)
    s = SubnetConfig.parse(subnet, net.cfg) if isinstance(subnet, str) else subnet.check(net.cfg)
    if t.max_resolution and s.resolution > t.max_resolution:
        raise Unsupported(f"resolution {s.resolution} exceeds target {t.name} max_resolution {t.max_resolution}")
    backend = get_backend(t.backend)
    caps = backend.caps
    backend.check_precision(precision)
    if precision not in t.precisions:
        raise ConfigError(f"target {t.name} does not list precision {precision} (it lists {', '.join(t.precisions)})")
    check_output(out, t, s.id, precision, overwrite)
    recipe, rbase = resolve_recipe(t, base, calibration)
    # int8 calibrates on the recipe; TensorRT also ships the images for its FP16 range check and on-device checks
    say = step or (lambda text: None)
    calib = None
    if recipe is not None and caps.needs_calibration(precision):
        calib = calibration_fn(recipe, rbase, on_image=lambda n, total: say(f"calibration images {n}/{total}"))
    module = net.extract(s)
    meta = {"subnet": s.id, "resolution": s.resolution, "num_classes": net.cfg.num_classes,
            "class_names": net.cfg.class_names, "category_ids": net.cfg.category_ids, "target": t.name,
            "supernet": net.cfg.name,
            "calibration": recipe.model_dump() if calib else None}
    opts = dict(runtime_options(t), torch_module=module, **(options or {}))
    try:  # what every runtime applies by default: the options this target measures the artifact with
        recorded = runners.runtime_options(t.backend, opts)
    except ValueError as e:
        raise ConfigError(f"target {t.name}: runtime options: {e}") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.compiling-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # an ordinary folder once renamed (mkdtemp makes it private)
    try:
        art = _compile_into(work, backend, module, s, precision, calib, dict(opts, recorded=recorded), meta, runtime,
                            net.cfg.class_names, say)
        if out.exists():
            shutil.rmtree(out)
        os.rename(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    art.dir = out
    return art


def _compile_into(work: Path, backend, module, s: SubnetConfig, precision: str, calib, opts: dict, meta: dict,
                  runtime: tuple[str, ...], class_names, say: Callable[[str], None]) -> Artifact:
    """compile_subnet's steps in the folder `work`: export, backend compile, the recorded runtime options
    (opts["recorded"]), runtimes, the fp32 check against torch, seal."""
    from .model.export import export_onnx

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        say("export ONNX")
        export_onnx(module, onnx_path, class_names=class_names)
        say(f"{backend.name} {precision}" + (" (calibrating)" if calib is not None else ""))
        art = backend.compile(onnx_path, precision, work, calib, opts, meta)
    art.metadata["compile_s"] = round(time.perf_counter() - t0, 2)
    art.runtime_options = opts["recorded"]
    if runtime:
        say("runtimes " + ", ".join(runtime))
    art.metadata["runtimes"] = render_runtimes(art, runtime)
    if precision == "fp32" and backend.caps.runs_on_host:  # the fp32 artifact must match torch
        say("check against torch")
        runner = backend.load(art, opts)
        import torch

        x = torch.rand(1, 3, s.resolution, s.resolution, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = [r.numpy() for r in module(x)]
        got = runner.infer(x.numpy())
        art.metadata["max_abs_diff_vs_torch"] = {k: float(np.abs(np.asarray(a) - b).max())
                                                 for k, a, b in zip(("boxes", "logits"), got, ref)}
    return art.seal()


def benchmark_artifact(artifact: Artifact | str | Path, target: TargetSpec | str | Path, data: str | Path | None = None,
                       with_ap: bool = True, batch_size: int = 8) -> dict:
    """One row: format, precision, status ('ok' or 'unsupported: ...'), size MB, AP (from the artifact's own
    outputs), latency record at the target's settings."""
    t, _ = _target(target)
    art = artifact if isinstance(artifact, Artifact) else Artifact.open(Path(artifact))
    size = sum((art.dir / f).stat().st_size for f in art.files if not f.startswith("runtime/")) / 1e6
    row = {"artifact": str(art.dir), "subnet": art.metadata.get("subnet"), "format": art.backend,
           "precision": art.precision, "size_mb": round(size, 2), "status": "ok", "ap": None, "latency": None}
    bad = art.verify()
    if bad:
        row["status"] = f"error: files changed since compile: {', '.join(bad)}"
        return row
    if t.backend != art.backend:
        raise ConfigError(f"artifact {art.dir} is for {art.backend}, target {t.name} runs {t.backend}")
    from .devices import DeviceError, open_devices

    devices = open_devices(t)
    dev, runner = devices[0], None
    try:
        art = dev.prepare(art, t)
        if t.device.type == "local":
            runner = dev.load(art, t)
            rec = dev.measure(art, t, runner=runner)
        else:
            rec = dev.measure(art, t)
    except (Unsupported, DeviceError) as e:
        row["status"] = str(e) if isinstance(e, Unsupported) else f"error: {e}"
        return row
    finally:
        for d in devices:
            d.close()
    row["latency"] = rec.to_dict()
    if with_ap:
        from .data.coco import CocoDetection
        from .data.demo import demo_data
        from .evaluate import evaluate_runner

        ds = CocoDetection(Path(data) if data else demo_data(), "valid", labels=art.metadata)
        backend = get_backend(art.backend)
        if runner is None and backend.caps.runs_on_host and backend.available() is None:
            runner = backend.load(art, runtime_options(t))  # the same file, run here
        if runner is not None:
            row["ap"] = evaluate_runner(runner.infer, art.resolution, ds, batch_size=1)
    return row
