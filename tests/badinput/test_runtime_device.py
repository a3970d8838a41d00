"""Bad inputs at the runtime / artifact boundary: hostile artifact folders (through `edgedet bench`, `edgedet runtime
build` and the shipped Python runtime), hostile and broken images (into the Python runtime and the C++ example),
`edgedet compile -o` onto folders it must not touch, and class names that try to become code in generated files.
The device side (agent replies over SSH) is in test_device_replies.py."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgedet.config import preset
from edgedet.deploy import compile_subnet

from .harness import HOSTILE_NAMES, Case, payload_py, payload_sh

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]
SUB = "p24-r192-w2-d1-q25"
ERR = r"^error: "


# ------------------------------------------------------------------------------------------------------ fixtures
def _target_yaml(path: Path, backend: str) -> Path:
    path.write_text(json.dumps({"name": f"bad_{backend}", "backend": backend, "precisions": ["fp32"],
                                "runtime": {"threads": 1}, "benchmark": {"warmup": 0, "runs": 2,
                                                                         "min_duration_s": 0}}))
    return path


@pytest.fixture(scope="session")
def arts(tmp_path_factory, tiny_net) -> dict:
    """A valid ONNX Runtime artifact (Python runtime), an OpenVINO one with an unbuilt C++ project, target files."""
    root = tmp_path_factory.mktemp("badinput_arts")
    ort_t = _target_yaml(root / "local.yaml", "onnxruntime")
    ov_t = _target_yaml(root / "ov.yaml", "openvino")
    ort = compile_subnet(tiny_net, SUB, ort_t, "fp32", root / "ort")
    ov = compile_subnet(tiny_net, SUB, ov_t, "fp32", root / "ov", runtime=("python", "cpp"))
    img = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    ppm = root / "img.ppm"
    ppm.write_bytes(b"P6\n50 40\n255\n" + img.tobytes())
    (root / "ort_home" / "tmp").mkdir(parents=True)
    return {"art": ort.dir, "ov_art": ov.dir, "local_target": ort_t, "ov_target": ov_t, "img": ppm, "py": PY,
            "ort_home": root / "ort_home"}


def hostile_net(marker: Path):
    """The tiny preset with harness.HOSTILE_NAMES as class names ({marker} filled in)."""
    import torch

    from edgedet.model.supernet import Supernet

    from ..conftest import randomize

    names = [n.replace("{marker}", str(marker)) for n in HOSTILE_NAMES]
    cfg = preset("tiny").model_copy(update={"num_classes": len(names), "class_names": names})
    torch.manual_seed(0)
    return randomize(Supernet(cfg)).eval(), names


@pytest.fixture(scope="session")
def hostile(tmp_path_factory) -> dict:
    """Artifacts of a supernet whose class names are HOSTILE_NAMES: ONNX Runtime (Python runtime) and OpenVINO
    (Python + C++, built once per session)."""
    root = tmp_path_factory.mktemp("hostile_names")
    marker = root / "marker"
    marker.mkdir()
    net, names = hostile_net(marker)
    ort = compile_subnet(net, SUB, _target_yaml(root / "local.yaml", "onnxruntime"), "fp32", root / "ort")
    ov = compile_subnet(net, SUB, _target_yaml(root / "ov.yaml", "openvino"), "fp32", root / "ov",
                        runtime=("python", "cpp"))
    return {"ort": ort, "ov": ov, "names": names, "marker": marker, "root": root}


@pytest.fixture(scope="session")
def cpp_example(hostile) -> Path:
    from edgedet.runtime.cpp import build_cpp, example_path, missing_tools

    missing = missing_tools("openvino")
    assert not missing, f"the OpenVINO C++ build needs {missing} (make test installs cmake and g++)"
    return example_path(build_cpp(hostile["ov"].dir, jobs=2))


def _ppm(rgb: np.ndarray) -> bytes:
    return b"P6\n%d %d\n255\n" % (rgb.shape[1], rgb.shape[0]) + rgb.tobytes()


def _run_python_runtime(art_dir: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(art_dir / "runtime" / "python"), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([PY, "-m", "edgedet_runtime", *map(str, args)], capture_output=True, cwd=cwd, env=env,
                          timeout=300)


# ------------------------------------------------------------------------------- class names that try to be code
@pytest.mark.slow
def test_hostile_class_names_print_back_exactly_from_the_python_runtime(hostile, tmp_path):
    img = (np.random.default_rng(1).random((60, 80, 3)) * 255).astype(np.uint8)
    (tmp_path / "a.ppm").write_bytes(_ppm(img))
    for art in (hostile["ort"], hostile["ov"]):
        p = _run_python_runtime(art.dir, tmp_path / "a.ppm", "--threshold", "0", "--topk", "100000", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        got = [json.loads(x) for x in p.stdout.decode().splitlines()]
        assert {g["label"] for g in got} == set(range(len(hostile["names"])))  # every class printed
        assert all(g["name"] == hostile["names"][g["label"]] for g in got)
    assert not os.listdir(hostile["marker"])


@pytest.mark.slow
def test_hostile_class_names_build_and_print_back_exactly_from_the_cpp_runtime(hostile, cpp_example, tmp_path):
    img = (np.random.default_rng(1).random((60, 80, 3)) * 255).astype(np.uint8)
    (tmp_path / "a.ppm").write_bytes(_ppm(img))
    p = subprocess.run([str(cpp_example), "--artifact", str(hostile["ov"].dir), "--threshold", "0", "--topk",
                        "100000", str(tmp_path / "a.ppm")], capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr
    got = [json.loads(x) for x in p.stdout.decode("utf-8", "surrogatepass").splitlines()]
    assert {g["label"] for g in got} == set(range(len(hostile["names"])))
    assert all(g["name"] == hostile["names"][g["label"]] for g in got)
    hpp = (hostile["ov"].dir / "runtime" / "cpp" / "include" / "edgedet" / "config.hpp").read_text()
    assert hpp.isascii()  # every byte outside printable ASCII (newlines, NUL, surrogates) is an escape
    for f in ("CMakeLists.txt", "README.md"):
        text = (hostile["ov"].dir / "runtime" / "cpp" / f).read_text()
        assert not any(n in text for n in hostile["names"] if len(n) > 3)
    assert not os.listdir(hostile["marker"])


def test_generated_python_runtime_holds_no_data(hostile):
    """The shipped Python runtime is edgedet's own files, byte for byte: the names live in artifact.json only."""
    from edgedet.runtime.render import PACKAGE

    pkg = hostile["ort"].dir / "runtime" / "python" / "edgedet_runtime"
    assert sorted(p.name for p in pkg.iterdir()) == sorted(PACKAGE)
    for name, src in PACKAGE.items():
        assert (pkg / name).read_bytes() == src.read_bytes()


