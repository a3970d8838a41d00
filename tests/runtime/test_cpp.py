"""The C++ runtime written next to each artifact: rendered from the same constants as the Python runtime, built with
CMake + g++ against the OpenVINO wheel's SDK, and run on demo val images with the same detections as the Python
runtime. The ONNX Runtime and TensorRT projects are rendered and checked here; their builds need SDKs that only a
user's machine or the device has, and skip naming what is missing."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgedet.backends.base import Artifact
from edgedet.config import TargetSpec
from edgedet.deploy import compile_subnet
from edgedet.errors import ToolchainError
from edgedet.runtime.core import preprocess
from edgedet.runtime.cpp import build_cpp, example_path, missing_tools, preprocess_library_path
from edgedet.runtime.render import import_python_runtime

ROOT = Path(__file__).resolve().parents[2]
SUB = "p24-r192-w2-d1-q25"  # the demo supernet's cheapest subnet family: 192 px, one decoder layer, 25 queries
THREADS = 2


def cli(*args, ok=True, cwd=None):
    p = subprocess.run([sys.executable, "-m", "edgedet.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=600, cwd=cwd)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def write_ppm(path: Path, rgb: np.ndarray) -> Path:
    h, w, _ = rgb.shape
    path.write_bytes(b"P6\n# edgedet test\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(rgb).tobytes())
    return path


@pytest.fixture(scope="module")
def ov(tmp_path_factory):
    """The demo supernet's subnet compiled for targets/cpu_openvino.yaml (fp32) through the CLI with both runtimes,
    and its C++ project built through the CLI."""
    out = tmp_path_factory.mktemp("cpp") / "ov"
    p = cli("compile", "-s", SUB, "-t", ROOT / "targets" / "cpu_openvino.yaml", "--runtime", "python",
            "--runtime", "cpp", "-o", out)
    assert "cpp runtime: runtime/cpp" in p.stdout
    missing = missing_tools("openvino")
    assert not missing, f"the OpenVINO C++ build needs {missing} (make test installs cmake and g++)"
    p = cli("runtime", "build", out, "-j", "2")
    assert "edgedet_example" in p.stdout
    return Artifact.open(out)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The first demo val images (seed 0, 320 px: the same files as the demo val set), plus a non-square,
    odd-sized crop so that x and y scale differently and a wide strip (960 px: scaled down by 5x in x)."""
    from edgedet.data.synthetic import generate

    root = tmp_path_factory.mktemp("demo_val")
    generate(root, 0, 4, seed=0, image_size=320)
    rgbs = [np.array(Image.open(p).convert("RGB")) for p in sorted((root / "valid").glob("*.jpg"))]
    rgbs.append(np.ascontiguousarray(rgbs[1][13:220, 7:308]))  # 207 x 301
    rgbs.append(np.ascontiguousarray(np.repeat(rgbs[2][40:190], 3, axis=1)))  # 150 x 960: more than twice the
    # output's width, where detector.cpp blends only the columns it samples
    return [(write_ppm(root / f"{i}.ppm", im), im) for i, im in enumerate(rgbs)]


def python_runtime(art: Artifact):
    """The Python runtime package written into the artifact (runtime/python/edgedet_runtime)."""
    return import_python_runtime(art.dir)


def py_config(art: Artifact) -> dict:
    rt = python_runtime(art)
    return rt.runtime_config(rt.runners.read_artifact(str(art.dir)))


def run_example(art, *args):
    p = subprocess.run([str(example_path(art.dir / "runtime" / "cpp" / "build")), "--artifact", str(art.dir),
                        "--threads", str(THREADS), *map(str, args)], capture_output=True, text=True, timeout=300)
    return p


