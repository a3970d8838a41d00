"""benchmarks/predictor_ceiling.py: the leave-one-out ceiling of smooth latency models on an exhaustive store, and the
noise that explains it. Checked on synthetic stores whose truth is known (so the tool can tell a reachable goal from
an unreachable one), and on the two committed real stores (the figures the README quotes)."""
from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("predictor_ceiling", ROOT / "benchmarks" / "predictor_ceiling.py")
pc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pc)


def synthetic(sigma: float, seed: int = 0):
    """The OpenVINO benchmark's space (96 subnets x 3 precisions), latency from a model with pairwise interactions,
    log-normal noise of sd sigma."""
    rng = np.random.default_rng(seed)
    cands = [(p, r, w, d, q, prec) for p, r, w, d, q, prec in
             itertools.product((16, 24), (192, 288, 384), (1, 2), (0, 1, 2, 3), (30, 100), ("bf16", "fp32", "int8"))]
    x = pc.design(cands, 2)
    beta = rng.normal(0, 0.15, x.shape[1])
    beta[0] = np.log(8.0)
    truth = x @ beta
    return cands, x, truth, np.exp(truth + rng.normal(0, sigma, len(cands)))


def test_noise_free_pairwise_world_is_predicted_exactly():
    cands, x, truth, y = synthetic(0.0)
    err, _ = pc.loo_rel_errors(x, np.log(y), 1e-6)
    assert pc.within(err, 0.001) == 1.0
    main_only, _ = pc.loo_rel_errors(pc.design(cands, 1), np.log(y), 1e-6)
    assert pc.within(main_only) < 1.0  # the interactions matter, and main effects alone cannot see them


@pytest.mark.parametrize("sigma", [0.03, 0.08])
def test_the_noise_is_recovered_from_the_leave_one_out_share(sigma):
    cands, x, truth, y = synthetic(sigma, seed=1)
    err, fitted = pc.loo_rel_errors(x, np.log(y), 1e-3)
    got = pc.sigma_for(x, fitted, pc.within(err), 1e-3)
    assert abs(got - sigma) < 0.25 * sigma, (got, sigma)


def test_the_committed_stores_miss_95_percent_even_with_all_others_measured(capsys):
    ov = pc.report(ROOT / "tests/search/data/openvino_288.csv")
    ort = pc.report(ROOT / "tests/search/data/onnxruntime_576.csv")
    assert 0.80 < ov["best"] < 0.90 and 0.60 < ort["best"] < 0.70
    assert ov["sigma_goal"] < ov["sigma_now"] and ort["sigma_goal"] < ort["sigma_now"]
    assert "| + pairwise interactions | 51 |" in capsys.readouterr().out


def test_a_bad_row_is_one_line_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "s.csv"
    bad.write_text("subnet,precision,p50_ms\np16-r192-w1-d0-q30,fp32,3.1\nnot-a-subnet,fp32,2\n")
    assert pc.main([str(bad)]) == 2
    assert f"{bad}:3: expected subnet" in capsys.readouterr().err
