from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from edgedet.model.pretrained import (
    PretrainedError,
    convert_dinov2,
    detect_layout,
    load_dinov2_into,
    pi_resize_patch_kernel,
    read_state_dict,
    resize_pos_embed,
)

D, DEPTH, P, G, R = 48, 2, 14, 4, 4


def fake_dinov2(registers: bool, dim: int = D, depth: int = DEPTH) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """(torch-hub sd, HF sd, expected edgedet sd) built from the same random tensors."""
    g = torch.Generator().manual_seed(0)

    def t(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g)

    top = {
        "cls_token": t(1, 1, dim), "mask_token": t(1, dim), "pos_embed": t(1, 1 + G * G, dim),
        "patch_embed.proj.weight": t(dim, 3, P, P), "patch_embed.proj.bias": t(dim),
        "norm.weight": t(dim), "norm.bias": t(dim),
    }
    hub = dict(top)
    hf = {
        "embeddings.cls_token": top["cls_token"], "embeddings.mask_token": top["mask_token"],
        "embeddings.position_embeddings": top["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": top["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": top["patch_embed.proj.bias"],
        "layernorm.weight": top["norm.weight"], "layernorm.bias": top["norm.bias"],
    }
    if registers:
        hub["register_tokens"] = hf["embeddings.register_tokens"] = t(1, R, dim)
    expected = {k: v for k, v in top.items() if k != "mask_token"}
    for i in range(depth):
        q, k, v = t(dim, dim), t(dim, dim), t(dim, dim)
        qb, kb, vb = t(dim), t(dim), t(dim)
        common = {  # edgedet/hub name -> HF name
            "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
            "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
            "attn.proj.weight": "attention.output.dense.weight", "attn.proj.bias": "attention.output.dense.bias",
            "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1",
            "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
            "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
        }
        shapes = {"attn.proj.weight": (dim, dim), "mlp.fc1.weight": (4 * dim, dim), "mlp.fc1.bias": (4 * dim,),
                  "mlp.fc2.weight": (dim, 4 * dim)}
        for name, hf_name in common.items():
            x = t(*shapes.get(name, (dim,)))
            hub[f"blocks.{i}.{name}"] = expected[f"blocks.{i}.{name}"] = x
            hf[f"encoder.layer.{i}.{hf_name}"] = x
        hub[f"blocks.{i}.attn.qkv.weight"] = expected[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q, k, v])
        hub[f"blocks.{i}.attn.qkv.bias"] = expected[f"blocks.{i}.attn.qkv.bias"] = torch.cat([qb, kb, vb])
        for n, w, b in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
            hf[f"encoder.layer.{i}.attention.attention.{n}.weight"] = w
            hf[f"encoder.layer.{i}.attention.attention.{n}.bias"] = b
    return hub, hf, expected


def assert_same(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("registers", [False, True])
@pytest.mark.parametrize("hub_prefix,hf_prefix", [("", ""), ("backbone.", "dinov2."), ("module.backbone.", "")])
def test_both_layouts_convert_identically(tmp_path: Path, registers: bool, hub_prefix: str, hf_prefix: str) -> None:
    hub, hf, expected = fake_dinov2(registers)
    torch.save({hub_prefix + k: v for k, v in hub.items()}, tmp_path / "hub.pth")
    save_file({hf_prefix + k: v.contiguous() for k, v in hf.items()}, str(tmp_path / "hf.safetensors"))
    hub_sd, hf_sd = read_state_dict(tmp_path / "hub.pth"), read_state_dict(tmp_path / "hf.safetensors")
    assert detect_layout(hub_sd) == "torchhub" and detect_layout(hf_sd) == "hf"

    a, ra = convert_dinov2(hub_sd, patch_size=P, grid=G)
    b, rb = convert_dinov2(hf_sd, patch_size=P, grid=G)
    assert_same(a, expected)
    assert_same(b, expected)
    assert (ra["prefix"], rb["prefix"]) == (hub_prefix, hf_prefix)
    drops_hub = {"mask_token"} | ({"register_tokens"} if registers else set())
    assert set(ra["dropped"]) == {hub_prefix + k for k in drops_hub}
    assert set(rb["dropped"]) == {hf_prefix + "embeddings." + k for k in drops_hub}
    for r in (ra, rb):
        assert r["num_register_tokens"] == (R if registers else 0)
        assert r["embed_dim"] == D and r["source_depth"] == r["depth"] == DEPTH
        assert not (r["grid_resized"] or r["patch_resized"] or r["depth_truncated"])


def test_qkv_concatenation_order() -> None:
    _, hf, _ = fake_dinov2(False)
    out, _ = convert_dinov2(hf, patch_size=P, grid=G)
    w, b = out["blocks.1.attn.qkv.weight"], out["blocks.1.attn.qkv.bias"]
    assert w.shape == (3 * D, D) and b.shape == (3 * D,)
    for j, n in enumerate(("query", "key", "value")):
        assert torch.equal(w[j * D:(j + 1) * D], hf[f"encoder.layer.1.attention.attention.{n}.weight"])
        assert torch.equal(b[j * D:(j + 1) * D], hf[f"encoder.layer.1.attention.attention.{n}.bias"])


def test_unwraps_training_containers(tmp_path: Path) -> None:
    hub, _, expected = fake_dinov2(True)
    teacher = {f"backbone.{k}": v for k, v in hub.items()} | {"dino_head.mlp.0.weight": torch.zeros(2, 2)}
    torch.save({"teacher": teacher}, tmp_path / "teacher_checkpoint.pth")
    torch.save({"model": {"state_dict": hub}, "epoch": 3, "note": "x"}, tmp_path / "nested.pt")
    out, rep = convert_dinov2(read_state_dict(tmp_path / "teacher_checkpoint.pth"), patch_size=P, grid=G)
    assert_same(out, expected)
    assert "dino_head.mlp.0.weight" in rep["dropped"]
    assert_same(convert_dinov2(read_state_dict(tmp_path / "nested.pt"), patch_size=P, grid=G)[0], expected)


def test_chunked_blocks_and_student_teacher() -> None:
    hub, _, expected = fake_dinov2(False)
    # block_chunks=1 training checkpoints: blocks.<chunk>.<global block index>.<param>
    chunked = {("blocks.0." + k.split(".", 1)[1] if k.startswith("blocks.") else k): v for k, v in hub.items()}
    sd = {f"teacher.backbone.{k}": v for k, v in chunked.items()} | {f"student.backbone.{k}": v * 0 for k, v in hub.items()}
    out, rep = convert_dinov2(sd, patch_size=P, grid=G)
    assert rep["prefix"] == "teacher.backbone."
    assert_same(out, expected)


def test_resize_grid_patch_and_depth() -> None:
    hub, _, expected = fake_dinov2(False)
    out, rep = convert_dinov2(hub, patch_size=16, grid=6, depth=1)
    assert out["pos_embed"].shape == (1, 37, D)
    assert torch.equal(out["pos_embed"][:, 0], expected["pos_embed"][:, 0])
    assert out["patch_embed.proj.weight"].shape == (D, 3, 16, 16)
    assert not any(k.startswith("blocks.1.") for k in out)
    assert rep["grid_resized"] and rep["patch_resized"] and rep["depth_truncated"]
    assert (rep["source_grid"], rep["source_patch_size"], rep["source_depth"]) == (G, P, DEPTH)
    with pytest.raises(PretrainedError, match="2 blocks but depth=3"):
        convert_dinov2(hub, patch_size=P, grid=G, depth=3)


@pytest.mark.parametrize("new_grid", [2, 6, 37])
def test_pos_embed_resize_keeps_cls(new_grid: int) -> None:
    pos = torch.randn(1, 1 + 16, 8)
    out = resize_pos_embed(pos, new_grid)
    assert out.shape == (1, 1 + new_grid * new_grid, 8)
    assert torch.equal(out[:, 0], pos[:, 0])
    const = torch.ones(1, 17, 8) * 3.0  # a constant field stays constant (up/down, antialiased)
    assert torch.allclose(resize_pos_embed(const, new_grid), torch.full((1, 1 + new_grid**2, 8), 3.0), atol=1e-5)
    assert resize_pos_embed(pos, 4) is pos


@pytest.mark.parametrize("p,new_p", [(16, 24), (8, 16), (14, 16)])
def test_pi_resize_preserves_inner_product_when_upsampling(p: int, new_p: int) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 3, p, p, generator=g)
    x = torch.randn(5, 3, p, p, generator=g)
    w2 = pi_resize_patch_kernel(w, new_p)
    assert w2.shape == (6, 3, new_p, new_p) and w2.dtype == w.dtype
    x2 = F.interpolate(x, size=(new_p, new_p), mode="bilinear", align_corners=False, antialias=False)
    ref = torch.einsum("bchw,ochw->bo", x.double(), w.double())
    got = torch.einsum("bchw,ochw->bo", x2.double(), w2.double())
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    assert pi_resize_patch_kernel(w, p) is w


def test_pi_resize_downsampling_is_least_squares() -> None:
    w = torch.randn(4, 3, 16, 16)
    w2 = pi_resize_patch_kernel(w, 8)
    basis = torch.eye(256).reshape(256, 1, 16, 16)
    bt = F.interpolate(basis, size=(8, 8), mode="bilinear", align_corners=False).reshape(256, 64)
    ls = torch.linalg.lstsq(bt.double(), w.reshape(-1, 256).T.double()).solution.T
    assert torch.allclose(w2.reshape(-1, 64).double(), ls, atol=1e-4)


def test_refuses_pickled_code_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {marker}",)

    torch.save({"w": torch.zeros(1), "x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(PretrainedError, match="unpickling refused.*non-tensor") as ei:
        read_state_dict(tmp_path / "evil.pth")
    assert str(tmp_path / "evil.pth") in str(ei.value) and "\n" not in str(ei.value)
    assert not marker.exists()


class Custom:
    pass


def test_refuses_custom_objects(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(1), "cfg": Custom()}, tmp_path / "custom.bin")
    with pytest.raises(PretrainedError, match="unpickling refused.*Custom"):
        read_state_dict(tmp_path / "custom.bin")


@pytest.mark.parametrize("name", ["bad.pth", "bad.safetensors", "bad.bin"])
def test_corrupt_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(os.urandom(64) + b"garbage")
    with pytest.raises(PretrainedError, match="corrupt") as ei:
        read_state_dict(path)
    assert str(path) in str(ei.value)


def test_truncated_file(tmp_path: Path) -> None:
    hub, _, _ = fake_dinov2(False)
    torch.save(hub, tmp_path / "full.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:1000])
    with pytest.raises(PretrainedError, match="cut.pth: corrupt"):
        read_state_dict(tmp_path / "cut.pth")


def test_missing_and_non_state_dict(tmp_path: Path) -> None:
    with pytest.raises(PretrainedError, match="nope.pth: no such"):
        read_state_dict(tmp_path / "nope.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(PretrainedError, match="not a state dict"):
        read_state_dict(tmp_path / "list.pth")
    torch.save({"w": torch.zeros(1), "lr": 0.1}, tmp_path / "mixed.pth")
    with pytest.raises(PretrainedError, match="not a state dict.*'lr'"):
        read_state_dict(tmp_path / "mixed.pth")
    with pytest.raises(PretrainedError, match="no 'cls_token'"):
        detect_layout({"w": torch.zeros(1)})


def test_swiglu_refused() -> None:
    _, hf, _ = fake_dinov2(False)
    hf["encoder.layer.0.mlp.weights_in.weight"] = torch.zeros(1)
    with pytest.raises(PretrainedError, match="SwiGLU"):
        convert_dinov2(hf, patch_size=P, grid=G)


# ----------------------------------------------------------------- load into a module


class _LS(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d))


class _Attn(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)


class _Mlp(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)


class _Block(nn.Module):
    def __init__(self, d: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1, self.attn, self.ls1 = nn.LayerNorm(d), _Attn(d), _LS(d)
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(d), _Mlp(d, mlp_ratio * d), _LS(d)


class _PatchEmbed(nn.Module):
    def __init__(self, d: int, p: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, d, p, p)


class TinyViT(nn.Module):
    def __init__(self, embed_dim: int, depth: int, patch_size: int, grid: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.embed_dim, self.depth, self.patch_size, self.grid = embed_dim, depth, patch_size, grid
        self.patch_embed = _PatchEmbed(embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.blocks = nn.ModuleList(_Block(embed_dim, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)


def test_load_into_module(tmp_path: Path) -> None:
    _, hf, expected = fake_dinov2(True)
    save_file(hf, str(tmp_path / "model.safetensors"))
    vit = TinyViT(D, 1, 16, 6)
    rep = load_dinov2_into(vit, tmp_path / "model.safetensors")
    assert rep["depth_truncated"] and rep["patch_resized"] and rep["grid_resized"]
    assert torch.equal(vit.blocks[0].attn.qkv.weight.detach(), expected["blocks.0.attn.qkv.weight"])
    vit2 = TinyViT(D, DEPTH, P, G)
    load_dinov2_into(vit2, tmp_path / "model.safetensors")
    assert_same({k: v for k, v in vit2.state_dict().items()}, expected)


def test_dimension_mismatch_messages(tmp_path: Path) -> None:
    hub, _, _ = fake_dinov2(False)
    torch.save(hub, tmp_path / "vits.pth")
    with pytest.raises(PretrainedError, match=r"vits.pth: file is ViT \(embed dim 48\) but the model's embed_dim is 32"):
        load_dinov2_into(TinyViT(32, DEPTH, P, G), tmp_path / "vits.pth")
    with pytest.raises(PretrainedError, match=r"'blocks.0.mlp.fc1.weight': checkpoint \(192, 48\) vs model \(96, 48\)"):
        load_dinov2_into(TinyViT(D, DEPTH, P, G, mlp_ratio=2), tmp_path / "vits.pth")
    with pytest.raises(PretrainedError, match="vits.pth: checkpoint has 2 blocks but depth=4"):
        load_dinov2_into(TinyViT(D, 4, P, G), tmp_path / "vits.pth")
    big = {k: v for k, v in fake_dinov2(False, dim=384, depth=1)[0].items()}
    torch.save(big, tmp_path / "s.pth")
    with pytest.raises(PretrainedError, match=r"file is ViT-S \(embed dim 384\) but the model's embed_dim is 48"):
        load_dinov2_into(TinyViT(D, 1, P, G), tmp_path / "s.pth")


def test_error_is_checkpoint_error(tmp_path: Path) -> None:
    from edgedet.errors import CheckpointError

    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "missing.safetensors")
    assert issubclass(PretrainedError, ValueError)


def test_load_into_edgedet_vit(tmp_path: Path) -> None:
    vit_mod = pytest.importorskip("edgedet.model.vit")
    _, hf, expected = fake_dinov2(True)
    save_file(hf, str(tmp_path / "model.safetensors"))
    vit = vit_mod.ViT(embed_dim=D, depth=DEPTH, num_heads=3, mlp_ratio=4.0, patch_size=P, pos_grid=G,
                      global_blocks=[1], taps=[2])
    load_dinov2_into(vit, tmp_path / "model.safetensors")
    assert_same(dict(vit.state_dict()), expected)
