"""Typed configuration: supernet architecture, subnet ids, and YAML loading with field-level errors.

Only small build functions read these objects; modules take plain constructor arguments.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from .errors import ConfigError, SubnetError

Level = Literal["P3", "P4", "P5"]
LEVEL_SCALE = {"P3": 2.0, "P4": 1.0, "P5": 0.5}  # size of the level relative to the ViT token grid


def level_grid(grid: int, level: str) -> int:
    """Side of a projector level's map for a ViT token grid side `grid` (P5: stride-2 3x3 conv, padding 1)."""
    return {"P3": 2 * grid, "P4": grid, "P5": (grid + 1) // 2}[level]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Limits of a SupernetConfig: a checkpoint's config is untrusted (its JSON comes from the file), so every size is
# bounded before anything is built; load_supernet then checks the file's tensor shapes against the config on the meta
# device before allocating. Bounds leave room for ViT-g-sized models, LVIS-sized heads and 4K inputs.
LIMITS = dict(embed_dim=8192, depth=64, num_heads=128, patch_size=64, pos_grid=512, hidden_dim=8192,
              projector_blocks=16, dec_layers=32, sa_heads=128, ca_heads=128, n_points=32, ffn_dim=65536,
              num_queries=10000, num_classes=100000, fdr_bins=256, max_resolution=8192, windows=64,
              list_len=256, name_len=1000, params=4_000_000_000)
_L = LIMITS
ClassName = Annotated[str, StringConstraints(max_length=_L["name_len"])]
CategoryId = Annotated[int, Field(ge=0, le=2**31 - 1)]
_Pos = Annotated[int, Field(gt=0)]


class SupernetConfig(_Strict):
    """Architecture of a weight-sharing supernet plus the knob values it was trained for.

    Backbone: DINOv2-layout ViT with native patch size `patch_size`, a learned `pos_grid` x `pos_grid` position grid,
    `global_blocks` (0-based) attending across windows, and feature `taps` (1-based: tap k = output of block k).
    Labels: logit i is `class_names[i]`; `category_ids[i]` is the dataset category id it was trained on (edgedet
    training records the training set's ids, an RF-DETR COCO head its COCO ids); evaluation maps labels onto a
    dataset by these ids, or by name where they are absent (edgedet.data.coco.label_map). Every field is bounded
    (LIMITS), so a hostile config fails validation before anything is allocated.
    """

    name: str = Field("custom", max_length=200)
    # ViT backbone
    embed_dim: int = Field(gt=0, le=_L["embed_dim"])
    depth: int = Field(gt=0, le=_L["depth"])
    num_heads: int = Field(gt=0, le=_L["num_heads"])
    mlp_ratio: float = Field(4.0, gt=0, le=16, allow_inf_nan=False)
    patch_size: int = Field(gt=0, le=_L["patch_size"])
    pos_grid: int = Field(gt=0, le=_L["pos_grid"])
    global_blocks: list[int] = Field(max_length=_L["depth"])
    taps: list[int] = Field(max_length=_L["depth"])
    pos_antialias: bool = True
    # projector
    levels: list[Level] = Field(["P4"], min_length=1, max_length=3)
    hidden_dim: int = Field(gt=0, le=_L["hidden_dim"])
    projector_blocks: int = Field(3, ge=0, le=_L["projector_blocks"])
    # decoder
    dec_layers: int = Field(ge=0, le=_L["dec_layers"])
    sa_heads: int = Field(8, gt=0, le=_L["sa_heads"])
    ca_heads: int = Field(16, gt=0, le=_L["ca_heads"])
    n_points: int = Field(2, gt=0, le=_L["n_points"])
    ffn_dim: int = Field(2048, gt=0, le=_L["ffn_dim"])
    num_queries: int = Field(gt=0, le=_L["num_queries"])
    num_classes: int = Field(gt=0, le=_L["num_classes"])
    class_names: list[ClassName] | None = Field(None, max_length=_L["num_classes"])
    category_ids: list[CategoryId] | None = Field(None, max_length=_L["num_classes"])
    # D-FINE fine-grained distribution refinement: decoder layers predict a distribution over N+1 offsets per box
    # edge (W(n) with up = a, reg_scale = c) refined onto the detached box of the first decoder layer
    fdr: bool = False
    fdr_bins: int = Field(32, ge=4, le=_L["fdr_bins"])
    fdr_reg_scale: float = Field(4.0, gt=0, le=1000, allow_inf_nan=False)
    fdr_up: float = Field(0.5, gt=0, le=100, allow_inf_nan=False)
    # knob values the supernet was trained for (the search space it supports)
    patch_sizes: list[Annotated[int, Field(gt=0, le=_L["patch_size"])]] = Field(min_length=1, max_length=16)
    windows: list[Annotated[int, Field(gt=0, le=_L["windows"])]] = Field(min_length=1, max_length=16)
    resolutions: list[Annotated[int, Field(gt=0, le=_L["max_resolution"])]] = Field(min_length=1,
                                                                                    max_length=_L["list_len"])
    query_counts: list[_Pos] = Field(min_length=1, max_length=_L["list_len"])
    max_resolution: int = Field(1280, gt=0, le=_L["max_resolution"])

    @model_validator(mode="after")
    def _check(self) -> "SupernetConfig":
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.hidden_dim % self.sa_heads or self.hidden_dim % self.ca_heads:
            raise ValueError("hidden_dim must be divisible by sa_heads and ca_heads")
        if not self.taps or any(not 1 <= t <= self.depth for t in self.taps) or self.taps != sorted(set(self.taps)):
            raise ValueError(f"taps must be increasing block numbers in 1..{self.depth}, got {self.taps}")
        if any(q > self.num_queries for q in self.query_counts):
            raise ValueError(f"query_counts {self.query_counts} exceed num_queries {self.num_queries}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class_names for num_classes {self.num_classes}")
        if self.category_ids is not None and len(self.category_ids) != self.num_classes:
            raise ValueError(f"{len(self.category_ids)} category_ids for num_classes {self.num_classes}")
        if any(not 0 <= b < self.depth for b in self.global_blocks) or len(set(self.global_blocks)) < len(
                self.global_blocks):
            raise ValueError(f"global_blocks must be distinct blocks in 0..{self.depth - 1}, got {self.global_blocks}")
        if len(set(self.levels)) < len(self.levels):
            raise ValueError(f"levels must be distinct, got {self.levels}")
        if self.param_estimate() > LIMITS["params"]:
            raise ValueError(f"about {self.param_estimate() / 1e9:.1f}G parameters, over the limit of "
                             f"{LIMITS['params'] / 1e9:.0f}G")
        if self.fdr_bins % 2:
            raise ValueError(f"fdr_bins must be even (W(n) is symmetric around 0), got {self.fdr_bins}")
        return self

    def param_estimate(self) -> int:
        """Parameters of the supernet (query group 0), roughly (within about 20%): enough to refuse absurd configs."""
        e, c, n = self.embed_dim, self.hidden_dim, len(self.levels)
        vit = self.depth * int((4 + 2 * self.mlp_ratio) * e * e) + (1 + self.pos_grid ** 2) * e \
            + 3 * e * self.patch_size ** 2
        projector = len(self.taps) * e * c * n + n * (self.projector_blocks + 2) * 9 * c * c
        layer = 4 * c * c + 2 * c * self.ffn_dim + c * self.ca_heads * n * self.n_points * 3 + 2 * c * c
        heads = 2 * c * (self.num_classes + 2 * c) + self.num_queries * (c + 4)
        return vit + projector + self.dec_layers * layer + heads

    @property
    def dec_depths(self) -> list[int]:
        return list(range(self.dec_layers + 1))

    def subnet_ok(self, s: "SubnetConfig") -> list[str]:
        """Problems of `s` against this supernet, each naming the knob and the valid values ([] if valid)."""
        out = []
        if s.patch not in self.patch_sizes:
            out.append(f"patch size {s.patch} not in trained values {self.patch_sizes}")
        if s.windows not in self.windows:
            out.append(f"windows {s.windows} not in trained values {self.windows}")
        if not 0 <= s.dec_layers <= self.dec_layers:
            out.append(f"decoder layers {s.dec_layers} not in 0..{self.dec_layers}")
        if not 1 <= s.queries <= self.num_queries:
            out.append(f"queries {s.queries} not in 1..{self.num_queries}")
        mem = sum(level_grid(s.resolution // s.patch, lv) ** 2 for lv in self.levels)
        if s.queries > mem:
            out.append(f"queries {s.queries} exceed the {mem} memory positions of this resolution and patch size")
        step = s.patch * s.windows
        if s.resolution % step or not step <= s.resolution <= self.max_resolution:
            lo = [r for r in range(step, self.max_resolution + 1, step) if r >= min(self.resolutions) - 2 * step]
            out.append(
                f"resolution {s.resolution} must be a multiple of patch x windows = {step} up to {self.max_resolution}"
                f" (e.g. {', '.join(map(str, lo[:6]))}, ...)"
            )
        return out

    def smallest(self) -> "SubnetConfig":
        p = max(self.patch_sizes)
        w = max(self.windows)
        res = min(r for r in self.resolutions if r % (p * w) == 0) if any(
            r % (p * w) == 0 for r in self.resolutions) else p * w
        return SubnetConfig(patch=p, resolution=res, windows=w, dec_layers=0, queries=min(self.query_counts))

    def largest(self) -> "SubnetConfig":
        p = min(self.patch_sizes)
        w = min(self.windows)
        res = max(r for r in self.resolutions if r % (p * w) == 0)
        return SubnetConfig(patch=p, resolution=res, windows=w, dec_layers=self.dec_layers, queries=self.num_queries)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=1, sort_keys=True)


_KNOBS = {"p": "patch", "r": "resolution", "w": "windows", "d": "dec_layers", "q": "queries"}
_ID_RE = re.compile(r"^([a-z]+)(\d+)$")


class SubnetConfig(_Strict):
    """One sub-network of a supernet: `p16-r384-w2-d3-q100` (patch, resolution, windows, decoder layers, queries)."""

    patch: int = Field(gt=0)
    resolution: int = Field(gt=0)
    windows: int = Field(gt=0)
    dec_layers: int = Field(ge=0)
    queries: int = Field(gt=0)

    @property
    def id(self) -> str:
        return f"p{self.patch}-r{self.resolution}-w{self.windows}-d{self.dec_layers}-q{self.queries}"

    def __str__(self) -> str:
        return self.id

    @property
    def grid(self) -> int:
        return self.resolution // self.patch

    @classmethod
    def parse(cls, text: str, supernet: SupernetConfig | None = None) -> "SubnetConfig":
        """Parse an id; with `supernet`, also validate it. Raises SubnetError with one clear line."""
        vals: dict[str, int] = {}
        for tok in str(text).strip().split("-"):
            m = _ID_RE.match(tok)
            if not m:
                raise SubnetError(f"invalid subnet id {text!r}: token {tok!r} is not <knob><number>; "
                                  f"expected the form p16-r384-w2-d3-q100")
            k, v = m.group(1), int(m.group(2))
            if k not in _KNOBS:
                raise SubnetError(f"invalid subnet id {text!r}: unknown knob {k!r}; knobs are "
                                  + ", ".join(f"{a} ({b})" for a, b in _KNOBS.items()))
            if _KNOBS[k] in vals:
                raise SubnetError(f"invalid subnet id {text!r}: knob {k!r} given twice")
            vals[_KNOBS[k]] = v
        missing = [k for k, n in _KNOBS.items() if n not in vals]
        if missing:
            raise SubnetError(f"invalid subnet id {text!r}: missing knob(s) {', '.join(missing)}; "
                              f"expected the form p16-r384-w2-d3-q100")
        try:
            s = cls(**vals)
        except ValidationError as e:
            raise SubnetError(f"invalid subnet id {text!r}: {_first_error(e)}") from None
        if supernet is not None:
            s.check(supernet)
        return s

    def check(self, supernet: SupernetConfig) -> "SubnetConfig":
        problems = supernet.subnet_ok(self)
        if problems:
            raise SubnetError(f"subnet {self.id} does not fit supernet '{supernet.name}': " + "; ".join(problems))
        return self


def _first_error(e: ValidationError) -> str:
    """'field.path: message (got value)' of the first error; model-level errors carry their own field path."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()))
    msg = err["msg"].removeprefix("Value error, ")
    val = err.get("input")
    shown = "" if isinstance(val, (dict, list)) or err["type"] in ("missing", "value_error") else f" (got {val!r})"
    if err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "extra_forbidden":
        msg = "unknown field"
    return f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}"


M = TypeVar("M", bound=BaseModel)


def load_model(path: Path | str, model: type[M], data: Any = None) -> M:
    """Load a YAML/JSON file into `model`; errors name file, field and value in one line (ConfigError)."""
    path = Path(path)
    if data is None:
        if not path.is_file():
            raise ConfigError(f"{path}: file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not a text file (byte {e.object[e.start]:#04x} at offset {e.start} is not "
                              "UTF-8)") from None
        except (OSError, RecursionError) as e:
            raise ConfigError(f"{path}: cannot read ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_first_error(e)}") from None


# ---------------------------------------------------------------------------------------------------------------
# Presets. nano/small/medium carry the released RF-DETR dimensions (ViT-S/16 windowed DINOv2, 256 hidden, P4 only).

def _rfdetr(name: str, res: int, dec: int) -> SupernetConfig:
    step = 32
    return SupernetConfig(
        name=name, embed_dim=384, depth=12, num_heads=6, patch_size=16, pos_grid=res // 16,
        global_blocks=[3, 6, 9], taps=[3, 6, 9, 12], levels=["P4"], hidden_dim=256, projector_blocks=3,
        dec_layers=dec, sa_heads=8, ca_heads=16, n_points=2, ffn_dim=2048, num_queries=300, num_classes=91,
        patch_sizes=[16], windows=[1, 2, 4],
        resolutions=[(res // step + k) * step for k in range(-5, 6)], query_counts=[50, 100, 200, 300],
    )


PRESETS: dict[str, SupernetConfig] = {
    # Small enough to train and search on 2 CPU cores (tests, demo).
    "tiny": SupernetConfig(
        name="tiny", embed_dim=128, depth=6, num_heads=4, patch_size=16, pos_grid=24,
        global_blocks=[2, 4], taps=[2, 4, 6], levels=["P3", "P4"], hidden_dim=128, projector_blocks=1,
        dec_layers=3, sa_heads=4, ca_heads=8, n_points=2, ffn_dim=512, num_queries=100, num_classes=6,
        patch_sizes=[12, 16, 24], windows=[1, 2], resolutions=[192, 288, 384], query_counts=[25, 50, 100],
        max_resolution=768,
    ),
    "nano": _rfdetr("nano", 384, 2),
    "small": _rfdetr("small", 512, 3),
    "medium": _rfdetr("medium", 576, 4),
}


def preset(name: str) -> SupernetConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets are {', '.join(PRESETS)}")
    return PRESETS[name]


_KnobValues = Field(min_length=1, max_length=64)
MAX_SPACE = 100_000  # combinations of a search space at most (enumerated before anything else)


class SearchSpace(_Strict):
    """Values of each knob (search/*.yaml). Combinations that do not fit the supernet are skipped."""

    patch: list[Annotated[int, Field(gt=0, le=4096)]] = _KnobValues
    resolution: list[Annotated[int, Field(gt=0, le=16384)]] = _KnobValues
    windows: list[Annotated[int, Field(gt=0, le=1024)]] = _KnobValues
    dec_layers: list[Annotated[int, Field(ge=0, le=1024)]] = _KnobValues
    queries: list[Annotated[int, Field(gt=0, le=100_000)]] = _KnobValues

    @model_validator(mode="after")
    def _size(self) -> "SearchSpace":
        n = len(self.patch) * len(self.resolution) * len(self.windows) * len(self.dec_layers) * len(self.queries)
        if n > MAX_SPACE:
            raise ValueError(f"{n} combinations of knob values (at most {MAX_SPACE})")
        return self

    def subnets(self, cfg: SupernetConfig) -> list[SubnetConfig]:
        """Every valid combination, in a fixed order."""
        out = []
        for p in self.patch:
            for r in self.resolution:
                for w in self.windows:
                    for d in self.dec_layers:
                        for q in self.queries:
                            s = SubnetConfig(patch=p, resolution=r, windows=w, dec_layers=d, queries=q)
                            if not cfg.subnet_ok(s):
                                out.append(s)
        return out

    def check(self, cfg: SupernetConfig, where: str = "search space") -> list[SubnetConfig]:
        subs = self.subnets(cfg)
        if not subs:
            s = SubnetConfig(patch=self.patch[0], resolution=self.resolution[0], windows=self.windows[0],
                             dec_layers=self.dec_layers[0], queries=self.queries[0])
            raise ConfigError(f"{where}: no combination fits supernet '{cfg.name}' (e.g. {s.id}: "
                              + "; ".join(cfg.subnet_ok(s)) + ")")
        return subs

    @classmethod
    def of(cls, cfg: SupernetConfig) -> "SearchSpace":
        """The space a supernet was trained for."""
        return cls(patch=cfg.patch_sizes, resolution=cfg.resolutions, windows=cfg.windows,
                   dec_layers=cfg.dec_depths, queries=cfg.query_counts)


def load_space(path: Path | str | None, cfg: SupernetConfig) -> SearchSpace:
    space = SearchSpace.of(cfg) if path is None else load_model(path, SearchSpace)
    space.check(cfg, str(path or f"supernet '{cfg.name}' space"))
    return space


# ---------------------------------------------------------------------------------------------------------------
# Targets (targets/*.yaml) and calibration recipes (calibration/*.yaml)

Backend = Literal["onnxruntime", "openvino", "tflite", "tensorrt"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]


class SSHHost(_Strict):
    """One device reached over SSH (key auth only; the host key is checked against known_hosts)."""

    host: str
    port: int = Field(22, gt=0, lt=65536)
    user: str
    key: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    workdir: str = "edgedet-work"
    python: str = "python3"
    connect_timeout_s: float = Field(15.0, gt=0)
    command_timeout_s: float = Field(900.0, gt=0)


class LocalDevice(_Strict):
    type: Literal["local"] = "local"


class SSHDevice(_Strict):
    """A device, or a pool of identical devices, over SSH; `hosts` share one kind (measurements are split)."""

    type: Literal["ssh"]
    hosts: list[SSHHost] = Field(min_length=1)


class RuntimeOptions(_Strict):
    threads: int | None = Field(None, gt=0)
    pin_threads: bool = False
    openvino_device: str = "CPU"
    openvino_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"
    trt_workspace_mb: int = Field(2048, gt=0)
    trt_dla_core: int | None = None
    trt_version: int = 10
    trt_int8_mode: Literal["explicit", "implicit"] = "explicit"  # Q/DQ ONNX, or TensorRT 10's calibrator


class LatencyBudget(_Strict):
    budget_ms: float | None = Field(None, gt=0)
    percentile: Literal[50, 90, 99] = 90


class BenchmarkSettings(_Strict):
    warmup: int = Field(10, ge=0)
    runs: int = Field(100, gt=0)
    min_duration_s: float = Field(1.0, ge=0)
    cooldown_ms: float = Field(0.0, ge=0)
    batch: int = Field(1, gt=0)
    noise_threshold: float = Field(0.15, gt=0)  # flag when (p90 - p10) / p50 exceeds this
    # a noisy measurement (spread, throttling, or other processes busier than max_other_cores during the runs) is
    # measured again after repeat_cooldown_s, up to repeat_noisy more times, until one is stable
    max_other_cores: float = Field(0.5, gt=0)
    repeat_noisy: int = Field(2, ge=0, le=10)
    repeat_cooldown_s: float = Field(2.0, ge=0, le=600)


class TargetSpec(_Strict):
    name: str
    description: str = ""
    device: LocalDevice | SSHDevice = Field(default_factory=LocalDevice, discriminator="type")
    backend: Backend
    precisions: list[Precision] = Field(min_length=1)
    runtime: RuntimeOptions = Field(default_factory=RuntimeOptions)
    latency: LatencyBudget = Field(default_factory=LatencyBudget)
    benchmark: BenchmarkSettings = Field(default_factory=BenchmarkSettings)
    max_resolution: int | None = Field(None, gt=0)
    calibration: str | None = None  # recipe path, relative to the target file's folder's parent or absolute

    @model_validator(mode="after")
    def _check(self) -> "TargetSpec":
        from .backends.capabilities import capabilities

        ok = capabilities(self.backend).precisions
        for i, p in enumerate(self.precisions):
            if p not in ok:
                raise ValueError(f"precisions.{i}: backend {self.backend} has no {p} (it has {', '.join(ok)})")
        return self


class CalibrationRecipe(_Strict):
    """Which images calibrate INT8, shared by all backends; preprocessing is the runtime's (stretch to R x R,
    bilinear, RGB in [0,1])."""

    dataset: str = "demo"  # a COCO folder (Roboflow layout), or "demo" for the synthetic demo data
    split: str = "train"
    images: int = Field(64, gt=0)
    seed: int = 0
    preprocessing: Literal["stretch_bilinear"] = "stretch_bilinear"


# targets/, search/ and calibration/ shipped with edgedet (next to the package in a source checkout)
SHIPPED_DIR = Path(__file__).resolve().parent.parent


def resolve_target(value: Path | str) -> Path:
    """The target file for a command-line value: a path to a YAML file, or the bare name of a target
    (`local_cpu`, `jetson_orin.yaml`) looked up in ./targets, then in the targets shipped with edgedet, so the
    shipped targets work from any working directory. Raises ConfigError naming what was looked for."""
    p = Path(value)
    if p.is_file():
        return p
    if len(p.parts) == 1 and p.suffix in ("", ".yaml", ".yml"):
        name = p.stem if p.suffix else p.name
        where = [Path("targets"), SHIPPED_DIR / "targets"]
        for d in where:
            for ext in (".yaml", ".yml"):
                if (d / f"{name}{ext}").is_file():
                    return d / f"{name}{ext}"
        shipped = sorted(q.stem for q in (SHIPPED_DIR / "targets").glob("*.yaml"))
        raise ConfigError(f"{value}: no such target file, and no target named {name!r} in ./targets or the shipped "
                          f"targets ({', '.join(shipped) or 'none found'})")
    if p.is_dir():
        raise ConfigError(f"{value}: is a folder, not a target YAML file")
    raise ConfigError(f"{value}: file not found")


def load_target(path: Path | str) -> TargetSpec:
    """A target from a YAML file or a shipped target's name (see resolve_target)."""
    return load_model(resolve_target(path), TargetSpec)


def load_calibration(path: Path | str) -> CalibrationRecipe:
    return load_model(path, CalibrationRecipe)


MANIFEST_VERSION = 1


class MeasuredPoint(BaseModel):
    """One candidate measured on the target: latency at the target's percentile with its full record (conditions),
    AP of the compiled artifact (ap_source 'artifact') or of the torch subnet when the artifact's runtime is not
    available on this machine (ap_source 'torch')."""

    model_config = ConfigDict(extra="forbid")
    id: str  # p16-r384-w2-d3-q100@int8
    subnet: str
    precision: str
    status: str  # ok | unsupported: ... | error: ...
    latency_ms: float | None = None
    ap: dict[str, float] | None = None
    ap_source: str | None = None
    ap_torch: dict[str, float] | None = None
    gflops: float | None = None
    device: str = ""
    record: dict | None = None


class ManifestArtifact(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: str  # relative to the manifest's folder
    backend: str
    model_file: str
    files: dict[str, str]  # relative path -> sha256
    runtime: dict[str, str]  # python / cpp -> path relative to the manifest's folder, or 'unsupported: ...'


class FrontPoint(MeasuredPoint):
    artifact: ManifestArtifact


class Manifest(BaseModel):
    """runs/search/NAME/manifest.json: what was searched, on what, every measured point and the Pareto front."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["edgedet.manifest"] = "edgedet.manifest"
    version: int = MANIFEST_VERSION
    created: str
    target: dict  # name, file, the full TargetSpec, fingerprint
    device: dict  # device info captured where the measurements ran
    software: dict  # edgedet, torch, python, runtime name + version
    checkpoint: dict  # path, sha256, supernet name
    dataset: dict  # path, split, images, sha256
    space: dict
    search: dict  # strategy, budget, measured, candidates, rounds, stop reason, predictor stats, wall time
    objectives: dict  # ap metric, latency percentile, budget_ms
    points: list[MeasuredPoint]
    predicted: list[dict]  # candidates seen by the search but not measured: id, ap estimate, predicted latency
    front: list[FrontPoint]


def load_manifest(path: Path | str) -> Manifest:
    return load_model(path, Manifest)
