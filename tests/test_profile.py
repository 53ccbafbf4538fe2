"""FLOP / parameter counting with fvcore."""

from __future__ import annotations

import logging

import pytest

import video3d_zoo
from video3d_zoo.inference.profile import profile


@pytest.mark.parametrize("name,gmacs,params", [
    ("r3d_18", 40.7, 33.371),          # torchvision's published figure
    ("resnet3d_18", 8.32, 33.409),     # perf-facts.md, 2020 r3d18
    ("resnet3d_50", 10.10, 47.019),
    ("r2plus1d_18_kenshohara", 8.51, 33.421),
])
def test_reference_figures(name, gmacs, params):
    result = profile(name, init_weights=False)
    assert result.gmacs == pytest.approx(gmacs, abs=0.05)
    assert result.params_millions == pytest.approx(params, abs=1e-3)
    assert result.input_shape == (1, 3, 16, 112, 112)


def test_uncounted_operators_are_named_not_logged(caplog, capsys):
    with caplog.at_level(logging.WARNING):
        result = profile("resnet3d_10", init_weights=False)
    assert set(result.uncounted_ops) == {"aten::add", "aten::max_pool3d", "aten::adaptive_avg_pool3d"}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    captured = capsys.readouterr()
    assert "Unsupported" not in captured.out + captured.err


def test_profile_scales_with_input_and_accepts_models():
    model = video3d_zoo.create_model("resnet3d_10", widen_factor=0.25)
    small = profile(model, frames=8, size=56)
    big = profile(model, frames=16, size=112)
    assert big.gmacs == pytest.approx(8 * small.gmacs, rel=0.05)
    assert model.training  # profile restores the mode it found
