"""The weights manifest: the real file's content, validation errors, selection, the unpublished path."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import subprocess

import pytest
import torch
from torch import nn

from helpers import ROOT, golden_case_files, tiny_kwargs

from video3d_zoo.models.config import input_preset
from video3d_zoo.errors import ManifestError, WeightsNotFoundError
from video3d_zoo.weights.manifest import (MANIFEST_ENV, dumps, load_manifest, manifest_path, packaged_manifest_path,
                                  parse_manifest)
from video3d_zoo.inference.profile import count_params, profile
from video3d_zoo.weights.manifest_schema import Accuracy, Dataset, HubLocation, Upstream, WeightsEntry
from video3d_zoo.models.registry import build_model, list_models
from video3d_zoo.weights.loading import build_empty

ROOT_MANIFEST = ROOT / "weights_manifest.json"


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(ROOT_MANIFEST)


@pytest.fixture(scope="module")
def raw():
    return json.loads(ROOT_MANIFEST.read_text(encoding="utf-8"))


# -- one copy in git ---------------------------------------------------------------------------------
def test_the_package_reaches_the_root_file_through_a_link():
    """One copy in git: the package's path is a link to the root file (builds copy the file in)."""
    packaged = packaged_manifest_path()
    assert packaged.is_symlink() and packaged.resolve() == ROOT_MANIFEST.resolve()
    tracked = subprocess.run(["git", "ls-files", "-s", "--", "*weights_manifest.json"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    modes = sorted((line.split()[0], line.split("\t")[1]) for line in tracked)
    assert modes == [("100644", "weights_manifest.json"), ("120000", "video3d_zoo/data/weights_manifest.json")]


def test_default_manifest_is_the_packaged_one(monkeypatch, tmp_path):
    monkeypatch.delenv(MANIFEST_ENV, raising=False)
    assert manifest_path() == packaged_manifest_path()
    other = tmp_path / "m.json"
    other.write_text(ROOT_MANIFEST.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv(MANIFEST_ENV, str(other))
    assert manifest_path() == other
    assert load_manifest().path == str(other)
    explicit = tmp_path / "explicit.json"
    assert manifest_path(explicit) == explicit  # the argument wins over the environment


def test_file_is_in_canonical_form(manifest, raw):
    assert dumps(manifest.to_dict()) == ROOT_MANIFEST.read_text(encoding="utf-8")
    assert raw["schema_version"] == 1


# -- coverage and facts ----------------------------------------------------------------------------
ERA_A = {
    "resnet3d_18.k400_16f": "resnet-18-kinetics.pth", "resnet3d_34.k400_16f": "resnet-34-kinetics.pth",
    "resnet3d_50.k400_16f": "resnet-50-kinetics.pth", "resnet3d_101.k400_16f": "resnet-101-kinetics.pth",
    "resnet3d_152.k400_16f": "resnet-152-kinetics.pth", "resnet3d_200.k400_16f": "resnet-200-kinetics.pth",
    "preact_resnet3d_200.k400_16f": "preresnet-200-kinetics.pth",
    "wide_resnet3d_50.k400_16f": "wideresnet-50-kinetics.pth",
    "resnext3d_101.k400_16f": "resnext-101-kinetics.pth", "resnext3d_101.k400_64f": "resnext-101-64f-kinetics.pth",
    "densenet3d_121.k400_16f": "densenet-121-kinetics.pth", "densenet3d_201.k400_16f": "densenet-201-kinetics.pth",
    "resnext3d_101.ucf101s1_16f": "resnext-101-kinetics-ucf101_split1.pth",
    "resnext3d_101.ucf101s1_64f": "resnext-101-64f-kinetics-ucf101_split1.pth",
    "resnext3d_101.hmdb51s1_16f": "resnext-101-kinetics-hmdb51_split1.pth",
    "resnext3d_101.hmdb51s1_64f": "resnext-101-64f-kinetics-hmdb51_split1.pth",
}
ERA_B_CLASSES = {"K": 700, "KM": 1039, "KMS": 1139, "KS": 800, "M": 339, "MS": 439, "S": 100}


def test_every_released_checkpoint_has_an_entry(manifest):
    by_file = {e.upstream.file: e for e in manifest.entries if e.upstream is not None}
    for name, file in ERA_A.items():
        assert by_file[file].name == name
        assert by_file[file].upstream.release == "kenshohara2017"
    for depth in (18, 34, 50, 101, 152, 200):
        for key in (ERA_B_CLASSES if depth == 50 else ("K", "KM")):
            entry = by_file[f"r3d{depth}_{key}_200ep.pth"]
            assert entry.model == f"resnet3d_{depth}" and entry.num_classes == ERA_B_CLASSES[key]
            assert entry.arch_kwargs == {} and entry.input_spec == input_preset("kenshohara2020")
    assert by_file["r2p1d18_K_200ep.pth"].model == "r2plus1d_18_kenshohara"
    assert by_file["r2p1d34_K_200ep.pth"].model == "r2plus1d_34"
    for model, file in (("r3d_18", "r3d_18-b3b3357e.pth"), ("mc3_18", "mc3_18-a90a0ba3.pth"),
                        ("r2plus1d_18", "r2plus1d_18-91a641e6.pth")):
        entry = by_file[file]
        assert entry.name == f"{model}.k400_16f" and entry.license == "BSD-3-Clause"
        assert entry.upstream.sha256_prefix == file.rsplit("-", 1)[1][:8]
        assert entry.input_spec == input_preset("torchvision")
    assert len([e for e in manifest.entries if e.upstream is not None]) == 16 + 19 + 3
    assert [e.name for e in manifest.entries if e.embedded is not None] == ["resnet3d_10.synthetic_motion"]
    assert by_file["resnet-34-kinetics.pth"].upstream.alternate_files == ("resnet-34-kinetics-cpu.pth",)


def test_era_a_facts(manifest):
    assert manifest.get("resnet3d_18", "k400_16f").arch_kwargs == {"shortcut_type": "A"}
    assert manifest.get("resnet3d_34", "k400_16f").arch_kwargs == {"shortcut_type": "A"}
    for name in ERA_A:
        entry = manifest.get(*name.split("."))
        frames = 64 if "64f" in name else 16
        assert entry.input_spec == input_preset("kenshohara2017").replace(frames=frames)
        readme = [a for a in entry.accuracy if "README" in a.source]
        for acc in readme:  # the README numbers are the mean of top-1 and top-5, and say so
            assert acc.metric == "mean_top1_top5" and "average of top-1 and top-5" in acc.note
    assert manifest.get("resnet3d_50", "k400_16f").accuracy[0].value == 72.2
    assert manifest.get("resnext3d_101", "ucf101s1_16f").num_classes == 101
    assert manifest.get("resnext3d_101", "hmdb51s1_64f").num_classes == 51


def test_labels_are_consistent(manifest):
    for entry in manifest.entries:
        if entry.labels is None:
            assert entry.labels_source, entry.name
        else:
            assert len(entry.labels) == entry.num_classes
        assert entry.to_config().labels == entry.labels


def test_every_entry_a_packaged_list_fits_has_it(manifest, raw):
    expected = {"Kinetics-400": "kinetics400", "Kinetics-700": "kinetics700", "UCF-101 split 1": "ucf101",
                "HMDB-51 split 1": "hmdb51"}
    for entry, raw_entry in zip(manifest.entries, raw["entries"]):
        label_set = expected.get(entry.dataset.name)
        assert entry.label_set == label_set, entry.name
        if label_set is None:
            assert entry.labels is None or entry.embedded is not None, entry.name
            if entry.embedded is None:
                assert "No class list is shipped" in entry.labels_source, entry.name
        else:
            assert raw_entry["labels"] == label_set  # stored by reference, not as 400 strings
            assert entry.labels_source.startswith(label_set + " (video3d_zoo/data/labels/"), entry.name
    k400 = manifest.get("r3d_18", "k400_16f")
    assert k400.labels[0] == "abseiling" and k400.labels[-1] == "zumba"
    assert manifest.get("resnext3d_101", "ucf101s1_16f").labels[:2] == ("ApplyEyeMakeup", "ApplyLipstick")


def test_torchvision_accuracies_are_its_video_level_metadata(manifest):
    for model, top1, top5 in (("r3d_18", 63.200, 83.479), ("mc3_18", 63.960, 84.130),
                              ("r2plus1d_18", 67.463, 86.175)):
        entry = manifest.get(model, "k400_16f")
        assert [(a.metric, a.value) for a in entry.accuracy] == [("top1", top1), ("top5", top5)]
        for acc in entry.accuracy:
            assert (acc.level, acc.clips, acc.crops) == ("video", 5, 1)
            assert "clip_len 16, frame_rate 15, clips_per_video 5" in acc.note


def test_nothing_is_published_yet_and_the_error_says_what_to_do(manifest):
    for entry in manifest.entries:
        assert entry.hub is None, f"{entry.name}: update this test once weights are published"
    from video3d_zoo.weights.loading import fetch_converted

    with pytest.raises(WeightsNotFoundError) as info:
        fetch_converted("resnet3d_50", "kinetics", manifest=manifest)
    text, cli_text = str(info.value), info.value.cli_message  # Python for Python users, commands for the CLI
    for message in (text, cli_text):
        assert "r3d50_K_200ep.pth" in message and "1xbYbZ7rpyjftI_KCk6YuL-XrfQDz7Yd4" in message
        assert "Three ways to get the weights" in message
    assert "video3d_zoo.import_weights(['r3d50_K_200ep.pth'])" in text
    assert "from_pretrained('r3d50_K_200ep.pth')" in text
    assert "create_model('resnet3d_50', pretrained='./resnet3d_50.k700_16f')" in text
    assert "video3d-zoo import" not in text and "video3d-zoo convert" not in text
    assert "video3d-zoo import r3d50_K_200ep.pth" in cli_text
    assert "video3d-zoo convert r3d50_K_200ep.pth -o ./resnet3d_50.k700_16f" in cli_text
    assert "--model ./resnet3d_50.k700_16f" in cli_text and "create_model" not in cli_text


def test_unpublished_through_create_model(monkeypatch):
    import video3d_zoo

    monkeypatch.setenv(MANIFEST_ENV, str(ROOT_MANIFEST))
    with pytest.raises(WeightsNotFoundError, match=r"from_pretrained\('resnext-101-64f-kinetics.pth'\)"):
        video3d_zoo.create_model("resnext101_3d.k400_64f", pretrained=True)


# -- parameters and GMACs ----------------------------------------------------------------------
def meta_gmacs(model, frames: int, size: int) -> float:
    """fvcore's count without running anything: shapes on the meta device, fvcore's formulas
    (convolution prod(weight) x prod(output spatial) x batch, linear in x out, eval-mode affine
    batch norm 2 per element; pooling, ReLU and additions uncounted, as in fvcore)."""
    total = [0]

    def conv(m, inp, out):
        total[0] += math.prod(m.weight.shape) * math.prod(out.shape[2:]) * out.shape[0]

    def linear(m, inp, out):
        total[0] += inp[0].numel() * m.out_features

    def norm(m, inp, out):
        total[0] += inp[0].numel() * (2 if m.affine else 1)

    handles = []
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            handles.append(module.register_forward_hook(conv))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_hook(norm))
    model.eval()
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, frames, size, size, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return total[0] / 1e9


def test_params_and_gmacs_match_the_built_model(manifest):
    """Every entry: parameters exactly and GMACs within 1 %, from a meta-device build (no memory)."""
    for entry in manifest.entries:
        model = build_empty(entry.to_config())
        assert next(model.parameters()).device.type == "meta"
        assert count_params(model) == entry.params, entry.name
        spec = entry.input_spec
        assert meta_gmacs(model, spec.frames, spec.crop_size) == pytest.approx(entry.gmacs, rel=0.01), entry.name


def _distinct_networks(manifest):
    seen = {}
    for entry in manifest.entries:
        seen.setdefault((entry.model, json.dumps(dict(entry.arch_kwargs), sort_keys=True),
                         entry.input_spec.frames), entry)
    return list(seen.values())


def test_the_meta_count_is_profiles_count(manifest):
    """The meta-device count above equals profile() (fvcore) exactly, for every distinct network of the
    manifest at reduced width (same topology, cheap forward), and for two networks at full size."""
    for entry in _distinct_networks(manifest):
        kwargs = {**tiny_kwargs(entry.model), **dict(entry.arch_kwargs)}
        small = build_model(entry.model, num_classes=entry.num_classes, init_weights=False, **kwargs)
        expected = profile(small, frames=entry.input_spec.frames, size=entry.input_spec.crop_size).gmacs
        with torch.device("meta"):
            small_meta = build_model(entry.model, num_classes=entry.num_classes, init_weights=False, **kwargs)
        assert meta_gmacs(small_meta, entry.input_spec.frames, entry.input_spec.crop_size) == pytest.approx(
            expected, rel=1e-9), entry.name
    for name in ("resnet3d_18.k400_16f", "r2plus1d_18_kenshohara.k700_16f"):
        entry = manifest.get(*name.split("."))
        result = profile(entry.model, frames=16, num_classes=entry.num_classes, init_weights=False,
                         **dict(entry.arch_kwargs))
        assert result.params == entry.params and result.gmacs == pytest.approx(entry.gmacs, rel=0.01), name


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("VIDEO3D_ZOO_FULL_PROFILE"),
                    reason="full-size fvcore sweep (about 20-50 s); set VIDEO3D_ZOO_FULL_PROFILE=1")
def test_gmacs_match_profile_at_full_size(manifest):
    for entry in _distinct_networks(manifest):
        result = profile(entry.model, frames=entry.input_spec.frames, size=entry.input_spec.crop_size,
                         num_classes=entry.num_classes, init_weights=False, **dict(entry.arch_kwargs))
        assert result.gmacs == pytest.approx(entry.gmacs, rel=0.01), entry.name


# -- the converters agree with the manifest -----------------------------------------------------
def _synthetic_original(case):
    """Zero tensors with the case's keys and shapes, wrapped like the released file."""
    sd = {key: torch.zeros(shape, dtype=getattr(torch, dtype)) for key, shape, dtype in case["state_dict"]}
    ckpt = case["checkpoint"]
    if ckpt.get("state_dict_wrapper_key"):
        wrapper = {k: 0 for k in ckpt["wrapper_keys"]}
        wrapper.update({"arch": ckpt.get("arch"), "state_dict": sd, "optimizer": {}})
        if "scheduler" in ckpt["wrapper_keys"]:
            wrapper["scheduler"] = {}
        return wrapper
    return sd


def test_converting_each_released_layout_gives_the_entry_config(manifest):
    from video3d_zoo.weights.convert import convert_checkpoint

    by_file = {}
    for entry in manifest.entries:
        if entry.upstream is not None:  # embedded models were trained here, no original file
            by_file[entry.upstream.file] = entry
    tested = 0
    for path in golden_case_files():
        case = json.loads(path.read_text(encoding="utf-8"))
        file = case["checkpoint"].get("released_file")
        if file is None and case["name"].startswith("torchvision_"):
            model = case["name"][len("torchvision_"):]
            file = next(e.upstream.file for e in manifest.entries if e.model == model)
        if file not in by_file:
            continue
        entry = by_file[file]
        config = convert_checkpoint(_synthetic_original(case), filename=file).config
        assert config.architecture == entry.model, file
        assert dict(config.arch_kwargs) == dict(entry.arch_kwargs), file
        assert config.num_classes == entry.num_classes, file
        assert config.input_spec == entry.input_spec, file
        tested += 1
    assert tested >= 10


# -- selection -------------------------------------------------------------------------------------
def test_resolve(manifest):
    assert manifest.resolve("resnet3d_50", True).name == "resnet3d_50.k700_16f"
    assert manifest.resolve("resnet50_3d", "kinetics").name == "resnet3d_50.k700_16f"  # model alias + word
    assert manifest.resolve("resnet3d_50", "kinetics400").name == "resnet3d_50.k400_16f"
    assert manifest.resolve("resnet3d_50", "moments").tag == "m_16f"
    assert manifest.resolve("resnext3d_101", "k400_64f").tag == "k400_64f"
    assert manifest.resolve("resnext3d_101", "resnext3d_101.ucf101s1_64f").tag == "ucf101s1_64f"
    assert manifest.resolve("resnext101_3d", True).name == "resnext3d_101.k400_16f"
    assert manifest.resolve("r2plus1d_18", "kinetics").name == "r2plus1d_18.k400_16f"
    with pytest.raises(WeightsNotFoundError, match="available: .*k400_16f.*k700_16f \\(default\\)"):
        manifest.resolve("resnet3d_50", "imagenet")
    with pytest.raises(WeightsNotFoundError, match="no weights for preact_resnet3d_10"):
        manifest.resolve("preact_resnet3d_10", True)
    # the embedded synthetic-motion toy is reached by its tag only: resnet3d_10 has no default weights
    assert manifest.resolve("resnet3d_10", "synthetic_motion").embedded is not None
    with pytest.raises(WeightsNotFoundError, match="resnet3d_10 has no default pretrained weights.*synthetic_motion"):
        manifest.resolve("resnet3d_10", True)
    with pytest.raises(WeightsNotFoundError, match="not of resnet3d_50"):
        manifest.resolve("resnet3d_50", "resnet3d_18.k700_16f")


def test_one_default_per_model_and_aliases_point_to_real_tags(manifest):
    registered = set(list_models())
    for model in manifest.models():
        assert model in registered
        real = [e for e in manifest.entries_for(model) if e.upstream is not None]
        defaults = [e for e in manifest.entries_for(model) if e.default]
        if real:  # a model with released weights defaults to one of them: Kinetics, never the toy
            assert len(defaults) == 1 and defaults[0].upstream is not None, model
            assert defaults[0].dataset.name.startswith("Kinetics"), model
        else:
            assert defaults == [], model
    for model, words in manifest.aliases.items():
        for word, tag in words.items():
            assert manifest.get(model, tag)


def test_list_pretrained(manifest, monkeypatch):
    import video3d_zoo.weights.manifest as m

    names = manifest.list_pretrained()
    assert names == sorted(names) and len(names) == len(manifest.entries)
    assert manifest.list_pretrained("resnext3d_101.*64f") == [
        "resnext3d_101.hmdb51s1_64f", "resnext3d_101.k400_64f", "resnext3d_101.ucf101s1_64f"]
    monkeypatch.setenv(MANIFEST_ENV, str(ROOT_MANIFEST))
    assert m.list_pretrained("mc3_*") == ["mc3_18.k400_16f"]


# -- validation errors name the entry and the field -----------------------------------------------
def _good_entry(**changes):
    entry = {"model": "resnet3d_10", "tag": "tiny_16f", "default": True, "arch_kwargs": {"widen_factor": 0.125},
             "num_classes": 3, "labels": ["a", "b", "c"], "input_spec": input_preset("kenshohara2020").to_dict(),
             "hub": {"repo_id": "org/name", "filename": "model.safetensors", "revision": "a" * 40,
                     "sha256": "b" * 64, "size": 10}}
    entry.update(changes)
    return entry


def _manifest(*entries, aliases=None):
    data = {"schema_version": 1, "entries": list(entries)}
    if aliases is not None:
        data["aliases"] = aliases
    return data


def _problems(data):
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, path="test.json")
    return str(info.value)


