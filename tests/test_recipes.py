"""Recipes: one per release and per paper experiment, from one table; --list, --cost, --report; every
recipe resolves, and runs a step at tiny width on a synthetic set written in its own format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from format_sets import write_format_sets

from video3d_zoo import create_model, save_pretrained
from video3d_zoo.cli.commands import main
from video3d_zoo.jobs.synthetic import make_synthetic
from video3d_zoo.models.registry import family_of, get_model_spec
from video3d_zoo.train import DataIssues, load_config, train
from video3d_zoo.train.recipe_cost import ACCELERATOR, UTILISATION, recipe_cost
from video3d_zoo.train.recipe_report import gather_runs, measured_value, write_report
from video3d_zoo.train.recipe_table import TRAIN_VIDEOS
from video3d_zoo.train.recipes import all_recipes, find_recipes, recipe
from video3d_zoo.train.splits import read_split
from video3d_zoo.weights.manifest import load_manifest

RECIPES = all_recipes()
ORIGINAL = [e for e in load_manifest().entries if e.upstream and e.upstream.release in ("kenshohara2017", "kenshohara2020")]


def test_every_original_release_has_one_recipe():
    assert len(ORIGINAL) == 35
    reproduced = [r.reproduces for r in RECIPES if r.reproduces]
    assert sorted(reproduced) == sorted(f"{e.model}.{e.tag}" for e in ORIGINAL)
    assert len({r.name for r in RECIPES}) == len(RECIPES)
    assert all(r.sources() for r in RECIPES)


@pytest.mark.parametrize("name", [r.name for r in RECIPES])
def test_print_config(name, capsys):
    assert main(["train", name, "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    found = recipe(name)
    assert config["source"] == f"recipe:{name}" and config["model"]["name"] == found.entry.model
    assert config["model"]["frames"] == found.entry.input_spec.frames
    get_model_spec(config["model"]["name"])


def test_list_shows_each_release_and_its_reported_figure(capsys):
    assert main(["train", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for entry in ORIGINAL:
        line = next(text for text in lines if text.split()[:2] == [f"{entry.model}.{entry.tag}"] * 2)
        if entry.accuracy:
            assert f"{entry.accuracy[0].value:g} " in line
    assert main(["train", "--list", "paper"]) == 0
    out = capsys.readouterr().out
    for group in ("[scratch]", "[depth]", "[arch]", "[finetune]"):
        assert group in out
    rx64 = recipe("resnext3d_101.k400_64f").reported()
    assert f"resnext3d_101.k400_64f {rx64[0]:g}" in out
    names = {line.split()[0] for line in out.splitlines() if line and not line.startswith("[")} - {"recipe"}
    assert names == {r.name for r in find_recipes("paper")}
    assert {f"resnext3d_101.{d}s{s}_{f}f" for d in ("ucf101", "hmdb51") for s in (1, 2, 3) for f in (16, 64)} <= names
    assert {f"resnet3d_{d}.k400_16f" for d in (18, 34, 50, 101, 152, 200)} <= names


def test_cost_on_paper(capsys):
    r = recipe("resnext3d_101.k400_64f")
    cost = recipe_cost(r)
    flops = r.entry.gmacs * 1e9 * 6
    clips = TRAIN_VIDEOS["k400"][0] * r.config()["train"]["epochs"]
    assert cost.gpu_hours == pytest.approx(flops * clips / (ACCELERATOR[1] * UTILISATION) / 3600)
    assert cost.workers == math.ceil(ACCELERATOR[1] * UTILISATION / flops / 7.08)
    assert recipe_cost(r, frames=16).gmacs == pytest.approx(r.entry.gmacs / 4)
    assert main(["train", "--list", "depth", "--cost"]) == 0
    out = capsys.readouterr().out
    assert "H100" in out and "clips/s" in out and len(out.splitlines()) == 1 + 1 + 6 + 1  # group, header, recipes, assumptions


@pytest.mark.parametrize("argv, message", [
    (["--list", "nope"], "no recipe or group 'nope'"),
    (["--report", "/no/such/runs", "-o", "r.md"], "no such runs folder"),
    (["--cost"], "--cost goes with --list"),
    (["synthetic_r3d", "--list"], "take no config"),
    ([], "give a config file or recipe name"),
])
def test_recipe_options_refuse_bad_use(argv, message, capsys):
    try:
        status = main(["train", *argv])
    except SystemExit as exc:  # argparse's usage errors
        status = exc.code
    assert status == 2 and message in capsys.readouterr().err


# -- running the recipes on a synthetic set in each format -----------------------------------------------
@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = make_synthetic(tmp_path_factory.mktemp("syn"), videos_per_class=2, seed=3, size=32, frames=8,
                          test_fraction=0.5, classes=["move_right", "move_left", "zoom_in", "zoom_out"])
    return write_format_sets(root, tmp_path_factory.mktemp("sets"))


def data_overrides(config: dict, sets: dict) -> list:
    fmt = config["data"]["format"]
    if fmt == "merged":
        return [f"data.parts.{name}.{k}={v}" for name in config["data"]["merge"] for k, v in sets[name].items()
                if k != "format"]
    return [f"data.{k}={v}" for k, v in sets[fmt].items() if k != "format"]


def tiny_overrides(r, sets: dict, out: Path, epochs: int = 1, steps: int = 1, pretrained=None) -> list:
    config = r.config()
    tiny = family_of(r.entry.model).tiny_kwargs
    min_t, min_h, _ = create_model(r.entry.model, **tiny).min_input_size
    overrides = data_overrides(config, sets) + [
        f"model.arch_kwargs.{k}={v}" for k, v in tiny.items()] + [
        f"model.frames={max(8, min_t)}", f"model.crop_size={max(32, min_h)}", f"model.resize={max(32, min_h)}", "data.decode_short_side=0", "data.num_workers=0",
        "data.val_clips=1", "train.batch_size=4", f"train.epochs={epochs}", f"train.max_steps={steps}",
        "train.amp=none", "train.device=cpu", "train.threads=1", "train.progress=false", "train.tensorboard=false",
        "train.checkpoint_every_steps=0", f"output.dir={out}"]
    if pretrained:
        overrides.append(f"model.pretrained={pretrained}")
    if config["model"].get("num_classes"):
        labels = read_split(load_config(config, overrides).data, "train", DataIssues(echo=lambda _t: None)).labels
        overrides.append(f"model.num_classes={len(labels)}")
    return overrides


def _smoke_groups():
    groups = {}
    for r in RECIPES:
        key = (r.config()["data"]["format"], family_of(r.entry.model).name, r.row.base)
        groups.setdefault(key, r.name)
    return groups


@pytest.mark.parametrize("key", sorted(_smoke_groups()), ids="-".join)
def test_recipe_group_runs_a_step(key, sets, tmp_path):
    """One recipe per (format, family, base): a tiny training step through the recipe's whole config."""
    r = recipe(_smoke_groups()[key])
    pretrained = None
    if r.row.base == "finetune":  # a tiny stand-in for the Kinetics weights the recipe starts from
        donor = create_model(r.entry.model, num_classes=400, **family_of(r.entry.model).tiny_kwargs)
        pretrained = save_pretrained(donor, tmp_path / "donor", donor.config)
    cfg = load_config(r.name, tiny_overrides(r, sets, tmp_path, pretrained=pretrained) +
                      ["output.final_eval=false", "output.plot=false"])
    assert cfg.data.format == key[0]
    run = train(cfg)
    assert (run / "export" / "model.safetensors").is_file()
    assert json.loads((run / "train_config.json").read_text())["source"] == f"recipe:{r.name}"


