"""Run ON the device, in the artifact folder: `python3 build_engine.py [--int8-mode explicit|implicit]`.

Reads trt_build.json (written by edgedet), builds model.engine with the TensorRT Python API (or, for implicit INT8
on TensorRT 10, with `polygraphy convert --int8 --data-loader-script calib_loader.py`), and writes build.json
(TensorRT version, GPU, build time). Needs python3, numpy and tensorrt (+ polygraphy for implicit INT8); no edgedet.
`--print-command` prints the Polygraphy command line without needing TensorRT.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLAN = "trt_build.json"
NO_TRT = ("build_engine.py: tensorrt is not importable here; run this script on the device "
          "(pip install tensorrt, or JetPack's python3-libnvinfer)")
TRT11_IMPLICIT = "unsupported: TensorRT 11 removed implicit INT8 calibration; use the Q/DQ model"


class BuildError(Exception):
    pass


# the plan names only these files (edgedet writes exactly these names): nothing read or written leaves the folder
PLAN_FILES = {"onnx": ("model.onnx", "model_fp16.onnx"), "onnx_qdq": (None, "model_qdq.onnx"),
              "onnx_implicit": (None, "model.onnx"), "engine": ("model.engine",), "report": ("build.json",),
              "calibration_cache": ("calib.cache",), "calib_loader": (None, "calib_loader.py"), "input": ("images",)}
PLAN_INTS = {"resolution": (1, 8192), "batch": (1, 1024), "workspace_mb": (1, 1 << 22), "trt_version": (10, 11)}
FP32_KINDS = ("NORMALIZATION", "SOFTMAX", "REDUCE:AVG", "REDUCE:SUM", "UNARY:EXP")


def load_plan(folder: Path = HERE) -> dict:
    """trt_build.json, checked: fixed file names, numbers in range, known precision and INT8 modes (BuildError)."""
    try:
        plan = json.loads((Path(folder) / PLAN).read_text())
    except (OSError, ValueError) as e:
        raise BuildError(f"{PLAN}: cannot be read ({e})") from None
    if not isinstance(plan, dict):
        raise BuildError(f"{PLAN}: not a JSON object")

    def bad(key: str, why: str):
        raise BuildError(f"{PLAN}: {key} {why}, got {plan.get(key)!r:.80}")

    for key, allowed in PLAN_FILES.items():
        if plan.get(key) not in allowed:
            bad(key, f"must be one of {allowed}")
    for key, (lo, hi) in PLAN_INTS.items():
        v = plan.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            bad(key, f"must be an integer in {lo}..{hi}")
    if plan.get("precision") not in ("fp32", "fp16", "int8"):
        bad("precision", "must be fp32, fp16 or int8")
    if plan.get("int8_mode") not in (None, "explicit", "implicit"):
        bad("int8_mode", "must be null, explicit or implicit")
    modes, layers = plan.get("int8_modes"), plan.get("fp32_layers")
    if not isinstance(modes, list) or not set(modes) <= {"explicit", "implicit"}:
        bad("int8_modes", "must be a list of explicit/implicit")
    if not isinstance(layers, list) or not set(layers) <= set(FP32_KINDS):
        bad("fp32_layers", f"must be a list of {FP32_KINDS}")
    if not isinstance(plan.get("strongly_typed"), bool):
        bad("strongly_typed", "must be true or false")
    dla = plan.get("dla_core")
    if dla is not None and (not isinstance(dla, int) or isinstance(dla, bool) or not 0 <= dla <= 15):
        bad("dla_core", "must be null or an integer in 0..15")
    return plan


def trt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def int8_mode(plan: dict, override: str | None) -> str | None:
    if plan["precision"] != "int8":
        return None
    mode = override or plan["int8_mode"]
    if mode == "implicit" and (plan["trt_version"] >= 11 or "implicit" not in plan["int8_modes"]):
        raise BuildError(TRT11_IMPLICIT if plan["trt_version"] >= 11 else "this artifact has no implicit INT8 files")
    return mode


def mark_fp32(network, kinds: list[str]) -> int:
    """Pin layers whose type (or type:op) is in `kinds` to FP32 compute and FP32 outputs (weakly typed networks)."""
    import tensorrt as trt

    typed = {"UNARY": trt.IUnaryLayer, "REDUCE": trt.IReduceLayer, "NORMALIZATION": trt.INormalizationLayer}
    marked = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = layer.type.name
        if kind in typed:
            layer.__class__ = typed[kind]
        full = f"{kind}:{layer.op.name}" if kind in ("UNARY", "REDUCE") else kind
        if kind not in kinds and full not in kinds:
            continue
        layer.precision = trt.float32
        if kind == "NORMALIZATION" and hasattr(layer, "compute_precision"):
            layer.compute_precision = trt.float32
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in (trt.float32, trt.float16):
                layer.set_output_type(j, trt.float32)
        marked += 1
    return marked


def use_dla(config, core: int) -> None:
    import tensorrt as trt

    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(core)
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def postprocess(network) -> None:
    """Polygraphy network hook (--trt-network-postprocess-script): the plan's FP32 layers."""
    mark_fp32(network, load_plan()["fp32_layers"])


def postprocess_config(builder, network, config) -> None:
    """Polygraphy config hook (--trt-config-postprocess-script): the plan's DLA core."""
    if load_plan()["dla_core"] is not None:
        use_dla(config, load_plan()["dla_core"])


