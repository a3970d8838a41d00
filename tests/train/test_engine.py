"""The training loop on a tiny synthetic set: loss goes down, resume continues, DDP ranks stay identical."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from edgedet.checkpoint import load_supernet
from edgedet.train.engine import TrainConfig, train
from tests.train import torchrun_train

ONE_SUBNET = "patch: [16]\nresolution: [128]\nwindows: [2]\ndec_layers: [2]\nqueries: [25]\n"


def _cfg(tmp_path, data, **kw):
    space = tmp_path / "space.yaml"
    space.write_text(ONE_SUBNET)
    base = dict(data=str(data), out=str(tmp_path / "run"), space=str(space), epochs=1, batch_size=4, lr=1e-3,
                warmup_steps=1, groups=1, workers=0, log_every=1, clip=0.0)
    base.update(kw)
    return TrainConfig(**base)


def _log(path):
    return [json.loads(line) for line in open(path)]


def test_a_few_steps_reduce_the_loss(tmp_path, synth_data):
    torch.manual_seed(0)
    cfg = _cfg(tmp_path, synth_data, epochs=20)  # 3 steps per epoch on 12 images
    ck = train(cfg, progress=False)
    losses = [r["loss"] for r in _log(tmp_path / "run" / "log.jsonl")]
    assert len(losses) == 60
    first, last = sum(losses[:9]) / 9, sum(losses[-9:]) / 9
    assert last < 0.9 * first, (first, last)
    net = load_supernet(ck)
    assert net.groups == 1 and net.cfg.class_names == ["circle", "square", "triangle", "star", "ring", "cross"]


def test_resume_continues_where_it_stopped(tmp_path, synth_data):
    train(_cfg(tmp_path, synth_data, epochs=1), progress=False)
    state = load_file(str(tmp_path / "run" / "last.safetensors"))
    assert any(k.startswith("optim.") for k in state) and any(k.startswith("ema.") for k in state)
    train(_cfg(tmp_path, synth_data, epochs=2, resume=True), progress=False)
    steps = [r["step"] for r in _log(tmp_path / "run" / "log.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]  # the second run did only epoch 2


@pytest.mark.slow
def test_torchrun_two_cpu_processes_end_with_identical_weights(tmp_path, synth_data):
    out = torchrun_train(tmp_path, synth_data, 29533)
    r0, r1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert r0.keys() == r1.keys()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    init = load_supernet(out / "model.safetensors")  # EMA after 3 steps differs from the raw weights
    assert [r["step"] for r in _log(out / "log.jsonl")] == [1, 2, 3]
    assert init.cfg.num_classes == 6
