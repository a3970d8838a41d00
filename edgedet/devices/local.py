"""The machine edgedet runs on: artifacts load in this process through their backend and are timed by the
profiler."""
from __future__ import annotations

from ..backends import get_backend
from ..backends.base import Artifact, Unsupported
from ..config import TargetSpec
from ..deploy import runtime_options
from ..profiler import LatencyRecord, device_info, measure
from ..runtime import runners
from .base import Device


class LocalDevice(Device):
    name = "local"

    def info(self) -> dict:
        return device_info()

    def check(self, target: TargetSpec) -> dict:
        """Runtimes as the agent reports them on a device ('ok <version>' or 'missing: <why>'), imported here."""
        from . import agent

        runtimes = agent.check_runtimes()
        state = runtimes.get(target.backend, "")
        return {"device": self.name, "address": self.name, "info": self.info(), "runtimes": runtimes,
                "backend_ok": state.startswith("ok") and get_backend(target.backend).caps.runs_on_host,
                "runtime_version": state[3:] if state.startswith("ok ") else None}

    def load(self, artifact: Artifact, target: TargetSpec):
        return get_backend(artifact.backend).load(artifact, runtime_options(target))

    def measure(self, artifact: Artifact, target: TargetSpec, runner=None) -> LatencyRecord:
        if not get_backend(artifact.backend).caps.runs_on_host:
            raise Unsupported(f"{artifact.backend} artifacts are built and timed on their device (an ssh target), "
                              "not on this machine")
        runner = runner or self.load(artifact, target)
        b = target.benchmark
        x = runners.RUNNERS[artifact.backend].bench_input(str(artifact.dir), artifact.describe(), b.batch)
        pin = list(range(target.runtime.threads)) if target.runtime.pin_threads and target.runtime.threads else None
        with self.lock:
            rec = measure(lambda: runner.infer(x), warmup=b.warmup, runs=b.runs, min_duration_s=b.min_duration_s,
                          cooldown_ms=b.cooldown_ms, batch=b.batch, noise_threshold=b.noise_threshold, pin_cpus=pin)
        rec.runtime = runner.info()
        return rec
