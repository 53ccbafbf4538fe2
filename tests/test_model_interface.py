"""The timm-level model interface, proved on every registered model at tiny width.

Gradient checkpointing (same gradients, BatchNorm statistics updated once), forward_intermediates
(equal to the stages of forward_features), features-only backbones loaded with pretrained weights
(equal to the full model's stage outputs), classifier / pooling verbs, stochastic depth, optimiser
groups, pretrained_cfg, checkpoint_path and the error for an unknown argument.
"""

from __future__ import annotations

import copy

import pytest
import torch

import video3d_zoo
from video3d_zoo.api import architecture_arguments
from video3d_zoo.errors import ConfigError
from video3d_zoo.layers import DropPath, FeatureInfo, FeatureInfoList, drop_path, take_indices
from video3d_zoo.train.param_groups import group_parameters, param_groups_layer_decay, param_groups_weight_decay

from helpers import build_tiny, first_model_of_each_family, regularisers, small_input, tiny_kwargs

ALL_MODELS = video3d_zoo.list_models()


def build(name, **kwargs):
    model = build_tiny(name, **kwargs)
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding / eval paths are exercised
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def has_drop_path(name) -> bool:
    return "drop_path_rate" in regularisers(name)


def stage_outputs(model, x):
    """Each feature_info module's output during forward_features, through forward hooks."""
    seen, handles = {}, []
    for info in model.feature_info:
        module = model.get_submodule(info.module)
        handles.append(module.register_forward_hook(lambda m, i, o, key=info.module: seen.__setitem__(key, o)))
    try:
        final = model.forward_features(x)
    finally:
        for handle in handles:
            handle.remove()
    return final, [seen[info.module] for info in model.feature_info]


# -- gradient checkpointing ------------------------------------------------------------------------
class _SavedCounter:
    """Counts tensors autograd saves outside checkpointed regions (checkpoint hooks take those inside)."""

    def __init__(self):
        self.count = 0

    def __enter__(self):
        def pack(t):
            self.count += 1
            return t
        self.ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


BLOCK_GRANULARITY_MODELS = set(first_model_of_each_family())  # block-level checkpointing: one model per family


@pytest.mark.parametrize("name", ALL_MODELS)
def test_grad_checkpointing_gives_the_plain_gradients_and_running_stats(name):
    # random masks inside the checkpointed stages (the family's regularisers): the recompute must draw the same ones
    kwargs = {rate: 0.2 for rate in regularisers(name)}
    plain = build(name, **kwargs).train()
    x = small_input(plain)
    variants = {"off": plain}
    for granularity in ("stage", "block") if name in BLOCK_GRANULARITY_MODELS else ("stage",):
        variants[granularity] = copy.deepcopy(plain)
        variants[granularity].set_grad_checkpointing(True, granularity=granularity)
    saved = {}
    for key, model in variants.items():
        torch.manual_seed(1)  # same dropout / drop-path masks: checkpointing restores the RNG on recompute
        with _SavedCounter() as counter:
            loss = model(x).logsumexp(dim=1).mean()
        saved[key] = counter.count
        loss.backward()
    assert all(saved[key] < saved["off"] for key in variants if key != "off"), saved  # really checkpointed
    reference = dict(plain.named_parameters())
    for key in [k for k in variants if k != "off"]:
        for pname, param in variants[key].named_parameters():
            torch.testing.assert_close(param.grad, reference[pname].grad, rtol=1e-6, atol=1e-8,
                                       msg=lambda m: f"{key}: {pname}: {m}")
        for (bname, ref), (_, buf) in zip(plain.named_buffers(), variants[key].named_buffers()):
            assert torch.equal(ref, buf), f"{key}: buffer {bname} differs (BatchNorm stats updated twice?)"


