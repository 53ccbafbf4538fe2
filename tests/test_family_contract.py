"""The family contract: what every model family registers, and what follows from the registry alone.

A family is one module in ``video3d_zoo/models`` (its builders and its ``FamilySpec``) plus one
import line in ``video3d_zoo/models/__init__.py``.  These tests check every registered family,
round-trip every registered model through a zoo folder without shape inference, check the C3D
family (added exactly that way, with no checkpoint readers) against its paper, and prove with a
small family defined here that conversion and docs rows follow from the registry.  Problem lists
are asserted on private registries only, never on the global one other tests may extend.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import video3d_zoo
from video3d_zoo import create_model, from_pretrained, save_pretrained
from video3d_zoo.weights.convert import convert_checkpoint
from video3d_zoo.errors import CheckpointError, RegistryError
from video3d_zoo.layers import VideoClassifier
from video3d_zoo.models.layout import LayoutReading, non_defaults, tensor_shape
from video3d_zoo.models.registry import (FAMILIES, MODELS, FamilyRegistry, FamilySpec, ModelRegistry, ModelSpec,
                                         family_of, family_problems, list_families, list_models, match_family,
                                         register_family, register_model)

from helpers import ROOT, small_input, tiny_kwargs
from helpers import build_tiny as _build_tiny

pytestmark = pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # mkldnn.flags()

ALL_MODELS = video3d_zoo.list_models()
FAMILY_NAMES = [f.name for f in list_families()]


def build_tiny(name: str, **kwargs) -> nn.Module:
    return _build_tiny(name, **kwargs).eval()


def same_outputs(a: nn.Module, b: nn.Module) -> None:
    """Bit for bit.  Without oneDNN: at these tiny sizes its per-shape kernel set-up, paid anew by
    every deep model, would cost seconds per test; the plain kernels take milliseconds."""
    x = small_input(a, batch=1, frames=1, size=1)  # the model's minimum input size
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        assert torch.equal(a(x), b(x))


def same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])][:5]


def fit_problems(family: FamilySpec, name: str) -> list:
    """What about ``family``'s FamilySpec does not fit its model ``name`` (built at tiny width)."""
    model = build_tiny(name, in_chans=2)
    where = f"FamilySpec of {family.name!r} in {family.source_file}"
    problems = [] if isinstance(model, VideoClassifier) else [
        f"{name} builds a {type(model).__name__}, not a video3d_zoo.layers.VideoClassifier (docs/model-interface.md)"]
    stems = [m for m in family.stem_convs if hasattr_module(model, m)]
    if not stems:
        problems.append(f"{name} has none of the stem_conv modules {family.stem_convs}: fix stem_conv in {where}")
    elif not (isinstance(model.get_submodule(stems[0]), nn.Conv3d) and model.get_submodule(stems[0]).in_channels == 2):
        problems.append(f"{name}.{stems[0]} is not the Conv3d that sees the input channels: fix stem_conv in {where}")
    if getattr(model, "head_name", None) != family.classifier:
        problems.append(f"{name} classifies with {getattr(model, 'head_name', None)!r}, the family says "
                        f"{family.classifier!r}: fix classifier in {where}")
    return problems


def hasattr_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


# -- every registered family ---------------------------------------------------------------------------
def test_every_family_registers_everything():
    problems = family_problems()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_spec_fits_its_models(family):
    spec = FAMILIES.get(family)
    models = [n for n in ALL_MODELS if MODELS.spec(n).family == family]
    problems = [p for name in models for p in fit_problems(spec, name)]
    assert not problems, "\n".join(problems)


def readable_from_zoo_layout(name: str) -> bool:
    family = family_of(name)
    return family.reads_checkpoints and "kenshohara2020" in family.layouts


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if readable_from_zoo_layout(n)])
def test_zoo_state_dict_converts_back_to_the_same_model(name):
    """Conversion support from the registry: the family recognises its model's tensors and reads
    the name and arguments back (torchvision's family reads torchvision's layout: test_golden)."""
    model = build_tiny(name)
    converted = convert_checkpoint(model.state_dict())
    assert converted.config.architecture == name
    assert dict(converted.config.arch_kwargs) == tiny_kwargs(name)  # the same builder, the same arguments
    assert converted.config.num_classes == 5 and converted.config.in_chans == 3
    same_weights(model, from_pretrained(model.state_dict()))


