"""Pretrained loading through a real local HTTP server speaking the Hub file protocol (no network)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from helpers import ROOT
from hub_server import HubServer

import video3d_zoo
from video3d_zoo.weights import hub as zoo_hub
from video3d_zoo.errors import DownloadError, IntegrityError
from video3d_zoo.weights.manifest import MANIFEST_ENV, dumps
from video3d_zoo.weights.loading import save_pretrained

REPO = "test-org/resnet3d_10-tiny"
FILE = "model.safetensors"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small real model saved as a converted folder: (model, bytes of model.safetensors)."""
    torch.manual_seed(0)
    model = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=7)
    folder = save_pretrained(model, tmp_path_factory.mktemp("tiny") / "folder")
    return model, (folder / FILE).read_bytes()


@pytest.fixture
def hub(local_hub):
    return local_hub


@pytest.fixture
def env(hub_env, tmp_path):
    """HF_HOME in tmp, HF_ENDPOINT on the local server (conftest.hub_env); returns tmp_path."""
    return tmp_path


def publish(hub, tiny, tmp_path, repo_id=REPO, revision=None, sha256=None, size=None, filename=FILE):
    """Serve the tiny model and write a manifest pointing at it; return the manifest path."""
    model, data = tiny
    commit = hub.add_file(REPO, FILE, data)
    entry = {"model": "resnet3d_10", "tag": "tiny_16f", "default": True, "arch_kwargs": {"widen_factor": 0.125},
             "num_classes": 7, "labels": [f"class{i}" for i in range(7)],
             "input_spec": model.config.input_spec.to_dict(),
             "hub": {"repo_id": repo_id, "filename": filename, "revision": revision or commit,
                     "sha256": sha256 or hashlib.sha256(data).hexdigest(), "size": size or len(data)}}
    path = tmp_path / "weights_manifest.json"
    path.write_text(dumps({"schema_version": 1, "aliases": {"resnet3d_10": {"tiny": "tiny_16f"}},
                           "entries": [entry]}), encoding="utf-8")
    os.environ[MANIFEST_ENV] = str(path)
    return path


@pytest.fixture(autouse=True)
def _restore_manifest_env():
    saved = os.environ.get(MANIFEST_ENV)
    yield
    if saved is None:
        os.environ.pop(MANIFEST_ENV, None)
    else:
        os.environ[MANIFEST_ENV] = saved


def resolves(hub, method=None):
    return [r for r in hub.requests if "/resolve/" in r[1] and (method is None or r[0] == method)]


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def cache_files(env_path: Path):
    root = env_path / "hf_home" / "hub" / f"models--{REPO.replace('/', '--')}"
    blobs = sorted(p.name for p in (root / "blobs").iterdir()) if (root / "blobs").is_dir() else []
    snaps = sorted(str(p.relative_to(root / "snapshots")) for p in (root / "snapshots").rglob("*")
                   if p.is_file() or p.is_symlink()) if (root / "snapshots").is_dir() else []
    return blobs, snaps


# -- the happy paths -------------------------------------------------------------------------------
def test_download_and_load_default(env, hub, tiny):
    publish(hub, tiny, env)
    model = video3d_zoo.create_model("resnet3d_10", pretrained=True)
    assert same_weights(model, tiny[0])
    assert not model.training
    assert model.config.tag == "tiny_16f" and model.config.labels[0] == "class0"
    assert model.config.source.startswith(f"hf://{REPO}@")
    assert len(resolves(hub, "GET")) == 1
    blobs, snaps = cache_files(env)
    assert blobs == [hashlib.sha256(tiny[1]).hexdigest()] and len(snaps) == 1


def test_tag_alias_dotted_name_factory_and_hub_alias(env, hub, tiny):
    publish(hub, tiny, env)
    for model in (video3d_zoo.create_model("resnet3d_10", pretrained="tiny_16f"),
                  video3d_zoo.create_model("resnet3d_10", pretrained="tiny"),
                  video3d_zoo.create_model("resnet3d_10.tiny_16f", pretrained=True),
                  video3d_zoo.create_model("resnet10_3d", pretrained="tiny"),
                  video3d_zoo.resnet3d_10(pretrained="tiny_16f")):
        assert same_weights(model, tiny[0])
    assert len(resolves(hub, "GET")) == 1  # downloaded once, then the cache


def test_num_classes_mismatch_keeps_backbone_and_gives_a_fresh_head(env, hub, tiny):
    publish(hub, tiny, env)
    model = video3d_zoo.create_model("resnet3d_10", pretrained=True, num_classes=3)
    assert model.fc.out_features == 3 and model.config.num_classes == 3 and model.config.labels is None
    ref = tiny[0].state_dict()
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in ref.items() if not k.startswith("fc."))
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 3)


