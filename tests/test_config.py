"""Subnet ids: parse/print round trip and errors that list the valid values."""
from __future__ import annotations

import pytest

from edgedet.config import PRESETS, SubnetConfig, preset
from edgedet.errors import ConfigError, SubnetError


def test_id_round_trip():
    s = SubnetConfig.parse("p16-r384-w2-d3-q100")
    assert (s.patch, s.resolution, s.windows, s.dec_layers, s.queries) == (16, 384, 2, 3, 100)
    assert s.id == "p16-r384-w2-d3-q100" == str(s)
    assert SubnetConfig.parse("q100-d3-w2-r384-p16") == s  # order free, printed canonically


@pytest.mark.parametrize("text,match", [
    ("garbage", "is not <knob><number>"),
    ("p16-r384-w2-d3", "missing knob"),
    ("p16-r384-w2-d3-q100-x4", "unknown knob 'x'"),
    ("p16-p16-r384-w2-d3-q100", "given twice"),
    ("p0-r384-w2-d3-q100", "patch"),
])
def test_bad_ids(text, match):
    with pytest.raises(SubnetError, match=match):
        SubnetConfig.parse(text)


@pytest.mark.parametrize("text,match", [
    ("p16-r380-w2-d3-q100", r"multiple of patch x windows = 32"),
    ("p16-r384-w2-d9-q100", r"decoder layers 9 not in 0\.\.3"),
    ("p16-r384-w2-d3-q500", r"queries 500 not in 1\.\.100"),
    ("p14-r392-w1-d3-q100", r"patch size 14 not in trained values \[12, 16, 24\]"),
    ("p16-r384-w3-d3-q100", r"windows 3 not in trained values \[1, 2\]"),
    ("p24-r48-w1-d1-q100", r"exceed the 20 memory positions"),
])
def test_subnet_validated_against_supernet(text, match):
    with pytest.raises(SubnetError, match=match):
        SubnetConfig.parse(text, preset("tiny"))


def test_presets_are_valid_and_extremes_fit():
    for cfg in PRESETS.values():
        assert not cfg.subnet_ok(cfg.smallest()) and not cfg.subnet_ok(cfg.largest())
    nano = preset("nano")
    assert (nano.embed_dim, nano.depth, nano.hidden_dim, nano.dec_layers, nano.num_queries) == (384, 12, 256, 2, 300)
    assert nano.patch_size == 16 and nano.pos_grid == 24 and nano.taps == [3, 6, 9, 12]
    assert preset("small").dec_layers == 3 and preset("medium").dec_layers == 4
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")
