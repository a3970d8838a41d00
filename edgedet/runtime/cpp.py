"""The C++ runtime written next to each artifact: a CMake project (DIR/runtime/cpp) with the library
edgedet::Detector (include/edgedet/detector.hpp, src/detector.cpp: core.py's pre/post-processing in C++), the engine
of the artifact's backend (src/engine_<backend>.cpp) and an example (examples/main.cpp). Its constants are written
into include/edgedet/config.hpp from detector.runtime_config() (artifact.json: the same source the Python runtime reads
at run time) and the runner module's settings for the recorded runtime options (runners.RUNNERS[backend].settings):
numbers formatted by Python, names and paths as C++ string literals in which every byte outside printable ASCII, and
every quote, backslash and question mark, is an octal escape (with its length, so NUL bytes survive). The other
templates only receive values from fixed sets (backend, precision, a validated subnet id, the SDK table below)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..checkpoint import atomic_write
from ..errors import ConfigError, EdgedetError, ToolchainError
from . import runners
from .detector import runtime_config
from .render import HERE

TEMPLATES = HERE / "templates" / "cpp"
STATIC = ("include/edgedet/detector.hpp", "include/edgedet/preprocess.h", "src/detector.cpp", "src/preprocess.cpp",
          "src/engine.hpp", "examples/main.cpp")
LOG = "edgedet-build.log"


def cpp_string(s: str) -> str:
    """A C++ string literal for `s` (UTF-8, lone surrogates kept as their 3-byte form); quotes, backslashes, question
    marks (trigraphs) and every byte outside printable ASCII are octal escapes, so no value can end the literal."""
    out = []
    for b in s.encode("utf-8", "surrogatepass"):
        out.append(chr(b) if 0x20 <= b < 0x7F and chr(b) not in '"\\?' else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def cpp_string_view(s: str) -> str:
    """A constexpr std::string_view of `s` with its byte length (embedded NUL bytes included)."""
    return f"std::string_view({cpp_string(s)}, {len(s.encode('utf-8', 'surrogatepass'))})"


def cpp_float(x: float) -> str:
    s = repr(float(x))
    return (s if any(c in s for c in ".e") else s + ".0") + "f"


def fill(text: str, values: dict[str, str]) -> str:
    """Replace the template's @NAME@ placeholders (each must have a value; inserted values are not scanned again)."""
    missing = sorted(set(re.findall(r"@([A-Z_]+)@", text)) - set(values))
    if missing:
        raise EdgedetError(f"C++ template placeholders without a value: {', '.join(missing)}")
    return re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], text)


@dataclass(frozen=True)
class CppEngine:
    """What the C++ project of one backend needs: the model file its engine loads (None: the artifact's model_file),
    a hint for 'model not found', the CMake configure hint printed in README/CMakeLists, and the SDK lookup."""

    model_file: str | None
    model_hint: str
    configure_hint: str
    sdk: Callable[[], tuple[list[str], str | None]]


def unsupported_reason(backend: str) -> str | None:
    if backend in ENGINES:
        return None
    return f"unsupported: no C++ runtime for {backend} (C++ runtimes: {', '.join(ENGINES)})"


def render_cpp(artifact) -> Path:
    """Write DIR/runtime/cpp (CMakeLists.txt, include/, src/, examples/, README.md) for the artifact's backend,
    replacing any earlier project there (and its build folder); returns that folder. Raises Unsupported for a
    backend without a C++ engine (LiteRT)."""
    out = artifact.dir / "runtime" / "cpp"
    files = project_files(artifact)
    if out.is_dir():  # the project is generated whole: no stale engine or build of an earlier model survives
        shutil.rmtree(out)
    for rel, text in files.items():
        atomic_write(out / rel, lambda tmp, text=text: tmp.write_text(text))
    return out


