"""The training submodule: config, readers, sampler, schedules, trainer, resume, DDP, fine-tuning, eval."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from video3d_zoo.jobs.synthetic import make_synthetic
from video3d_zoo.train import DataError, DataIssues, TrainConfigError, load_config, read_folder, train
from video3d_zoo.train.config import parse_override
from video3d_zoo.train.data import ShardedBatchSampler, TrainClips, collate_train, make_sampling
from video3d_zoo.train.readers import read_hmdb51, read_kinetics, read_ucf101
from video3d_zoo.train.loop import KILL_ENV
from video3d_zoo.train.prepare import freeze_before, set_train_mode
from video3d_zoo.train.schedule import LRSchedule

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "video3d_zoo" / "configs").glob("*.toml"))


def _safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 classes x 4 videos (3 train, 1 test), 32x32, 8 frames."""
    return make_synthetic(tmp_path_factory.mktemp("data"), videos_per_class=4, seed=5, size=32, frames=8)


def tiny_config(data_root: Path, out_dir: Path, name: str, **extra) -> dict:
    cfg = {
        "model": {"name": "resnet3d_10", "arch_kwargs": {"widen_factor": 0.125, "stem_kernel_t": 3},
                  "frames": 4, "crop_size": 32, "resize": 32},
        "data": {"format": "folder", "root": str(data_root), "train_list": "train", "val_list": "test",
                 "hflip": False, "n_scales": 2},
        "optim": {"lr": 0.05, "weight_decay": 1e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 0.5},
        "train": {"epochs": 2, "batch_size": 8, "threads": 1, "seed": 3, "progress": False,
                  "tensorboard": False, "val_every": 1},
        "output": {"dir": str(out_dir), "name": name, "plot": False},
    }
    for key, value in extra.items():
        section, field = key.split("__")
        cfg.setdefault(section, {})[field] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """One uninterrupted tiny run (checkpoint every step), reused by several tests."""
    out = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(dataset, out, "base", train__checkpoint_every_steps=1)
    path = write_config(out / "base.json", cfg)
    run = train(path)
    return path, run


