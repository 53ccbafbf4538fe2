"""Original checkpoints imported once, then loaded by name everywhere, offline.

Originals are fabricated here under their released file names, in their released layouts, with
random weights: one full-width 2017 file (DenseNet-121, the smallest 2017 release, 47 MB) and one
full-width torchvision file (mc3_18, 47 MB), built from meta-device shapes; everything else uses
tiny widths with a private copy of the manifest.  Hub cases run against tests/hub_server.py on
127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch

from helpers import ROOT, as_2017
from videos import write_video

import video3d_zoo
from video3d_zoo.cli import commands as cli
from video3d_zoo.models.config import ModelConfig
from video3d_zoo.errors import IntegrityError, Video3DZooError, WeightsNotFoundError
from video3d_zoo.weights.importer import ALREADY, INSTALLED, REFUSED, import_weights
from video3d_zoo.weights.installed import HOME_ENV, read_record, weights_home
from video3d_zoo.weights.labels import load_label_set
from video3d_zoo.weights.manifest import MANIFEST_ENV, dumps, load_manifest
from video3d_zoo.weights.loading import WeightsUnavailableError, build_empty, from_pretrained, save_pretrained

DENSENET = "densenet-121-kinetics.pth"
DENSENET_ENTRY = "densenet3d_121.k400_16f"


# -- fabricating originals ---------------------------------------------------------------------------
def fabricate(arch, num_classes, seed=0, **kwargs):
    """Random tensors with the shapes of ``arch`` (taken from a meta-device build, nothing initialised)."""
    model = build_empty(ModelConfig(architecture=arch, num_classes=num_classes, arch_kwargs=kwargs))
    gen = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for key, meta in model.state_dict().items():
        shape = tuple(meta.shape)
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.zeros((), dtype=torch.long)
            continue
        t = torch.empty(shape)
        if key.endswith("running_var"):
            t.uniform_(0.5, 1.5, generator=gen)
        elif key.endswith("running_mean") or key.endswith("bias"):
            t.normal_(0.0, 0.1, generator=gen)
        elif key.endswith("weight") and len(shape) == 1:
            t.uniform_(0.4, 0.8, generator=gen)
        else:
            t.normal_(0.0, math.sqrt(2.0 / max(1, math.prod(shape[1:]))), generator=gen)
        sd[key] = t
    return sd


def as_2020(sd, arch):
    return {"epoch": 200, "arch": arch, "state_dict": sd, "optimizer": {}, "scheduler": {}}


_TV = ((r"^conv1\.", "stem.0."), (r"^bn1\.", "stem.1."), (r"\.conv([12])\.", r".conv\1.0."),
       (r"\.bn([12])\.", r".conv\1.1."))


def as_torchvision(sd):
    """Zoo r3d/mc3 layout -> torchvision's bare state dict (stem.*, conv + BN Sequentials)."""
    out = OrderedDict()
    for key, value in sd.items():
        for pattern, repl in _TV:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def logits(model, x):
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """This module's own weights folder (VIDEO3D_ZOO_HOME), kept across its tests."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("zoo_home")
        mp.setenv(HOME_ENV, str(path))
        mp.delenv(MANIFEST_ENV, raising=False)
        yield path


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    """A download folder holding the full-width 2017 DenseNet-121 original under its released name."""
    folder = tmp_path_factory.mktemp("downloads")
    torch.save(as_2017(fabricate("densenet3d_121", 400), "densenet-121", epoch=200), folder / DENSENET)
    (folder / "notes.txt").write_text("not a checkpoint")
    return folder


@pytest.fixture(scope="module")
def imported(home, downloads):
    report = import_weights([downloads])
    return report


@pytest.fixture(scope="module")
def reference(downloads):
    return from_pretrained(downloads / DENSENET)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test; huggingface_hub is offline too."""
    def refuse(self, address, *args, **kwargs):
        raise AssertionError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# -- import, then every entry point, offline -----------------------------------------------------------
