"""Distillation and FDR losses against hand-computed cases: DSI cosine loss, the GAM update, FGL bin targets and
weights, DDF (T = 5, T^2 KL, IoU / class-probability weights), GO-LSD's union of matches; the view bookkeeping that
lets cached teacher features follow the augmentation."""
from __future__ import annotations

import math

import pytest
import torch

from edgedet.config import SubnetConfig, preset
from edgedet.data.transforms import batch_resize, crop, hflip
from edgedet.model.heads import fdr_weights
from edgedet.model.supernet import Supernet
from edgedet.train.criterion import SetCriterion, bin_targets, ddf_loss, loss_ddf, loss_fgl, unite_matches
from edgedet.train.distill import GAM, DSIProjector, dsi_loss, warp_views

# ------------------------------------------------------------------------------------------------------ DSI


def test_dsi_loss_by_hand():
    s = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    t = torch.tensor([[[0.0, 1.0], [2.0, 2.0]]])  # cos 0 and cos 1 -> mean(1 - cos) = 0.5
    assert dsi_loss(s, t).item() == pytest.approx(0.5)
    s = torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]]])
    t = torch.tensor([[[4.0, 3.0]], [[-1.0, 0.0]]])  # cos 24/25 and -1 -> (0.04 + 2) / 2
    assert dsi_loss(s, t).item() == pytest.approx(1.02)
    # scale invariant, teacher gets no gradient
    s = torch.randn(2, 5, 3, requires_grad=True)
    t = torch.randn(2, 5, 3, requires_grad=True)
    assert dsi_loss(3 * s, 0.5 * t).item() == pytest.approx(dsi_loss(s, t).item(), abs=1e-6)
    dsi_loss(s, t).backward()
    assert s.grad is not None and t.grad is None


def test_dsi_projector_tokens():
    p = DSIProjector(4, 6)
    x = torch.randn(2, 4, 3, 5)
    out = p(x)
    assert out.shape == (2, 15, 6)
    torch.testing.assert_close(out[1, 7], p.proj(x[1, :, 1, 2]))  # token 7 = row 1, column 2


# ------------------------------------------------------------------------------------------------------ GAM


def test_gam_update_by_hand():
    f = GAM.new_lambda
    # inside [rho - delta, rho + delta]: unchanged
    assert f(20.0, 20.0, 11.5, 11, 1) == 20.0 and f(20.0, 20.0, 10.0, 11, 1) == 20.0
    # p_bar 5% < 10%: p* = 0.10, factor = 0.10 * 0.95 / (0.05 * 0.90) = 2.1111
    assert f(20.0, 20.0, 5.0, 11, 1) == pytest.approx(20 * 0.095 / 0.045)
    # p_bar 30% > 12%: p* = 0.12, factor = 0.12 * 0.70 / (0.30 * 0.88) = 0.31818
    assert f(20.0, 20.0, 30.0, 11, 1) == pytest.approx(20 * 0.084 / 0.264)
    # the factor is at least 0.1: p_bar 90% -> 0.12 * 0.1 / (0.9 * 0.88) = 0.01515 -> 0.1
    assert f(20.0, 20.0, 90.0, 11, 1) == pytest.approx(2.0)
    # clamped to [lambda0 / 10, 10 lambda0]
    assert f(2.5, 20.0, 90.0, 11, 1) == pytest.approx(2.0)
    assert f(150.0, 20.0, 1.0, 11, 1) == pytest.approx(200.0)  # factor 0.1*0.99/(0.01*0.9) = 11 -> 1650 -> 200


def test_gam_ratio_and_epoch_update():
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(3))
    c = torch.nn.Parameter(torch.zeros(1))  # no gradient: counts 0
    a.grad = torch.tensor([1.0, -1.0])
    b.grad = torch.tensor([2.0, 0.0, -4.0])
    assert GAM.grad_ratio([a], [a, b, c]) == pytest.approx(100 * 2 / 8)
    gam = GAM(20.0, rho=11, delta=1)
    for p in (4.0, 6.0):  # mean 5 -> factor 2.1111
        gam.observe(p)
    assert gam.update() == pytest.approx(20 * 0.095 / 0.045)
    assert gam.count == 0 and gam.history[-1]["p_bar"] == 5.0
    assert gam.update() == pytest.approx(20 * 0.095 / 0.045)  # no observations: unchanged
    off = GAM(20.0, enabled=False)
    off.observe(1.0)
    assert off.update() == 20.0


