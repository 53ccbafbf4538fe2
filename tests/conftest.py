"""Shared fixtures."""

from __future__ import annotations

import sys

import pytest

from helpers import DATA


@pytest.fixture(scope="session", autouse=True)
def _isolated_weights_home(tmp_path_factory):
    """No test sees (or writes to) the weights a developer installed with ``video3d-zoo import``."""
    import os

    saved = os.environ.get("VIDEO3D_ZOO_HOME")
    os.environ["VIDEO3D_ZOO_HOME"] = str(tmp_path_factory.mktemp("video3d_zoo_home"))
    yield
    if saved is None:
        os.environ.pop("VIDEO3D_ZOO_HOME", None)
    else:
        os.environ["VIDEO3D_ZOO_HOME"] = saved


@pytest.fixture(scope="session")
def recipe():
    sys.path.insert(0, str(DATA / "golden"))
    try:
        import recipe as module
    finally:
        sys.path.pop(0)
    return module


@pytest.fixture
def local_hub():
    """A Hugging Face Hub file server on 127.0.0.1 (tests/hub_server.py)."""
    from hub_server import HubServer

    with HubServer() as server:
        yield server


@pytest.fixture
def hub_env(monkeypatch, tmp_path, local_hub):
    """HF_HOME in tmp, HF_ENDPOINT on the local server, fast failure settings."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HF_HUB_OFFLINE",
                "TRANSFORMERS_OFFLINE", "VIDEO3D_ZOO_VERIFY", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    settings = {"HF_HOME": str(tmp_path / "hf_home"), "HF_ENDPOINT": local_hub.endpoint,
                "HF_HUB_ETAG_TIMEOUT": "5", "VIDEO3D_ZOO_HUB_RETRIES": "0", "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    return local_hub