# ------------------------------------------------------------------------------------------ hostile artifact folders
def _mutate(fn, source: str = "art"):
    """setup: copy the valid artifact into the sandbox as art/, then let fn(d, sandbox) change its artifact.json
    (in place, or by returning the raw text to write)."""

    def setup(sb: Path, subst: dict) -> None:
        shutil.copytree(subst[source], sb / "art")
        p = sb / "art" / "artifact.json"
        d = json.loads(p.read_text())
        raw = fn(d, sb)
        if raw is not None:
            p.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
        elif d is not None:
            p.write_text(json.dumps(d))
        (sb / "img.ppm").write_bytes((Path(subst["img"])).read_bytes())

    return setup


def _set(path: str, value):
    def fn(d, sb):
        keys = path.split(".")
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return fn


def _symlinked_model(d, sb):
    outside = sb / "outside.onnx"
    shutil.move(sb / "art" / "model.onnx", outside)
    (sb / "art" / "model.onnx").symlink_to(outside)


def _tampered_model(d, sb):
    (sb / "art" / "model.onnx").write_bytes(b"not an onnx model " + payload_py().encode())


ARTIFACT_MUTATIONS = [  # (id, mutation, what stderr names)
    ("backend-unknown", _set("backend", "nonsense"), r"backend must be one of"),
    ("backend-number", _set("backend", 123), r"backend must be one of"),
    ("backend-payload", _set("backend", payload_sh()), r"backend must be one of"),
    ("precision-unknown", _set("precision", "fp64"), r"precision must be one of"),
    ("model-file-dotdot", _set("model_file", "../../../../etc/passwd"), r"model_file must be a relative path"),
    ("model-file-absolute", _set("model_file", "/etc/passwd"), r"model_file must be a relative path"),
    ("model-file-not-sealed", lambda d, sb: d["files"].pop("model.onnx") and None, r"not among the sha256-checked"),
    ("model-file-newline", _set("model_file", "model.onnx\n# injected"), r"not a plain relative file name"),
    ("model-file-number", _set("model_file", 7), r"not a plain relative file name"),
    ("files-dotdot-key", lambda d, sb: d["files"].update({"../secret": "0" * 64}), r"files key must be a relative"),
    ("files-absolute-key", lambda d, sb: d["files"].update({"/etc/hostname": "0" * 64}), r"files key must be"),
    ("files-backslash-key", lambda d, sb: d["files"].update({"..\\..\\x": "0" * 64}), r"not a plain relative"),
    ("files-bad-hash", lambda d, sb: d["files"].update({"model.onnx": "zz"}), r"not a sha256 hex digest"),
    ("files-list", _set("files", ["model.onnx"]), r"files must be an object"),
    ("files-too-many", _set("files", {f"f{i}": "0" * 64 for i in range(10001)}), r"files must be an object"),
    ("subnet-short", _set("metadata.subnet", "p16-r384"), r"metadata.subnet is not a subnet id"),
    ("subnet-payload", _set("metadata.subnet", f'{SUB}"; {payload_sh()}'), r"metadata.subnet is not a subnet id"),
    ("resolution-mismatch", _set("metadata.resolution", 320), r"metadata.resolution must be the subnet's"),
    ("resolution-string", _set("metadata.resolution", "192"), r"metadata.resolution must be the subnet's"),
    ("classes-zero", _set("metadata.num_classes", 0), r"metadata.num_classes must be an integer"),
    ("classes-huge", _set("metadata.num_classes", 10**12), r"metadata.num_classes must be an integer"),
    ("class-names-length", _set("metadata.class_names", ["a", "b"]), r"metadata.class_names must be null or"),
    ("class-names-numbers", _set("metadata.class_names", list(range(6))), r"metadata.class_names must be null"),
    ("class-name-too-long", _set("metadata.class_names", ["x" * 5000] * 6), r"metadata.class_names must be null"),
    ("category-ids-length", _set("metadata.category_ids", [1, 2]), r"metadata.category_ids must be null or"),
    ("threads-negative", _set("runtime_options", {"threads": -1}), r"runtime_options threads must be null or"),
    ("threads-string", _set("runtime_options", {"threads": "2"}), r"runtime_options threads must be null or"),
    ("threads-huge", _set("runtime_options", {"threads": 10**9}), r"runtime_options threads must be null or"),
    ("unknown-field", _set("evil", payload_py()), r"is not an artifact.json field"),
    ("metadata-list", _set("metadata", []), r"metadata must be an object"),
    ("not-json", lambda d, sb: "{'backend': 'onnxruntime'", r"not valid JSON"),
    ("empty-json", lambda d, sb: "", r"not valid JSON"),
    ("json-list", lambda d, sb: "[]", r"content is not a JSON object"),
    ("json-nan", lambda d, sb: json.dumps(d).replace('"resolution": 192', '"resolution": NaN'), r"not valid JSON"),
    ("json-deep", lambda d, sb: "[" * 100000 + "]" * 100000, r"not valid JSON"),
    ("json-huge", lambda d, sb: b" " * (17 << 20) + b"{}", r"larger than 16 MiB"),
    ("json-not-utf8", lambda d, sb: b'{"backend": "\xff\xfe"}', r"not valid JSON"),
    ("model-symlink-outside", _symlinked_model, r"resolves outside the artifact folder"),
]
TAMPERED = ("model-tampered", _tampered_model)

