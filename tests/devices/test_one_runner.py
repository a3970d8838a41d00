"""Measured == shipped: for every backend available here, one artifact loaded three ways (the host backend, the agent
on a device over the local sshd, the artifact's own Python runtime) runs with identical settings, read back from the
session / compiled model, and gives bit-identical outputs."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edgedet.backends import get_backend
from edgedet.config import TargetSpec
from edgedet.deploy import compile_subnet, runtime_options
from edgedet.runtime.render import import_python_runtime

from .conftest import SUB

pytestmark = pytest.mark.timeout(600)

RUNTIME = {"onnxruntime": {"threads": 1},
           "openvino": {"threads": 1, "openvino_hint": "LATENCY"},
           "tflite": {"threads": 1}}


def _digests(boxes, logits) -> dict:
    return {k: hashlib.sha256(np.ascontiguousarray(a, np.float32).tobytes()).hexdigest()
            for k, a in (("boxes", boxes), ("logits", logits))}


@pytest.mark.parametrize("backend", [
    "onnxruntime", "openvino", pytest.param("tflite", marks=pytest.mark.slow)])
def test_host_agent_and_shipped_runtime_run_the_same(ssh_env, tiny_net, tmp_path, backend):
    from edgedet.devices.ssh import SSHDevice

    b = get_backend(backend)
    if b.available() is not None:
        pytest.skip(f"{backend} not available here: {b.available()}")
    local = TargetSpec(name=f"t_{backend}", backend=backend, precisions=["fp32"], runtime=RUNTIME[backend])
    art = compile_subnet(tiny_net, SUB, local, "fp32", tmp_path / "art")
    assert art.runtime_options["threads"] == 1  # recorded from the target
    x = np.random.default_rng(0).random((1, 3, art.resolution, art.resolution), dtype=np.float32)  # the bench input

    host = b.load(art, runtime_options(local))
    host_out = _digests(*host.infer(x))

    shipped = import_python_runtime(art.dir).Detector()  # no options: the artifact's recorded ones
    shipped_out = _digests(*shipped.runner.infer(x))

    h = ssh_env.host(workdir=str(tmp_path / "work"))
    remote = ssh_env.target([h], backend=backend).model_copy(update={"runtime": local.runtime})
    with SSHDevice(h) as dev:
        probe = dev.probe(art, remote)

    settings = host.info()["settings"]
    assert settings and shipped.info()["settings"] == settings == probe["runtime"]["settings"]
    assert host_out == shipped_out == probe["outputs"]
    if backend == "onnxruntime":
        assert settings == {"execution_mode": "ORT_SEQUENTIAL", "intra_op_num_threads": 1,
                            "inter_op_num_threads": 1, "log_severity_level": 3}
    if backend == "openvino":
        assert (settings["INFERENCE_PRECISION_HINT"], settings["PERFORMANCE_HINT"], settings["NUM_STREAMS"],
                settings["INFERENCE_NUM_THREADS"]) == ("f32", "LATENCY", 1, 1)
    if backend == "tflite":
        assert settings["num_threads"] == 1 and settings["boxes_output"].endswith("boxes_output")
    # an explicit thread count overrides the recorded one, and only that
    two = import_python_runtime(art.dir).Detector(threads=2).info()["settings"]
    changed = {k for k in settings if settings[k] != two[k]}
    assert changed == {{"onnxruntime": "intra_op_num_threads", "openvino": "INFERENCE_NUM_THREADS",
                        "tflite": "num_threads"}[backend]}