def test_grad_checkpointing_is_off_in_eval_and_checked():
    model = build("resnet3d_10").eval()
    x = small_input(model)
    with torch.no_grad():
        ref = model(x)
    model.set_grad_checkpointing(True)
    with _SavedCounter() as counter:
        out = model(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert counter.count > 0  # eval: the plain path, nothing checkpointed
    with pytest.raises(ConfigError, match="granularity"):
        model.set_grad_checkpointing(True, granularity="layer")
    model.set_grad_checkpointing(False)
    assert not model.grad_checkpointing


# -- forward_intermediates and feature_info --------------------------------------------------------
@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_intermediates_equal_the_stages_of_forward_features(name):
    model = build(name).eval()
    x = small_input(model)
    with torch.no_grad():
        final_ref, stages_ref = stage_outputs(model, x)
        final, stages = model.forward_intermediates(x)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(x, indices=[-3, 0], stop_early=True, intermediates_only=True)
        normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
    assert torch.equal(final, final_ref)
    assert len(stages) == len(model.feature_info) >= 3
    for out, ref, info in zip(stages, stages_ref, model.feature_info):  # sizes: test_models.py
        assert torch.equal(out, ref), info.module
        assert out.shape[1] == info.num_chs
    assert [torch.equal(a, b) for a, b in zip(last_two, stages[-2:])] == [True, True]
    third_last = len(stages) - 3
    assert torch.equal(picked[0], stages[0]) and torch.equal(picked[1], stages[third_last])
    assert torch.equal(normed[0], final)  # the final norm (DenseNet's norm5 + ReLU) applied to the last stage
    with pytest.raises(ConfigError, match="out of range"):
        model.forward_intermediates(x, indices=[len(stages)])


def test_feature_info_has_timm_accessors_and_stays_a_list():
    model = build("resnet3d_18")
    info = model.feature_info
    assert isinstance(info, list) and isinstance(info, FeatureInfoList) and len(info) == 4
    assert [i.module for i in info] == ["layer1", "layer2", "layer3", "layer4"] == info.module_name()
    assert info.channels() == [8, 16, 32, 64] and info.channels(-1) == model.num_features
    assert info.reduction() == info.reduction_hw() == [4, 8, 16, 32]
    assert info.reduction_t() == [2, 4, 8, 16] and info.reduction_t([0, 1]) == [2, 4]
    assert info[2]["num_chs"] == 32 and info[2]["reduction"] == 16 and info[2].index == 2
    assert info.get_dicts(keys=("module", "num_chs"), idx=0) == {"module": "layer1", "num_chs": 8}
    assert isinstance(info[0], FeatureInfo) and info.out_indices == (0, 1, 2, 3)
    torchvision_like = build("mc3_18").feature_info  # no temporal stride after the stem: T kept, H/W reduced
    assert torchvision_like.reduction_t() == [1, 1, 1, 1] and torchvision_like.reduction() == [2, 4, 8, 16]
    with pytest.raises(KeyError):
        info[0]["stride"]


def test_take_indices_rules():
    assert take_indices(4) == [0, 1, 2, 3]
    assert take_indices(4, 2) == [2, 3]
    assert take_indices(4, (3, -4, 3)) == [0, 3]
    for bad in (0, 5, [4], [-5], ["a"], [], True, 1.5):
        with pytest.raises(ConfigError):
            take_indices(4, bad)


# -- features-only backbones -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_folders(tmp_path_factory):
    """A save_pretrained folder of every tiny model, used as its "pretrained" weights."""
    root = tmp_path_factory.mktemp("interface_weights")
    return {name: video3d_zoo.save_pretrained(build(name).eval(), root / name) for name in ALL_MODELS}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_features_only_backbone_with_pretrained_weights(name, saved_folders):
    folder = saved_folders[name]
    full = video3d_zoo.create_model(name, pretrained=folder).eval()
    backbone = video3d_zoo.create_model(name, pretrained=folder, features_only=True, out_indices=(1, -2)).eval()
    x = small_input(full)
    with torch.no_grad():
        _, reference = stage_outputs(full, x)
        outputs = backbone(x)
    second_last = len(full.feature_info) - 2
    assert isinstance(outputs, list) and len(outputs) == 2
    for out, ref in zip(outputs, (reference[1], reference[second_last])):
        assert torch.equal(out, ref)
    assert backbone.features_only and backbone.out_indices == (1, second_last)
    assert backbone.feature_info.channels() == [o.shape[1] for o in outputs]
    assert [i.module for i in backbone.feature_info] == [full.feature_info[i].module for i in (1, second_last)]
    # classifier and the stage after the last output are dropped; every other name is the full model's
    keys, full_keys = set(backbone.state_dict()), set(full.state_dict())
    dropped = full_keys - keys
    head, last = full.head_name, full.feature_info[-1].module
    pruned = (head,) + full.norm_modules + full._stages[-1]  # the classifier, final norm and last stage
    assert keys < full_keys
    assert all(k.startswith(tuple(m + "." for m in pruned)) for k in dropped)
    assert any(k.startswith(head + ".") for k in dropped) and any(k.startswith(last + ".") for k in dropped)
    assert isinstance(backbone.get_classifier(), torch.nn.Identity) and backbone.num_classes == 0
    with pytest.raises(ConfigError, match="pruned"):
        backbone.forward_features(x)


def test_backbone_through_every_load_path(saved_folders):
    name = "r2plus1d_18"
    folder = saved_folders[name]
    full = video3d_zoo.create_model(name, pretrained=folder).eval()
    x = small_input(full)
    with torch.no_grad():
        reference = full.forward_intermediates(x, intermediates_only=True)
        via_checkpoint_path = video3d_zoo.create_model(name, checkpoint_path=folder, features_only=True)(x)
        via_load_model = video3d_zoo.load_model(folder, features_only=True, out_indices=2)(x)
        via_from_pretrained = video3d_zoo.from_pretrained(folder, features_only=True, out_indices=[0])(x)
        random = video3d_zoo.create_model(name, features_only=True, **tiny_kwargs(name)).eval()
        assert len(random(x)) == 4 and random.feature_info.channels() == full.feature_info.channels()
    for got, want in zip(via_checkpoint_path, reference):
        assert torch.equal(got, want)
    assert torch.equal(via_load_model[0], reference[2]) and torch.equal(via_load_model[1], reference[3])
    assert torch.equal(via_from_pretrained[0], reference[0])
    with pytest.raises(ConfigError, match="features_only=True"):
        video3d_zoo.create_model(name, out_indices=(1,), **tiny_kwargs(name))
    with pytest.raises(ConfigError, match="features-only backbone"):
        video3d_zoo.save_pretrained(video3d_zoo.load_model(folder, features_only=True), folder.parent / "nope")


def test_backbone_with_manifest_weights_fast_path_and_compile():
    import torch._dynamo

    from video3d_zoo.inference.prepare import optimize_for_inference

    full = video3d_zoo.create_model("resnet3d_10", pretrained="synthetic_motion").eval()  # the embedded weights
    backbone = video3d_zoo.create_model("resnet3d_10", pretrained="synthetic_motion", features_only=True, out_indices=(2,)).eval()
    x = torch.randn(2, 3, 8, 48, 48)
    with torch.no_grad():
        want = full.forward_intermediates(x, indices=[2], intermediates_only=True)[0]
        assert torch.equal(backbone(x)[0], want)
    fast = optimize_for_inference(backbone)
    (got,) = fast(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()
    compiled = torch.compile(backbone, backend="eager", fullgraph=True)
    with torch.no_grad():
        assert torch.equal(compiled(x)[0], want)
    assert backbone.pretrained_cfg["license"] == "MIT" and backbone.pretrained_cfg["tag"] == "synthetic_motion"


def test_extraction_of_a_stage_stops_there_without_hooks():
    from video3d_zoo.jobs.pipeline import clip_outputs
    from video3d_zoo.inference.prepare import optimize_for_inference

    for name in ("resnet3d_10", "densenet3d_121"):
        model = build(name).eval()
        x = small_input(model)
        with torch.no_grad():
            _, stages = stage_outputs(model, x)
        later = model.get_submodule(model.feature_info[3].module)

        def refuse(*_):
            raise AssertionError("the stage after the requested one ran")

        handle = later.register_forward_pre_hook(refuse)
        try:
            layer = model.feature_info[2].module
            torch.testing.assert_close(clip_outputs(model, x, layer), stages[2].mean(dim=(2, 3, 4)))
            fast = optimize_for_inference(model, fold_bn=False, channels_last=False)
            torch.testing.assert_close(clip_outputs(fast, x, layer), stages[2].mean(dim=(2, 3, 4)))
        finally:
            handle.remove()
        assert not model._forward_hooks and not later._forward_hooks
        backbone = copy.deepcopy(model).as_backbone(out_indices=[1, 2])
        torch.testing.assert_close(clip_outputs(backbone, x, layer), stages[2].mean(dim=(2, 3, 4)))


# -- classifier, pooling, dense outputs ------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_MODELS)
def test_classifier_and_global_pool_verbs(name):
    model = build(name).eval()
    x = small_input(model, frames=8)
    with torch.no_grad():
        feats = model.forward_features(x)
        head = model.get_classifier()
        assert isinstance(head, torch.nn.Linear) and head.in_features == model.num_features
        for pool, pooled in (("max", feats.amax(dim=(2, 3, 4))),
                             ("avgmax", 0.5 * (feats.mean(dim=(2, 3, 4)) + feats.amax(dim=(2, 3, 4))))):
            model.reset_classifier(5, global_pool=pool)
            torch.testing.assert_close(model.forward_head(feats, pre_logits=True), pooled)
            torch.testing.assert_close(model(x), model.get_classifier()(pooled))
        model.reset_classifier(3)  # keeps the pooling
        assert model.global_pool == "avgmax" and model(x).shape == (2, 3)
        for dense in ("", None):
            model.reset_classifier(4, global_pool=dense)
            out = model(x)
            assert out.shape == (2, 4) + tuple(feats.shape[2:])
            # the head is linear: averaging the dense logits gives the average-pooled logits
            torch.testing.assert_close(out.mean(dim=(2, 3, 4)), model.get_classifier()(feats.mean(dim=(2, 3, 4))),
                                       rtol=1e-5, atol=1e-5)
        model.reset_classifier(0, global_pool="avg")
        torch.testing.assert_close(model(x), feats.mean(dim=(2, 3, 4)))
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(2, global_pool="sum")


def test_global_pool_as_architecture_argument(tmp_path):
    model = build("resnet3d_10", global_pool="max").eval()
    assert model.config.arch_kwargs["global_pool"] == "max"
    folder = video3d_zoo.save_pretrained(model, tmp_path / "max")
    again = video3d_zoo.load_model(folder)
    x = small_input(model)
    with torch.no_grad():
        assert again.global_pool == "max" and torch.equal(again(x), model(x))


# -- stochastic depth ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in ALL_MODELS if has_drop_path(n)])
def test_drop_path_rate(name):
    plain = build(name).eval()
    assert not any(isinstance(m, DropPath) for m in plain.modules())  # rate 0 adds no op (golden cases exact)
    model = build(name, drop_path_rate=0.3).eval()
    assert model.state_dict().keys() == plain.state_dict().keys()
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    blocks = sum(len(list(model.get_submodule(info.module).children())) for info in model.feature_info)
    assert len(rates) == blocks - 1  # the first block's rate is 0
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.3)
    x = small_input(model)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))  # identity in eval
    with pytest.raises(ConfigError, match="drop_path_rate"):
        build(name, drop_path_rate=1.0)


