"""``video3d-zoo eval`` on official splits: exactly the listed videos, or a clear error.

A tiny UCF-101-style tree (3 classes x 4 videos, 8 frames each; the Basketball test videos are
transcoded .mp4 files while the lists name .avi), a tiny labelled model saved as a zoo folder,
and the package's embedded synthetic-motion weights.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from video3d_zoo.errors import EvalFailed
from video3d_zoo.train.evaluate import evaluate
from video3d_zoo.cli.commands import main as cli_main
from videos import write_video

CLASSES = ("ApplyEyeMakeup", "Archery", "Basketball")
TRAIN_GROUPS, TEST_GROUPS = ("g01", "g02"), ("g03", "g04")


def _rel(cls: str, group: str, ext: str = ".avi") -> str:
    return f"{cls}/v_{cls}_{group}_c01{ext}"


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    """``(video root, annotation folder)``; the Basketball test videos exist only as .mp4."""
    base = tmp_path_factory.mktemp("ucf")
    root, ann = base / "UCF-101", base / "ucfTrainTestlist"
    avi = write_video(base / "proto.avi", 8, 40, 32, kind="avi").path
    mp4 = write_video(base / "proto.mp4", 8, 40, 32, kind="mp4").path
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for group in TRAIN_GROUPS + TEST_GROUPS:
            transcoded = cls == "Basketball" and group in TEST_GROUPS
            shutil.copy(mp4 if transcoded else avi, root / _rel(cls, group, ".mp4" if transcoded else ".avi"))
    ann.mkdir()
    (ann / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES, 1)))
    (ann / "trainlist01.txt").write_text("".join(f"{_rel(c, g)} {i}\n" for i, c in enumerate(CLASSES, 1)
                                                 for g in TRAIN_GROUPS))
    (ann / "testlist01.txt").write_text("".join(f"{_rel(c, g)}\n" for c in CLASSES for g in TEST_GROUPS))
    return root, ann


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny labelled ResNet-10 (4 frames, 32 px) saved as a zoo folder."""
    import video3d_zoo
    from video3d_zoo.models.config import InputSpec
    from video3d_zoo.weights.loading import save_pretrained

    torch.manual_seed(0)
    model = video3d_zoo.create_model("resnet3d_10", num_classes=3, widen_factor=0.125)
    model.config = model.config.replace(labels=CLASSES, input_spec=InputSpec(frames=4, crop_size=32, resize=32))
    return save_pretrained(model, tmp_path_factory.mktemp("weights") / "tiny")


def run(args, capsys):
    """``(exit status, stdout, stderr)`` of ``video3d-zoo eval ARGS``."""
    try:
        code = cli_main(["eval", *(str(a) for a in args)])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def run_json(args, capsys) -> dict:
    code, out, err = run([*args, "--json"], capsys)
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def ucf_args(weights, ucf, *extra):
    root, ann = ucf
    return ["--weights", weights, root, "--format", "ucf101", "--annotations", ann, *extra]


