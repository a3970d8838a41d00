"""RF-DETR import: reading without executing code, key mapping and config inference, and parity with the `rfdetr`
package's own forward pass.

The first part runs everywhere: it writes RF-DETR-format checkpoints (RF-DETR's key names, 13 query groups, mask
token, `args` as argparse.Namespace) from small edgedet supernets and imports them back. The parity part needs the
`rfdetr` package (not an edgedet dependency) and is skipped without it; run it in an environment where both import
(see benchmarks/rfdetr_parity.py for the setup used).
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import subprocess
import sys

import pytest
import torch

from edgedet.checkpoint import load_supernet
from edgedet.config import SubnetConfig, SupernetConfig
from edgedet.errors import CheckpointError
from edgedet.importers import import_rfdetr, read_rfdetr_checkpoint
from edgedet.model.supernet import Supernet

from ..conftest import randomize

VIT = "backbone.0.encoder.encoder."
GROUPS = 13


def src_cfg(**kw) -> SupernetConfig:
    """A thin RF-DETR-shaped supernet (DINOv2 heads of 64 dims, RF-DETR's head counts for its hidden size)."""
    base = dict(name="src", embed_dim=128, depth=12, num_heads=2, patch_size=16, pos_grid=8, global_blocks=[3, 6, 9],
                taps=[3, 6, 9, 12], levels=["P4"], hidden_dim=64, projector_blocks=3, dec_layers=2, sa_heads=2,
                ca_heads=4, n_points=2, ffn_dim=96, num_queries=20, num_classes=6, patch_sizes=[16],
                windows=[1, 2, 4], resolutions=[128], query_counts=[20])
    base.update(kw)
    return SupernetConfig(**base)


def to_rfdetr(net: Supernet, groups: int = GROUPS, seed: int = 1) -> dict[str, torch.Tensor]:
    """edgedet state dict -> RF-DETR's key layout (HF DINOv2 names, Sequential-wrapped samplers, per-group encoder
    heads and query rows; groups 1+ random, as after Group-DETR training)."""
    g = torch.Generator().manual_seed(seed)
    top = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    block = {"attn.proj.weight": "attention.output.dense.weight", "attn.proj.bias": "attention.output.dense.bias",
             "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1"}
    heads = {"enc_output": "enc_output", "enc_output_norm": "enc_output_norm", "class_embed": "enc_out_class_embed",
             "bbox_embed": "enc_out_bbox_embed"}
    out = {}
    for k, v in net.state_dict().items():
        v = v.clone()
        if k.startswith("backbone."):
            r = k[len("backbone."):]
            if r in top:
                out[VIT + top[r]] = v
                continue
            i, rest = re.fullmatch(r"blocks\.(\d+)\.(.+)", r).groups()
            pre = f"{VIT}encoder.layer.{i}."
            if rest.startswith("attn.qkv."):
                for name, part in zip(("query", "key", "value"), v.chunk(3)):
                    out[f"{pre}attention.attention.{name}.{rest.rsplit('.', 1)[1]}"] = part.clone()
            else:
                out[pre + block.get(rest, rest)] = v
        elif m := re.fullmatch(r"projector\.stages_sampling\.(\d+)\.(\d+)\.(.+)", k):
            out[f"backbone.0.projector.stages_sampling.{m[1]}.{m[2]}.0.{m[3]}"] = v
        elif k.startswith("projector."):
            out["backbone.0." + k] = v
        elif k.startswith("decoder."):
            out["transformer." + k] = v
        elif m := re.fullmatch(r"query_select\.0\.(\w+)\.(.+)", k):
            for grp in range(groups):
                out[f"transformer.{heads[m[1]]}.{grp}.{m[2]}"] = v if grp == 0 else torch.randn(v.shape, generator=g)
        elif k in ("query_feat", "refpoint_embed"):
            out[k + ".weight"] = torch.cat([v] + [torch.randn(v.shape, generator=g) for _ in range(groups - 1)])
        else:
            out[k] = v
    out[VIT + "embeddings.mask_token"] = torch.zeros(1, net.cfg.embed_dim)
    out["_kp_active_mask"] = torch.zeros(0, 0, dtype=torch.bool)
    return out


def rf_args(cfg: SupernetConfig, **kw) -> argparse.Namespace:
    """The architecture fields of RF-DETR's `args` for a source config."""
    d = dict(encoder="dinov2_windowed_small", out_feature_indexes=list(cfg.taps), dec_layers=cfg.dec_layers,
             two_stage=True, projector_scale=list(cfg.levels), hidden_dim=cfg.hidden_dim, patch_size=cfg.patch_size,
             num_windows=2, sa_nheads=cfg.sa_heads, ca_nheads=cfg.ca_heads, dec_n_points=cfg.n_points,
             num_queries=cfg.num_queries, bbox_reparam=True, lite_refpoint_refine=True, layer_norm=True,
             num_classes=cfg.num_classes - 1, resolution=cfg.pos_grid * cfg.patch_size, group_detr=GROUPS,
             positional_encoding_size=cfg.pos_grid, dim_feedforward=cfg.ffn_dim, num_decoder_registers=0,
             window_block_indexes=None, segmentation_head=False, lr=1e-4, dataset_dir="/data/x")
    d.update(kw)
    return argparse.Namespace(**d)


ARCH = ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "pos_grid", "global_blocks", "taps", "levels",
        "hidden_dim", "projector_blocks", "dec_layers", "sa_heads", "ca_heads", "n_points", "ffn_dim", "num_queries",
        "num_classes")


