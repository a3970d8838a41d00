"""Devices a target's artifacts are measured on: this machine, or hosts reached over SSH (a pool when a target
lists several)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ..config import TargetSpec
from .base import Device, DeviceError
from .local import LocalDevice
from .pool import DevicePool


def open_devices(target: TargetSpec) -> list[Device]:
    """The devices of a target: [LocalDevice()] or one SSHDevice per host (connections open lazily)."""
    if target.device.type == "local":
        return [LocalDevice()]
    from .ssh import SSHDevice  # noqa: F401  (needs the `ssh` extra)

    return [SSHDevice(h) for h in target.device.hosts]


def check_devices(target: TargetSpec) -> dict:
    """Every device of a target checked at once: {'target', 'backend', 'devices': [{'device', 'ok', 'error',
    'info', 'runtimes', 'backend_ok', ...}], 'warnings': [...]}. A device is ok when it answered and can run the
    target's backend; one that cannot be reached has `error` (DeviceError's one line) instead of info."""
    devices = open_devices(target)

    def one(d: Device) -> dict:
        try:
            rep = d.check(target)
            rep.update(ok=bool(rep["backend_ok"]), error=None)
        except DeviceError as e:
            rep = {"device": d.name, "address": getattr(d, "address", d.name), "ok": False, "error": str(e)}
        finally:
            d.close()
        return rep

    with ThreadPoolExecutor(len(devices)) as ex:
        reps = list(ex.map(one, devices))
    warnings = []
    if target.device.type == "ssh":
        seen: dict[tuple, int] = {}
        for i, h in enumerate(target.device.hosts):
            j = seen.setdefault((h.host, h.port), i)
            if j != i:
                warnings.append(f"hosts {j} and {i} are the same machine ({h.host}:{h.port}) with different "
                                "workdirs: they measure side by side and disturb each other's timings")
    return {"target": target.name, "backend": target.backend, "devices": reps, "warnings": warnings}


__all__ = ["Device", "DeviceError", "DevicePool", "LocalDevice", "check_devices", "open_devices"]
