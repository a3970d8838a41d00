"""Render the runtime module written next to each artifact: core.py verbatim + a generated loader with the
artifact's constants (resolution, class names, thresholds) from one source, artifact.json."""
from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import atomic_write

HERE = Path(__file__).resolve().parent
DEFAULT_THRESHOLD, DEFAULT_TOPK = 0.3, 100


def runtime_config(artifact, model_relpath: str) -> dict:
    """The constants of the Python and C++ runtimes, from artifact.json (model_relpath: where the runtime finds the
    model file)."""
    from ..config import SubnetConfig

    m = artifact.metadata
    return {"subnet": m["subnet"], "backend": artifact.backend, "precision": artifact.precision,
            "resolution": int(m["resolution"]), "num_classes": int(m["num_classes"]),
            "num_queries": SubnetConfig.parse(m["subnet"]).queries,
            "class_names": m.get("class_names") or [], "threshold": DEFAULT_THRESHOLD, "topk": DEFAULT_TOPK,
            "model_relpath": model_relpath, "inference_precision_hint": m.get("inference_precision_hint", "f32")}


def render_python(artifact) -> Path:
    """Write DIR/runtime/python/edgedet_runtime.py; `python -m edgedet_runtime IMAGE` there prints detections."""
    out = artifact.dir / "runtime" / "python" / "edgedet_runtime.py"
    cfg = runtime_config(artifact, f"../../{artifact.model_file}")
    core = (HERE / "core.py").read_text()
    tmpl = (HERE / "templates" / "python" / "runner.py.tmpl").read_text()
    text = core + tmpl.format(config_json=json.dumps(cfg, indent=1))
    atomic_write(out, lambda tmp: tmp.write_text(text))
    return out
