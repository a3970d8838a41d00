"""Devices a target's artifacts are measured on: this machine, or hosts reached over SSH (a pool when a target
lists several)."""
from __future__ import annotations

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


__all__ = ["Device", "DeviceError", "DevicePool", "LocalDevice", "open_devices"]
