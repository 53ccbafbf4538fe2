"""One way to name a model: the resolver's rules, its Hub references, and every entry point using it."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

import video3d_zoo
from video3d_zoo.cli import commands as cli
from videos import write_video
from video3d_zoo.errors import CheckpointError, ConfigError, IntegrityError, UnknownModelError, Video3DZooError
from video3d_zoo.api import load_model
from video3d_zoo.weights.resolve import CHECKPOINT_SUFFIXES, parse_model_ref
from video3d_zoo.weights.loading import fetch_converted, from_pretrained, save_pretrained


PACKAGE = Path(video3d_zoo.__file__).resolve().parent


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=5)
    return model, save_pretrained(model, tmp_path_factory.mktemp("tiny") / "tiny_folder")


# ---------------------------------------------------------------- parsing rules
@pytest.mark.parametrize("text,kind,name,tag", [
    ("resnet3d_50", "name", "resnet3d_50", None),
    ("resnet3d_10.synthetic_motion", "name", "resnet3d_10", "synthetic_motion"),
    ("resnext101_3d", "name", "resnext3d_101", None),          # torch.hub alias
    ("resnext101_3d.kinetics", "name", "resnext3d_101", "kinetics"),
    ("hf-hub:org/repo", "hf-hub", None, None),
    ("hf-hub:org/repo@v1.0", "hf-hub", None, None),
    ("./resnet3d_50", "path", None, None),                     # explicit path beats the name
    ("weights/r3d50_K_200ep.pth", "path", None, None),
    ("r3d50_K_200ep.pth", "path", None, None),
])
def test_parse_model_ref_rules(text, kind, name, tag):
    ref = parse_model_ref(text)
    assert (ref.kind, ref.name, ref.tag) == (kind, name, tag)


def test_parse_hub_revision_and_bad_forms():
    ref = parse_model_ref("hf-hub:org/repo@abc123")
    assert (ref.repo_id, ref.revision) == ("org/repo", "abc123")
    for bad in ("hf-hub:", "hf-hub:org", "hf-hub:org/repo/extra", "hf-hub:org/repo@", "hf-hub:/repo"):
        with pytest.raises(ConfigError, match="hf-hub:ORG/REPO"):
            parse_model_ref(bad)


def test_unknown_name_lists_similar_names():
    with pytest.raises(UnknownModelError, match="similar"):
        parse_model_ref("resnet3d_51")
    with pytest.raises(ConfigError):
        parse_model_ref("   ")


@pytest.mark.parametrize("suffix", CHECKPOINT_SUFFIXES)
def test_a_missing_checkpoint_is_missing_in_every_entry_point(suffix):
    """create_model(pretrained=) once read "missing.ckpt" as model 'missing' with tag 'ckpt'."""
    name = "missing" + suffix.upper() if suffix == ".bin" else "missing" + suffix
    for call in (lambda: video3d_zoo.create_model("resnet3d_10", pretrained=name),
                 lambda: video3d_zoo.create_model("resnet3d_10", checkpoint_path=name),
                 lambda: video3d_zoo.resnet3d_10(pretrained=name),
                 lambda: load_model(name), lambda: from_pretrained(name)):
        with pytest.raises(CheckpointError, match=f"^{re.escape(name)}: no such checkpoint file or folder$"):
            call()
    with pytest.raises(ConfigError, match="is a checkpoint path, not a model name"):
        video3d_zoo.create_model(name)


def test_checkpoint_suffixes_are_listed_once():
    """One list (weights/resolve.py) serves the parser, the importer's folder search and every loader."""
    listed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                values = {getattr(e, "value", None) for e in node.elts}
                if {".pth", ".pt", ".safetensors", ".ckpt"} & values:
                    listed.append(f"{path.relative_to(PACKAGE).as_posix()}:{node.lineno}")
    assert len(listed) == 1 and listed[0].startswith("weights/resolve.py:"), listed


