"""edgedet runners: the one piece of code that loads, runs and times a compiled artifact, one runner per runtime.

Standalone on purpose: the standard library (Python >= 3.8), numpy and the runtime; it never imports edgedet. edgedet's
host backends import it, the device agent runs it on the device (uploaded next to agent.py, checked by sha256), and
every artifact's Python runtime carries a copy (runtime/python/edgedet_runtime/runners.py). What measured an artifact
is therefore what a user embeds, with the same settings.

  read_artifact(folder) -> artifact.json as a dict, validated (check_artifact): ArtifactError names file and field
  load(folder, art, options) -> runner: runner.infer(images float32 [B,3,R,R] RGB in [0,1]) -> (boxes [B,Q,4]
      normalised cxcywh, logits [B,Q,C]); runner.info() -> runtime, version, precision and `settings`, the settings
      in effect as read back from the session / compiled model. `options` override art["runtime_options"] (the options
      the artifact was measured with) key by key.
  time_runs, summarize: the timing loop and its statistics (the host profiler's and the device agent's).
  load_snapshot, load_between: how busy the machine was meanwhile (recorded as device.load by both).

Settings per runtime (RUNNERS[backend].settings(precision, options) is the single source; the C++ runtime gets the same
values through config.hpp):
  onnxruntime  CPUExecutionProvider, ORT_SEQUENTIAL, intra_op_num_threads = threads (0: ORT's default),
               inter_op_num_threads = 1, log severity 3 (errors only).
  openvino     INFERENCE_PRECISION_HINT pinned per precision (f32, f16, bf16; int8 -> f32 for the layers left in float),
               PERFORMANCE_HINT = openvino_hint, NUM_STREAMS = 1, INFERENCE_NUM_THREADS = threads (when set),
               ENABLE_CPU_PINNING when pin_threads, on openvino_device; fp16/bf16 only where the device lists them in
               OPTIMIZATION_CAPABILITIES (else Unsupported).
  tflite       the first interpreter found: ai_edge_litert, tflite_runtime, tensorflow.lite; num_threads = threads (the
               interpreter cannot report it back: `settings` says what was set); input NCHW [1,3,R,R] (NHWC [1,R,R,3]
               accepted), batch 1 per invoke. Outputs by name: the one output whose name contains "boxes" and the one
               whose name contains "logits". Fallback, for models with unnamed outputs only: boxes is the output whose
               last dimension is 4, when exactly one is (a model with 4 classes and unnamed outputs is refused).
  tensorrt     model.engine (built on the device) run through the artifact's bench_engine.EngineSession, batch = batch.
"""
from __future__ import annotations

import json
import math
import os
import re
import time

try:
    import numpy as np
except ImportError:  # the agent's info/check run on a bare Python; runners need numpy
    np = None

BACKENDS = ("onnxruntime", "openvino", "tflite", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
SUBNET_ID = re.compile(r"^p([1-9][0-9]{0,3})-r([1-9][0-9]{0,4})-w([1-9][0-9]{0,2})-d([0-9]{1,3})-q([1-9][0-9]{0,4})$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_ARTIFACT_JSON = 16 << 20  # bytes
MAX_FILES, MAX_CLASSES, MAX_NAME, MAX_THREADS, MAX_BATCH = 10000, 100000, 4096, 1024, 1024
OV_HINT = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}  # int8 layers run int8, the rest in f32
OV_DEVICE = re.compile(r"^[A-Za-z0-9_.:,()-]{1,64}$")


class Unsupported(Exception):
    """The runtime cannot run this here (missing, refuses the model, lacks a precision): `unsupported: <reason>`."""


class ArtifactError(ValueError):
    """artifact.json is missing, malformed or points outside its folder: one line naming the file and field."""


# ------------------------------------------------------------------------------------------------ artifact.json
def confined(folder: str, rel, where: str) -> str:
    """The path of `rel` (a relative POSIX path from artifact.json) inside `folder`, symlinks resolved; ArtifactError
    when it is not a plain relative path or resolves outside the folder."""
    if not isinstance(rel, str) or not rel or len(rel) > 1024 or "\\" in rel or not rel.isprintable():
        raise ArtifactError("%s is not a plain relative file name (%r)" % (where, _short(rel)))
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ArtifactError("%s must be a relative path inside the artifact folder, got %r" % (where, _short(rel)))
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, *parts))
    if path != root and not path.startswith(root.rstrip(os.sep) + os.sep):
        raise ArtifactError("%s %r resolves outside the artifact folder (a symbolic link?)" % (where, _short(rel)))
    return path