def test_project_is_rendered_from_the_runtime_config_and_sealed(ov):
    cpp = ov.dir / "runtime" / "cpp"
    for f in ("CMakeLists.txt", "README.md", "include/edgedet/detector.hpp", "include/edgedet/config.hpp",
              "include/edgedet/preprocess.h", "src/detector.cpp", "src/preprocess.cpp", "src/engine.hpp",
              "src/engine_openvino.cpp", "examples/main.cpp"):
        assert f"runtime/cpp/{f}" in ov.files, f
    assert not (cpp / "src" / "engine_tensorrt.cpp").exists()
    py_cfg = py_config(ov)
    hpp = (cpp / "include" / "edgedet" / "config.hpp").read_text()
    assert f"kResolution = {py_cfg['resolution']};" in hpp and "kResolution = 192;" in hpp
    assert "kNumQueries = 25;" in hpp and f"kNumClasses = {py_cfg['num_classes']};" in hpp
    assert f"kThreshold = {py_cfg['threshold']}f;" in hpp and f"kTopK = {py_cfg['topk']};" in hpp
    names = ", ".join(f'std::string_view("{n}", {len(n)})' for n in py_cfg["class_names"])
    assert f"kClassNames[] = {{{names}}};" in hpp and 'kModelFile = "model.xml"' in hpp
    assert "kThreads = 2;" in hpp and 'kOpenVINOHint = "LATENCY";' in hpp and "kNumStreams = 1;" in hpp
    assert ov.metadata["runtimes"] == {"python": "runtime/python/edgedet_runtime", "cpp": "runtime/cpp"}
    assert not ov.verify()  # building added files next to the sealed ones and changed none


def test_cpp_detections_match_the_python_runtime(ov, images, tmp_path):
    """Same input tensor as core.preprocess (bit for bit), and the same detections as the Python runtime: every
    top-k pair at threshold 0, boxes within 1 px (they agree to the printed 0.01 px), same classes, same order."""
    rt = python_runtime(ov)
    det = rt.Detector(threads=THREADS, threshold=0.0)
    compared = 0
    for path, rgb in images:
        p = run_example(ov, "--threshold", 0, "--dump", tmp_path, path)
        assert p.returncode == 0, p.stderr
        got = [json.loads(x) for x in p.stdout.splitlines()]
        x = np.fromfile(tmp_path / "input.f32", np.float32).reshape(1, 3, 192, 192)
        assert np.array_equal(x, preprocess(rgb, 192)), np.abs(x - preprocess(rgb, 192)).max()
        boxes, logits = det.raw(rgb)
        assert np.abs(np.fromfile(tmp_path / "logits.f32", np.float32) - logits.ravel()).max() < 1e-4
        exp = rt.core.postprocess(boxes, logits, [rgb.shape[:2]], 100, 0.0)[0]
        assert len(got) == len(exp["labels"]) == 100
        for g, b, s, lab in zip(got, exp["boxes"], exp["scores"], exp["labels"]):
            assert g["label"] == int(lab) and g["name"] == det.config["class_names"][lab]
            assert np.abs(np.array(g["box"]) - b).max() <= 1.0
            assert abs(g["score"] - float(s)) < 1e-3
        assert max(np.abs(np.array(g["box"]) - b).max() for g, b in zip(got, exp["boxes"])) <= 0.011
        compared += len(got)
    assert compared == 100 * len(images)


def test_default_threshold_prints_what_the_python_runtime_prints(ov, images):
    path, rgb = images[1]
    p = run_example(ov, path)
    assert p.returncode == 0, p.stderr
    got = [json.loads(x) for x in p.stdout.splitlines()]
    exp = python_runtime(ov).Detector(threads=THREADS).detect(rgb)
    assert 0 < len(got) == len(exp) < 100
    for g, e in zip(got, exp):
        assert g["image"] == str(path) and (g["label"], g["name"]) == (e["label"], e["name"])
        assert np.abs(np.array(g["box"]) - e["box"]).max() <= 0.011 and abs(g["score"] - e["score"]) <= 1.1e-4


def test_selftest_bad_input_strides_and_no_allocation_per_frame(ov, images):
    p = run_example(ov, "--selftest", images[1][0])
    assert p.returncode == 0, p.stdout + p.stderr
    checks = {c["check"]: c for c in map(json.loads, p.stdout.splitlines()) if "check" in c}
    assert all(c["ok"] for c in checks.values()), checks
    assert "stride 959 bytes is shorter than one RGB row" in checks["short stride throws"]["detail"]
    assert "pre+post-processing 0" in checks["no allocation in pre/post-processing"]["detail"]
    assert len(checks) == 10


def test_one_detector_per_thread_agrees_with_one_instance(ov, images):
    p = run_example(ov, "--instances", 2, "--repeat", 2, *(path for path, _ in images[:3]))
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["identical"] is True


def test_timing_mode_prints_percentiles(ov, images):
    p = run_example(ov, "--time", 20, "--warmup", 2, images[0][0])
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert rec["runs"] == 20 and rec["threads"] == THREADS and rec["resolution"] == 192
    assert 0 < rec["detect_p50_ms"] <= rec["detect_p90_ms"] and 0 < rec["infer_p50_ms"] <= rec["infer_p90_ms"]
    assert "openvino" in rec["backend"] and "threads 2" in rec["backend"]


