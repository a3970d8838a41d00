"""The Python runtime module written next to each artifact: numpy + the runtime only, same detections as edgedet."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv

import numpy as np
import pytest
import torch

from edgedet.backends import get_backend
from edgedet.config import TargetSpec
from edgedet.deploy import compile_subnet
from edgedet.runtime.core import postprocess, preprocess

SUB = "p24-r192-w2-d2-q25"


def _write_ppm(path, rgb: np.ndarray) -> None:
    h, w, _ = rgb.shape
    path.write_bytes(b"P6\n# edgedet test\n%d %d\n255\n" % (w, h) + rgb.tobytes())


def _expected(art, rgb, threshold):
    runner = get_backend(art.backend).load(art, {"threads": 1})
    boxes, logits = runner.infer(preprocess(rgb, art.resolution))
    return postprocess(boxes, logits, [rgb.shape[:2]], 100, threshold)[0]


@pytest.fixture(scope="module")
def artifact(tiny_net, tmp_path_factory):
    t = TargetSpec(name="cpu", backend="onnxruntime", precisions=["fp32"])
    return compile_subnet(tiny_net, SUB, t, "fp32", tmp_path_factory.mktemp("art") / "a")


def _image():
    rng = np.random.default_rng(3)
    return (rng.random((150, 230, 3)) * 255).astype(np.uint8)


def _check(lines, exp):
    got = [json.loads(x) for x in lines]
    assert len(got) == len(exp["scores"]) > 0
    for g, b, s, lab in zip(got, exp["boxes"], exp["scores"], exp["labels"]):
        assert g["label"] == int(lab) and abs(g["score"] - float(s)) < 1e-4
        assert np.abs(np.array(g["box"]) - b).max() < 0.02  # printed with 2 decimals


def test_python_m_prints_the_same_detections(artifact, tmp_path):
    img = _image()
    _write_ppm(tmp_path / "img.ppm", img)
    run = subprocess.run([sys.executable, "-m", "edgedet_runtime", str(tmp_path / "img.ppm"), "--threshold", "0"],
                         cwd=artifact.dir / "runtime" / "python", capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    _check(run.stdout.splitlines(), _expected(artifact, img, 0.0))


def test_preprocess_matches_the_training_resize():
    from edgedet.data.transforms import batch_resize

    img = _image()
    ref = batch_resize([torch.from_numpy(img).permute(2, 0, 1).float() / 255], 96).numpy()
    assert np.abs(preprocess(img, 96) - ref).max() < 1e-5


@pytest.mark.slow
def test_fresh_venv_with_only_numpy_and_onnxruntime(artifact, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # nothing of this tree
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy", "onnxruntime"], capture_output=True,
                         text=True, timeout=600, env=env)
    assert pip.returncode == 0, pip.stderr[-1500:]
    mods = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                          env=env).stdout
    names = {m["name"].lower() for m in json.loads(mods)}
    assert "torch" not in names and "pillow" not in names and "edgedet" not in names
    img = _image()
    _write_ppm(tmp_path / "img.ppm", img)
    run = subprocess.run([str(py), "-m", "edgedet_runtime", str(tmp_path / "img.ppm"), "--threshold", "0"],
                         cwd=artifact.dir / "runtime" / "python", capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    _check(run.stdout.splitlines(), _expected(artifact, img, 0.0))


def test_runtime_applies_the_recorded_options_and_threads_override(tiny_net, tmp_path):
    """artifact.json records the target's runtime options; the shipped runtime applies them (read back from the
    session), and threads=N overrides only the thread count."""
    from edgedet.runtime.render import import_python_runtime

    t = TargetSpec(name="cpu", backend="onnxruntime", precisions=["fp32"], runtime={"threads": 1})
    art = compile_subnet(tiny_net, SUB, t, "fp32", tmp_path / "a")
    assert json.loads((art.dir / "artifact.json").read_text())["runtime_options"] == {"threads": 1}
    rt = import_python_runtime(art.dir)
    s = rt.Detector().info()["settings"]
    assert s == {"execution_mode": "ORT_SEQUENTIAL", "intra_op_num_threads": 1, "inter_op_num_threads": 1,
                 "log_severity_level": 3}
    assert rt.Detector(threads=2).info()["settings"] == dict(s, intra_op_num_threads=2)


def test_category_ids_reach_the_detections(artifact, tmp_path):
    """metadata.category_ids (the dataset's category id of each label) become each detection's category_id."""
    from edgedet.runtime.render import import_python_runtime

    art = tmp_path / "a"
    shutil.copytree(artifact.dir, art)
    d = json.loads((art / "artifact.json").read_text())
    ids = [10 * (i + 1) for i in range(d["metadata"]["num_classes"])]
    d["metadata"]["category_ids"] = ids
    (art / "artifact.json").write_text(json.dumps(d))
    dets = import_python_runtime(art).Detector(threshold=0).detect(_image())
    assert dets and all(x["category_id"] == ids[x["label"]] for x in dets)
    assert "category_id" not in import_python_runtime(artifact.dir).Detector(threshold=0).detect(_image())[0]


def test_compile_replaces_an_earlier_artifact_of_the_same_compile_whole(tiny_net, artifact, tmp_path):
    """Compiling again into the same compile's folder replaces it whole: a stale build or file is never sealed."""
    out = tmp_path / "again"
    shutil.copytree(artifact.dir, out)
    (out / "runtime" / "cpp" / "build").mkdir(parents=True)
    (out / "runtime" / "cpp" / "build" / "stale.o").write_bytes(b"old")
    t = TargetSpec(name="cpu", backend="onnxruntime", precisions=["fp32"])
    art = compile_subnet(tiny_net, SUB, t, "fp32", out)
    assert not (out / "runtime" / "cpp").exists() and not any("stale" in f for f in art.files)
    assert not art.verify() and sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no temporary folder left


def test_detector_reuses_one_input_buffer_per_thread(artifact):
    """Detector.raw writes the input tensor into a buffer its thread reuses (no allocation per frame): results are the
    same as with fresh tensors frame after frame, returned arrays never alias that buffer, and four threads sharing
    one Detector each get their own buffer and the single-threaded detections."""
    import threading

    from edgedet.runtime.render import import_python_runtime

    rt = import_python_runtime(artifact.dir)
    det = rt.Detector(threshold=0.0)
    rng = np.random.default_rng(8)
    frames = [rng.integers(0, 256, (150 + 20 * i, 230 - 10 * i, 3), dtype=np.uint8) for i in range(4)]
    ref = [det.runner.infer(preprocess(f, det.resolution)) for f in frames]
    first = det.raw(frames[0])
    buf = det._local.input
    for f, (b, lg) in zip(frames, ref):
        got = det.raw(f)
        assert np.array_equal(got[0], b) and np.array_equal(got[1], lg)
        assert det._local.input is buf and not np.shares_memory(got[0], buf) and not np.shares_memory(got[1], buf)
    assert np.array_equal(first[1], ref[0][1])  # an earlier result is not overwritten by later frames
    single = [det.detect(f) for f in frames]
    results, buffers, alive = {}, set(), threading.Barrier(4)

    def work(k):
        results[k] = [det.detect(f) for f in frames * 3]
        buffers.add(id(det._local.input))
        alive.wait(timeout=60)  # no thread's buffer is freed (and its id reused) before all are counted

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(buffers) == 4 and buf is det._local.input  # own buffer per thread; this thread's is kept
    assert all(results[k] == single * 3 for k in range(4))


def test_preprocess_out_argument(artifact):
    """core.preprocess(..., out=) writes the same tensor into the caller's array; a wrong shape or dtype is refused."""
    rgb = _image()
    out = np.full((1, 3, 96, 96), np.nan, np.float32)
    assert preprocess(rgb, 96, out) is out and np.array_equal(out, preprocess(rgb, 96))
    for bad in (np.empty((1, 3, 95, 96), np.float32), np.empty((1, 3, 96, 96), np.float64), [0.0]):
        with pytest.raises(ValueError, match="out: expected a float32 array"):
            preprocess(rgb, 96, bad)
