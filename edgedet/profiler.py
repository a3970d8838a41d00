"""Latency measurement with its conditions: warm-up, then runs until both `runs` and `min_duration_s` are met,
optional cooldown pause between runs; p50/p90/p99, spread and a noise/throttle flag; device and runtime info.

Every figure is a LatencyRecord; nothing reports a bare number.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np


@dataclass
class LatencyRecord:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    spread: float  # (p90 - p10) / p50
    noisy: bool  # spread above the target's noise_threshold, or later runs clearly slower (throttling)
    runs: int
    warmup: int
    batch: int
    cooldown_ms: float
    duration_s: float
    runtime: dict = field(default_factory=dict)  # runtime, version, precision in effect, threads, device
    device: dict = field(default_factory=dict)
    note: str = ""

    def percentile(self, p: int) -> float:
        return {50: self.p50_ms, 90: self.p90_ms, 99: self.p99_ms}[p]

    def to_dict(self) -> dict:
        return asdict(self)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict:
    """What this process runs on (the same fields the on-device agent reports)."""
    info = {"hostname": platform.node(), "os": f"{platform.system()} {platform.release()}",
            "machine": platform.machine(), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "python": platform.python_version()}
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        info["affinity"] = sorted(os.sched_getaffinity(0))
    except (ValueError, OSError, AttributeError):
        pass
    return info


def measure(fn: Callable[[], object], warmup: int = 10, runs: int = 100, min_duration_s: float = 1.0,
            cooldown_ms: float = 0.0, batch: int = 1, noise_threshold: float = 0.15,
            max_runs: int = 100_000, pin_cpus: list[int] | None = None) -> LatencyRecord:
    """Time fn() (one inference) after warm-up; stops after >= runs and >= min_duration_s (capped by max_runs)."""
    old_aff = None
    if pin_cpus:
        old_aff = os.sched_getaffinity(0)
        os.sched_setaffinity(0, pin_cpus)
    try:
        for _ in range(warmup):
            fn()
        times = []
        start = time.perf_counter()
        while len(times) < runs or (time.perf_counter() - start < min_duration_s and len(times) < max_runs):
            if cooldown_ms and times:
                time.sleep(cooldown_ms / 1e3)
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        total = time.perf_counter() - start
    finally:
        if old_aff is not None:
            os.sched_setaffinity(0, old_aff)
    a = np.asarray(times)
    p10, p50, p90, p99 = np.percentile(a, [10, 50, 90, 99])
    spread = float((p90 - p10) / p50) if p50 > 0 else 0.0
    third = max(len(a) // 3, 1)
    drift = float(np.median(a[-third:]) / np.median(a[:third]))  # > 1.1: later runs slower (thermal throttling)
    note = f"last third {drift:.2f}x the first" if drift > 1.1 else ""
    return LatencyRecord(p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99), mean_ms=float(a.mean()),
                         min_ms=float(a.min()), spread=spread, noisy=spread > noise_threshold or drift > 1.1,
                         runs=len(a), warmup=warmup, batch=batch, cooldown_ms=cooldown_ms, duration_s=total,
                         device=device_info(), note=note)