def polygraphy_command(plan: dict) -> list[str]:
    """Implicit INT8 (TensorRT 10): Polygraphy's calibrator over calib_loader.py, fp16 fallback, FP32 norms."""
    if not plan.get("calib_loader"):
        raise BuildError("this artifact has no implicit INT8 files (TensorRT 11 or not an int8 artifact)")
    shape = lambda b: f"images:[{b},3,{plan['resolution']},{plan['resolution']}]"  # noqa: E731
    cmd = ["polygraphy", "convert", plan["onnx_implicit"], "--int8", "--fp16",
           "--data-loader-script", plan["calib_loader"], "--calibration-cache", plan["calibration_cache"],
           "--trt-min-shapes", shape(1), "--trt-opt-shapes", shape(plan["batch"]),
           "--trt-max-shapes", shape(plan["batch"]), "--pool-limit", f"workspace:{plan['workspace_mb']}M",
           "--precision-constraints", "obey", "--trt-network-postprocess-script", "build_engine.py:postprocess"]
    if plan["dla_core"] is not None:
        cmd += ["--use-dla", "--allow-gpu-fallback", "--trt-config-postprocess-script",
                "build_engine.py:postprocess_config"]
    return cmd + ["-o", plan["engine"]]


def gpu_name() -> str:
    for lib in (ctypes.util.find_library("cudart"), "libcudart.so", "libcudart.so.13", "libcudart.so.12"):
        try:
            fn = ctypes.CDLL(lib).cudaGetDeviceProperties if lib else None
        except (OSError, AttributeError):
            continue
        buf = ctypes.create_string_buffer(16384)  # cudaDeviceProp; `name` is its first field (char[256])
        if fn is not None and fn(buf, 0) == 0:
            return buf.raw[:256].split(b"\0")[0].decode(errors="replace")
    return "unknown"


def build(folder: Path = HERE, int8_override: str | None = None) -> dict:
    """Build model.engine in `folder` from its plan; returns (and writes) the build report."""
    import tensorrt as trt

    folder = Path(folder)
    plan = load_plan(folder)
    major = trt_major(trt)
    if major != plan["trt_version"]:
        raise BuildError(f"artifact prepared for TensorRT {plan['trt_version']}, this device has {trt.__version__}: "
                         f"compile it again with trt_version: {major}")
    mode = int8_mode(plan, int8_override)
    t0 = time.perf_counter()
    marked = None
    if mode == "implicit":
        exe = shutil.which("polygraphy")
        cmd = polygraphy_command(plan)
        run = "import sys; from polygraphy.tools import main; sys.argv[0] = 'polygraphy'; sys.exit(main())"
        cmd = [exe, *cmd[1:]] if exe else [sys.executable, "-c", run, *cmd[1:]]
        print("+", shlex.join(cmd), file=sys.stderr)
        if subprocess.run(cmd, cwd=folder).returncode != 0:
            raise BuildError("polygraphy convert failed (see its log above; pip install polygraphy)")
        onnx = plan["onnx_implicit"]
    else:
        onnx = plan["onnx_qdq"] if mode == "explicit" else plan["onnx"]
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan["strongly_typed"] else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(folder / onnx)):
            raise BuildError(f"ONNX parser: {'; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(plan["workspace_mb"]) << 20)
        if not plan["strongly_typed"] and plan["precision"] != "fp32":  # TensorRT 10: precision by builder flags
            config.set_flag(trt.BuilderFlag.FP16)
            if plan["precision"] == "int8":
                config.set_flag(trt.BuilderFlag.INT8)
            marked = mark_fp32(network, plan["fp32_layers"])
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        if plan["dla_core"] is not None:
            use_dla(config, plan["dla_core"])
        r, b = plan["resolution"], plan["batch"]
        profile = builder.create_optimization_profile()
        profile.set_shape(plan["input"], (1, 3, r, r), (b, 3, r, r), (b, 3, r, r))
        config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise BuildError("TensorRT could not build the engine (see its log above)")
        (folder / plan["engine"]).write_bytes(memoryview(engine))
    report = {"engine": plan["engine"], "engine_bytes": (folder / plan["engine"]).stat().st_size, "onnx": onnx,
              "tensorrt_version": trt.__version__, "gpu": gpu_name(), "build_s": round(time.perf_counter() - t0, 3),
              "precision": plan["precision"], "int8_mode": mode, "strongly_typed": plan["strongly_typed"],
              "fp32_layers_marked": marked, "workspace_mb": plan["workspace_mb"], "dla_core": plan["dla_core"],
              "batch": plan["batch"], "resolution": plan["resolution"], "host": platform.node(),
              "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (folder / plan["report"]).write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=HERE, help="artifact folder (default: this script's)")
    ap.add_argument("--int8-mode", choices=("explicit", "implicit"), help="override the plan's INT8 mode")
    ap.add_argument("--print-command", action="store_true", help="print the implicit-INT8 Polygraphy command")
    args = ap.parse_args(argv)
    try:
        plan = load_plan(args.dir)
        if args.print_command:
            print(shlex.join(polygraphy_command(plan)))
            return 0
        int8_mode(plan, args.int8_mode)
    except (BuildError, OSError, KeyError, json.JSONDecodeError) as e:
        print(f"build_engine.py: {e}", file=sys.stderr)
        return 3
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        print(NO_TRT, file=sys.stderr)
        return 2
    try:
        print(json.dumps(build(args.dir, args.int8_mode)))
    except BuildError as e:
        print(f"build_engine.py: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
