"""edgedet device agent: copied to a device and run there as `python3 agent.py SUBCOMMAND ...`.

Self-contained on purpose: the standard library (Python >= 3.8), numpy, the runtime that runs the artifact, and
runners.py (edgedet/runtime/runners.py, uploaded next to this file; `--runners-sha256` makes the agent check it before
use); it never imports edgedet, so nothing needs installing on the device. The agent itself only probes the device,
holds the device lock and answers the subcommands; loading, running and timing artifacts is runners.py's, the same
code the host backends and every artifact's Python runtime use. Every subcommand prints exactly ONE JSON object on
stdout ({"status": "ok" | "unsupported: <reason>" | "error: <reason>", ...}); whatever the runtimes print goes to
stderr. Exit code 0 for ok and unsupported, 1 for errors.

  info                       device info (CPU, cores, memory, OS, python, GPU via nvidia-smi, Jetson model, L4T,
                             nvpmodel power mode, one tegrastats sample) and runtime versions (package metadata)
  check                      info + each runtime actually imported: {"runtimes": {name: "ok <version>" |
                             "missing: <why>"}}
  verify --dir D             sha256 of D's files against {"files": {relpath: sha256}} read from --request (JSON, or
                             "-" for stdin): {"missing": [...], "mismatch": [...]}
  bench --artifact D         time the artifact (artifact.json names the runtime: onnxruntime, openvino, tflite,
                             tensorrt) with the target's settings from --request: {"record": {LatencyRecord fields}}
  probe --artifact D         load it as bench does and run it once on the bench input: {"runtime": runner.info(),
                             "outputs": {"boxes": sha256, "logits": sha256}} (of the float32 output bytes)
  build-trt --artifact D     build model.engine on the device with D/build_engine.py (TensorRT artifacts)

bench and build-trt hold an exclusive lock (fcntl.flock on --lock, default D/../../.lock = WORKDIR/.lock) while they
use the device, so two edgedet runs never measure on one device at once; a record's device.lock says how long it
waited and when it held the lock.
`--deadline-s S` arms an alarm: a hung runtime is killed after S seconds (the lock dies with it).

The timing loop (runners.time_runs + summarize) is the one edgedet.profiler.measure uses on the host: the same
warm-up, runs + min_duration_s stopping rule, cooldown, percentiles, spread and throttle flag, by construction.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import time

PROTOCOL = 1
TEGRA_RELEASE = "/etc/nv_tegra_release"  # Jetson: the L4T release
DT_MODEL = "/proc/device-tree/model"  # Jetson (and other boards): the board name
RECORD_FIELDS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "spread", "noisy", "runs", "warmup", "batch",
                 "cooldown_ms", "duration_s", "runtime", "device", "note")


# ---------------------------------------------------------------------------------------------------- device info
def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().replace(b"\0", b"").decode(errors="replace").strip()
    except OSError:
        return None


def _cmd(argv: list, timeout: float = 5.0) -> str | None:
    """stdout of a tool if it exists and succeeds (argv list, never a shell)."""
    if not shutil.which(argv[0]):
        return None
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=timeout,
                           universal_newlines=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith(("model name", "Model", "Hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# CPU features that decide which kernels a runtime picks (bf16/int8 paths above all): a latency measured with them
# does not carry over to a CPU without them.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "amx_int8", "asimd", "asimddp", "asimdhp", "bf16", "i8mm", "sve", "sve2")


def cpu_flags() -> list:
    """The CPU_FLAGS this CPU has (/proc/cpuinfo "flags" on x86, "Features" on ARM), in CPU_FLAGS order."""
    have = set()
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith(("flags", "Features")):
            have.update(line.split(":", 1)[1].split())
            break
    return [f for f in CPU_FLAGS if f in have]


NVIDIA_SMI_FIELDS = ("name", "driver_version", "memory.total", "clocks.sm", "clocks.max.sm", "temperature.gpu",
                     "power.draw", "power.limit", "pstate")


def parse_nvidia_smi(text: str) -> list:
    """`nvidia-smi --query-gpu=<NVIDIA_SMI_FIELDS> --format=csv,noheader,nounits` -> one dict per GPU; numbers as
    floats, [N/A] / [Not Supported] as None."""
    gpus = []
    for line in text.strip().splitlines():
        vals = [v.strip() for v in line.split(",")]
        if len(vals) != len(NVIDIA_SMI_FIELDS):
            continue
        g = {}
        for k, v in zip(NVIDIA_SMI_FIELDS, vals):
            if v.startswith("[") or v in ("", "N/A"):
                g[k] = None
            elif k in ("name", "driver_version", "pstate"):
                g[k] = v
            else:
                try:
                    g[k] = float(v)
                except ValueError:
                    g[k] = v
        gpus.append(g)
    return gpus


def parse_nv_tegra_release(text: str) -> str | None:
    """'# R36 (release), REVISION: 3.0, GCID: ...' -> 'R36.3.0' (the L4T version; JetPack 6.0 is L4T 36.3)."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    return "R%s.%s" % (m.group(1), m.group(2)) if m else None