def test_bad_artifact_and_image_fail_clearly(ov, images, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "artifact.json").write_text(json.dumps({"backend": "openvino", "metadata": {"subnet": "p16-r384"}}))
    p = subprocess.run([str(example_path(ov.dir / "runtime" / "cpp" / "build")), "--artifact", str(other),
                        str(images[0][0])], capture_output=True, text=True)
    assert p.returncode == 2 and "another artifact than this project was generated for" in p.stderr
    (tmp_path / "x.ppm").write_bytes(b"P3\n1 1\n255\n0 0 0\n")
    p = run_example(ov, tmp_path / "x.ppm")
    assert p.returncode == 2 and "not a binary PPM/PGM" in p.stderr


# ------------------------------------------------------------------------------- ONNX Runtime and TensorRT
@pytest.fixture(scope="module")
def other_backends(tiny_net, tmp_path_factory):
    root = tmp_path_factory.mktemp("cpp_other")
    arts = {}
    for backend in ("onnxruntime", "tensorrt"):
        t = TargetSpec(name=f"t_{backend}", backend=backend, precisions=["fp32"])
        arts[backend] = compile_subnet(tiny_net, SUB, t, "fp32", root / backend, runtime=("python", "cpp"))
    return arts


@pytest.mark.parametrize("backend,model,sdk", [("onnxruntime", "model.onnx", "onnxruntime_cxx_api.h"),
                                               ("tensorrt", "model.engine", "NvInfer.h")])
def test_onnxruntime_and_tensorrt_projects_are_rendered(other_backends, backend, model, sdk):
    art = other_backends[backend]
    cpp = art.dir / "runtime" / "cpp"
    assert art.metadata["runtimes"]["cpp"] == "runtime/cpp" and not art.verify()
    assert f"runtime/cpp/src/engine_{backend}.cpp" in art.files
    assert sorted(p.name for p in (cpp / "src").iterdir()) == ["detector.cpp", "engine.hpp", f"engine_{backend}.cpp",
                                                               "preprocess.cpp"]
    hpp = (cpp / "include" / "edgedet" / "config.hpp").read_text()
    assert f'kBackend = "{backend}"' in hpp and f'kModelFile = "{model}"' in hpp and "kResolution = 192;" in hpp
    assert f"src/engine_{backend}.cpp" in (cpp / "CMakeLists.txt").read_text()
    assert sdk in (cpp / "CMakeLists.txt").read_text()
    assert f"#include <{sdk}>" in (cpp / "src" / f"engine_{backend}.cpp").read_text()
    if backend == "tensorrt":
        assert "python3 build_engine.py" in hpp
        assert art.metadata["runtimes"]["python"].startswith("unsupported: ")


@pytest.mark.parametrize("backend,sdk", [("onnxruntime", "onnxruntime_cxx_api.h"), ("tensorrt", "NvInfer.h")])
def test_build_without_the_sdk_says_what_is_missing(other_backends, backend, sdk):
    if not missing_tools(backend):
        pytest.skip(f"the {backend} SDK is installed here: see test_onnxruntime_and_tensorrt_build")
    with pytest.raises(ToolchainError, match=re.escape(sdk)):
        build_cpp(other_backends[backend].dir)
    p = cli("runtime", "build", other_backends[backend].dir, ok=False)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and sdk in p.stderr


