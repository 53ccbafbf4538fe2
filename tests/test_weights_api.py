"""The weights API of issue 22: get_weights (meta + transforms), list_models(pretrained=True), timm's keys
in pretrained_cfg, release files that keep their manifest identity, name suggestions, the pretrained table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import ROOT

import video3d_zoo
from video3d_zoo import ClipPreprocessor, get_weights
from video3d_zoo.cli import commands as cli
from video3d_zoo.errors import ConfigError, InputShapeError, UnknownModelError, WeightsNotFoundError
from video3d_zoo.models.config import INPUT_PRESETS
from video3d_zoo.weights.labels import load_label_set
from video3d_zoo.weights.manifest import MANIFEST_ENV, dumps, load_manifest

TOY = "resnet3d_10.synthetic_motion"


# -- the weights object -----------------------------------------------------------------------------------
def test_get_weights_meta_is_the_manifest_entry():
    entry = load_manifest().get("r3d_18", "k400_16f")
    weights = get_weights("r3d_18")  # the model's default weights
    assert weights.name == "r3d_18.k400_16f" and weights == get_weights("r3d_18.kinetics")  # alias words too
    meta = weights.meta
    assert meta["categories"] == list(load_label_set("kinetics400"))
    assert meta["params"] == entry.params and meta["gmacs"] == entry.gmacs
    assert meta["accuracy"] == [a.to_dict() for a in entry.accuracy]
    assert {"metric", "level", "crops", "clips", "source"} <= set(meta["accuracy"][0])  # the protocol
    assert meta["input_spec"] == INPUT_PRESETS["torchvision"].to_dict()
    assert meta["license"] == entry.license and meta["source"]["upstream"]["url"] == entry.upstream.url
    with pytest.raises(WeightsNotFoundError, match="no weights 'nope'"):
        get_weights("r3d_18.nope")
    with pytest.raises(UnknownModelError, match="similar"):
        get_weights("r3d_19.k400_16f")
    with pytest.raises(ConfigError, match="get_weights takes"):
        get_weights(3)


def test_transforms_take_either_layout_and_equal_the_jobs_preprocessing():
    weights = get_weights(TOY)
    transform = weights.transforms()
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (16, 60, 80, 3), dtype=torch.uint8, generator=gen)  # PyAV / numpy: THWC
    clip = transform(frames)
    spec = weights.config.input_spec
    assert clip.shape == (3, 16, spec.crop_size, spec.crop_size) and clip.dtype == torch.float32
    assert torch.equal(clip, ClipPreprocessor(spec)(frames))  # the class extraction and classification use
    assert torch.equal(transform(frames.permute(0, 3, 1, 2)), clip)  # torchcodec: TCHW
    assert torch.equal(transform(frames.numpy()), clip)
    assert transform(frames[None]).shape == (1, 3, 16, spec.crop_size, spec.crop_size)  # a batch
    assert weights.transforms(crop_size=40)(frames).shape[-1] == 40


@pytest.mark.parametrize("frames, message", [
    (torch.zeros(4, 3, 8, 3, dtype=torch.uint8), "ambiguous.*layout='THWC'"),
    (torch.zeros(4, 8, 8, 4, dtype=torch.uint8), "no colour dimension of size 3"),
    (torch.zeros(8, 8, 3, dtype=torch.uint8), "got 3 dimensions"),
    (torch.zeros(4, 8, 8, 3), "got dtype torch.float32.*as decoded"),
    ("frames", "got str"),
])
def test_transforms_refuse_what_they_cannot_read(frames, message):
    with pytest.raises(InputShapeError, match=message):
        get_weights(TOY).transforms()(frames)


def test_an_ambiguous_shape_reads_with_its_layout_named():
    frames = torch.randint(0, 256, (4, 3, 48, 3), dtype=torch.uint8)
    transform = get_weights(TOY).transforms(crop_size=3, resize=None)
    assert transform(frames, layout="TCHW").shape == (3, 4, 3, 3)
    with pytest.raises(InputShapeError, match="layout must be one of"):
        transform(frames, layout="CTHW")


def test_get_weights_of_a_model():
    model = video3d_zoo.create_model("resnet3d_10", pretrained="synthetic_motion")
    assert get_weights(model) == get_weights(TOY)
    fresh_head = video3d_zoo.create_model("resnet3d_10", pretrained="synthetic_motion", num_classes=3)
    other = get_weights(fresh_head)  # a new head: the entry's categories and accuracy are not its own
    assert other.entry is None and other.meta["categories"] is None and other.meta["accuracy"] == []
    random = get_weights(video3d_zoo.create_model("resnet3d_10", widen_factor=0.125))
    assert random.name == "resnet3d_10" and random.meta["input_spec"] == INPUT_PRESETS["kenshohara2020"].to_dict()
    with pytest.raises(ConfigError, match="from_pretrained"):
        random.get_model()
    assert get_weights(TOY).get_model().config.tag == "synthetic_motion"


def test_list_models_pretrained_as_timm():
    names = video3d_zoo.list_models(pretrained=True)
    assert names == load_manifest().list_pretrained() and TOY in names
    assert video3d_zoo.list_models("resnet3d_50", pretrained=True) == video3d_zoo.list_pretrained("resnet3d_50.*")
    assert video3d_zoo.list_models("*_18", pretrained=True, include_tags=False) == [
        "mc3_18", "r2plus1d_18", "r3d_18", "resnet3d_18"]
    assert video3d_zoo.list_models("resnext3d_*") == ["resnext3d_101", "resnext3d_152", "resnext3d_200",
                                                      "resnext3d_50"]
    with pytest.raises(ConfigError, match="pretrained=True"):
        video3d_zoo.list_models(include_tags=True)


# -- timm's pretrained_cfg keys ------------------------------------------------------------------------------
def test_pretrained_cfg_has_timms_keys_on_timms_scale():
    model = video3d_zoo.create_model("resnet3d_10", pretrained="synthetic_motion")
    cfg = model.pretrained_cfg
    spec = model.config.input_spec
    assert cfg["label_names"] == list(model.config.labels)
    assert cfg["input_size"] == (3, spec.frames, spec.crop_size, spec.crop_size)
    assert cfg["interpolation"] == "bilinear" and cfg["crop_pct"] == spec.crop_size / spec.resize
    assert video3d_zoo.create_model("r3d_18").pretrained_cfg["crop_pct"] == 112 / 128  # resize 128 x 171


@pytest.mark.parametrize("preset", sorted(INPUT_PRESETS))
def test_timm_mean_std_give_the_same_input(preset):
    """timm feeds (x / 255 - mean) / std: with the 0-1 keys that is exactly the zoo's normalisation."""
    spec = INPUT_PRESETS[preset]
    cfg = spec.timm_data_config()
    frames = torch.randint(0, 256, (2, spec.crop_size, spec.crop_size, 3), dtype=torch.uint8)
    zoo = ClipPreprocessor(spec, resize=None)(frames)
    mean, std = torch.tensor(cfg["mean"]).view(3, 1, 1, 1), torch.tensor(cfg["std"]).view(3, 1, 1, 1)
    timm_like = (frames.permute(3, 0, 1, 2).float() / 255 - mean) / std
    torch.testing.assert_close(timm_like, zoo, rtol=1e-5, atol=1e-4)
    assert all(0 <= m <= 1 for m in cfg["mean"])