@pytest.fixture
def no_shape_inference(monkeypatch):
    """Make every entry point of architecture inference fail loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("shape inference ran while loading a zoo folder")

    import video3d_zoo.weights.convert as convert
    import video3d_zoo.weights.convert.infer as infer
    import video3d_zoo.models.registry as registry

    for module, attr in ((convert, "infer_architecture"), (infer, "infer_architecture"),
                         (infer, "match_family"), (registry, "match_family")):
        monkeypatch.setattr(module, attr, refuse)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_save_pretrained_round_trip_without_shape_inference(name, tmp_path, no_shape_inference):
    model = build_tiny(name)
    folder = save_pretrained(model, tmp_path / name)
    for source in (folder / "model.safetensors", folder):  # config embedded / config.json
        loaded = from_pretrained(source)
        assert loaded.config == model.config
        same_weights(model, loaded)
    same_outputs(model, loaded)


def test_tuple_arguments_come_back_from_config_json_as_tuples(tmp_path, no_shape_inference):
    """JSON has only lists; the config keeps tuples, so save -> load compares equal."""
    model = create_model("resnet3d_10", num_classes=3, widen_factor=0.125, block_kernel_t=[3, 1, 1, 1],
                         stage_stride_t=(1, 2, 2, 2)).eval()
    assert model.config.arch_kwargs["block_kernel_t"] == (3, 1, 1, 1)  # a list given is kept as a tuple
    folder = save_pretrained(model, tmp_path / "m")
    assert json.loads((folder / "config.json").read_text())["arch_kwargs"]["stage_stride_t"] == [1, 2, 2, 2]
    loaded = from_pretrained(folder)
    assert loaded.config == model.config and loaded.config.arch_kwargs["stage_stride_t"] == (1, 2, 2, 2)
    same_outputs(model, loaded)
    nested = video3d_zoo.ModelConfig("x", 2, arch_kwargs={"a": [[1, 2], {"b": [3]}]})
    assert nested.arch_kwargs == {"a": ((1, 2), {"b": (3,)})}
    assert video3d_zoo.ModelConfig.from_json(nested.to_json()) == nested


def test_reloaded_weights_are_aligned_so_default_kernels_match_bit_for_bit(tmp_path):
    """safetensors hands out tensors at any byte offset; loading copies them to aligned storage,
    without which oneDNN sums in another order and the outputs differ in the last bits."""
    model = build_tiny("densenet3d_121")
    loaded = from_pretrained(save_pretrained(model, tmp_path / "m"))
    assert all(t.data_ptr() % 64 == 0 for t in loaded.state_dict().values() if t.numel())
    x = small_input(model, batch=1)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_model_modules_are_the_family_modules():
    """Every family is registered from a module of video3d_zoo.models, imported by the package."""
    for family in list_families():
        assert family.module.startswith("video3d_zoo.models."), family
        assert family.module in sys.modules


# -- C3D: a family added as one file and one import line, without checkpoint readers ----------------------
def test_c3d_is_one_family_file_and_one_import_line():
    """Nothing else in the package knows the family: the registry-wide tests and docs take it from there."""
    package = ROOT / "video3d_zoo"
    mentions = {str(path.relative_to(ROOT)): [line for line in path.read_text().splitlines() if "c3d" in line.lower()]
                for path in package.rglob("*.py")}
    mentions = {path: lines for path, lines in mentions.items() if lines and path != "video3d_zoo/models/c3d.py"}
    assert mentions == {"video3d_zoo/models/__init__.py": ["from . import c3d  # noqa: F401"]}
    family = family_of("c3d")
    assert family.module == "video3d_zoo.models.c3d" and not family.reads_checkpoints


def test_c3d_follows_the_paper():
    """Tran et al. 2015: eight 3x3x3 convolutions (64, 128, 256, 256, 512, 512, 512, 512), pools 1x2x2 then
    2x2x2, fc6 / fc7 of 4096 over pool5's 512 x 1 x 4 x 4 map; no residuals, no BatchNorm."""
    with torch.device("meta"):
        model = create_model("c3d", num_classes=487, init_weights=False)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs[:8]] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert all(c.kernel_size == (3, 3, 3) and c.bias is not None for c in convs[:8])
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool3d)]
    assert [p.kernel_size for p in pools] == [(1, 2, 2), 2, 2, 2, 2]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    weights = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
    expected = sum(27 * i * o + o for i, o in weights) + (512 * 16 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 487
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.min_input_size == (16, 96, 96)


def test_c3d_fc6_is_the_original_fully_connected_layer_at_112_pixels():
    model = build_tiny("c3d")
    x = torch.randn(2, 3, 16, 112, 112)
    with torch.no_grad():
        pool5, fc6 = model.forward_intermediates(x, indices=[-3, -2], intermediates_only=True)
        conv = model.fc6.conv
        linear = torch.relu(pool5.flatten(1) @ conv.weight.flatten(1).T + conv.bias)  # flatten + linear
    assert pool5.shape[2:] == (1, 4, 4) and fc6.shape[2:] == (1, 1, 1)
    torch.testing.assert_close(fc6.flatten(1), linear)


def test_c3d_has_nothing_to_fold_and_no_readers(tmp_path):
    from video3d_zoo.inference.prepare import fuse_conv_bn

    model = build_tiny("c3d")
    assert fuse_conv_bn(model) == 0
    with pytest.raises(CheckpointError, match="c3d read no checkpoints without a config"):
        from_pretrained(model.state_dict())
    loaded = from_pretrained(save_pretrained(model, tmp_path / "c3d"))  # the config travels with the weights
    same_outputs(model, loaded)


# -- a new family: one module, and everything else follows from the registry -------------------------------
class ToyNet3d(VideoClassifier):
    """Stem conv (stride 1,2,2), ``depth`` conv-BN-ReLU blocks, linear head."""

    def __init__(self, depth: int = 1, width: int = 16, num_classes: int = 400, in_chans: int = 3,
                 drop_rate: float = 0.0, init_weights: bool = True) -> None:
        super().__init__(in_chans=in_chans, drop_rate=drop_rate)
        self.stem = nn.Conv3d(in_chans, width, 3, stride=(1, 2, 2), padding=1, bias=False)
        self._spine_op(3, (1, 2, 2), 1)
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv3d(width, width, 3, padding=1, bias=False),
                                                    nn.BatchNorm3d(width), nn.ReLU()) for _ in range(depth)])
        self._add_stage("blocks", width)
        self._init_head(width, num_classes)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


