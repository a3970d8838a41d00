"""A device is not trusted: agent replies from a fake device interpreter over the real local sshd, through
`edgedet bench --target ssh.yaml` and `edgedet device check ssh.yaml`.

The target's `python:` is a script of this test (FAKE below): for the agent subcommand a case names, it answers what
the case says (any bytes, any size, any exit), for the others it runs the real agent. Device failures exit 1 (README:
"Exit 1 when a device is unreachable or cannot run the backend", `edgedet bench`: "1 when a device failed") with one
line; nothing the device says is uploaded, written or printed raw (no escape sequence reaches the terminal)."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.devices.conftest import sshd_unavailable

from .harness import Case, payload_sh

PY = sys.executable
SECRET = "TOPSECRET-of-the-client"

FAKE = r'''#!{py}
import json, os, sys, time
spec = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "spec.json")))
args = sys.argv[1:]
a = spec.get(args[1] if len(args) > 1 else "")
if a is None:
    os.execv(sys.executable, [sys.executable] + args)
out = a.get("stdout", "").encode("utf-8", "surrogateescape")
for _ in range(a.get("repeat", 1)):
    sys.stdout.buffer.write(out)
sys.stdout.buffer.write(a.get("tail", "").encode("utf-8", "surrogateescape"))
sys.stdout.flush()
sys.stderr.write(a.get("stderr", "") * a.get("stderr_repeat", 1))
sys.stderr.flush()
time.sleep(a.get("sleep", 0))
if a.get("kill"):
    os.kill(os.getpid(), 9)
sys.exit(a.get("code", 0))
'''


@pytest.fixture(scope="session")
def device(tmp_path_factory, tiny_net) -> dict:
    """The real local sshd (tests/devices/conftest.py), a valid artifact, and what a case's target file needs."""
    from edgedet.config import TargetSpec
    from edgedet.deploy import compile_subnet
    from tests.devices.conftest import SUB, Sshd, make_key

    why = sshd_unavailable()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("fake_device")
    t = TargetSpec(name="fake_device", backend="onnxruntime", precisions=["fp32"], runtime={"threads": 1})
    art = compile_subnet(tiny_net, SUB, t, "fp32", root / "art").dir
    client = root / "client_ed25519"
    make_key(client)
    sshd = Sshd(root / "sshd", Path(str(client) + ".pub")).start()
    known = root / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    yield dict(art=art, port=sshd.port, key=client, known_hosts=known, device_root=root / "device",
               user=os.environ.get("USER") or __import__("getpass").getuser())
    sshd.kill()


def _setup(spec: dict, timeout: int = 30, workdir: str | None = None):
    """setup: the fake interpreter with `spec` ({agent subcommand: reply}), the ssh target file, a secret file, and
    a copy of the valid artifact."""

    def setup(sb: Path, s: dict) -> None:
        fake = sb / "fakepy"
        fake.write_text(FAKE.replace("{py}", PY))
        fake.chmod(0o755)
        (sb / "spec.json").write_text(json.dumps({k: {kk: (vv.replace("{sandbox}", str(sb)) if isinstance(vv, str)
                                                           else vv) for kk, vv in v.items()}
                                                  for k, v in spec.items()}))
        (sb / "secret.txt").write_text(SECRET)
        work = workdir or str(Path(s["device_root"]) / f"work-{sb.parent.name}")
        host = {"host": "127.0.0.1", "port": s["port"], "user": s["user"], "key": str(s["key"]),
                "known_hosts": str(s["known_hosts"]), "workdir": work, "python": str(fake),
                "connect_timeout_s": 10, "command_timeout_s": timeout}
        (sb / "ssh.yaml").write_text(json.dumps({
            "name": "fake_device", "device": {"type": "ssh", "hosts": [host]}, "backend": "onnxruntime",
            "precisions": ["fp32"], "runtime": {"threads": 1},
            "benchmark": {"warmup": 0, "runs": 2, "min_duration_s": 0}}))
        shutil.copytree(s["art"], sb / "art")

    return setup


