"""Several searches and workers on one store (SQLite file and a real PostgreSQL server): started at the same moment,
they split the work (every candidate measured exactly once), end with the same front as one process, print no
traceback; one killed -9 mid-measurement has its claim taken over; a worker measures what a search queued.
"The same front as one process": every process's front is the front of the shared measurements, and the candidates
measured are those a process alone measures (a front measured in another session may differ by timing noise)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from edgedet.config import load_manifest
from edgedet.search.pareto import front
from edgedet.search.store import CLAIMS, MEASUREMENTS, Store, sqlite_url

# 4 subnets, all in the initial design: which candidates are measured does not depend on timing noise
SPACE = "patch: [24]\nresolution: [192, 288]\nwindows: [2]\ndec_layers: [0, 3]\nqueries: [25]\n"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
MEASURED = re.compile(r"^  (\S+@\w+): p90 [\d.]+ ms \[")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, synth_data):
    d = tmp_path_factory.mktemp("shared")
    (d / "space.yaml").write_text(SPACE)
    (d / "calib.yaml").write_text(f"dataset: {synth_data}\nsplit: train\nimages: 4\n")
    (d / "target.yaml").write_text(
        "name: shared_cpu\ndevice: {type: local}\nbackend: onnxruntime\nprecisions: [fp32]\n"
        "runtime: {threads: 1}\nlatency: {budget_ms: 1000, percentile: 90}\n"
        "benchmark: {warmup: 1, runs: 5, min_duration_s: 0, repeat_noisy: 0}\ncalibration: calib.yaml\n")
    return d


def _cmd(d: Path, out: Path, storage: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgedet.cli", "search", "-t", str(d / "target.yaml"), "--space",
            str(d / "space.yaml"), "-o", str(out), "--max-measurements", "4", "--val-images", "3", "--generations",
            "2", "--population", "6", "--storage", storage, "--runtime", "python", *extra]


def _start(cmds: list[list[str]]) -> list[subprocess.Popen]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for c in cmds]


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    logs = [p.communicate(timeout=800)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert "Traceback" not in log, log[-3000:]
        assert p.returncode == 0, log[-3000:]
    return logs


def _rows(url: str) -> tuple[dict, dict]:
    """(candidate id -> created) of the measurements, (item -> (state, attempts)) of the candidate claims."""
    s = Store(url)
    try:
        with s.engine.connect() as c:
            meas = {f"{r.subnet}@{r.precision}": r.created for r in c.execute(sa.select(MEASUREMENTS))}
            claims = {r.item[5:]: (r.state, r.attempts) for r in c.execute(sa.select(CLAIMS))
                      if r.item.startswith("cand:")}
    finally:
        s.close()
    return meas, claims


def _front(out: Path) -> list[str]:
    return [p.id for p in load_manifest(out / "manifest.json").front]


def _store_front(url: str) -> list[str]:
    """The front one process computes from the store's measurements (ok, under the 1000 ms budget), noise-aware."""
    s = Store(url)
    try:
        with s.engine.connect() as c:
            rows = [r for r in c.execute(sa.select(MEASUREMENTS)) if r.status == "ok" and r.latency_ms <= 1000]
    finally:
        s.close()
    rows.sort(key=lambda r: r.latency_ms)
    pts = [(json.loads(r.ap)["AP"], r.latency_ms) for r in rows]
    # a noisy measurement never pushes a stable one off the front: the front of all points, plus the front of the
    # stable points alone (with runs: 5 and repeat_noisy: 0, which ones are flagged noisy is up to the machine)
    stable = [i for i, r in enumerate(rows) if not json.loads(r.record)["noisy"]]
    idx = set(front(pts)) | {stable[k] for k in front([pts[i] for i in stable])}
    return [f"{rows[i].subnet}@{rows[i].precision}" for i in sorted(idx, key=lambda i: (pts[i][1], -pts[i][0]))]


@pytest.fixture(scope="module")
def one(setup):
    """The reference: one process alone on its own store."""
    out = setup / "one"
    log = _finish(_start([_cmd(setup, out, sqlite_url(setup / "one.db"))]))[0]
    meas, _ = _rows(sqlite_url(setup / "one.db"))
    return {"measured": set(meas), "log": log}


