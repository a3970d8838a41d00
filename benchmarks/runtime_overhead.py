"""What the shipped runtimes add to raw inference: Python runtime detect() / raw inference and C++ detect() / raw
inference, for the front subnets of the demo. Goals: Python <= 1.10x, C++ <= 1.03x.

    python benchmarks/runtime_overhead.py [--manifest runs/search/demo/manifest.json | --subnet ID ...]
                                          [--threads 2] [--runs 200] [--rounds 3]

Per subnet (default: the demo front, or p24-r192-w2-d1-q25, p16-r288-w2-d2-q25, p12-r288-w2-d3-q100 when no manifest
is given), on the first demo val image (320x320):
  Python  the artifact's own runtime/python package (Detector.detect: core.preprocess + the runner + postprocess)
          against the same runner's infer() on the preprocessed tensor, alternating call by call in this process;
          for the ONNX Runtime artifact (the demo's target, targets/local_cpu.yaml) and the OpenVINO one
  Python, compiled pre   the same with Detector(preprocess_library=libedgedet_preprocess): the C++ runtime's
          resize (src/preprocess.cpp, built from the OpenVINO project) through ctypes, the same tensor bit for bit;
          the resize's code path (portable / avx2 / avx512, picked from the CPU) is printed under the table
  C++     edgedet_example --time (OpenVINO: the C++ SDK available here): detect() and InferRequest::infer() alone,
          alternating call by call in that process
Each is run in `rounds` rounds (so that slow drift of a shared machine hits every figure); the table shows the median
over rounds of the p50s and their ratio, plus pre/post-processing alone. The header says the conditions: CPU model
and flags, cores, load average, runtime versions, threads.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from edgedet.checkpoint import load_supernet
from edgedet.config import TargetSpec, load_manifest
from edgedet.data.demo import demo_checkpoint
from edgedet.data.synthetic import generate
from edgedet.deploy import compile_subnet
from edgedet.runtime import core
from edgedet.runtime.cpp import build_cpp, example_path, preprocess_library_path
from edgedet.runtime.render import import_python_runtime

DEFAULT_SUBNETS = ("p24-r192-w2-d1-q25", "p16-r288-w2-d2-q25", "p12-r288-w2-d3-q100")
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8")


def conditions(threads: int) -> str:
    from edgedet.devices.agent import cpu_flags, cpu_model

    model, flags = cpu_model(), cpu_flags()
    import onnxruntime
    import openvino

    return (f"cpu {model}, {os.cpu_count()} cores, flags {' '.join(f for f in FLAGS if f in flags) or '-'}, "
            f"load average {os.getloadavg()[0]:.2f}; onnxruntime {onnxruntime.__version__}, openvino "
            f"{openvino.get_version()}, {threads} threads, fp32, batch 1")


def python_round(det, rgb: np.ndarray, runs: int) -> dict:
    """detect() and raw infer() alternating call by call; pre/post-processing timed alone after them."""
    x = det.preprocess(rgb, det.resolution)
    for _ in range(10):
        det.detect(rgb)
        det.runner.infer(x)
    t_det, t_inf, t_pre, t_post = [], [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        det.detect(rgb)
        t1 = time.perf_counter()
        boxes, logits = det.runner.infer(x)
        t2 = time.perf_counter()
        t_det.append(t1 - t0)
        t_inf.append(t2 - t1)
    for _ in range(runs):
        t0 = time.perf_counter()
        det.preprocess(rgb, det.resolution)
        t1 = time.perf_counter()
        core.postprocess(boxes, logits, [rgb.shape[:2]], det.topk, det.threshold)
        t2 = time.perf_counter()
        t_pre.append(t1 - t0)
        t_post.append(t2 - t1)
    med = lambda v: 1e3 * statistics.median(v)  # noqa: E731
    return {"detect": med(t_det), "infer": med(t_inf), "pre": med(t_pre), "post": med(t_post)}


def postprocess_at_coco_size(runs: int) -> str:
    """core.postprocess at an imported RF-DETR's size (300 queries x 91 classes, top 100): the partition in
    core.top_order against the full stable argsort it replaces (same indices, checked here)."""
    rng = np.random.default_rng(0)
    boxes = rng.random((1, 300, 4), dtype=np.float32)
    logits = (rng.standard_normal((1, 300, 91)) * 2 - 5).astype(np.float32)
    flat = logits.reshape(-1)
    assert np.array_equal(core.top_order(flat, 100), np.argsort(-flat, kind="stable")[:100])
    t_post, t_sort = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        core.postprocess(boxes, logits, [(480, 640)], 100, 0.3)
        t1 = time.perf_counter()
        np.argsort(-flat, kind="stable")[:100]
        t2 = time.perf_counter()
        t_post.append(t1 - t0)
        t_sort.append(t2 - t1)
    return (f"postprocess at RF-DETR COCO size (300 queries x 91 classes, top 100): p50 "
            f"{1e3 * statistics.median(t_post):.3f} ms; the full stable argsort alone it replaced: "
            f"{1e3 * statistics.median(t_sort):.3f} ms")


def cpp_round(exe: Path, art: Path, ppm: Path, threads: int, runs: int) -> dict:
    p = subprocess.run([str(exe), "--artifact", str(art), "--threads", str(threads), "--time", str(runs), "--warmup",
                        "10", str(ppm)], capture_output=True, text=True, check=True)
    rec = json.loads(p.stdout)
    return {"detect": rec["detect_p50_ms"], "infer": rec["infer_p50_ms"], "pre": rec["preprocess_p50_ms"],
            "post": rec["postprocess_p50_ms"], "path": rec.get("resize_code_path", "?")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--manifest", type=Path, default=None, help="take the subnets of this manifest's front")
    ap.add_argument("--subnet", action="append", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-cpp", action="store_true", help="Python runtime only")
    a = ap.parse_args()
    if a.subnet:
        subnets = a.subnet
    elif a.manifest:
        subnets = list(dict.fromkeys(p.subnet for p in load_manifest(a.manifest).front))
    else:
        subnets = list(DEFAULT_SUBNETS)
    net = load_supernet(a.checkpoint or demo_checkpoint())
    work = Path(tempfile.mkdtemp(prefix="edgedet-overhead-"))
    try:
        generate(work / "val", 0, 1, seed=0, image_size=320)  # the first demo val image
        rgb = np.array(Image.open(next((work / "val" / "valid").glob("*.jpg"))).convert("RGB"))
        ppm = work / "img.ppm"
        ppm.write_bytes(b"P6\n%d %d\n255\n" % (rgb.shape[1], rgb.shape[0]) + rgb.tobytes())
        print(conditions(a.threads) + f"; image {rgb.shape[1]}x{rgb.shape[0]}, {a.runs} runs x {a.rounds} rounds "
              "(median of the rounds' p50)\n")
        cases, lib = [], None
        for sid in subnets:
            for backend in ("onnxruntime", "openvino"):
                t = TargetSpec(name=f"overhead_{backend}", backend=backend, precisions=["fp32"],
                               runtime={"threads": a.threads})
                art = compile_subnet(net, sid, t, "fp32", work / backend / sid, runtime=("python", "cpp"))
                if backend == "openvino" and not a.no_cpp:
                    build = build_cpp(art.dir, jobs=2)
                    exe = example_path(build)
                    lib = lib or preprocess_library_path(build)
                elif lib is None:  # the compiled pre-processing alone needs no backend SDK
                    lib = preprocess_library_path(build_cpp(art.dir, jobs=2, preprocess_only=True))
                rt = import_python_runtime(art.dir)
                det = rt.Detector()
                cases.append((sid, f"Python {backend}", lambda det=det: python_round(det, rgb, a.runs)))
                fast = rt.Detector(preprocess_library=lib)
                cases.append((sid, f"Python {backend}, compiled pre", lambda det=fast: python_round(det, rgb,
                                                                                                    a.runs)))
                if backend == "openvino" and not a.no_cpp:
                    cases.append((sid, "C++ openvino", lambda exe=exe, d=art.dir: cpp_round(exe, d, ppm, a.threads,
                                                                                             a.runs)))
        rounds: dict[tuple[str, str], list[dict]] = {(s, k): [] for s, k, _ in cases}
        for _ in range(a.rounds):
            for sid, kind, fn in cases:
                rounds[(sid, kind)].append(fn())
        print("| subnet | runtime | detect p50 ms | raw infer p50 ms | detect / raw infer | goal | pre / post ms |")
        print("|---|---|---|---|---|---|---|")
        for (sid, kind), rs in rounds.items():
            m = {k: statistics.median(r[k] for r in rs) for k in ("detect", "infer", "pre", "post")}
            goal = 1.03 if kind.startswith("C++") else 1.10
            ratio = m["detect"] / m["infer"]
            print(f"| {sid} | {kind} | {m['detect']:.2f} | {m['infer']:.2f} | {ratio:.3f} | "
                  f"{'<=' if ratio <= goal else '>'} {goal:.2f} | {m['pre']:.3f} / {m['post']:.3f} |")
        paths = {f"{k} ({r['path']})" for (_, k), rs in rounds.items() for r in rs if "path" in r}
        if lib is not None:
            paths.add(f"Python compiled pre ({import_python_runtime(art.dir).CompiledPreprocess(lib).code_path})")
        print("\nresize code path: " + ", ".join(sorted(paths)))
        print("\n" + postprocess_at_coco_size(a.runs))
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