def _record(**change) -> dict:
    rec = {"p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "mean_ms": 1.5, "min_ms": 0.5, "spread": 0.1, "noisy": False,
           "runs": 3, "warmup": 1, "batch": 1, "cooldown_ms": 0.0, "duration_s": 0.01,
           "runtime": {"runtime": "onnxruntime", "threads": 1}, "device": {"cpu": "x"}, "note": ""}
    rec.update(change)
    return rec


def _ok(**fields) -> str:
    return json.dumps(dict({"status": "ok", "agent": 1}, **fields))


ESC = "\x1b[2J\x1b]0;pwned\x07\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07\u202eevil"
BENCH = ["bench", "{sandbox}/art", "--target", "{sandbox}/ssh.yaml", "--no-ap"]
CHECK = ["device", "check", "{sandbox}/ssh.yaml"]
DEVICE_FAILED = r"^error: art: .*127\.0\.0\.1"

BENCH_REPLIES = [  # (id, reply of the agent's `bench`, expected exit code, stderr regex)
    ("not-json", {"stdout": "hello, I am a device\n"}, 1, r"gave no result"),
    ("empty", {"stdout": ""}, 1, r"gave no result \(exit status 0\): no output"),
    ("json-list", {"stdout": "[1, 2, 3]\n"}, 1, r"gave no result"),
    ("status-number", {"stdout": '{"status": 5}\n'}, 1, r"gave no result"),
    ("status-error-escapes", {"stdout": json.dumps({"status": "error: " + ESC}) + "\n", "code": 1}, 1,
     r"error: \?\[2J"),
    ("status-unsupported-escapes", {"stdout": json.dumps({"status": "unsupported: " + ESC}) + "\n"}, 0, None),
    ("record-missing", {"stdout": _ok() + "\n"}, 1, r"record is not an object"),
    ("record-list", {"stdout": _ok(record=[1, 2]) + "\n"}, 1, r"record is not an object"),
    ("record-lacks-fields", {"stdout": _ok(record={"p50_ms": 1.0}) + "\n"}, 1, r"the record lacks p90_ms"),
    ("p50-nan", {"stdout": _ok(record=_record()).replace('"p50_ms": 1.0', '"p50_ms": NaN') + "\n"}, 1,
     r"record.p50_ms is not a finite number"),
    ("p90-infinity", {"stdout": _ok(record=_record()).replace('"p90_ms": 2.0', '"p90_ms": Infinity') + "\n"}, 1,
     r"record.p90_ms is not a finite number"),
    ("p50-negative", {"stdout": _ok(record=_record(p50_ms=-1.0, min_ms=-2.0)) + "\n"}, 1,
     r"record.p50_ms is not a finite number >= 0"),
    ("p50-string", {"stdout": _ok(record=_record(p50_ms="fast")) + "\n"}, 1, r"record.p50_ms is not a finite"),
    ("p50-bool", {"stdout": _ok(record=_record(p50_ms=True)) + "\n"}, 1, r"record.p50_ms is not a finite"),
    ("percentiles-unordered", {"stdout": _ok(record=_record(p50_ms=5.0)) + "\n"}, 1, r"out of order"),
    ("runs-zero", {"stdout": _ok(record=_record(runs=0)) + "\n"}, 1, r"record.runs is not an integer >= 1"),
    ("runs-float", {"stdout": _ok(record=_record(runs=1.5)) + "\n"}, 1, r"record.runs is not an integer"),
    ("batch-string", {"stdout": _ok(record=_record(batch="1")) + "\n"}, 1, r"record.batch is not an integer"),
    ("noisy-string", {"stdout": _ok(record=_record(noisy="yes")) + "\n"}, 1, r"record.noisy is not true/false"),
    ("runtime-list", {"stdout": _ok(record=_record(runtime=["onnxruntime"])) + "\n"}, 1, r"runtime is not an object"),
    ("device-string", {"stdout": _ok(record=_record(device="box")) + "\n"}, 1, r"device is not an object"),
    ("load-string", {"stdout": _ok(record=_record(device={"load": "idle"})) + "\n"}, 1, r"device.load is not an"),
    ("load-negative-cores", {"stdout": _ok(record=_record(device={"load": {"others_cores": -3}})) + "\n"}, 1,
     r"device.load is not an object of finite numbers"),
    ("load-nan-read-as-unknown", {"stdout": _ok(record=_record(device={"load": {"cpu_mhz": 1.0}})).replace(
        '"cpu_mhz": 1.0', '"cpu_mhz": NaN') + "\n"}, 0, None),
    ("huge-stdout", {"stdout": " " * (1 << 20), "repeat": 6, "tail": _ok(record=_record()) + "\n"}, 1,
     r"answered more than 4 MiB on stdout; the command was killed"),
    ("huge-stderr", {"stderr": "x" * 1024, "stderr_repeat": 1024}, 1, r"more than 64 KiB on stderr"),
    ("deep-json", {"stdout": "[" * 200000 + "]" * 200000 + "\n"}, 1, r"gave no result"),
    ("huge-integer", {"stdout": _ok(record=_record()).replace('"runs": 3', '"runs": ' + "9" * 5000) + "\n"}, 1,
     r"gave no result"),
    ("not-utf8", {"stdout": '{"status": "error: \udcff\udcfe broken"}\n', "code": 1}, 1, r"error: .* broken"),
    ("escapes-in-valid-record", {"stdout": _ok(record=_record(device={"cpu": ESC, "hostname": ESC},
                                                               note=ESC[:20])) + "\n"}, 0, None),
    ("long-strings-in-valid-record", {"stdout": _ok(record=_record(note="n" * (1 << 20))) + "\n"}, 0, None),
    ("junk-keys-first", {"stdout": json.dumps(dict({f"k{i}": i for i in range(1500)}, status="ok",
                                                   record=_record())) + "\n"}, 1, r"gave no result"),
    ("killed-by-signal", {"stdout": "", "kill": True}, 1, r"gave no result \(exit status|killed by signal"),
    ("stderr-escapes-no-result", {"stderr": ESC + "\n" + payload_sh() + "\n", "code": 3}, 1,
     r"gave no result \(exit status 3\)"),
    ("ok-status-then-exit-1", {"stdout": _ok() + "\n", "code": 1}, 1, r"record is not an object"),
]
HANG = ("hang", {"stdout": "", "sleep": 60}, 1, r"timed out after 5 s")