def _url(kind: str, setup: Path, name: str, request) -> str:
    """A new store: a SQLite file, or a new database on the session's PostgreSQL server."""
    if kind == "sqlite":
        return sqlite_url(setup / f"{name}.db")
    return request.getfixturevalue("postgres").new_database()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_then_four_searches_at_once_measure_each_candidate_once(setup, one, kind, request):
    for n in (2, 4):
        url = _url(kind, setup, f"{kind}{n}", request)
        outs = [setup / f"{kind}{n}-{i}" for i in range(n)]
        logs = _finish(_start([_cmd(setup, o, url) for o in outs]))
        meas, claims = _rows(url)
        said = [m.group(1) for log in logs for ln in log.splitlines() if (m := MEASURED.match(ln))]
        assert sorted(said) == sorted(meas), f"measured more than once: {said}"  # each one by one process only
        assert all(st == ("done", 1) for st in claims.values()) and set(claims) == set(meas)
        assert set(meas) == one["measured"]
        assert sum(1 for log in logs if any(MEASURED.match(x) for x in log.splitlines())) >= 2  # work was split
        # every process ends with the front of the shared measurements (a front measured in another session may
        # differ by timing noise: what must match a one-process run is which candidates were measured)
        assert all(_front(o) == _store_front(url) for o in outs)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_search_killed_mid_measurement_has_its_claim_taken_over(setup, one, kind, request):
    url = _url(kind, setup, f"{kind}-kill", request)
    a, b = _start([_cmd(setup, setup / f"{kind}-kill-a", url), _cmd(setup, setup / f"{kind}-kill-b", url)])
    deadline, victim = time.time() + 600, None
    s = Store(url)  # opened (its schema created) while the searches open it too: creation is idempotent and safe
    while victim is None and time.time() < deadline and a.poll() is None:
        with s.engine.connect() as c:  # a candidate claimed by a, not measured yet: a is mid-measurement
            meas = {f"{r.subnet}@{r.precision}" for r in c.execute(sa.select(MEASUREMENTS))}
            for r in c.execute(sa.select(CLAIMS).where(CLAIMS.c.state == "claimed")):
                if r.item.startswith("cand:") and f":{a.pid}:" in (r.owner or "") and r.item[5:] not in meas:
                    victim = r.item[5:]
        time.sleep(0.05)
    s.close()
    assert victim, "process a never held a candidate: " + (a.communicate()[0] if a.poll() is not None else "")
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    log_b = _finish([b])[0]
    meas, claims = _rows(url)
    assert victim in meas and claims[victim][0] == "done" and claims[victim][1] == 2  # taken over, once
    said = [m.group(1) for ln in log_b.splitlines() if (m := MEASURED.match(ln))]
    assert victim in said and len(said) == len(set(said))
    assert set(meas) == one["measured"] and _front(setup / f"{kind}-kill-b") == _store_front(url)


def test_a_worker_measures_what_a_search_queued_and_stops_with_it(setup, one):
    url = sqlite_url(setup / "worker.db")
    search_p, worker_p = _start([_cmd(setup, setup / "w-search", url),
                                 _cmd(setup, setup / "w-worker", url, "--worker")])
    log_s, log_w = _finish([search_p, worker_p])
    by_search = [m.group(1) for ln in log_s.splitlines() if (m := MEASURED.match(ln))]
    by_worker = [m.group(1) for ln in log_w.splitlines() if (m := MEASURED.match(ln))]
    meas, _ = _rows(url)
    assert by_worker and sorted(by_search + by_worker) == sorted(meas) == sorted(one["measured"])
    assert "no search of this target is running" in log_w.strip().splitlines()[-1]
    assert _front(setup / "w-search") == _store_front(url) and not (setup / "w-worker" / "work").exists()
    man = json.loads((setup / "w-search" / "manifest.json").read_text())
    assert {p["id"] for p in man["points"]} == set(meas)