def test_a_good_manifest_parses():
    m = parse_manifest(_manifest(_good_entry(), aliases={"resnet3d_10": {"tiny": "tiny_16f"}}))
    assert m.resolve("resnet3d_10", "tiny").hub.size == 10
    assert m.entries[0].to_config().labels == ("a", "b", "c")


def test_list_arguments_compare_equal_to_a_built_models_config():
    """JSON lists become tuples as in ModelConfig, so an entry and a model's config agree on them."""
    entry = parse_manifest(_manifest(_good_entry(arch_kwargs={"block_inplanes": [8, 16, 32, 64]}))).entries[0]
    assert entry.arch_kwargs == {"block_inplanes": (8, 16, 32, 64)}
    config = entry.to_config()
    assert config.arch_kwargs == entry.arch_kwargs
    assert dict(config.arch_kwargs) == dict(entry.arch_kwargs)  # what identity, import and publish compare
    assert json.loads(json.dumps(entry.to_dict()))["arch_kwargs"] == {"block_inplanes": [8, 16, 32, 64]}


def test_labels_by_packaged_list_name_resolve_and_round_trip():
    from video3d_zoo.weights.labels import load_label_set

    m = parse_manifest(_manifest(_good_entry(num_classes=51, labels="hmdb51", labels_source="checked")))
    entry = m.entries[0]
    assert entry.label_set == "hmdb51" and entry.labels == load_label_set("hmdb51")
    assert entry.to_config().labels[0] == "brush_hair"
    assert entry.to_dict()["labels"] == "hmdb51"
    assert parse_manifest(m.to_dict()) == parse_manifest(_manifest(entry.to_dict()))


