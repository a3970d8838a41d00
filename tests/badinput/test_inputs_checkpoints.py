"""Bad-input corpus: checkpoints and weight files. Supernet safetensors files with one absurd config value per field
(generated from the tiny preset), hostile headers, corrupt and pickled files; RF-DETR .pth files with one hostile
`args` value per field the importer reads and hostile state dicts; DINOv2/DINOv3 teacher files. Every case: exit 2,
one line naming the file and what is wrong, nothing written, no payload run, bounded memory and time."""
from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from edgedet.config import preset

from .harness import HOSTILE_NAMES, Case

MEM = 1536  # MiB above the preloaded fork server: an absurd config must be refused long before this


# ----------------------------------------------------------------------------------------- supernet safetensors

def write_supernet(path: Path, config, groups: str = "1", meta: str = "{}", fmt: str = "edgedet-supernet",
                   tensors: dict | None = None) -> None:
    """A safetensors file with edgedet's metadata; `config` a dict (JSON-encoded here) or a string as is."""
    from safetensors.torch import save_file

    text = config if isinstance(config, str) else json.dumps(config)
    save_file(tensors or {"x": torch.zeros(2)}, str(path), metadata={"format": fmt, "config": text, "groups": groups,
                                                                       "meta": meta})


def tiny() -> dict:
    return preset("tiny").model_dump()


HOSTILE_CONFIG = {  # field -> absurd values (each one a case)
    "embed_dim": [10**9, 0, -128, "128", 1.5], "depth": [10**6, 0], "num_heads": [0, 10**6],
    "mlp_ratio": [float("nan"), 1e9, -4.0, float("inf")], "patch_size": [0, 10**5], "pos_grid": [10**6, 0],
    "global_blocks": [[10**6], [-1], [1, 1]], "taps": [[], [7], [10**9]], "levels": [["P9"], []],
    "hidden_dim": [10**9, 7], "projector_blocks": [10**6, -1], "dec_layers": [10**5, -1],
    "sa_heads": [0, 3], "ca_heads": [-3], "n_points": [10**6, 0], "ffn_dim": [10**9], "num_queries": [10**9, 0],
    "num_classes": [10**9, 0], "class_names": [["x"] * 5, ["x" * 5000] * 6, [1, 2, 3, 4, 5, 6]],
    "category_ids": [[-1] * 6, [1, 2], ["a"] * 6], "fdr_bins": [10**6, 5], "fdr_reg_scale": [float("inf")],
    "fdr_up": [-1.0], "patch_sizes": [[0], [], [10**6]], "windows": [[10**6], [0]],
    "resolutions": [[10**9], [], list(range(16, 16 * 1000, 16))], "query_counts": [[0], [10**9]],
    "max_resolution": [10**9, 0], "name": ["x" * 100000], "pos_antialias": ["maybe"],
}


def _config_case(field: str, i: int, value) -> Case:
    def setup(sb, s):
        cfg = tiny()
        cfg[field] = value
        write_supernet(sb / "ck.safetensors", cfg)

    cmd = [["info", "-c", "ck.safetensors"], ["export", "-c", "ck.safetensors", "-s", "p16-r192-w1-d1-q25", "-o",
                                              "m.onnx"], ["eval", "-c", "ck.safetensors", "--data", "nodata"]][i % 3]
    return Case(f"config-{field}-{i}", cmd, setup=setup, mem_mb=MEM, timeout=60,
                expect_stderr=r"ck\.safetensors: invalid config in checkpoint metadata: \S+")


CONFIG_CASES = [_config_case(f, i, v) for f, vals in HOSTILE_CONFIG.items() for i, v in enumerate(vals)]


def _header_case(name: str, needle: str, **kw) -> Case:
    def setup(sb, s):
        args = {"config": tiny()} | kw
        write_supernet(sb / "ck.safetensors", **args)

    return Case(f"header-{name}", ["export", "-c", "ck.safetensors", "-s", "p16-r192-w1-d1-q25", "-o", "m.onnx"],
                setup=setup, mem_mb=MEM, timeout=60, expect_stderr=needle)


def _big_but_within_limits() -> dict:
    """A config under every limit whose model would take ~3 GB: refused by the tensor-shape check on the meta
    device, before anything is allocated."""
    cfg = tiny()
    cfg.update(embed_dim=4096, num_heads=32, depth=12, hidden_dim=2048, sa_heads=8, ca_heads=8, ffn_dim=8192)
    return cfg


