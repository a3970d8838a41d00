"""The machine edgedet runs on: artifacts load in this process through their backend and are timed by the
profiler.

Two edgedet processes never time on this machine at once: loading and timing hold an exclusive flock on
~/.cache/edgedet/local-device.lock (EDGEDET_LOCAL_LOCK overrides the path), the on-device agent's DeviceLock; the
record's device.lock says how long the measurement waited for it and when it held it, its device.load how busy the
machine was meanwhile (devices/load.py; a measurement during which other processes were busy is flagged noisy).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..backends import get_backend
from ..backends.base import Artifact, Unsupported
from ..config import TargetSpec
from ..deploy import runtime_options
from ..profiler import LatencyRecord, device_info, measure
from ..runtime import runners
from . import load
from .base import Device, DeviceError

LOCK_TIMEOUT_S = 3600.0


def lock_path() -> str:
    return os.environ.get("EDGEDET_LOCAL_LOCK") or str(Path.home() / ".cache" / "edgedet" / "local-device.lock")


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
        from .agent import DeviceLock

        b = target.benchmark
        x = runners.RUNNERS[artifact.backend].bench_input(str(artifact.dir), artifact.describe(), b.batch)
        pin = list(range(target.runtime.threads)) if target.runtime.pin_threads and target.runtime.threads else None
        try:
            with self.lock, DeviceLock(lock_path(), LOCK_TIMEOUT_S) as lock:
                runner = runner or self.load(artifact, target)  # loading is work on this machine too
                held_from, before = time.time(), load.snapshot()
                rec = measure(lambda: runner.infer(x), warmup=b.warmup, runs=b.runs, min_duration_s=b.min_duration_s,
                              cooldown_ms=b.cooldown_ms, batch=b.batch, noise_threshold=b.noise_threshold,
                              pin_cpus=pin)
                held_to, after = time.time(), load.snapshot()
        except TimeoutError as e:
            raise DeviceError(f"this machine: {e}") from None
        rec.runtime = runner.info()
        rec.device["lock"] = {"path": lock.path, "waited_s": lock.waited_s, "held_from": held_from,
                              "held_to": held_to}
        rec.device["load"] = load.between(before, after)
        load.judge(rec, b.max_other_cores)
        return rec