def parse_nvpmodel(text: str) -> dict | None:
    """`nvpmodel -q` ('NV Power Mode: MAXN\\n0') -> {'name': 'MAXN', 'id': 0}."""
    m = re.search(r"NV Power Mode:\s*(\S+)", text or "")
    if not m:
        return None
    ids = re.findall(r"^\s*(\d+)\s*$", text, re.M)
    return {"name": m.group(1), "id": int(ids[0]) if ids else None}


def parse_tegrastats(line: str) -> dict:
    """One tegrastats line -> RAM, CPU loads, GPU load and frequency, temperatures (sensors reading -256C are off)
    and power rails (current mW). Handles Orin (VDD_GPU_SOC 2780mW/2780mW, GR3D_FREQ 0%@[305,305]) and older
    (POM_5V_GPU 0/0, GR3D_FREQ 0%@76) formats."""
    out = {}
    m = re.search(r"RAM (\d+)/(\d+)MB", line)
    if m:
        out["ram_used_mb"], out["ram_total_mb"] = int(m.group(1)), int(m.group(2))
    m = re.search(r"CPU \[([^\]]*)\]", line)
    if m:
        out["cpu_load_pct"] = [int(c.split("%")[0]) if "%" in c else None for c in m.group(1).split(",")]
    m = re.search(r"GR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?", line)
    if m:
        out["gpu_load_pct"] = int(m.group(1))
        if m.group(2):
            out["gpu_freq_mhz"] = [int(f) for f in m.group(2).split(",") if f]
    temps = {k: float(v) for k, v in re.findall(r"\b([A-Za-z][\w]*)@(-?[\d.]+)C\b", line) if float(v) > -100}
    if temps:
        out["temperature_c"] = temps
    power = {k: int(v) for k, v in re.findall(r"\b([A-Z][A-Z0-9_]+) (\d+)mW/\d+mW", line)}
    power.update({k: int(v) for k, v in re.findall(r"\b(POM_[A-Z0-9_]+) (\d+)/\d+", line)})
    if power:
        out["power_mw"] = power
    return out


