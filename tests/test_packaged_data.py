"""Data shipped inside the package: class-name lists and training configs and recipes (reachable by name)."""

from __future__ import annotations

import configparser
import fnmatch
import hashlib
import json
import subprocess
import sys

import pytest

from helpers import ROOT

from video3d_zoo.weights.labels import LABEL_SETS, load_label_set
from video3d_zoo.train.recipes import list_configs, packaged_configs_dir, resolve_config_path

PACKAGE = ROOT / "video3d_zoo"
# sha256 of each list as gathered and cross-checked (../shared/labels/README.md)
LABEL_SHA256 = {
    "kinetics400": "e9f2806fe9109b851a80a74841244f6f8c9d10917fa0229cd82bab67f2f8e28f",
    "kinetics700": "2f265d35aa76060219f7e83aff12f5aaba9d1fe27360aa83f11aad7a3648fc51",
    "ucf101": "745c32303fc09d541d15d3db235ea37cb84de2260ad76e6151b431a91ee6667e",
    "hmdb51": "c24c56a7af6f3ea55c8fb2a8e5b2c3a42644fcc5d86e49313536cfbd3499538a",
}


def _package_data_patterns():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return [p.strip() for p in cfg["options.package_data"]["video3d_zoo"].split(",")]


def _shipped(relative: str) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in _package_data_patterns())


@pytest.mark.parametrize("name", sorted(LABEL_SETS))
def test_label_lists_are_the_checked_ones_and_shipped(name):
    path = PACKAGE / "data" / "labels" / f"{name}.txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LABEL_SHA256[name]
    labels = load_label_set(name)
    assert len(labels) == LABEL_SETS[name].num_classes == len(set(labels))
    assert _shipped(f"data/labels/{name}.txt")


def test_label_orders():
    assert list(load_label_set("kinetics400")) == sorted(load_label_set("kinetics400"))
    ucf = load_label_set("ucf101")
    assert ucf.index("HammerThrow") < ucf.index("Hammering")  # classInd.txt: a case-sensitive sort
    assert load_label_set("hmdb51")[0] == "brush_hair"
    with pytest.raises(KeyError, match="unknown label set"):
        load_label_set("moments")


def test_one_copy_of_each_config():
    """Configs live once, in the package; the release recipes come from the recipe table, not files."""
    assert not (ROOT / "configs").exists(), "the training configs live in video3d_zoo/configs/ only"
    names = sorted(p.name for p in packaged_configs_dir().glob("*.toml"))
    assert names and all(_shipped(f"configs/{name}") for name in names)
    assert list_configs() == [n[: -len(".toml")] for n in names]


def test_config_by_name_or_path(tmp_path, monkeypatch):
    from video3d_zoo.errors import TrainConfigError
    from video3d_zoo.train.config import load_config

    monkeypatch.chdir(tmp_path)  # not the repository: names must come from the package
    by_name = load_config("synthetic_r3d")
    assert by_name.source == str(packaged_configs_dir() / "synthetic_r3d.toml")
    assert load_config("synthetic_r3d.toml").to_dict() == by_name.to_dict()
    path = packaged_configs_dir() / "synthetic_r3d.toml"
    assert load_config(str(path)).to_dict() == by_name.to_dict()
    recipe = load_config("resnext3d_101.ucf101s1_16f")
    assert recipe.source == "recipe:resnext3d_101.ucf101s1_16f" and recipe.model.pretrained == "k400_16f"
    assert load_config("ucf101_resnext101_finetune").to_dict() == recipe.to_dict()  # the config's old name
    (tmp_path / "synthetic_r3d").mkdir()  # an existing path wins over a packaged name
    assert resolve_config_path("synthetic_r3d") == tmp_path.joinpath("synthetic_r3d").relative_to(tmp_path)
    with pytest.raises(TrainConfigError, match="no such config file.*packaged configs \\(by name\\): .*synthetic_r3d"):
        load_config("no_such_recipe")
    with pytest.raises(TrainConfigError, match="no such config file"):
        load_config("sub/resnext3d_101.ucf101s1_16f")  # a path is never looked up by name


def test_cli_train_takes_a_packaged_config_by_name(tmp_path):
    result = subprocess.run([sys.executable, "-m", "video3d_zoo", "train", "resnext3d_101.ucf101s1_16f",
                             "--print-config"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads(result.stdout)
    assert config["model"]["name"] == "resnext3d_101" and config["source"] == "recipe:resnext3d_101.ucf101s1_16f"