@pytest.mark.parametrize("mutate, expected", [
    (lambda e: e["hub"].update(sha256="abc123"),
     "entries[0] (resnet3d_10.tiny_16f).hub.sha256: expected 64 lower-case hex digits (sha256 of the file), "
     "got 'abc123' (6 characters)"),
    (lambda e: e["hub"].update(sha256="B" * 64), "entries[0] (resnet3d_10.tiny_16f).hub.sha256"),
    (lambda e: e["hub"].update(revision="main"), "entries[0] (resnet3d_10.tiny_16f).hub.revision: expected a "
                                                 "commit id: 40 lower-case hex digits"),
    (lambda e: e["hub"].update(size=0), "entries[0] (resnet3d_10.tiny_16f).hub.size"),
    (lambda e: e["hub"].update(repo_id="no-slash"), "entries[0] (resnet3d_10.tiny_16f).hub.repo_id"),
    (lambda e: e.update(model="resnet3d_11"), "entries[0] (resnet3d_11.tiny_16f).model: unknown model "
                                              "'resnet3d_11'"),
    (lambda e: e.update(model="resnet10_3d"), "is an alias; use the registered name 'resnet3d_10'"),
    (lambda e: e.update(tag="k400.16f"), "entries[0] (resnet3d_10.k400.16f).tag"),
    (lambda e: e.update(labels=["a", "b"]), "entries[0] (resnet3d_10.tiny_16f).labels: 2 names for num_classes=3"),
    (lambda e: e.update(labels=None), "entries[0] (resnet3d_10.tiny_16f).labels_source: required when labels is null"),
    (lambda e: e.update(labels="kinetics401"), "entries[0] (resnet3d_10.tiny_16f).labels: unknown label set "
                                               "'kinetics401'; expected null, a list of class names or one of"),
    (lambda e: e.update(labels="kinetics400", labels_source="x"),
     "entries[0] (resnet3d_10.tiny_16f).labels: label set 'kinetics400' has 400 names, but num_classes=3"),
    (lambda e: e.update(labels="ucf101", num_classes=101),
     "entries[0] (resnet3d_10.tiny_16f).labels_source: required with the label set 'ucf101'"),
    (lambda e: e.update(labels=7), "entries[0] (resnet3d_10.tiny_16f).labels: expected null, the name of a packaged"),
    (lambda e: e["input_spec"].update(std=[0.2, 0.0, 0.2]), "entries[0] (resnet3d_10.tiny_16f).input_spec: std"),
    (lambda e: e["input_spec"].update(frames=0), "entries[0] (resnet3d_10.tiny_16f).input_spec: frames"),
    (lambda e: e.update(num_clases=3), "entries[0] (resnet3d_10.tiny_16f).num_clases: unknown field"),
    (lambda e: e.pop("hub"), "entries[0] (resnet3d_10.tiny_16f).hub: missing required field"),
    (lambda e: e.update(accuracy=[{"dataset": "K", "metric": "top-1", "value": 50, "source": "x"}]),
     "entries[0] (resnet3d_10.tiny_16f).accuracy[0].metric"),
    (lambda e: e.update(accuracy=[{"dataset": "K", "metric": "top1", "value": 150, "source": "x"}]),
     "entries[0] (resnet3d_10.tiny_16f).accuracy[0].value"),
    (lambda e: e.update(upstream={"release": "x", "file": "f.pth", "sha256": "12"}),
     "entries[0] (resnet3d_10.tiny_16f).upstream.sha256"),
    *[(lambda e, url=url: e.update(upstream={"release": "x", "file": "f.pth", "url": url}),
       "entries[0] (resnet3d_10.tiny_16f).upstream.url: expected null or an http:// or https:// address with a host")
      for url in ("file:///etc/passwd", "ftp://example.org/f.pth", "weights/f.pth", "https:///f.pth",
                  "https://host/with space.pth")],
])
def test_malformed_entries_are_rejected_naming_entry_and_field(mutate, expected):
    entry = copy.deepcopy(_good_entry())
    mutate(entry)
    assert expected in _problems(_manifest(entry))


