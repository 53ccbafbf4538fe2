"""The inference fast path: BN folding, channels_last_3d, reduced precision, compile."""

from __future__ import annotations

import pytest
import torch

import video3d_zoo
from video3d_zoo.inference.precision import bf16_supported
from video3d_zoo.inference.prepare import fuse_conv_bn, optimize_for_inference, prepare_network

from helpers import small_input, tiny_kwargs

ALL_MODELS = video3d_zoo.list_models()


def randomised(name):
    torch.manual_seed(0)
    model = video3d_zoo.create_model(name, num_classes=5, **tiny_kwargs(name))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.4, 0.8)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_fp32_fast_path_matches_eager(name):
    model = randomised(name)
    x = small_input(model)
    modules = [(n, type(m)) for n, m in model.named_modules()]
    with torch.no_grad():
        ref = model(x)
    fast = optimize_for_inference(model)
    out = fast(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item() + 1e-6)
    assert [(n, type(m)) for n, m in model.named_modules()] == modules, "original left untouched (BNs not folded)"


def test_folding_removes_post_activation_batchnorms_only():
    resnet = randomised("resnet3d_18")
    assert fuse_conv_bn(resnet) == 1 + 8 * 2 + 3
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in resnet.modules())
    preact = randomised("preact_resnet3d_18")
    assert fuse_conv_bn(preact) == 1 + 3  # stem + three shortcuts; pre-activation BNs stay
    densenet = randomised("densenet3d_121")
    assert fuse_conv_bn(densenet) == 1 + 58


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="CPU without bf16 support")
def test_bf16_path_is_close_to_fp32():
    model = randomised("resnet3d_18")
    x = small_input(model, batch=2, frames=8, size=48)
    with torch.no_grad():
        ref = model(x)
    out = optimize_for_inference(model, precision="bf16")(x)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()
    features = optimize_for_inference(model, precision="bf16").forward_features(x).mean(dim=(2, 3, 4))
    with torch.no_grad():
        ref_features = model.forward_features(x).mean(dim=(2, 3, 4))
    assert torch.nn.functional.cosine_similarity(features, ref_features).min() > 0.99


def test_precision_checks():
    model = randomised("resnet3d_10")
    with pytest.raises(ValueError, match="precision must be one of"):
        optimize_for_inference(model, precision="int4")
    with pytest.raises(ValueError, match="fp16 inference needs a CUDA device"):
        optimize_for_inference(model, precision="fp16", device="cpu")


def test_compiled_path_matches():
    model = randomised("resnet3d_10")
    x = small_input(model, batch=1)
    with torch.no_grad():
        ref = model(x)
    compiled = optimize_for_inference(model, compile=True)
    torch.testing.assert_close(compiled(x), ref, rtol=1e-3, atol=1e-4)


def test_the_prepared_model_hashes_its_weights_once():
    from video3d_zoo.jobs.provenance import weights_digest

    model = randomised("resnet3d_10")
    fast = optimize_for_inference(model)
    first = weights_digest(fast)
    assert first == weights_digest(prepare_network(model)) and first.startswith("sha256:")
    with torch.no_grad():  # nobody should change a prepared copy; if they do, the digest is as it was
        next(fast.parameters()).add_(1.0)
    assert weights_digest(fast) == first


def test_the_prepared_model_is_a_proxy_that_stays_on_its_device():
    """What callers read is public (config, feature_info, options, device); the network inside is not
    reachable as an attribute, and moving the model or changing its precision is refused."""
    from video3d_zoo.errors import ConfigError

    model = randomised("resnet3d_10")
    fast = optimize_for_inference(model)
    assert fast.config == model.config and fast.num_features == model.num_features
    assert [i.module for i in fast.feature_info] == [i.module for i in model.feature_info]
    assert fast.device == torch.device("cpu") and fast.options.fold_bn and fast.network_name == type(model).__name__
    assert not hasattr(fast, "model") and fast.compiled_entries == ()
    assert fast.to("cpu") is fast
    with pytest.raises(ConfigError, match="prepared for cpu"):
        fast.to("meta")
    with pytest.raises(ConfigError, match="precision"):
        fast.to(torch.float16)
