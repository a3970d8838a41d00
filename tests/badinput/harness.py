"""The bad-input contract, checked the same way for every hostile or malformed input of the corpus.

A Case is one input against one entry point: an `edgedet` command line (kind "cli", run in a forked child of a
preloaded fork server), or any other process (kind "process": the shipped Python runtime, the C++ example, a
script). Each case runs in its own sandbox folder (cwd, HOME and TMPDIR point into it); `setup(sandbox)` writes the
hostile files there first (it gets the substitutions too, to write {marker} into payloads). The contract (check()):

- exit code `expect_code` (2 for bad input; 1 only where the README documents a device failure);
- at most 3 non-empty lines on stderr, and no Python traceback on stdout or stderr;
- when `expect_stderr` is given, that regex is found in stderr (the message names what is wrong and where);
- no file or folder created in the sandbox other than those matching `outputs` (glob patterns, relative); inputs
  written by setup are not counted; nothing left in the sandbox's TMPDIR;
- no file in the marker folder: payloads (code in names, pickles, shell metacharacters) try to create
  `{marker}/pwned-*` when they run;
- finished within `timeout` (no hang) and under the address-space limit `mem_mb` above the preloaded process (no
  over-allocation: a MemoryError would be a traceback, a kill a non-2 code).

Argument strings may use {sandbox}, {marker}, {demo_ckpt}, {demo_data} and any key of the `paths` dict a test module
passes to run_case (fixtures: a valid artifact, a target file, ...).
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Case:
    id: str
    argv: list[str]
    setup: Callable[[Path, dict], None] | None = None  # (sandbox, substitutions) -> writes the inputs
    kind: str = "cli"  # "cli": argv after `edgedet`; "process": a whole argv run as a subprocess
    expect_code: int = 2
    expect_stderr: str | None = None  # regex that must appear in stderr
    outputs: tuple[str, ...] = ()  # glob patterns (relative to the sandbox) the case may create
    stdin: str | None = None
    env: dict = field(default_factory=dict)
    timeout: float = 120.0
    mem_mb: int = 3072
    max_stderr_lines: int = 3


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool
    created: list[str]
    leftover_tmp: list[str]
    marker_files: list[str]


class ForkServer:
    """A long-lived `python tests/badinput/forkserver.py` (edgedet, torch, ORT, OpenVINO imported once)."""

    def __init__(self):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("forkserver.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        hello = self.proc.stdout.readline()
        if not hello or not json.loads(hello).get("ready"):
            raise RuntimeError(f"fork server did not start: {hello!r}")
        self.lock = threading.Lock()

    def run(self, req: dict) -> dict:
        with self.lock:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fork server died")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _snapshot(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


def _limit(mem_mb: int):
    def pre():
        import resource

        os.setsid()
        lim = mem_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    return pre


def expand(s: str, subst: dict) -> str:
    for k, v in subst.items():
        s = s.replace("{" + k + "}", str(v))
    return s


def run_case(case: Case, sandbox: Path, marker: Path, server: ForkServer | None, paths: dict | None = None) -> Result:
    """Set up and run one case in `sandbox`; -> Result (what check() judges)."""
    sandbox.mkdir(parents=True, exist_ok=True)
    (sandbox / "tmp").mkdir(exist_ok=True)
    (sandbox / "home").mkdir(exist_ok=True)
    subst = dict(paths or {}, sandbox=sandbox, marker=marker)
    if case.setup is not None:
        case.setup(sandbox, subst)
    before = _snapshot(sandbox)
    argv = [expand(a, subst) for a in case.argv]
    env = {"HOME": str(sandbox / "home"), "TMPDIR": str(sandbox / "tmp"), "COLUMNS": "120", "NO_COLOR": "1",
           **{k: expand(str(v), subst) for k, v in case.env.items()}}
    stdin = expand(case.stdin, subst) if case.stdin is not None else None
    if case.kind == "cli":
        assert server is not None, "cli cases need the fork server"
        r = server.run({"argv": argv, "cwd": str(sandbox), "env": env, "stdin": stdin, "timeout": case.timeout,
                        "mem_mb": case.mem_mb})
    else:
        t0 = time.monotonic()
        full_env = dict(os.environ, **env)
        try:
            p = subprocess.run(argv, cwd=sandbox, env=full_env, input=stdin, capture_output=True, text=True,
                               errors="replace", timeout=case.timeout, preexec_fn=_limit(case.mem_mb + 1024))
            r = {"code": p.returncode, "stdout": p.stdout, "stderr": p.stderr, "timed_out": False}
        except subprocess.TimeoutExpired as e:
            r = {"code": -9, "stdout": str(e.stdout or ""), "stderr": str(e.stderr or ""), "timed_out": True}
        r["wall_s"] = round(time.monotonic() - t0, 3)
    after = _snapshot(sandbox)
    created = sorted(after - before)
    leftover = sorted(c for c in created if c.startswith("tmp" + os.sep))
    created = [c for c in created if not c.startswith("tmp" + os.sep)]
    allowed = [expand(o, subst) for o in case.outputs]
    created = [c for c in created
               if not any(fnmatch.fnmatch(c, pat) or c.startswith(pat.rstrip("/") + os.sep) for pat in allowed)
               and not any(pat.startswith(c + os.sep) or fnmatch.fnmatch(c + os.sep + "x", pat + os.sep + "*")
                           for pat in allowed)]
    marks = sorted(os.listdir(marker)) if marker.is_dir() else []
    return Result(code=r["code"], stdout=r.get("stdout", ""), stderr=r.get("stderr", ""), wall_s=r["wall_s"],
                  timed_out=r["timed_out"], created=created, leftover_tmp=leftover, marker_files=marks)


def check(case: Case, r: Result) -> None:
    """Assert the bad-input contract for one case (one message listing every violation)."""
    problems = []
    if r.timed_out:
        problems.append(f"did not finish within {case.timeout:g} s (hang)")
    if r.code != case.expect_code:
        problems.append(f"exit code {r.code}, expected {case.expect_code}")
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    if len(lines) > case.max_stderr_lines:
        problems.append(f"{len(lines)} lines on stderr (at most {case.max_stderr_lines})")
    if "Traceback (most recent call last)" in r.stderr + r.stdout:
        problems.append("a Python traceback was printed")
    if case.expect_stderr and not re.search(case.expect_stderr, r.stderr):
        problems.append(f"stderr does not match {case.expect_stderr!r}")
    if r.created:
        problems.append(f"created outside the expected output: {r.created[:5]}")
    if r.leftover_tmp:
        problems.append(f"left temporary files: {r.leftover_tmp[:5]}")
    if r.marker_files:
        problems.append(f"A PAYLOAD RAN: marker files {r.marker_files}")
    if problems:
        raise AssertionError(f"case {case.id}: " + "; ".join(problems)
                             + f"\n--- stderr ---\n{r.stderr[-3000:]}\n--- stdout ---\n{r.stdout[-1500:]}")


def payload_py(marker_expr: str = "{marker}") -> str:
    """A snippet of Python that creates a marker file when executed (for names that would become code)."""
    return f"__import__('pathlib').Path('{marker_expr}/pwned-py').touch()"


def payload_sh(marker_expr: str = "{marker}") -> str:
    """Shell metacharacters that create a marker file if a shell ever interprets them."""
    return f"$(touch {marker_expr}/pwned-sh)`touch {marker_expr}/pwned-bt`;touch {marker_expr}/pwned-semi"


HOSTILE_NAMES = [  # class / category names that must survive every generated file as data, never as code
    "'''", '"""', "a'''+__import__('pathlib').Path('{marker}/pwned-tq').touch()+'''b",
    '"); system("touch {marker}/pwned-cpp"); ("', "\\", "back\\slash\\n", "new\nline", "{}", "{0}", "{config_json}",
    "nul\x00byte", "surrogate\udcff", "*/ #include <cstdlib> /*", "${{HOME}}", "</script><script>alert(1)</script>",
    "$(touch {marker}/pwned-sh)", "\u202eevil", "x" * 300,
]