@pytest.fixture(scope="module")
def p3p5():
    """Source supernet with RF-DETR's deprecated-large projector levels (P3 + P5) and taps/globals from args."""
    torch.manual_seed(0)
    cfg = src_cfg(levels=["P3", "P5"], taps=[2, 4, 6, 8], global_blocks=[2, 4, 6, 8, 9, 10, 11])
    return randomize(Supernet(cfg)).eval()


@pytest.fixture(scope="module")
def p4():
    torch.manual_seed(1)
    return randomize(Supernet(src_cfg())).eval()


def assert_same_weights(net: Supernet, src: Supernet):
    a, b = net.state_dict(), src.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------------------------- mapping, config


def test_import_with_args_round_trips(p3p5, tmp_path):
    names = ["cat", "dog", "fox", "owl", "emu"]  # RF-DETR heads have num_classes + 1 logits
    ck = tmp_path / "rf.pth"
    torch.save({"model": to_rfdetr(p3p5), "args": rf_args(p3p5.cfg, class_names=names), "model_name": "RFDETRNano",
                "rfdetr_version": "1.11.2", "epoch": 3, "optimizer_states": []}, ck)
    net, rep = import_rfdetr(ck, tmp_path / "out.safetensors")
    for f in ARCH:
        assert getattr(net.cfg, f) == getattr(p3p5.cfg, f), f
    assert net.cfg.class_names == names + ["N/A"] and net.cfg.name == "rfdetr-nano"
    assert net.cfg.windows == [1, 2, 4] and net.cfg.patch_sizes == [16] and net.cfg.query_counts == [20]
    assert 128 in net.cfg.resolutions and all(r % 32 == 0 for r in net.cfg.resolutions)
    assert_same_weights(net, p3p5)
    assert rep.dropped == {"mask_token": 1, "_kp_active_mask": 1, "encoder heads of query groups 1+": 12 * 12,
                           "query_feat rows of groups 1+": 12 * 20, "refpoint_embed rows of groups 1+": 12 * 20}
    back = load_supernet(tmp_path / "out.safetensors")
    assert_same_weights(back, p3p5)
    assert back.cfg == net.cfg
    assert back.meta["source_sha256"] == rep.sha256 and back.meta["rfdetr_version"] == "1.11.2"
    assert back.meta["model_name"] == "RFDETRNano" and back.meta["source_file"] == "rf.pth"


def test_import_without_args_uses_shapes_and_defaults(p4, tmp_path):
    ck = tmp_path / "bare.pth"
    torch.save({"model": to_rfdetr(p4)}, ck)  # published weights may hold only the state dict
    net, rep = import_rfdetr(ck)
    for f in ARCH:
        assert getattr(net.cfg, f) == getattr(p4.cfg, f), f
    assert_same_weights(net, p4)
    notes = " | ".join(rep.notes)
    for needle in ("out_feature_indexes", "13 query groups", "num_windows", "resolution", "sa_nheads",
                   "no class names"):
        assert needle in notes
    assert net.cfg.class_names is None and net.cfg.name == "rfdetr-custom"


def test_import_lightning_ckpt(p4, tmp_path):
    sd = to_rfdetr(p4)
    ck = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model._orig_mod.{k}": v for k, v in sd.items()} | {"ema.step": torch.tensor(3)},
                "hyper_parameters": vars(rf_args(p4.cfg)), "epoch": 1}, ck)
    net, rep = import_rfdetr(ck)
    assert_same_weights(net, p4)
    assert any("outside 'model.'" in n for n in rep.notes)