BENCH_CASES = [Case(f"bench-artifact-{i}", ["bench", "{sandbox}/art", "--target", "{local_target}", "--no-ap"],
                    setup=_mutate(fn), expect_stderr=ERR + ".*" + rx) for i, fn, rx in ARTIFACT_MUTATIONS] + [
    Case("bench-artifact-model-tampered", ["bench", "{sandbox}/art", "--target", "{local_target}", "--no-ap"],
         setup=_mutate(TAMPERED[1]), expect_stderr=r"files changed since compile: model.onnx"),
    Case("bench-artifact-missing", ["bench", "{sandbox}/nothing", "--target", "{local_target}"],
         expect_stderr=r"not an artifact folder"),
    Case("bench-artifact-json-is-dir", ["bench", "{sandbox}/art", "--target", "{local_target}"],
         setup=lambda sb, s: (sb / "art" / "artifact.json").mkdir(parents=True), expect_stderr=r"not an artifact"),
    Case("bench-wrong-backend-target", ["bench", "{sandbox}/art", "--target", "{ov_target}", "--no-ap"],
         setup=_mutate(lambda d, sb: None), expect_stderr=r"is for onnxruntime, target bad_openvino runs openvino"),
]

PY_RUNTIME_MUTATIONS = {"backend-unknown", "model-file-dotdot", "model-file-absolute", "model-file-not-sealed",
                        "files-dotdot-key", "subnet-payload", "resolution-mismatch", "class-names-length",
                        "threads-negative", "unknown-field", "not-json", "json-deep", "json-huge",
                        "model-symlink-outside"}