def tegrastats_sample(timeout: float = 3.0) -> str | None:
    """The first line tegrastats prints (it runs until stopped)."""
    exe = shutil.which("tegrastats")
    if not exe:
        return None
    try:
        p = subprocess.Popen([exe, "--interval", "200"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    try:
        ready, _, _ = select.select([p.stdout], [], [], timeout)
        return p.stdout.readline().decode(errors="replace").strip() if ready else None
    finally:
        p.terminate()
        try:
            p.wait(2)
        except subprocess.TimeoutExpired:
            p.kill()


def gpu_info() -> dict:
    """nvidia-smi GPUs and/or Jetson facts (model, L4T release, nvpmodel power mode, a tegrastats sample), plus two
    summary strings that identify the device kind: `gpu` (GPU names, or the Jetson board) and `power_mode`
    ('MAXN (0)'); both absent where there is neither."""
    out = {}
    smi = _cmd(["nvidia-smi", "--query-gpu=" + ",".join(NVIDIA_SMI_FIELDS), "--format=csv,noheader,nounits"])
    if smi:
        out["gpus"] = parse_nvidia_smi(smi)
        out["gpu"] = ", ".join(str(g.get("name")) for g in out["gpus"])
    l4t = parse_nv_tegra_release(_read(TEGRA_RELEASE) or "")
    if l4t:
        jetson = {"l4t": l4t, "model": _read(DT_MODEL)}
        mode = parse_nvpmodel(_cmd(["nvpmodel", "-q"]) or "")
        jetson["power_mode"] = mode
        line = tegrastats_sample()
        if line:
            jetson["tegrastats"] = parse_tegrastats(line)
        out["jetson"] = jetson
        out["gpu"] = out.get("gpu") or jetson["model"] or "Jetson (L4T %s)" % l4t
        if mode:
            out["power_mode"] = "%s (%s)" % (mode["name"], mode["id"])
    return out


def device_info() -> dict:
    """What this process runs on. The host's profiler reports the same fields for local measurements."""
    info = {"hostname": platform.node(), "os": "%s %s" % (platform.system(), platform.release()),
            "machine": platform.machine(), "cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
            "python": platform.python_version()}
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        info["affinity"] = sorted(os.sched_getaffinity(0))
    except (ValueError, OSError, AttributeError):
        pass
    info.update(gpu_info())
    return info


# -------------------------------------------------------------------------------------------------------- runtimes
RUNTIME_DISTS = {  # runtime -> the pip distributions that provide it, in the order a runner would pick them
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "openvino": ("openvino",),
    "tflite": ("ai-edge-litert", "tflite-runtime", "tensorflow", "tensorflow-cpu", "tensorflow-aarch64"),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13"),
}


def _dist_version(dist: str):
    return runners().dist_version(dist)


def runtime_versions() -> dict:
    """Installed runtime packages from their metadata (cheap: nothing is imported)."""
    out = {}
    for name, dists in RUNTIME_DISTS.items():
        found = ["%s %s" % (d, v) for d in dists for v in [_dist_version(d)] if v]
        out[name] = ", ".join(found) if found else None
    out["numpy"] = _dist_version("numpy")
    return out


HERE = os.path.dirname(os.path.abspath(__file__))
RUNNERS_PATHS = (os.path.join(HERE, "runners.py"),  # on a device: uploaded next to this file
                 os.path.join(HERE, os.pardir, "runtime", "runners.py"))  # in edgedet's own tree
_RUNNERS = {}


def runners(expected_sha256=None):
    """The runner module (runners.py next to this file, else edgedet/runtime/runners.py), loaded once; with
    `expected_sha256`, its sha256 must match (the host says which file it uploaded)."""
    path = next((p for p in RUNNERS_PATHS if os.path.isfile(p)), None)
    if path is None:
        raise RuntimeError("runners.py is missing next to the agent (%s)" % HERE)
    if expected_sha256 and sha256(path) != expected_sha256:
        raise RuntimeError("%s does not match the sha256 edgedet uploaded (changed on the device?)" % path)
    if path not in _RUNNERS:
        import importlib.util

        spec = importlib.util.spec_from_file_location("edgedet_runners", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _RUNNERS[path] = mod
    return _RUNNERS[path]


def check_runtimes() -> dict:
    """Each runtime actually imported: {name: "ok <version>" | "missing: <why>"}."""
    r, out = runners(), {}
    for name in RUNTIME_DISTS:
        try:
            out[name] = "ok %s" % r.import_runtime(name)[1]
        except r.Unsupported as e:
            out[name] = "missing: %s" % e
        except Exception as e:  # noqa: BLE001 - a runtime that crashes on import is missing too
            out[name] = "missing: %s: %s" % (type(e).__name__, e)
    return out


# -------------------------------------------------------------------------------------------------------- the lock
class DeviceLock:
    """An exclusive fcntl.flock on `path`, waited for (polling) at most `timeout_s`; released when the process ends,
    however it ends."""

    def __init__(self, path: str | None, timeout_s: float):
        self.path, self.timeout_s, self.fd, self.waited_s = path, timeout_s, None, 0.0

    def __enter__(self):
        if not self.path:
            return self
        import fcntl

        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        t0 = time.monotonic()
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (BlockingIOError, PermissionError):
                if time.monotonic() - t0 > self.timeout_s:
                    os.close(self.fd)
                    raise TimeoutError("device busy: %s is held by another run for more than %.0f s"
                                       % (self.path, self.timeout_s)) from None
                time.sleep(0.05)
        self.waited_s = round(time.monotonic() - t0, 3)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, ("%d\n" % os.getpid()).encode())
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock


# ----------------------------------------------------------------------------------------------------- subcommands
def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cmd_info(args, req) -> dict:
    return {"info": device_info(), "runtimes": runtime_versions(), "python_executable": sys.executable}


def cmd_check(args, req) -> dict:
    return {"info": device_info(), "runtimes": check_runtimes(), "numpy": _dist_version("numpy"),
            "python_executable": sys.executable}


def cmd_verify(args, req) -> dict:
    missing, mismatch = [], []
    for rel, want in sorted(req["files"].items()):
        p = os.path.join(args.dir, rel)
        if not os.path.isfile(p):
            missing.append(rel)
        elif sha256(p) != want:
            mismatch.append(rel)
    return {"missing": missing, "mismatch": mismatch}


def _lock_path(args) -> str:
    return args.lock or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.artifact))), ".lock")


