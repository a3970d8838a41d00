"""Checkpoints: safetensors + JSON config round trip; bad files get one clear CheckpointError line."""
from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from edgedet.checkpoint import load_supernet, read_header, regroup, save_supernet
from edgedet.config import SubnetConfig
from edgedet.errors import CheckpointError
from edgedet.model.supernet import Supernet

from .conftest import randomize


def test_round_trip_gives_identical_outputs(tiny_net, tmp_path):
    path = save_supernet(tiny_net, tmp_path / "net.safetensors", meta={"note": "test"})
    net2 = load_supernet(path)
    cfg, groups, meta = read_header(path)
    assert cfg == tiny_net.cfg and groups == 1 and meta == {"note": "test"}
    s = SubnetConfig.parse("p12-r192-w2-d2-q50", cfg)
    x = torch.rand(1, 3, 192, 192)
    with torch.no_grad():
        a, b = tiny_net(x, s), net2(x, s)
    assert torch.equal(a["pred_boxes"], b["pred_boxes"]) and torch.equal(a["pred_logits"], b["pred_logits"])


def test_training_groups_are_dropped_for_inference_and_restored_by_regroup(tiny_cfg, tmp_path):
    net = randomize(Supernet(tiny_cfg, groups=3)).eval()
    path = save_supernet(net, tmp_path / "g.safetensors")
    loaded = load_supernet(path)
    assert loaded.groups == 1 and loaded.query_feat.shape[0] == tiny_cfg.num_queries
    s = SubnetConfig.parse("p16-r192-w1-d3-q25", tiny_cfg)
    x = torch.rand(1, 3, 192, 192)
    with torch.no_grad():
        assert torch.allclose(net(x, s)["pred_logits"], loaded(x, s)["pred_logits"])
    g4 = regroup(loaded, 4)
    assert g4.query_feat.shape[0] == 4 * tiny_cfg.num_queries
    assert torch.equal(g4.query_select[3].class_embed.weight, loaded.query_select[0].class_embed.weight)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_supernet(tmp_path / "nope.safetensors")


def test_corrupt_file(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_supernet(p)


def test_truncated_file(tiny_net, tmp_path):
    p = save_supernet(tiny_net, tmp_path / "t.safetensors")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="t.safetensors"):
        load_supernet(p)


def test_foreign_safetensors_without_metadata(tmp_path):
    p = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(CheckpointError, match="without edgedet supernet metadata"):
        load_supernet(p)


def test_pickle_is_never_loaded(tmp_path):
    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        load_supernet(p)


def test_tensor_shape_mismatch_names_the_tensor(tiny_net, tmp_path):
    from safetensors import safe_open

    p = save_supernet(tiny_net, tmp_path / "m.safetensors")
    with safe_open(str(p), "pt") as f:
        meta = f.metadata()
        sd = {k: f.get_tensor(k) for k in f.keys()}
    sd["class_embed.weight"] = torch.zeros(3, 3)
    save_file(sd, str(p), metadata=meta)
    with pytest.raises(CheckpointError, match=r"class_embed.weight has shape \(3, 3\)"):
        load_supernet(p)
    del sd["class_embed.weight"]
    save_file(sd, str(p), metadata=meta)
    with pytest.raises(CheckpointError, match="1 missing tensor"):
        load_supernet(p)