@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt"])
def test_onnxruntime_and_tensorrt_build(other_backends, backend, tmp_path):
    missing = missing_tools(backend)
    if missing:
        pytest.skip(f"{backend} C++ build not verified here: missing " + "; ".join(missing))
    art = other_backends[backend]
    if backend == "tensorrt":  # pragma: no cover - on a device with TensorRT
        subprocess.run([sys.executable, "build_engine.py"], cwd=art.dir, check=True)
    build = build_cpp(art.dir, tmp_path / "build", jobs=2)
    rgb = (np.random.default_rng(3).random((150, 230, 3)) * 255).astype(np.uint8)
    p = subprocess.run([str(example_path(build)), "--artifact", str(art.dir), "--selftest",
                        write_ppm(tmp_path / "a.ppm", rgb)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_compiled_preprocess_equals_numpy_bit_for_bit(ov, images, tmp_path):
    """libedgedet_preprocess (built with the project; src/preprocess.cpp, the resize edgedet::Detector runs) loaded
    by the Python runtime gives core.preprocess's tensor bit for bit: the demo images, the crop and the wide strip,
    at the artifact's and other resolutions, from row-strided, flipped and Fortran-ordered views; non-uint8 input
    goes through numpy. The Detector's detections are the same with and without it."""
    rt = python_runtime(ov)
    lib = preprocess_library_path(ov.dir / "runtime" / "cpp" / "build")
    assert lib.is_file()
    pre = rt.CompiledPreprocess(lib)
    for _, rgb in images:
        for r in (192, 64, 288, 577):
            assert np.array_equal(pre(rgb, r), preprocess(rgb, r)), r
        for view in (rgb[::2], rgb[::-1, ::-1], np.asfortranarray(rgb), rgb[3:, 5:]):
            assert np.array_equal(pre(view, 192), preprocess(view, 192))
    f32 = images[0][1].astype(np.float32) / 255
    assert np.array_equal(pre(f32, 192), preprocess(f32, 192))
    assert fast_info(rt, lib)["code_path"] == cpu_code_path()
    plain, fast = rt.Detector(threshold=0.0), rt.Detector(threshold=0.0, preprocess_library=lib)
    for _, rgb in images:
        assert fast.detect(rgb) == plain.detect(rgb)
    path = images[1][0]
    p = subprocess.run([sys.executable, "-m", "edgedet_runtime", "--preprocess-library", str(lib), str(path)],
                       capture_output=True, text=True, cwd=ov.dir / "runtime" / "python", timeout=300)
    q = subprocess.run([sys.executable, "-m", "edgedet_runtime", str(path)], capture_output=True, text=True,
                       cwd=ov.dir / "runtime" / "python", timeout=300)
    assert p.returncode == q.returncode == 0 and p.stdout == q.stdout and p.stdout.strip(), p.stderr
    # not a library, no file: one line, exit 2
    (tmp_path / "fake.so").write_text("not an ELF file\n")
    for bad, why in ((tmp_path / "fake.so", "not an edgedet pre-processing library"),
                     (tmp_path / "none.so", "no such pre-processing library")):
        p = subprocess.run([sys.executable, "-m", "edgedet_runtime", "--preprocess-library", str(bad), str(path)],
                           capture_output=True, text=True, cwd=ov.dir / "runtime" / "python", timeout=300)
        assert p.returncode == 2 and why in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def cpu_code_path() -> str:
    """The resize's code path this CPU should get, from /proc/cpuinfo (not from the library under test)."""
    import platform

    if platform.machine() != "x86_64" or not sys.platform.startswith("linux"):
        return "portable"
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "portable"


def fast_info(rt, lib) -> dict:
    return rt.Detector(preprocess_library=lib).info()["preprocess"]


def test_every_resize_code_path_equals_numpy_bit_for_bit(ov):
    """The portable, AVX2 and AVX-512 resize kernels (capped one by one through edgedet_preprocess_level, as far as
    this CPU goes) give core.preprocess's tensor bit for bit: widths and resolutions that are and are not multiples
    of the 8 / 16 block, up- and downscaling, images 2-4x as wide as the output (AVX-512's four-vector blocks, e.g.
    640 -> 192 / 288), over 4x (the sparse path), 1-pixel images, row strides with padding."""
    rt = python_runtime(ov)
    pre = rt.CompiledPreprocess(preprocess_library_path(ov.dir / "runtime" / "cpp" / "build"))
    rng = np.random.default_rng(11)
    shapes = [(320, 320), (150, 230), (5, 17), (41, 37), (480, 640), (1, 1), (200, 300), (99, 250)]
    cases = [(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), r) for h, w in shapes for r in (192, 288, 61, 16, 100)]
    padded = rng.integers(0, 256, (120, 400, 3), dtype=np.uint8)[:, 7:350]  # rows 1200 bytes apart
    cases += [(padded, 192), (padded, 120)]
    expect = [preprocess(im, r) for im, r in cases]
    levels = {"portable": 0, "avx2": 1, "avx512": 2}
    top = levels[cpu_code_path()]
    try:
        for cap in range(top + 1):
            assert pre._level(cap) == cap and pre.code_path == list(levels)[cap]
            for (im, r), exp in zip(cases, expect):
                got = pre(im, r)
                assert np.array_equal(got, exp), (pre.code_path, im.shape, r, float(np.abs(got - exp).max()))
    finally:
        pre._level(2)
    assert pre.code_path == cpu_code_path()


def test_preprocess_only_build_needs_no_sdk(other_backends, tmp_path):
    """`edgedet runtime build --preprocess-only` builds libedgedet_preprocess for an artifact whose backend SDK is
    absent here (ONNX Runtime): the Python runtime of that artifact then uses it, same tensor as numpy."""
    art = other_backends["onnxruntime"]
    p = cli("runtime", "build", art.dir, "--preprocess-only", "--build-dir", tmp_path / "b", "-j", "2")
    lib = preprocess_library_path(tmp_path / "b")
    assert lib.is_file() and str(lib) in p.stdout and "edgedet_example" not in p.stdout
    assert not (tmp_path / "b" / "edgedet_example").exists()
    rt = import_python_runtime(art.dir)
    rgb = (np.random.default_rng(5).random((150, 230, 3)) * 255).astype(np.uint8)
    assert np.array_equal(rt.CompiledPreprocess(lib)(rgb, 192), preprocess(rgb, 192))
    det = rt.Detector(preprocess_library=lib, threshold=0.0)
    assert det.detect(rgb) == rt.Detector(threshold=0.0).detect(rgb)
    # without the AVX2 clones (the code every other CPU runs): the same tensor
    plain = tmp_path / "plain"
    for cmd in (["cmake", "-S", art.dir / "runtime" / "cpp", "-B", plain, "-DCMAKE_BUILD_TYPE=Release",
                 "-DEDGEDET_PREPROCESS_ONLY=ON", "-DCMAKE_CXX_FLAGS=-DEDGEDET_NO_MULTIVERSION"],
                ["cmake", "--build", plain, "--parallel", "2"]):
        subprocess.run(list(map(str, cmd)), check=True, capture_output=True)
    default = rt.CompiledPreprocess(preprocess_library_path(plain))
    wide = np.ascontiguousarray(np.repeat(rgb, 4, axis=1))  # 920 px: the sparse row path too
    for im in (rgb, wide):
        for r in (192, 288, 61):
            assert np.array_equal(default(im, r), preprocess(im, r))
            assert np.array_equal(rt.CompiledPreprocess(lib)(im, r), preprocess(im, r))


def test_litert_has_no_cpp_runtime_and_says_so():
    from edgedet.deploy import check_runtimes
    from edgedet.errors import ConfigError
    from edgedet.runtime.cpp import unsupported_reason

    assert unsupported_reason("tflite").startswith("unsupported: no C++ runtime for tflite")
    assert check_runtimes(["python,cpp"]) == ("python", "cpp") and check_runtimes("cpp") == ("cpp",)
    with pytest.raises(ConfigError, match="unknown runtime 'java'"):
        check_runtimes(["python", "java"])


def test_runtime_build_of_a_folder_without_a_project_exits_2(tmp_path):
    p = cli("runtime", "build", tmp_path, ok=False)
    assert p.returncode == 2 and "no edgedet C++ project" in p.stderr and "Traceback" not in p.stderr


def test_both_runtimes_apply_the_recorded_runtime_options(ov, images):
    """artifact.json records the target's runtime options (targets/cpu_openvino.yaml: 2 threads, LATENCY); the C++
    example (no --threads) and the Python runtime (no threads) apply them: the same settings read back from the
    compiled model, from the same config. An explicit thread count overrides only that."""
    recorded = json.loads((ov.dir / "artifact.json").read_text())["runtime_options"]
    assert recorded == {"threads": 2, "pin_threads": False, "openvino_device": "CPU", "openvino_hint": "LATENCY"}
    exe = str(example_path(ov.dir / "runtime" / "cpp" / "build"))
    for threads, args in ((2, []), (1, ["--threads", "1"])):
        p = subprocess.run([exe, "--artifact", str(ov.dir), "--info", *args, str(images[0][0])], capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        cpp = json.loads(p.stdout.splitlines()[0])["info"]["settings"]
        py = python_runtime(ov).Detector(threads=None if threads == 2 else threads).info()["settings"]
        assert cpp == py, (cpp, py)
        assert (py["INFERENCE_NUM_THREADS"], py["PERFORMANCE_HINT"], py["NUM_STREAMS"]) == (threads, "LATENCY", 1)
        assert py["INFERENCE_PRECISION_HINT"] == "f32" and py["EXECUTION_DEVICES"] == ["CPU"]
