"""D-FINE FDR head: W(n) by hand, edge offsets <-> boxes, truncation by depth, static extraction, ONNX parity,
costs, and checkpoints with and without the flag."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from edgedet.checkpoint import load_supernet, read_header, save_supernet
from edgedet.config import SubnetConfig, preset
from edgedet.model.cost import subnet_cost
from edgedet.model.export import compare_onnx_torch, export_onnx
from edgedet.model.heads import box_to_distance, distance_to_box, fdr_weights
from edgedet.model.supernet import Supernet

from ..conftest import randomize
from .test_supernet import random_subnets


def test_weighting_function_by_hand():
    # N = 4, a = 0.5, c = 4: s = (0.5*4 + 1)^(2/2) = 3 -> [-4, -(3-1), 0, 3-1, 4]
    assert fdr_weights(4, 0.5, 4.0).tolist() == [-4.0, -2.0, 0.0, 2.0, 4.0]
    # N = 6: s = 3^(1/2); inner values s - 1 and s^2 - 1 = 2
    s = math.sqrt(3)
    torch.testing.assert_close(fdr_weights(6, 0.5, 4.0), torch.tensor([-4, -2, -(s - 1), 0, s - 1, 2, 4.0]))
    # N = 8, a = 0.25, c = 8: s = 3^(1/3), values s^k - 1 for k = 1..3 (s^3 - 1 = a c = 2), ends 2 a c = 4
    s = 3 ** (1 / 3)
    w = fdr_weights(8, 0.25, 8.0)
    torch.testing.assert_close(w, torch.tensor([-4, -2, -(s * s - 1), -(s - 1), 0, s - 1, s * s - 1, 2, 4.0]))
    w32 = fdr_weights(32)
    assert len(w32) == 33 and w32[16] == 0 and torch.all(w32[1:] > w32[:-1])
    torch.testing.assert_close(w32, -w32.flip(0))
    with pytest.raises(ValueError):
        fdr_weights(5)


def test_offsets_and_boxes_invert_each_other():
    anchor = torch.tensor([[0.5, 0.4, 0.4, 0.2]])
    # offset 0 keeps the anchor; d_left = 1 moves x1 out by w/c = 0.1
    torch.testing.assert_close(distance_to_box(anchor, torch.zeros(1, 4), 4.0), anchor)
    b = distance_to_box(anchor, torch.tensor([[1.0, 0.0, 0.0, 0.0]]), 4.0)
    torch.testing.assert_close(b, torch.tensor([[0.45, 0.4, 0.5, 0.2]]))
    xyxy = torch.tensor([[0.2, 0.25, 0.75, 0.6]])
    d = box_to_distance(anchor, xyxy, 4.0)
    # d_left = (0.5 - 0.2) / 0.1 - 2 = 1; d_top = (0.4 - 0.25) / 0.05 - 2 = 1; right (0.75-0.5)/0.1-2 = 0.5; bottom 2
    torch.testing.assert_close(d, torch.tensor([[1.0, 1.0, 0.5, 2.0]]))
    back = distance_to_box(anchor, d, 4.0)
    torch.testing.assert_close(back, torch.tensor([[0.475, 0.425, 0.55, 0.35]]))


@pytest.fixture(scope="module")
def fdr_cfg():
    return preset("tiny").model_copy(update={"fdr": True, "fdr_bins": 16})


@pytest.fixture(scope="module")
def fdr_net(fdr_cfg):
    torch.manual_seed(0)
    return randomize(Supernet(fdr_cfg), seed=1).eval()


def test_truncated_depths_match_the_static_module(fdr_net, fdr_cfg):
    s = SubnetConfig.parse("p16-r192-w2-d3-q50", fdr_cfg)
    x = torch.rand(2, 3, 192, 192, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        layers = fdr_net(x, s, all_layers=True)["layers"]
        for d in range(fdr_cfg.dec_layers + 1):
            sd = s.model_copy(update={"dec_layers": d})
            o = fdr_net(x, sd)
            torch.testing.assert_close(layers[d][1], o["pred_boxes"], atol=1e-6, rtol=0)
            boxes, logits = fdr_net.extract(sd)(x)
            torch.testing.assert_close(boxes, o["pred_boxes"], atol=1e-5, rtol=0)
            torch.testing.assert_close(logits, o["pred_logits"], atol=1e-5, rtol=0)
    # refinement changes boxes from layer to layer (the heads are not trivially zero)
    assert (layers[2][1] - layers[1][1]).abs().max() > 1e-4


def test_training_outputs_carry_corners_anchor_and_pre_box(fdr_cfg):
    net = Supernet(fdr_cfg, groups=2).train()
    s = SubnetConfig.parse("p24-r192-w2-d3-q25", fdr_cfg)
    out = net(torch.rand(2, 3, 192, 192), s, features=True)
    n = fdr_cfg.fdr_bins + 1
    assert out["pred_corners"].shape == (2, 50, 4, n) and out["ref_points"].shape == (2, 50, 4)
    assert len(out["aux_outputs"]) == 2 and all(a["pred_corners"].shape == (2, 50, 4, n) for a in out["aux_outputs"])
    assert not out["ref_points"].requires_grad and out["pre_outputs"]["pred_boxes"].requires_grad
    # zero-initialised distribution heads start at the anchor
    torch.testing.assert_close(out["pred_boxes"], out["ref_points"], atol=1e-6, rtol=0)
    assert [f.shape[-1] for f in out["features"]] == [16, 8]
    (out["pred_boxes"].sum() + out["pred_corners"].sum()).backward()
    assert net.fdr_head.layers[2].layers[-1].weight.grad.abs().sum() > 0
    assert net.fdr_head.layers[0].layers[-1].weight.grad.abs().sum() > 0  # through the residual logits
    # depth 0: no decoder, no FDR outputs
    out0 = net(torch.rand(1, 3, 192, 192), s.model_copy(update={"dec_layers": 0}))
    assert "pred_corners" not in out0 and "pre_outputs" not in out0


def test_fdr_onnx_matches_torch(fdr_net, fdr_cfg, tmp_path):
    import onnx

    subs = [s for s in random_subnets(fdr_cfg, 8, seed=5) if s.dec_layers > 0][:4]
    subs.append(SubnetConfig.parse("p16-r192-w2-d3-q100", fdr_cfg))
    for s in subs:
        module = fdr_net.extract(s)
        res = export_onnx(module, tmp_path / f"{s.id}.onnx", tol=1e-4)
        x = torch.rand(1, 3, s.resolution, s.resolution, generator=torch.Generator().manual_seed(9))
        diffs = compare_onnx_torch(str(res.path), module, x)
        assert max(diffs.values()) <= 1e-4, (s.id, diffs)
        ops = Counter(n.op_type for n in onnx.load(str(res.path)).graph.node)
        assert ops["Softmax"] >= 1 and ops["GridSample"] >= 1


def test_fdr_costs_match_torch_counters(fdr_net, fdr_cfg):
    for s in random_subnets(fdr_cfg, 5, seed=6):
        m = fdr_net.extract(s)
        with FlopCounterMode(display=False) as fc:
            m(torch.rand(1, 3, s.resolution, s.resolution))
        c = subnet_cost(fdr_cfg, s)
        assert c.flops - c.attn_flops == fc.get_total_flops(), s.id
        n = sum(p.numel() for p in m.parameters()) + m.pos_embed.numel() + m.cls_token.numel()
        assert c.params == n, s.id


def test_checkpoints_with_and_without_the_flag(fdr_net, tmp_path):
    from edgedet.data.demo import demo_checkpoint

    cfg, _, _ = read_header(demo_checkpoint())  # written before the flag existed
    assert cfg.fdr is False
    path = save_supernet(fdr_net, tmp_path / "fdr.safetensors")
    net = load_supernet(path)
    assert net.cfg.fdr and net.cfg.fdr_bins == 16 and net.fdr_head is not None
    s = SubnetConfig.parse("p24-r192-w2-d2-q25", net.cfg)
    x = torch.rand(1, 3, 192, 192)
    with torch.no_grad():
        torch.testing.assert_close(net(x, s)["pred_boxes"], fdr_net(x, s)["pred_boxes"])
    with pytest.raises(ValueError, match="even"):
        preset("tiny").model_copy(update={"fdr_bins": 7}).model_validate(
            dict(preset("tiny").model_dump(), fdr_bins=7))
