"""TensorRT: everything the device needs is prepared here; the engine is built and timed ON the device.

TensorRT cannot be installed on edgedet's machines and engines are specific to the GPU and TensorRT version, so
`compile` writes an artifact folder that a device with python3 + tensorrt turns into `model.engine`:

  model.onnx         the export, constant-folded, opset >= 17, checked against the export in ONNX Runtime (<= 1e-4)
  model_fp16.onnx    (TensorRT 11, fp16) the graph cast to FP16 with LayerNorm/Softmax/Reduce/Exp kept in FP32
  model_qdq.onnx     (int8) explicit quantization: symmetric int8 Q/DQ (per-channel weights, per-tensor activations,
                     zero point 0) on Conv/MatMul/Gemm inputs only, calibrated on the recipe, run in ONNX Runtime
  calib.npz          the calibration images [N,3,R,R] exactly as the runtime preprocesses them
  calib_loader.py    (TensorRT 10, int8) Polygraphy data loader over calib.npz, for implicit (calibrator) INT8
  trt_build.json     the build plan read by build_engine.py
  build_engine.py    device: ONNX parser -> builder config -> model.engine + build.json
  bench_engine.py    device: warm-up, timed runs with cooldown, p50/p90/p99 as one JSON line

FP16 safety: LayerNorm stays one ONNX LayerNormalization node (opset 17; TensorRT parses it into INormalizationLayer),
and build_engine.py pins NORMALIZATION, SOFTMAX, REDUCE(avg/sum) and UNARY(exp) layers to FP32 with
OBEY_PRECISION_CONSTRAINTS (TensorRT 10). TensorRT 11 networks are strongly typed, so there the same ops are kept FP32
in the ONNX itself (model_fp16.onnx). Before any fp16/int8 artifact is written, every intermediate tensor is run in
ONNX Runtime on the calibration images and must stay below 65504 (FP16 max) outside those FP32 ops.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ConfigError, EdgedetError
from .base import Artifact, Backend, CalibrationData, Unsupported, sha256
from .trt_device import build_engine

DEVICE_DIR = Path(__file__).with_name("trt_device")
OPSET = 17
PREP_TOL = 1e-4
FP16_MAX = 65504.0
QUANT_OPS = ("Conv", "MatMul", "Gemm")
KEEP_FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "Exp")  # ONNX ops (model_fp16.onnx)
FP32_LAYERS = build_engine.FP32_KINDS  # TensorRT layers kept FP32 (TRT 10)
TRT_VERSIONS = (10, 11)
DEVICE_OUTPUTS = ("model.engine", "build.json", "calib.cache")  # written on the device, after sealing
NO_TRT = "TensorRT engines are built and run on the device (tensorrt not importable here)"
TRT11_IMPLICIT = "TensorRT 11 removed implicit INT8 calibration; use the Q/DQ model"


# ---------------------------------------------------------------------------------------------------- ONNX helpers
def _session(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _run(model, batches: Iterable[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """ONNX Runtime outputs per batch, plus `selected`: the two-stage TopK's indices (which proposals became
    queries), so that outputs can be compared query by query even when a precision change reorders the top-k."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    topk = next((n for n in m.graph.node if n.op_type == "TopK"), None)
    if topk is not None and topk.output[1] not in {o.name for o in m.graph.output}:
        m2 = onnx.ModelProto()
        m2.CopyFrom(m)
        m2.graph.output.append(helper.make_tensor_value_info(topk.output[1], TensorProto.INT64, None))
        m = m2
    sess = _session(m)
    names = [o.name for o in sess.get_outputs()]
    keys = ["selected" if topk is not None and n == topk.output[1] else n for n in names]
    return [dict(zip(keys, sess.run(names, {"images": x}))) for x in batches]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def compare(ref: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Max abs diff per output and logits correlation, query by query; and, where the graph has the two-stage TopK,
    `selection_overlap` (share of selected proposals both pick), `same_query_share` (share of query slots holding the
    same proposal: a slot's output depends on its slot embedding AND its proposal) and the figures over those slots
    (`matched_*`), which separates a precision's numerical error from top-k reordering."""
    cat = lambda rs, k: np.concatenate([r[k].ravel() for r in rs])  # noqa: E731
    out = {f"{k}_max_abs_diff": float(np.abs(cat(ref, k).astype(np.float64) - cat(got, k)).max())
           for k in ("boxes", "logits")}
    out["logits_corr"] = _corr(cat(ref, "logits"), cat(got, "logits"))
    if "selected" not in ref[0] or "selected" not in got[0]:
        return out
    overlap, common, total, m = 0, 0, 0, {"boxes": ([], []), "logits": ([], [])}
    for r, g in zip(ref, got):
        for i in range(r["selected"].shape[0]):
            rs, gs = r["selected"][i].ravel(), g["selected"][i].ravel()
            same = rs == gs
            overlap, common, total = overlap + np.intersect1d(rs, gs).size, common + same.sum(), total + rs.size
            for k, (a, b) in m.items():
                a.append(r[k][i][same])
                b.append(g[k][i][same])
    out["selection_overlap"], out["same_query_share"] = float(overlap / max(total, 1)), float(common / max(total, 1))
    if common:
        for k, (a, b) in m.items():
            out[f"matched_{k}_max_abs_diff"] = float(np.abs(np.concatenate(a) - np.concatenate(b)).max())
        out["matched_logits_corr"] = _corr(np.concatenate(m["logits"][0]), np.concatenate(m["logits"][1]))
    return out


def prepare_onnx(src: Path, batches: list[np.ndarray]):
    """-> (folded ModelProto at opset >= 17, info). EdgedetError when ONNX Runtime outputs move by more than 1e-4."""
    import onnx
    import onnxscript.optimizer

    model = onnx.load(str(src))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < OPSET:
        model = onnx.version_converter.convert_version(model, OPSET)
    before = len(model.graph.node)
    folded = onnxscript.optimizer.optimize(model)
    foreign = sorted({n.domain + "::" + n.op_type for n in folded.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise EdgedetError(f"{src}: constant folding left non-standard ops {', '.join(foreign)}")
    onnx.checker.check_model(folded)
    diff = compare(_run(model, batches), _run(folded, batches))
    if not max(diff["boxes_max_abs_diff"], diff["logits_max_abs_diff"]) <= PREP_TOL:
        raise EdgedetError(f"{src}: constant-folded model differs from the export in ONNX Runtime ({diff})")
    return folded, {"opset": max(opset, OPSET), "nodes_before": before, "nodes_after": len(folded.graph.node),
                    "vs_export": diff, "checked_images": len(batches)}


def _float_tensors(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.output, *g.value_info)}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def fp16_range(model, batches: list[np.ndarray], keep: tuple[str, ...] = KEEP_FP32_OPS) -> dict:
    """Peak |x| of every float activation on `batches` (ONNX Runtime) and of every weight; `over` lists the tensors
    beyond FP16's 65504 that would not be produced by an FP32-pinned op (non-finite values count as over)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    types = _float_tensors(m)
    producer = {o: n.op_type for n in m.graph.node for o in n.output}
    known = {o.name for o in m.graph.output}
    for name, t in types.items():
        if t == TensorProto.FLOAT and name in producer and name not in known:
            m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    peak: dict[str, float] = {}
    for res in _run(m, batches):
        for k, v in res.items():
            if v.dtype == np.float32 and v.size:
                a = float(np.abs(v).max()) if np.isfinite(v).all() else float("inf")
                peak[k] = max(peak.get(k, 0.0), a)
    over = sorted(k for k, v in peak.items() if not v <= FP16_MAX and producer.get(k) not in keep)
    w = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT]
    wmax = max((float(np.abs(a).max()) for a in w if a.size), default=0.0)
    tiny = sum(int(((a != 0) & (np.abs(a) < 2.0 ** -24)).sum()) for a in w)
    top = max(peak, key=peak.get) if peak else ""
    return {"activation_max_abs": peak.get(top, 0.0), "at": top, "weight_max_abs": wmax,
            "weights_flushed_to_zero_in_fp16": tiny, "over_fp16": over, "tensors": len(peak),
            "images": len(batches), "fp32_ops": list(keep)}


# ---------------------------------------------------------------------------------------- FP16 graph (TensorRT 11)
def to_fp16(model, keep: tuple[str, ...] = KEEP_FP32_OPS):
    """Cast a float32 graph to FP16 (strongly typed TensorRT takes precision from the ONNX types): every node with
    float tensors runs in FP16 except `keep` ops; Casts are inserted at the boundaries; I/O stays float32; weights
    used only in FP16 are stored FP16 (weights beyond 65504 stay FP32 behind a Cast)."""
    import onnx
    from onnx import TensorProto as T, helper, numpy_helper

    F32, F16 = T.FLOAT, T.FLOAT16
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for n in [n for n in g.node if n.op_type == "Constant" and n.attribute[0].name == "value"]:
        t = onnx.TensorProto()
        t.CopyFrom(n.attribute[0].t)
        t.name = n.output[0]
        g.initializer.append(t)
        g.node.remove(n)
    types = _float_tensors(m)
    is_f = lambda x: bool(x) and types.get(x) == F32  # noqa: E731
    dtype_ops = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike", "Bernoulli"}
    half = [n.op_type not in keep and n.op_type not in dtype_ops and n.domain in ("", "ai.onnx")
            and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)
            and any(is_f(x) for x in (*n.input, *n.output)) for n in g.node]
    agnostic = {"Shape": (0,), "Size": (0,), "Cast": (0,)}
    fixed32 = {"Resize": (1, 2)}

    def need(n, i: int, h: bool) -> int | None:
        if not is_f(n.input[i]) or i in agnostic.get(n.op_type, ()):
            return None
        return F32 if (not h or i in fixed32.get(n.op_type, ())) else F16

    home = {x.name: F32 for x in g.input}
    for n, h in zip(g.node, half):
        home.update({o: (F16 if h else F32) for o in n.output if is_f(o)})
    inits = {t.name: t for t in g.initializer}
    wants: dict[str, set[int]] = {}
    for n, h in zip(g.node, half):
        for i, x in enumerate(n.input):
            if x in inits and (r := need(n, i, h)) is not None:
                wants.setdefault(x, set()).add(r)
    for name, req in wants.items():
        a = numpy_helper.to_array(inits[name])
        if F16 in req and a.size and np.abs(a).max() <= FP16_MAX:
            t = numpy_helper.from_array(a.astype(np.float16), name if req == {F16} else name + "__fp16")
            if req == {F16}:
                inits[name].CopyFrom(t)
                home[name] = F16
            else:
                g.initializer.append(t)
                home[name + "__fp16"] = F16
        if name not in home:
            home[name] = F32
    renamed = {o.name: o.name + "__fp16" for o in g.output if home.get(o.name) == F16}
    nodes, casts = [], {}

    def cast(x: str, to: int) -> str:
        if x + "__fp16" in home and to == F16 and x in inits:
            return x + "__fp16"
        key = (x, to)
        if key not in casts:
            casts[key] = f"{x}__to{'16' if to == F16 else '32'}"
            nodes.append(helper.make_node("Cast", [x], [casts[key]], to=to, name=casts[key]))
        return casts[key]

    for n, h in zip(list(g.node), half):
        for i, x in enumerate(n.input):
            x2 = renamed.get(x, x)
            r = need(n, i, h)
            n.input[i] = cast(x2, r) if r is not None and home.get(x) != r else x2
        for i, o in enumerate(n.output):
            n.output[i] = renamed.get(o, o)
        if h:
            for a in n.attribute:
                if n.op_type == "Cast" and a.name == "to" and a.i == F32:
                    a.i = F16
                if n.op_type == "ConstantOfShape" and a.name == "value" and a.t.data_type == F32:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        nodes.append(n)
    for old, new in renamed.items():
        nodes.append(helper.make_node("Cast", [new], [old], to=F32, name=old + "__out"))
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    onnx.checker.check_model(m, full_check=True)
    return m


# ------------------------------------------------------------------------------------------ INT8 Q/DQ (explicit)
def head_nodes(model) -> list[str]:
    """The last Conv/MatMul/Gemm before each graph output and each TopK (box/class heads, query scoring): INT8
    there reorders the top-k and costs accuracy for next to no time, so they stay float."""
    prod = {o: n for n in model.graph.node for o in n.output}
    starts = [o.name for o in model.graph.output] + [n.input[0] for n in model.graph.node if n.op_type == "TopK"]
    heads, seen = set(), set()
    while starts:
        n = prod.get(starts.pop())
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        if n.op_type in QUANT_OPS:
            heads.add(n.name)
        else:
            starts += [x for x in n.input if x in prod]
    return sorted(heads)


class _Reader:
    def __init__(self, batches: list[np.ndarray]):
        self.it = iter(batches)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {"images": x}


def quantize_qdq(model_path: Path, out: Path, batches: list[np.ndarray]) -> dict:
    """TensorRT-style explicit quantization with ONNX Runtime's static QDQ quantizer: int8 both sides, symmetric
    (zero point 0), per-channel weights (fp32 weight -> Q -> DQ, TensorRT's canonical pattern), per-tensor
    activations, float biases (TensorRT has no int32 DQ), a dedicated Q/DQ pair per consumer, MinMax calibration,
    float heads (head_nodes), and Q/DQ only in front of Conv/MatMul/Gemm (restrict_qdq)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False, "AddQDQPairToWeight": True,
             "DedicatedQDQPair": True, "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
             "OpTypesToExcludeOutputQuantization": list(QUANT_OPS)}
    heads = head_nodes(onnx.load(str(model_path)))
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(model_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), _Reader(batches), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANT_OPS), per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax, extra_options=extra,
                        nodes_to_exclude=heads)
    qdq = onnx.load(str(out))
    rewired = restrict_qdq(qdq)
    onnx.save(qdq, str(out))
    return {"format": "QDQ", "tool": "onnxruntime.quantization.quantize_static", "ops": list(QUANT_OPS),
            "float_heads": heads, "non_quant_consumers_rewired_to_float": rewired,
            "activations": "int8 symmetric per-tensor", "weights": "int8 symmetric per-channel",
            "bias": "float", "method": "MinMax", "images": len(batches)}


def restrict_qdq(model) -> int:
    """ORT's quantizer hands a quantized tensor's DQ output to ALL its consumers when only one of them is quantized
    (a residual Add, a Shape...): give those non-Conv/MatMul/Gemm consumers the float tensor back. -> rewired inputs."""
    g = model.graph
    prod = {o: n for n in g.node for o in n.output}
    n_rewired = 0
    for n in g.node:
        if n.op_type in QUANT_OPS:
            continue
        for i, x in enumerate(n.input):
            d = prod.get(x)
            q = prod.get(d.input[0]) if d is not None and d.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[i] = q.input[0]
                n_rewired += 1
    return n_rewired


def check_qdq(model) -> tuple[list[str], dict]:
    """TensorRT's rules for explicit quantization -> (problems, stats): standard-domain Q/DQ, int8 zero point 0,
    positive constant scales, per-tensor activations, per-channel weights on the output-channel axis, DQ feeding
    only Conv/MatMul/Gemm, DQ inputs int8 constants or QuantizeLinear outputs."""
    from onnx import TensorProto, numpy_helper

    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    int8 = {t.name for t in g.initializer if t.data_type == TensorProto.INT8}
    prod = {o: n for n in g.node for o in n.output}
    cons: dict[str, list] = {}
    for n in g.node:
        for x in n.input:
            cons.setdefault(x, []).append(n)
    attr = lambda n, k, d: next((a.i for a in n.attribute if a.name == k), d)  # noqa: E731
    q = [n for n in g.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in g.node if n.op_type == "DequantizeLinear"]
    problems: list[str] = []
    for n in q + dq:
        if n.domain not in ("", "ai.onnx"):
            problems.append(f"{n.name}: domain {n.domain}")
        if len(n.input) < 3 or n.input[2] not in int8 or init[n.input[2]].any():
            problems.append(f"{n.name}: zero point must be an int8 constant 0")
        s = init.get(n.input[1])
        if s is None or s.ndim > 1 or not (s > 0).all():
            problems.append(f"{n.name}: scale must be a positive scalar or 1-D constant")
    outputs = {o.name for o in g.output}
    for n in dq:
        if n.output[0] in outputs:
            problems.append(f"{n.name}: DequantizeLinear output is a graph output")
        if n.input[0] not in int8 and getattr(prod.get(n.input[0]), "op_type", "") != "QuantizeLinear":
            problems.append(f"{n.name}: input is neither an int8 constant nor a QuantizeLinear output")
        problems += [f"{n.name}: DequantizeLinear feeds {u.op_type} {u.name} (only {'/'.join(QUANT_OPS)})"
                     for u in cons.get(n.output[0], []) if u.op_type not in QUANT_OPS]
    ops, quantized = [n for n in g.node if n.op_type in QUANT_OPS], 0
    for op in ops:
        fed = [prod.get(x) for x in op.input[:2]]
        quantized += all(getattr(d, "op_type", "") == "DequantizeLinear" for d in fed)
        for i, d in enumerate(fed):
            if getattr(d, "op_type", "") != "DequantizeLinear":
                continue
            qn = prod.get(d.input[0])
            w = qn.input[0] if getattr(qn, "op_type", "") == "QuantizeLinear" else d.input[0]
            s = init.get(d.input[1])
            if w not in init:
                if s is not None and s.ndim != 0:
                    problems.append(f"{d.name}: activation scale of {op.name} must be per-tensor")
            elif s is not None and s.ndim == 1:
                rank = init[w].ndim
                want = {"Conv": 0, "MatMul": rank - 1, "Gemm": 0 if attr(op, "transB", 0) else 1}[op.op_type]
                for n in (d, qn) if qn is not None else (d,):
                    if i != 1 or attr(n, "axis", 1) % rank != want:
                        problems.append(f"{n.name}: per-channel axis {attr(n, 'axis', 1)} is not the output-channel "
                                        f"axis {want} of {op.op_type} {op.name} input {i}")
    return problems, {"quantize_linear": len(q), "dequantize_linear": len(dq), "quantized_ops": quantized,
                      "quantizable_ops": len(ops)}


# ------------------------------------------------------------------------------------------------------- backend
def _trt_options(options: dict) -> dict:
    v = int(options.get("trt_version", 10))
    if v not in TRT_VERSIONS:
        raise Unsupported(f"TensorRT {v}: edgedet prepares engines for TensorRT {' and '.join(map(str, TRT_VERSIONS))}")
    mode = options.get("trt_int8_mode", "explicit")
    if mode not in ("explicit", "implicit"):
        raise ConfigError(f"trt_int8_mode: {mode!r} is not explicit or implicit")
    return {"trt_version": v, "workspace_mb": int(options.get("trt_workspace_mb", 2048)),
            "dla_core": options.get("trt_dla_core"), "batch": int(options.get("batch", 1)), "int8_mode": mode}


PURPOSE = {
    "model.onnx": "constant-folded export (opset >= 17), checked in ONNX Runtime; TensorRT 10 fp32/fp16 and implicit "
                  "int8 input",
    "model_fp16.onnx": "FP16-cast graph (norms/softmax/reduce/exp in FP32) for strongly typed TensorRT 11",
    "model_qdq.onnx": "explicit int8: Q/DQ on Conv/MatMul/Gemm inputs, calibrated here",
    "calib.npz": "calibration images float32 [N,3,R,R] (runtime preprocessing); also the bench/accuracy inputs",
    "calib_loader.py": "Polygraphy data loader (load_data) over calib.npz for implicit int8 (TensorRT 10)",
    "trt_build.json": "build plan read by build_engine.py",
    "build_engine.py": "run on the device: writes model.engine and build.json",
    "bench_engine.py": "run on the device: times model.engine, prints one JSON record",
}


DEVICE_SCRIPTS = ("build_engine.py", "bench_engine.py", "calib_loader.py")


class TensorRTBackend(Backend):
    name = "tensorrt"

    def check_artifact(self, artifact: Artifact) -> None:
        """A TensorRT artifact's scripts run on the device (build_engine.py, bench_engine.py, calib_loader.py through
        Polygraphy): only byte-for-byte copies of this edgedet's own are accepted, so an artifact from elsewhere
        cannot bring code of its own."""
        for name in DEVICE_SCRIPTS:
            if name in artifact.files and artifact.files[name] != sha256(DEVICE_DIR / name):
                raise ConfigError(f"{artifact.dir}/{name} is not edgedet's own copy (sha256 differs): TensorRT "
                                  "artifacts run their scripts on the device, so only edgedet's are accepted; "
                                  "compile the artifact again with this edgedet")

    def available(self) -> str | None:
        """Whether engines can be RUN here (compile needs only onnx + onnxruntime and always works)."""
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return NO_TRT
        return None

    def compile(self, onnx_path, precision, out_dir, calibration: CalibrationData | None, options, metadata):
        self.check_precision(precision)
        opt = _trt_options(options)
        v, res = opt["trt_version"], int(metadata["resolution"])
        if precision == "int8" and v >= 11 and opt["int8_mode"] == "implicit":
            raise Unsupported(TRT11_IMPLICIT)
        if opt["dla_core"] is not None and precision == "fp32":
            raise Unsupported("DLA runs fp16 and int8 only")
        if precision == "int8" and calibration is None:
            raise ConfigError("int8 needs a calibration recipe (--calibration calibration/X.yaml)")
        import onnx

        batches = [np.ascontiguousarray(b, np.float32) for b in calibration(res)] if calibration else []
        checks = batches[:4] or [np.random.default_rng(i).random((1, 3, res, res), dtype=np.float32) for i in (0, 1)]
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in (*PURPOSE, *DEVICE_OUTPUTS):  # a previous compile's files or device build must not be sealed
            (out_dir / stale).unlink(missing_ok=True)
        model, prep = prepare_onnx(Path(onnx_path), checks[:2])
        onnx.save(model, str(out_dir / "model.onnx"))
        meta = dict(metadata, runtime_version=f"{v}.x (target; the device's version is in build.json)",
                    trt_version=v, prepare=prep)
        files, onnx_file, int8_modes = ["model.onnx"], "model.onnx", []
        if precision == "fp16" or (precision == "int8" and v < 11):  # TensorRT 10 int8 falls back to fp16
            meta["fp16_range"] = rng = fp16_range(model, checks)
            if rng["over_fp16"]:
                raise Unsupported(f"FP16 overflow: {len(rng['over_fp16'])} tensors exceed 65504 on the calibration "
                                  f"images, e.g. {rng['over_fp16'][0]}")
        if precision == "fp16" and v >= 11:
            half = to_fp16(model)
            onnx.save(half, str(out_dir / "model_fp16.onnx"))
            meta["fp16_graph"] = compare(_run(model, checks), _run(half, checks))
            files.append(onnx_file := "model_fp16.onnx")
        if batches:
            np.savez(out_dir / "calib.npz", images=np.concatenate(batches, 0))
            files.append("calib.npz")
        if precision == "int8":
            meta["quantization"] = qi = quantize_qdq(out_dir / "model.onnx", out_dir / "model_qdq.onnx", batches)
            qdq = onnx.load(str(out_dir / "model_qdq.onnx"))
            problems, qi["graph"] = check_qdq(qdq)
            if problems:
                raise EdgedetError("Q/DQ model is not TensorRT-compatible: " + "; ".join(problems[:5]))
            qi["vs_fp32"] = compare(_run(model, checks), _run(qdq, checks))
            files.append("model_qdq.onnx")
            int8_modes = ["explicit"] + (["implicit"] if v < 11 else [])
            if v < 11:
                files.append("calib_loader.py")
            onnx_file = "model_qdq.onnx" if opt["int8_mode"] == "explicit" else "model.onnx"
        plan = {"onnx": "model_fp16.onnx" if "model_fp16.onnx" in files else "model.onnx",
                "onnx_qdq": "model_qdq.onnx" if precision == "int8" else None,
                "onnx_implicit": "model.onnx" if "implicit" in int8_modes else None,
                "precision": precision, "int8_mode": opt["int8_mode"] if precision == "int8" else None,
                "int8_modes": int8_modes, "trt_version": v, "strongly_typed": v >= 11,
                "fp32_layers": [] if v >= 11 else list(FP32_LAYERS), "workspace_mb": opt["workspace_mb"],
                "dla_core": opt["dla_core"], "input": "images", "resolution": res, "batch": opt["batch"],
                "engine": "model.engine", "report": "build.json", "calibration_cache": "calib.cache",
                "calib_loader": "calib_loader.py" if "implicit" in int8_modes else None}
        (out_dir / "trt_build.json").write_text(json.dumps(plan, indent=1))
        files += ["trt_build.json", "build_engine.py", "bench_engine.py"]
        for f in files:
            if f.endswith(".py"):
                shutil.copyfile(DEVICE_DIR / f, out_dir / f)
        meta["tensorrt"] = dict(plan, engine_built_on="device: cd ARTIFACT && python3 build_engine.py",
                                benchmark="device: python3 bench_engine.py --warmup 10 --runs 100 --cooldown-ms 200",
                                files={f: PURPOSE[f] for f in files})
        return Artifact(dir=out_dir, backend=self.name, precision=precision, model_file=onnx_file,
                        metadata=meta).seal()

    def load(self, artifact: Artifact, options: dict | None = None):
        """runners.TrtRunner on model.engine, built here first from the artifact's plan when missing. UNTESTED HERE
        (no TensorRT on edgedet's machines): only the 'tensorrt not importable' refusal runs in the tests."""
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            raise Unsupported(NO_TRT) from None
        if not (artifact.dir / "model.engine").is_file():  # pragma: no cover - needs a GPU with TensorRT
            build_engine.build(artifact.dir)
        return super().load(artifact, options)  # pragma: no cover


BACKEND = TensorRTBackend()