def test_scratch_and_depth_groups_end_to_end_with_report(sets, tmp_path):
    """The from-scratch and depth-sweep groups: trained, evaluated, curves drawn, then one report."""
    runs = tmp_path / "runs"
    names = {r.name for r in find_recipes("scratch") + find_recipes("depth")}
    for name in sorted(names):
        r = recipe(name)
        epochs = 2 if "scratch" in r.groups else 1  # loss curves need epochs; the depth figure needs accuracies
        run = train(load_config(name, tiny_overrides(r, sets, runs, epochs=epochs, steps=0)))
        assert (run / "curves.png").is_file() and (run / "eval" / "metrics.json").is_file()
    ucf = sets["ucf101"]
    assert main(["eval", "--weights", str(runs / "resnet3d_18.ucf101s1_scratch" / "export"), ucf["root"], "--format",
                 "ucf101", "--annotations", ucf["annotations"], "--out", str(runs / "eval_ucf"), "--device", "cpu"]) == 0
    page = tmp_path / "docs" / "reproduction.md"
    assert main(["train", "--report", str(runs), "-o", str(page)]) == 0
    text = page.read_text()
    found = gather_runs(runs)
    evals = [f for f in found if f.kind == "eval"]
    assert len(evals) == 1 and evals[0].recipe is None and "eval_ucf" in text and "ucf101 test" in evals[0].protocol
    found = [f for f in found if f.kind == "train"]
    assert {f.recipe.name for f in found} == names
    for f in found:
        assert f"`{f.recipe.name}`" in text and f.top1 is not None
        if f.recipe.reported():
            assert f"{measured_value(f) - f.recipe.reported()[0]:+.1f}" in text
    assert (page.parent / "reproduction_scratch.png").is_file() and (page.parent / "reproduction_depth.png").is_file()
    assert "reproduction_depth.png" in text
    assert write_report(runs, tmp_path / "again.md").read_text().count("|") == text.count("|")
