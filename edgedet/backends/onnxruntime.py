"""ONNX Runtime: fp32 as exported; int8 as static QDQ on Conv/MatMul/Gemm only (all-op QDQ is slower and wrong on
DETRs), calibrated on the recipe's images."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from .base import Artifact, Backend, CalibrationData, Runner

QUANT_OPS = ["Conv", "MatMul", "Gemm"]


def session_options(threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so


class OrtRunner(Runner):
    def __init__(self, path: Path, threads: int | None, precision: str):
        import onnxruntime as ort

        self.sess = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        self.precision, self.threads = precision, threads

    def infer(self, images: np.ndarray):
        boxes, logits = self.sess.run(["boxes", "logits"], {"images": np.ascontiguousarray(images, np.float32)})
        return boxes, logits

    def info(self) -> dict:
        import onnxruntime as ort

        return {"runtime": "onnxruntime", "runtime_version": ort.__version__, "precision": self.precision,
                "provider": "CPUExecutionProvider", "threads": self.threads}


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

    def load(self, artifact: Artifact, options: dict) -> Runner:
        return OrtRunner(artifact.model_path, options.get("threads"), artifact.precision)


BACKEND = OnnxRuntimeBackend()