# `import onnxruntime` writes its telemetry device id under ~/.cache/Microsoft and a file in TMPDIR, whoever imports it:
# the shipped runtime's processes get a HOME outside the sandbox (nothing of edgedet's is written there either)
RT_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "HOME": "{ort_home}", "TMPDIR": "{ort_home}/tmp"}
PY_ENV = dict(RT_ENV, PYTHONPATH="{sandbox}/art/runtime/python")
PY_RUNTIME_CASES = [Case(f"pyruntime-artifact-{i}", ["{py}", "-m", "edgedet_runtime", "{sandbox}/img.ppm"],
                         kind="process", env=PY_ENV, setup=_mutate(fn), expect_stderr=ERR + ".*" + rx)
                    for i, fn, rx in ARTIFACT_MUTATIONS if i in PY_RUNTIME_MUTATIONS] + [
    Case("pyruntime-artifact-model-tampered", ["{py}", "-m", "edgedet_runtime", "{sandbox}/img.ppm"], kind="process",
         env=PY_ENV, setup=_mutate(TAMPERED[1]), expect_stderr=r"^error: .*onnxruntime .* cannot load model.onnx"),
    Case("pyruntime-artifact-elsewhere-missing", ["{py}", "-m", "edgedet_runtime", "{sandbox}/img.ppm", "--artifact",
                                                  "{sandbox}/none"], kind="process", env=PY_ENV,
         setup=_mutate(lambda d, sb: None), expect_stderr=r"^error: .*not an artifact folder"),
    Case("pyruntime-threads-zero", ["{py}", "-m", "edgedet_runtime", "{sandbox}/img.ppm", "--threads", "0"],
         kind="process", env=PY_ENV, setup=_mutate(lambda d, sb: None),
         expect_stderr=r"^error: threads must be null or an integer"),
]


def _edit(rel: str, text: str):
    def fn(d, sb):
        (sb / "art" / "runtime" / "cpp" / rel).write_text(text)
    return fn


def _append(rel: str, text: str):
    def fn(d, sb):
        p = sb / "art" / "runtime" / "cpp" / rel
        p.write_text(p.read_text() + text)
    return fn


def _cmake_symlink(d, sb):
    p = sb / "art" / "runtime" / "cpp" / "CMakeLists.txt"
    (sb / "evil.cmake").write_text(p.read_text())
    p.unlink()
    p.symlink_to(sb / "evil.cmake")


def _project_alone(sb, subst):
    shutil.copytree(Path(subst["ov_art"]) / "runtime" / "cpp", sb / "project")


