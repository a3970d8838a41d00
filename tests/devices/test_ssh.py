"""SSH devices against a real sshd on 127.0.0.1 (tests/devices/conftest.py): benchmark records like local ones,
sha256-checked uploads, host key and auth refusals, timeouts, a device lost mid-benchmark, a runtime missing on the
device, shell metacharacters in paths, pools in parallel, and the cross-process device lock."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import fields
from pathlib import Path

import pytest

from edgedet.backends.base import Artifact, Unsupported, sha256
from edgedet.devices import DeviceError, DevicePool, LocalDevice, open_devices
from edgedet.profiler import LatencyRecord

from .conftest import Sshd, descendants, make_key

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ssh_mod():
    from edgedet.devices import ssh

    return ssh


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory):
    """A Python without numpy or any runtime (a fresh venv without packages): a device lacking the runtime."""
    root = tmp_path_factory.mktemp("barepy")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    py = root / "venv" / "bin" / "python"
    assert subprocess.run([str(py), "-c", "import onnxruntime"], capture_output=True).returncode != 0
    return py


def _hang_python(tmp: Path, seconds: int = 60) -> tuple[Path, Path]:
    """A 'python' that hangs (a wrapper script that sleeps); it writes its pid first."""
    pidfile = tmp / "hang.pid"
    script = tmp / "hanging-python"
    script.write_text(f"#!/bin/sh\necho $$ > '{pidfile}'\nexec sleep {seconds}\n")
    script.chmod(0o755)
    return script, pidfile


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------ measurements
def test_bench_over_ssh_gives_the_local_record(ssh_env, ort_artifact, ssh_mod):
    host = ssh_env.host(workdir=str(ssh_env.root / "bench"))
    t = ssh_env.target([host])
    with ssh_mod.SSHDevice(host) as dev:
        rec = dev.measure(ort_artifact, t)
    local = LocalDevice().measure(ort_artifact, t)
    assert isinstance(rec, LatencyRecord)
    assert rec.to_dict().keys() == local.to_dict().keys()
    assert rec.runtime == local.runtime  # same runtime, version, precision, provider, threads
    assert set(local.device) <= set(rec.device) and {"ssh", "workdir", "lock", "load"} <= set(rec.device)
    assert set(rec.device["load"]) == set(local.device["load"]) and rec.device["cpu_flags"] == local.device["cpu_flags"]
    assert rec.device["ssh"] == f"{host.user}@127.0.0.1:{host.port}"
    assert rec.runs >= 3 and rec.warmup == 1 and rec.batch == 1 and 0 < rec.min_ms <= rec.p50_ms <= rec.p90_ms
    # the files are on the device, checked by sha256 there
    rdir = Path(host.workdir) / "artifacts" / ssh_mod.SSHDevice.artifact_id(ort_artifact)
    for f, h in ort_artifact.files.items():
        assert sha256(rdir / f) == h


def test_upload_is_skipped_when_intact_and_repaired_when_not(ssh_env, ort_artifact, ssh_mod):
    host = ssh_env.host(workdir=str(ssh_env.root / "upload"))
    with ssh_mod.SSHDevice(host) as dev:
        rdir = Path(dev.upload(ort_artifact))
    model = rdir / ort_artifact.model_file
    stamp = model.stat().st_mtime_ns
    time.sleep(0.05)
    with ssh_mod.SSHDevice(host) as dev:  # a new connection: verified on the device, nothing sent
        dev.upload(ort_artifact)
    assert model.stat().st_mtime_ns == stamp
    model.write_bytes(b"corrupted on the device")
    with ssh_mod.SSHDevice(host) as dev:
        dev.upload(ort_artifact)
    assert sha256(model) == ort_artifact.files[ort_artifact.model_file]


def test_agent_record_fields_are_the_profilers(tmp_path):
    from edgedet.devices import agent
    from edgedet.profiler import measure
    from edgedet.runtime import runners

    names = [f.name for f in fields(LatencyRecord)]
    assert list(agent.RECORD_FIELDS) == names
    assert list(runners.summarize([1.0, 2.0, 3.0], 0.01, 1, 1, 0.0, 0.15)) == names
    assert list(measure(lambda: None, warmup=0, runs=3, min_duration_s=0).to_dict()) == names


# ------------------------------------------------------------------------------------------------ device check
def _target_yaml(path: Path, hosts: list, backend="onnxruntime") -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"name": "ssh_check", "device": {"type": "ssh", "hosts": [
        h.model_dump() for h in hosts]}, "backend": backend, "precisions": ["fp32"],
        "benchmark": {"warmup": 1, "runs": 3, "min_duration_s": 0}}))
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgedet.cli", *args], capture_output=True, text=True, timeout=120)


def test_device_check_cli(ssh_env, tmp_path):
    host = ssh_env.host(workdir=str(tmp_path / "w"))
    y = _target_yaml(tmp_path / "t.yaml", [host])
    p = _cli("device", "check", str(y), "--json")
    assert p.returncode == 0, p.stderr
    (rep,) = json.loads(p.stdout)["devices"]
    assert rep["ok"] and rep["backend_ok"] and rep["runtimes"]["onnxruntime"].startswith("ok ")
    assert rep["runtimes"]["tensorrt"].startswith("missing: ")
    assert rep["info"]["cores"] >= 1 and rep["info"]["cpu"]
    p = _cli("device", "check", str(y))
    assert p.returncode == 0 and "onnxruntime" in p.stdout and f"127.0.0.1:{host.port}" in p.stdout
    # TensorRT is not on this 'device': the check says the backend is not usable, exit 1
    p = _cli("device", "check", str(_target_yaml(tmp_path / "trt.yaml", [host], "tensorrt")))
    assert p.returncode == 1 and "tensorrt" in p.stdout


def test_device_check_cli_errors(ssh_env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndevice: {type: ssh, hosts: [{host: a}]}\nbackend: onnxruntime\nprecisions: [fp32]\n")
    p = _cli("device", "check", str(bad))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "user" in p.stderr
    assert "Traceback" not in p.stderr
    from .conftest import free_port

    y = _target_yaml(tmp_path / "down.yaml", [ssh_env.host(port=free_port(), connect_timeout_s=2)])
    p = _cli("device", "check", str(y))
    assert p.returncode == 1 and "cannot connect" in p.stdout and "Traceback" not in p.stdout + p.stderr


def test_edgedet_bench_on_an_ssh_target(ssh_env, ort_artifact, tmp_path):
    host = ssh_env.host(workdir=str(tmp_path / "w"))
    y = _target_yaml(tmp_path / "t.yaml", [host])
    p = _cli("bench", str(ort_artifact.dir), "--target", str(y), "--no-ap", "--json")
    assert p.returncode == 0, p.stderr
    (row,) = json.loads(p.stdout)
    assert row["status"] == "ok" and row["latency"]["device"]["ssh"] == f"{host.user}@127.0.0.1:{host.port}"
    assert row["latency"]["runtime"]["runtime"] == "onnxruntime"


def test_pool_check_warns_about_one_machine_twice(ssh_env, tmp_path):
    from edgedet.devices import check_devices

    t = ssh_env.target([ssh_env.host(workdir=str(tmp_path / "a")), ssh_env.host(workdir=str(tmp_path / "b"))])
    rep = check_devices(t)
    assert [d["ok"] for d in rep["devices"]] == [True, True]
    assert any("same machine" in w for w in rep["warnings"])


# ------------------------------------------------------------------------------------------------ host keys, auth
def test_wrong_host_key_is_refused_even_when_new_keys_are_accepted(ssh_env, tmp_path, ssh_mod):
    other = make_key(tmp_path / "other_host_key")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{ssh_env.sshd.port} "
                     + " ".join(other.export_public_key().decode().split()[:2]) + "\n")
    for accept in (False, True):
        dev = ssh_mod.SSHDevice(ssh_env.host(known_hosts=str(known), accept_new_host_key=accept))
        with pytest.raises(DeviceError, match="host key mismatch for 127.0.0.1") as e:
            dev.info()
        assert "refused" in str(e.value)
    assert len(known.read_text().splitlines()) == 1  # nothing was added


def test_unknown_host_key_refused_unless_the_target_accepts_it(ssh_env, tmp_path, ssh_mod):
    known = tmp_path / "sub" / "known_hosts"
    with pytest.raises(DeviceError, match="does not exist"):
        ssh_mod.SSHDevice(ssh_env.host(known_hosts=str(known))).info()
    known.parent.mkdir()
    known.write_text("")
    with pytest.raises(DeviceError, match="unknown host key"):
        ssh_mod.SSHDevice(ssh_env.host(known_hosts=str(known))).info()
    assert known.read_text() == ""
    with ssh_mod.SSHDevice(ssh_env.host(known_hosts=str(known), accept_new_host_key=True)) as d:
        assert d.info()["cores"] >= 1
    assert known.read_text() == ssh_env.sshd.known_hosts_line() + "\n"
    with ssh_mod.SSHDevice(ssh_env.host(known_hosts=str(known))) as d:  # now known
        assert d.info()["cores"] >= 1


def test_bad_client_key_is_a_clear_auth_error(ssh_env, tmp_path, ssh_mod):
    stranger = tmp_path / "stranger key"
    make_key(stranger)
    dev = ssh_mod.SSHDevice(ssh_env.host(key=str(stranger)))
    t0 = time.monotonic()
    with pytest.raises(DeviceError) as e:
        dev.info()
    assert str(e.value).startswith(f"authentication failed for {ssh_env.user}@127.0.0.1:{ssh_env.sshd.port} "
                                   f"with key {stranger}")
    assert time.monotonic() - t0 < 10  # not retried
    with pytest.raises(DeviceError, match="client key .* not found"):
        ssh_mod.SSHDevice(ssh_env.host(key=str(tmp_path / "nope"))).info()


def test_connection_refused_is_retried_then_reported(ssh_env, ssh_mod):
    from .conftest import free_port

    port = free_port()
    dev = ssh_mod.SSHDevice(ssh_env.host(port=port), connect_tries=3, backoff_s=0.2)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=rf"127.0.0.1:{port}: cannot connect \(.*3 tries"):
        dev.info()
    assert time.monotonic() - t0 >= 0.2 + 0.4  # exponential backoff between the tries


# ------------------------------------------------------------------------------------------------ faults
def test_runtime_missing_on_the_device_is_unsupported(ssh_env, ort_artifact, bare_python, ssh_mod):
    host = ssh_env.host(workdir=str(ssh_env.root / "bare"), python=str(bare_python))
    t = ssh_env.target([host])
    with ssh_mod.SSHDevice(host) as dev:
        info = dev.info()  # the agent itself runs on a bare Python (no numpy)
        assert info["runtimes"]["onnxruntime"] is None and info["cores"] >= 1
        assert not dev.check(t)["backend_ok"]
        with pytest.raises(Unsupported, match=r"^unsupported: onnxruntime is not installed on the device \(python"):
            dev.measure(ort_artifact, t)
        # in a pool the candidate is recorded as unsupported and the device stays in service
        pool = DevicePool([dev])
        out = list(pool.run([1, 2], lambda d, j: d.measure(ort_artifact, t)))
        assert all(isinstance(r, Unsupported) for _, r, _ in out) and not pool.dead


def test_tensorrt_artifact_is_built_on_the_device_or_unsupported(ssh_env, tmp_path, ssh_mod):
    """Only the 'tensorrt is not installed' path can run here (no GPU): the engine build goes to the device."""
    from edgedet.backends.tensorrt import DEVICE_DIR

    d = tmp_path / "trt"
    d.mkdir()
    for f in ("build_engine.py", "bench_engine.py"):
        (d / f).write_bytes((DEVICE_DIR / f).read_bytes())
    (d / "model.onnx").write_bytes(b"not a real model")
    (d / "trt_build.json").write_text(json.dumps({"precision": "fp16"}))
    art = Artifact(dir=d, backend="tensorrt", precision="fp16", model_file="model.onnx",
                   metadata={"subnet": "p24-r192-w2-d1-q25", "resolution": 192, "num_classes": 6}).seal()
    host = ssh_env.host(workdir=str(tmp_path / "w"))
    t = ssh_env.target([host], backend="tensorrt")
    with ssh_mod.SSHDevice(host) as dev:
        with pytest.raises(Unsupported, match="tensorrt is not installed on "):
            dev.prepare(art, t)
        with pytest.raises(Unsupported, match="tensorrt is not installed on "):
            dev.measure(art, t)
    assert (tmp_path / "w" / "artifacts" / ssh_mod.SSHDevice.artifact_id(art) / "build_engine.py").is_file()


def test_hung_command_times_out_and_is_killed(ssh_env, ort_artifact, tmp_path, ssh_mod):
    hang, pidfile = _hang_python(tmp_path)
    host = ssh_env.host(workdir=str(tmp_path / "w"), python=str(hang), command_timeout_s=1.5)
    dev = ssh_mod.SSHDevice(host)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=r"timed out after 1.5 s \(command_timeout_s\)"):
        dev.measure(ort_artifact, ssh_env.target([host]))
    assert time.monotonic() - t0 < 15
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the hung remote command was left running"
    dev.close()


def test_benchmark_past_the_deadline_is_stopped_and_frees_the_device(ssh_env, ort_artifact, tmp_path, ssh_mod):
    host = ssh_env.host(workdir=str(tmp_path / "w"), command_timeout_s=3)
    with ssh_mod.SSHDevice(host) as dev:
        dev.upload(ort_artifact)  # the timeout is for the benchmark, not the upload
        with pytest.raises(DeviceError, match="timed out after 3 s"):
            dev.measure(ort_artifact, ssh_env.target([host], min_duration_s=60))
        t0 = time.monotonic()
        rec = dev.measure(ort_artifact, ssh_env.target([host]))  # the lock died with the stopped agent
        assert rec.device["lock"]["waited_s"] < 1 and time.monotonic() - t0 < 30


def _wait_for_bench(sshd: Sshd, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in descendants(sshd.proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"bench" in cmd and any(c.endswith(b".py") for c in cmd):
                time.sleep(0.5)  # into the timed loop
                return
        time.sleep(0.05)
    tree = [Path(f"/proc/{p}/cmdline").read_bytes() for p in descendants(sshd.proc.pid)
            if Path(f"/proc/{p}").exists()]
    raise AssertionError(f"the benchmark did not start on the device: {tree}")


def _own_sshd(ssh_env, tmp_path) -> tuple[Sshd, Path]:
    """A second sshd (same keys) that a test may kill, and a known_hosts file for it."""
    sshd = Sshd(tmp_path / "sshd", Path(str(ssh_env.client_key) + ".pub"), host_key=ssh_env.sshd.host_key).start()
    known = tmp_path / "known_hosts"
    known.write_text(ssh_env.known_hosts.read_text() + sshd.known_hosts_line() + "\n")
    return sshd, known


def test_sshd_killed_mid_benchmark(ssh_env, ort_artifact, tmp_path, ssh_mod):
    sshd, known = _own_sshd(ssh_env, tmp_path)
    try:
        host = ssh_env.host(port=sshd.port, workdir=str(tmp_path / "w"), connect_timeout_s=2, known_hosts=str(known))
        dev = ssh_mod.SSHDevice(host, backoff_s=0.2)
        errors = []

        def run():
            try:
                dev.measure(ort_artifact, ssh_env.target([host], min_duration_s=30))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        th = threading.Thread(target=run)
        th.start()
        _wait_for_bench(sshd)
        t0 = time.monotonic()
        sshd.kill()
        th.join(30)
        assert not th.is_alive() and time.monotonic() - t0 < 20
        (e,) = errors
        assert isinstance(e, DeviceError)
        assert f"127.0.0.1:{sshd.port}: lost the connection during benchmark of" in str(e)
        assert "reconnecting failed: cannot connect" in str(e)
        dev.close()
    finally:
        sshd.kill()


def test_pool_goes_on_when_a_device_dies_mid_benchmark(ssh_env, ort_artifact, tmp_path, ssh_mod):
    sshd, known = _own_sshd(ssh_env, tmp_path)
    try:
        doomed = ssh_env.host(port=sshd.port, workdir=str(tmp_path / "doomed"), connect_timeout_s=2,
                              known_hosts=str(known))
        healthy = ssh_env.host(workdir=str(tmp_path / "healthy"))
        t = ssh_env.target([doomed, healthy], min_duration_s=0.5)
        slow = ssh_env.target([doomed], min_duration_s=30)
        devs = [ssh_mod.SSHDevice(doomed, backoff_s=0.2), ssh_mod.SSHDevice(healthy)]

        def job(dev, j):
            return dev.measure(ort_artifact, slow if dev is devs[0] else t)

        killer = threading.Thread(target=lambda: (_wait_for_bench(sshd), sshd.kill()))
        killer.start()
        out = list(DevicePool(devs).run(range(3), job))
        killer.join()
        assert sorted(j for j, _, _ in out) == [0, 1, 2]
        assert all(isinstance(r, LatencyRecord) for _, r, _ in out), out  # the lost job was measured elsewhere
        assert {n for _, _, n in out} == {devs[1].name}
        for d in devs:
            d.close()
    finally:
        sshd.kill()


# ------------------------------------------------------------------------------------------------ injection
def test_names_and_paths_with_shell_metacharacters_are_passed_literally(ssh_env, ort_artifact, tmp_path, ssh_mod):
    marks = [tmp_path / f"pwned{i}" for i in range(4)]
    evil = f"work dir $(touch {marks[0]}) ; touch {marks[1]} `touch {marks[2]}` 'q\" && touch {marks[3]} #"
    workdir = tmp_path / evil
    pydir = tmp_path / f"py $(touch {marks[0]});'x'"  # (the / of the marker paths make these nested folders)
    pydir.mkdir(parents=True)
    (pydir / "python 3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (pydir / "python 3").chmod(0o755)
    host = ssh_env.host(workdir=str(workdir), python=str(pydir / "python 3"))
    t = ssh_env.target([host])
    with ssh_mod.SSHDevice(host) as dev:
        rec = dev.measure(ort_artifact, t)  # the artifact's own folder name has metacharacters too
        assert dev.check(t)["backend_ok"]
    assert rec.runs >= 3
    assert not [m for m in marks if m.exists()], "a shell interpreted a path"
    assert workdir.is_dir() and (workdir / "artifacts").is_dir() and (workdir / ".lock").is_file()
    assert rec.device["workdir"] == str(workdir)


# ------------------------------------------------------------------------------------------------ pools, locks
def test_two_hosts_of_a_pool_measure_in_parallel(ssh_env, ort_artifact, tmp_path):
    hosts = [ssh_env.host(workdir=str(tmp_path / n)) for n in ("a", "b")]
    t = ssh_env.target(hosts, min_duration_s=1.0, cooldown_ms=20)
    devs = open_devices(t)
    assert [type(d).__name__ for d in devs] == ["SSHDevice", "SSHDevice"] and devs[0].lock is not devs[1].lock
    for d in devs:  # connect + upload first: the comparison is about measuring
        d.prepare(ort_artifact, t)
    spans = []

    def job(dev, j):
        t0 = time.monotonic()
        rec = dev.measure(ort_artifact, t)
        spans.append(time.monotonic() - t0)
        return rec

    t0 = time.monotonic()
    out = list(DevicePool(devs).run(range(4), job))
    wall = time.monotonic() - t0
    for d in devs:
        d.close()
    by = {}
    for _, r, name in out:
        assert isinstance(r, LatencyRecord), r
        by[name] = by.get(name, 0) + 1
    assert set(by) == {d.name for d in devs} and sum(by.values()) == 4  # measurements split between the hosts
    assert wall < 0.8 * sum(spans), (wall, spans)  # and they overlapped in time


def test_devices_of_one_host_and_workdir_share_a_lock(ssh_env, ssh_mod):
    a, b = ssh_mod.SSHDevice(ssh_env.host()), ssh_mod.SSHDevice(ssh_env.host())
    c = ssh_mod.SSHDevice(ssh_env.host(workdir=str(ssh_env.root / "other")))
    assert a.lock is b.lock and a.lock is not c.lock


def test_two_edgedet_runs_never_measure_on_one_device_at_once(ssh_env, ort_artifact, tmp_path):
    """Two processes (each with its own in-process lock) measure on one device at the same moment: the agent's
    flock on WORKDIR/.lock makes the second wait until the first is done."""
    host = ssh_env.host(workdir=str(tmp_path / "shared"))
    t = ssh_env.target([host], min_duration_s=1.5)
    code = textwrap.dedent(f"""
        import json, sys
        from edgedet.backends.base import Artifact
        from edgedet.config import TargetSpec
        from edgedet.devices.ssh import SSHDevice
        t = TargetSpec.model_validate_json(sys.argv[1])
        art = Artifact.open({str(ort_artifact.dir)!r})
        with SSHDevice(t.device.hosts[0]) as d:
            d.upload(art)
            print("ready", flush=True)
            sys.stdin.readline()
            print(json.dumps(d.measure(art, t).device["lock"]), flush=True)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    procs = [subprocess.Popen([sys.executable, "-c", code, t.model_dump_json()], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    for p in procs:  # go
        p.stdin.write("\n")
        p.stdin.flush()
    locks = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        locks.append(json.loads(out.strip().splitlines()[-1]))
    a, b = sorted(locks, key=lambda x: x["held_from"])
    assert a["held_to"] <= b["held_from"], (a, b)  # one after the other, never at once
    assert b["waited_s"] > 0.5, (a, b)  # they did collide