def test_import_installs_verified_converted_weights(imported, downloads, home):
    (result,) = imported.results  # notes.txt is no checkpoint, so a folder search does not list it
    assert result.status == INSTALLED and result.name == DENSENET_ENTRY and imported.ok
    assert result.sha256 == hashlib.sha256((downloads / DENSENET).read_bytes()).hexdigest()
    assert result.sha256_in_manifest is False and "kept with the installed copy" in result.message
    record = read_record(DENSENET_ENTRY)
    assert record.original["sha256"] == result.sha256 and record.original["file"] == DENSENET
    assert record.path.parent == weights_home() / DENSENET_ENTRY and str(record.path).startswith(str(home))
    assert sorted(p.name for p in record.path.parent.iterdir()) == ["installed.json", record.path.name]
    assert "load them by name, offline: --model densenet3d_121.k400_16f" in imported.describe()


def test_by_name_everywhere_offline_equals_from_pretrained_of_the_original(imported, reference, no_network):
    x = torch.randn(1, 3, 16, 32, 32)
    expected = logits(reference, x)
    k400 = load_label_set("kinetics400")
    loaded = {
        "create_model": video3d_zoo.create_model("densenet3d_121", pretrained=True),
        "create_model alias": video3d_zoo.create_model("densenet121_3d", pretrained="kinetics"),
        "model.tag": video3d_zoo.create_model("densenet3d_121.k400_16f", pretrained=True),
        "factory": video3d_zoo.densenet3d_121(pretrained="kinetics400"),
        "torch.hub": torch.hub.load(str(ROOT), "densenet121_3d", source="local", pretrained=True),
        "load_model": video3d_zoo.load_model("densenet3d_121.k400_16f"),
    }
    for where, model in loaded.items():
        assert torch.equal(logits(model, x), expected), where
        assert model.config.labels == k400 and model.config.tag == "k400_16f", where
        assert model.config.source.startswith("installed:"), where
        assert not model.training, where