CMAKE_PAYLOAD = "\nexecute_process(COMMAND touch {marker}/pwned-cmake)\n"
BUILD_CASES = [
    Case("build-cmake-execute-process", ["runtime", "build", "{sandbox}/art"],
         setup=_mutate(_append("CMakeLists.txt", CMAKE_PAYLOAD), "ov_art"), expect_stderr=r"CMakeLists.txt: not what "
                                                                                           r"edgedet renders"),
    Case("build-cmake-symlink", ["runtime", "build", "{sandbox}/art"], setup=_mutate(_cmake_symlink, "ov_art"),
         expect_stderr=r"CMakeLists.txt' resolves outside the artifact folder"),
    Case("build-config-hpp-injected", ["runtime", "build", "{sandbox}/art"],
         setup=_mutate(_append("include/edgedet/config.hpp", '\n#include "/etc/passwd"\n'), "ov_art"),
         expect_stderr=r"config.hpp: not what edgedet renders"),
    Case("build-engine-source-edited", ["runtime", "build", "{sandbox}/art"],
         setup=_mutate(_edit("src/engine_openvino.cpp", "int main() { return system(\"id\"); }\n"), "ov_art"),
         expect_stderr=r"engine_openvino.cpp: not what edgedet renders"),
    Case("build-project-without-artifact", ["runtime", "build", "{sandbox}/project"], setup=_project_alone,
         expect_stderr=r"not an artifact folder"),
    Case("build-artifact-json-hostile", ["runtime", "build", "{sandbox}/art"],
         setup=_mutate(_set("model_file", "../../x"), "ov_art"), expect_stderr=r"model_file must be a relative path"),
    Case("build-artifact-subnet-payload", ["runtime", "build", "{sandbox}/art"],
         setup=_mutate(_set("metadata.subnet", payload_sh()), "ov_art"), expect_stderr=r"metadata.subnet is not"),
    Case("build-class-names-changed", ["runtime", "build", "{sandbox}/art"],
         setup=_mutate(_set("metadata.class_names", ['"); system("id"); ("'] * 6), "ov_art"),
         expect_stderr=r"config.hpp: not what edgedet renders"),
]


# ------------------------------------------------------------------------------------------------------- images
def _png(width: int, height: int, bit_depth: int = 8, color: int = 2, idat: bytes | None = None) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat or zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _npy_object(sb: Path, marker: Path) -> bytes:
    import pickle

    class Payload:
        def __reduce__(self):
            return (__import__("pathlib").Path.touch, (__import__("pathlib").Path(f"{marker}/pwned-npy"),))

    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + pickle.dumps([Payload()])


def _npy_header(shape, descr="|u1", body=b"") -> bytes:
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body


IMAGES = [  # (id, file name, bytes or setup(sb, subst) -> bytes, stderr regex), shared by both runtimes where PPM
    ("empty", "x.ppm", b"", r"empty file"),
    ("truncated", "x.ppm", b"P6\n50 40\n255\n" + b"\x80" * 100, r"truncated"),
    ("lying-header", "x.ppm", b"P6\n99999 99999\n255\n" + b"\0" * 64, r"at most \d+ pixels"),
    ("maxval-zero", "x.ppm", b"P6\n1 1\n0\n\0\0\0", r"maxval"),
    ("maxval-too-big", "x.ppm", b"P6\n1 1\n70000\n" + b"\0" * 6, r"maxval"),
    ("header-20-digits", "x.ppm", b"P6\n" + b"9" * 20 + b" 1\n255\n\0\0\0", r"bad P.M header"),
    ("header-comments-forever", "x.ppm", b"P6\n" + b"# c\n" * 300000, r"bad P.M header"),
    ("header-negative", "x.ppm", b"P6\n-5 5\n255\n" + b"\0" * 75, r"bad P.M header"),
    ("header-garbage", "x.ppm", b"P6\nab cd\n255\n", r"bad P.M header"),
    ("header-missing-maxval", "x.ppm", b"P6\n1 1", r"bad P.M header"),
]
PY_ONLY_IMAGES = [
    ("not-an-image", "x.png", b"this is text, not an image\n" * 10, r"cannot be read as an image"),
    ("random-bytes", "x.jpg", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
     r"cannot be read as an image"),
    ("png-bomb", "x.png", _png(100000, 100000), r"cannot be read as an image"),
    ("png-truncated", "x.png", _png(64, 64)[:60], r"cannot be read as an image"),
    ("png-zero-size", "x.png", _png(0, 0), r"cannot be read as an image"),
    ("npy-pickle", "x.npy", "npy-pickle", r"must be uint8 \[H,W,3\]"),
    ("npy-lying-shape", "x.npy", _npy_header((100000, 100000, 3)), r"must be uint8 \[H,W,3\]"),
    ("npy-float", "x.npy", _npy_header((4, 4, 3), "<f8", b"\0" * 384), r"must be uint8 \[H,W,3\]"),
    ("npy-truncated", "x.npy", _npy_header((40, 50, 3), "|u1", b"\0" * 10), r"cannot be read as an image"),
    ("npy-garbage", "x.npy", b"\x93NUMPY\x09\x00garbage", r"not a .npy array"),
]


