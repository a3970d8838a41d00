"""ONNX export of one subnet, checked against torch with ONNX Runtime before it returns.

I/O contract: input `images` float32 [B,3,R,R] RGB in [0,1] (normalisation inside the graph); outputs `boxes`
[B,Q,4] normalised cxcywh and `logits` [B,Q,C]. Batch is dynamic; weights are inline.
"""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import atomic_write
from ..errors import EdgedetError

OPSET = 17


@dataclass
class ExportResult:
    path: Path
    subnet: str
    opset: int
    max_abs_diff: dict[str, float]
    size_bytes: int


def onnx_metadata(module, class_names: list[str] | None, extra: dict | None = None) -> dict[str, str]:
    s = module.subnet
    meta = {"edgedet.subnet": s.id, "edgedet.resolution": str(s.resolution),
            "edgedet.num_classes": str(module.num_classes), "edgedet.box_format": "cxcywh_normalized",
            "edgedet.input": "RGB float32 [0,1] NCHW"}
    if class_names:
        meta["edgedet.class_names"] = json.dumps(class_names)
    meta.update({f"edgedet.{k}": str(v) for k, v in (extra or {}).items()})
    return meta


def _export_bytes(module, example: torch.Tensor, opset: int) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buf, input_names=["images"], output_names=["boxes", "logits"],
                          opset_version=opset, dynamo=False, do_constant_folding=True,
                          dynamic_axes={"images": {0: "batch"}, "boxes": {0: "batch"}, "logits": {0: "batch"}})
    return buf.getvalue()


def export_onnx(module, path: Path, *, class_names: list[str] | None = None, opset: int = OPSET, check: bool = True,
                tol: float = 1e-4, metadata: dict | None = None, seed: int = 0) -> ExportResult:
    """Export a SubnetModule to `path` (atomically). With check=True, ONNX Runtime must reproduce torch's boxes and
    logits within `tol` (max abs diff) on a seeded random batch of 2, else EdgedetError and nothing is written."""
    import onnx

    module = module.eval()
    r = module.subnet.resolution
    gen = torch.Generator().manual_seed(seed)
    example = torch.rand(2, 3, r, r, generator=gen)
    with torch.no_grad():
        data = _export_bytes(module, example, opset)
    model = onnx.load_from_string(data)
    for k, v in onnx_metadata(module, class_names, metadata).items():
        model.metadata_props.add(key=k, value=v)
    data = model.SerializeToString()
    diffs: dict[str, float] = {}
    if check:
        diffs = compare_onnx_torch(data, module, example)
        bad = {k: v for k, v in diffs.items() if not v <= tol}
        if bad:
            raise EdgedetError(f"ONNX export of {module.subnet.id} does not match torch: max abs diff "
                               + ", ".join(f"{k} {v:.2e}" for k, v in bad.items()) + f" > {tol:g}")
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return ExportResult(path=path, subnet=module.subnet.id, opset=opset, max_abs_diff=diffs, size_bytes=len(data))


def compare_onnx_torch(onnx_model: bytes | str, module, images: torch.Tensor) -> dict[str, float]:
    """Max abs difference of ONNX Runtime vs torch outputs on `images` (queries matched by position)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(onnx_model, so, providers=["CPUExecutionProvider"])
    got = sess.run(["boxes", "logits"], {"images": images.numpy()})
    with torch.no_grad():
        ref = [t.numpy() for t in module(images)]
    out = {}
    for name, a, b in zip(("boxes", "logits"), got, ref):
        if a.shape != b.shape:
            raise EdgedetError(f"ONNX output {name} has shape {a.shape}, torch {b.shape}")
        out[name] = float(np.abs(a - b).max())
    return out
