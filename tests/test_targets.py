"""Target and calibration YAML: every shipped file validates; bad ones give one line naming file, field, value."""
from __future__ import annotations

import glob
import subprocess
import sys

import pytest

from edgedet.config import load_calibration, load_target
from edgedet.errors import ConfigError


def test_shipped_targets_and_recipes_validate():
    names = {load_target(p).name for p in glob.glob("targets/*.yaml")}
    assert {"local_cpu", "cpu_openvino", "t4", "jetson_orin", "mobile_tflite"} <= names
    orin = load_target("targets/jetson_orin.yaml")
    assert orin.backend == "tensorrt" and orin.device.type == "ssh" and set(orin.precisions) == {"fp16", "int8"}
    assert load_target("targets/local_cpu.yaml").device.type == "local"
    for p in glob.glob("calibration/*.yaml"):
        assert load_calibration(p).images > 0


@pytest.mark.parametrize("body,needle", [
    ("backend: onnxruntime\nprecisions: [fp32]\n", "name: required field is missing"),
    ("name: x\nbackend: coreml\nprecisions: [fp32]\n", "backend: Input should be"),
    ("name: x\nbackend: onnxruntime\nprecisions: [fp16]\n", "precisions.0: backend onnxruntime has no fp16"),
    ("name: x\nbackend: openvino\nprecisions: [fp32]\nruntime: {threads: many}\n", "runtime.threads"),
    ("name: x\nbackend: openvino\nprecisions: [fp32]\nbenchmark: {runs: 0}\n", "benchmark.runs"),
    ("name: x\nbackend: openvino\nprecisions: [fp32]\ncolour: red\n", "colour: unknown field"),
    ("name: x\nbackend: tensorrt\nprecisions: [fp16]\ndevice: {type: ssh, hosts: []}\n", "device.ssh.hosts"),
    ("- just\n- a list\n", "expected a mapping"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_bad_targets(tmp_path, body, needle):
    p = tmp_path / "bad target.yaml"
    p.write_text(body)
    with pytest.raises(ConfigError) as e:
        load_target(p)
    msg = str(e.value)
    assert msg.startswith(str(p)) and needle in msg and "\n" not in msg


def test_bad_target_on_the_cli_exits_2(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: x\nbackend: onnxruntime\nprecisions: [bf16]\n")
    r = subprocess.run([sys.executable, "-m", "edgedet.cli", "compile", "--preset", "tiny", "-s",
                        "p24-r192-w2-d1-q25", "-t", str(p), "-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "precisions.0: backend onnxruntime has no bf16" in r.stderr
    assert not (tmp_path / "o").exists()


def test_missing_optional_runtime_is_one_line(tmp_path):
    code = ("import sys; sys.modules['openvino'] = None; sys.argv = ['edgedet', 'compile', '--preset', 'tiny', '-s', "
            f"'p24-r192-w2-d1-q25', '-t', 'targets/cpu_openvino.yaml', '-o', r'{tmp_path / 'o'}']\n"
            "from edgedet.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == ("error: Python package 'openvino' is not installed (needed for the OpenVINO backend): "
                                "pip install 'edgedet[openvino]'")
