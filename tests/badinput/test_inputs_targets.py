"""Bad-input corpus: target files and SSH client files. Target YAML with one unknown field, wrong type or bad value
per field (generated from a valid SSH target), broken YAML; known_hosts and client key files that are folders,
binary, malformed, only @cert-authority, or readable by others, through `edgedet device check`.

A target file is the user's own (trusted) but a typo is still one line naming the file, the field and the value,
exit 2. A known_hosts or key problem is reported per device by `device check` (stdout, exit 1: the README's code
for a device that cannot be used), naming the file and the real problem; nothing is connected to when a local file
is already wrong."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from .harness import Case


def base_target(known_hosts: str = "kh", key: str | None = "id_key") -> dict:
    host = {"host": "127.0.0.1", "port": 9, "user": "edge", "known_hosts": known_hosts, "connect_timeout_s": 2}
    if key:
        host["key"] = key
    return {"name": "t", "backend": "onnxruntime", "precisions": ["fp32"], "device": {"type": "ssh", "hosts": [host]}}


def _write_key(path: Path, mode: int = 0o600) -> None:
    import asyncssh

    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(path))
    path.chmod(mode)


def _target_case(name: str, edit, needle: str, raw: str | bytes | None = None) -> Case:
    def setup(sb, s):
        if raw is not None:
            data = raw if isinstance(raw, bytes) else raw.replace("{marker}", str(s["marker"])).encode()
            (sb / "t.yaml").write_bytes(data)
            return
        t = base_target()
        edit(t)
        (sb / "t.yaml").write_text(yaml.safe_dump(t))

    return Case(f"target-{name}", ["device", "check", "t.yaml"], setup=setup, timeout=60,
                expect_stderr=r"t\.yaml: " + needle)


def _at(path: str, value):
    """Set (or, with value KeyError, delete) a dotted path in the target dict ('device.hosts.0.port')."""
    def edit(t):
        *parents, last = path.split(".")
        node = t
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if value is KeyError:
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


BAD_FIELDS = {  # dotted field -> bad values
    "name": [1, None, ["t"]], "description": [{"a": 1}], "backend": ["cuda", 5, None],
    "precisions": [[], ["int4"], "fp32", [None]], "device": ["ssh", {"type": "usb"}],
    "device.hosts": [[], "127.0.0.1"], "device.hosts.0.port": [0, 70000, "ssh", -22],
    "device.hosts.0.host": [None, 5], "device.hosts.0.user": [["edge"]],
    "device.hosts.0.connect_timeout_s": [0, -1, "soon"], "device.hosts.0.command_timeout_s": [0],
    "device.hosts.0.evil": [1], "runtime.threads": [0, "many", -4], "runtime.openvino_hint": ["FAST"],
    "runtime.trt_workspace_mb": [-1], "runtime.trt_int8_mode": ["magic"], "runtime.bogus": [True],
    "latency.budget_ms": [-5, 0, "fast"], "latency.percentile": [42, "p90"], "benchmark.runs": [0, -1],
    "benchmark.warmup": [-1], "benchmark.batch": [0], "benchmark.noise_threshold": [0, -0.1],
    "benchmark.min_duration_s": [-1], "benchmark.cooldown_ms": [-5], "max_resolution": [0, "big"],
    "calibration": [5], "evil_top_level": ["x"],
}
FIELD_CASES = [_target_case(f"{field}-{i}", _at(field, v), re.escape(field.replace("device.hosts", "device.ssh.hosts")))
               for field, vals in BAD_FIELDS.items() for i, v in enumerate(vals)]
FIELD_CASES += [_target_case(f"missing-{f}", _at(f, KeyError), rf"{f.split('.')[-1]}: required field is missing")
                for f in ("name", "backend")]
FIELD_CASES += [_target_case(f"missing-host-{f}", _at(f"device.hosts.0.{f}", KeyError),
                             rf"device\.ssh\.hosts\.0\.{f}: required field is missing") for f in ("user", "host")]

LAUGHS = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"]
                   + [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefg", "bcdefgh")]
                   + ["name: t", "backend: onnxruntime", "precisions: *h", ""])
RAW_CASES = [
    _target_case("yaml-syntax", None, r"not valid YAML", raw="name: [unclosed\nbackend: x\n"),
    _target_case("yaml-list", None, r"expected a mapping at top level, got list", raw="- name: t\n"),
    _target_case("yaml-scalar", None, r"expected a mapping at top level, got str", raw="just a string\n"),
    _target_case("yaml-empty", None, r"expected a mapping at top level, got NoneType", raw=""),
    _target_case("yaml-binary", None, r"not a text file", raw=bytes(range(128, 256)) * 4),
    _target_case("yaml-python-tag", None, r"not valid YAML",
                 raw="name: !!python/object/apply:os.system ['touch {marker}/pwned-yaml']\n"),
    _target_case("yaml-deep-nesting", None, r"(cannot read|not valid YAML)", raw="a: " + "[" * 50000 + "]" * 50000),
    _target_case("yaml-billion-laughs", None, r"\S+", raw=LAUGHS),
]


# ---------------------------------------------------------------------------------- known_hosts and client keys

STDOUT: dict[str, str] = {}  # case id -> regex device check must print (its per-device error line)


def _ssh_case(name: str, files, needle: str, target=None) -> Case:
    """files(sandbox): writes kh / id_key (or their replacements); the target points at them."""
    def setup(sb, s):
        files(sb)
        t = target(s) if target else base_target(str(sb / "kh"), str(sb / "id_key"))
        (sb / "t.yaml").write_text(yaml.safe_dump(t))

    STDOUT[f"ssh-{name}"] = needle
    return Case(f"ssh-{name}", ["device", "check", "t.yaml"], setup=setup, expect_code=1, timeout=60)


def _files(kh=b"", key_mode=0o600, key=True, kh_dir=False, key_content: bytes | None = None):
    def files(sb):
        if kh_dir:
            (sb / "kh").mkdir()
        elif kh is not None:
            (sb / "kh").write_bytes(kh)
        if key_content is not None:
            (sb / "id_key").write_bytes(key_content)
            (sb / "id_key").chmod(key_mode)
        elif key == "dir":
            (sb / "id_key").mkdir()
        elif key:
            _write_key(sb / "id_key", key_mode)
    return files


KEY = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0h6u1FkG3b0Yl9eY9iWbmQx0gq4QfZk4Vb7T5mKpXy\n"
CA = b"@cert-authority * " + KEY
SSH_CASES = [
    _ssh_case("known-hosts-folder", _files(kh_dir=True), r"known_hosts \S+/kh is a folder, not a file"),
    _ssh_case("known-hosts-binary", _files(kh=bytes(range(128, 256)) * 8), r"known_hosts \S+/kh is binary"),
    _ssh_case("known-hosts-nul", _files(kh=b"host ssh-ed25519 AAAA\x00\x00\n"), r"known_hosts \S+/kh is binary"),
    _ssh_case("known-hosts-bad-line", _files(kh=b"# ok\njustonefield\n"), r"known_hosts \S+/kh line 2: Invalid"),
    _ssh_case("known-hosts-bad-marker", _files(kh=b"@evil host " + KEY), r"line 1: Invalid known hosts"),
    _ssh_case("known-hosts-bad-hash", _files(kh=b"|1|garbage|x " + KEY), r"line 1: Invalid known hosts hash"),
    _ssh_case("known-hosts-missing", _files(kh=None), r"known_hosts file \S+/kh does not exist"),
    _ssh_case("key-world-readable", _files(key_mode=0o644), r"UNPROTECTED PRIVATE KEY FILE: permissions 0644 for "),
    _ssh_case("key-group-readable", _files(key_mode=0o640), r"UNPROTECTED PRIVATE KEY FILE: permissions 0640"),
    _ssh_case("key-others-write", _files(key_mode=0o602), r"UNPROTECTED PRIVATE KEY FILE: permissions 0602"),
    _ssh_case("key-folder", _files(key="dir"), r"client key \S+/id_key is a folder"),
    _ssh_case("key-missing", _files(key=False), r"client key \S+/id_key not found"),
    _ssh_case("key-binary", _files(key_content=bytes(range(256))), r"client key \S+/id_key is not a private key"),
    _ssh_case("key-empty", _files(key_content=b""), r"client key \S+/id_key is not a private key"),
    _ssh_case("key-public-key", _files(key_content=b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0h6u1Fk edge\n"),
              r"client key \S+/id_key is not a private key"),
]


def _ca_only_target(s) -> dict:
    t = base_target(str(s["sandbox"] / "kh"), str(s["client_key"]))
    t["device"]["hosts"][0].update(port=s["sshd_port"], user=s["user"])
    return t


SSH_CASES.append(_ssh_case("known-hosts-only-cert-authority", _files(kh=CA, key=False),
                           r"trusts 127\.0\.0\.1:\d+ only through @cert-authority keys, so the device must present "
                           r"a host certificate", target=_ca_only_target))

CASES = FIELD_CASES + RAW_CASES + SSH_CASES


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1 (tests/devices/conftest.py) for the @cert-authority case; None without one."""
    from ..devices.conftest import SSHD, Sshd, make_key

    if not os.path.exists(SSHD):
        yield None
        return
    root = tmp_path_factory.mktemp("sshd")
    make_key(root / "client")
    srv = Sshd(root / "srv", root / "client.pub").start()
    yield {"sshd_port": srv.port, "client_key": root / "client", "user": _user()}
    srv.kill()


def _user() -> str:
    import getpass

    return getpass.getuser()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_target_and_ssh_inputs(bad, case, sshd, tmp_path):
    paths = {}
    if case.id == "ssh-known-hosts-only-cert-authority":
        if sshd is None:
            pytest.skip("no sshd here (the @cert-authority case needs a real server)")
        paths = dict(sshd)
    r = bad(case, **paths)
    if case.id in STDOUT:
        assert re.search(STDOUT[case.id], r.stdout), (case.id, r.stdout)
        assert "Traceback" not in r.stdout and len([x for x in r.stdout.splitlines() if "error:" in x]) == 1