VERIFY_REPLIES = [  # the agent's `verify`: what it claims is missing on the device
    ("verify-dotdot", {"missing": ["../../../../../../../../../..{sandbox}/secret.txt"], "mismatch": []},
     r"missing names '\.\./\.\./.*', which is not a file of the artifact"),
    ("verify-absolute", {"missing": ["{sandbox}/secret.txt"], "mismatch": []}, r"not a file of the artifact"),
    ("verify-artifact-json-dotdot", {"missing": [], "mismatch": ["artifact.json/../../secret.txt"]},
     r"mismatch names .*not a file of the artifact"),
    ("verify-etc-passwd", {"missing": ["/etc/passwd"], "mismatch": []}, r"not a file of the artifact"),
    ("verify-numbers", {"missing": [1, 2], "mismatch": []}, r"missing is not a list of file names"),
    ("verify-string", {"missing": "model.onnx", "mismatch": []}, r"missing is not a list of file names"),
    ("verify-no-mismatch-key", {"missing": []}, r"mismatch is not a list of file names"),
    ("verify-nul", {"missing": ["model.onnx\x00../../secret.txt"], "mismatch": []}, r"not a file of the artifact"),
    ("verify-many", {"missing": ["x"] * 100000, "mismatch": []}, r"not a file of the artifact"),
    ("verify-says-intact-but-nothing-there", {"missing": [], "mismatch": []}, r"not an artifact folder"),
]
CHECK_REPLIES = [  # the agent's `check` (edgedet device check): (id, reply, exit code, regex on stdout)
    ("check-info-list", _ok(info=[1], runtimes={}, python_executable="/p"), 1, r"info is not an object"),
    ("check-runtimes-string", _ok(info={}, runtimes="all", python_executable="/p"), 1, r"runtimes is not an object"),
    ("check-python-number", _ok(info={}, runtimes={}, python_executable=3), 1, r"python_executable is not a"),
    ("check-not-json", "no json here", 1, r"gave no result"),
    ("check-escapes", _ok(info={"hostname": ESC, "cpu": ESC, "gpus": [{"name": ESC, "driver_version": ESC}],
                                "jetson": {"model": ESC, "power_mode": {"name": ESC}}},
                          runtimes={"onnxruntime": "ok 1.0 " + ESC, ESC: ESC}, python_executable=ESC), 0,
     r"onnxruntime: ok 1\.0 \?\[2J"),
    ("check-status-error", json.dumps({"status": "error: " + ESC}), 1, r"error: .*error: \?\[2J"),
    ("check-jetson-not-dict", _ok(info={"jetson": "orin", "gpus": "many"}, runtimes={"onnxruntime": "ok 1"},
                                  python_executable="/p"), 1, r"info\.(gpus|jetson)"),
    ("check-huge", None, 1, r"more than 4 MiB"),
]


