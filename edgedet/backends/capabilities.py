"""What each backend can do, as data: config validation, compile, search and devices read this table instead of
branching on backend names. Pure data (no runtime imports), so edgedet.config can use it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    precisions: tuple[str, ...]
    runs_on_host: bool = True  # loads and times in this process; False: only on its device (TensorRT)
    builds_on_device: bool = False  # the artifact becomes an engine on the device before it runs (TensorRT)
    calibrated: tuple[str, ...] = ("int8",)  # precisions compiled with calibration images
    ships_calibration: bool = False  # every artifact carries the calibration images (TensorRT: range check, INT8)
    python_runtime: bool = True  # has a shipped Python runtime (runtime/python)
    cpp_runtime: bool = True  # has a C++ engine (runtime/cpp)
    needs_torch_module: bool = False  # converts from the torch module itself (LiteRT), not from the ONNX file
    accuracy_control: bool = False  # int8 with an AP-drop bound (--max-ap-drop)
    extra: str = ""  # pip extra that installs the runtime ("" = core install)

    def needs_calibration(self, precision: str) -> bool:
        return self.ships_calibration or precision in self.calibrated


CAPABILITIES: dict[str, Capabilities] = {
    "onnxruntime": Capabilities(("fp32", "int8")),
    "openvino": Capabilities(("fp32", "fp16", "bf16", "int8"), accuracy_control=True, extra="openvino"),
    # int8 is dynamic-range (weights only calibrated from themselves): no calibration images
    "tflite": Capabilities(("fp32", "fp16", "int8"), calibrated=(), cpp_runtime=False, needs_torch_module=True,
                           extra="litert"),
    "tensorrt": Capabilities(("fp32", "fp16", "int8"), runs_on_host=False, builds_on_device=True,
                             ships_calibration=True, python_runtime=False, extra="tensorrt"),
}
BACKEND_NAMES = tuple(CAPABILITIES)


def capabilities(backend: str) -> Capabilities:
    from ..errors import ConfigError

    if backend not in CAPABILITIES:
        raise ConfigError(f"unknown backend {backend!r}; backends are {', '.join(CAPABILITIES)}")
    return CAPABILITIES[backend]
