"""The command line: real subprocesses, exit codes and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest

from edgedet.checkpoint import save_supernet


def run(*args, ok=True):
    p = subprocess.run([sys.executable, "-m", "edgedet.cli", *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def test_help_works():
    assert "export" in run("--help").stdout


def test_info_json_preset():
    rep = json.loads(run("info", "--preset", "tiny", "--json").stdout)
    assert rep["space"]["dec_layers"] == [0, 1, 2, 3]
    assert rep["largest"]["gflops"] > rep["smallest"]["gflops"] > 0
    assert rep["smallest"]["id"].startswith("p24")


def test_export_from_checkpoint(tiny_net, tmp_path):
    ck = save_supernet(tiny_net, tmp_path / "net.safetensors")
    out = tmp_path / "m.onnx"
    p = run("export", "--checkpoint", str(ck), "--subnet", "p16-r192-w2-d1-q25", "-o", str(out))
    assert "max abs diff" in p.stdout
    assert onnx.load(str(out)).graph.output[0].name == "boxes"


@pytest.mark.parametrize("args,needle", [
    (["export", "--preset", "tiny", "-s", "p16-r380-w2-d3-q100", "-o", "x.onnx"], "multiple of patch x windows"),
    (["export", "--preset", "tiny", "-s", "p16-r384-w2-d7-q100", "-o", "x.onnx"], "decoder layers 7"),
    (["export", "--preset", "tiny", "-s", "p16-r384-w2-k3-q100", "-o", "x.onnx"], "unknown knob 'k'"),
    (["export", "--preset", "tiny", "-s", "!!", "-o", "x.onnx"], "invalid subnet id"),
    (["export", "--preset", "nope", "-s", "p16-r384-w2-d3-q100", "-o", "x.onnx"], "unknown preset"),
    (["export", "-c", "missing.safetensors", "-s", "p16-r384-w2-d3-q100", "-o", "x.onnx"], "not found"),
    (["info", "--preset", "tiny", "-c", "x.safetensors"], "at most one of"),
])
def test_bad_input_exits_2_with_one_line(args, needle, tmp_path):
    p = subprocess.run([sys.executable, "-m", "edgedet.cli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_corrupt_checkpoint_exits_2(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"{not really}")
    p = subprocess.run([sys.executable, "-m", "edgedet.cli", "info", "-c", str(bad)], capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "bad.safetensors" in p.stderr


@pytest.mark.parametrize("content,needle", [(None, "teacher file not found"), (b"junk", "corrupt"),
                                            (b"x", "unknown teacher type")])
def test_train_with_a_bad_teacher_exits_2(tmp_path, content, needle):
    teacher = tmp_path / "teacher.pth"
    if content is not None:
        teacher.write_bytes(content)
    extra = ["--teacher-type", "dinov9"] if needle.startswith("unknown") else []
    p = subprocess.run([sys.executable, "-m", "edgedet.cli", "train", "--data", str(tmp_path / "nodata"), "--out",
                        str(tmp_path / "run"), "--teacher", str(teacher), *extra], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr
    assert not (tmp_path / "run").exists()
