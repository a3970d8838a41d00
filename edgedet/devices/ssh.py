"""A device reached over SSH (asyncssh): artifacts are uploaded by SFTP, checked by sha256 on the device, and timed
there by the self-contained agent (agent.py), which answers one JSON object per command.

Safety and failure rules:
  - key authentication only; the host key must be in known_hosts (SSHHost.known_hosts, default ~/.ssh/known_hosts).
    An unknown host is refused unless the target sets accept_new_host_key (the key is then appended to that file);
    a host whose key changed is always refused ('host key mismatch').
  - every remote command is an argv list quoted element by element with shlex.join (the SSH server runs a command
    string through the user's shell); values go as --option=VALUE and a relative workdir starting with '-' gets a
    './' prefix, so no value can become an option; file transfers use SFTP paths, which no shell sees.
  - the device is not trusted (devices/replies.py): at most 4 MiB of stdout and 64 KiB of stderr are read per
    command (the command is killed beyond that), every reply is cleaned and checked field by field (types, sizes,
    finite non-negative latencies, no control characters), and only files the artifact lists in artifact.json,
    resolved inside its folder, are ever uploaded, whatever the device says is missing.
  - connecting is retried with exponential backoff (CONNECT_TRIES); a connection lost during a command is
    re-established once and the command repeated; what still fails is a DeviceError naming user@host:port and the
    step. Commands time out after SSHHost.command_timeout_s (the agent also kills itself at that deadline).
  - one measurement at a time per device: a threading lock shared by every SSHDevice of this process with the same
    (user, host, port, workdir), and on the device an flock on WORKDIR/.lock held by the agent while it measures
    (other edgedet processes, other machines). A device is therefore identified by its workdir too: two pool
    entries for one machine with different workdirs are two measuring slots on it (`edgedet device check` warns).

Remote layout (WORKDIR relative to the login's home unless absolute; a leading ~/ means the home):
    WORKDIR/agent-<sha12>/agent.py         the agent and the runner module it runs artifacts with (the folder is named
    WORKDIR/agent-<sha12>/runners.py       by their content, so edgedet versions can share a workdir; the agent checks
                                           runners.py against the sha256 passed on its command line)
    WORKDIR/artifacts/<sha16>/...          an artifact's files (<sha16>: sha256 of its artifact.json)
    WORKDIR/.lock                          the measurement lock
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import posixpath
import re
import shlex
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..backends import get_backend
from ..backends.base import ARTIFACT_JSON, Artifact, Unsupported, sha256
from ..config import SSHHost, TargetSpec
from ..errors import EdgedetError, MissingExtraError
from ..profiler import LatencyRecord
from ..runtime import runners
from . import load, replies
from .base import Device, DeviceError

try:
    import asyncssh
except ImportError:  # pragma: no cover - the `ssh` extra
    raise MissingExtraError("asyncssh", "ssh", "devices over SSH") from None

AGENT = Path(__file__).with_name("agent.py")
RUNNERS = Path(__file__).resolve().parents[1] / "runtime" / "runners.py"
CONNECT_TRIES = 3  # connection attempts, waiting BACKOFF_S, 2 * BACKOFF_S, ... between them
BACKOFF_S = 0.5
MAX_KEY_BYTES = 1 << 20  # a private key file is a few KiB
MAX_KNOWN_HOSTS_BYTES = 16 << 20
KEEPALIVE_S = 5.0  # a silently vanished device (Wi-Fi gone) is noticed after about 3 keepalives
LOST = (asyncssh.ConnectionLost, asyncssh.DisconnectError, asyncssh.ChannelOpenError, asyncssh.SFTPConnectionLost,
        ConnectionError, EOFError, OSError)


class _ConnectionLost(Exception):
    """A command ended without an exit status or signal: the connection went away under it."""


class _Timeout(Exception):
    """A command ran past its timeout and was killed."""


class _TooMuch(Exception):
    """A command printed more than edgedet reads from a device and was killed."""


@dataclass
class _Completed:
    stdout: str
    stderr: str
    exit_status: int | None
    exit_signal: tuple | None


async def _read(stream, limit: int, line: bool = False) -> tuple[str, bool]:
    """(what `stream` gave until EOF, or until the first newline when `line`; at most `limit` characters, True when
    there was more)."""
    chunks, n = [], 0
    while True:
        data = await stream.read(1 if line else 65536)
        if not data:
            return "".join(chunks), False
        chunks.append(data)
        n += len(data)
        if n > limit:
            return "".join(chunks)[:limit], True
        if line and data == "\n":
            return "".join(chunks), False


# Constant shell programs; every value reaches them as a positional parameter ("$@", "$1"), never as code.
_PID_WRAPPER = 'echo "edgedet-pid $$" >&2; exec "$@"'  # the pid (= process group) to kill on a timeout
_KILL_GROUP = 'kill -s KILL -- "-$1" 2>/dev/null || kill -s KILL "$1"'


# ------------------------------------------------------------------------------------------- event loop and locks
class _Loop:
    """One private event loop thread for every SSH connection of this process; callers (the device pool's worker
    threads) block on their own coroutine only."""

    _guard = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def run(cls, coro):
        with cls._guard:
            if cls._loop is None or cls._thread is None or not cls._thread.is_alive():
                cls._loop = asyncio.new_event_loop()
                cls._thread = threading.Thread(target=cls._loop.run_forever, name="edgedet-ssh", daemon=True)
                cls._thread.start()
            loop = cls._loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


_LOCKS: dict[tuple, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _shared_lock(key: tuple) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def _home_relative(path: str) -> str:
    """The remote path as both SFTP and the login shell's cwd see it: '~/x' -> 'x' (relative to the home); a relative
    path starting with '-' gets './' (never an option of the commands it is passed to)."""
    if path in ("~", "~/"):
        return "."
    path = path[2:] if path.startswith("~/") else path
    return "./" + path if path.startswith("-") else path


# ---------------------------------------------------------------------------------------------- host key policy
class _HostKeyPolicy(asyncssh.SSHClient):
    """Called by asyncssh only for a host key that known_hosts does not list for this host: refuse it as a
    mismatch when the host has other keys there, as unknown otherwise, unless accept_new_host_key (then append)."""

    def __init__(self, host: SSHHost, known_hosts: Path):
        self.host, self.known_hosts, self.problem, self.added = host, known_hosts, None, None

    def validate_host_public_key(self, host: str, addr: str, port: int, key) -> bool:
        h = self.host
        try:
            known, cas = asyncssh.read_known_hosts(str(self.known_hosts)).match(host, addr,
                                                                                port if port != 22 else None)[:2]
        except (OSError, ValueError, asyncssh.KeyImportError) as e:
            self.problem = f"cannot read known_hosts {self.known_hosts}: {e}"
            return False
        fp = key.get_fingerprint()
        pattern = host if port == 22 else f"[{host}]:{port}"
        if known:
            self.problem = (f"host key mismatch for {h.host}:{h.port}: the device presented {fp} but "
                            f"{self.known_hosts} has a different key for it (a reinstalled device, or someone in "
                            f"between); refused. If the change is expected: ssh-keygen -R '{pattern}' -f "
                            f"{self.known_hosts}")
            return False
        if cas and not h.accept_new_host_key:
            self.problem = (f"{self.known_hosts} trusts {h.host}:{h.port} only through @cert-authority keys, but the "
                            f"device presented a plain host key ({fp}), not a certificate signed by them; refused. "
                            f"Give the device a host certificate, or add its key (ssh-keyscan -p {h.port} {h.host} "
                            f">> {self.known_hosts})")
            return False
        if not h.accept_new_host_key:
            self.problem = (f"unknown host key for {h.host}:{h.port} ({fp}): not in {self.known_hosts}; refused. "
                            f"Check the fingerprint on the device and add it (ssh-keyscan -p {h.port} {h.host} >> "
                            f"{self.known_hosts}), or set accept_new_host_key: true in the target")
            return False
        kind, blob = key.export_public_key("openssh").decode().split()[:2]
        with open(self.known_hosts, "a") as f:
            f.write(f"{pattern} {kind} {blob}\n")
        self.added = fp
        return True


# ------------------------------------------------------------------------------------------------------ the device
class SSHDevice(Device):
    """One SSHHost of a target. Connects lazily, keeps the connection, and reconnects after a loss."""

    def __init__(self, host: SSHHost, connect_tries: int = CONNECT_TRIES, backoff_s: float = BACKOFF_S):
        super().__init__()
        self.host = host
        self.address = f"{host.user}@{host.host}:{host.port}"
        self.workdir = _home_relative(host.workdir)
        self.name = f"{self.address}:{self.workdir}"
        self.lock = _shared_lock((host.user, host.host, host.port, self.workdir))
        self.known_hosts = Path(os.path.expanduser(host.known_hosts or "~/.ssh/known_hosts"))
        self.key_path = Path(os.path.expanduser(host.key)) if host.key else None
        self.connect_tries, self.backoff_s = connect_tries, backoff_s
        self.lock_path = posixpath.join(self.workdir, ".lock")
        self.runners_sha256 = sha256(RUNNERS)
        tag = hashlib.sha256((sha256(AGENT) + self.runners_sha256).encode()).hexdigest()[:12]
        self.agent_dir = posixpath.join(self.workdir, f"agent-{tag}")
        self.agent_path = posixpath.join(self.agent_dir, "agent.py")
        self._conn = None
        self._ca_only = False  # known_hosts trusts this host only through @cert-authority keys
        self._conn_guard = threading.Lock()
        self._ready: set[str] = set()  # artifacts verified on the device over the current connection
        self._built: dict[str, dict] = {}  # TensorRT build reports by artifact id

    # ---------------------------------------------------------------------------------------------- connection
    def _client_keys(self):
        """asyncssh options for the client key: the target's key file, read here so that every problem is one
        DeviceError naming it; like OpenSSH, a key file of ours that others can read is refused."""
        if self.key_path is None:
            return {}  # asyncssh's defaults: ~/.ssh/id_* and a running ssh-agent
        p = self.key_path
        if p.is_dir():
            raise DeviceError(f"{self.address}: client key {p} is a folder, not a private key file")
        try:
            st = p.stat()
        except FileNotFoundError:
            raise DeviceError(f"{self.address}: client key {p} not found") from None
        except OSError as e:
            raise DeviceError(f"{self.address}: client key {p} could not be read: {e.strerror}") from None
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            raise DeviceError(f"{self.address}: UNPROTECTED PRIVATE KEY FILE: permissions {st.st_mode & 0o777:04o} "
                              f"for '{p}' are too open; private key files must not be accessible by others, so this "
                              f"key is refused (as OpenSSH refuses it): chmod 600 {p}")
        if st.st_size > MAX_KEY_BYTES:
            raise DeviceError(f"{self.address}: client key {p} is {st.st_size} bytes, not a private key file")
        try:
            key = asyncssh.read_private_key(str(p))
        except asyncssh.KeyEncryptionError:
            raise DeviceError(f"{self.address}: client key {p} is passphrase-protected; load it into "
                              "ssh-agent and leave `key` out of the target") from None
        except (OSError, ValueError, asyncssh.KeyImportError) as e:
            raise DeviceError(f"{self.address}: client key {p} is not a private key asyncssh can read "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
        return {"client_keys": [key], "agent_path": None}

    def _known_hosts(self):
        """The known_hosts file, checked before connecting (a missing one is created only with
        accept_new_host_key): a folder, an unreadable, binary or non-UTF-8 file, or a line OpenSSH's format does not
        allow is one DeviceError naming the file (and the line). Returns the parsed file, which is what the
        connection then checks the host key against."""
        p = self.known_hosts
        if p.is_dir():
            raise DeviceError(f"{self.address}: known_hosts {p} is a folder, not a file; point known_hosts at the "
                              "file itself")
        if not p.exists():
            if not self.host.accept_new_host_key:
                raise DeviceError(f"{self.address}: known_hosts file {p} does not exist; add the "
                                  f"device's key (ssh-keyscan -p {self.host.port} {self.host.host} >> "
                                  f"{p}) or set accept_new_host_key: true in the target")
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            p.touch(mode=0o600)
        try:
            data = p.read_bytes() if p.stat().st_size <= MAX_KNOWN_HOSTS_BYTES else None
        except OSError as e:
            raise DeviceError(f"{self.address}: cannot read known_hosts {p}: {e.strerror}") from None
        if data is None:
            raise DeviceError(f"{self.address}: known_hosts {p} is over {MAX_KNOWN_HOSTS_BYTES >> 20} MiB: not a "
                              "known_hosts file")
        try:
            text = data.decode("utf-8")
            if "\x00" in text:
                raise UnicodeDecodeError("utf-8", data, data.index(b"\x00"), data.index(b"\x00") + 1, "NUL byte")
        except UnicodeDecodeError as e:
            raise DeviceError(f"{self.address}: known_hosts {p} is binary, not a text known_hosts file (byte "
                              f"{data[e.start]:#04x} at offset {e.start})") from None
        for n, line in enumerate(text.splitlines(), 1):
            try:
                asyncssh.import_known_hosts(line)
            except (ValueError, asyncssh.KeyImportError) as e:
                raise DeviceError(f"{self.address}: known_hosts {p} line {n}: {' '.join(str(e).split())[:120]}") \
                    from None
        h = self.host
        keys, cas = asyncssh.import_known_hosts(text).match(h.host, h.host, h.port if h.port != 22 else None)[:2]
        self._ca_only = bool(cas) and not keys
        return str(p)

    def _ca_only_problem(self, e: BaseException) -> str:
        h = self.host
        return (f"{self.address}: {self.known_hosts} trusts {h.host}:{h.port} only through @cert-authority keys, "
                f"so the device must present a host certificate signed by them; it hung up during the key exchange "
                f"({type(e).__name__}), as a device with only a plain host key does. Give it a host certificate, or "
                f"add its key (ssh-keyscan -p {h.port} {h.host} >> {self.known_hosts})")

    async def _aconnect(self):
        h = self.host
        policy = _HostKeyPolicy(h, self.known_hosts)
        opts = dict(port=h.port, username=h.user, known_hosts=self._known_hosts(), client_factory=lambda: policy,
                    connect_timeout=h.connect_timeout_s, keepalive_interval=KEEPALIVE_S, keepalive_count_max=3,
                    preferred_auth="publickey", **self._client_keys())
        try:
            conn = await asyncssh.connect(h.host, **opts)
        except asyncssh.HostKeyNotVerifiable as e:
            raise DeviceError(f"{self.address}: {policy.problem or e}") from None
        except asyncssh.PermissionDenied:
            key = f"with key {self.key_path}" if self.key_path else "with the default keys (~/.ssh/id_*, ssh-agent)"
            raise DeviceError(f"authentication failed for {self.address} {key}: the device does not accept it "
                              f"(add the public key to ~{h.user}/.ssh/authorized_keys there)") from None
        except (ConnectionResetError, asyncssh.ConnectionLost, asyncssh.DisconnectError) as e:
            if self._ca_only:  # asyncssh then offers only certificate host keys: a plain-key device hangs up
                raise DeviceError(self._ca_only_problem(e)) from None
            raise
        try:  # once per connection: the workdir and the agent (atomically replaced: other runs may be using it)
            async with conn.start_sftp_client() as sftp:
                await sftp.makedirs(self.agent_dir, exist_ok=True)
                await self._put(sftp, RUNNERS, posixpath.join(self.agent_dir, "runners.py"))
                await self._put(sftp, AGENT, self.agent_path)
        except asyncssh.SFTPConnectionLost:
            conn.close()
            raise
        except asyncssh.SFTPError as e:
            conn.close()
            raise DeviceError(f"{self.address}: cannot set up the workdir {self.workdir!r} there: {e}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self, lost: str | None = None):
        """The open connection, or a new one after CONNECT_TRIES attempts with exponential backoff."""
        with self._conn_guard:
            if self._conn is not None:
                return self._conn
            t0, why = time.monotonic(), ""
            for i in range(self.connect_tries):
                if i:
                    time.sleep(self.backoff_s * 2 ** (i - 1))
                try:
                    self._conn = _Loop.run(asyncio.wait_for(self._aconnect(), self.host.connect_timeout_s * 2 + 5))
                    self._ready.clear()
                    return self._conn
                except DeviceError:
                    raise
                except (asyncio.TimeoutError, asyncssh.Error, *LOST) as e:
                    why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            head = f"lost the connection during {lost}; reconnecting failed: " if lost else ""
            raise DeviceError(f"{self.address}: {head}cannot connect ({why}; {self.connect_tries} tries over "
                              f"{time.monotonic() - t0:.1f} s)")

    def _drop(self) -> None:
        with self._conn_guard:
            conn, self._conn = self._conn, None
        if conn is not None:  # closed on the loop's thread (asyncssh objects are not thread-safe)
            with contextlib.suppress(Exception):
                _Loop.run(self._aclose(conn))

    @staticmethod
    async def _aclose(conn) -> None:
        conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.wait_closed(), 2)

    def close(self) -> None:
        self._drop()

    def _call(self, what: str, make, timeout: float):
        """Run the coroutine make(conn) on the connection; reconnect and repeat once if the connection was lost."""
        lost = None
        for attempt in (1, 2):
            conn = self._connection(lost)
            try:
                return _Loop.run(make(conn))
            except (_Timeout, asyncio.TimeoutError):
                raise DeviceError(f"{self.address}: {what} timed out after {timeout:g} s (command_timeout_s); the "
                                  "command was killed") from None
            except _TooMuch as e:
                raise DeviceError(f"{self.address}: {what}: the device answered {e}; the command was killed") \
                    from None
            except (_ConnectionLost, *LOST) as e:
                self._drop()
                lost = f"{what} ({type(e).__name__}: {e})" if str(e) else f"{what} ({type(e).__name__})"
        raise DeviceError(f"{self.address}: lost the connection during {lost}, again after reconnecting")

    # ----------------------------------------------------------------------------------------- remote commands
    @staticmethod
    async def _put(sftp, local: Path, remote: str) -> None:
        tmp = f"{remote}.part-{uuid.uuid4().hex[:8]}"
        await sftp.put(str(local), tmp)
        try:
            await sftp.posix_rename(tmp, remote)
        except asyncssh.SFTPOpUnsupported:  # pragma: no cover - servers without posix-rename@openssh.com
            with contextlib.suppress(asyncssh.SFTPError):
                await sftp.remove(remote)
            await sftp.rename(tmp, remote)

    @staticmethod
    async def _exec(conn, argv: list[str], stdin: str, timeout: float) -> "_Completed":
        """Run argv (each element quoted) with `stdin`, reading at most MAX_REPLY_BYTES of stdout and
        MAX_STDERR_BYTES of stderr; on timeout or too much output kill its whole process group on the device (an SSH
        'signal' request is not enough: OpenSSH refuses it for root logins) and raise _Timeout / _TooMuch."""
        proc = await conn.create_process(shlex.join(["sh", "-c", _PID_WRAPPER, "sh", *argv]), input=stdin,
                                         encoding="utf-8", errors="replace")
        t0, pid = time.monotonic(), None
        left = lambda: max(0.1, timeout - (time.monotonic() - t0))  # noqa: E731

        async def kill() -> None:
            if pid is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.run(shlex.join(["sh", "-c", _KILL_GROUP, "sh", str(pid)])), 10)
            proc.close()

        try:
            first, _ = await asyncio.wait_for(_read(proc.stderr, 4096, line=True), timeout)
            m = re.fullmatch(r"edgedet-pid (\d{1,10})\n", first)
            pid = int(m.group(1)) if m else None
            out, err = await asyncio.wait_for(asyncio.gather(_read(proc.stdout, replies.MAX_REPLY_BYTES),
                                                             _read(proc.stderr, replies.MAX_STDERR_BYTES)), left())
            if out[1] or err[1]:
                await kill()
                raise _TooMuch(f"more than {replies.MAX_REPLY_BYTES >> 20} MiB on stdout" if out[1] else
                               f"more than {replies.MAX_STDERR_BYTES >> 10} KiB on stderr")
            r = await proc.wait(timeout=left())
        except asyncio.TimeoutError:  # asyncssh.TimeoutError too
            await kill()
            raise _Timeout() from None
        if r.exit_status is None and r.exit_signal is None:
            raise _ConnectionLost("the command ended without an exit status")
        return _Completed(out[0], ("" if m else first) + err[0], r.exit_status, r.exit_signal)

    def _agent(self, command: str, args: list[str], request: dict, what: str | None = None) -> dict:
        """Run `python agent.py COMMAND ARGS --request - ` with `request` on stdin; the agent's JSON answer.
        'unsupported: ...' is raised as Unsupported, 'error: ...' and anything unparsable as DeviceError."""
        what = what or command
        t = self.host.command_timeout_s
        argv = [self.host.python, self.agent_path, command, *args, "--request", "-", "--deadline-s", f"{t:g}",
                f"--runners-sha256={self.runners_sha256}"]
        grace = min(5.0, max(0.5, 0.25 * t))  # the agent's own alarm fires first
        r = self._call(what, lambda conn: self._exec(conn, argv, json.dumps(request), t + grace), t)
        res = replies.parse(r.stdout)
        if res is None:
            sig = r.exit_signal[0] if r.exit_signal else None
            if sig == "ALRM":
                raise DeviceError(f"{self.address}: {what} timed out after {t:g} s (command_timeout_s); the agent "
                                  "was stopped by its deadline")
            how = f"exit status {r.exit_status}" if r.exit_status is not None else f"killed by signal {sig}"
            err = " | ".join(r.stderr.strip().splitlines()[-3:]) or "no output"
            raise DeviceError(f"{self.address}: {what}: the agent (python {self.host.python!r}) gave no result "
                              f"({replies.text(how, 100)}): {replies.text(err, 500)}")
        status = res["status"]
        if status.startswith("unsupported: "):
            raise Unsupported(status[len("unsupported: "):])
        if status != "ok":
            raise DeviceError(f"{self.address}: {what}: {status}")
        return res

    # -------------------------------------------------------------------------------------------- artifacts
    @staticmethod
    def artifact_id(artifact: Artifact) -> str:
        return hashlib.sha256((artifact.dir / ARTIFACT_JSON).read_bytes()).hexdigest()[:16]

    def remote_dir(self, artifact: Artifact) -> str:
        return posixpath.join(self.workdir, "artifacts", self.artifact_id(artifact))

    def upload(self, artifact: Artifact) -> str:
        """Make the artifact's files present on the device, checked by sha256 there; skip those already intact.
        -> the remote artifact folder."""
        aid, rdir = self.artifact_id(artifact), self.remote_dir(artifact)
        if aid in self._ready:
            return rdir
        manifest = dict(artifact.files, **{ARTIFACT_JSON: sha256(artifact.dir / ARTIFACT_JSON)})
        local = {rel: Path(runners.confined(str(artifact.dir), rel, f"{artifact.dir}/artifact.json: files key"))
                 for rel in manifest}  # only these files are ever sent, whatever the device answers
        what = f"sha256 check of {artifact.dir.name}"

        def check() -> list[str]:
            res = self._agent("verify", [f"--dir={rdir}"], {"files": manifest}, what)
            where = f"{self.address}: {what}"
            return (replies.file_list(res, "missing", manifest, where)
                    + replies.file_list(res, "mismatch", manifest, where))

        todo = check()
        if todo:
            changed = artifact.verify()
            if changed:
                raise EdgedetError(f"artifact {artifact.dir}: files changed since compile: {', '.join(changed)}")

            async def send(conn):
                try:
                    async with conn.start_sftp_client() as sftp:
                        for rel in dict.fromkeys(todo):
                            dst = posixpath.join(rdir, *rel.split("/"))
                            await sftp.makedirs(posixpath.dirname(dst), exist_ok=True)
                            await self._put(sftp, local[rel], dst)
                except asyncssh.SFTPConnectionLost:
                    raise
                except asyncssh.SFTPError as e:
                    raise DeviceError(f"{self.address}: upload of {artifact.dir.name} to {rdir!r} failed: {e}") \
                        from None

            self._call(f"upload of {artifact.dir.name}",
                       lambda conn: asyncio.wait_for(send(conn), self.host.command_timeout_s),
                       self.host.command_timeout_s)
            bad = check()
            if bad:
                raise DeviceError(f"{self.address}: upload of {artifact.dir.name} does not match its sha256 on the "
                                  f"device: {', '.join(bad)}")
        self._ready.add(aid)
        return rdir

    def _request(self, target: TargetSpec) -> dict:
        return dict(target.benchmark.model_dump(), runtime=target.runtime.model_dump(),
                    lock_timeout_s=0.8 * self.host.command_timeout_s)

    def build_engine(self, artifact: Artifact, target: TargetSpec) -> dict:
        """TensorRT: build model.engine on the device with the artifact's build_engine.py (cached there per TensorRT
        version). UNTESTED on real TensorRT here: only the 'tensorrt is not installed' path runs in edgedet's tests."""
        aid = self.artifact_id(artifact)
        if aid not in self._built:
            rdir = self.upload(artifact)
            req = dict(self._request(target), int8_mode=target.runtime.trt_int8_mode)
            what = f"TensorRT engine build of {artifact.dir.name}"
            with self.lock:
                res = self._agent("build-trt", [f"--artifact={rdir}", f"--lock={self.lock_path}"], req, what)
            self._built[aid] = replies.mapping(res, "build", f"{self.address}: {what}")
        return self._built[aid]

    def probe(self, artifact: Artifact, target: TargetSpec) -> dict:
        """The agent's runner loaded with the target's options and run once on the bench input (seeded noise):
        {"runtime": its info() with the settings in effect, "outputs": sha256 of the float32 boxes / logits}."""
        self.prepare(artifact, target)
        what = f"probe of {artifact.dir.name}"
        with self.lock:
            res = self._agent("probe", [f"--artifact={self.remote_dir(artifact)}", f"--lock={self.lock_path}"],
                              self._request(target), what)
        where = f"{self.address}: {what}"
        return {"runtime": replies.mapping(res, "runtime", where), "outputs": replies.mapping(res, "outputs", where)}

    # -------------------------------------------------------------------------------------- Device interface
    def info(self) -> dict:
        res, where = self._agent("info", [], {}), f"{self.address}: info"
        return dict(replies.device_info(res, where), runtimes=replies.mapping(res, "runtimes", where),
                    ssh=self.address, workdir=self.workdir,
                    python_executable=replies.string(res, "python_executable", where))

    def check(self, target: TargetSpec) -> dict:
        res, where = self._agent("check", [], {}), f"{self.address}: check"
        runtimes = replies.mapping(res, "runtimes", where)
        replies.device_info(res, where)
        replies.string(res, "python_executable", where)
        state = runtimes.get(target.backend)
        state = state if isinstance(state, str) else ""
        return {"device": self.name, "address": self.address, "workdir": self.workdir,
                "python": res["python_executable"], "numpy": res.get("numpy"), "info": res["info"],
                "runtimes": runtimes, "backend_ok": state.startswith("ok"),
                "runtime_version": state[3:] if state.startswith("ok ") else None}

    def prepare(self, artifact: Artifact, target: TargetSpec) -> Artifact:
        self.upload(artifact)
        if get_backend(artifact.backend).caps.builds_on_device:
            self.build_engine(artifact, target)
        return artifact

    def measure(self, artifact: Artifact, target: TargetSpec) -> LatencyRecord:
        self.prepare(artifact, target)
        rdir = self.remote_dir(artifact)
        what = f"benchmark of {artifact.dir.name}"
        with self.lock:
            res = self._agent("bench", [f"--artifact={rdir}", f"--lock={self.lock_path}"], self._request(target),
                              what)
        out = replies.record(res, f"{self.address}: {what}")
        out.device.update(ssh=self.address, workdir=self.workdir)
        load.judge(out, target.benchmark.max_other_cores)  # the agent reports device.load as the local device does
        return out
