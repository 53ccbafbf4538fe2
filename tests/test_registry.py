"""The strict registry, the public API names, hubconf.py and the CLI's model commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import video3d_zoo
from video3d_zoo.cli.commands import main as cli_main
from video3d_zoo.errors import ConfigError, RegistryError, UnknownModelError
from video3d_zoo.models.registry import MODELS, ModelRegistry, ModelSpec

ROOT = Path(__file__).resolve().parents[1]


def test_canonical_names_and_hub_aliases():
    names = video3d_zoo.list_models()
    for expected in ["resnet3d_50", "preact_resnet3d_200", "wide_resnet3d_50", "resnext3d_101",
                     "densenet3d_121", "r2plus1d_34", "r3d_18", "mc3_18", "r2plus1d_18"]:
        assert expected in names
    assert len(names) == len(set(names))
    assert MODELS.resolve("resnext101_3d") == "resnext3d_101"
    assert MODELS.resolve("resnet50_3d") == "resnet3d_50"
    assert "resnext101_3d" not in names and "resnext101_3d" in video3d_zoo.list_models(include_aliases=True)
    assert video3d_zoo.list_models("densenet3d_*") == ["densenet3d_121", "densenet3d_169", "densenet3d_201",
                                                        "densenet3d_264"]


def test_duplicates_are_refused():
    reg = ModelRegistry()
    reg.register(ModelSpec("a", "f", builder=lambda **k: None, aliases=("b",)))
    with pytest.raises(RegistryError, match="'a' is already registered"):
        reg.register(ModelSpec("a", "f", builder=lambda **k: None))
    with pytest.raises(RegistryError, match="'b' is already registered"):
        reg.register(ModelSpec("c", "f", builder=lambda **k: None, aliases=("b",)))
    with pytest.raises(RegistryError):
        reg.register(ModelSpec("d", "f", builder=lambda **k: None, aliases=("d",)))


def test_unknown_names_suggest_similar_ones():
    with pytest.raises(UnknownModelError, match="unknown model 'resnet3d_51'.*similar") as err:
        video3d_zoo.create_model("resnet3d_51")
    assert isinstance(err.value, KeyError)
    with pytest.raises(ConfigError):
        video3d_zoo.create_model("")
    with pytest.raises(ConfigError, match=r"create_model\('resnet3d_10'\): unknown argument 'colour'.*widen_factor"):
        video3d_zoo.create_model("resnet3d_10", colour="blue")


def test_every_model_has_a_public_factory():
    for name in video3d_zoo.list_models():
        factory = getattr(video3d_zoo, name)
        assert factory.__name__ == name and name in video3d_zoo.__all__
        assert "create_model" in factory.__doc__
    model = video3d_zoo.resnet3d_10(num_classes=3, widen_factor=0.125)
    assert model.config.architecture == "resnet3d_10" and model.fc.out_features == 3


def test_tag_without_pretrained_builds_random_weights():
    model = video3d_zoo.create_model("resnet3d_10.k700_16f", num_classes=4, widen_factor=0.125)
    assert model.config.architecture == "resnet3d_10"
    with pytest.raises(ConfigError, match="give only one"):
        video3d_zoo.create_model("resnet3d_10.k700_16f", pretrained="k400_16f")


def test_hubconf_exposes_every_model_and_alias():
    entries = set(torch.hub.list(str(ROOT), trust_repo=True, verbose=False)) if False else None
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")}
    assert set(video3d_zoo.list_models(include_aliases=True)) <= entries
    assert entries >= {"resnext101_3d", "resnet50_3d", "r2plus1d_18"}


def test_torch_hub_load_local_runs_the_model():
    model = torch.hub.load(str(ROOT), "resnext101_3d", source="local", pretrained=False,
                           num_classes=5, widen_factor=0.25, trust_repo=True)
    assert model.config.architecture == "resnext3d_101"
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 8, 32, 32)).shape == (1, 5)


def test_cli_list_and_info(capsys):
    assert cli_main(["list", "resnext*"]) == 0
    assert capsys.readouterr().out.split() == ["resnext3d_101", "resnext3d_152", "resnext3d_200", "resnext3d_50"]
    assert cli_main(["info", "r3d_18", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["gmacs"] == pytest.approx(40.7, abs=0.05)
    assert info["params_millions"] == pytest.approx(33.371, abs=1e-3)
    assert cli_main(["info", "no_such_model"]) == 2
    assert "unknown model" in capsys.readouterr().err