# ------------------------------------------------------------------------------------------------------ FGL


def test_bin_targets_by_hand():
    w = fdr_weights(4, 0.5, 4.0)  # [-4, -2, 0, 2, 4]
    i, wl, wr = bin_targets(torch.tensor([1.0, 0.0, 2.5, -1.0, 9.0, -9.0, 4.0]), w)
    assert i.tolist() == [2, 2, 3, 1, 3, 0, 3]
    torch.testing.assert_close(wr, torch.tensor([0.5, 0.0, 0.25, 0.5, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(wl + wr, torch.ones(7))


def _fgl_case(pred_xyxy):
    # anchor cx, cy = 0.5, w = h = 0.4, c = 4 -> one unit of offset is 0.1
    # ground truth x1 0.2 -> d*=1 (bin 2, w_r .5); y1 0.3 -> 0 (bin 2, w_r 0); x2 0.95 -> 2.5 (bin 3, w_r .25);
    # y2 0.6 -> -1 (bin 1, w_r .5)
    w = fdr_weights(4, 0.5, 4.0)
    gt = torch.tensor([[0.575, 0.45, 0.75, 0.3]])  # cxcywh of xyxy (0.2, 0.3, 0.95, 0.6)
    x1, y1, x2, y2 = pred_xyxy
    pred = torch.tensor([[[(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]]])
    corners = torch.arange(5.0).expand(1, 1, 4, 5).clone().requires_grad_(True)  # logits 0..4 on every edge
    out = {"pred_corners": corners, "pred_boxes": pred, "ref_points": torch.tensor([[[0.5, 0.5, 0.4, 0.4]]]),
           "fdr_project": w, "fdr_reg_scale": 4.0}
    return out, [{"labels": torch.tensor([0]), "boxes": gt}], [(torch.tensor([0]), torch.tensor([0]))]


def test_fgl_by_hand():
    lse = math.log(sum(math.exp(k) for k in range(5)))
    # CE(i) = lse - i, so w_l CE(i) + w_r CE(i+1) = lse - i - w_r: edges give lse-2.5, lse-2, lse-3.25, lse-1.5
    per_box = 4 * lse - 9.25
    out, tg, ind = _fgl_case((0.2, 0.3, 0.95, 0.6))  # prediction = ground truth: IoU 1
    assert loss_fgl(out, tg, ind, 1.0)["loss_fgl"].item() == pytest.approx(per_box, rel=1e-5)
    out, tg, ind = _fgl_case((0.2, 0.3, 0.575, 0.6))  # half the ground truth: IoU 0.5; and / num_boxes
    assert loss_fgl(out, tg, ind, 2.0)["loss_fgl"].item() == pytest.approx(0.5 * per_box / 2, rel=1e-5)
    loss_fgl(out, tg, ind, 1.0)["loss_fgl"].backward()
    assert out["pred_corners"].grad.abs().sum() > 0
    assert loss_fgl(out, tg, [(torch.tensor([], dtype=torch.long),) * 2], 1.0)["loss_fgl"].item() == 0.0
    assert loss_fgl({"pred_boxes": out["pred_boxes"]}, tg, ind, 1.0) == {}


# ------------------------------------------------------------------------------------------------------ DDF


def test_ddf_by_hand():
    # 2 bins: teacher logits (5 ln 3, 0) -> softmax(/5) = (3/4, 1/4); student (0, 0) -> (1/2, 1/2)
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2); times T^2 = 25
    k = 25 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert k == pytest.approx(3.2703, abs=1e-4)
    teacher = torch.tensor([5 * math.log(3), 0.0]).expand(1, 4, 4, 2)
    student = torch.zeros(1, 4, 4, 2, requires_grad=True)
    weight = torch.tensor([[0.5, 0.75, 0.75, 0.75]])
    matched = torch.tensor([[True, False, False, False]])
    # matched mean 0.5 k (4 edges), unmatched mean 0.75 k (12 edges): (0.5 k sqrt4 + 0.75 k sqrt12) / (sqrt4 + sqrt12)
    want = k * (0.5 * 2 + 0.75 * math.sqrt(12)) / (2 + math.sqrt(12))
    got = ddf_loss(student, teacher, weight, matched)
    assert got.item() == pytest.approx(want, rel=1e-5)
    got.backward()
    assert student.grad.abs().sum() > 0
    # a layer that already agrees with the teacher has no loss
    assert ddf_loss(teacher.clone(), teacher, weight, matched).item() == pytest.approx(0.0, abs=1e-6)


def test_ddf_weights_from_iou_and_teacher_class_probability():
    teacher = torch.tensor([5 * math.log(3), 0.0]).expand(1, 2, 4, 2)
    logit = math.log(3)  # sigmoid = 0.75
    out = {"pred_corners": torch.zeros(1, 2, 4, 2), "teacher_corners": teacher,
           "teacher_logits": torch.tensor([[[logit, -5.0], [-5.0, logit]]]),
           "pred_boxes": torch.tensor([[[0.3, 0.5, 0.2, 0.4], [0.5, 0.5, 0.2, 0.2]]])}
    tg = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.4, 0.5, 0.4, 0.4]])}]  # IoU with query 0: 0.5
    ind = [(torch.tensor([0]), torch.tensor([0]))]
    k = 25 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    want = k * (0.5 * 2 + 0.75 * 2) / 4  # 4 matched edges, 4 unmatched edges
    assert loss_ddf(out, tg, ind, 1.0)["loss_ddf"].item() == pytest.approx(want, rel=1e-5)


