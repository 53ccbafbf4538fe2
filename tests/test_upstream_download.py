"""Public originals download by name (issue 22 point 3), against a loopback HTTP server on 127.0.0.1.

A private manifest (``VIDEO3D_ZOO_MANIFEST``) points the mc3_18 entry at a tiny torchvision-layout
file served here; the first ``pretrained=True`` downloads, verifies, converts and installs it, and
later loads are offline.  A file whose sha256 differs is refused and removed, never loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from helpers import ROOT

import video3d_zoo
from video3d_zoo.cli import commands as cli
from video3d_zoo.errors import DownloadError, IntegrityError
from video3d_zoo.weights.installed import HOME_ENV, read_record, weights_home
from video3d_zoo.weights.labels import load_label_set
from video3d_zoo.weights.manifest import MANIFEST_ENV, dumps, load_manifest
from video3d_zoo.weights.upstream import DOWNLOADS, MAX_MB_ENV, download_url, expected_hash

_TV = ((r"^conv1\.", "stem.0."), (r"^bn1\.", "stem.1."), (r"\.conv([12])\.", r".conv\1.0."),
       (r"\.bn([12])\.", r".conv\1.1."))


class Files(ThreadingHTTPServer):
    """Serves ``self.files`` (URL path -> bytes); counts the requests."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.requests = {}, 0

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests += 1
        body = self.server.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")


@pytest.fixture
def server():
    srv = Files()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def tiny_mc3(seed=0):
    """A tiny mc3_18 in torchvision's layout, as the bytes of a .pth file, and the zoo model."""
    torch.manual_seed(seed)
    model = video3d_zoo.create_model("mc3_18", widen_factor=0.125).eval()
    sd = OrderedDict()
    for key, value in model.state_dict().items():
        for pattern, repl in _TV:
            key = re.sub(pattern, repl, key)
        sd[key] = value
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    return buffer.getvalue(), model


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return tmp_path


def point_manifest(tmp_path, monkeypatch, url, file, model, sha256=None, prefix=None):
    """A private manifest whose mc3_18 entry is the tiny model, released as ``file`` at ``url``."""
    data = json.loads((ROOT / "weights_manifest.json").read_text())
    entry = next(e for e in data["entries"] if e["model"] == "mc3_18")
    entry["arch_kwargs"] = {"widen_factor": 0.125}
    entry["params"] = sum(p.numel() for p in model.parameters())
    entry["upstream"].update(file=file, url=url, sha256=sha256, sha256_prefix=prefix)
    path = tmp_path / "private_manifest.json"
    path.write_text(dumps(data))
    monkeypatch.setenv(MANIFEST_ENV, str(path))


def _nothing_left(name="mc3_18.k400_16f"):
    downloads = weights_home() / DOWNLOADS
    assert not downloads.exists() or not any(downloads.iterdir()), list(downloads.iterdir())
    assert read_record(name) is None


def test_which_entries_download_by_name():
    manifest = load_manifest()
    urls = {e.name: download_url(e) for e in manifest.entries}
    assert urls["r3d_18.k400_16f"] == "https://download.pytorch.org/models/r3d_18-b3b3357e.pth"
    assert urls["mc3_18.k400_16f"] and urls["r2plus1d_18.k400_16f"]
    assert urls["resnet3d_50.k700_16f"] is None  # a Google Drive page with no checksum: import it by hand
    assert urls["resnet3d_10.synthetic_motion"] is None
    up = manifest.get("r3d_18", "k400_16f").upstream
    assert expected_hash(up) == ("b3b3357e", False)
    assert expected_hash(up.__class__(release="x", file="a-0123abcd.pth")) == ("0123abcd", False)  # from the name


def test_first_use_downloads_verifies_installs_then_offline(server, env, monkeypatch, capsys):
    data, model = tiny_mc3()
    sha = hashlib.sha256(data).hexdigest()
    file = f"mc3_18-{sha[:8]}.pth"
    server.files[f"/models/{file}"] = data
    point_manifest(env, monkeypatch, f"{server.url}/models/{file}", file, model, prefix=sha[:8])
    x = torch.randn(1, 3, 8, 32, 32)
    loaded = video3d_zoo.create_model("mc3_18", pretrained=True)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.config.labels == load_label_set("kinetics400") and loaded.config.tag == "k400_16f"
    record = read_record("mc3_18.k400_16f")
    assert record.original["sha256"] == sha and record.original["url"].endswith(file)  # the full sha256 kept
    assert server.requests == 1
    assert not any((weights_home() / DOWNLOADS).iterdir())  # no partial or original file left behind
    assert cli.main(["list-pretrained", "mc3*"]) == 0
    assert re.search(r"mc3_18\.k400_16f \*.*installed", capsys.readouterr().out)
    # offline from then on: no request, no socket
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("network access"))
    again = video3d_zoo.load_model("mc3_18.k400_16f")
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert server.requests == 1


def test_a_file_whose_sha256_differs_is_refused_and_removed(server, env, monkeypatch):
    data, model = tiny_mc3()
    other, _ = tiny_mc3(seed=1)
    sha = hashlib.sha256(data).hexdigest()
    server.files["/mirror/mc3.pth"] = other  # the mirror serves a different file
    point_manifest(env, monkeypatch, f"{server.url}/mirror/mc3.pth", "mc3_18-mirror.pth", model, sha256=sha)
    with pytest.raises(IntegrityError, match=f"sha256 mismatch.*expected sha256 {sha}.*removed.*nothing was loaded"):
        video3d_zoo.create_model("mc3_18", pretrained=True)
    _nothing_left()
    # the hash prefix of a torchvision file name is checked the same way
    server.files["/models/mc3_18-00000000.pth"] = data
    point_manifest(env, monkeypatch, f"{server.url}/models/mc3_18-00000000.pth", "mc3_18-00000000.pth", model)
    with pytest.raises(IntegrityError, match="a sha256 starting with 00000000"):
        video3d_zoo.mc3_18(pretrained=True)
    _nothing_left()


def test_offline_missing_and_oversize_downloads_are_one_line_errors(server, env, monkeypatch):
    data, model = tiny_mc3()
    sha = hashlib.sha256(data).hexdigest()
    server.files["/mc3.pth"] = data
    point_manifest(env, monkeypatch, f"{server.url}/mc3.pth", "mc3.pth", model, sha256=sha)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline mode"):
        video3d_zoo.create_model("mc3_18", pretrained=True)
    assert server.requests == 0
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv(MAX_MB_ENV, "0.01")
    with pytest.raises(IntegrityError, match="over the cap"):
        video3d_zoo.create_model("mc3_18", pretrained=True)
    _nothing_left()
    monkeypatch.delenv(MAX_MB_ENV)
    point_manifest(env, monkeypatch, f"{server.url}/gone.pth", "mc3.pth", model, sha256=sha)
    with pytest.raises(DownloadError, match="HTTP 404"):
        video3d_zoo.create_model("mc3_18", pretrained=True)
    _nothing_left()