def test_cli_model_name_gives_the_originals_outputs_and_kinetics_names(imported, downloads, reference, tmp_path,
                                                                        capsys, no_network):
    video = tmp_path / "v.mp4"
    write_video(video, 16, 64, 48)
    outputs = {}
    for how, args in (("name", ["--model", "densenet3d_121.k400_16f"]),
                      ("original", ["--weights", str(downloads / DENSENET)])):
        out = tmp_path / how
        assert cli.main(["extract", str(video), "-o", str(out), "--layer", "logits", "--quiet", *args]) == 0
        (npz,) = out.rglob("*.npz")
        with np.load(npz) as data:
            outputs[how] = data["features"]
    capsys.readouterr()
    assert outputs["name"].shape == (1, 400) and np.array_equal(outputs["name"], outputs["original"])

    assert cli.main(["classify", str(video), "--model", "densenet3d_121", "--topk", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()[1:4]
    names = [line.split("%", 1)[1].strip() for line in printed]
    k400 = load_label_set("kinetics400")
    assert all(name in k400 for name in names), printed
    assert names[0] == k400[int(np.argmax(outputs["original"].mean(0)))]


def test_list_pretrained_says_where_each_entry_comes_from(imported, downloads, capsys):
    rows = {r.name: r for r in video3d_zoo.list_pretrained(sources=True)}
    assert rows[DENSENET_ENTRY].available == "installed"
    assert rows[DENSENET_ENTRY].installed_from == str((downloads / DENSENET).resolve())
    assert rows["resnet3d_10.synthetic_motion"].available == "embedded"
    assert rows["resnet3d_50.k700_16f"].available == "original only"
    assert "r3d50_K_200ep.pth" in rows["resnet3d_50.k700_16f"].original
    assert cli.main(["list-pretrained", "densenet*", "--names"]) == 0  # the plain list of names
    assert capsys.readouterr().out.split() == ["densenet3d_121.k400_16f", "densenet3d_201.k400_16f"]
    assert cli.main(["list-pretrained", "densenet*", "--verbose"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"densenet3d_121.k400_16f \(default\) +installed .*\(from .*densenet-121-kinetics.pth\)", text)
    assert re.search(r"densenet3d_201.k400_16f \(default\) +original only +densenet-201-kinetics.pth", text)
    assert cli.main(["list-pretrained", "densenet3d_121*", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["available"] == "installed" and row["hub"] is None


def test_importing_again_changes_nothing(imported, downloads, capsys):
    record = read_record(DENSENET_ENTRY)
    before = (record.path.stat().st_mtime_ns, record.path.stat().st_ino)
    assert cli.main(["import", str(downloads / DENSENET)]) == 0
    assert "already installed" in capsys.readouterr().out
    after = read_record(DENSENET_ENTRY)
    assert (after.path.stat().st_mtime_ns, after.path.stat().st_ino) == before
    assert sorted(p.name for p in after.path.parent.iterdir()) == ["installed.json", after.path.name]


# -- refusals ------------------------------------------------------------------------------------------
def test_a_wrongly_named_file_is_refused_naming_both(imported, downloads, tmp_path):
    wrong = tmp_path / "densenet-201-kinetics.pth"
    os.link(downloads / DENSENET, wrong)
    tiny = tmp_path / "resnet-18-kinetics.pth"  # a tiny ResNet-18 under the 2017 ResNet-18's name
    torch.save(as_2017(fabricate("resnet3d_18", 400, shortcut_type="A", widen_factor=0.125), "resnet-18"), tiny)
    report = import_weights([wrong, tiny])
    assert [r.status for r in report.results] == [REFUSED, REFUSED] and not report.ok
    text = report.results[0].message
    assert "densenet-201-kinetics.pth is named after densenet3d_201.k400_16f" in text
    assert "its tensors are densenet3d_121" in text
    assert "fit densenet3d_121.k400_16f (released as densenet-121-kinetics.pth)" in text
    assert "arguments {'shortcut_type': 'A', 'widen_factor': 0.125}" in report.results[1].message
    assert read_record("densenet3d_201.k400_16f") is None and read_record("resnet3d_18.k400_16f") is None
    with pytest.raises(WeightsUnavailableError):
        video3d_zoo.create_model("densenet3d_201", pretrained=True)


def test_hash_mismatches_are_refused(home, tmp_path, monkeypatch):
    # torchvision's file names carry the start of the file's sha256: enforced
    renamed = tmp_path / "mc3_18-a90a0ba3.pth"
    torch.save(as_torchvision(fabricate("mc3_18", 400, widen_factor=0.125)), renamed)
    # a manifest sha256 that the file does not have
    manifest = json.loads((ROOT / "weights_manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["upstream"] and e["upstream"]["file"] == "r3d18_K_200ep.pth")
    entry["upstream"]["sha256"] = "0" * 64
    path = tmp_path / "m.json"
    path.write_text(dumps(manifest))
    r3d = tmp_path / "r3d18_K_200ep.pth"
    torch.save(as_2020(fabricate("resnet3d_18", 700, widen_factor=0.125), "resnet-18"), r3d)
    html = tmp_path / "resnet-50-kinetics.pth"  # what Google Drive sends instead of a large file
    html.write_bytes(b"<!DOCTYPE html><html><body>Google Drive - Virus scan warning</body></html>")
    report = import_weights([renamed, r3d, html], manifest=load_manifest(path))
    assert [r.status for r in report.results] == [REFUSED] * 3
    assert "must have a sha256 starting with a90a0ba3" in report.results[0].message
    assert f"the manifest expects {'0' * 64}" in report.results[1].message
    assert "HTML page" in report.results[2].message
    assert not [p for p in weights_home().glob("*") if p.name.startswith(("mc3_18", "resnet3d_18", "resnet3d_50"))]


def test_not_a_release_points_to_convert(home, tmp_path, capsys):
    mine = tmp_path / "my_finetune.pth"
    torch.save(fabricate("resnet3d_10", 3, widen_factor=0.125), mine)
    assert cli.main(["import", str(mine), str(tmp_path / "missing.pth")]) == 1
    out = capsys.readouterr().out
    assert "not a release" in out and f"video3d-zoo convert {mine} -o ./my_finetune" in out
    assert "no such file or folder" in out


def test_a_file_that_is_no_checkpoint_is_told_so_not_sent_to_convert(home, tmp_path, capsys):
    junk = tmp_path / "holiday.pth"
    junk.write_bytes(bytes(range(256)) * 20)
    assert cli.main(["import", str(junk)]) == 1
    out = capsys.readouterr().out
    assert "refused" in out and f"{junk}: not a checkpoint" in out
    assert "not a release" not in out and "video3d-zoo convert" not in out


def test_torchvision_original_with_its_hash_in_its_name_imports(home, tmp_path, monkeypatch, no_network):
    """The full-width mc3_18 file, named as torch.hub names it (sha256 prefix), in a manifest that expects it."""
    sd = as_torchvision(fabricate("mc3_18", 400, seed=3))
    tmp = tmp_path / "mc3.tmp"
    torch.save(sd, tmp)
    prefix = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    original = tmp.rename(tmp_path / f"mc3_18-{prefix}.pth")
    manifest = json.loads((ROOT / "weights_manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["model"] == "mc3_18")
    entry["upstream"].update(file=original.name, sha256_prefix=prefix)
    path = tmp_path / "m.json"
    path.write_text(dumps(manifest))
    monkeypatch.setenv(MANIFEST_ENV, str(path))
    (result,) = import_weights([original]).results
    assert result.status == INSTALLED and result.sha256_in_manifest is False
    assert read_record("mc3_18.k400_16f").original["sha256"].startswith(prefix)
    x = torch.randn(1, 3, 8, 32, 32)
    model = video3d_zoo.mc3_18(pretrained=True)
    assert torch.equal(logits(model, x), logits(from_pretrained(original), x))
    assert model.config.labels == load_label_set("kinetics400")


# -- the 2020 layout, tiny, with a private manifest ------------------------------------------------------
@pytest.fixture
def tiny_2020(home, tmp_path, monkeypatch):
    """A tiny r3d18_K_200ep.pth and a manifest whose resnet3d_18.k700_16f entry has its width."""
    sd = fabricate("resnet3d_18", 700, seed=1, widen_factor=0.125)
    original = tmp_path / "dl" / "r3d18_K_200ep.pth"
    original.parent.mkdir()
    torch.save(as_2020(sd, "resnet-18"), original)
    manifest = json.loads((ROOT / "weights_manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["model"] == "resnet3d_18" and e["tag"] == "k700_16f")
    entry["arch_kwargs"] = {"widen_factor": 0.125}
    entry["params"] = sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k)
    path = tmp_path / "weights_manifest.json"
    path.write_text(dumps(manifest))
    monkeypatch.setenv(MANIFEST_ENV, str(path))
    yield original
    import shutil

    shutil.rmtree(weights_home() / "resnet3d_18.k700_16f", ignore_errors=True)


def test_2020_original_by_name_and_a_damaged_copy_is_refused(tiny_2020, no_network):
    (result,) = import_weights([tiny_2020.parent]).results
    assert result.status == INSTALLED, result.message
    x = torch.randn(2, 3, 8, 32, 32)
    expected = logits(from_pretrained(tiny_2020), x)
    for model in (video3d_zoo.create_model("resnet3d_18", pretrained="kinetics700"),
                  video3d_zoo.resnet3d_18(pretrained=True), video3d_zoo.load_model("resnet18_3d.k700_16f")):
        assert torch.equal(logits(model, x), expected)
        assert model.config.labels == load_label_set("kinetics700")
    record = read_record("resnet3d_18.k700_16f")
    data = bytearray(record.path.read_bytes())
    data[-1] ^= 0xFF
    record.path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 mismatch.*import the original again"):
        video3d_zoo.create_model("resnet3d_18", pretrained=True)
    (again,) = import_weights([tiny_2020]).results  # a damaged copy is replaced by importing again
    assert again.status == INSTALLED
    assert torch.equal(logits(video3d_zoo.create_model("resnet3d_18", pretrained=True), x), expected)


def test_two_processes_importing_the_same_file_at_once(tiny_2020):
    env = {**os.environ, "PYTHONPATH": str(ROOT), HOME_ENV: os.environ[HOME_ENV],
           MANIFEST_ENV: os.environ[MANIFEST_ENV]}
    cmd = [sys.executable, "-m", "video3d_zoo", "import", str(tiny_2020), "--json"]
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    statuses = sorted(json.loads(o[0])["results"][0]["status"] for o in outs)
    assert statuses in ([ALREADY, INSTALLED], [INSTALLED, INSTALLED])
    folder = weights_home() / "resnet3d_18.k700_16f"
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 2 and "installed.json" in files  # one weights file, no temporaries left
    assert video3d_zoo.create_model("resnet3d_18", pretrained=True).config.tag == "k700_16f"


# -- nothing available: the error says how, in the user's language ---------------------------------------
def test_unavailable_weights_explain_the_three_ways(home, tmp_path, capsys):
    with pytest.raises(WeightsUnavailableError) as info:
        video3d_zoo.create_model("resnet3d_50", pretrained=True)
    assert isinstance(info.value, WeightsNotFoundError)
    text = str(info.value)
    assert "Looked for them, in this order: embedded in the package (no), installed in" in text
    assert "video3d_zoo.import_weights(['r3d50_K_200ep.pth'])" in text
    assert "create_model('resnet3d_50', pretrained='./resnet3d_50.k700_16f')" in text
    assert 'create_model("hf-hub:ORG/REPO")' in text
    assert cli.main(["classify", str(tmp_path / "v.mp4"), "--model", "resnet3d_50"]) == 2
    err = capsys.readouterr().err
    assert "video3d-zoo classify: error: resnet3d_50.k700_16f: no weights to load" in err
    assert "video3d-zoo import r3d50_K_200ep.pth" in err and "--model hf-hub:ORG/REPO" in err
    assert "import_weights" not in err and "Traceback" not in err


def test_resnet3d_10_has_no_default_the_toy_is_reached_by_its_tag():
    with pytest.raises(WeightsNotFoundError, match="no default pretrained weights.*synthetic_motion"):
        video3d_zoo.resnet3d_10(pretrained=True)
    assert video3d_zoo.load_model("resnet3d_10.synthetic_motion").config.num_classes == 8
    from video3d_zoo.jobs.demo import DEMO_WEIGHTS

    assert DEMO_WEIGHTS == "resnet3d_10.synthetic_motion"


# -- Hub repositories by id: cache, offline, revision pinning, tampering ----------------------------------
def _serve(hub, model, tmp_path, name):
    folder = save_pretrained(model, tmp_path / name)
    for file in ("config.json", "model.safetensors"):
        commit = hub.add_file("org/tiny", file, (folder / file).read_bytes())
    return commit


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_hf_hub_revisions_cache_offline_and_tampering(hub_env, tmp_path, monkeypatch, capsys):
    models = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        models.append(video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=4))
    first = _serve(hub_env, models[0], tmp_path, "a")
    second = _serve(hub_env, models[1], tmp_path, "b")  # main moves on
    assert _same(video3d_zoo.create_model(f"hf-hub:org/tiny@{first}"), models[0])  # pinned: the old weights
    assert _same(video3d_zoo.from_pretrained("hf-hub:org/tiny"), models[1])       # main: the new ones
    gets = [r for r in hub_env.requests if r[0] == "GET"]
    assert _same(video3d_zoo.load_model(f"hf-hub:org/tiny@{first}"), models[0])
    assert [r for r in hub_env.requests if r[0] == "GET"] == gets  # the cache, no second download
    video = tmp_path / "v.mp4"
    write_video(video, 8, 64, 48)
    assert cli.main(["classify", str(video), "--model", f"hf-hub:org/tiny@{second}", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["top"]) == 4  # by id on the command line too

    hub_env.tamper = True  # a new commit whose bytes differ from what the Hub says of them
    torch.manual_seed(5)
    _serve(hub_env, models[2], tmp_path, "c")
    with pytest.raises(IntegrityError):
        video3d_zoo.load_model("hf-hub:org/tiny")
    blobs = [b.name for b in (tmp_path / "hf_home").rglob("blobs/*")]
    bad = hashlib.sha256((tmp_path / "c" / "model.safetensors").read_bytes()).hexdigest()
    assert bad not in blobs  # the refused file left the cache
    hub_env.tamper = False

    served = hub_env.count
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _same(video3d_zoo.load_model(f"hf-hub:org/tiny@{first}"), models[0])
    assert _same(video3d_zoo.load_model(f"hf-hub:org/tiny@{second}"), models[1])
    assert hub_env.count == served  # offline: the cache only
    with pytest.raises(Video3DZooError, match="offline"):
        video3d_zoo.load_model("hf-hub:org/never-fetched")