def test_imported_model_exports_to_onnx(p3p5, tmp_path):
    from edgedet.model.export import export_onnx

    ck = tmp_path / "rf.pth"
    torch.save({"model": to_rfdetr(p3p5), "args": rf_args(p3p5.cfg)}, ck)
    net, _ = import_rfdetr(ck)
    s = SubnetConfig.parse("p16-r128-w2-d2-q20", net.cfg)
    res = export_onnx(net.extract(s), tmp_path / "m.onnx", check=True)
    assert res.path.is_file() and max(res.max_abs_diff.values()) <= 1e-4


def test_imported_model_compiles(p4, tmp_path):
    from pathlib import Path

    from edgedet.deploy import compile_subnet

    ck = tmp_path / "rf.pth"
    torch.save({"model": to_rfdetr(p4), "args": rf_args(p4.cfg, class_names=list("abcde"))}, ck)
    net, _ = import_rfdetr(ck)
    target = Path(__file__).resolve().parents[2] / "targets" / "local_cpu.yaml"
    art = compile_subnet(net, "p16-r128-w1-d1-q20", target, "fp32", tmp_path / "art")
    assert art.model_path.is_file() and art.metadata["class_names"] == list("abcde") + ["N/A"]


@pytest.mark.parametrize("edit,needle", [
    (lambda sd, a: sd.__setitem__("transformer.decoder.extra.weight", torch.zeros(3)), "transformer.decoder.extra"),
    (lambda sd, a: sd.__setitem__("class_embed.bias", torch.zeros(7)), "class_embed.bias (7,) vs (6,)"),
    (lambda sd, a: sd.pop("transformer.decoder.norm.weight"), "decoder.norm.weight"),
    (lambda sd, a: sd.pop(VIT + "encoder.layer.3.attention.attention.key.bias"), "block 3: incomplete"),
    (lambda sd, a: sd.__setitem__("segmentation_head.x", torch.zeros(1)), "segmentation head"),
    (lambda sd, a: sd.__setitem__(VIT + "embeddings.register_tokens", torch.zeros(1, 4, 128)), "register tokens"),
    (lambda sd, a: setattr(a, "lite_refpoint_refine", False), "lite_refpoint_refine=False"),
    (lambda sd, a: setattr(a, "out_feature_indexes", [3, 6, 9, 13]), "out_feature_indexes"),
    (lambda sd, a: setattr(a, "num_queries", 21), "do not split"),
])
def test_mapping_errors_name_the_tensor(p4, tmp_path, edit, needle):
    sd, args = to_rfdetr(p4), rf_args(p4.cfg)
    if needle == "do not split":
        args.num_queries, args.group_detr = None, 7
    else:
        edit(sd, args)
    ck = tmp_path / "rf.pth"
    torch.save({"model": sd, "args": args}, ck)
    with pytest.raises(CheckpointError) as e:
        import_rfdetr(ck, tmp_path / "out.safetensors")
    msg = str(e.value)
    assert needle in msg and str(ck) in msg and "\n" not in msg
    assert not (tmp_path / "out.safetensors").exists()


# ------------------------------------------------------------------------------------------------------ safety


