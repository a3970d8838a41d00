"""The pre-processing resize per code path: libedgedet_preprocess (src/preprocess.cpp, the resize edgedet::Detector
runs) capped to each code path this CPU has (portable C++, AVX2 kernels, AVX-512 kernels) through
edgedet_preprocess_level, against numpy's core.preprocess, on camera-like frame sizes.

    python benchmarks/resize_code_paths.py [--runs 500]

Builds the library with `edgedet runtime build --preprocess-only` for one demo subnet (no backend SDK needed), then
per (frame, resolution) times each path call by call through ctypes into a reused output buffer (median of `runs`)
and checks every path's tensor against numpy bit for bit. Prints the CPU model, the flags that pick the kernels and
the load average, since the figures hold for this CPU only.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgedet.checkpoint import load_supernet
from edgedet.config import TargetSpec
from edgedet.data.demo import demo_checkpoint
from edgedet.deploy import compile_subnet
from edgedet.devices.agent import cpu_flags, cpu_model
from edgedet.runtime import core
from edgedet.runtime.cpp import build_cpp, preprocess_library_path
from edgedet.runtime.render import import_python_runtime

CASES = ((320, 320, 192), (320, 320, 288), (480, 640, 384), (480, 640, 288), (480, 640, 192), (720, 1280, 384),
         (1080, 1920, 384))  # (frame height, width, resolution)
PATHS = ("portable", "avx2", "avx512")


def median_ms(fn, runs: int) -> float:
    for _ in range(10):
        fn()
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=500)
    a = ap.parse_args()
    flags = cpu_flags()
    print(f"cpu {cpu_model()}, {os.cpu_count()} cores, flags "
          f"{' '.join(f for f in ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16') if f in flags) or '-'}, "
          f"load average {os.getloadavg()[0]:.2f}; median of {a.runs} calls through ctypes, ms\n")
    work = Path(tempfile.mkdtemp(prefix="edgedet-resize-"))
    try:
        t = TargetSpec(name="resize", backend="onnxruntime", precisions=["fp32"], runtime={"threads": 1})
        art = compile_subnet(load_supernet(demo_checkpoint()), "p24-r192-w2-d1-q25", t, "fp32", work / "art",
                             runtime=("python", "cpp"))
        lib = preprocess_library_path(build_cpp(art.dir, jobs=2, preprocess_only=True))
        pre = import_python_runtime(art.dir).CompiledPreprocess(lib)
        top = pre.code_path
        have = PATHS[:PATHS.index(top) + 1] if top in PATHS else ()
        print("| frame -> resolution | numpy | " + " | ".join(have) + " |")
        print("|---|---|" + "---|" * len(have))
        rng = np.random.default_rng(0)
        try:
            for h, w, r in CASES:
                rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                out = np.empty((1, 3, r, r), np.float32)
                ref = core.preprocess(rgb, r)
                row = [median_ms(lambda: core.preprocess(rgb, r, out), a.runs)]
                for level in range(len(have)):
                    pre._level(level)
                    assert np.array_equal(pre(rgb, r), ref), (have[level], h, w, r)
                    row.append(median_ms(lambda: pre(rgb, r, out), a.runs))
                print(f"| {w}x{h} -> {r} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        finally:
            pre._level(2)
        print(f"\nevery path's tensor equal to numpy's bit for bit; load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