def cmd_bench(args, req) -> dict:
    r = runners(args.runners_sha256)
    art = r.read_artifact(args.artifact)
    r.import_runtime(art["backend"], " on the device")  # the runtime first: its absence is the reason to report
    options = dict(req.get("runtime") or {}, batch=int(req.get("batch", 1)))
    threads, pin = options.get("threads"), options.get("pin_threads")
    pin_cpus = list(range(int(threads))) if pin and threads else None
    warmup, batch, cooldown = int(req.get("warmup", 10)), int(req.get("batch", 1)), float(req.get("cooldown_ms", 0))
    # loading (an OpenVINO compile, an engine deserialized) is work on the device too: inside the lock
    with DeviceLock(_lock_path(args), float(req.get("lock_timeout_s", 600))) as lock:
        runner = r.load(args.artifact, art, options)
        x = r.RUNNERS[art["backend"]].bench_input(args.artifact, art, batch)
        held_from, before = time.time(), r.load_snapshot()
        times, total = r.time_runs(lambda: runner.infer(x), warmup=warmup, runs=int(req.get("runs", 100)),
                                   min_duration_s=float(req.get("min_duration_s", 1.0)), cooldown_ms=cooldown,
                                   pin_cpus=pin_cpus)
        held_to, after = time.time(), r.load_snapshot()
    rec = r.summarize(times, total, warmup, batch, cooldown, float(req.get("noise_threshold", 0.15)))
    rec["runtime"] = runner.info()
    rec["device"] = dict(device_info(), lock={"path": lock.path, "waited_s": lock.waited_s, "held_from": held_from,
                                              "held_to": held_to}, load=r.load_between(before, after))
    return {"record": rec}