def test_warm_cache_makes_no_request_even_with_the_server_down(env, hub, tiny, monkeypatch):
    publish(hub, tiny, env)
    video3d_zoo.create_model("resnet3d_10", pretrained=True)
    before = hub.count
    hub.stop()
    model = video3d_zoo.create_model("resnet3d_10", pretrained=True)
    assert same_weights(model, tiny[0]) and hub.count == before
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there either
    assert same_weights(video3d_zoo.create_model("resnet3d_10", pretrained="tiny"), tiny[0])


def test_a_warm_start_from_a_pinned_commit_does_not_import_huggingface_hub(env, hub, tiny):
    # huggingface_hub's downloading modules (~0.15 s of imports) would cost more than the rest of a
    # warm start; its package root and constants (under 1 ms, read for HF_HUB_OFFLINE) are fine.
    publish(hub, tiny, env)
    video3d_zoo.create_model("resnet3d_10", pretrained=True)
    hub.stop()
    code = ("import sys, video3d_zoo; m = video3d_zoo.create_model('resnet3d_10', pretrained=True); "
            "print(sorted(k for k in sys.modules if k.startswith('huggingface_hub')), "
            "sum(float(p.double().sum()) for p in m.parameters()))")
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env, timeout=120)
    assert out.returncode == 0, out.stderr
    modules, total = out.stdout.rsplit(" ", 1)
    assert modules == "['huggingface_hub', 'huggingface_hub.constants']"
    assert float(total) == pytest.approx(sum(float(p.detach().double().sum()) for p in tiny[0].parameters()))


def test_offline_mode_warm_cache_works_cold_cache_errors_clearly(env, hub, tiny, monkeypatch):
    publish(hub, tiny, env)
    video3d_zoo.create_model("resnet3d_10", pretrained=True)
    before = hub.count
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert same_weights(video3d_zoo.create_model("resnet3d_10", pretrained=True), tiny[0])
    monkeypatch.setenv("HF_HOME", str(env / "cold_home"))
    with pytest.raises(DownloadError) as info:
        video3d_zoo.create_model("resnet3d_10", pretrained=True)
    text = str(info.value)
    assert "offline mode (HF_HUB_OFFLINE) is on" in text and str(env / "cold_home") in text
    assert REPO in text and FILE in text
    assert hub.count == before


def test_verified_marker_skips_rehash_but_not_after_a_change(env, hub, tiny, monkeypatch):
    publish(hub, tiny, env)
    video3d_zoo.create_model("resnet3d_10", pretrained=True)
    calls = []
    real = zoo_hub.sha256_file
    monkeypatch.setattr(zoo_hub, "sha256_file", lambda p, *a: calls.append(p) or real(p, *a))
    video3d_zoo.create_model("resnet3d_10", pretrained=True)
    assert calls == []  # same size, inode, mtime and ctime: trusted without re-hashing
    monkeypatch.setenv("VIDEO3D_ZOO_VERIFY", "always")
    video3d_zoo.create_model("resnet3d_10", pretrained=True)
    assert len(calls) == 1


# -- integrity -------------------------------------------------------------------------------------
def test_tampered_bytes_are_refused_and_not_left_in_the_cache(env, hub, tiny):
    publish(hub, tiny, env)
    hub.tamper = True  # same size, same advertised sha256, one flipped byte
    expected = hashlib.sha256(tiny[1]).hexdigest()
    bad = bytes([tiny[1][0] ^ 0xFF]) + tiny[1][1:]
    with pytest.raises(IntegrityError) as info:
        video3d_zoo.create_model("resnet3d_10", pretrained=True)
    text = str(info.value)
    assert f"expected {expected}" in text and f"got {hashlib.sha256(bad).hexdigest()}" in text
    assert "removed from the cache" in text
    assert cache_files(env) == ([], [])
    hub.tamper = False  # the next load downloads a good copy
    assert same_weights(video3d_zoo.create_model("resnet3d_10", pretrained=True), tiny[0])


def test_a_cached_file_changed_on_disk_is_detected_and_replaced(env, hub, tiny):
    publish(hub, tiny, env)
    video3d_zoo.create_model("resnet3d_10", pretrained=True)
    blob = env / "hf_home" / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs" / hashlib.sha256(tiny[1]).hexdigest()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    stat = blob.stat()
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime restored
    with pytest.warns(UserWarning, match="sha256 mismatch"):
        model = video3d_zoo.create_model("resnet3d_10", pretrained=True)
    assert same_weights(model, tiny[0])
    assert len(resolves(hub, "GET")) == 2


def test_file_truncated_on_the_server_is_refused_before_download(env, hub, tiny):
    publish(hub, tiny, env)
    hub.truncate_to = len(tiny[1]) // 2
    with pytest.raises(IntegrityError, match=f"the server reports {len(tiny[1]) // 2} bytes, the manifest "
                                             f"expects {len(tiny[1])} bytes"):
        video3d_zoo.create_model("resnet3d_10", pretrained=True)
    assert resolves(hub, "GET") == [] and cache_files(env) == ([], [])


