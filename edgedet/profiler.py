"""Latency measurement with its conditions: warm-up, then runs until both `runs` and `min_duration_s` are met,
optional cooldown pause between runs; p50/p90/p99, spread and a noise/throttle flag; device and runtime info.

Every figure is a LatencyRecord; nothing reports a bare number.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable


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


def device_info() -> dict:
    """What this process runs on: the same fields (and the same code) as the on-device agent's, GPU and Jetson power
    mode included where present."""
    from .devices import agent

    return agent.device_info()


def measure(fn: Callable[[], object], warmup: int = 10, runs: int = 100, min_duration_s: float = 1.0,
            cooldown_ms: float = 0.0, batch: int = 1, noise_threshold: float = 0.15,
            max_runs: int = 100_000, pin_cpus: list[int] | None = None) -> LatencyRecord:
    """Time fn() (one inference) after warm-up; stops after >= runs and >= min_duration_s (capped by max_runs).

    The timing loop and the statistics are runtime/runners.py's (time_runs, summarize), which the device agent runs
    too, so a record measured here and one measured over SSH mean the same thing."""
    from .runtime import runners

    times, total = runners.time_runs(fn, warmup=warmup, runs=runs, min_duration_s=min_duration_s,
                                     cooldown_ms=cooldown_ms, max_runs=max_runs, pin_cpus=pin_cpus)
    rec = LatencyRecord(**runners.summarize(times, total, warmup, batch, cooldown_ms, noise_threshold))
    rec.device = device_info()
    return rec
