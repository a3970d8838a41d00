"""LiteRT (TFLite): `.tflite` converted from the torch module by litert-torch, run by ai-edge-litert's Interpreter.

Conversion (extra `litert`: litert-torch pins pydantic <= 2.11 through xdsl, so it is not in the core install) takes
the SubnetModule itself, `options["torch_module"]`; the ONNX file is not used. The module is traced by torch.export at
batch 1 and lowered to builtin TFLite ops only (grid_sample is decomposed into GATHER_ND + arithmetic, top-k is
TOPK_V2; no Flex or custom ops). Layout: the model keeps the ONNX contract's NCHW input `images` float32
[1,3,R,R] RGB in [0,1]; litert-torch runs convolutions in TFLite's NHWC internally by inserting TRANSPOSE ops (and
moving them out of the way where it can), so callers never transpose. Outputs are named `boxes` [1,Q,4] (normalised
cxcywh) and `logits` [1,Q,C] in the `serving_default` signature.

Precisions (each a post-conversion rewrite of the fp32 flatbuffer by ai-edge-quantizer, no calibration data):
  fp32  as converted.
  fp16  float16 weights (weight-only, DEQUANTIZE to float32 at load), float32 activations: ~half the size.
  int8  dynamic-range: int8 symmetric per-channel weights, float32 activations that the hybrid kernels
        (FULLY_CONNECTED, CONV_2D, BATCH_MATMUL, ...) quantize on the fly: ~1/3.3 the size. Full-integer int8 of DETRs
        is slow and inaccurate on LiteRT, so it is not offered. options["tflite_int8"] = "weight_only" keeps int8
        weights but computes in float (more accurate, not faster).

Artifacts run through runners.TFLiteRunner (Backend.load), which needs only an interpreter (extra `tflite`):
ai_edge_litert, else tflite_runtime, else tensorflow.lite; it invokes batch 1 per image, loops over the batch and
picks the outputs by name (see runners.py for the one fallback rule).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from importlib import metadata as _metadata
from pathlib import Path

import numpy as np

from ..checkpoint import atomic_write
from ..errors import ConfigError, MissingExtraError
from ..runtime import runners
from .base import Artifact, Backend, CalibrationData, Unsupported

MODEL_FILE = "model.tflite"
SIGNATURE = "serving_default"
INT8_MODES = ("dynamic", "weight_only")


def _dist_version(dist: str) -> str | None:
    try:
        return _metadata.version(dist)
    except _metadata.PackageNotFoundError:
        return None


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _litert_torch():
    try:
        import litert_torch
    except ImportError:
        raise MissingExtraError("litert_torch", "litert", "LiteRT conversion") from None
    return litert_torch


def interpreter_class():
    """(Interpreter class, runtime name, version): runners.tflite_interpreter, missing as a MissingExtraError."""
    try:
        return runners.tflite_interpreter()
    except runners.Unsupported:
        raise MissingExtraError("ai_edge_litert", "tflite", "running .tflite models") from None


def _named_outputs(module):
    """Wrap a SubnetModule so the converted signature has input `images` and outputs `boxes`, `logits`."""
    import torch

    class NamedOutputs(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, images):
            boxes, logits = self.m(images)
            return {"boxes": boxes, "logits": logits}

    return NamedOutputs(module).eval()


@contextlib.contextmanager
def _quiet(verbose: bool):
    """litert-torch's progress lines and torch's deprecation warnings off unless verbose (env restored after)."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    old = os.environ.get(key)
    if not verbose:
        os.environ[key] = "n"
    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore")
            yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def convert_fp32(module, resolution: int, verbose: bool = False) -> bytes:
    """The fp32 .tflite flatbuffer of a SubnetModule (input `images` [1,3,R,R] NCHW float32)."""
    lt = _litert_torch()
    import torch

    x = torch.rand(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    wrapped = _named_outputs(module)
    sid = getattr(getattr(module, "subnet", None), "id", type(module).__name__)
    try:
        with _quiet(verbose), torch.no_grad():
            model = lt.convert(wrapped, sample_kwargs={"images": x})
        return bytes(model.model_content())
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # a torch.export or lowering failure: an unsupported candidate, not a crash
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise Unsupported(f"litert-torch could not convert {sid}: {type(e).__name__}: {msg}") from e


def _quantize(fp32: bytes, precision: str, int8_mode: str) -> tuple[bytes, dict]:
    try:
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe, recipe_manager
    except ImportError:
        raise MissingExtraError("ai_edge_quantizer", "litert", f"LiteRT {precision}") from None
    info = {"tool": "ai-edge-quantizer", "tool_version": _dist_version("ai-edge-quantizer"), "calibration": "none"}
    if precision == "fp16":
        rm = recipe_manager.RecipeManager()
        rm.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                  granularity=qtyping.QuantGranularity.TENSORWISE,
                                  algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
        rc = rm.get_quantization_recipe()
        info.update(mode="weight_only_fp16", weights="float16", activations="float32", compute="float32")
    elif int8_mode == "dynamic":
        rc = recipe.dynamic_wi8_afp32()
        info.update(mode="dynamic_range", recipe="dynamic_wi8_afp32", weights="int8 symmetric per-channel (min-max)",
                    activations="float32, quantized to int8 on the fly by the hybrid kernels", compute="int8")
    else:
        rc = recipe.weight_only_wi8_afp32()
        info.update(mode="weight_only_int8", recipe="weight_only_wi8_afp32",
                    weights="int8 symmetric per-channel (min-max)", activations="float32", compute="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = quantizer.Quantizer(fp32, rc).quantize(enable_progress_bar=False, enable_progress_report=False)
    return bytes(res.quantized_model), info


def _tensor_census(path: Path) -> dict:
    """Load the model once (a file with ops the interpreter lacks fails here, at compile time, not on the device)
    and count its tensors by dtype."""
    cls, _, _ = interpreter_class()
    try:
        it = cls(model_path=str(path))
        it.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        raise Unsupported(f"the converted .tflite does not load in the interpreter: {e}") from e
    counts: dict[str, int] = {}
    for d in it.get_tensor_details():
        name = np.dtype(d["dtype"]).name
        counts[name] = counts.get(name, 0) + 1
    inp = it.get_input_details()[0]
    return {"tensor_dtypes": counts, "input_shape": [int(v) for v in inp["shape"]]}


class TFLiteBackend(Backend):
    name = "tflite"

    def available(self) -> str | None:
        """None when both the converter (litert_torch, extra `litert`) and an interpreter are importable; a device
        that only runs artifacts needs the interpreter alone (`runtime_available`)."""
        reasons = []
        if not _has("litert_torch"):
            reasons.append(str(MissingExtraError("litert_torch", "litert", "LiteRT conversion")))
        r = self.runtime_available()
        if r:
            reasons.append(r)
        return "; ".join(reasons) or None

    def runtime_available(self) -> str | None:
        if any(_has(m) for m in ("ai_edge_litert", "tflite_runtime", "tensorflow")):
            return None
        return str(MissingExtraError("ai_edge_litert", "tflite", "running .tflite models"))

    def compile(self, onnx_path, precision, out_dir, calibration: CalibrationData | None, options, metadata):
        """Convert options["torch_module"] (the ONNX path is not used) to out_dir/model.tflite at `precision`.
        options: torch_module (required), tflite_int8 ("dynamic" | "weight_only"), tflite_float_model (path of an
        fp32 model.tflite already converted from the same module: fp16/int8 rewrite it instead of converting
        again), verbose. `calibration` is not used: no LiteRT precision here needs it."""
        self.check_precision(precision)
        options = options or {}
        module = options.get("torch_module")
        if module is None:
            raise ConfigError("the tflite backend converts the torch module: pass options['torch_module'] "
                              "(the SubnetModule; edgedet.deploy.compile_subnet does)")
        int8_mode = options.get("tflite_int8") or "dynamic"
        if int8_mode not in INT8_MODES:
            raise ConfigError(f"tflite_int8 must be one of {', '.join(INT8_MODES)}, got {int8_mode!r}")
        subnet = getattr(module, "subnet", None)
        res = int(metadata["resolution"]) if metadata.get("resolution") else int(subnet.resolution)
        if subnet is not None and int(subnet.resolution) != res:
            raise ConfigError(f"metadata resolution {res} does not match the module's subnet {subnet.id}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        lt = _litert_torch()

        source = options.get("tflite_float_model")
        if source and precision != "fp32":
            fp32 = Path(source).read_bytes()
        else:
            fp32 = convert_fp32(module, res, verbose=bool(options.get("verbose")))
        quant = None
        data = fp32
        if precision != "fp32":
            data, quant = _quantize(fp32, precision, int8_mode)
        target = out_dir / MODEL_FILE
        atomic_write(target, lambda tmp: tmp.write_bytes(data))
        census = _tensor_census(target)
        if census["input_shape"] != [1, 3, res, res]:
            target.unlink()
            raise ConfigError(f"{source or 'converted model'}: input shape {census['input_shape']} is not "
                              f"[1, 3, {res}, {res}] (tflite_float_model from another subnet?)")
        _, runtime, runtime_version = interpreter_class()
        meta = dict(metadata, runtime=runtime, runtime_version=runtime_version, converter="litert-torch",
                    converter_version=getattr(lt, "__version__", None) or _dist_version("litert-torch"),
                    quantization=quant, signature=SIGNATURE, input={"name": "images", "dtype": "float32",
                                                                    "shape": [1, 3, res, res], "layout": "NCHW"},
                    outputs=["boxes", "logits"], batch=1, tensor_dtypes=census["tensor_dtypes"],
                    float_model_reused=bool(source and precision != "fp32"))
        if metadata.get("calibration") is not None:
            meta["calibration"] = None  # recorded as unused: dynamic-range/fp16 need no calibration images
        return Artifact(dir=out_dir, backend=self.name, precision=precision, model_file=MODEL_FILE,
                        metadata=meta).seal()


BACKEND = TFLiteBackend()
