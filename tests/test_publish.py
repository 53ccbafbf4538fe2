"""Publishing a converted folder (model card, config, entry) and the convert_all pipeline; no network."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
from contextlib import redirect_stdout
from types import SimpleNamespace

import pytest
import torch

from helpers import DATA, ROOT
from hub_server import HubServer

import video3d_zoo
from video3d_zoo.errors import ConfigError
from video3d_zoo.weights.manifest import MANIFEST_ENV, dumps, load_manifest, parse_manifest
from video3d_zoo.cli.commands import main as cli_main
from video3d_zoo.weights.publish import publish_folder
from video3d_zoo.weights.loading import save_pretrained


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    model = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=7)
    return model, save_pretrained(model, tmp_path / "converted")


@pytest.fixture
def manifest_file(tmp_path, folder):
    model, _ = folder
    entry = {"model": "resnet3d_10", "tag": "tiny_16f", "default": True, "arch_kwargs": {"widen_factor": 0.125},
             "dataset": {"name": "Tiny-7", "pretrained_on": None}, "num_classes": 7, "labels": None,
             "labels_source": "synthetic", "input_spec": model.config.input_spec.to_dict(),
             "accuracy": [{"dataset": "Tiny-7", "split": "validation", "metric": "mean_top1_top5", "value": 66.1,
                           "level": "video", "crops": 1, "clips": "all non-overlapping 16-frame clips",
                           "source": "a README table", "note": "the average of top-1 and top-5"}],
             "params": sum(p.numel() for p in model.parameters()), "gmacs": 0.1,
             "upstream": {"release": "kenshohara2020", "file": "r3d10_tiny.pth", "url": "https://example.org/x",
                          "sha256": None, "layout": "kenshohara2020"},
             "license": "MIT", "hub": None}
    path = tmp_path / "weights_manifest.json"
    path.write_text(dumps({"schema_version": 1, "entries": [entry]}), encoding="utf-8")
    return path


class FakeApi:
    """Stands in for huggingface_hub.HfApi: 'uploads' into a local HubServer."""

    calls: list = []

    def __init__(self, server: HubServer, token=None) -> None:
        self.server = server

    def create_repo(self, repo_id, *, repo_type=None, exist_ok=False, private=None, **kwargs):
        FakeApi.calls.append(("create_repo", repo_id, repo_type, exist_ok, private))
        return f"{self.server.endpoint}/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, allow_patterns=None, commit_message=None,
                      **kwargs):
        FakeApi.calls.append(("upload_folder", repo_id, sorted(allow_patterns), commit_message))
        commit = None
        for name in allow_patterns:
            path = os.path.join(folder_path, name)
            if os.path.isfile(path):
                with open(path, "rb") as fh:
                    commit = self.server.add_file(repo_id, name, fh.read())
        return SimpleNamespace(oid=commit, commit_url=f"{self.server.endpoint}/{repo_id}/commit/{commit}")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    import huggingface_hub

    with HubServer() as server:
        FakeApi.calls = []
        monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: FakeApi(server, token))
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        yield server


def _snapshot(path):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(path.iterdir())}


def test_dry_run_changes_nothing_on_disk_and_prints_the_entry(folder, manifest_file, monkeypatch, tmp_path):
    model, path = folder
    monkeypatch.setenv(MANIFEST_ENV, str(manifest_file))
    before = _snapshot(path)
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["publish", str(path), "--repo-id", "org/resnet3d_10.tiny_16f", "--tag", "tiny_16f",
                             "--dry-run"]) == 0
    assert _snapshot(path) == before, "a dry run rewrote the folder"
    entry = json.loads(out.getvalue())  # stdout is only the entry
    data = (path / "model.safetensors").read_bytes()
    assert entry["hub"] == {"repo_id": "org/resnet3d_10.tiny_16f", "filename": "model.safetensors",
                            "revision": None, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert entry["accuracy"][0]["value"] == 66.1 and entry["upstream"]["file"] == "r3d10_tiny.pth"
    # --card-dir shows what would be published, elsewhere
    cards = tmp_path / "cards"
    with redirect_stdout(io.StringIO()):
        assert cli_main(["publish", str(path), "--repo-id", "org/resnet3d_10.tiny_16f", "--tag", "tiny_16f",
                         "--dry-run", "--card-dir", str(cards)]) == 0
    assert _snapshot(path) == before and sorted(p.name for p in cards.iterdir()) == ["README.md", "config.json"]
    config = json.loads((cards / "config.json").read_text())
    assert config["tag"] == "tiny_16f" and config["architecture"] == "resnet3d_10"
    card = (cards / "README.md").read_text()
    for needle in ("license: mit", "# resnet3d_10.tiny_16f", "| parameters |", "GMACs per 16x112x112 clip",
                   "mean of top-1 and top-5", "video-level, 1 crop(s), all non-overlapping 16-frame clips",
                   "subtract mean", "create_model('resnet3d_10', pretrained='tiny_16f')",
                   "Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?",
                   hashlib.sha256(data).hexdigest(), "## License"):
        assert needle in card, needle
    assert video3d_zoo.from_pretrained(path).config.tag is None  # the folder still loads, as it was
    with pytest.raises(ConfigError, match="for a dry run"):
        publish_folder(path, "org/x", tag="tiny_16f", manifest=manifest_file, card_dir=cards)


def test_dry_run_for_weights_the_manifest_does_not_know(folder, tmp_path):
    model, path = folder
    empty = tmp_path / "empty.json"
    empty.write_text(dumps({"schema_version": 1, "entries": []}), encoding="utf-8")
    with pytest.raises(ConfigError, match="pass --tag"):
        publish_folder(path, "org/new", dry_run=True, manifest=empty)
    entry = publish_folder(path, "org/new", tag="new_16f", dry_run=True, manifest=empty)
    assert entry["params"] == sum(p.numel() for p in model.parameters())
    assert entry["gmacs"] > 0 and entry["hub"]["revision"] is None and entry["accuracy"] == []
    publish_folder(path, "org/new", tag="new_16f", dry_run=True, manifest=empty, card_dir=path)
    assert publish_folder(path, "org/new", dry_run=True, manifest=empty)["tag"] == "new_16f"  # now in config.json


def test_folder_that_does_not_match_the_entry_is_refused(tmp_path, manifest_file):
    model = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=5)
    path = save_pretrained(model, tmp_path / "other")
    with pytest.raises(ConfigError, match="num_classes 5 vs manifest 7"):
        publish_folder(path, "org/x", tag="tiny_16f", dry_run=True, manifest=manifest_file)


def test_upload_returns_the_commit_and_the_entry_loads_from_the_hub(folder, manifest_file, hub, tmp_path,
                                                                    monkeypatch):
    model, path = folder
    entry = publish_folder(path, "org/resnet3d_10.tiny_16f", tag="tiny_16f", manifest=manifest_file)
    assert FakeApi.calls[0] == ("create_repo", "org/resnet3d_10.tiny_16f", "model", True, False)
    assert FakeApi.calls[1][2] == ["README.md", "config.json", "model.safetensors"]
    revision = entry["hub"]["revision"]
    assert revision == hub.repos["org/resnet3d_10.tiny_16f"].branches["main"] and len(revision) == 40
    # the printed entry is a valid manifest entry that loads through the Hub protocol
    published = tmp_path / "published.json"
    published.write_text(dumps({"schema_version": 1, "entries": [entry]}), encoding="utf-8")
    parse_manifest(json.loads(published.read_text()))
    monkeypatch.setenv(MANIFEST_ENV, str(published))
    loaded = video3d_zoo.create_model("resnet3d_10", pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


# -- the scripted pipeline -------------------------------------------------------------------------
def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def mc3_original(tmp_path):
    """A torchvision-layout mc3_18 state dict (keys and shapes of the golden case), random values."""
    case = json.loads((DATA / "golden" / "torchvision_mc3_18.json").read_text())
    gen = torch.Generator().manual_seed(0)
    sd = {k: (torch.zeros(s, dtype=torch.long) if d == "int64" else torch.randn(s, generator=gen) * 0.01)
          for k, s, d in case["state_dict"]}
    for key in [k for k in sd if k.endswith("running_var")]:  # a variance is >= 0: loading refuses others
        sd[key] = sd[key].abs() + 1.0
    originals = tmp_path / "originals" / "torchvision"
    originals.mkdir(parents=True)
    torch.save(sd, originals / "mc3_18-a90a0ba3.pth")
    return tmp_path / "originals", sd


def test_convert_all_dry_run_and_upstream_check(mc3_original, tmp_path, capsys):
    convert_all = _load_script("convert_all")
    originals, _ = mc3_original
    out = tmp_path / "converted"
    # the synthetic file cannot have torchvision's hash prefix: refused
    assert convert_all.main([str(originals), "-o", str(out), "--only", "mc3_18.*", "--dry-run"]) == 1
    assert "does not start with a90a0ba3" in capsys.readouterr().err
    assert convert_all.main([str(originals), "-o", str(out), "--only", "mc3_18.*", "--dry-run",
                             "--no-verify-upstream"]) == 0
    folder = out / "mc3_18.k400_16f"
    entry = json.loads((out / "entries.jsonl").read_text().splitlines()[-1])
    data = (folder / "model.safetensors").read_bytes()
    assert entry["hub"]["sha256"] == hashlib.sha256(data).hexdigest() and entry["hub"]["size"] == len(data)
    assert entry["upstream"]["sha256"] is None  # not recorded: it does not match the file name's prefix
    assert (folder / "README.md").is_file() and not (out / "weights_manifest.json").exists()
    model = video3d_zoo.from_pretrained(folder)
    assert model.config.architecture == "mc3_18" and model.config.tag == "k400_16f"
    assert model.config.labels[0] == "abseiling" and len(model.config.labels) == 400  # the packaged list
    assert "the list `kinetics400` shipped with video3d_zoo" in (folder / "README.md").read_text()


def test_convert_all_publishes_and_writes_a_valid_manifest(mc3_original, tmp_path, hub, monkeypatch):
    convert_all = _load_script("convert_all")
    originals, sd = mc3_original
    out = tmp_path / "converted"
    assert convert_all.main([str(originals), "-o", str(out), "--only", "mc3_18.*", "--org", "zoo",
                             "--no-verify-upstream"]) == 0
    written = out / "weights_manifest.json"
    manifest = load_manifest(written)
    entry = manifest.get("mc3_18", "k400_16f")
    assert entry.hub.repo_id == "zoo/mc3_18.k400_16f" and entry.hub.revision == hub.repos[entry.hub.repo_id].branches["main"]
    assert sum(e.published for e in manifest.entries) == 1
    monkeypatch.setenv(MANIFEST_ENV, str(written))
    model = video3d_zoo.create_model("mc3_18", pretrained="kinetics")
    assert torch.equal(model.state_dict()["conv1.weight"], sd["stem.0.weight"])


# -- publish_all: originals from public URLs, golden checks, the Hub ------------------------------------
@pytest.fixture
def public_mc3(tmp_path, monkeypatch):
    """The mc3_18 golden case's weights as a public file on a loopback server, named by a private manifest."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    recipe = _load_script_from(DATA / "golden" / "recipe.py", "recipe")
    case = recipe.load_case(DATA / "golden" / "torchvision_mc3_18.json")
    sd = {k: torch.from_numpy(v) for k, v in recipe.case_state_dict(case).items()}
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    body, sha = buffer.getvalue(), hashlib.sha256(buffer.getvalue()).hexdigest()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data = json.loads((ROOT / "weights_manifest.json").read_text())
    entry = next(e for e in data["entries"] if e["model"] == "mc3_18")
    file = f"mc3_18-{sha[:8]}.pth"
    entry["upstream"].update(file=file, url=f"http://127.0.0.1:{server.server_address[1]}/{file}", sha256_prefix=sha[:8])
    path = tmp_path / "private_manifest.json"
    path.write_text(dumps(data), encoding="utf-8")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield path, sd
    server.shutdown()
    server.server_close()