def test_wrong_size_in_the_manifest_is_refused(env, hub, tiny):
    publish(hub, tiny, env, size=len(tiny[1]) + 1)
    with pytest.raises(IntegrityError, match="manifest expects"):
        video3d_zoo.create_model("resnet3d_10", pretrained=True)


def test_connection_cut_mid_body_resumes_and_verifies(env, hub, tiny):
    publish(hub, tiny, env)
    hub.cut_body_once = True
    model = video3d_zoo.create_model("resnet3d_10", pretrained=True)  # huggingface_hub resumes with Range
    assert same_weights(model, tiny[0])
    assert len(resolves(hub, "GET")) == 2
    blobs, _ = cache_files(env)
    assert blobs == [hashlib.sha256(tiny[1]).hexdigest()]


# -- failures are DownloadErrors that say what happened --------------------------------------------
def test_unknown_revision(env, hub, tiny):
    publish(hub, tiny, env, revision="0123456789abcdef0123456789abcdef01234567")
    with pytest.raises(DownloadError, match="the repository has no such commit") as info:
        video3d_zoo.create_model("resnet3d_10", pretrained=True)
    assert "0123456789abcdef0123456789abcdef01234567" in str(info.value) and hub.endpoint in str(info.value)


def test_404_repository_and_file(env, hub, tiny):
    publish(hub, tiny, env, repo_id="test-org/missing")
    with pytest.raises(DownloadError, match="repository not found"):
        video3d_zoo.create_model("resnet3d_10", pretrained=True)
    publish(hub, tiny, env, filename="other.safetensors")
    with pytest.raises(DownloadError, match="the file is not in that commit"):
        video3d_zoo.create_model("resnet3d_10", pretrained=True)


def test_http_500(env, hub, tiny, monkeypatch):
    publish(hub, tiny, env)
    hub.status = 500
    with pytest.raises(DownloadError, match="HTTP 500") as info:
        video3d_zoo.create_model("resnet3d_10", pretrained=True)
    assert REPO in str(info.value) and "try again later" in str(info.value)
    assert len(resolves(hub)) == 1
    monkeypatch.setenv("VIDEO3D_ZOO_HUB_RETRIES", "1")
    with pytest.raises(DownloadError, match="after 2 attempts"):
        video3d_zoo.create_model("resnet3d_10", pretrained=True)
    assert len(resolves(hub)) == 3


def test_timeout(env, hub, tiny, monkeypatch):
    publish(hub, tiny, env)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "0.5")
    hub.delay = 2.0
    start = time.monotonic()
    with pytest.raises(DownloadError, match="no answer within 0.5 s"):
        video3d_zoo.create_model("resnet3d_10", pretrained=True)
    assert time.monotonic() - start < 2.0


def test_server_down_cold_cache(env, hub, tiny, monkeypatch):
    publish(hub, tiny, env)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(DownloadError, match="cannot reach http://127.0.0.1:9"):
        video3d_zoo.create_model("resnet3d_10", pretrained=True)


def test_endpoint_is_read_at_call_time(env, hub, tiny, monkeypatch):
    publish(hub, tiny, env)
    with HubServer() as other:
        other.add_file(REPO, FILE, tiny[1])
        other.repos[REPO].commits = hub.repos[REPO].commits  # same commit ids on the mirror
        monkeypatch.setenv("HF_ENDPOINT", other.endpoint)
        video3d_zoo.create_model("resnet3d_10", pretrained=True)
        assert len(resolves(other, "GET")) == 1 and resolves(hub) == []


# -- two processes at once -------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import os, sys, time
    import video3d_zoo
    go = sys.argv[1]
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    model = video3d_zoo.create_model("resnet3d_10", pretrained=True)
    print("ok", sum(float(p.double().sum()) for p in model.parameters()), flush=True)
""")


def test_two_processes_loading_the_same_entry_at_once(env, hub, tiny):
    publish(hub, tiny, env)
    hub.chunk_delay = 0.02  # a slow transfer, so the two downloads overlap
    go = env / "go"
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=child_env) for _ in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    sums = {out.split()[-1] for out, _ in outputs}
    assert len(sums) == 1
    expected = sum(float(p.detach().double().sum()) for p in tiny[0].parameters())
    assert float(sums.pop()) == pytest.approx(expected)
    sha = hashlib.sha256(tiny[1]).hexdigest()
    blobs, snaps = cache_files(env)
    assert blobs == [sha] and len(snaps) == 1
    storage = env / "hf_home" / "hub" / f"models--{REPO.replace('/', '--')}"
    assert not list(storage.rglob("*.incomplete"))
    assert zoo_hub.sha256_file(storage / "blobs" / sha) == sha
    assert 1 <= len(resolves(hub, "GET")) <= 2  # huggingface_hub's file lock: normally one transfer
