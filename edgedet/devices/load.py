"""How busy this machine was while a measurement ran: load average, CPU frequency where readable, and the share of
the CPUs that other processes used during the timed runs (from /proc/stat and /proc/self/stat: busy time of the
whole machine minus this process's own). Standard library only, Linux /proc and /sys; elsewhere the fields are None.

    a = snapshot(); ...timed runs...; load = between(a, snapshot())
    -> {"loadavg_1m", "cpu_mhz", "others_cores", "others_share", "cpus"}
"""
from __future__ import annotations

import glob
import os


def _ticks() -> tuple[int, int, int] | None:
    """(busy, total) jiffies of all CPUs and this process's user+system jiffies, or None."""
    try:
        with open("/proc/stat") as f:
            cpu = [int(v) for v in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    total = sum(cpu)
    idle = cpu[3] + cpu[4]  # idle + iowait
    return total - idle, total, int(own[11]) + int(own[12])  # utime + stime


def snapshot():
    return _ticks()


def cpu_mhz() -> float | None:
    """Mean current frequency over the CPUs (cpufreq, else /proc/cpuinfo), MHz."""
    vals = []
    for p in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"):
        try:
            vals.append(int(open(p).read()) / 1000)
        except (OSError, ValueError):
            pass
    if not vals:
        try:
            vals = [float(ln.split(":")[1]) for ln in open("/proc/cpuinfo") if ln.startswith("cpu MHz")]
        except (OSError, ValueError, IndexError):
            vals = []
    return round(sum(vals) / len(vals), 1) if vals else None


def between(a, b) -> dict:
    """The load of the machine between two snapshots: others_share is the fraction of all CPUs' time that other
    processes were busy (0..1), others_cores the same in cores."""
    n = os.cpu_count() or 1
    out = {"loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None, "cpu_mhz": cpu_mhz(),
           "others_share": None, "others_cores": None, "cpus": n}
    if a and b and b[1] > a[1]:
        share = max(0.0, min(1.0, ((b[0] - a[0]) - (b[2] - a[2])) / (b[1] - a[1])))
        out.update(others_share=round(share, 3), others_cores=round(share * n, 2))
    return out


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