def project_files(artifact) -> dict[str, str]:
    """{relative path: text} of the C++ project for `artifact` (deterministic: the same artifact.json gives the same
    files)."""
    from ..backends.base import Unsupported

    reason = unsupported_reason(artifact.backend)
    if reason:
        raise Unsupported(reason.removeprefix("unsupported: "))
    eng = ENGINES[artifact.backend]
    cfg = runtime_config(artifact.describe())
    model_file = eng.model_file or cfg["model_file"]
    opts = cfg["runtime_options"]
    ov = runners.OVRunner.settings(artifact.precision, runners.runtime_options("openvino", opts))
    ort = runners.OrtRunner.settings(artifact.precision, opts)
    names, ids = cfg["class_names"], cfg["category_ids"]
    values = {
        "SUBNET": cpp_string(cfg["subnet"]), "BACKEND": cpp_string(cfg["backend"]),
        "PRECISION": cpp_string(cfg["precision"]), "MODEL_FILE": cpp_string(model_file),
        "MODEL_HINT": cpp_string(eng.model_hint), "RESOLUTION": str(cfg["resolution"]),
        "NUM_QUERIES": str(cfg["num_queries"]), "NUM_CLASSES": str(cfg["num_classes"]),
        "THRESHOLD": cpp_float(cfg["threshold"]), "TOPK": str(cfg["topk"]),
        "THREADS": str(int(opts.get("threads") or 0)),
        "OPENVINO_DEVICE": cpp_string(ov["device"]), "OPENVINO_HINT": cpp_string(ov["config"]["PERFORMANCE_HINT"]),
        "INFERENCE_PRECISION_HINT": cpp_string(ov["config"]["INFERENCE_PRECISION_HINT"]),
        "NUM_STREAMS": str(int(ov["config"]["NUM_STREAMS"])),
        "CPU_PINNING": "true" if ov["config"].get("ENABLE_CPU_PINNING") else "false",
        "INTER_OP_THREADS": str(int(ort["inter_op_num_threads"])),
        "NUM_CLASS_NAMES": str(len(names)), "CLASS_NAMES": ", ".join(map(cpp_string_view, names)) or "{}",
        "HAS_CATEGORY_IDS": "true" if ids is not None else "false",
        "CATEGORY_IDS": ", ".join(str(int(i)) for i in ids) if ids else "0",
    }
    plain = {"SUBNET": cfg["subnet"], "BACKEND": artifact.backend, "PRECISION": artifact.precision,
             "CONFIGURE_HINT": eng.configure_hint, "RESOLUTION": str(cfg["resolution"])}
    files = {p: (TEMPLATES / p).read_text() for p in STATIC}
    files[f"src/engine_{artifact.backend}.cpp"] = (TEMPLATES / "src" / f"engine_{artifact.backend}.cpp").read_text()
    files["include/edgedet/config.hpp"] = fill((TEMPLATES / "include/edgedet/config.hpp.tmpl").read_text(), values)
    backend_cmake = (TEMPLATES / "cmake" / f"{artifact.backend}.cmake").read_text()
    files["CMakeLists.txt"] = fill((TEMPLATES / "CMakeLists.txt.tmpl").read_text(),
                                   dict(plain, BACKEND_CMAKE=backend_cmake))
    files["README.md"] = fill((TEMPLATES / "README.md.tmpl").read_text(), plain)
    return files


# ------------------------------------------------------------------------------------------------------ building
def project_dir(path: Path) -> Path:
    """The C++ project of an artifact folder (DIR/runtime/cpp) or the project folder itself."""
    path = Path(path)
    for cand in (path / "runtime" / "cpp", path):
        if (cand / "CMakeLists.txt").is_file() and (cand / "include" / "edgedet" / "config.hpp").is_file():
            return cand
    raise ConfigError(f"{path}: no edgedet C++ project (runtime/cpp/CMakeLists.txt); write one with "
                      f"edgedet compile ... --runtime cpp")