def _load_script_from(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # a full-width mc3_18 (the golden case's): about 15 s on 2 cores
def test_publish_all_downloads_checks_golden_and_publishes(public_mc3, tmp_path, hub, monkeypatch, capsys):
    publish_all = _load_script("publish_all")
    manifest, sd = public_mc3
    out = tmp_path / "out"
    args = [str(a) for a in ("-o", out, "--only", "mc3_18.*", "--manifest", manifest)]
    assert publish_all.main(args + ["--dry-run"]) == 0  # dry run: downloaded, checked, converted; nothing uploaded
    printed = capsys.readouterr().out
    assert "downloaded mc3_18.k400_16f" in printed and "golden torchvision_mc3_18: largest difference" in printed
    assert not FakeApi.calls and not (out / "weights_manifest.json").exists()
    assert publish_all.main(args + ["--org", "zoo", "--golden", str(tmp_path / "no_cases")]) == 0  # checked above
    written = load_manifest(out / "weights_manifest.json")
    entry = written.get("mc3_18", "k400_16f")
    assert entry.hub.repo_id == "zoo/mc3_18.k400_16f" and entry.hub.revision == hub.repos[entry.hub.repo_id].branches["main"]
    assert entry.upstream.sha256 == hashlib.sha256((out / "originals" / "downloaded" / entry.upstream.file)
                                                  .read_bytes()).hexdigest()  # the full sha256 learnt
    monkeypatch.setenv(MANIFEST_ENV, str(out / "weights_manifest.json"))
    model = video3d_zoo.create_model("mc3_18", pretrained=True)  # now from the Hub copy
    assert model.config.source.startswith("hf://zoo/mc3_18.k400_16f@")
    assert torch.equal(model.state_dict()["conv1.weight"], sd["stem.0.weight"])


def test_publish_all_finds_the_golden_case_of_each_release_file():
    publish_all = _load_script("publish_all")
    cases = publish_all.golden_cases(DATA / "golden")
    manifest = load_manifest()
    found = {name: publish_all.golden_case_for(manifest.get(*name.split(".")), cases) for name in
             ("r3d_18.k400_16f", "resnet3d_18.k400_16f", "resnet3d_50.k700_16f", "resnet3d_50.km_16f",
              "resnet3d_10.synthetic_motion")}
    assert {k: v.stem if v else None for k, v in found.items()} == {
        "r3d_18.k400_16f": "torchvision_r3d_18", "resnet3d_18.k400_16f": "kenshohara2017_resnet18",
        "resnet3d_50.k700_16f": "kenshohara2020_r3d50_K", "resnet3d_50.km_16f": "kenshohara2020_r3d50_KM",
        "resnet3d_10.synthetic_motion": None}