@pytest.mark.parametrize("url", ["https://drive.google.com/open?id=1xb", "http://127.0.0.1:8080/f.pth",
                                 "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth"])
def test_web_addresses_are_accepted_as_upstream_urls(url):
    entry = copy.deepcopy(_good_entry())
    entry["upstream"] = {"release": "x", "file": "f.pth", "url": url}
    assert parse_manifest(_manifest(entry)).entries[0].upstream.url == url


@pytest.mark.parametrize("record, mutate, where", [
    (WeightsEntry, lambda e: e, "entries[0] (resnet3d_10.tiny_16f)"),
    (HubLocation, lambda e: e["hub"], "entries[0] (resnet3d_10.tiny_16f).hub"),
    (Dataset, lambda e: e.setdefault("dataset", {"name": "K"}), "entries[0] (resnet3d_10.tiny_16f).dataset"),
    (Upstream, lambda e: e.setdefault("upstream", {"release": "r", "file": "f.pth"}),
     "entries[0] (resnet3d_10.tiny_16f).upstream"),
    (Accuracy, lambda e: e.setdefault("accuracy", [{"dataset": "K", "metric": "top1", "value": 5, "source": "x"}])[0],
     "entries[0] (resnet3d_10.tiny_16f).accuracy[0]"),
])
def test_the_validator_knows_exactly_the_dataclass_fields(record, mutate, where):
    """Field names are written once, in the schema's dataclasses: an unknown field is named with
    its entry, and the fields it offers instead are the dataclass's JSON fields."""
    entry = copy.deepcopy(_good_entry())
    mutate(entry)["colour"] = "red"
    names = sorted(f.name for f in dataclasses.fields(record) if f.metadata)
    assert names and "label_set" not in names
    assert f"{where}.colour: unknown field; expected some of {names}" in _problems(_manifest(entry))


