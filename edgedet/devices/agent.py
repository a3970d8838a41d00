"""edgedet device agent: copied to a device and run there as `python3 agent.py SUBCOMMAND ...`.

Self-contained on purpose: the standard library (Python >= 3.8), numpy, and the runtime that runs the artifact; it
never imports edgedet, so nothing needs installing on the device. Every subcommand prints exactly ONE JSON object on
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
  build-trt --artifact D     build model.engine on the device with D/build_engine.py (TensorRT artifacts)

bench and build-trt hold an exclusive lock (fcntl.flock on --lock, default D/../../.lock = WORKDIR/.lock) while they
use the device, so two edgedet runs never measure on one device at once; a record's device.lock says how long it
waited and when it held the lock.
`--deadline-s S` arms an alarm: a hung runtime is killed after S seconds (the lock dies with it).

The timing loop (time_runs + summarize) is the one edgedet.profiler.measure uses on the host: the same warm-up,
runs + min_duration_s stopping rule, cooldown, percentiles, spread and throttle flag, by construction.
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


class Unsupported(Exception):
    """The device cannot run this (runtime missing, model not loadable): reported as `unsupported: <reason>`."""


def _python() -> str:
    return "python %s at %s" % (platform.python_version(), sys.executable)


# --------------------------------------------------------------------------------------------------------- timing
def time_runs(fn, warmup=10, runs=100, min_duration_s=1.0, cooldown_ms=0.0, max_runs=100000, pin_cpus=None):
    """Call fn() `warmup` times, then time it until both `runs` calls and `min_duration_s` have passed (at most
    `max_runs`), sleeping `cooldown_ms` between timed calls. -> (times in ms, total seconds of the timed phase)."""
    old_aff = None
    if pin_cpus:
        old_aff = os.sched_getaffinity(0)
        os.sched_setaffinity(0, pin_cpus)
    try:
        for _ in range(warmup):
            fn()
        times = []
        start = time.perf_counter()
        while len(times) < runs or (time.perf_counter() - start < min_duration_s and len(times) < max_runs):
            if cooldown_ms and times:
                time.sleep(cooldown_ms / 1e3)
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        total = time.perf_counter() - start
    finally:
        if old_aff is not None:
            os.sched_setaffinity(0, old_aff)
    return times, total


def summarize(times, total, warmup, batch, cooldown_ms, noise_threshold) -> dict:
    """Percentiles of timed runs -> the LatencyRecord fields except runtime and device (filled by the caller).
    spread = (p90 - p10) / p50; noisy when spread > noise_threshold or the last third of the runs is more than 10%
    slower than the first (thermal throttling), which `note` then says."""
    import numpy as np

    a = np.asarray(times)
    p10, p50, p90, p99 = np.percentile(a, [10, 50, 90, 99])
    spread = float((p90 - p10) / p50) if p50 > 0 else 0.0
    third = max(len(a) // 3, 1)
    drift = float(np.median(a[-third:]) / np.median(a[:third]))  # > 1.1: later runs slower (thermal throttling)
    note = "last third %.2fx the first" % drift if drift > 1.1 else ""
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(a.mean()),
            "min_ms": float(a.min()), "spread": spread, "noisy": bool(spread > noise_threshold or drift > 1.1),
            "runs": int(len(a)), "warmup": int(warmup), "batch": int(batch), "cooldown_ms": float(cooldown_ms),
            "duration_s": float(total), "runtime": {}, "device": {}, "note": note}


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
            "machine": platform.machine(), "cpu": cpu_model(), "cores": os.cpu_count(),
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


def _dist_version(dist: str) -> str | None:
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - python < 3.8
        return None
    try:
        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - PackageNotFoundError, broken metadata
        return None


def runtime_versions() -> dict:
    """Installed runtime packages from their metadata (cheap: nothing is imported)."""
    out = {}
    for name, dists in RUNTIME_DISTS.items():
        found = ["%s %s" % (d, v) for d in dists for v in [_dist_version(d)] if v]
        out[name] = ", ".join(found) if found else None
    out["numpy"] = _dist_version("numpy")
    return out


def _missing(module: str, e: BaseException) -> Unsupported:
    return Unsupported("%s is not installed on the device (%s; %s: %s)" % (module, _python(), type(e).__name__, e))


def tflite_interpreter():
    """(Interpreter class, runtime name, version): ai_edge_litert, else tflite_runtime, else tensorflow.lite."""
    errors = []
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert", _dist_version("ai-edge-litert")
    except ImportError as e:
        errors.append(str(e))
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime", _dist_version("tflite-runtime") or _dist_version("tflite_runtime")
    except ImportError as e:
        errors.append(str(e))
    try:
        import tensorflow as tf

        return tf.lite.Interpreter, "tensorflow-lite", tf.__version__
    except (ImportError, AttributeError) as e:
        errors.append(str(e))
    raise Unsupported("no LiteRT interpreter (ai_edge_litert, tflite_runtime or tensorflow) is installed on the "
                      "device (%s)" % _python())


def import_runtime(name: str):
    """Import a runtime; -> (module or interpreter class, version). Unsupported with the reason when it fails."""
    try:
        if name == "onnxruntime":
            import onnxruntime as m

            return m, m.__version__
        if name == "openvino":
            import openvino as m

            return m, m.get_version()
        if name == "tensorrt":
            import tensorrt as m

            return m, m.__version__
    except ImportError as e:
        raise _missing(name, e) from None
    if name == "tflite":
        cls, rt, ver = tflite_interpreter()
        return cls, "%s %s" % (rt, ver)
    raise Unsupported("unknown runtime %r" % name)


def check_runtimes() -> dict:
    out = {}
    for name in RUNTIME_DISTS:
        try:
            out[name] = "ok %s" % import_runtime(name)[1]
        except Unsupported as e:
            out[name] = "missing: %s" % e
        except Exception as e:  # noqa: BLE001 - a runtime that crashes on import is missing too
            out[name] = "missing: %s: %s" % (type(e).__name__, e)
    return out


# --------------------------------------------------------------------------------------------------------- runners
class OrtRunner:
    """Mirrors edgedet.backends.onnxruntime.OrtRunner (CPU execution provider, sequential, intra-op threads)."""

    def __init__(self, path, precision, options):
        import numpy as np

        ort, _ = import_runtime("onnxruntime")
        self.np = np
        threads = options.get("threads")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - an op or opset this onnxruntime lacks
            raise Unsupported("onnxruntime %s on the device cannot load the model: %s" % (ort.__version__, e))
        self.version, self.precision, self.threads = ort.__version__, precision, threads

    def infer(self, images):
        return self.sess.run(["boxes", "logits"], {"images": self.np.ascontiguousarray(images, self.np.float32)})

    def info(self):
        return {"runtime": "onnxruntime", "runtime_version": self.version, "precision": self.precision,
                "provider": "CPUExecutionProvider", "threads": self.threads}


OV_HINT = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}


class OVRunner:
    """Mirrors edgedet.backends.openvino.OVRunner (pinned INFERENCE_PRECISION_HINT, latency hint, one stream)."""

    def __init__(self, path, precision, options):
        import numpy as np

        ov, version = import_runtime("openvino")
        self.np = np
        core = ov.Core()
        device = options.get("openvino_device", "CPU")
        cfg = {"INFERENCE_PRECISION_HINT": OV_HINT[precision],
               "PERFORMANCE_HINT": options.get("openvino_hint", "LATENCY"), "NUM_STREAMS": "1"}
        if options.get("threads"):
            cfg["INFERENCE_NUM_THREADS"] = int(options["threads"])
        if options.get("pin_threads"):
            cfg["ENABLE_CPU_PINNING"] = True
        if precision in ("fp16", "bf16"):
            caps = core.get_property(device, "OPTIMIZATION_CAPABILITIES")
            if precision.upper() not in caps:
                raise Unsupported("OpenVINO %s has no native %s (capabilities: %s)" % (device, precision,
                                                                                      ", ".join(caps)))
        try:
            self.model = core.compile_model(path, device, cfg)
        except Exception as e:  # noqa: BLE001
            raise Unsupported("OpenVINO %s on the device cannot compile the model for %s: %s" % (version, device, e))
        self.request = self.model.create_infer_request()
        self.precision, self.device, self.version = precision, device, version

    def infer(self, images):
        res = self.request.infer({"images": self.np.ascontiguousarray(images, self.np.float32)}, share_inputs=True)
        return res["boxes"], res["logits"]

    def info(self):
        return {"runtime": "openvino", "runtime_version": self.version, "precision": self.precision,
                "device": self.device,
                "inference_precision": self.model.get_property("INFERENCE_PRECISION_HINT").to_string(),
                "threads": int(self.model.get_property("INFERENCE_NUM_THREADS"))}


class TFLiteRunner:
    """Mirrors edgedet.backends.tflite.TFLiteRunner: batch 1 per invoke, NCHW or NHWC input."""

    def __init__(self, path, precision, options, quantization=None):
        import numpy as np

        cls, self.runtime, self.version = tflite_interpreter()
        self.threads, self.precision, self.quantization = options.get("threads"), precision, quantization or {}
        try:
            self.it = cls(model_path=path, num_threads=int(self.threads) if self.threads else None)
            self.it.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise Unsupported("%s %s on the device cannot load the model: %s" % (self.runtime, self.version, e))
        self.inp = self.it.get_input_details()[0]
        shape = [int(v) for v in self.inp["shape"]]
        self.nhwc = shape[3] == 3 and shape[1] != 3
        outs = self.it.get_output_details()
        named = {k: d["index"] for d in outs for k in ("boxes", "logits") if k in d["name"].lower()}
        self.out = (named["boxes"], named["logits"]) if len(named) == 2 else tuple(d["index"] for d in outs[:2])
        self.np = np

    def infer(self, images):
        boxes, logits = [], []
        for i in range(images.shape[0]):
            x = images[i:i + 1].transpose(0, 2, 3, 1) if self.nhwc else images[i:i + 1]
            self.it.set_tensor(self.inp["index"], self.np.ascontiguousarray(x))
            self.it.invoke()
            boxes.append(self.it.get_tensor(self.out[0]))
            logits.append(self.it.get_tensor(self.out[1]))
        return self.np.concatenate(boxes), self.np.concatenate(logits)

    def info(self):
        return {"runtime": self.runtime, "runtime_version": self.version, "precision": self.precision,
                "threads": self.threads, "input_layout": "NHWC" if self.nhwc else "NCHW", "batch_per_invoke": 1,
                "quantization": self.quantization.get("mode", "none")}


def _artifact_module(folder: str, name: str):
    """A helper script shipped inside a TensorRT artifact (build_engine.py, bench_engine.py), imported from there."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgedet_" + name, os.path.join(folder, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class TrtRunner:
    """A model.engine built on this device by build-trt, run through the artifact's bench_engine.EngineSession.
    Timed like every runner: host wall clock around copy-in, execute, copy-out (see bench_engine.py for CUDA-event
    GPU time)."""

    def __init__(self, folder, precision, options):
        import numpy as np

        trt, self.version = import_runtime("tensorrt")
        engine = os.path.join(folder, "model.engine")
        if not os.path.isfile(engine):
            raise RuntimeError("%s not found: build it first (agent.py build-trt)" % engine)
        self.session = _artifact_module(folder, "bench_engine").EngineSession(engine, int(options.get("batch", 1)))
        report = os.path.join(folder, "build.json")
        self.build = {}
        if os.path.isfile(report):
            with open(report) as f:
                self.build = json.load(f)
        self.precision, self.np = precision, np

    def infer(self, images):
        return self.session.run(images)

    def info(self):
        return {"runtime": "tensorrt", "runtime_version": self.version, "precision": self.precision,
                "gpu": self.build.get("gpu"), "int8_mode": self.build.get("int8_mode"),
                "timer": "host perf_counter (copy-in + execute_async_v3 + copy-out)"}


def load_runner(folder: str, art: dict, options: dict):
    backend, precision = art["backend"], art["precision"]
    path = os.path.join(folder, art["model_file"])
    if backend == "onnxruntime":
        return OrtRunner(path, precision, options)
    if backend == "openvino":
        return OVRunner(path, precision, options)
    if backend == "tflite":
        return TFLiteRunner(path, precision, options, art.get("metadata", {}).get("quantization"))
    if backend == "tensorrt":
        return TrtRunner(folder, precision, options)
    raise Unsupported("unknown backend %r in artifact.json" % backend)


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


def _read_artifact(folder: str) -> dict:
    with open(os.path.join(folder, "artifact.json")) as f:
        return json.load(f)


def _lock_path(args) -> str:
    return args.lock or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.artifact))), ".lock")


