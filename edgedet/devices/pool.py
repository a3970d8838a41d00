"""Spread measurements over the devices of a target: one worker thread per device, each taking the next job from a
shared queue; a device that fails with DeviceError is retired and its job goes back to the queue for the others."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator

from .base import Device, DeviceError


class DevicePool:
    def __init__(self, devices: list[Device], retries: int = 1):
        if not devices:
            raise ValueError("a device pool needs at least one device")
        self.devices = list(devices)
        self.retries = retries  # how many times one job may be retried after a DeviceError
        self.dead: dict[str, str] = {}  # device name -> why it was retired

    def run(self, jobs: Iterable, fn: Callable[[Device, object], object]) -> Iterator[tuple[object, object, str]]:
        """Yield (job, result or exception, device name) as jobs finish, in completion order. fn(device, job) runs
        on the device's own thread. Exceptions other than DeviceError are the job's result; a DeviceError retires
        the device and requeues the job (up to `retries` times, then the error is the result). When every device is
        retired, the remaining jobs are yielded with the last DeviceError."""
        todo: queue.Queue = queue.Queue()
        jobs = list(jobs)
        for j in jobs:
            todo.put((j, 0))
        done: queue.Queue = queue.Queue()
        alive = [len(self.devices)]
        lock = threading.Lock()

        def worker(dev: Device):
            while True:
                try:
                    job, tries = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((job, fn(dev, job), dev.name))
                except DeviceError as e:
                    if tries < self.retries:
                        todo.put((job, tries + 1))
                    else:
                        done.put((job, e, dev.name))
                    with lock:
                        self.dead[dev.name] = str(e)
                        alive[0] -= 1
                        last = alive[0] == 0
                    if last:  # nobody left: drain the queue as failures
                        while True:
                            try:
                                j, _ = todo.get_nowait()
                            except queue.Empty:
                                break
                            done.put((j, e, dev.name))
                    return
                except BaseException as e:  # noqa: BLE001 - the job's own failure is its result
                    done.put((job, e, dev.name))

        threads = [threading.Thread(target=worker, args=(d,), daemon=True) for d in self.devices
                   if d.name not in self.dead]
        if not threads:
            for j in jobs:
                yield j, DeviceError("no device left in the pool: " + "; ".join(self.dead.values())), ""
            return
        for t in threads:
            t.start()
        for _ in range(len(jobs)):
            yield done.get()
        for t in threads:
            t.join()
