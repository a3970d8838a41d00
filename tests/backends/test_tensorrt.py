"""TensorRT backend, verified up to the engine build (TensorRT cannot be installed here): prepared ONNX, FP16 graph,
Q/DQ model, calibration data and Polygraphy loader, device scripts (compiled, refusing cleanly, and driven through a
fake `tensorrt` module to check the builder calls they make)."""
from __future__ import annotations

import importlib.util
import json
import py_compile
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgedet.backends import get_backend
from edgedet.backends.base import Artifact, Unsupported
from edgedet.backends.tensorrt import (BACKEND, NO_TRT, QUANT_OPS, TRT11_IMPLICIT, check_qdq, compare, fp16_range,
                                       _run)
from edgedet.config import CalibrationRecipe, SubnetConfig
from edgedet.errors import ConfigError
from edgedet.model.export import export_onnx

SUBNET, R = "p24-r192-w2-d1-q25", 192
META = {"subnet": SUBNET, "resolution": R, "num_classes": 6}
SCRIPTS = ("build_engine.py", "bench_engine.py", "calib_loader.py")
POLYGRAPHY = [sys.executable, "-c", "import sys; from polygraphy.tools import main; sys.argv[0] = 'polygraphy'; "
                                    "sys.exit(main())"]


def _trt_importable() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("trt")


@pytest.fixture(scope="module")
def exported(tiny_net, tiny_cfg, work) -> Path:
    module = tiny_net.extract(SubnetConfig.parse(SUBNET, tiny_cfg))
    return export_onnx(module, work / "export.onnx", class_names=tiny_cfg.class_names).path


@pytest.fixture(scope="module")
def calib(work):
    from edgedet.calibration import calibration_fn

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEDET_CACHE", str(work / "cache"))
        fn = calibration_fn(CalibrationRecipe(dataset="demo", images=4))
    return fn


def _compile(exported, work, name, precision, calib, **options) -> Artifact:
    return BACKEND.compile(exported, precision, work / name, calib, options, dict(META))


@pytest.fixture(scope="module")
def fp16(exported, work, calib):
    return _compile(exported, work, "fp16", "fp16", calib)


@pytest.fixture(scope="module")
def int8(exported, work, calib):
    return _compile(exported, work, "int8", "int8", calib)


@pytest.fixture(scope="module")
def fp16_trt11(exported, work, calib):
    return _compile(exported, work, "fp16_trt11", "fp16", calib, trt_version=11)


def _script(art: Artifact, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, name, *args], cwd=art.dir, capture_output=True, text=True, timeout=60)


def _types(model) -> dict[str, int]:
    g = onnx.shape_inference.infer_shapes(model).graph
    out = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    return out | {t.name: t.data_type for t in g.initializer}


# ------------------------------------------------------------------------------------------------ the backend
def test_backend_contract_and_refusals(work, exported):
    assert get_backend("tensorrt") is BACKEND
    assert (BACKEND.name, BACKEND.precisions, BACKEND.extra) == ("tensorrt", ("fp32", "fp16", "int8"), "tensorrt")
    for precision, options, err in [("bf16", {}, Unsupported), ("fp16", {"trt_version": 8}, Unsupported),
                                    ("fp32", {"trt_dla_core": 0}, Unsupported), ("int8", {}, ConfigError),
                                    ("int8", {"trt_int8_mode": "entropy"}, ConfigError)]:
        with pytest.raises(err):
            BACKEND.compile(exported, precision, work / "refused", None, options, dict(META))