def test_a_required_field_is_required_in_python_too():
    with pytest.raises(TypeError, match="needs tag"):
        WeightsEntry(model="resnet3d_10", num_classes=3, input_spec=input_preset("kenshohara2020"))


def test_duplicate_tag_and_second_default():
    text = _problems(_manifest(_good_entry(), _good_entry()))
    assert "entries[1] (resnet3d_10.tiny_16f).tag: duplicate 'resnet3d_10.tiny_16f' (also entries[0])" in text
    assert "entries[1] (resnet3d_10.tiny_16f).default: a second default for resnet3d_10" in text


def test_aliases_pointing_nowhere():
    text = _problems(_manifest(_good_entry(), aliases={"resnet3d_10": {"kinetics": "k400_16f"}}))
    assert "aliases.resnet3d_10.kinetics: points to 'k400_16f', which is not a tag of resnet3d_10" in text
    text = _problems(_manifest(_good_entry(), aliases={"resnet3d_50": {"kinetics": "tiny_16f"}}))
    assert "aliases.resnet3d_50: no entry has model 'resnet3d_50'" in text
    text = _problems(_manifest(_good_entry(), aliases={"resnet3d_10": {"tiny_16f": "tiny_16f"}}))
    assert "must not shadow a tag" in text


def test_every_problem_is_reported_at_once():
    bad = _good_entry(model="nope")
    bad["hub"]["sha256"] = "x"
    text = _problems(_manifest(bad, _good_entry(tag="ok_16f", default=False, num_classes=0)))
    assert "3 problems" in text
    assert "entries[0] (nope.tiny_16f).model" in text and "entries[0] (nope.tiny_16f).hub.sha256" in text
    assert "entries[1] (resnet3d_10.ok_16f).num_classes" in text


def test_schema_version_and_file_errors(tmp_path):
    assert "manifest.schema_version: expected 1, got 2" in _problems({"schema_version": 2, "entries": []})
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(broken)
    with pytest.raises(ManifestError, match="cannot read the weights manifest"):
        load_manifest(tmp_path / "missing.json")