def toy3d_1(**kwargs) -> ToyNet3d:
    """Toy 3D net with one block (test family)."""
    return ToyNet3d(depth=1, **kwargs)


def toy3d_2(**kwargs) -> ToyNet3d:
    """Toy 3D net with two blocks (test family)."""
    return ToyNet3d(depth=2, **kwargs)


def _is_toy(sd) -> bool:
    return "stem.weight" in sd and "blocks.0.0.weight" in sd


def _read_toy(sd) -> LayoutReading:
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    return LayoutReading(f"toy3d_{depth}", non_defaults(ToyNet3d, width=tensor_shape(sd, "stem.weight")[0]), depth)


TOY = dict(name="toy3d", title="Toy 3D nets", stem_conv="stem", classifier="fc", tiny_kwargs={"width": 4},
           recognise=_is_toy, read_layout=_read_toy, module=__name__)


def private_registries(*families: FamilySpec, models=(toy3d_1, toy3d_2), family: str = "toy3d"):
    """A model registry and a family registry of their own, holding only what the test gives."""
    model_registry, family_registry = ModelRegistry(), FamilyRegistry()
    for builder in models:
        model_registry.register(ModelSpec(builder.__name__, family, builder))
    for spec in families:
        family_registry.register(spec)
    return model_registry, family_registry


@pytest.fixture
def scratch_registry(monkeypatch):
    """The global registries, restored afterwards: nothing registered here leaks into other tests."""
    monkeypatch.setattr(MODELS, "_specs", dict(MODELS._specs))
    monkeypatch.setattr(MODELS, "_aliases", dict(MODELS._aliases))
    monkeypatch.setattr(FAMILIES, "_families", dict(FAMILIES._families))


