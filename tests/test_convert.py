"""Converters, architecture inference, strict loading and checkpoint-file errors."""

from __future__ import annotations

import pickle
from collections import OrderedDict

import pytest
import torch

import video3d_zoo
from video3d_zoo import create_model, from_pretrained, save_pretrained
from video3d_zoo.cli.commands import main as cli_main
from video3d_zoo.weights.convert import convert_checkpoint, detect_layout
from video3d_zoo.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from video3d_zoo.models.registry import family_of
from video3d_zoo.weights.checkpoint_files import read_checkpoint

from helpers import as_2017


def zoo_state(name, **kwargs):
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    return model, OrderedDict((k, v.clone()) for k, v in model.state_dict().items())


def same_outputs(a, b, frames=16, size=32):
    x = torch.randn(1, 3, frames, size, size)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


# Released 2017 configurations that have no golden case here: rebuilt from zoo models saved
# in the 2017 layout, they must come back as the same architecture with the same outputs.
RELEASED_2017 = [
    ("densenet3d_121", {}), ("densenet3d_201", {}), ("wide_resnet3d_50", {}),
    ("preact_resnet3d_200", {}), ("resnet3d_34", {"shortcut_type": "A"}), ("resnet3d_152", {}),
]


@pytest.mark.parametrize("name,kwargs", RELEASED_2017, ids=[n for n, _ in RELEASED_2017])
def test_2017_layouts_round_trip(name, kwargs):
    model, sd = zoo_state(name, **kwargs)
    ckpt = as_2017(sd)
    ckpt["arch"] = f"{family_of(name).arch_names[0]}-{name.rsplit('_', 1)[1]}"  # e.g. "preresnet-200"
    assert detect_layout(ckpt) == "kenshohara2017"
    loaded = from_pretrained(ckpt)
    assert loaded.config.architecture == name
    assert dict(loaded.config.arch_kwargs) == kwargs
    assert loaded.config.input_spec.name == "kenshohara2017"
    same_outputs(model, loaded)


def test_double_module_prefix_and_64f_hint(tmp_path):
    model, sd = zoo_state("resnext3d_101")
    ckpt = as_2017(sd)
    ckpt["state_dict"] = OrderedDict(("module." + k, v) for k, v in ckpt["state_dict"].items())
    file = tmp_path / "resnext-101-64f-kinetics.pth"
    torch.save(ckpt, file)
    loaded = from_pretrained(file)
    assert loaded.config.input_spec.frames == 64
    same_outputs(model, loaded, frames=64)


@pytest.mark.parametrize("name,kwargs,expected", [
    ("resnet3d_50", {"widen_factor": 2.0}, {"widen_factor": 2.0}),
    ("resnext3d_50", {"stem_width": 128}, {"stem_width": 128}),
    ("resnet3d_18", {"stem_kernel_t": 3}, {"stem_kernel_t": 3}),
    ("r2plus1d_34", {}, {}),
    ("densenet3d_169", {"growth_rate": 16}, {"growth_rate": 16}),
])
def test_inference_of_architecture_arguments(name, kwargs, expected):
    model, sd = zoo_state(name, num_classes=5, **kwargs)
    converted = convert_checkpoint(sd)
    assert converted.config.architecture == name
    assert dict(converted.config.arch_kwargs) == expected
    assert converted.config.num_classes == 5


def test_arch_string_disagreeing_with_tensors_is_refused():
    _, sd = zoo_state("resnet3d_18")
    with pytest.raises(CheckpointError, match="says arch='resnet-34'.*depth 18"):
        convert_checkpoint({"epoch": 1, "arch": "resnet-34", "state_dict": sd, "optimizer": {},
                            "scheduler": {}})


