"""Matcher vs brute force, loss terms on hand-checkable cases, the NAS sampler's uniformity."""
from __future__ import annotations

import itertools
import math
from collections import Counter

import torch

from edgedet.config import SearchSpace, preset
from edgedet.train.criterion import SetCriterion, loss_boxes, loss_labels
from edgedet.train.engine import sample_subnet
from edgedet.train.matcher import HungarianMatcher


def _rand_case(g, q, t, c=4):
    logits = torch.randn(1, q, c, generator=g)
    boxes = torch.rand(1, q, 4, generator=g) * 0.5 + 0.2
    tgt = {"labels": torch.randint(0, c, (t,), generator=g), "boxes": torch.rand(t, 4, generator=g) * 0.5 + 0.2}
    return {"pred_logits": logits, "pred_boxes": boxes}, [tgt]


def test_matcher_agrees_with_brute_force():
    m = HungarianMatcher()
    g = torch.Generator().manual_seed(0)
    for q, t in [(3, 2), (4, 4), (5, 3), (6, 2), (5, 1)]:
        for _ in range(5):
            out, tg = _rand_case(g, q, t)
            cost = m.cost(out["pred_logits"][0], out["pred_boxes"][0], tg[0]["labels"], tg[0]["boxes"])
            best = min(sum(cost[p[j], j].item() for j in range(t)) for p in itertools.permutations(range(q), t))
            qi, ti = m(out, tg)[0]
            got = sum(cost[a, b].item() for a, b in zip(qi.tolist(), ti.tolist()))
            assert len(set(qi.tolist())) == t and sorted(ti.tolist()) == list(range(t))
            assert math.isclose(got, best, rel_tol=1e-6, abs_tol=1e-6)


def test_matcher_matches_each_group_separately():
    m = HungarianMatcher()
    out, tg = _rand_case(torch.Generator().manual_seed(1), 6, 2)
    qi, ti = m(out, tg, groups=3)[0]
    assert len(qi) == 6 and sorted(ti.tolist()) == [0, 0, 0, 1, 1, 1]
    assert sorted(q // 2 for q in qi.tolist()) == [0, 0, 1, 1, 2, 2]  # two matches in each group of 2 queries


def test_ia_bce_hand_computed():
    # one image, 2 queries, 2 classes; query 0 matched to class 1 with a box of IoU 0.5 (half-width overlap)
    logits = torch.tensor([[[0.0, 1.0], [-1.0, 2.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])
    tgt = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.1]])}]
    out = loss_labels({"pred_logits": logits, "pred_boxes": boxes}, tgt, [(torch.tensor([0]), torch.tensor([0]))], 1.0)
    p = torch.sigmoid(logits)[0]
    iou = 0.5
    t = max(p[0, 1].item() ** 0.25 * iou ** 0.75, 0.01)
    pos = -(t * math.log(p[0, 1]) + (1 - t) * math.log(1 - p[0, 1]))
    negs = sum(-(p[i, j].item() ** 2) * math.log(1 - p[i, j].item()) for i, j in [(0, 0), (1, 0), (1, 1)])
    assert math.isclose(out["loss_ce"].item(), pos + negs, rel_tol=1e-5)


def test_box_losses_hand_computed():
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])
    tgt = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.6, 0.5, 0.2, 0.2]])}]
    out = loss_boxes({"pred_logits": torch.zeros(1, 1, 1), "pred_boxes": boxes}, tgt,
                     [(torch.tensor([0]), torch.tensor([0]))], 2.0)
    assert math.isclose(out["loss_bbox"].item(), 0.1 / 2, rel_tol=1e-5)
    iou = (0.1 * 0.2) / (0.04 + 0.04 - 0.02)  # intersection 0.1 x 0.2; hull is the union here
    assert math.isclose(out["loss_giou"].item(), (1 - iou) / 2, rel_tol=1e-5)


def test_criterion_names_terms_per_layer_and_encoder():
    out, tg = _rand_case(torch.Generator().manual_seed(2), 4, 2)
    aux = [{"pred_logits": out["pred_logits"] + 1, "pred_boxes": out["pred_boxes"]}]
    outputs = dict(out, aux_outputs=aux, enc_outputs={"pred_logits": out["pred_logits"] - 1,
                                                      "pred_boxes": out["pred_boxes"]})
    crit = SetCriterion()
    terms = crit(outputs, tg)
    assert set(terms) == {f"{k}{s}" for k in ("loss_ce", "loss_bbox", "loss_giou") for s in ("", "_0", "_enc")}
    expect = sum(crit.weights["_".join(k.split("_")[:2])] * v for k, v in terms.items())
    assert torch.isclose(crit.total(terms), expect)
    # depth 0: the encoder proposals are the output, counted once
    d0 = dict(out, aux_outputs=[], enc_outputs=out)
    assert set(crit(d0, tg)) == {"loss_ce", "loss_bbox", "loss_giou"}


def test_sampler_covers_the_space_uniformly():
    cfg = preset("tiny")
    space = SearchSpace.of(cfg)
    subnets = space.subnets(cfg)
    n = 40 * len(subnets)
    counts = Counter(sample_subnet(subnets, step, seed=0).id for step in range(n))
    assert len(counts) == len(subnets)  # every subnet is visited
    chi2 = sum((c - 40) ** 2 / 40 for c in counts.values())
    dof = len(subnets) - 1
    assert chi2 < dof + 4 * math.sqrt(2 * dof), chi2  # within ~4 sigma of a uniform draw
    for knob in ("patch", "resolution", "windows", "dec_layers", "queries"):
        per = Counter(getattr(sample_subnet(subnets, s, 0), knob) for s in range(n))
        vals = getattr(space, knob)
        assert set(per) == set(vals)
        assert max(per.values()) / min(per.values()) < 1.25
    assert sample_subnet(subnets, 5, 0) == sample_subnet(subnets, 5, 0)  # same on every rank