# ------------------------------------------------------------------------------------------------ prepared ONNX
def test_prepared_onnx_matches_export(fp16, exported):
    m = onnx.load(str(fp16.dir / "model.onnx"))
    assert m.opset_import[0].version >= 17
    assert not [n for n in m.graph.node if n.op_type == "Constant"]
    assert fp16.metadata["prepare"]["nodes_after"] < fp16.metadata["prepare"]["nodes_before"]
    assert sum(n.op_type == "LayerNormalization" for n in m.graph.node) > 0  # one op -> INormalizationLayer
    assert not [n for n in m.graph.node if n.op_type in ("ReduceMean", "Pow")]  # no decomposed LayerNorm
    assert {p.key: p.value for p in m.metadata_props}["edgedet.subnet"] == SUBNET
    x = [np.random.default_rng(s).random((2, 3, R, R), dtype=np.float32) for s in (5, 6)]
    diff = compare(_run(exported, x), _run(m, x))
    assert max(diff["boxes_max_abs_diff"], diff["logits_max_abs_diff"]) <= 1e-4, diff
    assert fp16.verify() == []
    assert Artifact.open(fp16.dir).files == fp16.files
    assert fp16.model_file == "model.onnx"
    plan = json.loads((fp16.dir / "trt_build.json").read_text())
    assert plan["fp32_layers"] and not plan["strongly_typed"] and plan["precision"] == "fp16"
    meta = fp16.metadata
    assert meta["trt_version"] == 10 and meta["subnet"] == SUBNET and meta["tensorrt"]["int8_modes"] == []
    files = meta["tensorrt"]["files"]
    assert set(files) == set(fp16.files) == {"model.onnx", "calib.npz", "trt_build.json", "build_engine.py",
                                             "bench_engine.py"}


def test_fp16_range_check(fp16, exported, work):
    rng = fp16.metadata["fp16_range"]
    assert rng["over_fp16"] == [] and 0 < rng["activation_max_abs"] < 65504 and rng["images"] == 4
    # a graph that overflows FP16 outside an FP32 op is refused; the same graph compiles at fp32
    big = helper.make_node("Mul", ["images", "k"], ["big"])
    g = helper.make_graph([big, helper.make_node("Mul", ["big", "k_inv"], ["boxes"]),
                           helper.make_node("Softmax", ["big"], ["logits"], axis=-1)], "g",
                          [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, R, R])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("boxes", "logits")],
                          [numpy_helper.from_array(np.float32(v), k) for k, v in (("k", 1e6), ("k_inv", 1e-6))])
    path = work / "overflow.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    x = [np.full((1, 3, R, R), 0.5, np.float32)]
    assert fp16_range(onnx.load(str(path)), x)["over_fp16"] == ["big"]  # Softmax output is FP32-pinned, not listed
    with pytest.raises(Unsupported, match="FP16 overflow.*big"):
        BACKEND.compile(path, "fp16", work / "overflow16", None, {}, dict(META))
    (work / "overflow32").mkdir()
    (work / "overflow32" / "model.engine").write_bytes(b"stale engine of an earlier build")
    art = BACKEND.compile(path, "fp32", work / "overflow32", None, {}, dict(META))
    assert "model.engine" not in art.files and not (art.dir / "model.engine").exists()


def test_trt11_fp16_graph(fp16_trt11):
    m = onnx.load(str(fp16_trt11.dir / "model_fp16.onnx"))
    t = _types(m)
    assert fp16_trt11.model_file == "model_fp16.onnx"
    assert [t[x.name] for x in (*m.graph.input, *m.graph.output)] == [TensorProto.FLOAT] * 3
    for n in m.graph.node:
        floats = {t.get(x) for x in n.input[:1]}
        if n.op_type in ("LayerNormalization", "Softmax", "Exp"):
            assert floats == {TensorProto.FLOAT}, n.name
        if n.op_type in ("MatMul", "Conv"):
            assert floats == {TensorProto.FLOAT16}, n.name
    g = fp16_trt11.metadata["fp16_graph"]
    print("fp16 graph vs fp32:", g)
    assert g["matched_logits_corr"] > 0.999 and g["matched_boxes_max_abs_diff"] < 5e-3, g
    assert g["selection_overlap"] > 0.9 and g["logits_corr"] > 0.95, g
    plan = json.loads((fp16_trt11.dir / "trt_build.json").read_text())
    assert plan["strongly_typed"] and plan["fp32_layers"] == [] and plan["onnx"] == "model_fp16.onnx"


