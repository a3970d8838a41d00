"""Write the Python runtime next to each artifact: the package ARTIFACT/runtime/python/edgedet_runtime, made of
edgedet's own files copied verbatim (detector.py as __init__.py, core.py, runners.py, templates/python/main.py as
__main__.py). Nothing is generated: the runtime reads the artifact's constants from artifact.json at run time."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..checkpoint import atomic_write

HERE = Path(__file__).resolve().parent
PACKAGE = {"__init__.py": HERE / "detector.py", "core.py": HERE / "core.py", "runners.py": HERE / "runners.py",
           "__main__.py": HERE / "templates" / "python" / "main.py"}


def render_python(artifact) -> Path:
    """Write DIR/runtime/python/edgedet_runtime/ (replacing an earlier one); `python -m edgedet_runtime IMAGE` in
    DIR/runtime/python prints detections. Returns the package folder."""
    out = artifact.dir / "runtime" / "python" / "edgedet_runtime"
    if out.is_dir():
        shutil.rmtree(out)
    for name, src in PACKAGE.items():
        data = src.read_bytes()
        atomic_write(out / name, lambda tmp, data=data: tmp.write_bytes(data))
    return out


def import_python_runtime(artifact_dir: Path):
    """Import ARTIFACT/runtime/python/edgedet_runtime as a module of its own (a unique name per folder, so several
    artifacts' runtimes can be compared in one process: tests, benchmarks)."""
    import hashlib
    import importlib.util
    import sys

    pkg = Path(artifact_dir).resolve() / "runtime" / "python" / "edgedet_runtime"
    name = "edgedet_runtime_" + hashlib.sha256(str(pkg).encode()).hexdigest()[:12]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, pkg / "__init__.py", submodule_search_locations=[str(pkg)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]