# -- config -----------------------------------------------------------------------------------------
def test_overrides_and_validation(tmp_path):
    assert parse_override("optim.lr=0.01") == ("optim.lr", 0.01)
    assert parse_override("schedule.milestones=[3, 6]") == ("schedule.milestones", [3, 6])
    assert parse_override("data.root=/data/k700") == ("data.root", "/data/k700")
    assert parse_override("optim.nesterov=true") == ("optim.nesterov", True)
    cfg = load_config({"data": {"format": "synthetic", "root": "x"}}, ["optim.lr=0.5", "train.amp=bf16"])
    assert cfg.optim.lr == 0.5 and cfg.train.amp == "bf16"
    with pytest.raises(TrainConfigError, match="optim.lrr.*did you mean optim.lr"):
        load_config({"data": {"root": "x"}}, ["optim.lrr=1"])
    with pytest.raises(TrainConfigError, match="train.epochs.*integer"):
        load_config({"data": {"root": "x"}}, ["train.epochs=ten"])
    with pytest.raises(TrainConfigError, match="schedule.name.*one of"):
        load_config({"data": {"root": "x"}}, ["schedule.name=linear"])
    with pytest.raises(TrainConfigError, match="nesterov"):
        load_config({"data": {"root": "x"}}, ["optim.nesterov=true", "optim.dampening=0.9"])
    with pytest.raises(TrainConfigError, match="data.root"):
        load_config({"data": {"format": "kinetics"}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nlr = \n")
    with pytest.raises(TrainConfigError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_committed_configs_validate(path):
    cfg = load_config(path)
    assert cfg.model.name
    from video3d_zoo.models.registry import get_model_spec

    get_model_spec(cfg.model.name.split(".")[0])


# -- data readers -----------------------------------------------------------------------------------
def test_folder_reader_skips_or_fails_on_bad_rows(dataset, tmp_path):
    good = (dataset / "train.txt").read_text().split()
    lines = good[:3] + ["move_left/nope.mp4", "move_left/a.mp4 extra fields", "jump/v.mp4"]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    issues = DataIssues("skip", echo=lambda _t: None)
    videos = read_folder(dataset, str(tmp_path / "list.txt"), issues=issues)
    assert len(videos) == 3
    assert issues.counts == {"missing_video": 1, "malformed_row": 2}
    assert any("list.txt:4" in m for m in issues.messages)
    with pytest.raises(DataError, match=r"list\.txt:4: missing video"):
        read_folder(dataset, str(tmp_path / "list.txt"), issues=DataIssues("fatal"))


def _video_like(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)


def test_kinetics_reader(dataset, tmp_path):
    video = next(dataset.glob("move_up/*.mp4"))
    root = tmp_path / "k"
    _video_like(video, root / "train" / "abseiling" / "AAA_000010_000020.mp4")
    _video_like(video, root / "train" / "air drumming" / "BBB.mp4")  # untrimmed: decoded 5..15 s
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("label,youtube_id,time_start,time_end,split\n"
                        "abseiling,AAA,10,20,train\n"
                        "air drumming,BBB,5,15,train\n"
                        "abseiling,CCC,0,10,train\n"          # missing video
                        "abseiling,DDD,ten,20,train\n"        # malformed time
                        "abseiling,EEE,0,10\n")               # wrong field count
    issues = DataIssues("skip", echo=lambda _t: None)
    videos = read_kinetics(csv_path, root, issues=issues)
    assert videos.labels == ["abseiling", "air drumming"]
    assert [(v.video_id, v.label, v.start_s) for v in videos.items] == [
        ("AAA_000010_000020", 0, None), ("BBB_000005_000015", 1, 5.0)]
    assert issues.counts == {"missing_video": 1, "malformed_row": 2}
    assert any("train.csv:4" in m and "CCC" in m for m in issues.messages)
    with pytest.raises(DataError, match=r"train\.csv:4"):
        read_kinetics(csv_path, root, issues=DataIssues("fatal"))


def test_ucf101_and_hmdb51_readers(dataset, tmp_path):
    video = next(dataset.glob("zoom_in/*.mp4"))
    root = tmp_path / "ucf"
    for rel in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "Archery/v_Archery_g01_c01.avi"):
        _video_like(video, root / rel)
    ann = tmp_path / "ucfTrainTestlist"
    ann.mkdir()
    (ann / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (ann / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                                        "Archery/v_Archery_g09_c01.avi 2\n"      # missing
                                        "Archery/v_Archery_g01_c01.avi 1\n")     # wrong class index
    (ann / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    issues = DataIssues("skip", echo=lambda _t: None)
    train_set = read_ucf101(ann, root, 1, "train", issues)
    assert [v.label for v in train_set.items] == [0] and issues.counts == {"missing_video": 1, "malformed_row": 1}
    test_set = read_ucf101(ann, root, 1, "test", DataIssues("fatal"))
    assert [v.label for v in test_set.items] == [1] and test_set.labels == ["ApplyEyeMakeup", "Archery"]

    hroot, hann = tmp_path / "hmdb", tmp_path / "splits"
    hann.mkdir()
    _video_like(video, hroot / "wave" / "w1.avi")
    _video_like(video, hroot / "clap" / "c1.avi")
    (hann / "wave_test_split1.txt").write_text("w1.avi 1\nw2.avi 2\n")
    (hann / "clap_test_split1.txt").write_text("c1.avi 2\nbroken\n")
    issues = DataIssues("skip", echo=lambda _t: None)
    h_train = read_hmdb51(hann, hroot, 1, "train", issues)
    assert h_train.labels == ["clap", "wave"] and [v.label for v in h_train.items] == [1]
    h_test = read_hmdb51(hann, hroot, 1, "test", issues)
    assert [v.label for v in h_test.items] == [0]
    assert issues.counts == {"malformed_row": 2, "missing_video": 1}


def test_undecodable_video_is_replaced_and_reported(dataset, tmp_path):
    from video3d_zoo.models.config import InputSpec

    bad = tmp_path / "move_up" / "bad.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(300))
    good = sorted((dataset / "move_up").glob("*.mp4"))[0]
    _video_like(good, tmp_path / "move_up" / "good.mp4")
    (tmp_path / "classes.txt").write_text("move_up\n")
    (tmp_path / "train.txt").write_text("move_up/bad.mp4\nmove_up/good.mp4\n")
    videos = read_folder(tmp_path, "train")
    spec = InputSpec(frames=4, crop_size=32, resize=32)
    sampling = make_sampling(load_config({"data": {"root": "x"}}).data, spec)
    sample = TrainClips(videos, sampling, seed=0)[(0, 0)]
    assert sample["clip"].shape == (3, 4, 32, 32)
    assert len(sample["errors"]) == 1 and "train.txt:1" in sample["errors"][0][0]
    batch = collate_train([sample])
    assert batch["errors"] and batch["clip"].shape[0] == 1


# -- sampler and schedules --------------------------------------------------------------------------
def test_sharded_sampler_covers_the_single_process_batches():
    one = ShardedBatchSampler(20, 8, seed=4)
    r0 = ShardedBatchSampler(20, 8, rank=0, world_size=2, seed=4)
    r1 = ShardedBatchSampler(20, 8, rank=1, world_size=2, seed=4)
    acc = ShardedBatchSampler(20, 8, accumulate=2, seed=4)
    for s in (one, r0, r1, acc):
        s.set_epoch(3)
    b1, b0, b2, ba = list(one), list(r0), list(r1), list(acc)
    assert len(b1) == 2 and len(b0) == len(b2) == 2 and len(ba) == 4
    for i in range(2):
        assert b1[i] == b0[i] + b2[i] == ba[2 * i] + ba[2 * i + 1]
    one.set_epoch(3, start_step=1)
    assert list(one) == b1[1:]
    one.set_epoch(4)
    assert list(one) != b1


def test_schedules():
    from video3d_zoo.train.config_schema import ScheduleSection

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    multi = LRSchedule(opt, ScheduleSection(name="multistep", milestones=[2, 4], gamma=0.1), 6, 10)
    assert [round(multi.lr(e), 6) for e in range(6)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    warm = LRSchedule(opt, ScheduleSection(name="cosine", warmup_epochs=1, warmup_start_factor=0.1), 5, 10)
    assert warm.lr(0, 0) == pytest.approx(0.01) and warm.lr(0, 5) == pytest.approx(0.055)
    assert warm.lr(1, 0) == pytest.approx(0.1) and warm.lr(5, 0) == pytest.approx(0.0, abs=1e-12)
    plateau = LRSchedule(opt, ScheduleSection(name="plateau", patience=1, gamma=0.5), 10, 1)
    for loss in (1.0, 0.9, 0.95, 0.95):
        plateau.epoch_end(loss)
    assert plateau.lr(4) == pytest.approx(0.05)
    state = plateau.state_dict()
    again = LRSchedule(opt, ScheduleSection(name="plateau", patience=1, gamma=0.5), 10, 1)
    again.load_state_dict(state)
    assert again.lr(5) == plateau.lr(5)


# -- the trainer --------------------------------------------------------------------------------------
def test_training_run_writes_everything(trained):
    from video3d_zoo.weights.loading import from_pretrained

    path, run = trained
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(r["val_video_top1"] != "" for r in rows)
    assert load_config(run / "train_config.json").train.epochs == 2
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    model = from_pretrained(run / "export")
    assert model.config.labels[0] == "move_right" and len(model.config.labels) == 8
    assert model.config.input_spec.frames == 4 and model.config.input_spec.crop_size == 32
    metrics = json.loads((run / "export" / "metrics.json").read_text())
    for key in ("clip_top1", "video_top1", "video_top5", "train_time_s"):
        assert key in metrics
    assert (run / "eval" / "metrics.json").is_file()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)  # the optimiser the run used
    assert sorted(g["weight_decay"] for g in state["optimizer"]["param_groups"]) == [0.0, 1e-4]
    # an existing run is not silently overwritten
    with pytest.raises(TrainConfigError, match="already holds a run"):
        train(path)


def test_the_optimiser_takes_the_models_parameter_groups(dataset, tmp_path):
    """No weight decay where the model says so (``no_weight_decay()``: norms and biases); frozen
    parameters are left out; every trainable parameter is in exactly one group."""
    from video3d_zoo import create_model
    from video3d_zoo.train.prepare import freeze_before
    from video3d_zoo.train.trainer_setup import build_optimizer

    cfg = load_config(write_config(tmp_path / "c.json", tiny_config(dataset, tmp_path, "opt")))
    model = create_model("resnet3d_10", widen_factor=0.125, num_classes=3)
    freeze_before(model, "layer2")
    optimizer = build_optimizer(model, cfg)
    decay_of = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            assert id(param) not in decay_of
            decay_of[id(param)] = group["weight_decay"]
    skip = model.no_weight_decay()
    assert {"fc.bias", "layer4.0.bn1.weight", "layer4.0.bn1.bias"} <= skip and "fc.weight" not in skip
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert id(param) not in decay_of, name
        else:
            assert decay_of[id(param)] == (0.0 if name in skip else cfg.optim.weight_decay), name
    assert any(p.requires_grad for p in model.parameters()) and not model.conv1.weight.requires_grad


def test_kill9_then_resume_equals_uninterrupted(dataset, trained, tmp_path):
    _path, base_run = trained
    cfg = tiny_config(dataset, tmp_path, "killed", train__checkpoint_every_steps=1)
    path = write_config(tmp_path / "killed.json", cfg)
    # 3 steps per epoch: killed after global step 5 (epoch 2, step 2) before that step's checkpoint,
    # so the resumed run starts mid-epoch from step 1 of epoch 2 and redoes step 2.
    env = dict(os.environ, **{KILL_ENV: "5"})
    proc = subprocess.run([sys.executable, "-m", "video3d_zoo.train", str(path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    state = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 1, 4)
    assert not (tmp_path / "killed" / "export").exists()
    run = train(path, resume=True)
    a, b = _safetensors(base_run / "export"), _safetensors(run / "export")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (run / "log.csv").read_text().splitlines()[1].split(",")[:5] == \
        (base_run / "log.csv").read_text().splitlines()[1].split(",")[:5]


def test_finetune_freezes_stages_and_their_batchnorm(dataset, trained, tmp_path):
    _path, base_run = trained
    cfg = tiny_config(dataset, tmp_path, "ft", model__pretrained=str(base_run / "export"),
                      finetune__from_stage="layer4", train__epochs=1)
    cfg["data"]["hflip"] = True  # a different data pipeline, to be sure the frozen stages saw data
    run = train(write_config(tmp_path / "ft.json", cfg))
    before, after = _safetensors(base_run / "export"), _safetensors(run / "export")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen_prefixes = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
    assert not any(k.startswith(frozen_prefixes) for k in changed), sorted(changed)[:5]
    assert any(k.startswith("layer4.") and "running_mean" in k for k in changed)
    assert any(k.startswith("layer4.") and k.endswith("conv1.weight") for k in changed)
    assert "fc.weight" in changed


def test_freeze_before_and_train_mode():
    from video3d_zoo import create_model

    model = create_model("resnet3d_10", num_classes=3, widen_factor=0.125)
    frozen = freeze_before(model, "layer3")
    assert frozen == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2"]
    set_train_mode(model, frozen)
    assert not model.bn1.training and not model.layer2[0].bn1.training and model.layer3[0].bn1.training
    assert not model.layer1[0].conv1.weight.requires_grad and model.layer3[0].conv1.weight.requires_grad
    with pytest.raises(TrainConfigError, match="top-level modules"):
        freeze_before(model, "layer9")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_matches_one_process(dataset, tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) vs one process, same global batch of 8.

    The single process accumulates two micro-batches of 4, exactly the shards the two processes
    get, so BatchNorm sees the same batches and the parameters must agree up to floating-point
    summation order.  (Running statistics are left out: rank 0's are broadcast under DDP.)
    """
    common = dict(train__epochs=2, train__batch_size=8, output__final_eval=False, optim__lr=0.02)
    one = write_config(tmp_path / "one.json", tiny_config(dataset, tmp_path, "one", train__accumulate=2, **common))
    two = write_config(tmp_path / "two.json", tiny_config(dataset, tmp_path, "two", **common))
    run_one = train(one)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                           "-m", "video3d_zoo.train", str(two)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _safetensors(run_one / "export"), _safetensors(tmp_path / "two" / "export")
    from video3d_zoo import create_model

    torch.manual_seed(3)  # the trainer's seed: the same initial weights
    w0 = create_model("resnet3d_10", num_classes=8, widen_factor=0.125, stem_kernel_t=3).state_dict()
    moved = 0.0
    for key, value in a.items():
        if not value.is_floating_point() or "running" in key:
            continue
        moved = max(moved, float((value - w0[key]).abs().max()))
        torch.testing.assert_close(b[key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert moved > 1e-3  # the runs did train
    # both logged the same training loss for every epoch
    rows_one = list(csv.DictReader(open(run_one / "log.csv")))
    rows_two = list(csv.DictReader(open(tmp_path / "two" / "log.csv")))
    for r1, r2 in zip(rows_one, rows_two):
        assert float(r1["train_loss"]) == pytest.approx(float(r2["train_loss"]), rel=1e-4)


# -- evaluation ---------------------------------------------------------------------------------------
def test_eval_json_and_skipped_videos(trained, dataset, tmp_path, capsys):
    from video3d_zoo.cli.commands import main as cli_main

    _path, run = trained
    assert cli_main(["eval", "--weights", str(run / "export"), str(dataset), "--json", "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("clip_top1", "video_top1", "video_top5", "clip_top5", "per_class"):
        assert key in metrics
    assert metrics["num_videos"] == 8 and metrics["num_clips"] == 16
    assert (tmp_path / "ev" / "metrics.json").is_file()
    # a corrupt video in the list: skipped and counted, or fatal
    data = tmp_path / "d"
    shutil.copytree(dataset, data)
    (data / "move_up" / "corrupt.mp4").write_bytes(b"not a video at all")
    with open(data / "test.txt", "a") as fh:
        fh.write("move_up/corrupt.mp4\n")
    from video3d_zoo.train import evaluate

    out = evaluate(run / "export", data, progress=False)
    assert out["num_videos"] == 8 and out["skipped"] == {"undecodable_video": 1}
    with pytest.raises(DataError, match="corrupt.mp4"):
        evaluate(run / "export", data, progress=False, on_error="fatal")
