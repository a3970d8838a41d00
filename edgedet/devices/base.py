"""The device interface the search and `edgedet bench` measure through; a measured device and a latency predictor
are interchangeable behind one call (`measure`).

A Device measures a sealed Artifact at the target's benchmark settings and returns a LatencyRecord (with the
conditions: device info, runtime and version, precision, threads, batch, warm-up, runs, percentiles, spread,
throttle flag). What the device cannot do is raised as backends.base.Unsupported ('unsupported: <reason>'), a lost
or unreachable device as DeviceError: the caller records the first and may retry the second elsewhere.
"""
from __future__ import annotations

import threading

from ..backends.base import Artifact
from ..config import TargetSpec
from ..errors import EdgedetError
from ..profiler import LatencyRecord


class DeviceError(EdgedetError):
    """The device could not be reached or stopped answering (connection refused or lost, timeout, auth failure).
    Unlike Unsupported, the measurement may succeed on another device or later."""


class Device:
    """One place where artifacts run. Subclasses: LocalDevice (this process), SSHDevice (devices/ssh.py)."""

    name: str = "device"

    def __init__(self):
        self.lock = threading.Lock()  # one measurement at a time on one device

    def info(self) -> dict:
        """CPU, cores, memory, GPU, OS, runtime versions, power mode where known."""
        raise NotImplementedError

    def check(self, target: TargetSpec) -> dict:
        """Connection, device info and which runtimes are available: {'device': name, 'info': {...},
        'runtimes': {name: 'ok <version>' or 'missing: <reason>'}, 'backend_ok': bool, 'runtime_version': the
        target backend's runtime version or None}."""
        raise NotImplementedError

    def prepare(self, artifact: Artifact, target: TargetSpec) -> Artifact:
        """Make the artifact runnable on the device (TensorRT: build the engine there). Default: as is."""
        return artifact

    def measure(self, artifact: Artifact, target: TargetSpec) -> LatencyRecord:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