def test_strict_load_lists_missing_unexpected_and_mis_shaped_keys():
    _, sd = zoo_state("resnet3d_10")
    sd.pop("layer3.0.bn2.running_var")
    sd["layer9.extra.weight"] = torch.zeros(1)
    sd["layer4.0.bn1.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as err:
        from_pretrained(sd)
    message = str(err.value)
    assert "missing: layer3.0.bn2.running_var" in message
    assert "unexpected: layer9.extra.weight" in message
    assert "layer4.0.bn1.bias: checkpoint (7,) vs model (512,)" in message


def test_unrecognised_layout_is_a_clear_error():
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout"):
        from_pretrained({"encoder.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="no 'state_dict' entry"):
        from_pretrained({"epoch": 3, "arch": "resnet-18", "model": {}})


class Exploit:
    def __reduce__(self):
        return (print, ("this would have run",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_that_runs_code_is_refused(tmp_path, capsys, writer):
    file = tmp_path / "evil.pth"
    if writer == "torch.save":
        torch.save({"state_dict": Exploit()}, file)
    else:
        with open(file, "wb") as fh:
            pickle.dump({"state_dict": Exploit()}, fh)
    with pytest.raises(UnsafeCheckpointError, match=r"this file runs code when unpickled \(imports .*print\): refused"):
        from_pretrained(file)
    assert "this would have run" not in capsys.readouterr().out


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"<!DOCTYPE html><html><body>Google Drive - virus scan warning</body></html>", "HTML page"),
    (b"\x00garbage" * 10, "not a checkpoint: neither a zip archive nor a pickle"),
])
def test_bad_files(tmp_path, content, match):
    file = tmp_path / "model.pth"
    file.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        from_pretrained(file)


def test_truncated_files(tmp_path):
    model, sd = zoo_state("resnet3d_10")
    pth = tmp_path / "r.pth"
    torch.save(sd, pth)
    pth.write_bytes(pth.read_bytes()[: pth.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        from_pretrained(pth)
    out = save_pretrained(model, tmp_path / "zoo")
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="safetensors"):
        from_pretrained(out)


def test_missing_path():
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        from_pretrained("/nonexistent/model.pth")


def test_safetensors_round_trip_keeps_config_and_outputs(tmp_path):
    model = create_model("r2plus1d_18", num_classes=6, widen_factor=0.25).eval()
    model.config = model.config.replace(labels=tuple("abcdef"))
    out = save_pretrained(model, tmp_path / "folder")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    for source in (out, out / "model.safetensors"):
        loaded = from_pretrained(source)
        assert loaded.config == model.config
        same_outputs(model, loaded)
    sd, config = read_checkpoint(out / "model.safetensors")
    assert config.labels == tuple("abcdef") and "fc.weight" in sd


def test_malformed_config_json_is_reported(tmp_path):
    model = create_model("resnet3d_10", widen_factor=0.125)
    out = save_pretrained(model, tmp_path / "m")
    (out / "config.json").write_text('{"architecture": "resnet3d_10", "num_classes": "many"}')
    with pytest.raises(ConfigError, match="config.json.*num_classes"):
        from_pretrained(out)
    (out / "config.json").write_text('{"architecture": "resnet3d_10", "num_classes": 4, "colour": 1}')
    with pytest.raises(ConfigError, match="unknown field"):
        from_pretrained(out)


def test_create_model_from_local_path_new_head_and_gray_stem(tmp_path):
    model, sd = zoo_state("resnet3d_18")
    file = tmp_path / "r3d18.pth"
    torch.save({"epoch": 1, "arch": "resnet-18", "state_dict": sd, "optimizer": {}, "scheduler": {}}, file)
    tuned = create_model("resnet3d_18", pretrained=str(file), num_classes=10)
    assert tuned.fc.out_features == 10 and tuned.config.num_classes == 10
    torch.testing.assert_close(tuned.layer4[1].conv2.weight, model.layer4[1].conv2.weight)
    gray = create_model("resnet3d_18", pretrained=str(file), in_chans=1)
    clip = torch.randn(1, 1, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(gray(clip), model(clip.expand(-1, 3, -1, -1, -1)), rtol=1e-4, atol=1e-4)
    with pytest.raises(CheckpointError, match="holds a resnet3d_18 checkpoint, not resnet3d_34"):
        create_model("resnet3d_34", pretrained=str(file))


def test_pretrained_load_is_not_randomly_initialised(tmp_path, monkeypatch):
    model, sd = zoo_state("resnet3d_10")
    calls = []
    monkeypatch.setattr(torch.nn.init, "kaiming_normal_", lambda *a, **k: calls.append(1))
    loaded = from_pretrained(sd)
    assert not calls
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    assert all(b.device.type == "cpu" for b in loaded.buffers())


def test_cli_convert(tmp_path, capsys):
    _, sd = zoo_state("densenet3d_121")
    src = tmp_path / "densenet-121-kinetics.pth"
    torch.save(as_2017(sd), src)
    assert cli_main(["convert", str(src), "-o", str(tmp_path / "out")]) == 0
    assert "densenet3d_121" in capsys.readouterr().out
    loaded = video3d_zoo.from_pretrained(tmp_path / "out")
    assert loaded.config.input_spec.value_scale == 255.0
    assert cli_main(["convert", str(tmp_path / "missing.pth"), "-o", str(tmp_path / "x")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