def _short(v, n: int = 80) -> str:
    s = v if isinstance(v, str) else repr(v)
    s = "".join(c if c.isprintable() else "?" for c in s)
    return s if len(s) <= n else s[:n] + "..."


def _int(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def check_artifact(folder: str, d) -> dict:
    """Validate artifact.json's content `d` for the artifact folder `folder` -> d. Checks: backend and precision
    known; model_file and every key of files a relative path confined to the folder, model_file among files, hashes
    sha256 hex; metadata.subnet an edgedet subnet id whose resolution is metadata.resolution; num_classes, class_names
    and category_ids consistent; runtime_options valid for the backend. Raises ArtifactError (one line)."""
    where = os.path.join(folder, "artifact.json")

    def bad(field: str, why: str):
        raise ArtifactError("%s: %s %s" % (where, field, why))

    if not isinstance(d, dict):
        bad("content", "is not a JSON object")
    unknown = sorted(set(d) - {"backend", "precision", "model_file", "files", "metadata", "runtime_options"})
    if unknown:
        bad(_short(unknown[0]), "is not an artifact.json field")
    if d.get("backend") not in BACKENDS:
        bad("backend", "must be one of %s, got %r" % (", ".join(BACKENDS), _short(d.get("backend"))))
    if d.get("precision") not in PRECISIONS:
        bad("precision", "must be one of %s, got %r" % (", ".join(PRECISIONS), _short(d.get("precision"))))
    files = d.get("files")
    if not isinstance(files, dict) or len(files) > MAX_FILES:
        bad("files", "must be an object of at most %d relative paths -> sha256" % MAX_FILES)
    for rel, h in files.items():
        confined(folder, rel, "%s: files key" % where)
        if not isinstance(h, str) or not SHA256.match(h):
            bad("files[%r]" % _short(rel), "is not a sha256 hex digest")
    confined(folder, d.get("model_file"), "%s: model_file" % where)
    if d["model_file"] not in files:
        bad("model_file", "%r is not among the sha256-checked files" % _short(d["model_file"]))
    m = d.get("metadata")
    if not isinstance(m, dict):
        bad("metadata", "must be an object")
    sid = m.get("subnet")
    match = SUBNET_ID.match(sid) if isinstance(sid, str) else None
    if not match:
        bad("metadata.subnet", "is not a subnet id like p16-r384-w2-d3-q100, got %r" % _short(sid))
    if m.get("resolution") != int(match.group(2)):
        bad("metadata.resolution", "must be the subnet's resolution %s, got %r" % (match.group(2),
                                                                                  _short(m.get("resolution"))))
    nc = m.get("num_classes")
    if not _int(nc, 1, MAX_CLASSES):
        bad("metadata.num_classes", "must be an integer in 1..%d, got %r" % (MAX_CLASSES, _short(nc)))
    names = m.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) not in (0, nc)
                              or not all(isinstance(n, str) and len(n) <= MAX_NAME for n in names)):
        bad("metadata.class_names", "must be null or a list of %d strings (<= %d characters)" % (nc, MAX_NAME))
    ids = m.get("category_ids")
    if ids is not None and (not isinstance(ids, list) or len(ids) != nc
                            or not all(_int(i, -2**31, 2**31 - 1) for i in ids)):
        bad("metadata.category_ids", "must be null or a list of %d integers" % nc)
    try:
        runtime_options(d["backend"], d.get("runtime_options") or {})
    except ValueError as e:
        bad("runtime_options", str(e))
    return d


