"""The catalogue of bad training inputs: each ends in a clear error (one line and exit status 2 on
the CLI), and nothing already written is lost (the last finite checkpoint, an earlier export)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from video3d_zoo.errors import TrainingDivergedError, Video3DZooError
from video3d_zoo.jobs.synthetic import make_synthetic
from video3d_zoo.train import TrainConfigError, load_config, train
from video3d_zoo.train import config as config_mod
from video3d_zoo.train.checkpoint import load_checkpoint
from video3d_zoo.train.config_changes import config_changes, describe_changes
from video3d_zoo.train.guard import NAN_ENV, DivergenceGuard, nonfinite_names
from video3d_zoo.cli.commands import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 classes x 4 videos (3 train, 1 test), 32x32, 8 frames: 3 optimizer steps per epoch."""
    return make_synthetic(tmp_path_factory.mktemp("data"), videos_per_class=4, seed=5, size=32, frames=8)


def tiny(data_root: Path, out_dir: Path, name: str, **sections) -> dict:
    cfg = {
        "model": {"name": "resnet3d_10", "arch_kwargs": {"widen_factor": 0.125, "stem_kernel_t": 3},
                  "frames": 4, "crop_size": 32, "resize": 32},
        "data": {"format": "folder", "root": str(data_root), "hflip": False, "n_scales": 2},
        "optim": {"lr": 0.05, "weight_decay": 1e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 0.5},
        "train": {"epochs": 1, "batch_size": 8, "threads": 1, "seed": 3, "progress": False,
                  "tensorboard": False, "checkpoint_every_steps": 1},
        "output": {"dir": str(out_dir), "name": name, "plot": False, "final_eval": False},
    }
    for section, values in sections.items():
        cfg[section].update(values)
    return cfg


def write(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))
    return path


def cli(capsys, *argv) -> tuple:
    """``video3d-zoo train ARGV`` in this process: (exit status, its error lines, all of stderr)."""
    rc = cli_main(["train", *(str(a) for a in argv)])
    err = capsys.readouterr().err
    return rc, [line for line in err.splitlines() if line.startswith("video3d-zoo train:")], err


def snapshot(run: Path) -> dict:
    files = ["checkpoints/last.pt", "checkpoints/best.pt", "train_config.json", "export/model.safetensors",
             "export/config.json"]
    return {f: (run / f).read_bytes() for f in files if (run / f).is_file()}


@pytest.fixture(scope="module")
def good_run(dataset, tmp_path_factory):
    """One finished 1-epoch run (checkpoints and export); tests copy it before touching it."""
    out = tmp_path_factory.mktemp("runs")
    return train(write(out / "good.json", tiny(dataset, out, "good")))


@pytest.fixture
def run_copy(good_run, tmp_path):
    """A private copy of the good run and its config (output.dir moves: a resume-safe key)."""
    run = tmp_path / "good"
    shutil.copytree(good_run, run)
    cfg = json.loads((run / "train_config.json").read_text())
    cfg["output"]["dir"] = str(tmp_path)
    return run, write(tmp_path / "good.json", cfg)


def assert_finite_checkpoint(path: Path) -> None:
    state = load_checkpoint(path)
    assert state["model"] and not nonfinite_names(state["model"])


# -- config values ------------------------------------------------------------------------------------
BAD_VALUES = [
    ("optim.lr=inf", "optim.lr", "finite"), ("optim.lr=nan", "optim.lr", "finite"),
    ("optim.lr=-1", "optim.lr", "positive"), ("optim.lr=0", "optim.lr", "positive"),
    ("optim.momentum=2", "optim.momentum", r"\[0, 1\]"), ("optim.dampening=-0.5", "optim.dampening", "negative"),
    ("optim.weight_decay=-1e-4", "optim.weight_decay", "negative"),
    ("optim.clip_grad_norm=-inf", "optim.clip_grad_norm", "finite"),
    ("train.batch_size=0", "train.batch_size", "positive"), ("train.epochs=0", "train.epochs", "positive"),
    ("train.epochs=inf", "train.epochs", "integer"), ("train.val_batch_size=-8", "train.val_batch_size", "negative"),
    ("data.scale_step=0", "data.scale_step", r"\(0, 1\]"), ("data.n_scales=0", "data.n_scales", "positive"),
    ("data.fps=0", "data.fps", "positive"), ("data.fps=nan", "data.fps", "finite"),
    ("schedule.min_lr=1", "schedule.min_lr", "exceed optim.lr"),
    ("schedule.warmup_epochs=-1", "schedule.warmup_epochs", "negative"),
    ("data.synthetic.test_fraction=1.5", "data.synthetic.test_fraction", r"\[0, 1\]"),
]