def _image_setup(name: str, data):
    def setup(sb: Path, subst: dict) -> None:
        raw = _npy_object(sb, Path(subst["marker"])) if data == "npy-pickle" else data
        (sb / name).write_bytes(raw)
    return setup


PY_IMAGE_CASES = [Case(f"pyruntime-image-{i}", ["{py}", "-m", "edgedet_runtime", f"{{sandbox}}/{name}",
                                                "--artifact", "{art}"], kind="process",
                       env=dict(RT_ENV, PYTHONPATH="{art}/runtime/python"),
                       setup=_image_setup(name, data), expect_stderr=ERR + ".*" + rx)
                  for i, name, data, rx in IMAGES + PY_ONLY_IMAGES] + [
    Case("pyruntime-image-directory", ["{py}", "-m", "edgedet_runtime", "{sandbox}", "--artifact", "{art}"],
         kind="process", env=dict(RT_ENV, PYTHONPATH="{art}/runtime/python"),
         expect_stderr=r"^error: .*not a file"),
    Case("pyruntime-image-missing", ["{py}", "-m", "edgedet_runtime", "{sandbox}/none.ppm", "--artifact", "{art}"],
         kind="process", env=dict(RT_ENV, PYTHONPATH="{art}/runtime/python"),
         expect_stderr=r"^error: .*no such file"),
]

CPP_IMAGE_CASES = [Case(f"cpp-image-{i}", ["{cpp}", "--artifact", "{ov_hostile}", f"{{sandbox}}/{name}"],
                        kind="process", setup=_image_setup(name, data), expect_stderr=ERR + ".*" + rx)
                   for i, name, data, rx in IMAGES] + [
    Case("cpp-image-ascii-ppm", ["{cpp}", "--artifact", "{ov_hostile}", "{sandbox}/x.ppm"], kind="process",
         setup=_image_setup("x.ppm", b"P3\n1 1\n255\n0 0 0\n"), expect_stderr=r"^error: .*not a binary PPM/PGM"),
    Case("cpp-image-directory", ["{cpp}", "--artifact", "{ov_hostile}", "{sandbox}"], kind="process",
         expect_stderr=r"^error: "),
    Case("cpp-image-missing", ["{cpp}", "--artifact", "{ov_hostile}", "{sandbox}/none.ppm"], kind="process",
         expect_stderr=r"^error: .*cannot open"),
    Case("cpp-threads-negative", ["{cpp}", "--artifact", "{ov_hostile}", "--threads", "-1", "{sandbox}/x.ppm"],
         kind="process", setup=_image_setup("x.ppm", b"P6\n1 1\n255\n\0\0\0"), expect_stderr=r"threads must be >= 0"),
    Case("cpp-option-without-value", ["{cpp}", "--artifact", "{ov_hostile}", "{sandbox}/x.ppm", "--threshold"],
         kind="process", setup=_image_setup("x.ppm", b"P6\n1 1\n255\n\0\0\0"), expect_stderr=r"needs a value"),
    Case("cpp-foreign-artifact", ["{cpp}", "--artifact", "{sandbox}", "{sandbox}/x.ppm"], kind="process",
         setup=_image_setup("x.ppm", b"P6\n1 1\n255\n\0\0\0"), expect_stderr=r"not an edgedet artifact folder"),
]


# -------------------------------------------------------------------------------------------------- compile -o
def _copy_art(sb: Path, subst: dict) -> None:
    shutil.copytree(subst["art"], sb / "out")


def _symlink_out(sb: Path, subst: dict) -> None:
    (sb / "real").mkdir()
    (sb / "out").symlink_to(sb / "real")