def read_artifact(folder: str) -> dict:
    """artifact.json of `folder`, read (at most 16 MiB) and validated (check_artifact). ArtifactError otherwise."""
    path = os.path.join(folder, "artifact.json")
    if not os.path.isfile(path):
        raise ArtifactError("%s: not an artifact folder (no artifact.json); make one with edgedet compile" % folder)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_ARTIFACT_JSON + 1)
    except OSError as e:
        raise ArtifactError("%s: cannot be read (%s)" % (path, e.strerror or e)) from None
    if len(raw) > MAX_ARTIFACT_JSON:
        raise ArtifactError("%s: larger than %d MiB, not an artifact description" % (path, MAX_ARTIFACT_JSON >> 20))
    try:
        d = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ArtifactError("%s: not valid JSON (%s)" % (path, _short(str(e), 120))) from None
    return check_artifact(folder, d)


def _no_constant(name: str):
    raise ValueError("%s is not a number JSON allows" % name)


def runtime_options(backend: str, options: dict) -> dict:
    """The runtime options `backend`'s runner applies, with defaults filled in and values checked (ValueError).
    Keys the runner does not use are left out, so the result is exactly what an artifact records and applies."""
    if not isinstance(options, dict):
        raise ValueError("must be an object")
    out = {}
    for key, default in RUNNERS[backend].OPTIONS.items():
        v = options.get(key, default)
        if key in ("threads",) and not (v is None or _int(v, 1, MAX_THREADS)):
            raise ValueError("%s must be null or an integer in 1..%d, got %r" % (key, MAX_THREADS, _short(v)))
        if key == "batch" and not _int(v, 1, MAX_BATCH):
            raise ValueError("batch must be an integer in 1..%d, got %r" % (MAX_BATCH, _short(v)))
        if key == "pin_threads" and not isinstance(v, bool):
            raise ValueError("pin_threads must be true or false, got %r" % _short(v))
        if key == "openvino_hint" and v not in ("LATENCY", "THROUGHPUT"):
            raise ValueError("openvino_hint must be LATENCY or THROUGHPUT, got %r" % _short(v))
        if key == "openvino_device" and not (isinstance(v, str) and OV_DEVICE.match(v)):
            raise ValueError("openvino_device must be a device name like CPU or GPU.0, got %r" % _short(v))
        out[key] = v
    return out


# -------------------------------------------------------------------------------------------------------- runtimes
def dist_version(dist: str):
    """The installed version of a pip distribution, or None (nothing is imported)."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - python < 3.8
        return None
    try:
        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - PackageNotFoundError, broken metadata
        return None


def python_info() -> str:
    import platform
    import sys

    return "python %s at %s" % (platform.python_version(), sys.executable)


def _need_numpy() -> None:
    if np is None:
        raise Unsupported("numpy is not installed (%s)" % python_info())


def tflite_interpreter():
    """(Interpreter class, runtime name, version): ai_edge_litert, else tflite_runtime, else tensorflow.lite."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert", dist_version("ai-edge-litert")
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime", dist_version("tflite-runtime") or dist_version("tflite_runtime")
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite.Interpreter, "tensorflow-lite", tf.__version__
    except (ImportError, AttributeError):
        pass
    raise Unsupported("no LiteRT interpreter (ai_edge_litert, tflite_runtime or tensorflow) is installed (%s)"
                      % python_info())


def import_runtime(name: str, where: str = ""):
    """(module or interpreter class, version string) of a runtime; Unsupported with the reason when it is missing
    (`where`, e.g. " on the device", is put into the message)."""
    if name == "tflite":
        cls, rt, ver = tflite_interpreter()
        return cls, "%s %s" % (rt, ver)
    modules = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
    if name not in modules:
        raise Unsupported("unknown runtime %r" % _short(name))
    try:
        import importlib

        m = importlib.import_module(modules[name])
    except ImportError as e:
        raise Unsupported("%s is not installed%s (%s; %s: %s)" % (name, where, python_info(), type(e).__name__, e)) \
            from None
    return m, (m.get_version() if name == "openvino" else m.__version__)