# -- release files keep their identity ---------------------------------------------------------------------
@pytest.fixture
def release_file(tmp_path, monkeypatch):
    """A tiny r3d18_K_200ep.pth (2020 layout) and a private manifest whose entry has that width."""
    torch.manual_seed(0)
    model = video3d_zoo.create_model("resnet3d_18", num_classes=700, widen_factor=0.125)
    data = json.loads((ROOT / "weights_manifest.json").read_text())
    entry = next(e for e in data["entries"] if e["model"] == "resnet3d_18" and e["tag"] == "k700_16f")
    entry["arch_kwargs"] = {"widen_factor": 0.125}
    (tmp_path / "m.json").write_text(dumps(data))
    monkeypatch.setenv(MANIFEST_ENV, str(tmp_path / "m.json"))
    checkpoint = {"epoch": 200, "arch": "resnet-18", "state_dict": model.state_dict(), "optimizer": {}}
    path = tmp_path / "r3d18_K_200ep.pth"
    torch.save(checkpoint, path)
    return path, checkpoint


def test_a_release_file_gets_its_entry_names_tag_and_spec(release_file, tmp_path, capsys):
    path, checkpoint = release_file
    model = video3d_zoo.from_pretrained(path)
    assert model.config.labels == load_label_set("kinetics700") and model.config.tag == "k700_16f"
    assert model.pretrained_cfg["weights"] == "resnet3d_18.k700_16f" and get_weights(model).name == model.pretrained_cfg["weights"]
    assert cli.main(["convert", str(path), "-o", str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["labels"] == list(load_label_set("kinetics700")) and written["tag"] == "k700_16f"
    # renamed, or named right but holding other tensors: only what the tensors say
    renamed = tmp_path / "mine.pth"
    renamed.write_bytes(path.read_bytes())
    assert video3d_zoo.from_pretrained(renamed).config.labels is None
    checkpoint["state_dict"] = video3d_zoo.create_model("resnet3d_18", num_classes=5, widen_factor=0.125).state_dict()
    (tmp_path / "other").mkdir()
    torch.save(checkpoint, tmp_path / "other" / path.name)
    other = video3d_zoo.from_pretrained(tmp_path / "other" / path.name)
    assert other.config.labels is None and other.config.tag is None


# -- names and tables ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("typed, first", [("resnet3d_19", "resnet3d_18"), ("resnet50_3dd", "resnet50_3d"),
                                          ("r2plus1d18", "r2plus1d_18"), ("densenet_121", "densenet3d_121")])
def test_suggestions_rank_the_closest_name_first(typed, first):
    with pytest.raises(UnknownModelError) as info:
        video3d_zoo.create_model(typed)
    similar = str(info.value).split("similar: ")[1]
    assert similar.startswith(f"['{first}'"), similar
    assert "preact" not in similar.split(",")[0]


def test_pretrained_table(capsys):
    assert cli.main(["list", "--pretrained", "r3d_*"]) == 0
    table = capsys.readouterr().out
    header, row = table.splitlines()[:2]
    assert header.split() == ["model.tag", "params", "GMACs", "frames", "data", "set", "top-1", "weights"]
    assert row.split() == ["r3d_18.k400_16f", "*", "33.4M", "40.7", "16", "Kinetics-400", "63.2", "downloadable"]
    assert cli.main(["list-pretrained", TOY]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "embedded"
    assert cli.main(["list-pretrained", "resnet3d_50.k700*"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-2:] == ["import", "needed"]
    assert cli.main(["list-pretrained", "r3d_*", "--names"]) == 0
    assert capsys.readouterr().out.split() == ["r3d_18.k400_16f"]
