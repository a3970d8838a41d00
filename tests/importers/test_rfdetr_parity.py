"""Parity of imported RF-DETR checkpoints with the `rfdetr` package's own forward pass, for every detection model
rfdetr 1.11 builds (edgedet.importers.rfdetr_config.LAYOUTS: Nano, Small, Medium, Large, Base and the older
ViT-B Large), each imported from a file with `args` and from a bare {"model": state_dict}, at its native subnet and
three other knob settings (edgedet.importers.rfdetr_parity.settings: decoder depth and queries, resolution,
windows).

Needs the `rfdetr` package (not an edgedet dependency) and is skipped without it. With the CPU torch, PyPI's
torchvision does not import; benchmarks/rfdetr_env holds a pure-Python stand-in (its docstring has the setup:
`PYTHONPATH=benchmarks/rfdetr_env:/tmp/rfenv:.`). Models are random with every parameter + N(0, 0.02).
"""
from __future__ import annotations

import pytest
import torch

from edgedet.checkpoint import load_supernet
from edgedet.config import SubnetConfig
from edgedet.importers import import_rfdetr
from edgedet.importers.rfdetr_config import LAYOUTS
from edgedet.importers.rfdetr_parity import MEAN, STD, compare, offline_rfdetr, save_random, settings

TOL = 1e-4
TIE = 1e-4  # encoder scores closer than this have no defined top-k order (float noise decides)
LAYOUT = {lay.model: lay for lay in LAYOUTS}


def _rfdetr():
    try:
        return offline_rfdetr()
    except Exception as e:  # not installed, or its torchvision does not import with the CPU torch
        pytest.skip(f"rfdetr is not importable ({type(e).__name__}: {str(e)[:80]}); the parity tests need the rfdetr "
                    "package next to edgedet (see benchmarks/rfdetr_env)")


@pytest.fixture(scope="module", params=list(LAYOUT))
def imported(request, tmp_path_factory):
    """(rfdetr class, file with args, {"args": net, "bare": net}, layout) for one layout."""
    rfdetr = _rfdetr()
    d = tmp_path_factory.mktemp(request.param)
    with_args, bare = save_random(request.param, d)
    nets = {}
    for tag, ck in (("args", with_args), ("bare", bare)):
        import_rfdetr(ck, d / f"{tag}.safetensors")
        nets[tag] = load_supernet(d / f"{tag}.safetensors")
    return getattr(rfdetr, request.param), with_args, nets, LAYOUT[request.param]


def test_bare_checkpoint_gets_the_layout_defaults(imported):
    _, _, nets, lay = imported
    a, b = nets["args"].cfg, nets["bare"].cfg
    assert a.model_dump(exclude={"name"}) == b.model_dump(exclude={"name"})
    assert a.name == b.name == lay.name
    native = SubnetConfig.parse(settings(lay)[0][0], a)
    assert lay.resolution in a.resolutions and native.windows in a.windows and a.taps == list(lay.taps)
    assert a.category_ids == list(range(91)) and a.class_names[1] == "person"  # rfdetr's COCO head
    for k, v in nets["args"].state_dict().items():
        assert torch.equal(v, nets["bare"].state_dict()[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("setting", range(4), ids=["native", "decoder-queries", "resolution", "windows"])
def test_parity_with_rfdetr(imported, setting):
    cls, ck, nets, lay = imported
    sid, kw = settings(lay)[setting]
    rf = cls(pretrain_weights=str(ck), device="cpu", **kw).model.model.eval()  # rfdetr's own loader
    for tag, net in nets.items():
        s = SubnetConfig.parse(sid, net.cfg)
        diff = compare(rf, net.extract(s), s.resolution, tie=TIE)
        assert diff is not None, f"{sid}: every input draw had near-tied encoder scores at the top-k"
        print(f"\n{lay.model} {sid} ({tag}, rfdetr built with {kw or 'defaults'}): max abs diff boxes "
              f"{diff[0]:.2e} logits {diff[1]:.2e}")
        assert max(diff[:2]) <= TOL, (tag, diff)


@pytest.mark.slow
def test_onnx_export_matches_rfdetr(imported, tmp_path):
    import onnx
    import onnxruntime as ort

    from edgedet.model.export import export_onnx

    cls, ck, nets, lay = imported
    if lay.model != "RFDETRNano":
        pytest.skip("ONNX parity is checked on the Nano layout (the export path is the same for every layout)")
    net = nets["args"]
    s = SubnetConfig.parse(settings(lay)[0][0], net.cfg)
    res = export_onnx(net.extract(s), tmp_path / "nano.onnx", class_names=net.cfg.class_names, check=True)
    model = onnx.load(str(res.path))
    topk = [n for n in model.graph.node if n.op_type == "TopK"]
    assert len(topk) == 1  # the two-stage query selection; expose its indices to match rows
    model.graph.output.append(onnx.helper.make_tensor_value_info(topk[0].output[1], onnx.TensorProto.INT64, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rf = cls(pretrain_weights=str(ck), device="cpu").model.model.eval()
    for seed in range(8):
        x = torch.rand(1, 3, s.resolution, s.resolution, generator=torch.Generator().manual_seed(seed))
        cap = []
        h = rf.transformer.enc_out_class_embed[0].register_forward_hook(lambda m, i, o: cap.append(o))
        with torch.no_grad():
            out = rf((x - MEAN) / STD)
        h.remove()
        scores = cap[0].max(-1).values
        boxes, logits, idx = sess.run(None, {"images": x.numpy()})
        ref = scores.topk(300, 1).indices
        if not torch.equal(ref, torch.from_numpy(idx)):
            assert (scores.gather(1, ref) - scores.gather(1, torch.from_numpy(idx))).abs().max().item() < TIE
            continue
        db = float((torch.from_numpy(boxes) - out["pred_boxes"]).abs().max())
        dl = float((torch.from_numpy(logits) - out["pred_logits"]).abs().max())
        print(f"\nONNX Runtime vs rfdetr {s.id}: boxes {db:.2e} logits {dl:.2e} (input draw {seed})")
        assert db <= TOL and dl <= TOL
        return
    pytest.fail("every input draw had near-tied encoder scores at the top-k")