def every_listed_regulariser() -> set:
    from video3d_zoo.models.registry import list_families

    return {rate for family in list_families() for rate in family.regularisers}


@pytest.mark.parametrize("name", first_model_of_each_family())
def test_a_family_takes_its_regularisers_and_refuses_the_others(name):
    """``FamilySpec.regularisers`` is true: each is accepted, random in training and the identity in
    eval (same weights: a rate adds no parameters); a rate another family lists is refused."""
    own = regularisers(name)
    for rate in sorted(every_listed_regulariser() - set(own)):
        with pytest.raises(ConfigError, match=f"create_model\\({name!r}\\).*{rate}"):
            build(name, **{rate: 0.1})
    if not own:
        return
    assert set(own) <= set(architecture_arguments(name)[0])
    plain, model = build(name).eval(), build(name, **{rate: 0.5 for rate in own}).eval()
    x = small_input(model)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
        model.train()
        outputs = []
        for seed in (1, 2, 1):
            torch.manual_seed(seed)
            outputs.append(model(x))
    assert not torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])


def test_drop_path_keeps_the_expectation_and_is_refused_by_densenet():
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 1, 1, 1)
    out = drop_path(x, 0.25, training=True)
    kept = out[:, 0].flatten() != 0
    torch.testing.assert_close(out[kept, 0].flatten(), torch.full((int(kept.sum()),), 1 / 0.75))
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    assert torch.equal(out[:, 0], out[:, 1])  # one decision per sample
    assert torch.equal(drop_path(x, 0.25, training=False), x)
    with pytest.raises(ConfigError, match=r"create_model\('densenet3d_121'\).*drop_path_rate"):
        video3d_zoo.create_model("densenet3d_121", drop_path_rate=0.1)


