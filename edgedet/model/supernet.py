"""The weight-sharing DETR supernet and the static sub-network it extracts for export.

Supernet.forward(images, subnet) runs any SubnetConfig; Supernet.extract(subnet) returns a SubnetModule with fixed
shapes (resized patch kernel and position grid baked in, unused layers and queries dropped) whose forward is
images [B,3,H,W] RGB in [0,1] -> (boxes [B,Q,4] normalised cxcywh, logits [B,Q,C]).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..config import SubnetConfig, SupernetConfig, level_grid
from .decoder import MLP, Decoder
from .heads import FDRHead, QuerySelection, apply_delta, make_proposals
from .projector import Projector
from .vit import ViT

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Normalize(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _flatten(maps: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)


class Supernet(nn.Module):
    """RF-DETR-style supernet. `groups` > 1 adds Group-DETR query groups used only in training (group 0 is the
    inference model; the others are dropped by extract() and by inference checkpoints)."""

    def __init__(self, cfg: SupernetConfig, groups: int = 1):
        super().__init__()
        self.cfg, self.groups = cfg, groups
        c = cfg.hidden_dim
        self.normalize = _Normalize()
        self.backbone = ViT(cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.patch_size, cfg.pos_grid,
                            cfg.global_blocks, cfg.taps, cfg.pos_antialias)
        self.projector = Projector(cfg.embed_dim, len(cfg.taps), c, cfg.levels, cfg.projector_blocks)
        self.decoder = Decoder(c, cfg.dec_layers, cfg.sa_heads, cfg.ca_heads, len(cfg.levels), cfg.n_points,
                               cfg.ffn_dim)
        self.query_select = nn.ModuleList(QuerySelection(c, cfg.num_classes) for _ in range(groups))
        self.query_feat = nn.Parameter(torch.zeros(groups * cfg.num_queries, c))
        self.refpoint_embed = nn.Parameter(torch.zeros(groups * cfg.num_queries, 4))
        self.class_embed = nn.Linear(c, cfg.num_classes)
        self.bbox_embed = MLP(c, c, 4, 3)  # with fdr: only the first decoder layer's box (the FDR anchor)
        self.fdr_head = (FDRHead(c, cfg.dec_layers, cfg.fdr_bins, cfg.fdr_reg_scale, cfg.fdr_up) if cfg.fdr
                         else None)
        self._init()
        self._proposals: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _init(self) -> None:
        nn.init.normal_(self.query_feat, std=1.0)
        prior = -math.log((1 - 0.01) / 0.01)
        for head in [self.class_embed] + [q.class_embed for q in self.query_select]:
            nn.init.constant_(head.bias, prior)
        for mlp in [self.bbox_embed] + [q.bbox_embed for q in self.query_select]:
            nn.init.zeros_(mlp.layers[-1].weight)
            nn.init.zeros_(mlp.layers[-1].bias)

    def proposals(self, shapes: list[tuple[int, int]], device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(shapes), str(device))
        if key not in self._proposals:
            with torch.inference_mode(False):  # a cache made under inference_mode would poison later training
                self._proposals[key] = tuple(t.to(device) for t in make_proposals(shapes))
        return self._proposals[key]

    def feature_maps(self, images: torch.Tensor, patch: int, windows: int) -> list[torch.Tensor]:
        """images [B,3,H,W] RGB in [0,1] -> projector maps, one [B, C, h_l, w_l] per level (cfg.levels order)."""
        return self.projector(self.backbone(self.normalize(images), patch, windows))

    def memory(self, images: torch.Tensor, patch: int, windows: int, maps: list[torch.Tensor] | None = None):
        """images [B,3,H,W] RGB in [0,1] -> (memory [B, S, C], proposals [1,S,4], shapes). The validity mask is
        applied only where the encoder heads score positions (decode); the decoder attends to all of memory."""
        if maps is None:
            maps = self.feature_maps(images, patch, windows)
        shapes = [tuple(m.shape[-2:]) for m in maps]
        props, _ = self.proposals(shapes, images.device)
        return _flatten(maps), props, shapes

    def forward(self, images: torch.Tensor, subnet: SubnetConfig, all_layers: bool = False,
                features: bool = False) -> dict:
        """images [B,3,H,W] RGB in [0,1]. Returns
        pred_logits [B, G*Q, C], pred_boxes [B, G*Q, 4] (last decoder layer, or the encoder proposals at depth 0),
        aux_outputs: list of {pred_logits, pred_boxes} for the earlier layers, enc_outputs: proposals with grad,
        with G = groups in training mode and 1 in eval mode.
        With fdr (and depth >= 1) every decoder layer's dict also has pred_corners [B, G*Q, 4, N+1] (edge logits),
        ref_points [B, G*Q, 4] (the detached anchor) and fdr_project [N+1] (W(n)), fdr_reg_scale; pre_outputs holds
        the first layer's ordinary box (the anchor, with grad) and logits.
        With all_layers=True, 'layers' holds (logits, boxes) for depths 0..dec_layers (shared-computation eval).
        With features=True, 'features' holds the projector maps (for feature distillation).
        """
        maps = self.feature_maps(images, subnet.patch, subnet.windows)
        memory, props, shapes = self.memory(images, subnet.patch, subnet.windows, maps)
        out = self.decode(memory, props, shapes, subnet.queries, subnet.dec_layers, all_layers)
        if features:
            out["features"] = maps
        return out

    def decode(self, memory, props, shapes, queries: int, depth: int, all_layers: bool = False) -> dict:
        groups = self.groups if self.training else 1
        b, nq = memory.shape[0], self.cfg.num_queries
        masked = memory * self.proposals(shapes, memory.device)[1]
        enc_l, enc_b, refs, tgts = [], [], [], []
        for g in range(groups):
            logits, boxes, ref = self.query_select[g](masked, props, queries)
            enc_l.append(logits)
            enc_b.append(boxes)
            refs.append(apply_delta(self.refpoint_embed[g * nq:g * nq + queries].unsqueeze(0), ref))
            tgts.append(self.query_feat[g * nq:g * nq + queries].unsqueeze(0).expand(b, -1, -1))
        ref, tgt = torch.cat(refs, 1), torch.cat(tgts, 1)
        mask = None
        if groups > 1:
            gid = torch.arange(groups, device=memory.device).repeat_interleave(queries)
            mask = gid[:, None] == gid[None, :]
        hs = self.decoder(tgt, ref, memory, shapes, depth, mask)
        per = [{"pred_logits": torch.cat(enc_l, 1), "pred_boxes": torch.cat(enc_b, 1)}]
        pre = None
        if self.fdr_head is not None and hs:
            pre = {"pred_logits": self.class_embed(hs[0]), "pred_boxes": apply_delta(self.bbox_embed(hs[0]), ref)}
            anchor = pre["pred_boxes"].detach()
            for h, corners in zip(hs, self.fdr_head.corners(hs)):
                per.append({"pred_logits": self.class_embed(h), "pred_boxes": self.fdr_head.boxes(corners, anchor),
                            "pred_corners": corners, "ref_points": anchor, "fdr_project": self.fdr_head.project,
                            "fdr_reg_scale": self.fdr_head.reg_scale})
        else:
            per += [{"pred_logits": self.class_embed(h), "pred_boxes": apply_delta(self.bbox_embed(h), ref)}
                    for h in hs]
        out = dict(per[-1], aux_outputs=per[1:-1], enc_outputs=per[0])
        if pre is not None:
            out["pre_outputs"] = pre
        if all_layers:
            out["layers"] = [(d["pred_logits"], d["pred_boxes"]) for d in per]
        return out

    def extract(self, subnet: SubnetConfig) -> "SubnetModule":
        """A static, export-ready module for one subnet (validated against the supernet config)."""
        subnet.check(self.cfg)
        return SubnetModule(self, subnet)


class SubnetModule(nn.Module):
    """One sub-network with fixed shapes and no data-dependent branches: images [B,3,R,R] RGB in [0,1] ->
    (boxes [B,Q,4] normalised cxcywh, logits [B,Q,C])."""

    def __init__(self, net: Supernet, s: SubnetConfig):
        super().__init__()
        cfg, vit = net.cfg, net.backbone
        self.subnet, self.num_classes = s, cfg.num_classes
        self.windows, self.grid = s.windows, s.resolution // s.patch
        self.normalize = _Normalize()
        with torch.no_grad():
            self.patch_embed = nn.Conv2d(3, cfg.embed_dim, s.patch, s.patch)
            self.patch_embed.weight.copy_(vit.patch_kernel(s.patch))
            self.patch_embed.bias.copy_(vit.patch_embed.proj.bias)
            pos = vit.position_embedding(self.grid, self.grid)
            self.register_buffer("pos_embed", pos[:, 1:].clone())
            self.register_buffer("cls_token", (vit.cls_token + pos[:, :1]).clone())
        self.vit = copy.deepcopy(vit)  # blocks + norm; its own patch kernel and position grid are not used
        self.vit.blocks = self.vit.blocks[:cfg.taps[-1]]
        del self.vit.patch_embed, self.vit.pos_embed, self.vit.cls_token
        self.projector = copy.deepcopy(net.projector)
        self.shapes = [(level_grid(self.grid, lv),) * 2 for lv in cfg.levels]
        props, valid = make_proposals(self.shapes)
        self.register_buffer("proposals", props)
        self.register_buffer("valid", valid)
        self.query_select = copy.deepcopy(net.query_select[0])
        self.queries, self.depth = s.queries, s.dec_layers
        if self.depth:  # at depth 0 the encoder proposals are the output: no decoder, queries or shared heads
            self.query_feat = nn.Parameter(net.query_feat[:s.queries].detach().clone())
            self.refpoint_embed = nn.Parameter(net.refpoint_embed[:s.queries].detach().clone())
            self.decoder = copy.deepcopy(net.decoder)
            self.decoder.layers = self.decoder.layers[:s.dec_layers]
            self.class_embed = copy.deepcopy(net.class_embed)
            self.bbox_embed = copy.deepcopy(net.bbox_embed)
            self.fdr_head = None
            if net.fdr_head is not None:
                self.fdr_head = copy.deepcopy(net.fdr_head)
                self.fdr_head.layers = self.fdr_head.layers[:s.dec_layers]
        self.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.normalize(images)
        t = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        t = t.reshape(-1, self.grid, self.grid, t.shape[-1])
        maps = self.projector(self.vit.encode(t, self.cls_token, self.grid, self.grid, self.windows))
        memory = _flatten(maps)
        logits, boxes, ref = self.query_select(memory * self.valid, self.proposals, self.queries)
        if self.depth == 0:
            return boxes, logits
        ref = apply_delta(self.refpoint_embed.unsqueeze(0), ref)
        tgt = self.query_feat.unsqueeze(0).expand(images.shape[0], -1, -1)
        hs = self.decoder(tgt, ref, memory, self.shapes, self.depth)
        if self.fdr_head is not None:
            anchor = apply_delta(self.bbox_embed(hs[0]), ref)
            return self.fdr_head.boxes(self.fdr_head.corners(hs)[-1], anchor), self.class_embed(hs[-1])
        return apply_delta(self.bbox_embed(hs[-1]), ref), self.class_embed(hs[-1])