def checked_project(path: Path):
    """(project folder, its Artifact) after checking that every file of the project is exactly what this edgedet
    renders for the artifact's artifact.json (validated): CMake runs a project's code at configure time, so a
    project from elsewhere (or edited) is refused rather than built. ConfigError names the first file that differs."""
    from ..backends.base import Artifact

    project = project_dir(path)
    art = Artifact.open(project.parent.parent)
    if (art.dir / "runtime" / "cpp").resolve() != project.resolve():
        raise ConfigError(f"{project}: not the runtime/cpp project of an artifact folder")
    for rel, text in project_files(art).items():
        p = project / rel
        if p.is_symlink() or not p.is_file() or p.read_bytes() != text.encode():
            raise ConfigError(f"{p}: not what edgedet renders for {art.dir}/artifact.json (edited, or written by "
                              "another edgedet version); write the project again: edgedet compile ... --runtime cpp")
    return project, art


def _find(name: str, dirs) -> Path | None:
    return next((Path(d) / name for d in dirs if d and (Path(d) / name).is_file()), None)


def _compiler() -> str | None:
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx.split()[0]) and cxx
    return next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)


def _openvino_sdk() -> tuple[list[str], str | None]:
    try:
        from openvino.utils import get_cmake_path

        path = get_cmake_path()
        if path and (Path(path) / "OpenVINOConfig.cmake").is_file():
            return [f"-DOpenVINO_DIR={path}"], None
    except ImportError:
        pass
    env = os.environ.get("OpenVINO_DIR")
    if env and (Path(env) / "OpenVINOConfig.cmake").is_file():
        return [f"-DOpenVINO_DIR={env}"], None
    return [], ("the OpenVINO SDK (OpenVINOConfig.cmake): pip install openvino (its wheel ships the C++ headers "
                "and CMake config) or set OpenVINO_DIR")


def _onnxruntime_sdk() -> tuple[list[str], str | None]:
    root = os.environ.get("ONNXRUNTIME_ROOT")
    inc = [f"{root}/include", f"{root}/include/onnxruntime"] if root else []
    inc += ["/usr/include", "/usr/local/include", "/usr/include/onnxruntime", "/usr/local/include/onnxruntime",
            "/usr/include/onnxruntime/core/session", "/usr/local/include/onnxruntime/core/session"]
    lib = ([f"{root}/lib"] if root else []) + ["/usr/lib", "/usr/local/lib", "/usr/lib/x86_64-linux-gnu",
                                               "/usr/lib/aarch64-linux-gnu"]
    if _find("onnxruntime_cxx_api.h", inc) is None or _find("libonnxruntime.so", lib) is None:
        return [], ("the ONNX Runtime C/C++ SDK (onnxruntime_cxx_api.h and libonnxruntime.so; the Python wheel "
                    "has no headers): unpack an onnxruntime release and set ONNXRUNTIME_ROOT")
    return ([f"-DONNXRUNTIME_ROOT={root}"] if root else []), None


def _tensorrt_sdk() -> tuple[list[str], str | None]:
    root = os.environ.get("TENSORRT_ROOT")
    inc = ([f"{root}/include"] if root else []) + ["/usr/include", "/usr/include/x86_64-linux-gnu",
                                                   "/usr/include/aarch64-linux-gnu", "/usr/local/tensorrt/include"]
    cuda = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"]
    missing = []
    if _find("NvInfer.h", inc) is None:
        missing.append("TensorRT headers (NvInfer.h: JetPack installs them; elsewhere set TENSORRT_ROOT)")
    if _find("cuda_runtime_api.h", [f"{c}/include" for c in cuda if c] + ["/usr/include"]) is None:
        missing.append("the CUDA toolkit (cuda_runtime_api.h: set CUDA_HOME)")
    if missing:
        return [], "; ".join(missing)
    return ([f"-DTENSORRT_ROOT={root}"] if root else []), None