# ------------------------------------------------------------------------------------------------------ GO-LSD


def test_union_of_matches_keeps_the_most_frequent_target():
    t = torch.tensor
    layers = [
        [(t([0, 3]), t([1, 0])), (t([2]), t([0]))],
        [(t([0, 5]), t([1, 0])), (t([2]), t([0]))],
        [(t([0, 3]), t([0, 1])), (t([1]), t([0]))],
    ]
    u = unite_matches(layers)
    # image 0: query 0 -> {1: 2, 0: 1} keeps 1; query 3 -> {0: 1, 1: 1} tie keeps 0; query 5 -> 0
    assert u[0][0].tolist() == [0, 3, 5] and u[0][1].tolist() == [1, 0, 0]
    assert u[1][0].tolist() == [1, 2] and u[1][1].tolist() == [0, 0]


def test_criterion_on_fdr_outputs_names_its_terms():
    cfg = preset("tiny").model_copy(update={"fdr": True, "fdr_bins": 8})
    torch.manual_seed(0)
    net = Supernet(cfg, groups=2).train()
    s = SubnetConfig.parse("p24-r192-w2-d3-q25", cfg)
    out = net(torch.rand(2, 3, 192, 192), s)
    tg = [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])},
          {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])}]
    crit = SetCriterion()
    terms = crit(out, tg, groups=2)
    for k in ("loss_ce", "loss_bbox", "loss_giou", "loss_fgl", "loss_fgl_0", "loss_fgl_1", "loss_ddf_0",
              "loss_ddf_1", "loss_bbox_pre", "loss_giou_pre", "loss_ce_enc", "loss_bbox_enc"):
        assert k in terms, k
    assert "loss_ddf" not in terms and "loss_fgl_enc" not in terms and "loss_ce_pre" not in terms
    total = crit.total(terms)
    assert torch.isfinite(total)
    total.backward()
    assert net.fdr_head.layers[0].layers[-1].weight.grad.abs().sum() > 0
    # the plain head gets none of the FDR terms
    plain = Supernet(preset("tiny"), groups=2).train()
    terms = SetCriterion()(plain(torch.rand(2, 3, 192, 192), s), tg, groups=2)
    assert not any(k.startswith(("loss_fgl", "loss_ddf")) for k in terms)
    assert crit.weights["loss_fgl"] == 0.15 and crit.weights["loss_ddf"] == 1.5


# ------------------------------------------------------------------------------------------------ cached views


def test_views_follow_flip_and_crop():
    """warp_views(whole image, view) equals resizing the augmented image, for a linear ramp (exact under bilinear)."""
    h, w = 40, 60
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    img = torch.stack([xs / w, ys / h, xs / w + 2 * ys / h])
    tgt = {"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "labels": torch.tensor([0])}
    a, t = hflip(img, tgt)
    a, t = crop(a, t, top=8, left=12, h=24, w=36)
    a, t = hflip(a, t)
    a, t = crop(a, t, top=4, left=6, h=16, w=24)
    g = 8
    want = batch_resize([a], g)
    got = warp_views(img[None], torch.tensor([t["view"]]), g)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert not torch.allclose(warp_views(img[None], torch.tensor([[1.0, 0.0, 1.0, 0.0]]), g), want)