# -- optimiser groups ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_MODELS)
def test_group_matcher_and_no_weight_decay(name):
    model = build(name)
    names = [n for n, _ in model.named_parameters()]
    stages = len(model.feature_info)
    # a block (or a transition a stage runs first) is a group when it has parameters (not a pool)
    blocks = sum(1 for i in range(stages) for block in model.stage_blocks(i) if any(True for _ in block.parameters()))
    for coarse in (True, False):
        groups = group_parameters(model, coarse=coarse)
        flat = [n for g in groups for n in g]
        assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))
        assert groups[-1][-1].startswith(model.head_name + ".")
        expected = 1 + (stages if coarse else blocks) + 1  # the stem, the stages or blocks, the head (and norm)
        assert len(groups) == expected, [g[0] for g in groups]
    stem = model.group_matcher()["stem"]
    assert all(not any(n.startswith(i.module + ".") for i in model.feature_info)
               for n in group_parameters(model, matcher={"stem": stem})[0])
    skip = model.no_weight_decay()
    bn_params = {f"{m}.{p}" for m, mod in model.named_modules()
                 if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for p in ("weight", "bias")}
    assert bn_params <= skip and f"{model.head_name}.bias" in skip
    assert not any(n.endswith("weight") and model.get_parameter(n).dim() > 1 for n in skip)
    layered = param_groups_layer_decay(model, lr=0.1, weight_decay=1e-4, layer_decay=0.5)
    assert sum(len(g["params"]) for g in layered) == len(names)
    n_groups = len(group_parameters(model))
    assert layered[-1]["lr_scale"] == 1.0 and layered[0]["lr_scale"] == 0.5 ** (n_groups - 1)
    assert all(g["lr"] == pytest.approx(0.1 * g["lr_scale"]) for g in layered)
    assert all(g["weight_decay"] == 0.0 for g in layered if g["group_name"].endswith("no_decay"))
    two = param_groups_weight_decay(model, 1e-4)
    assert len(two[0]["params"]) == len(skip) and sum(len(g["params"]) for g in two) == len(names)
    torch.optim.SGD(layered, lr=0.1)  # plain torch.optim takes the groups as they are