class _Evil:
    """Unpickling this runs `func(arg)`: what a malicious checkpoint does."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("saver", ["torch", "pickle"])
@pytest.mark.parametrize("func", [os.system, eval])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, saver, func):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w').close()"
    obj = {"model": {"class_embed.bias": torch.zeros(2)}, "args": _Evil(func, arg)}
    ck = tmp_path / "evil.pth"
    if saver == "torch":
        torch.save(obj, ck)
    else:
        with open(ck, "wb") as f:
            pickle.dump(obj, f)
    with pytest.raises(CheckpointError) as e:
        import_rfdetr(ck, tmp_path / "out.safetensors")
    msg = str(e.value)
    assert str(ck) in msg and "\n" not in msg and "nothing from the file was executed" in msg
    assert f"global '{func.__module__}.{func.__name__}'" in msg, msg  # posix.system, builtins.eval
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("content", ["truncated", "garbage", "empty", "tensor"])
def test_unreadable_files_give_one_line(tmp_path, content):
    ck = tmp_path / "bad.pth"
    if content == "truncated":
        torch.save({"model": {"w": torch.randn(1000)}}, ck)
        ck.write_bytes(ck.read_bytes()[:1500])
    elif content == "garbage":
        ck.write_bytes(os.urandom(4096))
    elif content == "empty":
        ck.write_bytes(b"")
    else:
        torch.save(torch.zeros(3), ck)
    with pytest.raises(CheckpointError) as e:
        read_rfdetr_checkpoint(ck)
    assert str(ck) in str(e.value) and "\n" not in str(e.value)


def test_cli_import_and_refusal(p4, tmp_path):
    ck, out = tmp_path / "rf.pth", tmp_path / "net.safetensors"
    torch.save({"model": to_rfdetr(p4), "args": rf_args(p4.cfg)}, ck)
    p = subprocess.run([sys.executable, "-m", "edgedet.cli", "import", "rfdetr", str(ck), "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "imported rf.pth" in p.stdout and out.is_file()
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "args": _Evil(os.system, f"touch {marker}")}, tmp_path / "evil.pth")
    p = subprocess.run([sys.executable, "-m", "edgedet.cli", "import", "rfdetr", str(tmp_path / "evil.pth"), "-o",
                        str(tmp_path / "x.safetensors")], capture_output=True, text=True, timeout=300)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "evil.pth" in lines[0] and "Traceback" not in p.stderr
    assert not marker.exists() and not (tmp_path / "x.safetensors").exists()


# --------------------------------------------------------------------------------- parity with the rfdetr package


def _rfdetr():
    try:
        from rfdetr import RFDETRNano
    except Exception as e:  # not installed, or its torchvision does not import with the CPU torch
        pytest.skip(f"rfdetr is not importable ({type(e).__name__}: {str(e)[:80]}); the parity tests need the rfdetr "
                    "package next to edgedet (see benchmarks/rfdetr_parity.py)")
    return RFDETRNano


MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
TOL = 1e-4
TIE = 1e-4  # encoder scores closer than this have no defined top-k order (float noise decides)


@pytest.fixture(scope="module")
def rf_nano(tmp_path_factory):
    """A random RF-DETR-N with every parameter perturbed (box heads and refpoint_embed non-zero), saved in rfdetr's
    format ({"model", "args": argparse.Namespace, ...}) and imported."""
    RFDETRNano = _rfdetr()
    import logging

    logging.getLogger("rf-detr").setLevel(logging.ERROR)
    torch.manual_seed(0)
    m = RFDETRNano(pretrain_weights=None, device="cpu")
    model = m.model.model
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    sd = model.state_dict()
    assert sd["refpoint_embed.weight"].abs().min() > 0 and sd["bbox_embed.layers.2.weight"].abs().min() > 0
    assert sd["transformer.enc_out_bbox_embed.0.layers.2.weight"].abs().min() > 0
    d = tmp_path_factory.mktemp("rfdetr")
    ck = d / "rand_nano.pth"
    args = argparse.Namespace(**vars(m.model.args), class_names=[f"c{i}" for i in range(90)])
    torch.save({"model": sd, "args": args, "model_name": "RFDETRNano"}, ck)
    net, rep = import_rfdetr(ck, d / "nano.safetensors")
    return RFDETRNano, ck, load_supernet(d / "nano.safetensors"), rep


def test_rfdetr_nano_config_and_keys(rf_nano):
    _, _, net, rep = rf_nano
    c = net.cfg
    assert (c.embed_dim, c.depth, c.num_heads, c.patch_size, c.pos_grid) == (384, 12, 6, 16, 24)
    assert c.taps == [3, 6, 9, 12] and c.global_blocks == [3, 6, 9] and c.levels == ["P4"]
    assert (c.dec_layers, c.num_queries, c.num_classes, c.ffn_dim, c.n_points) == (2, 300, 91, 2048, 2)
    assert c.class_names[:2] == ["c0", "c1"] and c.class_names[90] == "N/A" and c.name == "rfdetr-nano"
    assert rep.tensors == len(net.state_dict())
    assert rep.dropped["encoder heads of query groups 1+"] == 12 * 12  # 12 tensors per group
    assert rep.dropped["query_feat rows of groups 1+"] == 3600


def _images(res: int, seed: int) -> torch.Tensor:
    return torch.rand(1, 3, res, res, generator=torch.Generator().manual_seed(seed))


def _order_check(scores: torch.Tensor, ref_idx: torch.Tensor, idx: torch.Tensor) -> bool:
    """True if both top-k orders agree; False if they differ only between near-tied scores (then rows cannot be
    matched by position and another input is drawn); AssertionError if the selections really differ."""
    if torch.equal(ref_idx, idx):
        return True
    gap = (scores.gather(1, ref_idx) - scores.gather(1, idx)).abs()[ref_idx != idx]
    assert gap.max() < TIE, f"top-k query selection differs beyond float noise (score gap {gap.max():.2e})"
    return False


def _rf_forward(model, x):
    cap = []
    h = model.transformer.enc_out_class_embed[0].register_forward_hook(lambda m, i, o: cap.append(o))
    with torch.no_grad():
        out = model((x - MEAN) / STD)
    h.remove()
    return out, cap[0].max(-1).values  # scores of every memory position (first call: before the top-k)


CONFIGS = [  # subnet id, RF-DETR config overrides that build the same network
    ("p16-r384-w2-d2-q300", {}),
    ("p16-r384-w2-d1-q300", {"dec_layers": 1}),
    ("p16-r384-w2-d0-q300", {"dec_layers": 0}),
    ("p16-r384-w2-d2-q100", {"num_queries": 100}),
    ("p16-r512-w2-d2-q300", {"resolution": 512}),
    ("p16-r320-w2-d1-q100", {"resolution": 320, "dec_layers": 1, "num_queries": 100}),
    ("p16-r384-w1-d2-q300", {"num_windows": 1}),
    ("p16-r384-w4-d2-q300", {"num_windows": 4}),
]


@pytest.mark.slow
@pytest.mark.parametrize("sid,kw", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_parity_with_rfdetr(rf_nano, sid, kw):
    RFDETRNano, ck, net, _ = rf_nano
    s = SubnetConfig.parse(sid, net.cfg)
    rf = RFDETRNano(pretrain_weights=str(ck), device="cpu", **kw).model.model.eval()  # rfdetr's own loader
    module = net.extract(s)
    for seed in range(8):
        x = _images(s.resolution, seed)
        out, scores = _rf_forward(rf, x)
        cap = []
        h = module.query_select.class_embed.register_forward_hook(lambda m, i, o: cap.append(o))
        with torch.no_grad():
            boxes, logits = module(x)
        h.remove()
        k = boxes.shape[1]
        assert out["pred_boxes"].shape == boxes.shape and out["pred_logits"].shape == logits.shape
        if not _order_check(scores, scores.topk(k, 1).indices, cap[0].max(-1).values.topk(k, 1).indices):
            continue
        db = (boxes - out["pred_boxes"]).abs().max().item()
        dl = (logits - out["pred_logits"]).abs().max().item()
        print(f"\n{sid}: max abs diff boxes {db:.2e} logits {dl:.2e} (input draw {seed})")
        assert db <= TOL and dl <= TOL
        return
    pytest.fail(f"{sid}: every input draw had near-tied encoder scores at the top-k")


@pytest.mark.slow
def test_onnx_export_matches_rfdetr(rf_nano, tmp_path):
    import onnx
    import onnxruntime as ort

    from edgedet.model.export import export_onnx

    RFDETRNano, ck, net, _ = rf_nano
    s = SubnetConfig.parse("p16-r384-w2-d2-q300", net.cfg)
    res = export_onnx(net.extract(s), tmp_path / "nano.onnx", class_names=net.cfg.class_names, check=True)
    model = onnx.load(str(res.path))
    topk = [n for n in model.graph.node if n.op_type == "TopK"]
    assert len(topk) == 1  # the two-stage query selection; expose its indices to match rows
    model.graph.output.append(onnx.helper.make_tensor_value_info(topk[0].output[1], onnx.TensorProto.INT64, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rf = RFDETRNano(pretrain_weights=str(ck), device="cpu").model.model.eval()
    for seed in range(8):
        x = _images(384, seed)
        out, scores = _rf_forward(rf, x)
        boxes, logits, idx = sess.run(None, {"images": x.numpy()})
        if not _order_check(scores, scores.topk(300, 1).indices, torch.from_numpy(idx)):
            continue
        db = float((torch.from_numpy(boxes) - out["pred_boxes"]).abs().max())
        dl = float((torch.from_numpy(logits) - out["pred_logits"]).abs().max())
        print(f"\nONNX Runtime vs rfdetr {s.id}: boxes {db:.2e} logits {dl:.2e} (input draw {seed}); "
              f"ONNX vs torch at export {res.max_abs_diff}")
        assert db <= TOL and dl <= TOL
        return
    pytest.fail("every input draw had near-tied encoder scores at the top-k")
