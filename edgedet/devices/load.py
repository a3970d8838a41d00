"""How busy this machine was while a measurement ran: load average, CPU frequency where readable, and the share of
the CPUs that other processes used during the timed runs (from /proc/stat and /proc/self/stat: busy time of the
whole machine minus this process's own). The sampling lives in runtime/runners.py (standard library, Linux /proc and
/sys), which the device agent runs too, so local and SSH records carry the same fields; judge() is the host's.

    a = snapshot(); ...timed runs...; load = between(a, snapshot())
    -> {"loadavg_1m", "cpu_mhz", "others_cores", "others_share", "cpus"}
"""
from __future__ import annotations

from ..runtime.runners import cpu_mhz, load_between, load_snapshot

snapshot, between = load_snapshot, load_between  # one implementation: the device agent runs the same code
__all__ = ["snapshot", "between", "cpu_mhz", "judge"]


def judge(rec, max_other_cores: float) -> None:
    """Flag a LatencyRecord noisy (and say why in its note) when other processes used more than `max_other_cores`
    cores on average during its runs (its device['load'], where the device reported one). Idempotent."""
    load = rec.device.get("load") if isinstance(rec.device, dict) else None
    cores = load.get("others_cores") if isinstance(load, dict) else None
    if isinstance(cores, (int, float)) and cores > max_other_cores:
        rec.noisy = True
        why = f"other processes used {cores:.2f} cores"
        if why not in rec.note:
            rec.note = f"{rec.note}; {why}" if rec.note else why