# --------------------------------------------------------------------------------------------------------- runners
class Runner:
    """Base of the runners: OPTIONS (option -> default), settings(precision, options), infer, info."""

    backend = ""
    OPTIONS = {"threads": None}

    def __init__(self, folder: str, art: dict, options: dict):
        _need_numpy()
        self.folder, self.art, self.precision = folder, art, art["precision"]
        self.options = runtime_options(self.backend, options)
        self.path = confined(folder, art["model_file"], "model_file")
        if not os.path.isfile(self.path):
            raise FileNotFoundError("%s not found" % self.path)

    @classmethod
    def bench_input(cls, folder: str, art: dict, batch: int):
        """What a benchmark feeds: float32 [batch,3,R,R] uniform noise (seed 0), the same on the host and devices."""
        r = int(art["metadata"]["resolution"])
        return np.random.default_rng(0).random((batch, 3, r, r), dtype=np.float32)

    def _images(self, images):
        x = np.ascontiguousarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        r = int(self.art["metadata"]["resolution"])
        if x.ndim != 4 or x.shape[1:] != (3, r, r):
            raise ValueError("images must be float32 [B,3,%d,%d], got %s" % (r, r, list(x.shape)))
        return x

    def info(self) -> dict:
        raise NotImplementedError


class OrtRunner(Runner):
    backend = "onnxruntime"

    @staticmethod
    def settings(precision: str, options: dict) -> dict:
        return {"execution_mode": "ORT_SEQUENTIAL", "intra_op_num_threads": options.get("threads") or 0,
                "inter_op_num_threads": 1, "log_severity_level": 3}

    def __init__(self, folder, art, options):
        super().__init__(folder, art, options)
        ort, self.version = import_runtime("onnxruntime")
        s = self.settings(self.precision, self.options)
        so = ort.SessionOptions()
        so.log_severity_level = s["log_severity_level"]
        so.execution_mode = getattr(ort.ExecutionMode, s["execution_mode"])
        so.intra_op_num_threads = s["intra_op_num_threads"]
        so.inter_op_num_threads = s["inter_op_num_threads"]
        try:
            self.sess = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - an op or opset this onnxruntime lacks, a corrupt file
            raise Unsupported("onnxruntime %s cannot load %s: %s" % (self.version, art["model_file"],
                                                                     _short(str(e), 300))) from None

    def infer(self, images):
        boxes, logits = self.sess.run(["boxes", "logits"], {"images": self._images(images)})
        return boxes, logits

    def info(self) -> dict:
        so = self.sess.get_session_options()
        intra = int(so.intra_op_num_threads)
        return {"runtime": "onnxruntime", "runtime_version": self.version, "precision": self.precision,
                "provider": self.sess.get_providers()[0], "threads": intra or None,
                "settings": {"execution_mode": str(so.execution_mode).split(".")[-1], "intra_op_num_threads": intra,
                             "inter_op_num_threads": int(so.inter_op_num_threads),
                             "log_severity_level": int(so.log_severity_level)}}