# -- metadata, create_model arguments --------------------------------------------------------------
def test_pretrained_cfg_from_config_and_manifest():
    random = build("r3d_18")
    cfg = random.pretrained_cfg
    assert cfg["architecture"] == "r3d_18" and cfg["tag"] is None and cfg["license"] is None
    assert cfg["input_spec"] == random.config.input_spec.to_dict() and cfg["input_size"] == (3, 16, 112, 112)
    assert cfg["first_conv"] == "conv1" and cfg["classifier"] == "fc" and cfg["num_classes"] == 5
    assert cfg["mean"] == random.config.input_spec.mean
    pretrained = video3d_zoo.create_model("resnet3d_10", pretrained="synthetic_motion")
    cfg = pretrained.pretrained_cfg
    assert cfg["tag"] == "synthetic_motion" and cfg["license"] == "MIT"
    assert cfg["labels"] == list(pretrained.config.labels) and len(cfg["labels"]) == 8
    assert cfg["source"] == pretrained.config.source and cfg["source"].startswith("package:")
    assert cfg["dataset"].startswith("video3d_zoo synthetic motion") and cfg["weights"] == "resnet3d_10.synthetic_motion"
    assert cfg["input_size"] == (3, 16, 48, 48)


def test_checkpoint_path_is_pretrained_path(saved_folders):
    folder = saved_folders["mc3_18"]
    a = video3d_zoo.create_model("mc3_18", pretrained=folder)
    b = video3d_zoo.create_model("mc3_18", checkpoint_path=str(folder))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ConfigError, match="give only one"):
        video3d_zoo.create_model("mc3_18", pretrained=folder, checkpoint_path=folder)
    with pytest.raises(ConfigError, match="give only one"):
        video3d_zoo.create_model("mc3_18.kinetics", checkpoint_path=folder)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_unknown_argument_names_create_model_and_the_accepted_ones(name):
    with pytest.raises(ConfigError) as info:
        video3d_zoo.create_model(name, widen_factr=0.5)
    message = str(info.value)
    assert f"create_model({name!r})" in message and "'widen_factr'" in message
    for accepted in ("pretrained", "num_classes", "checkpoint_path", "features_only", "out_indices",
                     "drop_rate", "global_pool", *architecture_arguments(name)[0]):
        assert accepted in message
    assert "__init__" not in message and "unexpected keyword" not in message