def cmd_probe(args, req) -> dict:
    r = runners(args.runners_sha256)
    art = r.read_artifact(args.artifact)
    r.import_runtime(art["backend"], " on the device")
    options = dict(req.get("runtime") or {}, batch=int(req.get("batch", 1)))
    with DeviceLock(_lock_path(args), float(req.get("lock_timeout_s", 600))):
        runner = r.load(args.artifact, art, options)
        outs = runner.infer(r.RUNNERS[art["backend"]].bench_input(args.artifact, art, int(req.get("batch", 1))))
    digest = lambda a: hashlib.sha256(r.np.ascontiguousarray(a, r.np.float32).tobytes()).hexdigest()  # noqa: E731
    return {"runtime": runner.info(), "outputs": {"boxes": digest(outs[0]), "logits": digest(outs[1])}}


def cmd_build_trt(args, req) -> dict:
    r = runners(args.runners_sha256)
    r.read_artifact(args.artifact)
    try:
        import tensorrt as trt
    except ImportError as e:
        raise r.Unsupported("tensorrt is not installed on %s (%s; %s)" % (platform.node(), r.python_info(), e)) \
            from None
    folder = args.artifact
    engine, report = r.confined(folder, "model.engine", "engine"), r.confined(folder, "build.json", "build report")
    if os.path.isfile(engine) and os.path.isfile(report):
        with open(report) as f:
            old = json.load(f)
        if old.get("tensorrt_version") == trt.__version__ and old.get("int8_mode") == req.get("int8_mode", old.get(
                "int8_mode")):
            return {"build": old, "cached": True}
    build_engine = r.artifact_module(folder, "build_engine")
    with DeviceLock(_lock_path(args), float(req.get("lock_timeout_s", 600))):
        try:
            rep = build_engine.build(folder, req.get("int8_mode"))
        except build_engine.BuildError as e:
            raise r.Unsupported("TensorRT %s could not build the engine on %s: %s" % (trt.__version__,
                                                                                      platform.node(), e)) from None
    return {"build": rep, "cached": False}


COMMANDS = {"info": cmd_info, "check": cmd_check, "verify": cmd_verify, "bench": cmd_bench, "probe": cmd_probe,
            "build-trt": cmd_build_trt}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="agent.py", description="edgedet device agent (prints one JSON object)")
    ap.add_argument("command", choices=sorted(COMMANDS))
    ap.add_argument("--artifact", help="artifact folder (bench, build-trt)")
    ap.add_argument("--dir", help="folder to verify (verify)")
    ap.add_argument("--request", default=None, help="JSON request (settings, file hashes), or - for stdin")
    ap.add_argument("--lock", help="lock file held while measuring (default: WORKDIR/.lock)")
    ap.add_argument("--deadline-s", type=float, help="kill this process after that many seconds")
    ap.add_argument("--runners-sha256", help="refuse runners.py unless its sha256 is this")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    out = os.fdopen(os.dup(1), "w")  # the one JSON line goes here; everything else printed goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    args = parse_args(argv)
    if args.deadline_s:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the default action ends the process, even inside C code
        signal.alarm(max(1, int(math.ceil(args.deadline_s))))
    code = 0
    try:
        if args.request == "-":
            req = json.loads(sys.stdin.read() or "{}")
        else:
            req = json.loads(args.request) if args.request else {}
        if args.command in ("bench", "probe", "build-trt") and not args.artifact:
            raise ValueError("--artifact is required")
        if args.command == "verify" and not args.dir:
            raise ValueError("--dir is required")
        res = dict(status="ok", **COMMANDS[args.command](args, req))
    except Exception as e:  # noqa: BLE001 - reported as one JSON line, never a bare traceback
        r = next(iter(_RUNNERS.values()), None)
        if r is not None and isinstance(e, r.Unsupported):
            res = {"status": "unsupported: %s" % e}
        elif r is not None and isinstance(e, r.ArtifactError):
            res = {"status": "error: %s" % e}
            code = 1
        else:
            import traceback

            res = {"status": "error: %s: %s" % (type(e).__name__, e), "traceback": traceback.format_exc()[-2000:]}
            code = 1
    res["agent"] = PROTOCOL
    out.write(json.dumps(res) + "\n")
    out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