class OVRunner(Runner):
    backend = "openvino"
    OPTIONS = {"threads": None, "pin_threads": False, "openvino_device": "CPU", "openvino_hint": "LATENCY"}
    READ_BACK = ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
                 "ENABLE_CPU_PINNING")

    @staticmethod
    def settings(precision: str, options: dict) -> dict:
        cfg = {"INFERENCE_PRECISION_HINT": OV_HINT[precision], "PERFORMANCE_HINT": options["openvino_hint"],
               "NUM_STREAMS": 1}
        if options.get("threads"):
            cfg["INFERENCE_NUM_THREADS"] = int(options["threads"])
        if options.get("pin_threads"):
            cfg["ENABLE_CPU_PINNING"] = True
        return {"device": options["openvino_device"], "config": cfg}

    def __init__(self, folder, art, options):
        super().__init__(folder, art, options)
        ov, self.version = import_runtime("openvino")
        s = self.settings(self.precision, self.options)
        core, self.device = ov.Core(), s["device"]
        try:
            if self.precision in ("fp16", "bf16"):
                caps = core.get_property(self.device, "OPTIMIZATION_CAPABILITIES")
                if self.precision.upper() not in caps:
                    raise Unsupported("OpenVINO %s has no native %s (capabilities: %s)"
                                      % (self.device, self.precision, ", ".join(caps)))
            cfg = dict(s["config"], NUM_STREAMS=str(s["config"]["NUM_STREAMS"]))
            self.model = core.compile_model(self.path, self.device, cfg)
        except Unsupported:
            raise
        except Exception as e:  # noqa: BLE001 - a corrupt IR, an unknown device, an op the plugin lacks
            raise Unsupported("OpenVINO %s cannot compile %s for %s: %s" % (self.version, art["model_file"],
                                                                         self.device, _short(str(e), 300))) from None
        self.request = self.model.create_infer_request()
        batch = self.model.input(0).get_partial_shape()[0]
        self.static_batch = batch.get_length() if batch.is_static else None

    def infer(self, images):
        x = self._images(images)
        n = self.static_batch
        if n is not None and n != x.shape[0]:  # a static-batch IR: one call per chunk
            outs = [self.infer(x[i:i + n]) for i in range(0, x.shape[0], n)]
            return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
        res = self.request.infer({"images": x}, share_inputs=True)
        return res["boxes"], res["logits"]

    def info(self) -> dict:
        got = {k: self.model.get_property(k) for k in self.READ_BACK}
        settings = {k: (v.to_string() if hasattr(v, "to_string") else v) for k, v in got.items()}
        settings = {k: (v if isinstance(v, (bool, int, str)) else str(v)) for k, v in settings.items()}
        settings["EXECUTION_DEVICES"] = list(self.model.get_property("EXECUTION_DEVICES"))
        return {"runtime": "openvino", "runtime_version": self.version, "precision": self.precision,
                "device": self.device, "inference_precision": settings["INFERENCE_PRECISION_HINT"],
                "threads": int(settings["INFERENCE_NUM_THREADS"]), "settings": settings}


def output_indices(details: list, num_classes=None) -> tuple:
    """Tensor indices of (boxes, logits) among an interpreter's output details, by the rule in the module docstring:
    by name; for unnamed outputs, boxes is the one output whose last dimension is 4 (and 4 is not the class count)."""
    if len(details) != 2:
        raise Unsupported("a detector .tflite has 2 outputs (boxes, logits); this one has %d: %s"
                          % (len(details), ", ".join(_short(d["name"]) for d in details)))
    named = {}
    for d in details:
        hits = [k for k in ("boxes", "logits") if k in d["name"].lower()]
        if len(hits) == 1:
            named.setdefault(hits[0], d["index"])
    if len(named) == 2:
        return named["boxes"], named["logits"]
    if named:
        raise Unsupported("outputs %s: only one of them is named boxes/logits" % [d["name"] for d in details])
    last = [int(d["shape"][-1]) if len(d["shape"]) else -1 for d in details]
    if num_classes != 4 and last.count(4) == 1:
        a, b = details
        return (a["index"], b["index"]) if last[0] == 4 else (b["index"], a["index"])
    raise Unsupported("cannot tell boxes from logits among unnamed outputs %s (last dimensions %s, %s classes)"
                      % ([d["name"] for d in details], last, num_classes))


