"""One demo subnet, every backend and precision this machine has, in one run: p50 ms and AP each, plus edgedet's
OpenVINO p50 against OpenVINO's own benchmark_app on the same IR and thread settings.

    python benchmarks/backends.py [--checkpoint CKPT] [--subnet ID] [--threads 2] [--images 100]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgedet.backends import get_backend
from edgedet.backends.base import Unsupported
from edgedet.checkpoint import load_supernet
from edgedet.config import CalibrationRecipe, SubnetConfig, TargetSpec
from edgedet.data.coco import CocoDetection
from edgedet.data.demo import demo_checkpoint, demo_data
from edgedet.deploy import compile_subnet
from edgedet.errors import EdgedetError
from edgedet.evaluate import Subset, evaluate_runner
from edgedet.profiler import measure


def benchmark_app_p50(xml: Path, threads: int, res: int, seconds: int = 10) -> float | None:
    """Median latency from OpenVINO's benchmark_app (1 stream, sync requests, f32, same threads)."""
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    if not Path(exe).exists():
        return None
    # benchmark_app only takes explicit streams/threads with -hint none; -api sync is one request at a time, as ours
    out = subprocess.run([exe, "-m", str(xml), "-d", "CPU", "-hint", "none", "-api", "sync", "-nstreams", "1",
                          "-nthreads", str(threads), "-infer_precision", "f32", "-t", str(seconds),
                          "-shape", f"images[1,3,{res},{res}]"], capture_output=True, text=True)
    m = re.search(r"Median:\s+([\d.]+) ms", out.stdout)
    return float(m.group(1)) if m else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--subnet", default="p16-r288-w2-d2-q50")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=100, help="val images for AP")
    ap.add_argument("--runs", type=int, default=100)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    net = load_supernet(a.checkpoint or demo_checkpoint())
    s = SubnetConfig.parse(a.subnet, net.cfg)
    full = CocoDetection(demo_data(), "valid")
    ds = Subset(full, range(min(a.images, len(full))))
    bench = {"warmup": 10, "runs": a.runs, "min_duration_s": 2.0}
    rows = []

    module = net.extract(s)
    x = torch.rand(1, 3, s.resolution, s.resolution)
    with torch.no_grad():
        rec = measure(lambda: module(x), warmup=10, runs=a.runs, min_duration_s=2.0)

        def torch_infer(images):
            return [t.numpy() for t in module(torch.from_numpy(images))]

        rows.append(("torch eager", "fp32", "ok", rec.p50_ms, rec.p90_ms, evaluate_runner(torch_infer, s.resolution,
                                                                                          ds, batch_size=1)["AP50"]))
    recipe = CalibrationRecipe(dataset="demo", images=32)
    tmp = Path(tempfile.mkdtemp(prefix="edgedet-bench-"))
    recipe_path = tmp / "calib.yaml"
    recipe_path.write_text(recipe.model_dump_json())
    ov_fp32_xml, ov_fp32_p50 = None, None
    for backend, precisions in (("onnxruntime", ["fp32", "int8"]), ("openvino", ["fp32", "fp16", "bf16", "int8"]),
                                ("tflite", ["fp32", "fp16", "int8"])):
        t = TargetSpec(name=backend, backend=backend, precisions=precisions, runtime={"threads": a.threads},
                       benchmark=bench)
        for prec in precisions:
            try:
                art = compile_subnet(net, s, t, prec, tmp / f"{backend}-{prec}",
                                     calibration=recipe_path)
                runner = get_backend(backend).load(art, t.runtime.model_dump())
                img = np.random.default_rng(0).random((1, 3, s.resolution, s.resolution), dtype=np.float32)
                rec = measure(lambda: runner.infer(img), **bench)
                ap50 = evaluate_runner(runner.infer, s.resolution, ds, batch_size=1)["AP50"]
                rows.append((backend, prec, "ok", rec.p50_ms, rec.p90_ms, ap50))
                if backend == "openvino" and prec == "fp32":
                    ov_fp32_xml, ov_fp32_p50 = art.model_path, rec.p50_ms
            except (Unsupported, EdgedetError) as e:
                rows.append((backend, prec, str(e).splitlines()[0][:70], None, None, None))
    print(f"subnet {s.id}, batch 1, {a.threads} threads, AP50 on {len(ds)} demo val images, "
          f"cpu {rec.device.get('cpu')}\n")
    print("| runtime | precision | status | p50 ms | p90 ms | AP50 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | " + " | ".join("-" if v is None else f"{v:.3f}" if i == 2 else f"{v:.2f}"
                                                       for i, v in enumerate(r[3:])) + " |")
    if ov_fp32_xml is not None:
        ba = benchmark_app_p50(ov_fp32_xml, a.threads, s.resolution)
        if ba:
            print(f"\nOpenVINO fp32 IR, {a.threads} threads, 1 stream, f32: edgedet p50 {ov_fp32_p50:.2f} ms, "
                  f"benchmark_app median {ba:.2f} ms, ratio {ov_fp32_p50 / ba:.3f}")
        else:
            print("\nbenchmark_app not available or gave no median")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