def read_predictions(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# -- the official split, exactly ---------------------------------------------------------------------
def test_ucf101_test_split_scores_exactly_the_test_list(weights, ucf, capsys, tmp_path):
    report = run_json(ucf_args(weights, ucf, "--split", "test", "--out", tmp_path / "ev"), capsys)
    test_list = [_rel(c, g) for c in CLASSES for g in TEST_GROUPS]
    assert report["num_videos"] == 6 and report["num_clips"] == 12  # 8 frames = 2 clips of 4
    assert report["videos"] == {"listed": 6, "used": 6, "skipped": 0, "skipped_by_reason": {},
                                "transcoded_matches": 2, "partial_decodes": 0, "still_images": 0}
    assert sorted(Path(t["listed"]).name for t in report["transcoded_videos"]) == [
        "v_Basketball_g03_c01.avi", "v_Basketball_g04_c01.avi"]
    data = report["data"]
    assert (data["format"], data["fold"], data["split"]) == ("ucf101", 1, "test")
    assert [Path(f).name for f in data["split_files"]] == ["classInd.txt", "testlist01.txt"]
    rows = read_predictions(tmp_path / "ev" / "predictions.csv")
    assert sorted(r["video"] for r in rows) == sorted(test_list)
    assert list(rows[0])[:6] == ["video", "path", "label", "num_clips", "top1_label", "top1_score"]
    assert "top3_label" in rows[0] and "top4_label" not in rows[0] and report["topk"] == 3  # 3 classes
    assert {r["path"].endswith(".mp4") for r in rows if r["label"] == "Basketball"} == {True}
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["videos"]["listed"] == 6 and len(metrics["confusion"]) == 3


def test_rerun_into_the_same_out_leaves_no_stale_rows(weights, ucf, capsys, tmp_path):
    out = tmp_path / "ev"
    run_json(ucf_args(weights, ucf, "--split", "test", "--out", out), capsys)
    report = run_json(ucf_args(weights, ucf, "--split", "train", "--out", out, "--topk", "2"), capsys)
    rows = read_predictions(out / "predictions.csv")
    assert sorted(r["video"] for r in rows) == sorted(_rel(c, g) for c in CLASSES for g in TRAIN_GROUPS)
    assert list(rows[0])[-2:] == ["top2_label", "top2_score"]
    assert json.loads((out / "metrics.json").read_text())["data"]["split"] == report["data"]["split"] == "train"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_folder_split_all_and_list_format(weights, ucf, capsys, tmp_path):
    root, _ann = ucf
    report = run_json(["--weights", weights, root, "--split", "all"], capsys)
    assert report["videos"]["listed"] == report["num_videos"] == 12 and report["data"]["split"] == "all"
    listing = tmp_path / "videos.txt"
    listing.write_text(f"{root / _rel('Archery', 'g01')} Archery\n{root / _rel('Archery', 'g01')} Archery\n"
                       f"{root / _rel('ApplyEyeMakeup', 'g02')} ApplyEyeMakeup\n")
    report = run_json(["--weights", weights, listing, "--format", "list"], capsys)
    assert report["num_videos"] == 2 and report["videos"]["skipped_by_reason"] == {"duplicate_video": 1}
    assert report["videos"]["listed"] == 3


def test_hmdb51_and_kinetics_splits(weights, ucf, capsys, tmp_path):
    root, _ann = ucf
    hmdb = tmp_path / "hmdb_splits"
    hmdb.mkdir()
    for cls in CLASSES:  # 1 = train, 2 = test, 0 = unused
        rows = [f"v_{cls}_{g}_c01.avi {flag}\n" for g, flag in zip(TRAIN_GROUPS + TEST_GROUPS, "1022")]
        (hmdb / f"{cls}_test_split1.txt").write_text("".join(rows))
    report = run_json(["--weights", weights, root, "--format", "hmdb51", "--annotations", hmdb], capsys)
    assert (report["num_videos"], report["videos"]["listed"], report["videos"]["transcoded_matches"]) == (6, 6, 2)
    assert len(report["data"]["split_files"]) == 3
    kinetics = tmp_path / "kinetics"
    kinetics.mkdir()
    header = "label,youtube_id,time_start,time_end,split\n"
    (kinetics / "train.csv").write_text(header + "".join(f"{c},tr{c},0,10,train\n" for c in CLASSES))
    (kinetics / "validate.csv").write_text(header + "Archery,abc,0,10,val\nBasketball,def,5,15,val\n")
    for key in ("abc_000000_000010", "def_000005_000015"):
        shutil.copy(root / _rel("Archery", "g01"), tmp_path / f"{key}.avi")
    report = run_json(["--weights", weights, tmp_path, "--format", "kinetics", "--annotations", kinetics,
                       "--split", "val"], capsys)
    assert report["num_videos"] == 2 and report["data"]["split_files"][0].endswith("train.csv")
    code, _out, err = run(["--weights", weights, tmp_path, "--format", "kinetics", "--annotations", kinetics],
                          capsys)
    assert code == 2 and "test.csv" in err  # the default split, test, has no CSV here


def test_bom_and_windows_line_endings(weights, ucf, capsys, tmp_path):
    root, ann = ucf
    bom = tmp_path / "ann"
    shutil.copytree(ann, bom)
    for name in ("classInd.txt", "testlist01.txt"):
        text = (ann / name).read_text().replace("\n", "\r\n")
        (bom / name).write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    report = run_json(["--weights", weights, root, "--format", "ucf101", "--annotations", bom], capsys)
    assert report["num_videos"] == 6 and report["videos"]["skipped"] == 0


def _ucf_copy(ucf, tmp_path, name, text):
    root, ann = ucf
    changed = tmp_path / "ann"
    shutil.copytree(ann, changed)
    (changed / name).write_text(text)
    return root, changed


def _folder_without_test_list(ucf, tmp_path):
    return [ucf[0]]


def _duplicate_classes_txt(ucf, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(ucf[0], root)
    (root / "classes.txt").write_text("Archery\nBasketball\nArchery\n")
    (root / "test.txt").write_text(f"{_rel('Archery', 'g01')}\n")
    return [root]


BAD = {
    # name: (arguments after --weights W, given (ucf, tmp_path); text the one error line holds)
    "missing_fold_file": (lambda u, t: [*ucf_args("", u, "--fold", "2")[2:]], "testlist02.txt"),
    "ucf_val_split": (lambda u, t: [*ucf_args("", u, "--split", "val")[2:]], "use --split test"),
    "missing_classind": (lambda u, t: [u[0], "--format", "ucf101", "--annotations", t], "classInd.txt"),
    "duplicate_classind": (lambda u, t: [_ucf_copy(u, t, "classInd.txt", "1 Archery\n2 Basketball\n3 Archery\n")[0],
                                         "--format", "ucf101", "--annotations", t / "ann"], "classInd.txt:3"),
    "folder_without_test_txt": (_folder_without_test_list, "test.txt: no such split list"),
    "duplicate_classes_txt": (_duplicate_classes_txt, "listed twice (also on line 1)"),
    "fold_for_folder": (lambda u, t: [u[0], "--split", "all", "--fold", "1"], "--fold"),
    "list_with_split": (lambda u, t: [u[1] / "testlist01.txt", "--format", "list", "--split", "test"], "give no --split"),
    "batch_size_0": (lambda u, t: [u[0], "--split", "all", "--batch-size", "0"], "--batch-size"),
    "fps_nan": (lambda u, t: [u[0], "--split", "all", "--fps", "nan"], "--fps"),
    "clips_negative": (lambda u, t: [u[0], "--split", "all", "--clips", "-1"], "--clips"),
    "crops_2": (lambda u, t: [u[0], "--split", "all", "--crops", "2"], "--crops"),
    "stride_with_clips": (lambda u, t: [u[0], "--split", "all", "--clips", "3", "--stride", "2"], "--stride"),
    "amp_and_precision": (lambda u, t: [u[0], "--split", "all", "--amp", "bf16", "--precision", "bf16"], "--amp"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_error_line_and_exit_2(case, weights, ucf, capsys, tmp_path):
    make_args, text = BAD[case]
    code, out, err = run(["--weights", weights, *make_args(ucf, tmp_path), "--json"], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], err


def test_weights_flag_refuses_a_model_name(ucf, capsys):
    code, _out, err = run(["--weights", "resnet3d_10", ucf[0], "--split", "all"], capsys)
    assert code == 2 and "--model" in err


# -- the model argument ------------------------------------------------------------------------------
def test_model_tag_evaluates_the_embedded_weights(capsys, tmp_path):
    from video3d_zoo.jobs.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "syn", videos_per_class=1, seed=11, test_fraction=1.0)
    report = run_json(["--model", "resnet3d_10.synthetic_motion", data], capsys)
    assert report["model"]["tag"] == "synthetic_motion"
    assert report["num_videos"] == 8 and report["video_top1"] >= 0.75  # chance: 0.125


# -- protocols ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("options,expected,clips", [
    ([], {"num_clips": 0, "spatial_crops": 1, "clip_len": 4, "stride": 4, "fps": None}, 12),
    (["--clips", "3"], {"num_clips": 3}, 18),
    (["--crops", "3"], {"spatial_crops": 3}, 36),
    (["--fps", "12.5"], {"fps": 12.5}, 6),          # 8 frames at 25 fps -> 4 frames: one clip
    (["--clip-len", "8"], {"clip_len": 8, "stride": 8}, 6),
    (["--stride", "2", "--last", "drop"], {"clip_len": 4, "stride": 2, "last": "drop"}, 18),  # starts 0, 2, 4
])
def test_protocol_is_applied_and_recorded(options, expected, clips, weights, ucf, capsys):
    report = run_json(ucf_args(weights, ucf, *options), capsys)
    protocol = report["protocol"]
    assert {k: protocol[k] for k in expected} == expected and protocol["description"]
    assert report["num_clips"] == clips
    assert report["input_spec"]["frames"] == 4


def test_fast_path_gives_the_same_scores(weights, ucf, capsys, tmp_path):
    run_json(ucf_args(weights, ucf, "--out", tmp_path / "eager"), capsys)
    report = run_json(ucf_args(weights, ucf, "--fast", "--out", tmp_path / "fast"), capsys)
    assert report["model"]["fast"] is True
    eager, fast = (read_predictions(tmp_path / name / "predictions.csv") for name in ("eager", "fast"))
    assert [r["video"] for r in eager] == [r["video"] for r in fast]
    for a, b in zip(eager, fast):  # every class's score (3 classes: all are in the top 3)
        scores_a, scores_b = ({r[f"top{k}_label"]: float(r[f"top{k}_score"]) for k in (1, 2, 3)} for r in (a, b))
        assert scores_a == pytest.approx(scores_b, abs=1e-4)


# -- failures never become numbers -------------------------------------------------------------------
class NaNModel(nn.Module):
    """Wraps a model; logits of the first call (``every``: of every call) are NaN."""

    def __init__(self, net: nn.Module, every: bool = False) -> None:
        super().__init__()
        self.net, self.config, self.every, self.calls = net, net.config, every, 0

    def forward(self, x):
        self.calls += 1
        out = self.net(x)
        return out * float("nan") if self.every or self.calls == 1 else out


def _no_nan(text: str) -> dict:
    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_logits_fail_their_video(weights, ucf, capsys, tmp_path):
    from video3d_zoo.weights.loading import from_pretrained

    root, ann = ucf
    model = NaNModel(from_pretrained(weights))
    report = evaluate(model, root, format="ucf101", annotations=ann, batch_size=4, json=True, progress=False)
    printed = _no_nan(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["videos"]["skipped_by_reason"] == {"non_finite_logits": 1} == report["skipped"]
    assert printed["num_videos"] == 5 and 0.0 <= printed["video_top1"] <= 1.0
    assert "NaN or infinite" in printed["skipped_videos"][0]


def test_nothing_evaluated_is_null_and_exit_1(weights, ucf, capsys, tmp_path, monkeypatch):
    from video3d_zoo.weights.loading import from_pretrained

    evaluate_module = sys.modules["video3d_zoo.train.evaluate"]

    out = tmp_path / "ev"
    run_json(ucf_args(weights, ucf, "--out", out), capsys)  # an earlier, good run into the same folder
    model = NaNModel(from_pretrained(weights), every=True)
    monkeypatch.setattr(evaluate_module, "resolve_model", lambda ref: model)
    code, stdout, err = run(ucf_args(weights, ucf, "--json", "--out", out), capsys)
    assert code == 1 and "no video was evaluated" in err
    printed = _no_nan(stdout.strip().splitlines()[-1])
    assert printed["video_top1"] is None and printed["loss"] is None and printed["num_videos"] == 0
    assert printed["videos"]["skipped_by_reason"] == {"non_finite_logits": 6}
    assert read_predictions(out / "predictions.csv") == [] and not (out / "confusion.png").exists()
    assert _no_nan((out / "metrics.json").read_text())["error"].startswith("no video was evaluated")
    with pytest.raises(EvalFailed, match="6 skipped"):
        evaluate(model, ucf[0], format="ucf101", annotations=ucf[1], progress=False)


def test_partial_decodes_and_still_images_counted_or_strict(weights, ucf, capsys, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(ucf[0], root)
    write_video(root / "Archery" / "still.mp4", 1, 40, 32)
    full = write_video(tmp_path / "full.mp4", 40, 40, 32, faststart=True).path.read_bytes()
    (root / "Archery" / "cut.mp4").write_bytes(full[: len(full) // 2])
    (root / "test.txt").write_text(f"{_rel('Archery', 'g01')}\nArchery/still.mp4\nArchery/cut.mp4\n")
    report = run_json(["--weights", weights, root], capsys)
    assert report["num_videos"] == 3
    assert (report["videos"]["partial_decodes"], report["videos"]["still_images"]) == (1, 1)
    assert report["still_image_videos"][0]["video"] == "Archery/still.mp4"
    assert "40 frames" in report["partial_decode_videos"][0]["partial"]
    strict = run_json(["--weights", weights, root, "--strict"], capsys)
    assert strict["num_videos"] == 1
    assert strict["videos"]["skipped_by_reason"] == {"partial_decode": 1, "still_image": 1}
