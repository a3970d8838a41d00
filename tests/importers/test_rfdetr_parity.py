"""Parity of imported RF-DETR checkpoints with the `rfdetr` package's own forward pass, for every detection model
rfdetr 1.11 builds (edgedet.importers.rfdetr_config.LAYOUTS: Nano, Small, Medium, Large, Base and the older
ViT-B Large), each imported from a file with `args` and from a bare {"model": state_dict}, at its native subnet and
at three other knob settings (decoder depth and queries, resolution, windows).

Needs the `rfdetr` package (not an edgedet dependency) and is skipped without it. With the CPU torch, PyPI's
torchvision does not import; benchmarks/rfdetr_env holds a pure-Python stand-in (see its docstring for the setup:
`PYTHONPATH=benchmarks/rfdetr_env:/tmp/rfenv:.`). Models are random (rfdetr's init, pretrain_weights=None, no
download) with every parameter + N(0, 0.02), so box heads and reference embeddings are non-zero.
"""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

from edgedet.checkpoint import load_supernet
from edgedet.config import SubnetConfig
from edgedet.importers import import_rfdetr
from edgedet.importers.rfdetr_config import LAYOUTS, Layout

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
TOL = 1e-4
TIE = 1e-4  # encoder scores closer than this have no defined top-k order (float noise decides)
LAYOUT = {lay.model: lay for lay in LAYOUTS}


def _rfdetr():
    try:
        import rfdetr
        from rfdetr.models.backbone import dinov2
    except Exception as e:  # not installed, or its torchvision does not import with the CPU torch
        pytest.skip(f"rfdetr is not importable ({type(e).__name__}: {str(e)[:80]}); the parity tests need the rfdetr "
                    "package next to edgedet (see benchmarks/rfdetr_env)")
    warnings.filterwarnings("ignore")
    logging.getLogger("rf-detr").setLevel(logging.ERROR)
    # pretrain_weights=None makes the patch-14 models fetch DINOv2 weights from the hub: build them from the config
    backbone = dinov2.WindowedDinov2WithRegistersBackbone
    backbone.from_pretrained = classmethod(lambda cls, name, config=None, **kw: cls(config))
    return rfdetr


def settings(lay: Layout) -> list[tuple[str, dict]]:
    """(subnet id, the rfdetr constructor overrides that build the same network): native, shallower decoder with
    fewer queries, lower resolution, one window."""
    p, r, w, d = lay.patch, lay.resolution, lay.windows, lay.dec_layers
    low = r - 2 * p * w
    return [(f"p{p}-r{r}-w{w}-d{d}-q300", {}),
            (f"p{p}-r{r}-w{w}-d{d - 1}-q100", {"dec_layers": d - 1, "num_queries": 100}),
            (f"p{p}-r{low}-w{w}-d{d}-q300", {"resolution": low}),
            (f"p{p}-r{r}-w1-d{d}-q300", {"num_windows": 1})]


def _plain(v):
    return isinstance(v, (bool, int, float, str, type(None))) or (
        isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) for x in v))


@pytest.fixture(scope="module", params=list(LAYOUT))
def imported(request, tmp_path_factory):
    """(rfdetr class, file with args, {"args": net, "bare": net}) for one layout: a random model saved as rfdetr
    1.11 saves it ({"model", "args": dict, "model_name"}) and as a bare state dict, both imported."""
    rfdetr = _rfdetr()
    cls = getattr(rfdetr, request.param)
    torch.manual_seed(0)
    m = cls(pretrain_weights=None, device="cpu")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.model.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    sd = m.model.model.state_dict()
    args = {k: v for k, v in vars(m.model.args).items() if _plain(v)}
    d = tmp_path_factory.mktemp(request.param)
    with_args, bare = d / "with_args.pth", d / "bare.pth"
    torch.save({"model": sd, "args": args, "model_name": request.param, "rfdetr_version": "1.11.2"}, with_args)
    torch.save({"model": sd}, bare)
    del m, sd
    nets = {}
    for tag, ck in (("args", with_args), ("bare", bare)):
        import_rfdetr(ck, d / f"{tag}.safetensors")
        nets[tag] = load_supernet(d / f"{tag}.safetensors")
    return cls, with_args, nets, LAYOUT[request.param]