@pytest.mark.parametrize("override,key,why", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_number_is_refused_naming_the_key(override, key, why):
    with pytest.raises(TrainConfigError, match=rf"{key} = .*{why}"):
        load_config({"data": {"format": "synthetic", "root": "x"}}, [override])


@pytest.mark.parametrize("argv,message", [
    (["{missing}"], "no such config file"),
    (["{folder}"], "is a folder"),
    (["{good}", "--set", "optim.lrr=0.1"], "unknown key 'optim.lrr'.*did you mean optim.lr"),
    (["{good}", "--set", "optim.lr"], "expected key=value"),
    (["{good}", "--set", "optim.lr=nan"], "optim.lr = nan: expected a finite number"),
    (["{good}", "--set", "optim.momentum=2"], r"optim.momentum = 2.0: must be in \[0, 1\]"),
    (["{good}", "--set", "train.batch_size=0"], "train.batch_size = 0: must be positive"),
    (["{bad_toml}"], "not valid TOML"),
], ids=["missing", "folder", "unknown-key", "set-without-value", "lr-nan", "momentum-2", "batch-0", "bad-toml"])
def test_cli_user_errors_are_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's relative output.dir "runs" would land here
    paths = {"missing": tmp_path / "nope.toml", "folder": tmp_path, "good": ROOT / "video3d_zoo" / "configs" / "synthetic_r3d.toml",
             "bad_toml": tmp_path / "bad.toml"}
    (tmp_path / "bad.toml").write_text("[optim]\nlr = \n")
    rc, err, _ = cli(capsys, *[a.format(**paths) for a in argv])
    assert rc == 2 and len(err) == 1, err
    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "runs").exists()


def test_cli_subprocess_prints_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "video3d_zoo.train", str(ROOT / "video3d_zoo" / "configs" / "synthetic_r3d.toml"),
                           "--set", "optim.lr=inf"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert "optim.lr = inf: expected a finite number" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_arch_kwargs_and_missing_cuda_are_config_errors(dataset, tmp_path):
    cfg = tiny(dataset, tmp_path, "arch", model={"arch_kwargs": {"widen_factr": 0.5}})
    with pytest.raises(TrainConfigError, match="model.arch_kwargs.*widen_factr"):
        train(write(tmp_path / "arch.json", cfg))
    if not torch.cuda.is_available():
        with pytest.raises(TrainConfigError, match="train.device.*no CUDA device"):
            train(write(tmp_path / "cuda.json", tiny(dataset, tmp_path, "cuda", train={"device": "cuda"})))


# -- divergence ---------------------------------------------------------------------------------------
def test_lr_1e30_from_scratch_diverges_and_exports_nothing(dataset, tmp_path, capsys):
    path = write(tmp_path / "boom.json", tiny(dataset, tmp_path, "boom", optim={"lr": 1e30}))
    rc, err, _ = cli(capsys, path)
    assert rc == 2 and len(err) == 1, err
    assert "training diverged at epoch 1/1, step" in err[0] and "optim.lr (now 1e+30)" in err[0]
    assert "gradient clipping (optim.clip_grad_norm" in err[0] and "no export was written" in err[0]
    run = tmp_path / "boom"
    assert not (run / "export").exists()
    # step 1 was still finite (and checkpointed: checkpoint_every_steps = 1), step 2 was not
    assert "step 2/3" in err[0] and "last finite state (epoch 1, step 1, global step 1)" in err[0]
    assert_finite_checkpoint(run / "checkpoints" / "last.pt")


