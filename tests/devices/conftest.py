"""A real OpenSSH server on 127.0.0.1 with throwaway keys: the 'device' is this machine, reached over SSH, and its
python is the one running the tests (so the runtimes are there; the agent itself needs no edgedet)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgedet.config import SSHHost, TargetSpec

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SUB = "p24-r192-w2-d1-q25"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), children first-level first."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def make_key(path: Path):
    import asyncssh

    k = asyncssh.generate_private_key("ssh-ed25519")
    k.write_private_key(str(path))
    k.write_public_key(str(path) + ".pub")
    path.chmod(0o600)
    return k


class Sshd:
    """sshd -D on 127.0.0.1:port with its own host key, accepting `client_pub` for the current user."""

    def __init__(self, root: Path, client_pub: Path, port: int | None = None, host_key: Path | None = None):
        self.root, self.port = root, port or free_port()
        root.mkdir(parents=True, exist_ok=True)
        self.host_key = host_key or root / "host_ed25519"
        if not self.host_key.exists():
            make_key(self.host_key)
        auth = root / "authorized_keys"
        auth.write_text(client_pub.read_text())
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}", f"PidFile {root}/sshd.pid",
            f"AuthorizedKeysFile {auth}", "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
            "Subsystem sftp internal-sftp", "MaxStartups 100", "MaxSessions 100", "LogLevel ERROR", ""]))
        self.proc = None

    def start(self) -> "Sshd":
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        self.log = open(self.root / "sshd.log", "ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                    if s.recv(4).startswith(b"SSH"):
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sshd did not start listening")

    def kill(self) -> None:
        """Kill sshd and every session it serves (SIGKILL by pid: the device 'loses power')."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(5)

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} " + " ".join(Path(str(self.host_key) + ".pub").read_text().split()[:2])


def sshd_unavailable() -> str | None:
    if not os.path.isfile(SSHD):
        return ("OpenSSH server not installed (sshd not found); `make test` installs it with apt-get "
                "(openssh-server) when it can run as root or with sudo")
    try:
        import asyncssh  # noqa: F401
    except ImportError:
        return "asyncssh is not installed: pip install 'edgedet[ssh]'"
    return None


class SSHEnv:
    def __init__(self, root: Path, sshd: Sshd, client_key: Path, known_hosts: Path):
        self.root, self.sshd, self.client_key, self.known_hosts = root, sshd, client_key, known_hosts
        self.user = os.environ.get("USER") or __import__("getpass").getuser()

    def host(self, **kw) -> SSHHost:
        d = dict(host="127.0.0.1", port=self.sshd.port, user=self.user, key=str(self.client_key),
                 known_hosts=str(self.known_hosts), workdir=str(self.root / "work"), python=sys.executable,
                 connect_timeout_s=10, command_timeout_s=120)
        d.update(kw)
        return SSHHost(**d)

    def target(self, hosts: list[SSHHost], backend="onnxruntime", **bench) -> TargetSpec:
        b = dict(warmup=1, runs=3, min_duration_s=0.0)
        b.update(bench)
        return TargetSpec(name="ssh test", device={"type": "ssh", "hosts": [h.model_dump() for h in hosts]},
                          backend=backend, precisions=["fp32"], runtime={"threads": 1}, benchmark=b)


@pytest.fixture(scope="session")
def ssh_env(tmp_path_factory):
    why = sshd_unavailable()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("ssh")
    client = root / "client_ed25519"
    make_key(client)
    sshd = Sshd(root / "sshd", Path(str(client) + ".pub")).start()
    known = root / "known_hosts"
    known.write_text(sshd.known_hosts_line() + "\n")
    yield SSHEnv(root, sshd, client, known)
    sshd.kill()


@pytest.fixture(scope="session")
def ort_artifact(tmp_path_factory, tiny_net):
    """A tiny sealed ONNX Runtime fp32 artifact (its folder name has a space and shell metacharacters)."""
    from edgedet.deploy import compile_subnet

    t = TargetSpec(name="local", backend="onnxruntime", precisions=["fp32"], runtime={"threads": 1})
    return compile_subnet(tiny_net, SUB, t, "fp32", tmp_path_factory.mktemp("art") / "ort fp32 $(x);'a'",
                          runtime=())