ENGINES: dict[str, CppEngine] = {
    "openvino": CppEngine(None, " (is this the artifact folder edgedet compile wrote?)",
                          '-DOpenVINO_DIR=$(python3 -c "import openvino.utils as u; print(u.get_cmake_path())")',
                          _openvino_sdk),
    "onnxruntime": CppEngine(None, " (is this the artifact folder edgedet compile wrote?)",
                             "-DONNXRUNTIME_ROOT=/path/to/onnxruntime-sdk", _onnxruntime_sdk),
    "tensorrt": CppEngine("model.engine", " (TensorRT engines are built on the device: cd ARTIFACT && python3 "
                          "build_engine.py)", "(on the device; -DTENSORRT_ROOT=... if TensorRT is not in /usr)",
                          _tensorrt_sdk),
}
BACKENDS = tuple(ENGINES)


def sdk_defines(backend: str) -> tuple[list[str], str | None]:
    """(CMake -D arguments that locate the backend's SDK, None) or ([], what is missing and how to get it)."""
    if backend not in ENGINES:
        raise ConfigError(f"no C++ runtime for backend {backend!r}")
    return ENGINES[backend].sdk()


def missing_tools(backend: str, preprocess_only: bool = False) -> list[str]:
    """What is missing to build a C++ project for `backend` here (empty when everything is present); with
    preprocess_only, for libedgedet_preprocess alone (no backend SDK)."""
    missing = []
    if shutil.which("cmake") is None:
        missing.append("cmake (apt-get install cmake, or pip install cmake)")
    if _compiler() is None:
        missing.append("a C++17 compiler (apt-get install g++)")
    sdk = None if preprocess_only else sdk_defines(backend)[1]
    if sdk:
        missing.append(sdk)
    return missing


def _run(cmd: list[str], log: Path, step: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n{p.stdout}{p.stderr}\n")
    if p.returncode != 0:
        lines = (p.stderr + p.stdout).splitlines()
        first = next((x.strip() for x in lines if "error" in x.lower()), lines[-1].strip() if lines else "")
        raise ToolchainError(f"C++ {step} failed (exit {p.returncode}): {first[:300]}; full log: {log}")


def build_cpp(path: Path, build_dir: Path | None = None, jobs: int | None = None,
              build_type: str = "Release", preprocess_only: bool = False) -> Path:
    """Configure and build the C++ project of an artifact (or a project folder) with CMake: the library
    edgedet_detector, the example edgedet_example and the shared library edgedet_preprocess (preprocess_only: that
    one alone, no backend SDK needed). Returns the build folder (default PROJECT/build). Raises
    ToolchainError naming what is missing (cmake, a compiler, the backend's SDK) or the first error of a failed
    build (the whole output is in BUILD/edgedet-build.log); ConfigError for a project that is not exactly what
    edgedet renders for its artifact (checked_project)."""
    project, art = checked_project(path)
    backend = art.backend
    missing = missing_tools(backend, preprocess_only)
    if missing:
        raise ToolchainError(f"cannot build the {backend} C++ runtime in {project}: missing " + "; ".join(missing))
    build = Path(build_dir) if build_dir else project / "build"
    build.mkdir(parents=True, exist_ok=True)
    log = build / LOG
    log.write_text("")
    defines = ["-DEDGEDET_PREPROCESS_ONLY=ON"] if preprocess_only else sdk_defines(backend)[0]
    _run(["cmake", "-S", str(project), "-B", str(build), f"-DCMAKE_BUILD_TYPE={build_type}", *defines], log,
         "configure")
    jobs = jobs or min(4, os.cpu_count() or 1)
    _run(["cmake", "--build", str(build), "--parallel", str(jobs)], log, "build")
    return build


def example_path(build: Path) -> Path:
    return Path(build) / "edgedet_example"


def preprocess_library_path(build: Path) -> Path:
    """libedgedet_preprocess in a build folder (.so; .dylib on macOS)."""
    build = Path(build)
    for name in ("libedgedet_preprocess.so", "libedgedet_preprocess.dylib"):
        if (build / name).is_file():
            return build / name
    return build / "libedgedet_preprocess.so"