def _bench_case(i, reply, code, rx, timeout=30) -> Case:
    return Case(f"device-bench-{i}", BENCH, setup=_setup({"bench": reply}, timeout), expect_code=code,
                expect_stderr=(DEVICE_FAILED + ".*" + rx) if rx else None, timeout=120)


CASES = [_bench_case(*c) for c in BENCH_REPLIES] + [_bench_case(*HANG, timeout=5)] + [
    Case(f"device-upload-{i}", BENCH, setup=_setup({"verify": {"stdout": _ok(**reply) + "\n"}}), expect_code=1,
         expect_stderr=DEVICE_FAILED + ".*" + rx, timeout=120) for i, reply, rx in VERIFY_REPLIES] + [
    Case(f"device-{i}", CHECK, setup=_setup({"check": {"stdout": reply + "\n"} if reply else
                                             {"stdout": " " * (1 << 20), "repeat": 6}}),
         expect_code=code, timeout=120) for i, reply, code, rx in CHECK_REPLIES] + [
    Case("device-check-real-agent", CHECK, setup=_setup({}), expect_code=0),
]
CHECK_STDOUT = {f"device-{i}": rx for i, _, _, rx in CHECK_REPLIES}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile_device_replies(bad, device, case):
    import re

    r = bad(case, **device)
    assert "\x1b" not in r.stdout + r.stderr and "\u202e" not in r.stdout + r.stderr  # nothing raw on a terminal
    if case.id in CHECK_STDOUT:
        assert re.search(CHECK_STDOUT[case.id], r.stdout), r.stdout[-2000:]
    # the client's secret never reached the device's work folder
    for p in Path(device["device_root"]).rglob("*"):
        if p.is_file() and p.stat().st_size < 1 << 20:
            assert SECRET.encode() not in p.read_bytes(), p


@pytest.mark.slow
def test_a_workdir_starting_with_a_dash_is_a_path_not_an_option(device):
    """A relative workdir '-...' (in the login's home) reaches sh, python and the agent as a path ('./-...')."""
    import pwd

    from edgedet.backends.base import Artifact
    from edgedet.config import SSHHost, TargetSpec
    from edgedet.devices.ssh import SSHDevice

    name = f"--help-edgedet-badinput-{os.getpid()}"
    remote_home = Path(pwd.getpwnam(device["user"]).pw_dir)
    host = SSHHost(host="127.0.0.1", port=device["port"], user=device["user"], key=str(device["key"]),
                   known_hosts=str(device["known_hosts"]), workdir=name, python=PY, command_timeout_s=60)
    t = TargetSpec(name="dash", device={"type": "ssh", "hosts": [host.model_dump()]}, backend="onnxruntime",
                   precisions=["fp32"], runtime={"threads": 1}, benchmark={"warmup": 0, "runs": 2,
                                                                          "min_duration_s": 0})
    try:
        with SSHDevice(host) as dev:
            assert dev.workdir == "./" + name
            rec = dev.measure(Artifact.open(device["art"]), t)
        assert rec.runs >= 2 and (remote_home / name / "artifacts").is_dir() and (remote_home / name / ".lock").exists()
    finally:
        shutil.rmtree(remote_home / name, ignore_errors=True)