def test_missing_path_is_an_error_not_a_name(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nothing_here")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model("missing/resnet3d_50")


# ---------------------------------------------------------------- loading
def test_name_with_tag_loads_those_weights_not_random():
    model = load_model("resnet3d_10.synthetic_motion")
    expected = fetch_converted("resnet3d_10", "synthetic_motion").state_dict
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    assert model.config.tag == "synthetic_motion" and not model.training


def test_bare_name_random_only_when_asked():
    random = load_model("resnet3d_10", pretrained=False, widen_factor=0.125, num_classes=3)
    assert random.config.num_classes == 3
    with pytest.raises(ConfigError, match="drop the tag"):
        load_model("resnet3d_10.synthetic_motion", pretrained=False)


def test_path_and_folder_named_like_a_model(tiny_folder, tmp_path, monkeypatch):
    model, folder = tiny_folder
    assert _same_weights(load_model(folder), model)
    assert _same_weights(load_model(str(folder / "model.safetensors")), model)
    monkeypatch.chdir(folder.parent)
    assert parse_model_ref("tiny_folder").kind == "path"      # not a registered name: its folder
    with pytest.raises(ConfigError, match="its config says what to build"):
        load_model(folder, widen_factor=0.5)


# ---------------------------------------------------------------- hf-hub references
def _serve_folder(hub, folder, repo="org/tiny"):
    for name in ("config.json", "model.safetensors"):
        commit = hub.add_file(repo, name, (folder / name).read_bytes())
    return commit


def test_hf_hub_reference_in_every_python_entry_point(hub_env, tiny_folder):
    model, folder = tiny_folder
    commit = _serve_folder(hub_env, folder)
    for loaded in (load_model("hf-hub:org/tiny"), from_pretrained("hf-hub:org/tiny"),
                   video3d_zoo.create_model("hf-hub:org/tiny"), load_model(f"hf-hub:org/tiny@{commit}")):
        assert _same_weights(loaded, model)
        assert loaded.config.source.startswith("hf-hub:org/tiny")


def test_hf_hub_offline_uses_the_cache(hub_env, tiny_folder, monkeypatch):
    model, folder = tiny_folder
    _serve_folder(hub_env, folder)
    load_model("hf-hub:org/tiny")
    served = hub_env.count
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _same_weights(load_model("hf-hub:org/tiny"), model)
    assert hub_env.count == served
    with pytest.raises(Video3DZooError, match="offline"):
        load_model("hf-hub:org/other")


def test_hf_hub_tampered_file_refused_and_cache_left_clean(hub_env, tiny_folder, tmp_path):
    _model, folder = tiny_folder
    _serve_folder(hub_env, folder)
    hub_env.tamper = True
    with pytest.raises(IntegrityError):
        load_model("hf-hub:org/tiny")
    weights_sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    kept = [b.name for b in (tmp_path / "hf_home").rglob("blobs/*")]
    assert weights_sha not in kept  # the refused file is not left in the cache
    hub_env.tamper = False
    assert _same_weights(load_model("hf-hub:org/tiny"), tiny_folder[0])  # and a clean retry works


# ---------------------------------------------------------------- every CLI command uses the resolver
class _Sentinel(Video3DZooError):
    pass


@pytest.mark.parametrize("argv,ref", [
    (["extract", "v.mp4", "-o", "OUT", "--model", "resnet3d_10.synthetic_motion"], "resnet3d_10.synthetic_motion"),
    (["extract", "v.mp4", "-o", "OUT", "--weights", "some/folder"], "some/folder"),
    (["classify", "v.mp4", "--model", "hf-hub:org/repo"], "hf-hub:org/repo"),
    (["export", "resnet3d_10.synthetic_motion", "-o", "m.onnx"], "resnet3d_10.synthetic_motion"),
    (["eval", "--model", "resnet3d_10.synthetic_motion", "DATA", "--split", "all"], "resnet3d_10.synthetic_motion"),
])
def test_every_command_resolves_models_the_same_way(monkeypatch, capsys, tmp_path, argv, ref):
    (tmp_path / "DATA" / "a").mkdir(parents=True)
    write_video(tmp_path / "DATA" / "a" / "v.mp4", 4, 32, 24)
    monkeypatch.chdir(tmp_path)
    seen = []

    def recording(text, **kwargs):
        seen.append(text)
        raise _Sentinel("stop here")

    monkeypatch.setattr("video3d_zoo.api.load_model", recording)
    assert cli.main(argv) == 2
    assert seen == [ref]
    assert "stop here" in capsys.readouterr().err


# ---------------------------------------------------------------- the error boundary
def test_user_errors_are_one_line_exit_2(capsys):
    assert cli.main(["classify", "v.mp4", "--model", "resnet3d_10.synthetic_motion", "--device", "cuda:7"]) == 2 \
        or torch.cuda.device_count() > 7
    err = capsys.readouterr().err
    assert "Traceback" not in err and "device 'cuda:7'" in err
    with pytest.raises(SystemExit) as stop:
        cli.main(["classify", "v.mp4", "--model", "x", "--batch-size", "0"])
    assert stop.value.code == 2 and "expected an integer >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["classify", "v.mp4", "--model", "x", "--fps", "inf"])
    assert "finite" in capsys.readouterr().err


def test_internal_errors_keep_the_traceback_and_say_bug(monkeypatch, capsys):
    def broken(args):
        raise KeyError("oops")

    monkeypatch.setitem(cli._COMMANDS, "list", broken)
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "this is a bug" in err


def test_a_closed_stdout_is_not_a_bug(monkeypatch, capsys):
    def closed(args):  # what printing into ``| head`` raises once head has exited
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setitem(cli._COMMANDS, "list", closed)
    assert cli.main(["list"]) == 141
    assert "bug" not in capsys.readouterr().err


def test_unwritable_output_is_a_user_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = cli.main(["convert", str(tmp_path / "missing.pth"), "-o", str(blocker / "out")])
    assert code == 2 and "Traceback" not in capsys.readouterr().err


def test_uint8_input_gets_a_dtype_hint():
    model = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=2)
    with pytest.raises(video3d_zoo.errors.InputShapeError, match="ClipPreprocessor"):
        model(torch.zeros(1, 3, 4, 32, 32, dtype=torch.uint8))


def test_json_of_a_resolved_model_config_is_valid():
    model = load_model("resnet3d_10.synthetic_motion")
    json.loads(model.config.to_json())