HEADER_CASES = [
    _header_case("groups-huge", r"'groups' is '1000000000'", groups="1000000000"),
    _header_case("groups-text", r"'groups' is 'many'", groups="many"),
    _header_case("groups-zero", r"'groups' is '0'", groups="0"),
    _header_case("meta-not-json", r"'meta' is not JSON", meta="{oops"),
    _header_case("meta-a-list", r"'meta' is a list", meta="[1, 2]"),
    _header_case("format-foreign", r"without edgedet supernet metadata", fmt="something-else"),
    _header_case("config-not-json", r"invalid config in checkpoint metadata", config="{not json"),
    _header_case("config-a-list", r"invalid config in checkpoint metadata", config="[1, 2, 3]"),
    _header_case("config-unknown-field", r"unknown field", config=tiny() | {"evil": 1}),
    _header_case("config-missing-field", r"depth: required field is missing",
                 config={k: v for k, v in tiny().items() if k != "depth"}),
    _header_case("config-params-over-limit", r"parameters, over the limit",
                 config=tiny() | {"embed_dim": 8192, "num_heads": 128, "depth": 64}),
    _header_case("config-3gb-tensors-absent", r"does not match its config: \d+ missing tensor",
                 config=_big_but_within_limits()),
    _header_case("config-right-shape-names-wrong", r"unexpected tensor",
                 tensors={"backbone.cls_token": torch.zeros(1, 1, 128), "evil\nkey": torch.zeros(1)}),
]


def _file_case(name: str, content, cmd: str = "info", needle: str = r"ck\.safetensors") -> Case:
    """content: bytes ({marker} substituted), a function returning them, or None (a folder in the file's place)."""
    def setup(sb, s):
        if content is None:
            (sb / "ck.safetensors").mkdir()
        else:
            data = content() if callable(content) else content
            (sb / "ck.safetensors").write_bytes(data.replace(b"{marker}", str(s["marker"]).encode()))

    argv = {"info": ["info", "-c", "ck.safetensors"],
            "eval": ["eval", "-c", "ck.safetensors", "-s", "p24-r192-w2-d0-q25", "--data", "nodata"],
            "export": ["export", "-c", "ck.safetensors", "-s", "p24-r192-w2-d0-q25", "-o", "m.onnx"]}[cmd]
    return Case(f"file-{name}-{cmd}", argv, setup=setup, mem_mb=MEM, timeout=60, expect_stderr=needle)


