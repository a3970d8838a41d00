"""ONNX Runtime and OpenVINO backends on real sessions: fp32 matches torch, int8 runs and is evaluated from its own
outputs, unsupported precisions say why, artifacts are sealed with sha256."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgedet.backends import get_backend
from edgedet.backends.base import Artifact, Unsupported, sha256
from edgedet.checkpoint import save_supernet
from edgedet.config import SubnetConfig, TargetSpec
from edgedet.data.coco import CocoDetection
from edgedet.deploy import benchmark_artifact, compile_subnet
from edgedet.evaluate import evaluate_runner, evaluate_subnets

SUB = "p24-r192-w2-d1-q25"


def _target(backend, precisions, **kw):
    return TargetSpec(name=f"t_{backend}", backend=backend, precisions=precisions,
                      runtime={"threads": 1}, benchmark={"warmup": 2, "runs": 5, "min_duration_s": 0}, **kw)


@pytest.fixture(scope="module")
def calib_recipe(tmp_path_factory, synth_data):
    p = tmp_path_factory.mktemp("calib") / "recipe.yaml"
    p.write_text(f"dataset: {synth_data}\nsplit: train\nimages: 4\nseed: 0\n")
    return p


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_fp32_artifact_matches_torch_and_is_sealed(tiny_net, backend, tmp_path):
    art = compile_subnet(tiny_net, SUB, _target(backend, ["fp32"]), "fp32", tmp_path / "a")
    assert max(art.metadata["max_abs_diff_vs_torch"].values()) <= 1e-4
    again = Artifact.open(tmp_path / "a")
    assert again.files == art.files and not again.verify()
    for f, h in again.files.items():
        assert sha256(tmp_path / "a" / f) == h
    assert "runtime/python/edgedet_runtime/runners.py" in again.files
    ov = {"pin_threads": False, "openvino_device": "CPU", "openvino_hint": "LATENCY"}  # the target's, recorded
    assert again.runtime_options == dict({"threads": 1}, **(ov if backend == "openvino" else {}))
    # independent input through the loaded runner
    runner = get_backend(backend).load(again, {"threads": 1})
    x = torch.rand(2, 3, 192, 192, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = tiny_net.extract(SubnetConfig.parse(SUB, tiny_net.cfg))(x)
    got = runner.infer(x.numpy())
    for a, b in zip(got, ref):
        assert np.abs(np.asarray(a) - b.numpy()).max() <= 1e-4
    (tmp_path / "a" / again.model_file).write_bytes(b"tampered")
    assert again.verify() == [again.model_file]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_artifact_runs_and_is_evaluated_from_its_own_outputs(tiny_net, backend, tmp_path, calib_recipe,
                                                                   synth_data):
    t = _target(backend, ["fp32", "int8"])
    fp = compile_subnet(tiny_net, SUB, t, "fp32", tmp_path / "fp")
    q = compile_subnet(tiny_net, SUB, t, "int8", tmp_path / "q", calibration=calib_recipe)
    size = lambda a: sum((a.dir / f).stat().st_size for f in a.files if not f.startswith("runtime/"))  # noqa: E731
    assert q.metadata["quantization"] and size(q) < 0.6 * size(fp)
    be = get_backend(backend)
    rq, rf = be.load(q, {"threads": 1}), be.load(fp, {"threads": 1})
    x = np.random.default_rng(0).random((1, 3, 192, 192), dtype=np.float32)
    (bq, lq), (_, lf) = rq.infer(x), rf.infer(x)
    assert np.isfinite(bq).all() and not np.allclose(lq, lf)  # really quantized
    assert np.corrcoef(lq.ravel(), lf.ravel())[0, 1] > 0.8  # same function, with quantization noise
    ds = CocoDetection(synth_data, "valid")
    ap_q = evaluate_runner(rq.infer, 192, ds, batch_size=1)
    ap_f = evaluate_runner(rf.infer, 192, ds, batch_size=1)
    ap_t = evaluate_subnets(tiny_net, [SubnetConfig.parse(SUB, tiny_net.cfg)], ds)[SUB]
    assert ap_f == pytest.approx(ap_t, abs=1e-6)  # fp32 artifact == torch through the same evaluator
    assert set(ap_q) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}


def test_precision_a_backend_lacks_is_unsupported(tiny_net, tmp_path):
    with pytest.raises(Unsupported, match="unsupported: onnxruntime has no fp16"):
        compile_subnet(tiny_net, SUB, _target("onnxruntime", ["fp32"]), "fp16", tmp_path / "x")


def test_openvino_bf16_reports_what_this_cpu_lacks(tiny_net, tmp_path):
    import openvino as ov

    art = compile_subnet(tiny_net, SUB, _target("openvino", ["bf16"]), "bf16", tmp_path / "b")
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" in caps:
        assert get_backend("openvino").load(art, {"threads": 1}).info()["inference_precision"] == "bf16"
    else:
        with pytest.raises(Unsupported, match="no native bf16"):
            get_backend("openvino").load(art, {"threads": 1})
        row = benchmark_artifact(art, _target("openvino", ["bf16"]), with_ap=False)
        assert row["status"].startswith("unsupported: ")


def test_benchmark_row_has_conditions(tiny_net, tmp_path, synth_data):
    t = _target("onnxruntime", ["fp32"])
    art = compile_subnet(tiny_net, SUB, t, "fp32", tmp_path / "a")
    row = benchmark_artifact(art, t, data=synth_data)
    lat = row["latency"]
    assert row["status"] == "ok" and lat["runs"] >= 5 and lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
    assert lat["runtime"]["runtime"] == "onnxruntime" and lat["runtime"]["threads"] == 1
    assert lat["device"]["cores"] >= 1 and "cpu" in lat["device"] and lat["warmup"] == 2
    assert 0 <= row["ap"]["AP50"] <= 1


def test_checkpoint_to_artifact_via_cli(tiny_net, tmp_path):
    import subprocess
    import sys

    ck = save_supernet(tiny_net, tmp_path / "n.safetensors")
    p = subprocess.run([sys.executable, "-m", "edgedet.cli", "compile", "-c", str(ck), "-s", SUB, "-t",
                        "targets/local_cpu.yaml", "-o", str(tmp_path / "art")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "edgedet.cli", "bench", str(tmp_path / "art"), "--no-ap", "--json"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    import json

    assert json.loads(p.stdout)[0]["latency"]["p50_ms"] > 0


@pytest.mark.slow
def test_openvino_accuracy_controlled_int8_keeps_the_ap_drop(tmp_path):
    """NNCF reverts layers to float until AP (pycocotools, same evaluator) drops at most max_ap_drop; the compile
    measures the drop of what ships (the runner's settings) and records it. (Here the plain int8 model already
    loses less than the bound; a bound NNCF cannot meet is refused as unsupported rather than shipped.)"""
    from edgedet.data.demo import DEMO_CHECKPOINT, demo_data
    from edgedet.evaluate import Subset
    from edgedet.checkpoint import load_supernet

    net = load_supernet(DEMO_CHECKPOINT)
    sub = "p16-r192-w2-d1-q25"
    val = Subset(CocoDetection(demo_data(), "valid"), range(24))
    t = _target("openvino", ["fp32", "int8"], calibration=None)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: demo\nimages: 16\n")
    fp = compile_subnet(net, sub, t, "fp32", tmp_path / "fp")
    q = compile_subnet(net, sub, t, "int8", tmp_path / "q", calibration=recipe,
                       options={"accuracy_control": {"dataset": val, "max_ap_drop": 0.01}})
    info = q.metadata["quantization"]
    assert info["accuracy_control"] is True
    be = get_backend("openvino")
    ap_fp = evaluate_runner(be.load(fp, {"threads": 1}).infer, 192, val, batch_size=1)["AP"]
    ap_q = evaluate_runner(be.load(q, {"threads": 1}).infer, 192, val, batch_size=1)["AP"]
    assert ap_fp > 0.02  # a real model, so the control has something to keep
    assert ap_fp - ap_q <= 0.01 + 1e-9, (ap_fp, ap_q)
    assert abs(info["ap_drop"] - (ap_fp - ap_q)) < 2e-3  # the recorded drop is the shipped one