def test_a_new_family_gets_tests_docs_and_conversion_from_the_registry(scratch_registry, tmp_path, monkeypatch):
    assert family_problems(*private_registries(FamilySpec(**TOY))) == []
    for builder in (toy3d_1, toy3d_2):
        register_model(family="toy3d")(builder)
    register_family(FamilySpec(**{**TOY, "module": ""}))
    assert family_of("toy3d_2").source_file == "tests/test_family_contract.py"
    assert tiny_kwargs("toy3d_2") == {"width": 4}
    assert not fit_problems(family_of("toy3d_2"), "toy3d_2")
    model = build_tiny("toy3d_2")
    # conversion: a bare state dict is recognised, named and loaded; the stem adapts to 1 channel
    assert convert_checkpoint(model.state_dict()).config.architecture == "toy3d_2"
    loaded = from_pretrained(model.state_dict())
    same_weights(model, loaded)
    same_outputs(model, loaded)
    gray = from_pretrained(model.state_dict(), in_chans=1)
    assert gray.stem.in_channels == 1 and gray.config.in_chans == 1
    save_pretrained(model, tmp_path / "toy")
    same_outputs(model, from_pretrained(tmp_path / "toy"))
    # docs: the family's section and its models' rows (profiling stubbed: only the table is tested)
    monkeypatch.setattr("video3d_zoo.inference.profile.profile",
                        lambda name, **kw: SimpleNamespace(params_millions=1.0, gmacs=2.0))
    page = load_gen_docs().models_page()
    assert "## Toy 3D nets" in page and "| `toy3d_2` |  | 1.00 | 2.00 | Toy 3D net with two blocks" in page


def load_gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs_under_test", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_new_family_is_gone_afterwards():
    assert "toy3d_1" not in list_models() and "toy3d" not in FAMILIES


def test_a_missing_part_is_named_with_its_file():
    problems = family_problems(*private_registries(FamilySpec(**{**TOY, "tiny_kwargs": None, "title": ""})))
    assert problems == [
        "family 'toy3d' registers no title: add title= to its FamilySpec in tests/test_family_contract.py",
        "family 'toy3d' registers no tiny_kwargs: add tiny_kwargs= to its FamilySpec in tests/test_family_contract.py"]


def test_checkpoint_readers_are_optional_but_all_or_nothing():
    readerless = FamilySpec(**{**TOY, "recognise": None, "read_layout": None})
    assert family_problems(*private_registries(readerless)) == [] and not readerless.reads_checkpoints
    half = family_problems(*private_registries(FamilySpec(**{**TOY, "read_layout": None})))
    assert half == ["family 'toy3d' gives recognise but no read_layout: a family that reads checkpoints gives "
                    "both, one that does not gives neither; fix its FamilySpec in tests/test_family_contract.py"]
    stray = family_problems(*private_registries(replace(readerless, arch_names=("toy",))))
    assert len(stray) == 1 and "lists arch_names but reads no checkpoints" in stray[0]


def test_a_family_without_models_and_models_without_a_family_are_reported():
    lonely = FamilySpec(**{**TOY, "name": "empty3d"})
    problems = family_problems(*private_registries(lonely, models=(toy3d_1,), family="orphan3d"))
    assert problems == [
        "family 'empty3d' has no registered models: register its builders with @register_model(family='empty3d') "
        "in tests/test_family_contract.py",
        "model 'toy3d_1' belongs to family 'orphan3d', which has no FamilySpec: add "
        "register_family(FamilySpec(name='orphan3d', ...)) to tests/test_family_contract.py"]


def test_overlapping_or_absent_recognisers_are_clear_errors():
    readerless = FamilySpec(**{**TOY, "name": "plain3d", "recognise": None, "read_layout": None})
    _, families = private_registries(FamilySpec(**TOY), FamilySpec(**{**TOY, "name": "toy3d_twin"}), readerless)
    sd = ToyNet3d(width=4).state_dict()
    with pytest.raises(CheckpointError, match="ambiguous checkpoint: families toy3d, toy3d_twin all recognise"):
        match_family(sd, "kenshohara2020", families)
    with pytest.raises(CheckpointError, match=r"unrecognised checkpoint layout.*\(families tried: toy3d, toy3d_twin\)"
                                              r".*the families plain3d read no checkpoints without a config"):
        match_family({"encoder.weight": torch.zeros(3)}, "kenshohara2020", families)


def test_registering_a_family_twice_or_with_bad_knobs_is_refused():
    families = FamilyRegistry()
    families.register(FamilySpec(**TOY))
    with pytest.raises(RegistryError, match="family 'toy3d' is already registered .*tests/test_family_contract.py"):
        families.register(FamilySpec(**TOY))
    with pytest.raises(RegistryError, match="regularisers must be a tuple of argument names"):
        families.register(FamilySpec(**{**TOY, "name": "other3d", "regularisers": "drop_path_rate"}))
    with pytest.raises(RegistryError, match="tiny_kwargs must be a dict"):
        families.register(FamilySpec(**{**TOY, "name": "other3d", "tiny_kwargs": 4}))