# ------------------------------------------------------------------------------------------------------- Q/DQ
def test_qdq_model_is_tensorrt_style(int8, calib):
    m = onnx.load(str(int8.dir / "model_qdq.onnx"))
    init = {i.name: i for i in m.graph.initializer}
    cons: dict[str, list] = {}
    for n in m.graph.node:
        for x in n.input:
            cons.setdefault(x, []).append(n)
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = init[n.input[2]]
            assert zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any(), n.name
        if n.op_type == "DequantizeLinear":
            assert {u.op_type for u in cons[n.output[0]]} <= set(QUANT_OPS), n.name
        if n.op_type == "QuantizeLinear":
            assert {u.op_type for u in cons[n.output[0]]} == {"DequantizeLinear"}, n.name
            scale = numpy_helper.to_array(init[n.input[1]])
            assert scale.ndim == (1 if n.input[0] in init else 0), n.name  # per-channel weights, per-tensor acts
    q = int8.metadata["quantization"]
    assert check_qdq(m)[0] == []
    assert q["graph"]["quantized_ops"] == q["graph"]["quantizable_ops"] - len(q["float_heads"])
    assert 0 < len(q["float_heads"]) <= 4
    x = calib(R)
    d = compare(_run(int8.dir / "model.onnx", x), _run(m, x))
    print("Q/DQ vs fp32 (ONNX Runtime, 4 calibration images):", d)
    assert d["matched_logits_corr"] > 0.99 and d["matched_boxes_max_abs_diff"] < 0.02, d
    assert d["logits_corr"] > 0.8 and d["selection_overlap"] > 0.8, d
    assert int8.model_file == "model_qdq.onnx" and int8.metadata["tensorrt"]["int8_modes"] == ["explicit", "implicit"]


def test_check_qdq_rejects_what_tensorrt_rejects(int8):
    m = onnx.load(str(int8.dir / "model_qdq.onnx"))
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear")
    zp = next(i for i in m.graph.initializer if i.name == q.input[2])
    zp.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(zp) + np.int8(1), zp.name))
    dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear")
    m.graph.node.append(helper.make_node("Relu", [dq.output[0]], ["extra"]))
    problems = check_qdq(m)[0]
    assert any("zero point" in p for p in problems) and any("feeds Relu" in p for p in problems)


