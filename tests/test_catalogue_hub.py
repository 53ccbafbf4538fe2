"""Catalogue of bad Hub references and misbehaving Hub servers (issue 20, part 1), on 127.0.0.1 only.

Each refused case asserts the error, the exit status of the command line, that no request was sent
where the name alone is wrong, and that nothing under the test's folder changed (a snapshot of the
whole tree before and after).  The good cases check that the zoo's downloads are huggingface_hub's
own: its refs let an offline load find a branch resolved online, and ``scan_cache_dir`` (what
``hf cache scan`` prints) lists them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

import video3d_zoo
from video3d_zoo.api import load_model
from video3d_zoo.cli import commands as cli
from video3d_zoo.errors import CheckpointError, ConfigError, DownloadError, IntegrityError
from video3d_zoo.fileio import ensure_inside
from video3d_zoo.weights.hub import download
from video3d_zoo.weights.hub_repos import fetch_repo_file
from video3d_zoo.weights.loading import from_pretrained, save_pretrained
from videos import write_video

REPO = "org/r3d10"
CLIMB = "../../../../hub/VICTIM"  # from <cache>/models--org--r3d10/refs/ to <tmp>/hub/VICTIM


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=5)
    return model, save_pretrained(model, tmp_path_factory.mktemp("tiny") / "folder")


@pytest.fixture
def served(hub_env, tiny_folder, tmp_path, monkeypatch):
    """The tiny folder as ``org/r3d10`` on a Hub that answers any revision; a user file at the spot a
    climbing revision names, and a video to classify; the working folder is ``tmp_path``."""
    model, folder = tiny_folder
    for name in ("config.json", "model.safetensors"):
        hub_env.add_file(REPO, name, (folder / name).read_bytes())
    hub_env.any_revision = True
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "VICTIM").write_text("the user's own file\n")
    write_video(tmp_path / "ok.mp4", 4, 32, 24)
    monkeypatch.chdir(tmp_path)
    return hub_env, model


def tree(root: Path) -> dict:
    """Every path under ``root`` with its kind and content hash: what 'nothing changed' compares."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            out[rel] = ("dir",)
    return out


def only_heads(hub) -> bool:
    """Metadata requests only: no file body was fetched (huggingface_hub's own /api calls aside)."""
    files = [r for r in hub.requests if "/resolve/" in r[1]]
    return bool(files) and all(method == "HEAD" for method, _ in files)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- names that are not names: refused before any request, nothing written ---------------------------
BAD_REFS = [
    (f"hf-hub:{REPO}@{CLIMB}", "revision '../../../../hub/VICTIM' is not valid (contains '..')"),
    ("hf-hub:org--x/r3d10", "repository id 'org--x/r3d10' is not valid"),
    ("hf-hub:../r3d10", "repository id '../r3d10' is not valid"),
    (f"hf-hub:{REPO}@main@x", "revision 'main@x' is not valid (contains the character(s) '@')"),
    (f"hf-hub:{REPO}@../../x", "revision '../../x' is not valid (contains '..')"),
    (f"hf-hub:{REPO}@-x", "starts with '-'"),
    (f"hf-hub:{REPO}@/main", "starts with '/'"),
    (f"hf-hub:{REPO}@main.lock", "ends with '.lock'"),
    (f"hf-hub:{REPO}@v1/.hidden", "starts with '.'"),
    (f"hf-hub:{REPO}@a~1", "'~'"),
    (f"hf-hub:{REPO}@a:b", "':'"),
    (f"hf-hub:{REPO}@a\x01b", "a control character"),
    (f"hf-hub:{REPO}@main/", "ends with '/'"),
    (f"hf-hub:{REPO}@a//b", "an empty component"),
    (f"hf-hub:{REPO}@", "revision '' is not valid (empty)"),
    ("hf-hub:org/r3d10/x", "not of the form ORG/NAME"),
]