def test_divergence_on_resume_keeps_last_checkpoint_and_export(run_copy, capsys):
    run, path = run_copy
    before = snapshot(run)
    rc, err, _ = cli(capsys, path, "--resume", "--accept-config-changes", "--set", "optim.lr=1e30",
                  "--set", "train.epochs=2")
    assert rc == 2 and len(err) == 1, err
    assert "training diverged at epoch 2/2, step 2/3 (global step 5)" in err[0]
    assert "last finite state (epoch 2, step 1, global step 4)" in err[0]
    after = snapshot(run)
    for name in ("checkpoints/best.pt", "export/model.safetensors", "export/config.json"):
        assert after[name] == before[name], name
    assert_finite_checkpoint(run / "checkpoints" / "last.pt")  # step 1 of epoch 2, the last finite one
    assert load_checkpoint(run / "checkpoints" / "last.pt")["global_step"] == 4
    from safetensors.torch import load_file

    assert not nonfinite_names(load_file(str(run / "export" / "model.safetensors")))


def test_export_refuses_non_finite_weights_and_keeps_the_old_export(run_copy):
    run, path = run_copy
    best = run / "checkpoints" / "best.pt"
    state = load_checkpoint(best)
    state["model"]["fc.weight"][0, 0] = float("nan")
    torch.save(state, best)
    before = snapshot(run)
    with pytest.raises(TrainingDivergedError, match=r"refusing to export non-finite weights.*1 of \d+ "
                                                    r"tensors.*fc.weight.*left as it was"):
        train(path, ["output.export=best"], resume=True, accept_config_changes=True)
    assert snapshot(run)["export/model.safetensors"] == before["export/model.safetensors"]
    # a last.pt with non-finite weights is refused as a starting point too
    shutil.copy(best, run / "checkpoints" / "last.pt")
    with pytest.raises(TrainingDivergedError, match="--resume from .*last.pt: 1 of"):
        train(path, resume=True)


def test_guard_unit():
    from video3d_zoo.train.distributed import DistInfo

    cfg = load_config({"data": {"format": "synthetic", "root": "x"}}, ["optim.clip_grad_norm=5", "train.amp=bf16"])
    guard = DivergenceGuard(cfg, DistInfo(), torch.bfloat16)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    guard.note_loss(1.0)
    guard.after_step(model, 0, 1, 3, 1)  # finite: no error
    model[1].running_var[0] = float("inf")
    guard.note_loss(float("nan"))
    guard.note_loss(2.0)  # the first non-finite loss of a step is the one reported
    with pytest.raises(TrainingDivergedError, match=r"epoch 1/200, step 2/3 \(global step 2\): non-finite loss, "
                                                    r"weights after the step; loss nan; try .*clip_grad_norm \(now 5\)"
                                                    r".*train.amp = \"none\""):
        guard.after_step(model, 0, 2, 3, 2)
    model[0].weight.grad = torch.full((2, 2), float("nan"))
    assert not guard.grads_finite(model.parameters())
    with pytest.raises(TrainingDivergedError, match="refusing to write.*running_var.*nothing was saved"):
        guard.require_finite(model, "write a checkpoint")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_when_only_one_diverges(dataset, tmp_path):
    """Rank 1 alone sees a nan loss at global step 2: both processes stop there with exit 2 (rank 0
    hangs in its next collective if they do not agree).  Two plain processes, not torchrun, which
    would kill the second as soon as the first fails."""
    path = write(tmp_path / "ddp.json", tiny(dataset, tmp_path, "ddp"))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()), **{NAN_ENV: "1:2"})
    procs = [subprocess.Popen([sys.executable, "-m", "video3d_zoo.train", str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)))
             for r in range(2)]
    try:
        results = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()  # only if still running (a hang): the test then fails on the timeout
    for rank, (proc, (_out, err)) in enumerate(zip(procs, results)):
        lines = [ln for ln in err.splitlines() if ln.startswith("video3d-zoo train: error:")]
        assert proc.returncode == 2 and len(lines) == 1, err[-2000:]
        assert "step 2/3 (global step 2): non-finite loss (on 1 of 2 processes)" in lines[0]
        assert f"loss on process {rank}: {'nan' if rank else ''}" in lines[0]
    state = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert state["global_step"] == 1 and not (tmp_path / "ddp" / "export").exists()


