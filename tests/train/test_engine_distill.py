"""Training with a teacher (DSI + GAM) and with the FDR head: the terms are logged, resume keeps the projector and
GAM, and everything training-only stays out of the checkpoint and the ONNX; DDP ranks end with the same lambda."""
from __future__ import annotations

import json
from collections import Counter

import onnx
import pytest
import torch
from safetensors.torch import load_file

from edgedet.checkpoint import load_supernet, read_header
from edgedet.config import SubnetConfig
from edgedet.model.export import export_onnx
from edgedet.train.engine import TrainConfig, train
from tests.train import torchrun_train

from .test_engine import ONE_SUBNET


def _cfg(tmp_path, data, name, **kw):
    space = tmp_path / "space.yaml"
    space.write_text(ONE_SUBNET)
    base = dict(data=str(data), out=str(tmp_path / name), space=str(space), epochs=1, batch_size=4, lr=1e-3,
                warmup_steps=1, groups=2, workers=0, log_every=1, clip=0.0, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _log(path):
    return [json.loads(line) for line in open(path)]


def test_distilled_fdr_training_logs_terms_and_resumes(tmp_path, synth_data, dinov3_file):
    cfg = _cfg(tmp_path, synth_data, "run", teacher=str(dinov3_file), fdr=True, gam_every=1, dsi_weight=5.0)
    ck = train(cfg, progress=False)
    rows = _log(tmp_path / "run" / "log.jsonl")
    assert len(rows) == 3 and all("loss_dsi" in r and "loss_fgl" in r for r in rows)
    assert rows[0]["dsi_weight"] == 5.0 and 0 < rows[0]["gam_p"] < 100
    assert rows[-1]["dsi_weight"] != 5.0  # GAM moved lambda (the tiny net is far from the 11% target)
    net = load_supernet(ck)
    assert net.cfg.fdr and net.fdr_head is not None
    meta = read_header(ck)[2]["distill"]
    assert meta["kind"] == "dinov3" and len(meta["gam"]) == 3  # one update per step
    assert meta["gam"][1]["lambda"] == pytest.approx(rows[-1]["dsi_weight"], abs=1e-4)  # step 3 used update 2's
    state = load_file(str(tmp_path / "run" / "last.safetensors"))
    assert any(k.startswith("dsi.") for k in state)
    assert not any(k.startswith("dsi") for k in load_file(str(ck)))  # the supernet checkpoint has no projector
    lam = meta["dsi_weight"]
    train(_cfg(tmp_path, synth_data, "run", teacher=str(dinov3_file), fdr=True, gam_every=1, dsi_weight=5.0,
               epochs=2, resume=True), progress=False)
    rows = _log(tmp_path / "run" / "log.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[3]["dsi_weight"] == pytest.approx(lam, abs=1e-4)
    with pytest.raises(Exception, match="saved with a teacher"):
        train(_cfg(tmp_path, synth_data, "run", fdr=True, epochs=3, resume=True), progress=False)


def test_distilled_checkpoint_exports_the_same_graph(tmp_path, synth_data, dinov3_file):
    """The ONNX of a distilled run and of a plain run (same config and seed) have the same ops and byte size."""
    paths = {}
    for name, kw in (("plain", {}), ("dsi", {"teacher": str(dinov3_file), "teacher_cache": str(tmp_path / "tc")})):
        ck = train(_cfg(tmp_path, synth_data, name, max_steps=2, **kw), progress=False)
        net = load_supernet(ck)
        s = SubnetConfig.parse("p16-r128-w2-d2-q25", net.cfg)
        paths[name] = export_onnx(net.extract(s), tmp_path / f"{name}.onnx").path
    models = {k: onnx.load(str(p)) for k, p in paths.items()}
    hist = {k: Counter(n.op_type for n in m.graph.node) for k, m in models.items()}
    assert hist["plain"] == hist["dsi"]
    assert [i.name for i in models["plain"].graph.initializer] == [i.name for i in models["dsi"].graph.initializer]
    sizes = {k: p.stat().st_size for k, p in paths.items()}
    assert abs(sizes["plain"] - sizes["dsi"]) <= 16, sizes
    w_plain = {i.name: onnx.numpy_helper.to_array(i) for i in models["plain"].graph.initializer}
    w_dsi = {i.name: onnx.numpy_helper.to_array(i) for i in models["dsi"].graph.initializer}
    assert any((w_plain[k] != w_dsi[k]).any() for k in w_plain)  # the teacher did change the weights
    assert len(list((tmp_path / "tc").rglob("*.safetensors"))) == 12  # one cached feature file per training image


@pytest.mark.slow
def test_torchrun_ranks_end_with_the_same_gam_lambda(tmp_path, synth_data, dinov3_file):
    out = torchrun_train(tmp_path, synth_data, 29534, "--teacher", str(dinov3_file), "--teacher-cache",
                         str(tmp_path / "cache"), "--gam-every", "1", "--dsi-weight", "4", "--fdr", timeout=900)
    metas = [read_header(out / f"rank{r}.safetensors")[2] for r in (0, 1)]
    assert metas[0]["dsi_weight"] == metas[1]["dsi_weight"] != 4.0
    assert metas[0]["gam"] == metas[1]["gam"] and len(metas[0]["gam"]) == 3
    r0, r1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    d0, d1 = load_file(str(out / "rank0-dsi.safetensors")), load_file(str(out / "rank1-dsi.safetensors"))
    assert all(torch.equal(d0[k], d1[k]) for k in d0)
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 12  # the ranks filled disjoint halves
