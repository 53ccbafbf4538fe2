"""Every registered model, at its family's tiny width: the model interface and its input checks.

Nothing here knows a family: sizes come from each model's ``min_input_size`` and
``feature_info``, arguments from its ``FamilySpec`` (tests/helpers.py).
"""

from __future__ import annotations

import pytest
import torch

import video3d_zoo
from video3d_zoo.errors import InputShapeError
from video3d_zoo.models.registry import get_model_spec

from helpers import build_tiny as _build_tiny
from helpers import small_input

ALL_MODELS = video3d_zoo.list_models()


def build_tiny(name: str, **kwargs):
    return _build_tiny(name, num_classes=kwargs.pop("num_classes", 7), **kwargs)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_shapes_and_feature_info(name):
    model = build_tiny(name).eval()
    x = small_input(model)
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        logits = model(x)
    assert logits.shape == (2, 7)
    assert feats.dim() == 5 and feats.shape[1] == model.num_features
    assert pooled.shape == (2, model.num_features)
    torch.testing.assert_close(model.get_classifier()(pooled), logits)
    torch.testing.assert_close(pooled, feats.mean(dim=(2, 3, 4)))
    assert model.feature_info[-1].num_chs == model.num_features


def stage_shapes(model, shape) -> dict:
    """Each ``feature_info`` module's output shape for an input of ``shape`` (forward hooks)."""
    seen = {}
    handles = [model.get_submodule(info.module).register_forward_hook(
        lambda m, i, o, key=info.module: seen.__setitem__(key, tuple(o.shape))) for info in model.feature_info]
    try:
        with torch.no_grad():
            model(torch.randn(shape))
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("name", ALL_MODELS)
def test_feature_info_matches_every_stage(name):
    """Channels as stated; the reductions are the strides: a clip longer by the largest reduction
    gives every stage a map longer by exactly (that / its reduction), whatever the padding and
    kernels (C3D's fc6 shrinks the map by its 1x4x4 kernel, pool5 pads it)."""
    model = build_tiny(name).eval()
    info = model.feature_info
    mt, ms, _ = model.min_input_size
    big_t, big_s = max(i.reduction_t for i in info), max(i.reduction_s for i in info)
    small = stage_shapes(model, (1, 3, mt, ms, ms))
    large = stage_shapes(model, (1, 3, mt + big_t, ms + big_s, ms + big_s))
    for i in info:
        _, chs, t, h, w = small[i.module]
        assert chs == i.num_chs and h == w, i
        _, _, t2, h2, w2 = large[i.module]
        assert (t2 - t, h2 - h, w2 - w) == (big_t // i.reduction_t, big_s // i.reduction_s, big_s // i.reduction_s), i


@pytest.mark.parametrize("name", ALL_MODELS)
def test_backward_reaches_every_parameter(name):
    model = build_tiny(name).train()
    loss = model(small_input(model)).logsumexp(dim=1).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_reset_classifier_and_pre_logits(name):
    model = build_tiny(name).eval()
    x = small_input(model, batch=1)
    with torch.no_grad():
        before = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(3)
        assert model(x).shape == (1, 3)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), before)
    assert model.num_classes == 0
    with pytest.raises(ValueError):
        model.reset_classifier(-1)


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("in_chans", [1, 2])
def test_in_chans(name, in_chans):
    model = build_tiny(name, in_chans=in_chans).eval()
    x = small_input(model)
    assert x.shape[1] == in_chans
    with torch.no_grad():
        assert model(x).shape == (2, 7)
    with pytest.raises(InputShapeError, match=f"expected {in_chans} input channels"):
        model(torch.randn(2, 3, *x.shape[2:]))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_wrong_layout_and_too_small_inputs(name):
    model = build_tiny(name).eval()
    with pytest.raises(ValueError, match="N x C x T x H x W"):
        model(torch.randn(3, 16, 32, 32))
    with pytest.raises(ValueError, match="input channels"):
        model(torch.randn(1, 16, 3, 32, 32))  # N x T x C x H x W by mistake
    mt, mh, mw = model.min_input_size
    if (mt, mh, mw) != (1, 1, 1):
        with pytest.raises(InputShapeError, match="below this model's minimum"):
            model(torch.randn(1, 3, mt - 1, mh, mw))
    with torch.no_grad():  # the stated minimum itself works
        assert model(torch.randn(1, 3, mt, mh, mw)).shape == (1, 7)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_torch_compile_full_graph(name):
    import torch._dynamo

    model = build_tiny(name).eval()
    x = small_input(model, batch=1)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


def test_global_pooling_accepts_other_sizes():
    model = build_tiny("resnet3d_18").eval()
    with torch.no_grad():
        for shape in [(1, 3, 16, 112, 112), (1, 3, 8, 64, 80), (1, 3, 64, 112, 112), (1, 3, 5, 33, 47)]:
            assert model(torch.randn(shape)).shape == (1, 7)


def test_adapted_stem_rule_gray_equals_rgb_of_gray():
    from video3d_zoo.layers import adapt_input_conv

    w = torch.randn(8, 3, 3, 7, 7)
    gray = torch.randn(1, 1, 5, 9, 9)
    rgb = gray.expand(-1, 3, -1, -1, -1)
    conv = torch.nn.functional.conv3d
    torch.testing.assert_close(conv(gray, adapt_input_conv(w, 1)), conv(rgb, w), rtol=1e-5, atol=1e-5)
    flow = torch.randn(1, 1, 5, 9, 9).expand(-1, 2, -1, -1, -1)
    torch.testing.assert_close(conv(flow, adapt_input_conv(w, 2)), conv(flow[:, :1].expand(-1, 3, -1, -1, -1), w),
                               rtol=1e-5, atol=1e-5)
    assert adapt_input_conv(w, 3) is w


FULL_SIZE_PARAMS = {  # millions, at 400 classes; reference values from the golden cases / torchvision
    "r3d_18": 33.371, "mc3_18": 11.695, "r2plus1d_18": 31.505, "resnet3d_50": 47.019,
    "resnext3d_101": 48.341,
}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_full_size_builds_on_meta_device(name):
    with torch.device("meta"):
        model = video3d_zoo.create_model(name, init_weights=False)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params > 1.0
    if name in FULL_SIZE_PARAMS:
        assert params == pytest.approx(FULL_SIZE_PARAMS[name], abs=1e-3)
    assert get_model_spec(name).description


@pytest.mark.parametrize("kwargs, message", [
    ({"shortcut_type": "C"}, "shortcut_type must be 'A' or 'B'"),
    ({"num_classes": -1}, "num_classes must be an integer >= 0"),
    ({"in_chans": 0}, "in_chans must be a positive integer"),
])
def test_architecture_values_a_model_refuses_are_config_errors_naming_the_model(kwargs, message):
    from video3d_zoo.errors import ConfigError

    with pytest.raises(ConfigError, match=f"resnet3d_18: {message}"):
        video3d_zoo.create_model("resnet3d_18", **kwargs)
