"""Catalogue: a compiled library someone else could have planted in the cache never runs.

Each case plants a tiny shared library whose constructor writes a marker file, with a record that
names it and holds its true sha256 (so the hash alone would let it through), then runs a model
with ``compile=True``: the marker must not appear, one warning must say why, and the output must
be the eager model's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

import video3d_zoo
from video3d_zoo.inference import compiled
from video3d_zoo.inference.prepare import optimize_for_inference

pytestmark = pytest.mark.skipif(not compiled.available(), reason="this torch has no AOTInductor CPU runner")

CLIP = (3, 4, 32, 32)
LIBRARY_NAME = "planted.0123456789abcdef.so"
SOURCE = """
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *marker = fopen(MARKER, "w");
    if (marker) { fputs("the planted library ran", marker); fclose(marker); }
}
"""


@pytest.fixture(scope="module")
def planted_library(tmp_path_factory):
    """A library outside any cache whose constructor writes ``MARKER``: (library, marker)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the planted library")
    where = tmp_path_factory.mktemp("outside")
    marker, source = where / "MARKER", where / "planted.c"
    source.write_text(SOURCE)
    library = where / "planted.so"
    subprocess.run([cc, "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(library), str(source)], check=True)
    return library, marker


@pytest.fixture
def cache(tmp_path, monkeypatch, planted_library):
    """A private compiled-library folder every key of which names the planted library."""
    home = tmp_path / "home" / "compiled"
    home.mkdir(parents=True, mode=0o700)
    os.chmod(home.parent, 0o700)
    monkeypatch.setattr(compiled, "compiled_home", lambda: home)
    monkeypatch.setattr(compiled, "artefact_key", lambda *args, **kwargs: "planted")
    library, _ = planted_library
    target = home / LIBRARY_NAME
    shutil.copyfile(library, target)
    os.chmod(target, 0o600)
    record = home / "planted.json"
    record.write_text(json.dumps({"file": LIBRARY_NAME, "sha256": hashlib.sha256(library.read_bytes()).hexdigest()}))
    os.chmod(record, 0o600)
    return home


def run_compiled(marker):
    """Run a tiny model with compile=True; returns the RuntimeWarnings' messages after checking the output
    is the eager model's and the planted library did not run."""
    torch.manual_seed(0)
    model = video3d_zoo.create_model("resnet3d_10", widen_factor=0.125, num_classes=5).eval()
    fast = optimize_for_inference(model, compile=True, batch_size=2)
    x = torch.randn(2, *CLIP)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fast(x)
    assert not marker.exists(), "the planted library's constructor ran"
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_the_planted_library_writes_its_marker_when_loaded(planted_library, tmp_path):
    # The control: loading it is enough for its constructor to run.
    library, marker = planted_library
    subprocess.run([sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])", str(library)], check=True)
    assert marker.exists()
    marker.unlink()


def test_a_library_writable_by_others_is_not_loaded(cache, planted_library):
    os.chmod(cache / LIBRARY_NAME, 0o666)
    [message] = run_compiled(planted_library[1])
    assert LIBRARY_NAME in message and "writable by group or others (mode 0666)" in message


def test_a_record_writable_by_others_is_not_read(cache, planted_library):
    os.chmod(cache / "planted.json", 0o666)
    [message] = run_compiled(planted_library[1])
    assert "planted.json" in message and "writable by group or others" in message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file away needs root")
def test_a_library_owned_by_another_user_is_not_loaded(cache, planted_library):
    os.chown(cache / LIBRARY_NAME, 12345, 12345)
    [message] = run_compiled(planted_library[1])
    assert "owned by uid 12345" in message


def test_a_library_that_is_a_symlink_out_of_the_cache_is_not_loaded(cache, planted_library):
    library, marker = planted_library
    (cache / LIBRARY_NAME).unlink()
    (cache / LIBRARY_NAME).symlink_to(library)
    [message] = run_compiled(marker)
    assert "symbolic link" in message


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_cache_folder_writable_by_others_is_not_used(cache, planted_library, mode):
    os.chmod(cache, mode)
    [message] = run_compiled(planted_library[1])
    assert f"folder {cache}" in message and f"mode {mode:04o}" in message and "chmod go-w" in message


def test_a_parent_folder_writable_by_others_is_not_trusted(cache, planted_library):
    os.chmod(cache.parent, 0o777)  # without the sticky bit others may rename the cache folder away
    [message] = run_compiled(planted_library[1])
    assert f"parent {cache.parent}" in message


def test_folders_the_cache_creates_are_private_whatever_the_umask(tmp_path):
    from video3d_zoo.inference.trusted_files import private_folder

    old = os.umask(0)
    try:
        folder = private_folder(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert [oct(os.stat(p).st_mode & 0o777) for p in (folder.parent, folder)] == ["0o700", "0o700"]