@pytest.mark.parametrize("ref,problem", BAD_REFS, ids=[r for r, _ in BAD_REFS])
def test_bad_reference_is_one_line_exit_2_no_request_nothing_written(served, tmp_path, capsys, ref, problem):
    hub, _ = served
    before = tree(tmp_path)
    assert cli.main(["classify", "ok.mp4", "--model", ref]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert problem in lines[0] and "expected hf-hub:ORG/REPO or hf-hub:ORG/REPO@REVISION" in lines[0], lines[0]
    for call in (lambda: load_model(ref), lambda: from_pretrained(ref), lambda: video3d_zoo.create_model(ref),
                 lambda: video3d_zoo.create_model("resnet3d_10", pretrained=ref)):
        with pytest.raises(ConfigError, match="expected hf-hub:ORG/REPO"):
            call()
    assert hub.requests == []
    assert tree(tmp_path) == before
    assert (tmp_path / "hub" / "VICTIM").read_text() == "the user's own file\n"


def test_the_lower_layers_check_names_too(served, tmp_path):
    """A revision or file name that reaches the download functions without the parser is refused there."""
    hub, _ = served
    before = tree(tmp_path)
    with pytest.raises(ConfigError, match="revision '../../../../hub/VICTIM' is not a branch or tag name"):
        fetch_repo_file(REPO, "config.json", CLIMB)
    with pytest.raises(ConfigError, match="file name '../config.json' is not a relative path"):
        fetch_repo_file(REPO, "../config.json")
    with pytest.raises(ConfigError, match="repository id 'org--x/r3d10' is not valid"):
        fetch_repo_file("org--x/r3d10", "config.json")
    with pytest.raises(ConfigError, match="revision '../../x' is not a branch"):
        download(repo_id=REPO, filename="model.safetensors", revision="../../x", sha256="0" * 64, size=1)
    assert hub.requests == [] and tree(tmp_path) == before


# -- servers that answer with something else -------------------------------------------------------
def test_a_pinned_commit_answered_with_another_commit_is_refused(served, tmp_path):
    hub, _ = served
    pinned = "0" * 40  # the server does not have it and answers with main's commit
    before = tree(tmp_path)
    with pytest.raises(DownloadError, match=f"answered the pinned commit {pinned} with commit "
                                            f"{hub.repos[REPO].branches['main']}; refused, nothing downloaded"):
        load_model(f"hf-hub:{REPO}@{pinned}")
    with pytest.raises(DownloadError, match="answered the pinned commit"):
        download(repo_id=REPO, filename="model.safetensors", revision=pinned, sha256="0" * 64, size=1)
    assert only_heads(hub)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("field,value,message", [
    ("fake_commit", "../../../../hub/VICTIM", "the server named no commit id"),
    ("fake_etag", "../../../../hub/VICTIM", "is neither a sha256 nor a git blob id"),
])
def test_a_server_announcing_a_path_is_refused(served, tmp_path, field, value, message):
    """The commit and ETag the server announces name the snapshot folder and blob huggingface_hub writes."""
    hub, _ = served
    setattr(hub, field, value)
    before = tree(tmp_path)
    with pytest.raises(DownloadError, match=message):
        load_model(f"hf-hub:{REPO}")
    assert only_heads(hub)
    assert tree(tmp_path) == before


def test_create_model_takes_a_hub_folder_as_pretrained(served):
    hub, model = served
    loaded = video3d_zoo.create_model("resnet3d_10", pretrained=f"hf-hub:{REPO}")
    assert same_weights(loaded, model) and loaded.config.source == f"hf-hub:{REPO}"
    with pytest.raises(CheckpointError, match=f"hf-hub:{REPO} holds a resnet3d_10 checkpoint, not resnet3d_18"):
        video3d_zoo.create_model("resnet3d_18", pretrained=f"hf-hub:{REPO}")


def test_a_manifest_download_never_writes_where_the_announced_etag_points(served, tmp_path, tiny_folder):
    """huggingface_hub names the blob after the ETag as announced: a path there would be written to."""
    hub, _ = served
    data = (tiny_folder[1] / "model.safetensors").read_bytes()
    commit = hub.repos[REPO].branches["main"]
    hub.fake_etag = "../../../../hub/VICTIM"
    before = tree(tmp_path)
    with pytest.raises(ConfigError, match="outside"):
        download(repo_id=REPO, filename="model.safetensors", revision=commit,
                 sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    assert only_heads(hub)
    assert tree(tmp_path) == before


# -- huggingface_hub's cache, refs and scan ---------------------------------------------------------
@pytest.mark.parametrize("branch", ["dev", "release/v1"])
def test_offline_finds_the_branch_an_online_load_resolved(hub_env, tiny_folder, monkeypatch, tmp_path, branch):
    model, folder = tiny_folder
    for name in ("config.json", "model.safetensors"):
        commit = hub_env.add_file(REPO, name, (folder / name).read_bytes(), branch=branch)
    assert same_weights(load_model(f"hf-hub:{REPO}@{branch}"), model)
    ref = tmp_path / "hf_home" / "hub" / "models--org--r3d10" / "refs" / branch
    assert ref.read_text() == commit  # written by huggingface_hub itself
    served = hub_env.count
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model(f"hf-hub:{REPO}@{branch}")
    assert same_weights(loaded, model) and loaded.config.source == f"hf-hub:{REPO}@{branch}"
    assert hub_env.count == served
    with pytest.raises(DownloadError, match="offline"):
        load_model(f"hf-hub:{REPO}@other")


def test_scan_cache_dir_sees_the_zoo_downloads(hub_env, tiny_folder, tmp_path):
    from huggingface_hub import scan_cache_dir

    model, folder = tiny_folder
    for name in ("config.json", "model.safetensors"):
        commit = hub_env.add_file(REPO, name, (folder / name).read_bytes())
    load_model(f"hf-hub:{REPO}")
    info = scan_cache_dir(tmp_path / "hf_home" / "hub")
    assert info.warnings == []
    (repo,) = info.repos
    assert (repo.repo_id, repo.repo_type) == (REPO, "model")
    (revision,) = repo.revisions
    assert revision.commit_hash == commit and revision.refs == frozenset({"main"})
    assert sorted(f.file_name for f in revision.files) == ["config.json", "model.safetensors"]
    # a refused file leaves through the same cache manager: the scan stays clean and shows it gone
    hub_env.add_file(REPO, "model.safetensors", (folder / "model.safetensors").read_bytes() + b" ")
    hub_env.tamper = True
    with pytest.raises(IntegrityError, match="removed from the cache"):
        load_model(f"hf-hub:{REPO}")
    info = scan_cache_dir(tmp_path / "hf_home" / "hub")
    assert info.warnings == []
    names = {(r.commit_hash, f.file_name) for r in next(iter(info.repos)).revisions for f in r.files}
    assert (commit, "model.safetensors") in names  # the earlier, good commit is untouched
    assert not any(c != commit and n == "model.safetensors" for c, n in names)


# -- the containment helper ---------------------------------------------------------------------------
def test_ensure_inside(tmp_path):
    root = tmp_path / "cache"
    (root / "a").mkdir(parents=True)
    assert ensure_inside(root / "a" / "new.txt", root) == (root / "a" / "new.txt").resolve()
    for outside in (root / ".." / "x", root / "a" / ".." / ".." / "x", tmp_path / "cache2" / "x"):
        with pytest.raises(ConfigError, match="outside"):
            ensure_inside(outside, root)
    (root / "link").symlink_to(tmp_path)  # a planted link out of the folder
    with pytest.raises(ConfigError, match="outside"):
        ensure_inside(root / "link" / "x", root, "refs")