def _bench_input(folder: str, art: dict, batch: int):
    import numpy as np

    r = int(art["metadata"]["resolution"])
    calib = os.path.join(folder, "calib.npz")
    if art["backend"] == "tensorrt" and os.path.isfile(calib):  # what bench_engine.py feeds
        x = np.load(calib)["images"][:1]
        return np.ascontiguousarray(np.repeat(x, batch, 0), np.float32)
    return np.random.default_rng(0).random((batch, 3, r, r), dtype=np.float32)  # what LocalDevice feeds


def cmd_bench(args, req) -> dict:
    art = _read_artifact(args.artifact)
    import_runtime(art["backend"])  # the runtime first: its absence is the reason worth reporting
    try:
        import numpy  # noqa: F401
    except ImportError as e:
        raise _missing("numpy", e) from None
    options = dict(req.get("runtime") or {}, batch=int(req.get("batch", 1)))
    threads, pin = options.get("threads"), options.get("pin_threads")
    pin_cpus = list(range(int(threads))) if pin and threads else None
    # loading (an OpenVINO compile, an engine deserialized) is work on the device too: inside the lock
    with DeviceLock(_lock_path(args), float(req.get("lock_timeout_s", 600))) as lock:
        runner = load_runner(args.artifact, art, options)
        x = _bench_input(args.artifact, art, int(req.get("batch", 1)))
        held_from = time.time()
        times, total = time_runs(lambda: runner.infer(x), warmup=int(req.get("warmup", 10)),
                                 runs=int(req.get("runs", 100)), min_duration_s=float(req.get("min_duration_s", 1.0)),
                                 cooldown_ms=float(req.get("cooldown_ms", 0.0)), pin_cpus=pin_cpus)
        held_to = time.time()
    rec = summarize(times, total, int(req.get("warmup", 10)), int(req.get("batch", 1)),
                    float(req.get("cooldown_ms", 0.0)), float(req.get("noise_threshold", 0.15)))
    rec["runtime"] = runner.info()
    rec["device"] = dict(device_info(), lock={"path": lock.path, "waited_s": lock.waited_s, "held_from": held_from,
                                              "held_to": held_to})
    return {"record": rec}


