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


def test_patch14_base_layout_without_args_runs_at_rfdetrs_560(tmp_path):
    """RF-DETR Base keeps DINOv2's 37 x 37 grid (518 px) but runs at 560: a bare checkpoint gets rfdetr's default."""
    torch.manual_seed(2)
    src = Supernet(src_cfg(embed_dim=384, num_heads=6, patch_size=14, pos_grid=37, hidden_dim=256, sa_heads=8,
                           ca_heads=16, dec_layers=1, ffn_dim=64, num_queries=10, query_counts=[10], global_blocks=[2, 5, 8, 11],
                           taps=[2, 5, 8, 11], patch_sizes=[14])).eval()
    ck = tmp_path / "base.pth"
    torch.save({"model": to_rfdetr(src)}, ck)
    net, rep = import_rfdetr(ck)
    assert_same_weights(net, src)
    c = net.cfg
    assert c.name == "rfdetr-custom" and c.taps == [2, 5, 8, 11] and c.global_blocks == [2, 5, 8, 11]
    assert 560 in c.resolutions and all(r % 56 == 0 for r in c.resolutions) and 4 in c.windows
    assert SubnetConfig.parse("p14-r560-w4-d1-q10", c)
    notes = " | ".join(rep.notes)
    assert "RFDETRBase's default 560" in notes and "rfdetr's RFDETRBase 4" in notes


def test_unknown_patch14_layout_needs_resolution(tmp_path):
    torch.manual_seed(3)
    src = randomize(Supernet(src_cfg(patch_size=14, pos_grid=9, patch_sizes=[14]))).eval()
    ck = tmp_path / "odd.pth"
    torch.save({"model": to_rfdetr(src)}, ck)  # 9 x 14 = 126 px is not a multiple of 14 x 4 windows
    with pytest.raises(CheckpointError) as e:
        import_rfdetr(ck)
    assert "--resolution" in str(e.value) and "126 px" in str(e.value) and "56" in str(e.value)
    net, rep = import_rfdetr(ck, args={"resolution": 112})
    assert 112 in net.cfg.resolutions and all(r % 56 == 0 for r in net.cfg.resolutions)
    assert_same_weights(net, src)
    out = tmp_path / "odd.safetensors"
    p = subprocess.run([sys.executable, "-m", "edgedet.cli", "import", "rfdetr", str(ck), "-o", str(out),
                        "--resolution", "100"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "--resolution 100 is not a multiple of patch x windows" in p.stderr
    assert not out.exists()
    p = subprocess.run([sys.executable, "-m", "edgedet.cli", "import", "rfdetr", str(ck), "-o", str(out),
                        "--resolution", "112", "--num-windows", "2", "--class-names", "a,b,c,d,e,f"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    back = load_supernet(out)
    assert 112 in back.cfg.resolutions and back.cfg.class_names == list("abcdef")


def test_user_args_replace_the_checkpoints_with_a_note(p4, tmp_path):
    ck = tmp_path / "rf.pth"
    torch.save({"model": to_rfdetr(p4), "args": rf_args(p4.cfg)}, ck)
    net, rep = import_rfdetr(ck, args={"resolution": 160, "num_windows": 1})
    assert 160 in net.cfg.resolutions and 1 in net.cfg.windows
    assert "args.resolution is 128 in the checkpoint; used 160 as given" in rep.notes


def test_coco_head_carries_coco_category_ids(tmp_path):
    torch.manual_seed(4)
    src = Supernet(src_cfg(num_classes=91)).eval()
    ck = tmp_path / "coco.pth"
    torch.save({"model": to_rfdetr(src)}, ck)
    net, rep = import_rfdetr(ck)
    assert net.cfg.category_ids == list(range(91)) and net.cfg.class_names[3] == "car"
    assert net.cfg.class_names[12] == "N/A" and net.cfg.class_names[90] == "toothbrush"
    torch.save({"model": to_rfdetr(src), "args": rf_args(src.cfg, class_names=[f"k{i}" for i in range(90)])}, ck)
    net, _ = import_rfdetr(ck)
    assert net.cfg.category_ids is None and net.cfg.class_names[:2] == ["k0", "k1"]


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
