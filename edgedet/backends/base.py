"""The backend interface: compile(onnx, precision, calibration) -> Artifact; load(artifact) -> Runner.

An Artifact is a folder with the model file(s) and artifact.json (backend, precision, files with sha256, subnet,
input resolution, class names, runtime version, compile options, and the runtime options it was measured with). Every
backend runs artifacts through the one runner of its runtime (edgedet/runtime/runners.py, also shipped to devices and
into every artifact's Python runtime): infer(images float32 [B,3,R,R] RGB in [0,1]) -> (boxes [B,Q,4] normalised
cxcywh, logits [B,Q,C]) as numpy; info() -> runtime, version, precision and the settings in effect.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..checkpoint import atomic_write
from ..errors import ConfigError, EdgedetError
from ..runtime import runners
from ..runtime.runners import Runner  # noqa: F401  (the runner interface, re-exported for the backends)

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
    runtime_options: dict = field(default_factory=dict)  # what it was measured with and every runtime applies

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
        text = json.dumps(self.describe(), indent=1, sort_keys=True)
        atomic_write(self.dir / ARTIFACT_JSON, lambda tmp: tmp.write_text(text))
        return self

    def describe(self) -> dict:
        """artifact.json's content."""
        d = asdict(self)
        d.pop("dir")
        return d

    def verify(self) -> list[str]:
        """Files whose sha256 no longer matches (empty when intact)."""
        return [f for f, h in self.files.items() if not (self.dir / f).is_file() or sha256(self.dir / f) != h]

    @classmethod
    def open(cls, folder: Path) -> "Artifact":
        """Read and validate folder/artifact.json (runners.read_artifact: fields, types, every path relative and
        confined to the folder, the model among the sha256-checked files); ConfigError names the file and field."""
        try:
            d = runners.read_artifact(str(folder))
        except runners.ArtifactError as e:
            raise ConfigError(str(e)) from None
        art = cls(dir=Path(folder), **d)
        from . import get_backend

        get_backend(art.backend).check_artifact(art)
        return art


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

    def check_artifact(self, artifact: Artifact) -> None:
        """Backend-specific checks of an opened artifact before anything of it runs (ConfigError); default none."""

    def compile(self, onnx_path: Path, precision: str, out_dir: Path, calibration: CalibrationData | None,
                options: dict, metadata: dict) -> Artifact:
        raise NotImplementedError

    def load(self, artifact: Artifact, options: dict | None = None) -> Runner:
        """The runtime's runner (runtime/runners.py) for the artifact; `options` (the target's runtime options)
        override those the artifact records. Unsupported when the runtime is missing or refuses the model."""
        try:
            return runners.load(str(artifact.dir), artifact.describe(), options)
        except runners.Unsupported as e:
            raise Unsupported(str(e)) from None
        except runners.ArtifactError as e:
            raise ConfigError(str(e)) from None
        except ValueError as e:  # runtime options out of range
            raise ConfigError(f"{artifact.dir}: runtime options: {e}") from None
