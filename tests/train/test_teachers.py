"""Teachers for DSI: DINOv3 and DINOv2 (Hugging Face and torch-hub layouts, constructed state dicts since no weights
can be downloaded) against the transformers implementations, an edgedet supernet, a timm stand-in; bad files; the
on-disk feature cache."""
from __future__ import annotations

import math
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

from edgedet.checkpoint import save_supernet
from edgedet.data.coco import CocoDetection
from edgedet.data.transforms import batch_resize
from edgedet.errors import CheckpointError, MissingExtraError
from edgedet.model.supernet import IMAGENET_MEAN, IMAGENET_STD
from edgedet.train.distill import GAM, Distiller, TeacherCache
from edgedet.train.teachers import SupernetTeacher, load_teacher, rope_tables

from ..conftest import randomize

transformers = pytest.importorskip("transformers")


def _norm(x):
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _hf_dinov3(registers=4):
    cfg = transformers.DINOv3ViTConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, patch_size=16, image_size=64,
                                       num_register_tokens=registers, layerscale_value=0.5)
    torch.manual_seed(0)
    return randomize(transformers.DINOv3ViTModel(cfg), seed=3, scale=0.1).eval()


def _hf_features(model, x, prefix):
    with torch.no_grad():
        h = model(pixel_values=_norm(x)).last_hidden_state[:, prefix:]
    gh, gw = x.shape[-2] // 16, x.shape[-1] // 16
    return h.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)


def _hub_from_hf_dinov3(sd: dict) -> dict:
    """The torch-hub (facebookresearch/dinov3) names for the same weights: fused qkv whose key bias is masked (and
    holds NaN, which the loader must ignore), storage tokens, rope periods."""
    sd = {k.removeprefix("model."): v for k, v in sd.items()}
    d = sd["embeddings.cls_token"].shape[-1]
    out = {"cls_token": sd["embeddings.cls_token"], "storage_tokens": sd["embeddings.register_tokens"],
           "mask_token": sd["embeddings.mask_token"][0], "patch_embed.proj.weight":
           sd["embeddings.patch_embeddings.weight"], "patch_embed.proj.bias": sd["embeddings.patch_embeddings.bias"],
           "norm.weight": sd["norm.weight"], "norm.bias": sd["norm.bias"],
           "rope_embed.periods": 100.0 ** (2 * torch.arange(4, dtype=torch.float32) / 8)}
    for i in range(2):
        p = f"layer.{i}."
        q = f"blocks.{i}."
        out[q + "attn.qkv.weight"] = torch.cat([sd[p + f"attention.{n}_proj.weight"] for n in "qkv"])
        out[q + "attn.qkv.bias"] = torch.cat([sd[p + "attention.q_proj.bias"], torch.full((d,), float("nan")),
                                              sd[p + "attention.v_proj.bias"]])
        out[q + "attn.qkv.bias_mask"] = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)])
        for a, b in (("attention.o_proj", "attn.proj"), ("mlp.up_proj", "mlp.fc1"), ("mlp.down_proj", "mlp.fc2"),
                     ("norm1", "norm1"), ("norm2", "norm2")):
            out[q + b + ".weight"], out[q + b + ".bias"] = sd[p + a + ".weight"], sd[p + a + ".bias"]
        out[q + "ls1.gamma"], out[q + "ls2.gamma"] = sd[p + "layer_scale1.lambda1"], sd[p + "layer_scale2.lambda1"]
    return {"model": out}  # wrapped, as training checkpoints are


def test_rope_tables_by_hand():
    periods = torch.tensor([1.0, 4.0])  # head dim 8
    sin, cos = rope_tables(1, 2, periods)
    # patch centres: y = 0, x = -0.5 and +0.5; angles (y/1, y/4, x/1, x/4) * 2 pi, repeated twice
    a = 2 * math.pi * torch.tensor([[0, 0, -0.5, -0.125], [0, 0, 0.5, 0.125]])
    torch.testing.assert_close(sin, torch.cat([a, a], 1).sin())
    torch.testing.assert_close(cos, torch.cat([a, a], 1).cos())


def test_dinov3_matches_transformers_in_both_layouts(tmp_path):
    model = _hf_dinov3()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))  # 4 x 6 patches: per-axis coordinates
    want = _hf_features(model, x, 1 + 4)
    save_file(sd, str(tmp_path / "hf.safetensors"))  # transformers >= 5 names (model.layer.N)
    hub_names = {k.removeprefix("model."): v for k, v in sd.items()}  # as published on the Hub (layer.N)
    save_file(hub_names, str(tmp_path / "hub-hf.safetensors"))
    torch.save(_hub_from_hf_dinov3(sd), tmp_path / "hub.pth")
    for f in ("hf.safetensors", "hub-hf.safetensors", "hub.pth"):
        t = load_teacher(tmp_path / f, heads=4)
        assert t.kind == "dinov3" and t.dim == 64 and t.patch == 16 and t.registers == 4
        got = t.features(x)
        assert got.shape == (2, 64, 4, 6)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
        assert not any(p.requires_grad for p in t.parameters()) and not t.training
    assert load_teacher(tmp_path / "hub.pth", "dinov3", heads=4).sha != load_teacher(tmp_path / "hf.safetensors",
                                                                                      heads=4).sha


