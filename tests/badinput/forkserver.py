"""Fork server for the bad-input corpus: imports edgedet and its heavy dependencies once, then runs each case in a
forked child under an address-space limit, so hundreds of CLI cases cost milliseconds each instead of an interpreter
start (torch import) each.

Protocol: one JSON request per line on stdin -> one JSON reply per line on stdout.
  request {"argv": [...], "cwd": DIR, "env": {...}, "stdin": "..." | null, "timeout": s, "mem_mb": N}
  reply   {"code": int, "stdout": str, "stderr": str, "wall_s": float, "timed_out": bool, "signal": int | null}
The child runs `edgedet ARGV` exactly as the console script does (edgedet.cli.main), with ARGV, cwd and environment
of the request; it never runs a torch op in the parent, so forking is safe.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import sys
import tempfile
import time


def _preload() -> None:
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    import edgedet.api  # noqa: F401
    import edgedet.cli  # noqa: F401
    import edgedet.deploy  # noqa: F401
    import edgedet.evaluate  # noqa: F401
    import edgedet.search.run  # noqa: F401
    try:
        import openvino  # noqa: F401
    except ImportError:
        pass


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(req: dict, out_path: str, err_path: str) -> None:
    """In the forked child: limits, cwd, env, redirections, then the CLI. Never returns."""
    code = 1
    try:
        os.setsid()
        limit = _vm_bytes() + int(req.get("mem_mb", 2048)) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.chdir(req["cwd"])
        env = req.get("env") or {}
        os.environ.update({k: str(v) for k, v in env.items()})
        stdin = req.get("stdin")
        fd_in = os.open(os.devnull, os.O_RDONLY)
        if stdin is not None:
            r, w = os.pipe()
            os.write(w, stdin.encode())
            os.close(w)
            fd_in = r
        fd_out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        fd_err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd_in, 0)
        os.dup2(fd_out, 1)
        os.dup2(fd_err, 2)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        sys.argv = ["edgedet", *req["argv"]]
        import edgedet.cli

        try:
            edgedet.cli.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - what a user would see: a traceback on stderr, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)


def run_one(req: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgedet-fork-") as tmp:
        out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(req, out_path, err_path)
        timeout = float(req.get("timeout", 60))
        timed_out, status = False, None
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - t0 > timeout:
                timed_out = True
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.005)
        wall = time.monotonic() - t0
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -(sig or 0)
        try:  # a case may leave background processes in its session: end them
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

        def read(p: str) -> str:
            try:
                with open(p, "rb") as f:
                    return f.read(1 << 20).decode(errors="replace")
            except OSError:
                return ""

        return {"code": code, "stdout": read(out_path), "stderr": read(err_path), "wall_s": round(wall, 3),
                "timed_out": timed_out, "signal": sig}


def main() -> None:
    _preload()
    out = sys.stdout
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        out.write(json.dumps(run_one(json.loads(line))) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