# -- resume with a changed config ---------------------------------------------------------------------
def test_resume_with_changed_config_lists_the_keys_and_refuses(run_copy, capsys):
    run, path = run_copy
    before = snapshot(run)
    rc, err, _ = cli(capsys, path, "--resume", "--set", "optim.weight_decay=0.001", "--set", "train.epochs=2",
                  "--set", "train.progress=true")
    assert rc == 2 and len(err) == 1, err
    assert "optim.weight_decay: 0.0001 -> 0.001, train.epochs: 1 -> 2;" in err[0]
    assert "--accept-config-changes" in err[0] and "progress" not in err[0] and "output.dir" not in err[0]
    assert snapshot(run) == before  # train_config.json included: nothing was written


def test_resume_with_accepted_changes_continues_with_the_new_values(run_copy, capsys):
    run, path = run_copy
    rc, _, err = cli(capsys, path, "--resume", "--accept-config-changes", "--set", "optim.weight_decay=0.001",
                     "--set", "train.epochs=2")
    assert rc == 0, err
    assert "config changes (accepted): optim.weight_decay: 0.0001 -> 0.001, train.epochs: 1 -> 2" in err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and json.loads(state["config"])["optim"]["weight_decay"] == 0.001
    decays = {g.get("group_name", ""): g["weight_decay"] for g in state["optimizer"]["param_groups"]}
    # the change took effect on the decayed group; norms and biases (the model's no_weight_decay) stay at 0
    assert 0.001 in decays.values() and all(v in (0.0, 0.001) for v in decays.values()), decays
    assert all(v == 0.0 for name, v in decays.items() if name.endswith("no_decay")), decays
    assert (run / "log.csv").read_text().count("\n") == 3  # header + 2 epochs


def test_resume_safe_keys_and_missing_config():
    old = load_config({"data": {"format": "synthetic", "root": "x"}})
    new = load_config(old, ["train.progress=false", "data.num_workers=2", "output.overwrite=true"])
    assert config_changes(old.to_json(), new) == []
    assert config_changes(None, new)[0][0] == "config"
    changed = config_changes(old.to_json(), load_config(old, ["model.arch_kwargs={w = 1}"]))
    assert describe_changes(changed) == "model.arch_kwargs.w: (absent) -> 1"


# -- tomllib / tomli ----------------------------------------------------------------------------------
def test_tomli_fallback_when_tomllib_is_missing(monkeypatch, tmp_path):
    real = config_mod.tomllib  # whichever reader this Python has: the fake tomli delegates to it
    calls = []
    fake = types.ModuleType("tomli")
    fake.TOMLDecodeError = real.TOMLDecodeError
    fake.loads = lambda text: calls.append(text) or real.loads(text)
    monkeypatch.setitem(sys.modules, "tomllib", None)  # import tomllib -> ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "tomli", fake)
    reader = config_mod._import_toml()
    assert reader is fake
    monkeypatch.setattr(config_mod, "tomllib", reader)
    (tmp_path / "c.toml").write_text('[data]\nformat = "synthetic"\nroot = "x"\n')
    cfg = load_config(tmp_path / "c.toml", ["optim.lr=0.5"])
    assert cfg.optim.lr == 0.5 and cfg.data.format == "synthetic" and len(calls) == 2
    (tmp_path / "bad.toml").write_text("[optim\n")
    with pytest.raises(TrainConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ImportError, match="pip install tomli"):
        config_mod._import_toml()
    assert 'tomli; python_version < "3.11"' in (ROOT / "setup.cfg").read_text()


def test_new_error_class_is_in_the_hierarchy():
    assert issubclass(TrainingDivergedError, Video3DZooError) and issubclass(TrainingDivergedError, RuntimeError)
