"""edgedet: train one weight-sharing DETR supernet, search it with the device in the loop, ship compiled fronts.

The public API is flat and imported lazily, so `import edgedet` stays light:
    net = edgedet.load_supernet("ckpt.safetensors")   # or edgedet.build_supernet("tiny")
    edgedet.export_onnx(net, "p16-r384-w2-d3-q100", "model.onnx")
"""
from __future__ import annotations

__version__ = "0.1.0"

_API = {
    "build_supernet": "api", "load_supernet": "api", "export_onnx": "api", "subnet_cost": "api",
    "supernet_info": "api",
    "SubnetConfig": "config", "SupernetConfig": "config", "preset": "config", "PRESETS": "config",
    "save_supernet": "checkpoint",
    "EdgedetError": "errors",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'edgedet' has no attribute {name!r}")
