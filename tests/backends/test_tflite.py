"""LiteRT backend: litert-torch conversion of a random tiny subnet, checked against torch in ai-edge-litert.

The conversion tests need the `litert` extra (litert-torch + ai-edge-litert) and skip without it; the interface
tests (precisions, options, output identification, missing extra) run everywhere."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from edgedet.backends import get_backend
from edgedet.backends.base import Artifact, Unsupported
from edgedet.backends.tflite import BACKEND, TFLiteBackend
from edgedet.runtime.runners import Unsupported as RunnerUnsupported, output_indices
from edgedet.config import SubnetConfig
from edgedet.errors import ConfigError, MissingExtraError

SUBNET = "p24-r192-w2-d1-q25"
SUBNET_D0 = "p24-r192-w2-d0-q25"

_reason = BACKEND.available()
_skip = pytest.mark.skipif(_reason is not None, reason=f"LiteRT conversion tests need the litert extra: {_reason}")


def needs_litert(test):
    """Converts with litert-torch (10-35 s on 2 cores): skipped without the extra, marked slow."""
    return pytest.mark.slow(_skip(test))


def _meta(net, s: SubnetConfig) -> dict:
    return {"subnet": s.id, "resolution": s.resolution, "num_classes": net.cfg.num_classes,
            "class_names": net.cfg.class_names}


def _compile(net, subnet: str, precision: str, out, **options):
    s = SubnetConfig.parse(subnet, net.cfg)
    module = net.extract(s)
    art = BACKEND.compile(None, precision, out, None, dict(options, torch_module=module), _meta(net, s))
    return art, module


def _images(n: int, r: int = 192, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, r, r, generator=torch.Generator().manual_seed(seed))


def _torch_out(module, x: torch.Tensor):
    with torch.no_grad():
        b, l = module(x)
    return b.numpy(), l.numpy()


def _set_diffs(ref_b, ref_l, b, l) -> dict:
    """Order-free closeness for quantized models, where top-k query selection may pick or order queries
    differently: sorted per-query best logits, and for each reference box the nearest output box (the worst of the
    5 best-scored reference queries, and the median over all)."""
    out = {"sorted_score": 0.0, "top5_nearest_box": 0.0, "median_nearest_box": 0.0}
    for i in range(ref_b.shape[0]):
        rs, s = ref_l[i].max(-1), l[i].max(-1)
        near = np.abs(ref_b[i][:, None] - b[i][None]).max(-1).min(1)
        out["sorted_score"] = max(out["sorted_score"], float(np.abs(np.sort(rs) - np.sort(s)).max()))
        out["top5_nearest_box"] = max(out["top5_nearest_box"], float(near[np.argsort(-rs)[:5]].max()))
        out["median_nearest_box"] = max(out["median_nearest_box"], float(np.median(near)))
    return out


# ------------------------------------------------------------------------------------------------ everywhere
def test_precisions_and_bf16_unsupported(tmp_path):
    assert get_backend("tflite") is BACKEND and isinstance(BACKEND, TFLiteBackend)
    assert BACKEND.name == "tflite" and BACKEND.precisions == ("fp32", "fp16", "int8")
    with pytest.raises(Unsupported, match="tflite has no bf16"):
        BACKEND.check_precision("bf16")
    with pytest.raises(Unsupported, match="bf16"):
        BACKEND.compile(None, "bf16", tmp_path / "a", None, {"torch_module": object()}, {"resolution": 192})
    assert not (tmp_path / "a").exists()


def test_needs_torch_module_and_valid_int8_mode(tmp_path, tiny_net):
    with pytest.raises(ConfigError, match="torch_module"):
        BACKEND.compile(tmp_path / "m.onnx", "fp32", tmp_path / "a", None, {}, {"resolution": 192})
    s = SubnetConfig.parse(SUBNET, tiny_net.cfg)
    with pytest.raises(ConfigError, match="tflite_int8"):
        BACKEND.compile(None, "int8", tmp_path / "a", None, {"torch_module": tiny_net.extract(s),
                                                              "tflite_int8": "full"}, _meta(tiny_net, s))


def test_missing_converter_is_a_missing_extra_error(tmp_path, tiny_net, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # import litert_torch -> ImportError
    assert "edgedet[litert]" in BACKEND.available()
    s = SubnetConfig.parse(SUBNET, tiny_net.cfg)
    with pytest.raises(MissingExtraError, match=r"litert_torch.*LiteRT conversion.*edgedet\[litert\]"):
        BACKEND.compile(None, "fp32", tmp_path / "a", None, {"torch_module": tiny_net.extract(s)},
                        _meta(tiny_net, s))


def test_output_indices_by_name_with_one_fallback_rule():
    d = lambda name, idx, shape: {"name": name, "index": idx, "shape": np.array(shape)}  # noqa: E731
    # by name, whatever the order and shapes
    assert output_indices([d("serving_default_logits_output", 7, [1, 25, 4]),
                           d("serving_default_boxes_output", 3, [1, 25, 4])], 4) == (3, 7)
    # unnamed outputs: boxes is the one whose last dimension is 4
    assert output_indices([d("StatefulPartitionedCall:1", 5, [1, 25, 80]),
                           d("StatefulPartitionedCall:0", 4, [1, 25, 4])], 80) == (4, 5)
    assert output_indices([d("out_a", 1, [1, 9, 6]), d("out_b", 2, [1, 9, 4])]) == (2, 1)
    # anything else is refused rather than guessed
    with pytest.raises(RunnerUnsupported, match="cannot tell boxes from logits"):
        output_indices([d("output_0", 1, [1, 9, 4]), d("output_1", 2, [1, 9, 4])], 4)
    with pytest.raises(RunnerUnsupported, match="only one of them"):
        output_indices([d("boxes", 1, [1, 9, 4]), d("output_1", 2, [1, 9, 6])], 6)
    with pytest.raises(RunnerUnsupported, match="2 outputs"):
        output_indices([d("boxes", 1, [1, 9, 4])], 6)


# ------------------------------------------------------------------------------------ with the litert extra
@pytest.fixture(scope="module")
def fp32_artifact(tiny_net, tmp_path_factory):
    return _compile(tiny_net, SUBNET, "fp32", tmp_path_factory.mktemp("tflite") / "fp32")


@needs_litert
@pytest.mark.timeout(120)
def test_fp32_matches_torch(fp32_artifact):
    art, module = fp32_artifact
    assert art.model_path.name == "model.tflite" and art.model_path.stat().st_size > 0
    assert art.verify() == [] and (art.dir / "artifact.json").is_file()
    m = art.metadata
    assert m["converter"] == "litert-torch" and m["converter_version"] and m["runtime_version"]
    assert m["quantization"] is None and m["input"]["shape"] == [1, 3, 192, 192] and m["input"]["layout"] == "NCHW"
    runner = BACKEND.load(art, {"threads": 1})
    x = _images(2)
    ref_b, ref_l = _torch_out(module, x)
    b, l = runner.infer(x.numpy())  # batch 2: one invoke per image
    assert b.shape == (2, 25, 4) and l.shape == (2, 25, module.num_classes)
    assert np.abs(ref_b).max() > 0.01 and ref_b.std() > 1e-3  # the box head is exercised
    assert np.abs(b - ref_b).max() <= 1e-4, np.abs(b - ref_b).max()
    assert np.abs(l - ref_l).max() <= 1e-4, np.abs(l - ref_l).max()
    info = runner.info()
    assert info["runtime"] in ("ai-edge-litert", "tflite-runtime", "tensorflow-lite") and info["runtime_version"]
    assert info["precision"] == "fp32" and info["threads"] == 1 and info["input_layout"] == "NCHW"


@needs_litert
@pytest.mark.timeout(120)
def test_runner_from_artifact_folder(fp32_artifact):
    art, module = fp32_artifact
    reopened = Artifact.open(art.dir)
    assert reopened.backend == "tflite" and reopened.precision == "fp32" and reopened.verify() == []
    runner = get_backend("tflite").load(reopened, {"threads": None})
    x = _images(1, seed=3)
    b, l = runner.infer(x.numpy()[0])  # a single [3,R,R] image is batch 1
    ref_b, ref_l = _torch_out(module, x)
    assert b.shape == ref_b.shape and np.abs(b - ref_b).max() <= 1e-4 and np.abs(l - ref_l).max() <= 1e-4
    with pytest.raises(ValueError, match=r"\[B,3,192,192\]"):
        runner.infer(np.zeros((1, 3, 160, 160), np.float32))


@needs_litert
@pytest.mark.timeout(120)
def test_fp32_depth0_matches_torch(tiny_net, tmp_path):
    art, module = _compile(tiny_net, SUBNET_D0, "fp32", tmp_path / "d0")
    x = _images(1, seed=1)
    ref_b, ref_l = _torch_out(module, x)
    b, l = BACKEND.load(art, {"threads": 1}).infer(x.numpy())
    assert np.abs(b - ref_b).max() <= 1e-4 and np.abs(l - ref_l).max() <= 1e-4


@needs_litert
@pytest.mark.timeout(120)
def test_fp16_weights_close(tiny_net, fp32_artifact, tmp_path):
    art, module = _compile(tiny_net, SUBNET, "fp16", tmp_path / "fp16")  # full path: convert, then rewrite
    q = art.metadata["quantization"]
    assert q["mode"] == "weight_only_fp16" and q["weights"] == "float16"
    assert art.metadata["tensor_dtypes"].get("float16", 0) > 0
    fp32_size = fp32_artifact[0].model_path.stat().st_size
    assert art.model_path.stat().st_size < 0.6 * fp32_size
    x = _images(1, seed=2)
    ref_b, ref_l = _torch_out(module, x)
    runner = BACKEND.load(art, {"threads": 1})
    b, l = runner.infer(x.numpy())
    assert runner.info()["precision"] == "fp16"
    assert np.isfinite(b).all() and np.isfinite(l).all()
    assert np.abs(b - ref_b).max() <= 5e-3 and np.abs(l - ref_l).max() <= 5e-2


@needs_litert
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_int8_dynamic_range_close(tiny_net, fp32_artifact, tmp_path, mode):
    fp32_art, module = fp32_artifact
    art, _ = _compile(tiny_net, SUBNET, "int8", tmp_path / "int8", tflite_int8=mode,
                      tflite_float_model=fp32_art.model_path)  # rewrite the fp32 file: no second conversion
    q = art.metadata["quantization"]
    assert q["mode"] == ("dynamic_range" if mode == "dynamic" else "weight_only_int8") and q["calibration"] == "none"
    assert art.metadata["float_model_reused"] and art.metadata["tensor_dtypes"].get("int8", 0) > 0
    assert art.model_path.stat().st_size < 0.4 * fp32_art.model_path.stat().st_size
    x = _images(2, seed=4)
    ref_b, ref_l = _torch_out(module, x)
    b, l = BACKEND.load(art, {"threads": 1}).infer(x.numpy())
    assert b.shape == ref_b.shape and l.shape == ref_l.shape and np.isfinite(b).all() and np.isfinite(l).all()
    d = _set_diffs(ref_b, ref_l, b, l)
    # int8 weights alone move this random net's logits by up to ~0.5 (a torch fake-quant of the same weights does
    # the same), which reorders top-k: compare sets, not slots
    assert d["sorted_score"] <= 1.0 and d["top5_nearest_box"] <= 0.1 and d["median_nearest_box"] <= 0.02, d


@needs_litert
@pytest.mark.timeout(60)
def test_float_model_from_another_subnet_is_refused(tiny_net, fp32_artifact, tmp_path):
    with pytest.raises(ConfigError, match="input shape"):
        _compile(tiny_net, "p24-r144-w2-d1-q25", "int8", tmp_path / "x",
                 tflite_float_model=fp32_artifact[0].model_path)