COMPILE = ["compile", "-s", SUB, "-t", "{local_target}", "-o", "{sandbox}/out"]
COMPILE_CASES = [
    Case("compile-out-is-a-file", COMPILE, setup=lambda sb, s: (sb / "out").write_text("x"),
         expect_stderr=r"out: exists and is not a folder"),
    Case("compile-out-foreign-folder", COMPILE,
         setup=lambda sb, s: ((sb / "out").mkdir(), (sb / "out" / "notes.txt").write_text("mine")),
         expect_stderr=r"not empty and not an earlier artifact of this compile"),
    Case("compile-out-symlink", COMPILE, setup=_symlink_out, expect_stderr=r"exists and is not a folder"),
    Case("compile-out-other-compile", ["compile", "-s", "p24-r192-w2-d0-q25", "-t", "{local_target}", "-o",
                                       "{sandbox}/out"], setup=_copy_art,
         expect_stderr=r"not empty and not an earlier artifact of this compile \(p24-r192-w2-d0-q25"),
    Case("compile-out-stale-project", COMPILE,
         setup=lambda sb, s: (_copy_art(sb, s), (sb / "out" / "artifact.json").write_text("{")),
         expect_stderr=r"not an earlier artifact of this compile"),
    Case("compile-precision-not-in-target-leaves-nothing", [*COMPILE, "--int8"],
         expect_stderr=r"does not list precision int8"),
    Case("compile-absurd-threads-leaves-nothing", ["compile", "-s", SUB, "-t", "{sandbox}/t.yaml", "-o",
                                                   "{sandbox}/out"],
         setup=lambda sb, s: (sb / "t.yaml").write_text(json.dumps({
             "name": "t", "backend": "onnxruntime", "precisions": ["fp32"], "runtime": {"threads": 5000}})),
         expect_stderr=r"runtime options: threads must be null or an integer in 1..1024"),
]

CASES = BENCH_CASES + PY_RUNTIME_CASES + BUILD_CASES + PY_IMAGE_CASES + COMPILE_CASES


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_artifact_image_compile(bad, arts, case):
    bad(case, **arts)


@pytest.mark.slow
@pytest.mark.parametrize("case", CPP_IMAGE_CASES, ids=lambda c: c.id)
def test_bad_image_into_the_cpp_example(bad, arts, hostile, cpp_example, case):
    bad(case, **arts, cpp=cpp_example, ov_hostile=hostile["ov"].dir)


@pytest.mark.slow
def test_16_bit_images_are_scaled_not_saturated(arts, tmp_path, cpp_example, hostile):
    """A 16-bit PPM (and a 16-bit grey PNG) reads as its 8-bit version in both runtimes (v * 255 / maxval, rounded),
    never clipped at 255."""
    from PIL import Image

    rgb = (np.random.default_rng(2).random((40, 50, 3)) * 255).astype(np.uint8)
    (tmp_path / "8.ppm").write_bytes(_ppm(rgb))
    (tmp_path / "16.ppm").write_bytes(b"P6\n50 40\n65535\n" + (rgb.astype(">u2") * 257).tobytes())
    grey = rgb[..., 0]
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "16.png")
    Image.fromarray(grey).save(tmp_path / "8.png")
    outs = {}
    for name in ("8.ppm", "16.ppm", "8.png", "16.png"):
        p = _run_python_runtime(hostile["ov"].dir, tmp_path / name, "--threshold", "0", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        outs[name] = [{k: v for k, v in json.loads(x).items() if k != "image"} for x in p.stdout.splitlines()]
    assert outs["8.ppm"] == outs["16.ppm"] and outs["8.png"] == outs["16.png"] and outs["8.ppm"]
    cpp = {}
    for name in ("8.ppm", "16.ppm"):
        p = subprocess.run([str(cpp_example), "--artifact", str(hostile["ov"].dir), "--threshold", "0",
                            str(tmp_path / name)], capture_output=True, timeout=300)
        assert p.returncode == 0, p.stderr
        cpp[name] = [{k: v for k, v in json.loads(x).items() if k != "image"}
                     for x in p.stdout.decode("utf-8", "surrogatepass").splitlines()]
    assert cpp["8.ppm"] == cpp["16.ppm"] and len(cpp["8.ppm"]) == len(outs["8.ppm"])
