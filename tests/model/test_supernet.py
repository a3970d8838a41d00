"""Supernet forward, static extraction, ONNX parity, knob costs and the patch-size resize."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from edgedet.config import SubnetConfig
from edgedet.model.cost import subnet_cost
from edgedet.model.export import compare_onnx_torch, export_onnx


def random_subnets(cfg, n, seed=0):
    rng = random.Random(seed)
    out = set()
    while len(out) < n:
        p, w = rng.choice(cfg.patch_sizes), rng.choice(cfg.windows)
        res = rng.choice([r for r in range(p * w * 2, 400, p * w)])
        s = SubnetConfig(patch=p, resolution=res, windows=w, dec_layers=rng.randint(0, cfg.dec_layers),
                         queries=rng.randint(1, cfg.num_queries))
        if not cfg.subnet_ok(s):
            out.add(s)
    return sorted(out, key=lambda s: s.id)


def test_static_module_equals_supernet_forward(tiny_net, tiny_cfg):
    for s in random_subnets(tiny_cfg, 6, seed=1):
        x = torch.rand(2, 3, s.resolution, s.resolution, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            out = tiny_net(x, s)
            boxes, logits = tiny_net.extract(s)(x)
        assert boxes.shape == (2, s.queries, 4) and logits.shape == (2, s.queries, tiny_cfg.num_classes)
        torch.testing.assert_close(boxes, out["pred_boxes"], atol=1e-5, rtol=0)
        torch.testing.assert_close(logits, out["pred_logits"], atol=1e-5, rtol=0)


def test_all_layers_share_one_pass(tiny_net, tiny_cfg):
    s = SubnetConfig.parse("p16-r192-w2-d3-q50", tiny_cfg)
    x = torch.rand(1, 3, 192, 192)
    with torch.no_grad():
        layers = tiny_net(x, s, all_layers=True)["layers"]
        for d in range(tiny_cfg.dec_layers + 1):
            o = tiny_net(x, s.model_copy(update={"dec_layers": d}))
            torch.testing.assert_close(layers[d][1], o["pred_boxes"], atol=1e-6, rtol=0)
            torch.testing.assert_close(layers[d][0], o["pred_logits"], atol=1e-6, rtol=0)


def test_onnx_matches_torch_for_20_random_subnets(tiny_net, tiny_cfg, tmp_path):
    subnets = random_subnets(tiny_cfg, 20, seed=0)
    assert len({s.dec_layers for s in subnets}) > 2 and len({s.patch for s in subnets}) > 1
    worst = 0.0
    for s in subnets:
        module = tiny_net.extract(s)
        res = export_onnx(module, tmp_path / f"{s.id}.onnx", tol=1e-4)
        # an independent input, batch 1, on the written file
        x = torch.rand(1, 3, s.resolution, s.resolution, generator=torch.Generator().manual_seed(7))
        diffs = compare_onnx_torch(str(res.path), module, x)
        worst = max(worst, *diffs.values(), *res.max_abs_diff.values())
        assert max(diffs.values()) <= 1e-4, (s.id, diffs)
    assert worst > 0  # the comparison saw real numbers


def test_onnx_io_contract(tiny_net, tiny_cfg, tmp_path):
    import onnx

    s = SubnetConfig.parse("p16-r192-w2-d2-q25", tiny_cfg)
    path = export_onnx(tiny_net.extract(s), tmp_path / "m.onnx").path
    m = onnx.load(str(path))
    assert m.opset_import[0].version >= 17
    assert [i.name for i in m.graph.input] == ["images"]
    assert [o.name for o in m.graph.output] == ["boxes", "logits"]
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 192, 192]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["edgedet.subnet"] == s.id


def test_each_knob_moves_flops_the_expected_way(tiny_cfg):
    base = SubnetConfig.parse("p16-r288-w1-d2-q50", tiny_cfg)
    f = lambda **kw: subnet_cost(tiny_cfg, base.model_copy(update=kw)).flops  # noqa: E731
    b = f()
    assert f(patch=12) > b > f(patch=24)
    assert f(resolution=384) > b > f(resolution=192)
    assert f(windows=2) < b  # windowed attention is cheaper
    assert f(dec_layers=3) > b > f(dec_layers=1) > f(dec_layers=0)
    assert f(queries=100) > b > f(queries=25)


@pytest.mark.parametrize("which", ["smallest", "largest"])
def test_extremes_have_contract_shapes(tiny_net, tiny_cfg, which):
    s = getattr(tiny_cfg, which)()
    for knob_extreme in [s] + [s.model_copy(update={"queries": q}) for q in (1, tiny_cfg.num_queries)]:
        if tiny_cfg.subnet_ok(knob_extreme):
            continue
        boxes, logits = tiny_net.extract(knob_extreme)(torch.rand(1, 3, s.resolution, s.resolution))
        assert boxes.shape == (1, knob_extreme.queries, 4)
        assert logits.shape == (1, knob_extreme.queries, tiny_cfg.num_classes)
        assert torch.isfinite(boxes).all() and torch.isfinite(logits).all()


def test_analytic_flops_and_params_match_torch_counters(tiny_net, tiny_cfg):
    for s in random_subnets(tiny_cfg, 5, seed=4):
        m = tiny_net.extract(s)
        with FlopCounterMode(display=False) as fc:  # counts convs and linears, not CPU SDPA
            m(torch.rand(1, 3, s.resolution, s.resolution))
        c = subnet_cost(tiny_cfg, s)
        assert c.flops - c.attn_flops == fc.get_total_flops(), s.id
        n = sum(p.numel() for p in m.parameters()) + m.pos_embed.numel() + m.cls_token.numel()
        assert c.params == n, s.id


def _resize_patchwise(x: torch.Tensor, p: int, q: int) -> torch.Tensor:
    """Cut x into p x p patches, resize each on its own (bilinear) to q x q, and tile them back."""
    b, c, h, w = x.shape
    gh, gw = h // p, w // p
    patches = x.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, p, p)
    patches = F.interpolate(patches, size=(q, q), mode="bilinear", align_corners=False)
    return patches.reshape(b, gh, gw, c, q, q).permute(0, 3, 1, 4, 2, 5).reshape(b, c, gh * q, gw * q)


def test_patch_resize_keeps_the_response_to_upsampled_images(tiny_net):
    """PI-resize: the patch-16 embedding of an image equals the patch-24 embedding of the image with each patch
    upsampled to 24 px (same token grid), within 1e-4 relative; resizing the kernel bilinearly does not."""
    vit = tiny_net.backbone
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    up = _resize_patchwise(x, 16, 24)
    whole = F.interpolate(x, scale_factor=1.5, mode="bilinear", align_corners=False)
    with torch.no_grad():
        t16 = F.conv2d(x, vit.patch_kernel(16), stride=16)
        t24 = F.conv2d(up, vit.patch_kernel(24), stride=24)
        t24_whole = F.conv2d(whole, vit.patch_kernel(24), stride=24)
        naive = F.interpolate(vit.patch_kernel(16), size=(24, 24), mode="bilinear") * (16 / 24) ** 2
        t_naive = F.conv2d(up, naive, stride=24)
    scale = t16.abs().max()
    rel = ((t24 - t16).abs().max() / scale).item()
    assert rel < 1e-4, rel
    assert ((t_naive - t16).abs().max() / scale).item() > 100 * rel
    # a whole-image upsampling differs only at patch borders: close, but not exact
    assert ((t24_whole - t16).abs().mean() / t16.abs().mean()).item() < 0.2
    # downsizing is the least-squares fit: bounded, not exact
    x2 = F.interpolate(x, scale_factor=0.75, mode="bilinear", align_corners=False)
    with torch.no_grad():
        t12 = F.conv2d(x2, vit.patch_kernel(12), stride=12)
    assert t12.shape == t16.shape and torch.isfinite(t12).all()


def test_training_mode_groups_and_gradients(tiny_cfg):
    from edgedet.model.supernet import Supernet

    net = Supernet(tiny_cfg, groups=3).train()
    s = SubnetConfig.parse("p24-r192-w2-d2-q25", tiny_cfg)
    out = net(torch.rand(2, 3, 192, 192), s)
    assert out["pred_logits"].shape == (2, 75, tiny_cfg.num_classes)
    assert len(out["aux_outputs"]) == 1 and out["enc_outputs"]["pred_boxes"].shape == (2, 75, 4)
    enc = out["enc_outputs"]
    (out["pred_logits"].sum() + out["pred_boxes"].sum() + enc["pred_boxes"].sum() + enc["pred_logits"].sum()).backward()
    assert net.backbone.patch_embed.proj.weight.grad.abs().sum() > 0  # flows through the PI-resized kernel
    assert net.query_select[2].class_embed.weight.grad is not None
    # group isolation: queries of group 0 do not see group 1 in self-attention
    net.eval()
    with torch.no_grad():
        e = net(torch.rand(1, 3, 192, 192), s)
    assert e["pred_logits"].shape == (1, 25, tiny_cfg.num_classes)


def test_windows_change_the_computation_but_not_shapes(tiny_net, tiny_cfg):
    x = torch.rand(1, 3, 192, 192)
    with torch.no_grad():
        a = tiny_net(x, SubnetConfig.parse("p16-r192-w1-d1-q25", tiny_cfg))["pred_logits"]
        b = tiny_net(x, SubnetConfig.parse("p16-r192-w2-d1-q25", tiny_cfg))["pred_logits"]
    assert a.shape == b.shape and not torch.allclose(a, b)
    assert np.isfinite(b.numpy()).all()