class TFLiteRunner(Runner):
    backend = "tflite"

    @staticmethod
    def settings(precision: str, options: dict) -> dict:
        return {"num_threads": options.get("threads")}

    def __init__(self, folder, art, options):
        super().__init__(folder, art, options)
        cls, self.runtime, self.version = tflite_interpreter()
        self.num_threads = self.settings(self.precision, self.options)["num_threads"]
        try:
            self.it = cls(model_path=self.path, num_threads=self.num_threads)
            self.it.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise Unsupported("%s %s cannot load %s: %s" % (self.runtime, self.version, art["model_file"],
                                                           _short(str(e), 300))) from None
        inputs = self.it.get_input_details()
        shape = [int(v) for v in inputs[0]["shape"]] if len(inputs) == 1 else []
        r = int(art["metadata"]["resolution"])
        if shape not in ([1, 3, r, r], [1, r, r, 3]) or np.dtype(inputs[0]["dtype"]) != np.float32:
            raise Unsupported("%s: the model's input is not one float32 [1,3,%d,%d] (or [1,%d,%d,3]) tensor"
                              % (art["model_file"], r, r, r, r))
        self.inp, self.nhwc = inputs[0], shape == [1, r, r, 3]
        outs = self.it.get_output_details()
        self.boxes_idx, self.logits_idx = output_indices(outs, art["metadata"]["num_classes"])
        self.out_names = {d["index"]: d["name"] for d in outs}

    def infer(self, images):
        x = self._images(images)
        boxes, logits = [], []
        for i in range(x.shape[0]):  # the model is converted at batch 1
            xi = x[i:i + 1].transpose(0, 2, 3, 1) if self.nhwc else x[i:i + 1]
            self.it.set_tensor(self.inp["index"], np.ascontiguousarray(xi))
            self.it.invoke()
            boxes.append(self.it.get_tensor(self.boxes_idx))
            logits.append(self.it.get_tensor(self.logits_idx))
        return np.concatenate(boxes), np.concatenate(logits)

    def info(self) -> dict:
        q = self.art["metadata"].get("quantization")
        return {"runtime": self.runtime, "runtime_version": self.version, "precision": self.precision,
                "threads": self.num_threads, "input_layout": "NHWC" if self.nhwc else "NCHW", "batch_per_invoke": 1,
                "quantization": q.get("mode", "none") if isinstance(q, dict) else "none",
                "settings": {"num_threads": self.num_threads, "input_layout": "NHWC" if self.nhwc else "NCHW",
                             "boxes_output": self.out_names[self.boxes_idx],
                             "logits_output": self.out_names[self.logits_idx]}}


class TrtRunner(Runner):
    """model.engine (built on this device by build_engine.py) run through the artifact's bench_engine.EngineSession.
    Timed like every runner: host clock around copy-in, execute_async_v3, copy-out. Verified only on a device."""

    backend = "tensorrt"
    OPTIONS = {"batch": 1}

    @staticmethod
    def settings(precision: str, options: dict) -> dict:
        return {"batch": options["batch"]}

    @classmethod
    def bench_input(cls, folder: str, art: dict, batch: int):
        """The first calibration image (calib.npz), as bench_engine.py feeds it; noise when there is none."""
        calib, r = confined(folder, "calib.npz", "calib.npz"), int(art["metadata"]["resolution"])
        if not os.path.isfile(calib):
            return Runner.bench_input(folder, art, batch)
        with np.load(calib, allow_pickle=False) as z:
            x = z["images"][:1]
        if x.shape != (1, 3, r, r):
            raise ValueError("calib.npz holds images %s, not [N,3,%d,%d]" % (list(x.shape), r, r))
        return np.ascontiguousarray(np.repeat(x, batch, 0), np.float32)

    def __init__(self, folder, art, options):  # pragma: no cover - needs a GPU with TensorRT
        _need_numpy()
        self.folder, self.art, self.precision = folder, art, art["precision"]
        self.options = runtime_options(self.backend, options)
        _, self.version = import_runtime("tensorrt")
        engine = confined(folder, "model.engine", "engine")
        if not os.path.isfile(engine):
            raise Unsupported("%s not found: build it first (build_engine.py on the device)" % engine)
        session_cls = artifact_module(folder, "bench_engine").EngineSession
        self.session = session_cls(engine, self.options["batch"])
        report = confined(folder, "build.json", "build report")
        self.build = {}
        if os.path.isfile(report):
            with open(report) as f:
                self.build = json.load(f)

    def infer(self, images):  # pragma: no cover
        out = self.session.run(self._images(images))
        return out["boxes"], out["logits"]

    def info(self) -> dict:  # pragma: no cover
        return {"runtime": "tensorrt", "runtime_version": self.version, "precision": self.precision,
                "gpu": self.build.get("gpu"), "int8_mode": self.build.get("int8_mode"),
                "timer": "host perf_counter (copy-in + execute_async_v3 + copy-out)",
                "settings": {"batch": self.options["batch"], "int8_mode": self.build.get("int8_mode")}}


