"""One module per runtime behind one small interface (base.Backend). Runtimes are imported lazily."""
from __future__ import annotations

import importlib

from ..errors import ConfigError
from .capabilities import BACKEND_NAMES, CAPABILITIES, Capabilities, capabilities  # noqa: F401

_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tflite": "tflite", "tensorrt": "tensorrt"}


def get_backend(name: str):
    """The Backend object of a runtime name (onnxruntime, openvino, tflite, tensorrt)."""
    if name not in _MODULES:
        raise ConfigError(f"unknown backend {name!r}; backends are {', '.join(_MODULES)}")
    return importlib.import_module(f".{_MODULES[name]}", __name__).BACKEND
