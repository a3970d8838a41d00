import threading
import time

import pytest

from edgedet.devices import Device, DeviceError, DevicePool


class Worker(Device):
    """A device whose measurement is a Python function (the pool logic under test does not care what runs)."""

    def __init__(self, name, fail_after=None):
        super().__init__()
        self.name, self.fail_after, self.done = name, fail_after, []

    def run(self, job):
        if self.fail_after is not None and len(self.done) >= self.fail_after:
            raise DeviceError(f"{self.name} lost")
        time.sleep(0.02)
        self.done.append((job, threading.current_thread().name))
        return job * 2


def test_jobs_split_between_devices_in_parallel():
    a, b = Worker("a"), Worker("b")
    pool = DevicePool([a, b])
    t0 = time.perf_counter()
    out = list(pool.run(range(20), lambda d, j: d.run(j)))
    wall = time.perf_counter() - t0
    assert sorted(r for _, r, _ in out) == [2 * j for j in range(20)]
    assert len(a.done) > 0 and len(b.done) > 0 and len(a.done) + len(b.done) == 20
    assert wall < 20 * 0.02 * 0.9  # two workers overlap


def test_lost_device_requeues_its_job():
    a, b = Worker("a", fail_after=2), Worker("b")
    pool = DevicePool([a, b])
    out = {j: r for j, r, _ in pool.run(range(10), lambda d, j: d.run(j))}
    assert out == {j: 2 * j for j in range(10)}  # nothing lost
    assert "a" in pool.dead and len(a.done) == 2


def test_all_devices_lost_reports_every_remaining_job():
    a = Worker("a", fail_after=1)
    out = list(DevicePool([a], retries=0).run(range(4), lambda d, j: d.run(j)))
    assert len(out) == 4
    assert [r for _, r, _ in out if not isinstance(r, Exception)] == [0]
    assert all(isinstance(r, DeviceError) for _, r, _ in out[1:])


def test_job_errors_are_results_not_crashes():
    out = list(DevicePool([Worker("a")]).run([1, 2], lambda d, j: 1 / (j - 1)))
    assert isinstance(dict((j, r) for j, r, _ in out)[1], ZeroDivisionError)


def test_empty_pool_refused():
    with pytest.raises(ValueError):
        DevicePool([])