def artifact_module(folder: str, name: str):
    """A device script shipped in a TensorRT artifact (build_engine.py, bench_engine.py), imported from there. edgedet
    checks on the host that these scripts are its own before they reach a device (backends/tensorrt.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgedet_" + name, confined(folder, name + ".py", name))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RUNNERS = {"onnxruntime": OrtRunner, "openvino": OVRunner, "tflite": TFLiteRunner, "tensorrt": TrtRunner}


def load(folder: str, art: dict, options=None):
    """The runner of the artifact in `folder` (art: its validated artifact.json). `options` override the runtime
    options the artifact records (art["runtime_options"]) key by key; None values mean the runtime's default."""
    if art.get("backend") not in RUNNERS:
        raise Unsupported("unknown backend %r in artifact.json" % _short(art.get("backend")))
    opts = dict(art.get("runtime_options") or {})
    opts.update(options or {})
    return RUNNERS[art["backend"]](folder, art, opts)


# ------------------------------------------------------------------------------------------------------------ load
# How busy the machine was while a measurement ran (Linux /proc and /sys; elsewhere the fields are None): the host's
# local device and the device agent record the same fields.  a = load_snapshot(); ...; load_between(a, load_snapshot())
def load_snapshot():
    """(busy, total) jiffies of all CPUs and this process's user+system jiffies, or None."""
    try:
        with open("/proc/stat") as f:
            cpu = [int(v) for v in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    total = sum(cpu)
    idle = cpu[3] + cpu[4]  # idle + iowait
    return total - idle, total, int(own[11]) + int(own[12])  # utime + stime


def cpu_mhz():
    """Mean current frequency over the CPUs (cpufreq, else /proc/cpuinfo), MHz, or None."""
    import glob
    vals = []
    for p in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"):
        try:
            with open(p) as f:
                vals.append(int(f.read()) / 1000)
        except (OSError, ValueError):
            pass
    if not vals:
        try:
            with open("/proc/cpuinfo") as f:
                vals = [float(ln.split(":")[1]) for ln in f if ln.startswith("cpu MHz")]
        except (OSError, ValueError, IndexError):
            vals = []
    return round(sum(vals) / len(vals), 1) if vals else None


def load_between(a, b) -> dict:
    """The load of the machine between two snapshots: others_share is the fraction of all CPUs' time that other
    processes were busy (0..1), others_cores the same in cores."""
    n = os.cpu_count() or 1
    out = {"loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None, "cpu_mhz": cpu_mhz(),
           "others_share": None, "others_cores": None, "cpus": n}
    if a and b and b[1] > a[1]:
        share = max(0.0, min(1.0, ((b[0] - a[0]) - (b[2] - a[2])) / (b[1] - a[1])))
        out.update(others_share=round(share, 3), others_cores=round(share * n, 2))
    return out


# ---------------------------------------------------------------------------------------------------------- timing
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
    a = np.asarray(times)
    p10, p50, p90, p99 = np.percentile(a, [10, 50, 90, 99])
    spread = float((p90 - p10) / p50) if p50 > 0 else 0.0
    third = max(len(a) // 3, 1)
    drift = float(np.median(a[-third:]) / np.median(a[:third]))  # > 1.1: later runs slower (thermal throttling)
    note = "last third %.2fx the first" % drift if drift > 1.1 and math.isfinite(drift) else ""
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(a.mean()),
            "min_ms": float(a.min()), "spread": spread, "noisy": bool(spread > noise_threshold or drift > 1.1),
            "runs": int(len(a)), "warmup": int(warmup), "batch": int(batch), "cooldown_ms": float(cooldown_ms),
            "duration_s": float(total), "runtime": {}, "device": {}, "note": note}