# ------------------------------------------------------------------------------- calibration data / Polygraphy
def test_calib_npz_and_loader(int8, calib):
    ref = calib(R)
    stored = np.load(int8.dir / "calib.npz")["images"]
    np.testing.assert_array_equal(stored, np.concatenate(ref))
    spec = importlib.util.spec_from_file_location("calib_loader_under_test", int8.dir / "calib_loader.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    feeds = list(mod.load_data())
    assert len(feeds) == len(ref) == 4
    for f, r in zip(feeds, ref):
        assert list(f) == ["images"] and f["images"].dtype == np.float32 and f["images"].shape == (1, 3, R, R)
        np.testing.assert_array_equal(f["images"], r)


def test_polygraphy_runs_model_with_loader(int8, tmp_path):
    pytest.importorskip("polygraphy")
    from polygraphy.comparator import RunResults

    out = tmp_path / "outputs.json"
    r = subprocess.run([*POLYGRAPHY, "run", "model.onnx", "--onnxrt", "--data-loader-script", "calib_loader.py",
                        "--save-outputs", str(out)], cwd=int8.dir, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "PASSED" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    (_, iters), = RunResults.load(str(out)).items()
    ref = _run(int8.dir / "model.onnx", list(np.load(int8.dir / "calib.npz")["images"][:, None]))
    assert len(iters) == len(ref) == 4
    for it, rr in zip(iters, ref):
        np.testing.assert_allclose(it["logits"], rr["logits"], atol=1e-5)


def test_polygraphy_command_line_parses(int8):
    pytest.importorskip("polygraphy")
    r = _script(int8, "build_engine.py", "--print-command")
    assert r.returncode == 0, r.stderr
    cmd = r.stdout.split()
    assert cmd[:4] == ["polygraphy", "convert", "model.onnx", "--int8"] and cmd[-2:] == ["-o", "model.engine"]
    assert "--data-loader-script calib_loader.py --calibration-cache calib.cache" in r.stdout
    # Polygraphy parses every option, then stops only because TensorRT is missing here
    import shlex

    p = subprocess.run([*POLYGRAPHY, *shlex.split(r.stdout)[1:]], cwd=int8.dir, capture_output=True, text=True,
                       timeout=60)
    log = p.stdout + p.stderr
    assert p.returncode != 0 and "'tensorrt' is required" in log and "unrecognized" not in log, log[-2000:]
    assert not (int8.dir / "model.engine").exists()


# ---------------------------------------------------------------------------------------------- device scripts
@pytest.mark.skipif(_trt_importable(), reason="tensorrt is importable here")
def test_device_scripts_compile_and_refuse_without_tensorrt(int8):
    for s in SCRIPTS:
        py_compile.compile(str(int8.dir / s), cfile=str(int8.dir / "__pycache__" / (s + "c")), doraise=True)
    shutil.rmtree(int8.dir / "__pycache__")
    for s in ("build_engine.py", "bench_engine.py"):
        r = _script(int8, s)
        assert r.returncode == 2 and r.stdout == "", (s, r)
        assert r.stderr.count("\n") == 1 and "tensorrt is not importable" in r.stderr, r.stderr
    assert int8.verify() == []


class _Enum:
    def __init__(self, name: str, op: str | None = None):
        self.name, self.op = name, (_Enum(op) if op else None)


def fake_tensorrt(version: str, layers: list[tuple[str, str | None]]) -> types.ModuleType:
    """Just the TensorRT Python API that build_engine.build() touches, recording what it is asked to do."""
    trt = types.ModuleType("tensorrt")
    calls: list = []
    trt.__version__, trt.calls, trt.float32, trt.float16 = version, calls, "float32", "float16"
    enum = lambda *names: types.SimpleNamespace(**{n: n for n in names})  # noqa: E731
    trt.BuilderFlag = enum("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "GPU_FALLBACK")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
    trt.MemoryPoolType, trt.DeviceType = enum("WORKSPACE"), enum("DLA")

    class Layer:
        def __init__(self, kind, op):
            self.type, self.op, self.num_outputs, self.precision = _Enum(kind), _Enum(op or "NONE"), 1, None
            self.out = types.SimpleNamespace(dtype="float32")

        def get_output(self, j):
            return self.out

        def set_output_type(self, j, t):
            calls.append(("output_type", self.type.name, t))

    trt.IUnaryLayer = trt.IReduceLayer = trt.INormalizationLayer = Layer
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    network = types.SimpleNamespace(num_layers=len(layers), layers=[Layer(*x) for x in layers])
    network.get_layer = lambda i: network.layers[i]

    class Config:
        def set_memory_pool_limit(self, pool, n):
            calls.append(("pool", pool, n))

        def set_flag(self, f):
            calls.append(("flag", f))

        def add_optimization_profile(self, p):
            calls.append(("profile", p.shapes))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("network_flags", flags))
            return network

        create_builder_config = staticmethod(Config)

        def create_optimization_profile(self):
            p = types.SimpleNamespace(shapes=None)
            p.set_shape = lambda name, *s: setattr(p, "shapes", (name, *s))
            return p

        def build_serialized_network(self, net, config):
            return b"engine-bytes"

    class OnnxParser:
        num_errors = 0

        def __init__(self, net, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse", Path(path).name))
            return True

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


LAYERS = [("NORMALIZATION", None), ("SOFTMAX", None), ("REDUCE", "AVG"), ("REDUCE", "MAX"), ("UNARY", "EXP"),
          ("UNARY", "SIN"), ("CONVOLUTION", None)]


def _build_with_fake(art: Artifact, version: str, monkeypatch, **kw):
    trt = fake_tensorrt(version, LAYERS)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    from edgedet.backends.trt_device import build_engine

    folder = art.dir.parent / (art.dir.name + "_fake" + version)
    shutil.copytree(art.dir, folder, dirs_exist_ok=True)
    return build_engine, build_engine.build(folder, **kw), trt.calls, folder


def test_build_engine_drives_tensorrt_10_api(int8, fp16, monkeypatch):
    be, report, calls, folder = _build_with_fake(fp16, "10.4.0", monkeypatch)
    assert (folder / "model.engine").read_bytes() == b"engine-bytes"
    assert json.loads((folder / "build.json").read_text()) == report
    assert (report["tensorrt_version"], report["precision"], report["fp32_layers_marked"]) == ("10.4.0", "fp16", 4)
    assert ("network_flags", 0) in calls and ("parse", "model.onnx") in calls
    assert ("pool", "WORKSPACE", 2048 << 20) in calls
    assert {c[1] for c in calls if c[0] == "flag"} == {"FP16", "OBEY_PRECISION_CONSTRAINTS"}
    assert sorted(c[1] for c in calls if c[0] == "output_type") == ["NORMALIZATION", "REDUCE", "SOFTMAX", "UNARY"]
    assert ("profile", ("images", (1, 3, R, R), (1, 3, R, R), (1, 3, R, R))) in calls
    _, report, calls, _ = _build_with_fake(int8, "10.4.0", monkeypatch)
    assert ("parse", "model_qdq.onnx") in calls and report["int8_mode"] == "explicit"
    assert {c[1] for c in calls if c[0] == "flag"} == {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"}
    with pytest.raises(be.BuildError, match="prepared for TensorRT 10, this device has 11.0"):
        _build_with_fake(int8, "11.0.0", monkeypatch)


def test_trt11(exported, work, calib, monkeypatch):
    with pytest.raises(Unsupported) as e:
        _compile(exported, work, "t11_implicit", "int8", calib, trt_version=11, trt_int8_mode="implicit")
    assert str(e.value) == "unsupported: " + TRT11_IMPLICIT
    art = _compile(exported, work, "int8_trt11", "int8", calib, trt_version=11)
    plan = json.loads((art.dir / "trt_build.json").read_text())
    assert plan["strongly_typed"] and plan["int8_modes"] == ["explicit"] and plan["calib_loader"] is None
    assert not (art.dir / "calib_loader.py").exists() and art.model_file == "model_qdq.onnx"
    for args in (["--int8-mode", "implicit"], ["--print-command"]):
        r = _script(art, "build_engine.py", *args)
        assert r.returncode == 3 and "TensorRT 11" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "unsupported: " + TRT11_IMPLICIT in _script(art, "build_engine.py", "--int8-mode", "implicit").stderr
    _, report, calls, _ = _build_with_fake(art, "11.0.0", monkeypatch)
    assert ("network_flags", 1 << 5) in calls and ("parse", "model_qdq.onnx") in calls
    assert not [c for c in calls if c[0] in ("flag", "output_type")] and report["strongly_typed"]


@pytest.mark.skipif(_trt_importable(), reason="tensorrt is importable here")
def test_load_is_unsupported_without_tensorrt(fp16):
    with pytest.raises(Unsupported) as e:
        BACKEND.load(fp16, {})
    assert e.value.reason == NO_TRT and str(e.value).startswith("unsupported: TensorRT engines are built")
    assert BACKEND.available() == NO_TRT


def test_bench_helpers_without_a_gpu():
    from edgedet.backends.trt_device import bench_engine

    p = bench_engine.percentiles([float(i) for i in range(1, 101)])
    assert (p["p50"], p["p90"], p["p99"], p["min"], p["max"]) == (50.5, 90.1, 99.01, 1.0, 100.0)
    try:
        cuda = bench_engine.CudaRT()
    except RuntimeError as e:  # no CUDA runtime library on this machine
        assert "libcudart" in str(e)
        return
    try:
        ptr = cuda.malloc(64)
    except RuntimeError as e:  # a CUDA runtime without a usable GPU: the binding reports the CUDA error
        assert str(e).startswith("cudaMalloc: CUDA error")
        return
    a, b, s = np.arange(16, dtype=np.float32), np.zeros(16, np.float32), cuda.stream()  # a GPU: round trip
    e0, e1 = cuda.event(), cuda.event()
    cuda.record(e0, s)
    cuda.copy(ptr, a.ctypes.data, a.nbytes, bench_engine.H2D, s)
    cuda.copy(b.ctypes.data, ptr, b.nbytes, bench_engine.D2H, s)
    cuda.record(e1, s)
    cuda.sync(s)
    assert (a == b).all() and cuda.elapsed_ms(e0, e1) >= 0
    cuda.free(ptr)