def test_unknown_argument_is_refused_before_any_weights_are_read(saved_folders, monkeypatch):
    import video3d_zoo.weights.loading as weights

    monkeypatch.setattr(weights, "convert_source", lambda *a, **k: pytest.fail("weights were read"))
    with pytest.raises(ConfigError, match="'layers' is fixed by the model name"):
        video3d_zoo.create_model("resnet3d_18", pretrained=saved_folders["resnet3d_18"], layers=(1, 1, 1, 1))
    with pytest.raises(ConfigError, match="unknown argument 'foo'"):
        video3d_zoo.load_model("resnet3d_18", foo=1)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_one_clip_too_small_for_batchnorm_in_training_is_said_plainly(name, monkeypatch):
    """At the minimum input size a single clip may reach the last stage as 1 x 1 x 1, where BatchNorm
    cannot train: the model says so (and only where torch would indeed refuse)."""
    from video3d_zoo.errors import InputShapeError

    model = build_tiny(name).train()
    x = torch.randn(1, model.in_chans, *model.min_input_size)
    try:
        model(x)
    except InputShapeError as exc:
        assert "BatchNorm needs more than one value per channel" in str(exc)
        assert "batches of 2 or more clips" in str(exc)
        monkeypatch.setattr(type(model), "_one_value_per_channel_at_the_end", lambda *a: False)
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            model(x)  # torch's own refusal: the check fires only where it is due
    model(torch.randn(2, model.in_chans, *model.min_input_size))  # two clips train
    model.eval()
    with torch.no_grad():
        model(x)  # and one clip runs for inference
