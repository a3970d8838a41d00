"""ONNX Runtime: fp32 as exported; int8 as static QDQ on Conv/MatMul/Gemm only (all-op QDQ is slower and wrong on
DETRs), calibrated on the recipe's images. Artifacts run through runners.OrtRunner (Backend.load)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .base import Artifact, Backend, CalibrationData

QUANT_OPS = ["Conv", "MatMul", "Gemm"]


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over calibration batches."""

    def __init__(self, batches):
        self.it = iter(batches)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {"images": x}

    def rewind(self):  # pragma: no cover - not used by MinMax
        pass


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def compile(self, onnx_path, precision, out_dir, calibration: CalibrationData | None, options, metadata):
        self.check_precision(precision)
        import onnxruntime as ort

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / "model.onnx"
        meta = dict(metadata, runtime_version=ort.__version__)
        if precision == "fp32":
            shutil.copyfile(onnx_path, target)
        else:
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
            from onnxruntime.quantization.shape_inference import quant_pre_process

            from ..errors import ConfigError

            if calibration is None:
                raise ConfigError("int8 needs a calibration recipe (--calibration calibration/X.yaml)")
            with tempfile.TemporaryDirectory() as tmp:
                pre = Path(tmp) / "pre.onnx"
                quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
                quantize_static(str(pre), str(target), _Reader(calibration(int(metadata["resolution"]))),
                                quant_format=QuantFormat.QDQ, op_types_to_quantize=QUANT_OPS, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax)
            meta["quantization"] = {"format": "QDQ", "ops": QUANT_OPS, "per_channel": True, "method": "MinMax",
                                    "activations": "uint8", "weights": "int8"}
        return Artifact(dir=out_dir, backend=self.name, precision=precision, model_file="model.onnx",
                        metadata=meta).seal()


BACKEND = OnnxRuntimeBackend()