class _Evil:
    """Unpickling this runs `func(arg)`: what a malicious checkpoint does."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _valid_st() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        write_supernet(Path(d) / "x.safetensors", tiny())
        return (Path(d) / "x.safetensors").read_bytes()


FILE_CASES = [
    _file_case("empty", b""),
    _file_case("garbage", bytes(range(256)) * 4),
    _file_case("header-length-huge", (2**62).to_bytes(8, "little") + b"{}"),
    _file_case("header-length-past-end", (4096).to_bytes(8, "little") + b'{"x": 1}'),
    _file_case("header-not-json", (8).to_bytes(8, "little") + b"{notjson"),
    _file_case("tensor-offsets-past-end", (60).to_bytes(8, "little")
               + b'{"x":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}    '),
    _file_case("pickle-payload", pickle.dumps(_Evil(os.system, "touch {marker}/pwned-st"))),
    _file_case("a-folder", None),
    _file_case("truncated", lambda: _valid_st()[:-5], "export"),
    _file_case("pickle-payload", pickle.dumps(_Evil(os.system, "touch {marker}/pwned-st2")), "eval"),
]


# ---------------------------------------------------------------------------------------------- RF-DETR .pth

@functools.lru_cache(maxsize=1)
def _rfdetr_parts():
    """(state dict in RF-DETR's layout, its args) of a small random RF-DETR-shaped supernet."""
    from edgedet.model.supernet import Supernet

    from ..importers.test_rfdetr import rf_args, src_cfg, to_rfdetr

    torch.manual_seed(0)
    net = Supernet(src_cfg()).eval()
    return to_rfdetr(net), vars(rf_args(net.cfg))


def _rf_case(name: str, edit, needle: str, args_as: str = "namespace", extra: list[str] = ()) -> Case:
    def setup(sb, s):
        sd, args = _rfdetr_parts()
        sd, args = dict(sd), dict(args)
        obj = {"model": sd, "args": args}
        edit(obj, sd, args, s)
        if args_as == "namespace" and isinstance(obj.get("args"), dict):
            obj["args"] = argparse.Namespace(**obj["args"])
        torch.save(obj, sb / "rf.pth")

    return Case(f"rfdetr-{name}", ["import", "rfdetr", "rf.pth", "-o", "out.safetensors", *extra], setup=setup,
                mem_mb=MEM, timeout=90, expect_stderr=needle)


def _arg(key, value):
    return lambda obj, sd, args, s: args.__setitem__(key, value)


HOSTILE_ARGS = {  # rfdetr arg -> hostile values
    "resolution": [-512, 0, "560", 10**7, 100.5], "num_windows": [-2, 0, "4", 10**6], "patch_size": [0, "16"],
    "positional_encoding_size": [-1, 10**6], "dec_layers": [-1, 10**4], "sa_nheads": [0, "8", -8],
    "ca_nheads": [0, 10**6], "dec_n_points": [0, 2.0], "dim_feedforward": [0, 10**9], "num_queries": [0, -300, 10**9],
    "group_detr": [0, -13, "13"], "hidden_dim": [0, 10**7], "num_classes": [0, 10**9],
    "num_decoder_registers": [-1, "x"], "out_feature_indexes": [[3, 6, "9"], list(range(5000)), "3,6,9"],
    "window_block_indexes": [[-1], "all"], "two_stage": ["no", 2], "bbox_reparam": ["True"],
    "layer_norm": [[1]], "decoder_norm": [123, "x" * 100], "encoder": [["dinov2"]],
    "projector_scale": [["P7"], "P4", [4]], "class_names": [[1, 2, 3], ["x" * 5000], {"a": "dog"}, 42],
}
RF_ARG_CASES = [_rf_case(f"args-{k}-{i}", _arg(k, v), rf"rf\.pth: (args\.{k}|.*{k})")
                for k, vals in HOSTILE_ARGS.items() for i, v in enumerate(vals)]


def _sd(key, value):
    return lambda obj, sd, args, s: sd.__setitem__(key, value)


VIT = "backbone.0.encoder.encoder."
RF_SD_CASES = [
    _rf_case("sd-cls-token-0dim", _sd(VIT + "embeddings.cls_token", torch.tensor(1.0)), r"cls_token has shape \(\)"),
    _rf_case("sd-pos-1d", _sd(VIT + "embeddings.position_embeddings", torch.zeros(65)), r"position_embeddings"),
    _rf_case("sd-pos-not-square", _sd(VIT + "embeddings.position_embeddings", torch.zeros(1, 63, 128)),
             r"not 1 \+ a square grid"),
    _rf_case("sd-kernel-3d", _sd(VIT + "embeddings.patch_embeddings.projection.weight", torch.zeros(128, 3, 16)),
             r"projection\.weight has shape"),
    _rf_case("sd-kernel-not-square", _sd(VIT + "embeddings.patch_embeddings.projection.weight",
                                         torch.zeros(128, 3, 16, 8)), r"expected square"),
    _rf_case("sd-class-embed-1d", _sd("class_embed.weight", torch.zeros(6)), r"class_embed\.weight has shape"),
    _rf_case("sd-query-feat-3d", _sd("query_feat.weight", torch.zeros(2, 2, 2)), r"query_feat\.weight has shape"),
    _rf_case("sd-non-tensor", _sd("class_embed.bias", [1, 2, 3]), r"non-tensor entries"),
    _rf_case("sd-key-with-newline", _sd("evil\nkey", torch.zeros(1)), r"cannot map"),
    _rf_case("sd-missing-cls", lambda o, sd, a, s: sd.pop(VIT + "embeddings.cls_token"), r"cls_token' is missing"),
    _rf_case("sd-width-not-64", _sd(VIT + "embeddings.cls_token", torch.zeros(1, 1, 100)), r"multiple of DINOv2"),
    _rf_case("sd-block-gap", lambda o, sd, a, s: [sd.pop(k) for k in list(sd) if ".layer.5." in k],
             r"not contiguous"),
    _rf_case("model-a-list", lambda o, sd, a, s: o.__setitem__("model", [1, 2]), r"not an RF-DETR checkpoint"),
    _rf_case("no-model", lambda o, sd, a, s: o.pop("model"), r"not an RF-DETR checkpoint"),
    _rf_case("pickle-payload-args", lambda o, sd, a, s: o.__setitem__(
        "args", _Evil(os.system, f"touch {s['marker']}/pwned-rfargs")), r"nothing from the file was executed",
        args_as="raw"),
    _rf_case("pickle-payload-eval", lambda o, sd, a, s: o.__setitem__(
        "model_name", _Evil(eval, f"open('{s['marker']}/pwned-rfeval', 'w')")), r"nothing from the file was executed",
        args_as="raw"),
    _rf_case("user-resolution-negative", lambda o, sd, a, s: None, r"--resolution is -1, expected an integer",
             extra=["--resolution", "-1"]),
    _rf_case("user-resolution-off-grid", lambda o, sd, a, s: None, r"--resolution 100 is not a multiple",
             extra=["--resolution", "100"]),
    _rf_case("user-arg-unknown", lambda o, sd, a, s: None, r"--arg evil: not an RF-DETR setting",
             extra=["--arg", "evil=1"]),
    _rf_case("user-arg-no-equals", lambda o, sd, a, s: None, r"expected KEY=VALUE", extra=["--arg", "num_windows"]),
    _rf_case("user-arg-string-for-int", lambda o, sd, a, s: None, r"--arg dec_n_points is 'two'",
             extra=["--arg", "dec_n_points=two"]),
    _rf_case("user-class-names-file-missing", lambda o, sd, a, s: None, r"--class-names @nofile: cannot read",
             extra=["--class-names", "@nofile"]),
]


def _positive_rf_case(name: str, edit) -> Case:
    """Hostile text in a checkpoint that is otherwise fine: it imports (exit 0), and the text stays data."""
    c = _rf_case(name, edit, None)
    c.expect_code, c.outputs = 0, ("out.safetensors",)
    return c


RF_SD_CASES += [
    _positive_rf_case("model-name-huge-and-newlines", lambda o, sd, a, s: o.update(
        model_name="RFDETR" + "X\n" * 10**5, rfdetr_version="1.0\x1b[31m")),
    _positive_rf_case("class-names-hostile", lambda o, sd, a, s: a.__setitem__(
        "class_names", [n.replace("{marker}", str(s["marker"])) for n in HOSTILE_NAMES[:5]])),
]


def _rf_raw_case(name: str, content, needle: str) -> Case:
    def setup(sb, s):
        data = content(s) if callable(content) else content
        (sb / "rf.pth").write_bytes(data)

    return Case(f"rfdetr-file-{name}", ["import", "rfdetr", "rf.pth", "-o", "out.safetensors"], setup=setup,
                mem_mb=MEM, timeout=60, expect_stderr=needle)


def _zip_bomb(s) -> bytes:
    """A torch-style zip whose data record is deflated: 512 MiB of zeros in well under a MiB."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({"model": {}}))
        with z.open("archive/data/0", "w") as f:
            chunk = bytes(1 << 20)
            for _ in range(512):
                f.write(chunk)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def _lying_zip(s) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    data = bytearray(buf.getvalue())
    # central directory's uncompressed size of the record (offset 24 in the central header) -> 2 GiB
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (2**31).to_bytes(4, "little")
    return bytes(data)


RF_FILE_CASES = [
    _rf_raw_case("empty", b"", r"rf\.pth: not a readable PyTorch checkpoint"),
    _rf_raw_case("garbage", bytes(range(256)) * 8, r"rf\.pth: not a readable PyTorch checkpoint"),
    _rf_raw_case("pickle-os-system", lambda s: pickle.dumps({"model": {}, "args": _Evil(os.system, (
        f"touch {s['marker']}/pwned-pkl"))}), r"global 'posix\.system'"),
    _rf_raw_case("pickle-builtins-exec", lambda s: pickle.dumps(_Evil(exec, (
        f"open('{s['marker']}/pwned-exec','w')"))), r"global 'builtins\.exec'"),
    _rf_raw_case("zip-bomb", _zip_bomb, r"rf\.pth: refused: record .* is compressed"),
    _rf_raw_case("zip-lying-size", _lying_zip, r"rf\.pth: refused: its records claim"),
    _rf_raw_case("a-tensor", lambda s: _torch_bytes(torch.zeros(3)), r"top level is a Tensor"),
]


def _torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------- teachers

def _teacher_case(name: str, make, needle: str, suffix: str = ".pth", kind: str | None = None) -> Case:
    def setup(sb, s):
        obj = make(s)
        path = sb / f"teacher{suffix}"
        if isinstance(obj, bytes):
            path.write_bytes(obj)
        elif suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(obj, str(path))
        else:
            torch.save(obj, path)

    extra = ["--teacher-type", kind] if kind else []
    return Case(f"teacher-{name}", ["train", "--data", "{synth}", "--out", "run", "--teacher", f"teacher{suffix}",
                                    *extra], setup=setup, mem_mb=MEM, timeout=90, expect_stderr=needle)


def _dinov2(**edit) -> dict:
    from ..model.test_pretrained import fake_dinov2

    hub = dict(fake_dinov2(False)[0])
    for k, v in edit.items():
        k = k.replace("__", ".")
        if v is None:
            hub.pop(k)
        else:
            hub[k] = v
    return hub


def _dinov2_wide(dim: int) -> dict:
    from ..model.test_pretrained import fake_dinov2

    return fake_dinov2(False, dim=dim)[0]


def _dinov3(**edit) -> dict:
    hub = {k: v for k, v in _dinov2().items() if k != "pos_embed"}
    hub["storage_tokens"] = torch.zeros(1, 4, 48)
    hub["rope_embed.periods"] = torch.ones(48 // 4)  # one head of 48 dims
    for k, v in edit.items():
        hub[k.replace("__", ".")] = v
    return hub


TEACHER_CASES = [
    _teacher_case("cls-0dim", lambda s: _dinov2(cls_token=torch.tensor(1.0)), r"teacher\.pth: .*cls_token"),
    _teacher_case("pos-2d", lambda s: _dinov2(pos_embed=torch.zeros(17, 48)), r"teacher\.pth: .*pos_embed"),
    _teacher_case("kernel-3d", lambda s: _dinov2(patch_embed__proj__weight=torch.zeros(48, 3, 14)),
                  r"teacher\.pth: .*patch_embed"),
    _teacher_case("kernel-not-square", lambda s: _dinov2(patch_embed__proj__weight=torch.zeros(48, 3, 14, 7)),
                  r"teacher\.pth: .*not square"),
    _teacher_case("grid-over-limit", lambda s: _dinov2(pos_embed=torch.zeros(1, 1 + 600 * 600, 1)),
                  r"teacher\.pth: .*grid 600 .* outside"),
    _teacher_case("pos-cls-only", lambda s: _dinov2(pos_embed=torch.zeros(1, 1, 48)),
                  r"teacher\.pth: .*grid 0 read from the file's shapes is outside"),
    _teacher_case("fc1-missing", lambda s: _dinov2(blocks__0__mlp__fc1__weight=None), r"teacher\.pth: .*fc1"),
    _teacher_case("pos-not-square", lambda s: _dinov2(pos_embed=torch.zeros(1, 18, 48)), r"teacher\.pth: .*square"),
    _teacher_case("heads-do-not-divide", lambda s: _dinov2_wide(129), r"teacher\.pth: .*width 129 does not split",
                  kind="dinov2"),
    _teacher_case("v3-rope-heads", lambda s: _dinov3(cls_token=torch.zeros(1, 1, 66)), r"teacher\.pth: dinov3"),
    _teacher_case("v3-swiglu", lambda s: _dinov3(blocks__0__mlp__w12__weight=torch.zeros(2, 2)), r"SwiGLU"),
    _teacher_case("v3-registers-1d", lambda s: _dinov3(storage_tokens=torch.zeros(4)), r"register_tokens"),
    _teacher_case("pickle-payload", lambda s: pickle.dumps(_Evil(os.system, f"touch {s['marker']}/pwned-teach")),
                  r"teacher\.pth: .*(refused|unpickling)"),
    _teacher_case("zip-bomb", _zip_bomb, r"teacher\.pth: .*refused: record .* is compressed"),
    _teacher_case("garbage-safetensors", lambda s: bytes(range(256)), r"teacher\.safetensors: ",
                  suffix=".safetensors"),
    _teacher_case("not-a-vit", lambda s: {"weight": torch.zeros(3)}, r"teacher\.safetensors: .*(cls_token|DINO)",
                  suffix=".safetensors"),
    _teacher_case("nested-non-tensor", lambda s: {"model": {"a": 1}}, r"teacher\.pth: .*not a state dict"),
]
CASES = CONFIG_CASES + HEADER_CASES + FILE_CASES + RF_ARG_CASES + RF_SD_CASES + RF_FILE_CASES + TEACHER_CASES


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from edgedet.data.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, 4, 2, seed=0, image_size=64)
    return root


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_checkpoint_inputs(bad, case, synth):
    bad(case, synth=synth)
