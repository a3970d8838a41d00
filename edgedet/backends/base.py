"""The backend interface: compile(onnx, precision, calibration) -> Artifact; load(artifact) -> Runner.

An Artifact is a folder with the model file(s) and artifact.json (backend, precision, files with sha256, subnet,
input resolution, class names, runtime version, compile options). A Runner's infer(images float32 [B,3,R,R] RGB in
[0,1]) returns (boxes [B,Q,4] normalised cxcywh, logits [B,Q,C]) as numpy.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..checkpoint import atomic_write
from ..errors import EdgedetError

ARTIFACT_JSON = "artifact.json"


class Unsupported(EdgedetError):
    """A backend cannot do what was asked (a precision, an op, a missing runtime on a device). The search records
    `unsupported: <reason>` for that candidate and goes on."""

    def __init__(self, reason: str):
        super().__init__(f"unsupported: {reason}")
        self.reason = reason


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Artifact:
    dir: Path
    backend: str
    precision: str
    model_file: str  # relative to dir
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    metadata: dict = field(default_factory=dict)  # subnet, resolution, class_names, runtime_version, options...

    @property
    def model_path(self) -> Path:
        return self.dir / self.model_file

    @property
    def resolution(self) -> int:
        return int(self.metadata["resolution"])

    def seal(self) -> "Artifact":
        """Hash every file of the artifact and write artifact.json atomically."""
        self.files = {str(p.relative_to(self.dir)): sha256(p) for p in sorted(self.dir.rglob("*"))
                      if p.is_file() and p.name != ARTIFACT_JSON and "__pycache__" not in p.parts}
        d = asdict(self)
        d.pop("dir")
        atomic_write(self.dir / ARTIFACT_JSON, lambda tmp: tmp.write_text(json.dumps(d, indent=1, sort_keys=True)))
        return self

    def verify(self) -> list[str]:
        """Files whose sha256 no longer matches (empty when intact)."""
        return [f for f, h in self.files.items() if not (self.dir / f).is_file() or sha256(self.dir / f) != h]

    @classmethod
    def open(cls, folder: Path) -> "Artifact":
        from ..errors import ConfigError

        p = Path(folder) / ARTIFACT_JSON
        if not p.is_file():
            raise ConfigError(f"{folder}: not an artifact folder (no {ARTIFACT_JSON}); make one with edgedet compile")
        try:
            d = json.loads(p.read_text())
            return cls(dir=Path(folder), **d)
        except (json.JSONDecodeError, TypeError) as e:
            raise ConfigError(f"{p}: invalid artifact description ({e})") from None


class Runner:
    """Loaded model. Subclasses implement infer and info."""

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def info(self) -> dict:
        """runtime name/version and the precision actually in effect."""
        raise NotImplementedError


CalibrationData = Callable[[int], Iterable[np.ndarray]]  # resolution -> batches float32 [1,3,R,R]


class Backend:
    name: str = ""

    @property
    def caps(self):
        """This backend's Capabilities (backends/capabilities.py)."""
        from .capabilities import capabilities

        return capabilities(self.name)

    @property
    def precisions(self) -> tuple[str, ...]:
        return self.caps.precisions

    @property
    def extra(self) -> str:
        """pip extra that installs the runtime."""
        return self.caps.extra

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise Unsupported(f"{self.name} has no {precision} (it has {', '.join(self.precisions)})")

    def available(self) -> str | None:
        """None when the runtime can be used here, else the reason."""
        return None

    def compile(self, onnx_path: Path, precision: str, out_dir: Path, calibration: CalibrationData | None,
                options: dict, metadata: dict) -> Artifact:
        raise NotImplementedError

    def load(self, artifact: Artifact, options: dict) -> Runner:
        raise NotImplementedError
