"""The C++ runtime's cost over raw inference: for demo subnets compiled for OpenVINO fp32, p50/p90 of the C++
`detect()` (pre-processing + inference + post-processing) against the backend's raw inference on the same IR and
threads, and against the Python runtime end to end.

    python benchmarks/cpp_runtime.py [--checkpoint CKPT] [--subnet ID ...] [--threads 2] [--runs 300] [--rounds 3]

Measured per subnet, in `rounds` rounds (each runs every measure once, so that slow drift of a shared machine hits
all of them), reporting the median over rounds of each p50/p90:
  C++ detect      edgedet_example --time: detect() on a 320x320 demo val image
  C++ infer       the same process, interleaved with detect(): InferRequest::infer() alone (the raw inference)
  Python infer    edgedet's OpenVINO runner (openvino.InferRequest.infer) on the preprocessed tensor
  Python runtime  runtime/python/edgedet_runtime Detector.detect() on the same image (numpy pre/post)
  benchmark_app   OpenVINO's own tool on the same IR (1 stream, sync, f32, same threads), median
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from edgedet.backends import get_backend
from edgedet.checkpoint import load_supernet
from edgedet.config import TargetSpec
from edgedet.data.demo import demo_checkpoint
from edgedet.data.synthetic import generate
from edgedet.deploy import compile_subnet
from edgedet.profiler import measure
from edgedet.runtime.core import preprocess
from edgedet.runtime.cpp import build_cpp, example_path
from edgedet.runtime.render import import_python_runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backends import benchmark_app_p50  # noqa: E402


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def bench_subnet(net, subnet: str, rgb: np.ndarray, ppm: Path, work: Path, threads: int, runs: int,
                 rounds: int) -> dict:
    t = TargetSpec(name="cpu_openvino", backend="openvino", precisions=["fp32"],
                   runtime={"threads": threads, "openvino_hint": "LATENCY"})
    art = compile_subnet(net, subnet, t, "fp32", work / subnet, runtime=("python", "cpp"))
    exe = example_path(build_cpp(art.dir, jobs=2))
    runner = get_backend("openvino").load(art, t.runtime.model_dump())
    x = preprocess(rgb, art.resolution)
    det = import_python_runtime(art.dir).Detector(threads=threads)
    rows: dict[str, list[tuple[float, float]]] = {k: [] for k in ("cpp_detect", "cpp_infer", "py_infer", "py_runtime")}
    extra: list[dict] = []
    for _ in range(rounds):
        p = subprocess.run([str(exe), "--artifact", str(art.dir), "--threads", str(threads), "--time", str(runs),
                            "--warmup", "20", str(ppm)], capture_output=True, text=True, check=True)
        rec = json.loads(p.stdout)
        rows["cpp_detect"].append((rec["detect_p50_ms"], rec["detect_p90_ms"]))
        rows["cpp_infer"].append((rec["infer_p50_ms"], rec["infer_p90_ms"]))
        extra.append(rec)
        r = measure(lambda: runner.infer(x), warmup=20, runs=runs, min_duration_s=0)
        rows["py_infer"].append((r.p50_ms, r.p90_ms))
        r = measure(lambda: det.detect(rgb), warmup=20, runs=runs, min_duration_s=0)
        rows["py_runtime"].append((r.p50_ms, r.p90_ms))
    med = {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v)) for k, v in rows.items()}
    return {"subnet": subnet, "median": med, "rounds": rows, "runtime": runner.info(),
            "pre_ms": statistics.median(e["preprocess_p50_ms"] for e in extra),
            "post_ms": statistics.median(e["postprocess_p50_ms"] for e in extra),
            "news_per_detect": extra[-1]["new_calls_per_detect"], "news_per_infer": extra[-1]["new_calls_per_infer"],
            "benchmark_app_ms": benchmark_app_p50(art.model_path, threads, art.resolution)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--subnet", action="append", default=None, help="default: p24-r192-w2-d1-q25, p16-r288-w2-d2-q50")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    subnets = a.subnet or ["p24-r192-w2-d1-q25", "p16-r288-w2-d2-q50"]
    net = load_supernet(a.checkpoint or demo_checkpoint())
    work = Path(tempfile.mkdtemp(prefix="edgedet-cpp-bench-"))
    generate(work / "val", 0, 1, seed=0, image_size=320)  # the first demo val image
    rgb = np.array(Image.open(next((work / "val" / "valid").glob("*.jpg"))).convert("RGB"))
    ppm = work / "img.ppm"
    ppm.write_bytes(b"P6\n%d %d\n255\n" % (rgb.shape[1], rgb.shape[0]) + rgb.tobytes())
    load = os.getloadavg()[0]
    results = [bench_subnet(net, s, rgb, ppm, work, a.threads, a.runs, a.rounds) for s in subnets]
    rt = results[0]["runtime"]
    print(f"cpu {cpu_model()} ({os.cpu_count()} cores, load average {load:.2f} at start), {rt['runtime']} "
          f"{rt['runtime_version']}, {rt['device']} {rt['inference_precision']}, {a.threads} threads, 1 stream, "
          f"batch 1, image {rgb.shape[1]}x{rgb.shape[0]}, {a.runs} runs x {a.rounds} rounds (median of the rounds' "
          f"p50/p90), warm-up 20\n")
    print("| subnet | C++ detect p50 / p90 | C++ raw infer p50 / p90 | detect / raw infer (p50) | "
          "Python raw infer p50 | detect / Python raw infer | Python runtime p50 / p90 | Python runtime / C++ detect "
          "| benchmark_app median | pre / post ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m = r["median"]
        ba = r["benchmark_app_ms"]
        print(f"| {r['subnet']} | {m['cpp_detect'][0]:.2f} / {m['cpp_detect'][1]:.2f} | "
              f"{m['cpp_infer'][0]:.2f} / {m['cpp_infer'][1]:.2f} | {m['cpp_detect'][0] / m['cpp_infer'][0]:.3f} | "
              f"{m['py_infer'][0]:.2f} | {m['cpp_detect'][0] / m['py_infer'][0]:.3f} | "
              f"{m['py_runtime'][0]:.2f} / {m['py_runtime'][1]:.2f} | {m['py_runtime'][0] / m['cpp_detect'][0]:.3f} | "
              f"{'-' if ba is None else f'{ba:.2f}'} | {r['pre_ms']:.3f} / {r['post_ms']:.3f} |")
    print("\nper round p50 (ms): " + "; ".join(
        f"{r['subnet']} " + ", ".join(f"{k} " + "/".join(f"{p:.2f}" for p, _ in v) for k, v in r["rounds"].items())
        for r in results))
    print("operator new calls per call (OpenVINO's own; edgedet's pre/post add none): " + ", ".join(
        f"{r['subnet']} detect {r['news_per_detect']:.0f}, infer {r['news_per_infer']:.0f}" for r in results))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