def test_dinov3_refuses_swiglu_and_wrong_heads(tmp_path):
    sd = _hub_from_hf_dinov3({k: v for k, v in _hf_dinov3().state_dict().items()})["model"]
    sd["blocks.0.mlp.w12.weight"] = torch.zeros(2, 2)
    torch.save(sd, tmp_path / "swiglu.pth")
    with pytest.raises(CheckpointError, match="swiglu.pth.*SwiGLU"):
        load_teacher(tmp_path / "swiglu.pth")
    sd.pop("blocks.0.mlp.w12.weight")
    torch.save(sd, tmp_path / "ok.pth")
    with pytest.raises(CheckpointError, match="rope periods"):
        load_teacher(tmp_path / "ok.pth", heads=2)  # 32-dim heads need 8 periods, the file has 4


@pytest.mark.parametrize("registers", [0, 2])
def test_dinov2_matches_transformers(tmp_path, registers):
    kw = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, patch_size=16,
              image_size=64, layerscale_value=0.5)
    torch.manual_seed(0)
    if registers:
        model = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kw))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**kw))
    model = randomize(model, seed=4, scale=0.1).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "v2.safetensors"))
    t = load_teacher(tmp_path / "v2.safetensors", heads=4)
    assert t.kind == "dinov2" and t.registers == registers and t.pos_grid == 4
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(t.features(x), _hf_features(model, x, 1 + registers), atol=2e-5, rtol=1e-4)
    assert t.features(torch.rand(1, 3, 96, 128)).shape == (1, 64, 6, 8)  # position grid resized


def test_edgedet_teacher_uses_its_largest_subnet(tiny_net, tmp_path):
    path = save_supernet(tiny_net, tmp_path / "teacher.safetensors")
    t = load_teacher(path)
    assert isinstance(t, SupernetTeacher) and t.subnet.id == tiny_net.cfg.largest().id
    assert t.dim == tiny_net.cfg.hidden_dim and t.input_size(8) == 384
    x = torch.rand(1, 3, 384, 384)
    with torch.no_grad():
        want = tiny_net.feature_maps(x, 12, 1)[-1]  # P4 is the tiny preset's coarsest level
    torch.testing.assert_close(t.features(x), want)
    # the student's grid is reached by resizing the teacher's map
    net = randomize(type(tiny_net)(tiny_net.cfg))
    d = Distiller(net, t, GAM(1.0))
    assert d.teacher_maps(torch.rand(2, 3, 192, 192), [{}, {}], 8).shape == (2, 128, 8, 8)


def test_timm_teacher_through_a_stand_in(monkeypatch):
    class Stub(torch.nn.Module):
        num_prefix_tokens, num_features = 2, 24
        pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

        def __init__(self):
            super().__init__()
            self.patch_embed = types.SimpleNamespace(patch_size=(8, 8))
            self.proj = torch.nn.Conv2d(3, 24, 8, 8)

        def forward_features(self, x):
            t = self.proj(x).flatten(2).transpose(1, 2)
            return torch.cat([torch.full_like(t[:, :2], 99.0), t], 1)

    calls = {}

    def create_model(name, pretrained=False, **kw):
        calls.update(kw, name=name)
        return Stub()

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    t = load_teacher("timm:vit_tiny_stub")
    assert t.kind == "timm" and t.patch == 8 and t.dim == 24 and calls["name"] == "vit_tiny_stub"
    x = torch.rand(1, 3, 32, 48)
    f = t.features(x)
    assert f.shape == (1, 24, 4, 6) and (f != 99).all()
    torch.testing.assert_close(f, t.model.proj((x - 0.5) / 0.5))
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(MissingExtraError, match="edgedet\\[timm\\]"):
        load_teacher("timm:anything")


def test_bad_teacher_files_say_so_in_one_line(tmp_path):
    cases = {"missing.pth": None, "garbage.pth": b"not a zip", "nokeys.safetensors": {"foo": torch.zeros(2)}}
    for name, content in cases.items():
        p = tmp_path / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        elif content is not None:
            save_file(content, str(p))
        with pytest.raises(CheckpointError) as e:
            load_teacher(p)
        assert name in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(Exception, match="unknown teacher type"):
        load_teacher(tmp_path / "garbage.pth", "dinov9")


def test_feature_cache_fills_once_and_reads_back(tmp_path, synth_data):
    model = _hf_dinov3(registers=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "t.safetensors"))
    t = load_teacher(tmp_path / "t.safetensors", heads=4)
    ds = CocoDetection(synth_data, "valid")
    cache = TeacherCache(t, tmp_path / "cache", 64)
    assert cache.fill(ds, batch_size=4) == len(ds)
    assert cache.fill(ds) == 0  # everything cached
    assert cache.dir.parent.name == f"dinov3-{t.sha[:16]}" and cache.dir.name == "r64"
    assert sorted(p.stem for p in cache.dir.iterdir()) == sorted(str(im["id"]) for im in ds.images)
    ids = [ds.images[i]["id"] for i in (0, 3)]
    got = cache.get(ids)
    want = t.features(batch_resize([ds.load_image(0), ds.load_image(3)], 64))
    torch.testing.assert_close(got, want, atol=2e-2, rtol=1e-2)  # stored in fp16
    # a Distiller with the cache resamples the whole-image features to the student's grid (identity view)
    net = randomize(type(_student())(_student().cfg))
    d = Distiller(net, t, GAM(1.0), cache)
    maps = d.teacher_maps(torch.rand(2, 3, 128, 128), [{"image_id": i} for i in ids], 4)
    torch.testing.assert_close(maps, got, atol=1e-5, rtol=0)  # grid 4 = cached grid


def _student():
    from edgedet.config import preset
    from edgedet.model.supernet import Supernet

    return Supernet(preset("tiny"))
