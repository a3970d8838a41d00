"""Run ON the device, in the artifact folder after build_engine.py:
`python3 bench_engine.py [--warmup 10] [--runs 100] [--cooldown-ms 200] [--batch 1] [--outputs out.npz]`.

Times model.engine (execute_async_v3 on its own stream; host<->device copies excluded, like trtexec's GPU compute
time) with CUDA events, after a warm-up, with an optional pause between runs (GPU clocks/thermals), and prints one
JSON record with p50/p90/p99 (and host-side perf_counter percentiles). Input: the first calib.npz image, else seeded
uniform noise. `--outputs` also runs every calib.npz image and saves boxes/logits for host-side accuracy checks.
CUDA is reached through libcudart with ctypes (what Polygraphy does): needs python3, numpy and tensorrt only.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NO_TRT = ("bench_engine.py: tensorrt is not importable here; run this script on the device "
          "(pip install tensorrt, or JetPack's python3-libnvinfer)")
H2D, D2H = 1, 2  # cudaMemcpyKind


class CudaRT:
    """The libcudart calls TensorRT execution needs: device memory, a stream, events."""

    def __init__(self):
        self.lib = self._load()
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        sig = {"cudaMalloc": [ctypes.POINTER(vp), sz], "cudaFree": [vp],
               "cudaMemcpyAsync": [vp, vp, sz, ctypes.c_int, vp],
               "cudaStreamCreate": [ctypes.POINTER(vp)], "cudaStreamSynchronize": [vp],
               "cudaEventCreate": [ctypes.POINTER(vp)], "cudaEventRecord": [vp, vp],
               "cudaEventSynchronize": [vp], "cudaEventElapsedTime": [ctypes.POINTER(ctypes.c_float), vp, vp]}
        for name, args in sig.items():
            getattr(self.lib, name).argtypes = args
            getattr(self.lib, name).restype = ctypes.c_int
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p

    @staticmethod
    def _load():
        cands = [ctypes.util.find_library("cudart")]
        cands += sorted(glob.glob("/usr/local/cuda*/lib64/libcudart.so*"), reverse=True)
        wheel = "nvidia/cuda_runtime/lib/libcudart.so*"  # the nvidia-cuda-runtime pip package
        cands += sorted((f for p in sys.path for f in glob.glob(os.path.join(p, wheel))), reverse=True)
        for c in [x for x in cands if x] + ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]:
            try:
                return ctypes.CDLL(c)
            except OSError:
                continue
        raise RuntimeError("libcudart (CUDA runtime) not found: add the CUDA lib64 folder to LD_LIBRARY_PATH")

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise RuntimeError(f"{what}: CUDA error {rc} ({self.lib.cudaGetErrorString(rc).decode()})")

    def _new(self, fn: str) -> ctypes.c_void_p:
        h = ctypes.c_void_p()
        self.check(getattr(self.lib, fn)(ctypes.byref(h)), fn)
        return h

    def malloc(self, nbytes: int) -> int:
        p = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(p), max(int(nbytes), 1)), "cudaMalloc")
        return int(p.value)

    def free(self, ptr: int) -> None:
        self.lib.cudaFree(ctypes.c_void_p(ptr))

    def copy(self, dst: int, src: int, nbytes: int, kind: int, stream) -> None:
        self.check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src), nbytes, kind, stream),
                   "cudaMemcpyAsync")

    def stream(self) -> ctypes.c_void_p:
        return self._new("cudaStreamCreate")

    def sync(self, stream) -> None:
        self.check(self.lib.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def event(self) -> ctypes.c_void_p:
        return self._new("cudaEventCreate")

    def record(self, event, stream) -> None:
        self.check(self.lib.cudaEventRecord(event, stream), "cudaEventRecord")

    def elapsed_ms(self, start, end) -> float:
        self.check(self.lib.cudaEventSynchronize(end), "cudaEventSynchronize")
        ms = ctypes.c_float()
        self.check(self.lib.cudaEventElapsedTime(ctypes.byref(ms), start, end), "cudaEventElapsedTime")
        return float(ms.value)


class EngineSession:
    """A deserialized engine with device buffers bound for one input shape; run() copies in, executes, copies out."""

    def __init__(self, engine_path: Path, batch: int = 1, cuda: CudaRT | None = None):
        import tensorrt as trt

        self.trt, self.cuda = trt, cuda or CudaRT()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{engine_path}: TensorRT could not deserialize it (other GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.buffers: dict[str, tuple[int, np.ndarray]] = {}
        self.batch = batch

    def bind(self, shape: tuple[int, ...]) -> None:
        if "images" in self.buffers and self.buffers["images"][1].shape == tuple(shape):
            return
        for ptr, _ in self.buffers.values():
            self.cuda.free(ptr)
        self.buffers = {}
        if not self.context.set_input_shape("images", tuple(shape)):
            raise RuntimeError(f"input shape {tuple(shape)} is outside the engine's optimization profile")
        for n in self.names:
            host = np.empty(tuple(self.context.get_tensor_shape(n)), self.trt.nptype(self.engine.get_tensor_dtype(n)))
            ptr = self.cuda.malloc(host.nbytes)
            self.context.set_tensor_address(n, ptr)
            self.buffers[n] = (ptr, host)

    def execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.value or 0):
            raise RuntimeError("execute_async_v3 failed")

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self.bind(images.shape)
        ptr, host = self.buffers["images"]
        np.copyto(host, images.astype(host.dtype, copy=False))
        self.cuda.copy(ptr, host.ctypes.data, host.nbytes, H2D, self.stream)
        self.execute()
        outs = {n: b for n, b in self.buffers.items() if n not in self.inputs}
        for ptr, h in outs.values():
            self.cuda.copy(h.ctypes.data, ptr, h.nbytes, D2H, self.stream)
        self.cuda.sync(self.stream)
        return {n: h.copy() for n, (_, h) in outs.items()}


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, np.float64)
    p10, p50, p90, p99 = np.percentile(a, [10, 50, 90, 99])
    return {"p50": round(p50, 4), "p90": round(p90, 4), "p99": round(p99, 4), "mean": round(a.mean(), 4),
            "min": round(a.min(), 4), "max": round(a.max(), 4), "noise": round((p90 - p10) / p50, 4)}


def gpu_state() -> str | None:
    """SM clock / max / temperature / power from nvidia-smi (absent on Jetson: use tegrastats there)."""
    if not shutil.which("nvidia-smi"):
        return None
    q = "--query-gpu=clocks.sm,clocks.max.sm,temperature.gpu,power.draw"
    r = subprocess.run(["nvidia-smi", q, "--format=csv,noheader"], capture_output=True, text=True)
    return r.stdout.strip() or None


def bench(session: EngineSession, images: np.ndarray, warmup: int, runs: int, cooldown_ms: float,
          min_duration_s: float) -> dict:
    cuda, s = session.cuda, session.stream
    session.run(images)
    for _ in range(warmup):
        session.execute()
    cuda.sync(s)
    start, end = cuda.event(), cuda.event()
    gpu, host = [], []
    deadline = time.perf_counter() + min_duration_s
    while len(gpu) < runs or time.perf_counter() < deadline:
        if cooldown_ms:
            time.sleep(cooldown_ms / 1e3)
        t0 = time.perf_counter()
        cuda.record(start, s)
        session.execute()
        cuda.record(end, s)
        gpu.append(cuda.elapsed_ms(start, end))
        host.append((time.perf_counter() - t0) * 1e3)
    g = percentiles(gpu)
    return {"timer": "cuda_events", "runs": len(gpu), "p50_ms": g["p50"], "p90_ms": g["p90"], "p99_ms": g["p99"],
            "gpu_ms": g, "host_ms": percentiles(host)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=HERE)
    ap.add_argument("--engine", default="model.engine")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--min-duration-s", type=float, default=1.0)
    ap.add_argument("--cooldown-ms", type=float, default=0.0)
    ap.add_argument("--outputs", type=Path, help="save boxes/logits of every calib.npz image here (.npz)")
    args = ap.parse_args(argv)
    try:
        import tensorrt as trt
    except ImportError:
        print(NO_TRT, file=sys.stderr)
        return 2
    engine = args.dir / args.engine
    if not engine.is_file():
        print(f"bench_engine.py: {engine} not found: run build_engine.py first", file=sys.stderr)
        return 3
    calib = args.dir / "calib.npz"
    images = np.load(calib)["images"] if calib.is_file() else None
    with open(args.dir / "trt_build.json") as f:
        r = json.load(f)["resolution"]
    x = images[:1] if images is not None else np.random.default_rng(0).random((1, 3, r, r), dtype=np.float32)
    x = np.ascontiguousarray(np.repeat(x, args.batch, 0), np.float32)
    try:
        session = EngineSession(engine, args.batch)
        before = gpu_state()
        record = bench(session, x, args.warmup, args.runs, args.cooldown_ms, args.min_duration_s)
        if args.outputs is not None and images is not None:
            outs = [session.run(np.ascontiguousarray(images[i : i + 1])) for i in range(images.shape[0])]
            np.savez(args.outputs, **{k: np.concatenate([o[k] for o in outs]) for k in outs[0]})
    except RuntimeError as e:
        print(f"bench_engine.py: {e}", file=sys.stderr)
        return 3
    build = args.dir / "build.json"
    record.update(engine=str(engine), tensorrt_version=trt.__version__, batch=args.batch, resolution=r,
                  warmup=args.warmup, cooldown_ms=args.cooldown_ms, gpu_state_before=before,
                  gpu_state_after=gpu_state(),
                  build=json.loads(build.read_text()) if build.is_file() else None,
                  input="calib.npz[0]" if images is not None else "uniform noise (seed 0)")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