def cmd_build_trt(args, req) -> dict:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise Unsupported("tensorrt is not installed on %s (%s; %s)" % (platform.node(), _python(), e)) from None
    folder = args.artifact
    engine, report = os.path.join(folder, "model.engine"), os.path.join(folder, "build.json")
    if os.path.isfile(engine) and os.path.isfile(report):
        with open(report) as f:
            old = json.load(f)
        if old.get("tensorrt_version") == trt.__version__ and old.get("int8_mode") == req.get("int8_mode", old.get(
                "int8_mode")):
            return {"build": old, "cached": True}
    build_engine = _artifact_module(folder, "build_engine")
    with DeviceLock(_lock_path(args), float(req.get("lock_timeout_s", 600))):
        try:
            rep = build_engine.build(folder, req.get("int8_mode"))
        except build_engine.BuildError as e:
            raise Unsupported("TensorRT %s could not build the engine on %s: %s" % (trt.__version__,
                                                                                    platform.node(), e)) from None
    return {"build": rep, "cached": False}


COMMANDS = {"info": cmd_info, "check": cmd_check, "verify": cmd_verify, "bench": cmd_bench, "build-trt": cmd_build_trt}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="agent.py", description="edgedet device agent (prints one JSON object)")
    ap.add_argument("command", choices=sorted(COMMANDS))
    ap.add_argument("--artifact", help="artifact folder (bench, build-trt)")
    ap.add_argument("--dir", help="folder to verify (verify)")
    ap.add_argument("--request", default=None, help="JSON request (settings, file hashes), or - for stdin")
    ap.add_argument("--lock", help="lock file held while measuring (default: WORKDIR/.lock)")
    ap.add_argument("--deadline-s", type=float, help="kill this process after that many seconds")
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
        if args.command in ("bench", "build-trt") and not args.artifact:
            raise ValueError("--artifact is required")
        if args.command == "verify" and not args.dir:
            raise ValueError("--dir is required")
        res = dict(status="ok", **COMMANDS[args.command](args, req))
    except Unsupported as e:
        res = {"status": "unsupported: %s" % e}
    except Exception as e:  # noqa: BLE001 - reported as one JSON line, never a bare traceback
        import traceback

        res = {"status": "error: %s: %s" % (type(e).__name__, e), "traceback": traceback.format_exc()[-2000:]}
        code = 1
    res["agent"] = PROTOCOL
    out.write(json.dumps(res) + "\n")
    out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
