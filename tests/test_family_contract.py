"""The family contract: what every model family registers, and what follows from the registry alone.

A family is one module in ``video3d_zoo/models`` (its builders and its ``FamilySpec``) plus one
import line in ``video3d_zoo/models/__init__.py``.  These tests check every registered family,
round-trip every registered model through a zoo folder without shape inference, and prove
with a small family defined here that tests, docs rows and conversion follow from the registry.
"""

from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import video3d_zoo
from video3d_zoo import create_model, from_pretrained, save_pretrained
from video3d_zoo.weights.convert import convert_checkpoint
from video3d_zoo.errors import CheckpointError
from video3d_zoo.layers import VideoClassifier
from video3d_zoo.models.layout import LayoutReading, non_defaults, tensor_shape
from video3d_zoo.models.registry import (FAMILIES, MODELS, FamilySpec, family_of, family_problems, list_families,
                                  list_models, register_family, register_model)

from helpers import ROOT, small_input, tiny_kwargs

pytestmark = pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # mkldnn.flags()

ALL_MODELS = video3d_zoo.list_models()
FAMILY_NAMES = [f.name for f in list_families()]


def build_tiny(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=kwargs.pop("num_classes", 5), **tiny_kwargs(name), **kwargs).eval()


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
    problems = []
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
    return "kenshohara2020" in family_of(name).layouts


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


def test_reloaded_weights_are_aligned_so_default_kernels_match_bit_for_bit(tmp_path):
    """safetensors hands out tensors at any byte offset; loading copies them to aligned storage,
    without which oneDNN sums in another order and the outputs differ in the last bits."""
    model = build_tiny("densenet3d_121")
    loaded = from_pretrained(save_pretrained(model, tmp_path / "m"))
    assert all(t.data_ptr() % 64 == 0 for t in loaded.state_dict().values() if t.numel())
    x = small_input(model, batch=1)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.blocks(self.stem(x))


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
           recognise=_is_toy, read_layout=_read_toy)


@pytest.fixture
def scratch_registry(monkeypatch):
    """The global registries, restored afterwards: nothing registered here leaks into other tests."""
    monkeypatch.setattr(MODELS, "_specs", dict(MODELS._specs))
    monkeypatch.setattr(MODELS, "_aliases", dict(MODELS._aliases))
    monkeypatch.setattr(FAMILIES, "_families", dict(FAMILIES._families))


def register_toy(**overrides) -> None:
    for builder in (toy3d_1, toy3d_2):
        register_model(family="toy3d")(builder)
    register_family(FamilySpec(**{**TOY, **overrides}))


def test_a_new_family_gets_tests_docs_and_conversion_from_the_registry(scratch_registry, tmp_path, monkeypatch):
    register_toy()
    assert not family_problems()
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


def test_a_missing_part_is_named_with_its_file(scratch_registry):
    register_toy(tiny_kwargs=None, read_layout=None)
    problems = family_problems()
    assert "family 'toy3d' registers no tiny_kwargs: add tiny_kwargs= to its FamilySpec in " \
           "tests/test_family_contract.py" in problems
    assert any(p.startswith("family 'toy3d' registers no read_layout function") for p in problems)
    assert len(problems) == 2, problems


def test_models_without_a_family_spec_are_reported(scratch_registry):
    register_model(family="orphan3d")(toy3d_1)
    assert family_problems() == [
        "model 'toy3d_1' belongs to family 'orphan3d', which has no FamilySpec: add "
        "register_family(FamilySpec(name='orphan3d', ...)) to tests/test_family_contract.py"]


def test_overlapping_or_absent_recognisers_are_clear_errors(scratch_registry):
    register_toy()
    register_family(FamilySpec(**{**TOY, "name": "toy3d_twin"}))
    sd = build_tiny("toy3d_1").state_dict()
    with pytest.raises(CheckpointError, match="ambiguous checkpoint: families toy3d, toy3d_twin all recognise"):
        convert_checkpoint(sd)
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout.*families tried: resnet3d, "):
        convert_checkpoint({"encoder.weight": torch.zeros(3)})


def test_registering_a_family_twice_is_refused(scratch_registry):
    from video3d_zoo.errors import RegistryError

    with pytest.raises(RegistryError, match="family 'resnet3d' is already registered .*video3d_zoo/models/resnet3d.py"):
        register_family(FamilySpec(**{**TOY, "name": "resnet3d"}))


def test_model_modules_are_the_family_modules():
    """Every family is registered from a module of video3d_zoo.models, imported by the package."""
    for family in list_families():
        assert family.module.startswith("video3d_zoo.models."), family
        assert family.module in sys.modules