def test_bare_checkpoint_gets_the_layout_defaults(imported):
    _, _, nets, lay = imported
    a, b = nets["args"].cfg, nets["bare"].cfg
    assert a.model_dump(exclude={"name"}) == b.model_dump(exclude={"name"})
    assert a.name == b.name == lay.name
    native = SubnetConfig.parse(settings(lay)[0][0], a)
    assert lay.resolution in a.resolutions and native.windows in a.windows and a.taps == list(lay.taps)
    assert a.category_ids == list(range(91)) and a.class_names[1] == "person"  # rfdetr's COCO head
    for k in nets["args"].state_dict():
        assert torch.equal(nets["args"].state_dict()[k], nets["bare"].state_dict()[k]), k


def _compare(rf, module, res: int, draws: int = 8) -> tuple[float, float] | None:
    """(max |d boxes|, max |d logits|) on the first input whose top-k query order is unambiguous; None if every draw
    had near-tied encoder scores; AssertionError if the selections really differ."""
    for seed in range(draws):
        x = torch.rand(1, 3, res, res, generator=torch.Generator().manual_seed(seed))
        cap_rf, cap_ed = [], []
        h1 = rf.transformer.enc_out_class_embed[0].register_forward_hook(lambda m, i, o: cap_rf.append(o))
        h2 = module.query_select.class_embed.register_forward_hook(lambda m, i, o: cap_ed.append(o))
        with torch.no_grad():
            out = rf((x - MEAN) / STD)
            boxes, logits = module(x)
        h1.remove()
        h2.remove()
        k = boxes.shape[1]
        assert out["pred_boxes"].shape == boxes.shape and out["pred_logits"].shape == logits.shape
        scores = cap_rf[0].max(-1).values
        i_rf, i_ed = scores.topk(k, 1).indices, cap_ed[0].max(-1).values.topk(k, 1).indices
        if not torch.equal(i_rf, i_ed):
            gap = (scores.gather(1, i_rf) - scores.gather(1, i_ed)).abs()[i_rf != i_ed].max().item()
            assert gap < TIE, f"top-k query selection differs beyond float noise (score gap {gap:.2e})"
            continue
        return ((boxes - out["pred_boxes"]).abs().max().item(), (logits - out["pred_logits"]).abs().max().item())
    return None


@pytest.mark.slow
@pytest.mark.parametrize("setting", range(4), ids=["native", "decoder-queries", "resolution", "windows"])
def test_parity_with_rfdetr(imported, setting):
    cls, ck, nets, lay = imported
    sid, kw = settings(lay)[setting]
    rf = cls(pretrain_weights=str(ck), device="cpu", **kw).model.model.eval()  # rfdetr's own loader
    for tag, net in nets.items():
        s = SubnetConfig.parse(sid, net.cfg)
        diff = _compare(rf, net.extract(s), s.resolution)
        assert diff is not None, f"{sid}: every input draw had near-tied encoder scores at the top-k"
        print(f"\n{lay.model} {sid} ({tag}, rfdetr built with {kw or 'defaults'}): max abs diff boxes "
              f"{diff[0]:.2e} logits {diff[1]:.2e}")
        assert max(diff) <= TOL, (tag, diff)


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
            gap = (scores.gather(1, ref) - scores.gather(1, torch.from_numpy(idx))).abs().max().item()
            assert gap < TIE
            continue
        db = float((torch.from_numpy(boxes) - out["pred_boxes"]).abs().max())
        dl = float((torch.from_numpy(logits) - out["pred_logits"]).abs().max())
        print(f"\nONNX Runtime vs rfdetr {s.id}: boxes {db:.2e} logits {dl:.2e} (input draw {seed})")
        assert db <= TOL and dl <= TOL
        return
    pytest.fail("every input draw had near-tied encoder scores at the top-k")
