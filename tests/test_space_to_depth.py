"""Stem convolutions on 2x2 space-to-depth blocks (inference/space_to_depth.py): exact, same state, used
only where it was measured to help (bf16 on a CPU with AMX)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import video3d_zoo
from video3d_zoo.inference.precision import bf16_supported
from video3d_zoo.inference.prepare import optimize_for_inference
from video3d_zoo.inference.space_to_depth import (SpaceToDepthConv3d, folds_time, qualifies, rewrite_stems,
                                                  use_space_to_depth)

from helpers import build_tiny, small_input

ALL_MODELS = video3d_zoo.list_models()
AMX = use_space_to_depth(torch.device("cpu"), "bf16")


@pytest.mark.parametrize("kernel, stride, padding, size", [
    ((7, 7, 7), (1, 2, 2), (3, 3, 3), (16, 112, 112)),  # the 3D-ResNets stem
    ((1, 7, 7), (1, 2, 2), (0, 3, 3), (5, 33, 30)),  # R(2+1)D's spatial stem; odd height
    ((3, 7, 7), (2, 2, 2), (1, 3, 3), (9, 29, 31)),  # temporal stride too; odd both
    ((3, 4, 4), (1, 2, 2), (1, 1, 1), (4, 20, 21)),  # an even kernel
    ((3, 3, 3), (1, 2, 2), (1, 0, 0), (4, 9, 10)),  # no spatial padding
    ((7, 7, 7), (1, 2, 2), (3, 3, 3), (5, 20, 18)),  # an odd number of frames at temporal stride 1
    ((5, 7, 7), (2, 2, 2), (2, 3, 3), (6, 16, 16)),  # temporal stride 2, time folded without phases
    ((2, 3, 3), (1, 2, 2), (0, 1, 1), (3, 8, 8)),  # fewer frames out than blocks read
])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("fold_time", [None, False, True])
def test_same_output_as_the_convolution(kernel, stride, padding, size, bias, fold_time):
    torch.manual_seed(0)
    conv = nn.Conv3d(3, 8, kernel, stride=stride, padding=padding, bias=bias).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    blocked = SpaceToDepthConv3d(conv, fold_time=fold_time)
    expected = conv(x)
    got = blocked(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_time_is_folded_where_it_was_measured_faster():
    assert folds_time(nn.Conv3d(3, 64, 7, stride=(1, 2, 2), padding=3))  # the 3D-ResNets stem: 1.17x compiled
    assert not folds_time(nn.Conv3d(3, 64, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3)))  # 0.82-0.94x
    assert not folds_time(nn.Conv3d(3, 45, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3)))  # 0.64-0.78x
    assert "2x2x2" in repr(SpaceToDepthConv3d(nn.Conv3d(3, 8, 7, stride=(1, 2, 2), padding=3)))
    with pytest.raises(ValueError, match="temporal stride 1 or 2, not 3"):
        SpaceToDepthConv3d(nn.Conv3d(3, 8, 7, stride=(3, 2, 2), padding=3), fold_time=True)


def test_folded_time_comes_back_channels_last():
    conv = nn.Conv3d(3, 8, 7, stride=(1, 2, 2), padding=3)
    out = SpaceToDepthConv3d(conv, fold_time=True)(torch.randn(2, 3, 6, 16, 16))
    assert out.shape == (2, 8, 6, 8, 8) and out.is_contiguous(memory_format=torch.channels_last_3d)


def test_keeps_the_parameters_under_their_names():
    conv = nn.Conv3d(3, 8, (7, 7, 7), stride=(1, 2, 2), padding=3)
    blocked = SpaceToDepthConv3d(conv)
    assert blocked.weight is conv.weight and blocked.bias is conv.bias
    assert list(blocked.state_dict()) == list(conv.state_dict())
    assert "space-to-depth" in repr(blocked)


@pytest.mark.parametrize("conv, why", [
    (nn.Conv3d(16, 8, 3, stride=(1, 2, 2), padding=1), "many input channels"),
    (nn.Conv3d(3, 8, 3, stride=1, padding=1), "no spatial stride"),
    (nn.Conv3d(3, 6, 3, stride=(1, 2, 2), padding=1, groups=3), "groups"),
    (nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1, dilation=2), "dilation"),
    (nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1, padding_mode="reflect"), "reflect padding"),
    (nn.Conv3d(3, 8, (3, 1, 1), stride=(1, 2, 2)), "1x1 spatial kernel"),
    (nn.Conv2d(3, 8, 7, stride=2), "not a Conv3d"),
])
def test_refuses_what_it_cannot_compute(conv, why):
    assert not qualifies(conv), why
    with pytest.raises(ValueError, match="stride-"):
        SpaceToDepthConv3d(conv)


def test_only_bf16_on_amx_cpus():
    assert not use_space_to_depth(torch.device("cpu"), "fp32")  # measured 0.6x in float32
    assert not use_space_to_depth(torch.device("meta"), "bf16")
    assert use_space_to_depth(torch.device("cpu"), "bf16") == bool(torch.cpu._is_amx_tile_supported())


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_computes_the_same_after_the_rewrite(name):
    """In float64 a rewritten model equals the original to rounding, whatever the family's stem."""
    model = build_tiny(name).double().eval()
    x = small_input(model).double()
    with torch.no_grad():
        expected = model(x)
        keys = list(model.state_dict())
        rewritten = rewrite_stems(model)
        got = model(x)
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()) + 1e-12)
    assert rewritten == sum(isinstance(m, SpaceToDepthConv3d) for m in model.modules())


def test_the_3d_resnets_stem_is_rewritten():
    model = build_tiny("resnet3d_18")
    assert rewrite_stems(model) == 1 and isinstance(model.conv1, SpaceToDepthConv3d)


@pytest.mark.skipif(not AMX, reason="the rewrite is used for bf16 on CPUs with AMX only")
def test_bf16_fast_path_uses_it_and_keeps_the_digest():
    model = build_tiny("resnet3d_18").eval()
    x = small_input(model, frames=8, size=48)
    fp32 = optimize_for_inference(model, precision="fp32")
    bf16 = optimize_for_inference(model, precision="bf16")
    plain_bf16 = optimize_for_inference(model, precision="bf16", fold_bn=False, channels_last=False)
    assert any(isinstance(m, SpaceToDepthConv3d) for m in bf16._network.modules())
    assert not any(isinstance(m, SpaceToDepthConv3d) for m in fp32._network.modules())
    assert not any(isinstance(m, SpaceToDepthConv3d) for m in plain_bf16._network.modules()), "--no-fast"
    assert bf16.weights_digest() == fp32.weights_digest()
    with torch.no_grad():
        expected = model(x)
    got = bf16(x)
    assert got.dtype == torch.float32
    assert float((got - expected).abs().max()) <= 0.05 * float(expected.abs().max())


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="CPU without bf16 support")
def test_under_autocast_it_rearranges_in_bf16():
    conv = nn.Conv3d(3, 8, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3))
    x = torch.randn(1, 3, 4, 20, 20)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = SpaceToDepthConv3d(conv)(x)
        ref = conv(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=0.05, atol=0.05 * float(ref.abs().max()))
