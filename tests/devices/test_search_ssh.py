"""A search whose target is reached over SSH (the test sshd of tests/devices/conftest.py): the same manifest as a
local search, and a device lost mid-search (sshd killed) stops it cleanly; --resume repeats no completed
measurement."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgedet.config import load_manifest
from edgedet.search import search
from tests.search import measurement_rows

from .conftest import Sshd

SPACE = "patch: [24]\nresolution: [192, 288]\nwindows: [2]\ndec_layers: [1, 3]\nqueries: [25]\n"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _target(path: Path, device: dict, calib: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "search_test", "device": device, "backend": "onnxruntime", "precisions": ["fp32"],
        "runtime": {"threads": 1}, "latency": {"budget_ms": 1000, "percentile": 90},
        "benchmark": {"warmup": 2, "runs": 10, "min_duration_s": 0, "repeat_noisy": 0}, "calibration": str(calib)}))
    return path


@pytest.fixture()
def setup(tmp_path, synth_data):
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "calib.yaml").write_text(f"dataset: {synth_data}\nsplit: train\nimages: 4\n")
    return tmp_path


def _args(d: Path, target: Path, out: Path, budget: int) -> dict:
    return dict(target=target, space=d / "space.yaml", out=out, max_measurements=budget, val_images=12,
                generations=2, population=6)


def _shape(x):
    """The structure of a JSON value: keys of dicts (recursively), types of leaves."""
    if isinstance(x, dict):
        return {k: _shape(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_shape(x[0])] if x else []
    return type(x).__name__


def test_search_over_ssh_writes_the_manifest_a_local_search_writes(setup, ssh_env):
    host = ssh_env.host(workdir=str(setup / "device"))
    remote = _target(setup / "ssh.yaml", {"type": "ssh", "hosts": [host.model_dump()]}, setup / "calib.yaml")
    local = _target(setup / "local.yaml", {"type": "local"}, setup / "calib.yaml")
    ml = search(**_args(setup, local, setup / "local", 4), say=lambda s: None)
    mr = search(**_args(setup, remote, setup / "remote", 4), say=lambda s: None)
    a, b = load_manifest(setup / "local" / "manifest.json"), load_manifest(setup / "remote" / "manifest.json")
    assert set(ml) == set(mr) and a.search["candidates"] == b.search["candidates"]
    ok = [p for p in b.points if p.status == "ok"]
    assert ok and b.front and all(p.ap_source == "artifact" for p in ok)
    for p in ok:  # measured on the device, with the conditions a local record has
        assert p.record["device"]["ssh"] == f"{host.user}@127.0.0.1:{host.port}"
        assert set(p.record) == set(a.points[0].record) and p.record["runs"] >= 10
    fl, fr = _shape(ml["front"][0]), _shape(mr["front"][0])
    dl, dr = fl["record"].pop("device"), fr["record"].pop("device")
    al, ar = fl["record"].pop("attempts"), fr["record"].pop("attempts")
    # plus where it ran; the agent reports device.load as the local device does (the same runners.py code)
    assert fl == fr and set(dl) <= set(dr) and {"ssh", "workdir", "lock", "load"} <= set(dr)
    assert set(al[0]) == set(ar[0]) and isinstance(mr["front"][0]["record"]["attempts"][0]["others_cores"], float)
    assert set(ml["front"][0]["record"]["runtime"]) == set(mr["front"][0]["record"]["runtime"])
    assert (Path(host.workdir) / "artifacts").is_dir()


def test_device_lost_mid_search_stops_cleanly_and_resume_repeats_nothing(setup, ssh_env):
    sshd = Sshd(setup / "sshd", Path(str(ssh_env.client_key) + ".pub"), host_key=ssh_env.sshd.host_key).start()
    known = setup / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    host = ssh_env.host(port=sshd.port, workdir=str(setup / "device"), known_hosts=str(known), connect_timeout_s=2)
    target = _target(setup / "ssh.yaml", {"type": "ssh", "hosts": [host.model_dump()]}, setup / "calib.yaml")
    out = setup / "run"
    cmd = [sys.executable, "-m", "edgedet.cli", "search", "-t", str(target), "--space", str(setup / "space.yaml"),
           "-o", str(out), "--max-measurements", "6", "--val-images", "12", "--generations", "2", "--population", "6"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 600
        while len(measurement_rows(out / "search.db")) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, "the search finished before the device could be lost: " + proc.stdout.read()
        sshd.kill()  # the device goes away mid-search
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 2 and "Traceback" not in log, log[-3000:]
        assert "--resume" in log.strip().splitlines()[-1]
        before = measurement_rows(out / "search.db")
        assert len(before) >= 2 and not (out / "manifest.json").exists()
        sshd = Sshd(setup / "sshd", Path(str(ssh_env.client_key) + ".pub"), port=sshd.port,
                    host_key=ssh_env.sshd.host_key).start()  # the device is back
        res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        after = measurement_rows(out / "search.db")
        for key, created in before.items():  # completed measurements kept, not repeated
            assert after[key] == created
        assert load_manifest(out / "manifest.json").front
    finally:
        sshd.kill()
