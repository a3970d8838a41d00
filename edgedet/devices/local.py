"""The machine edgedet runs on: artifacts load in this process through their backend and are timed by the
profiler."""
from __future__ import annotations

import numpy as np

from ..backends import get_backend
from ..backends.base import Artifact, Unsupported
from ..config import TargetSpec
from ..profiler import LatencyRecord, device_info, measure
from .base import Device


def runtime_options(t: TargetSpec) -> dict:
    return t.runtime.model_dump()


_PACKAGES = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",), "tensorrt": ("tensorrt",),
             "tflite": ("ai-edge-litert", "tflite-runtime", "tensorflow")}


def _version(backend: str) -> str:
    """Version of the package that runs `backend` here (the runtime version measurements are keyed by)."""
    from importlib.metadata import PackageNotFoundError, version

    for pkg in _PACKAGES.get(backend, ()):
        try:
            return f"{pkg} {version(pkg)}"
        except PackageNotFoundError:
            continue
    return "available"


class LocalDevice(Device):
    name = "local"

    def info(self) -> dict:
        return device_info()

    def check(self, target: TargetSpec) -> dict:
        from ..backends import BACKEND_NAMES

        runtimes = {}
        for name in BACKEND_NAMES:
            why = get_backend(name).available()
            runtimes[name] = _version(name) if why is None else f"missing: {why}"
        return {"device": self.name, "info": self.info(), "runtimes": runtimes,
                "backend_ok": not runtimes.get(target.backend, "missing").startswith("missing")}

    def load(self, artifact: Artifact, target: TargetSpec):
        return get_backend(artifact.backend).load(artifact, runtime_options(target))

    def measure(self, artifact: Artifact, target: TargetSpec, runner=None) -> LatencyRecord:
        if artifact.backend == "tensorrt":
            raise Unsupported("TensorRT engines are built and timed on their GPU device (an ssh target), "
                              "not on this machine")
        runner = runner or self.load(artifact, target)
        b = target.benchmark
        x = np.random.default_rng(0).random((b.batch, 3, artifact.resolution, artifact.resolution), dtype=np.float32)
        pin = list(range(target.runtime.threads)) if target.runtime.pin_threads and target.runtime.threads else None
        with self.lock:
            rec = measure(lambda: runner.infer(x), warmup=b.warmup, runs=b.runs, min_duration_s=b.min_duration_s,
                          cooldown_ms=b.cooldown_ms, batch=b.batch, noise_threshold=b.noise_threshold, pin_cpus=pin)
        rec.runtime = runner.info()
        return rec
