"""The recipe table: every release of the original project and every experiment of the paper.

One row per recipe; a row names a shared base (the original code's defaults of its era), a data
set, the manifest entry whose model it trains (architecture, input convention and clip length
come from that entry, so they are written once, in ``weights_manifest.json``), and what it
changes.  :mod:`.recipes` turns rows into training configs; the sources are the original
project's README and options (CVPR2018 branch ``d9847ea``, master ``540a0ea``), its issues (#N)
and the paper (Hara, Kataoka & Satoh, CVPR 2018).
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple

# -- the shared bases ---------------------------------------------------------------------------------
_COMMON = {
    "data": {"decode_short_side": 240, "hflip": True, "val_clips": 3, "num_workers": 8, "on_error": "skip"},
    "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "nesterov": False},
    "train": {"epochs": 200, "batch_size": 128, "amp": "auto", "seed": 1, "checkpoint_every_steps": 1000},
}
BASES: Dict[str, Dict[str, Any]] = {
    # CVPR2018 opts.py / main.py: Torch7-style dampening, plateau schedule on the validation loss,
    # multi-scale corner crop; author: "I used the default parameters to train models on Kinetics" (#62)
    "2017": {"data": {"train_crop": "corner", "n_scales": 5, "scale_step": 0.84089641525},
             "optim": {"dampening": 0.9},
             "schedule": {"name": "plateau", "patience": 10, "gamma": 0.1},
             "train": {"best_metric": "val_loss"}},
    # master opts.py / main.py: no dampening, MultiStepLR 50/100/150, RandomResizedCrop(0.25-1)
    "2020": {"data": {"train_crop": "random_resized"},
             "optim": {"dampening": 0.0},
             "schedule": {"name": "multistep", "milestones": [50, 100, 150], "gamma": 0.1}},
    # the author's UCF-101 fine-tune (#47; #170 for HMDB-51): layer4 (conv5_x) + fc, lr 0.001, wd 1e-5,
    # 300 epochs, the 2017 defaults otherwise
    "finetune": {"data": {"train_crop": "corner", "n_scales": 5, "scale_step": 0.84089641525},
                 "optim": {"lr": 0.001, "dampening": 0.9, "weight_decay": 1e-5},
                 "schedule": {"name": "plateau", "patience": 10, "gamma": 0.1},
                 "train": {"epochs": 300}, "finetune": {"from_stage": "layer4"}},
}
BASE_SOURCES = {
    "2017": "CVPR2018 branch opts.py / main.py defaults (author: defaults used for Kinetics, #62)",
    "2020": "master opts.py / main.py defaults; master README: 200 epochs",
    "finetune": "author's fine-tune options #47 (UCF-101), #170 (HMDB-51); paper: conv5_x + fc",
}

# -- the data sets (paths are placeholders: --set data.root=... ) ---------------------------------------
_K = {"format": "kinetics", "root": "data/{k}/videos", "annotations": "data/{k}/train.csv",
      "val_annotations": "data/{k}/validate.csv"}
_PARTS = {"kinetics": {"root": "data/kinetics700/videos", "annotations": "data/kinetics700/train.csv",
                       "val_annotations": "data/kinetics700/validate.csv"},
          "moments": {"root": "data/moments/videos", "annotations": "data/moments"},
          "stair": {"root": "data/stair/videos", "annotations": "data/stair/data"}}


def _merged(*names: str) -> Dict[str, Any]:
    return {"format": "merged", "merge": list(names), "parts": {n: dict(_PARTS[n]) for n in names}}


DATASETS: Dict[str, Dict[str, Any]] = {
    "k400": {k: v.format(k="kinetics400") for k, v in _K.items()},
    "k700": {k: v.format(k="kinetics700") for k, v in _K.items()},
    "ucf101": {"format": "ucf101", "root": "data/UCF-101", "annotations": "data/ucfTrainTestlist"},
    "hmdb51": {"format": "hmdb51", "root": "data/hmdb51/videos", "annotations": "data/hmdb51/testTrainMulti_7030_splits"},
    "activitynet": {"format": "activitynet", "root": "data/activitynet/videos",
                    "annotations": "data/activitynet/activity_net.v1-3.min.json"},
    "m": {"format": "moments", "root": "data/moments/videos", "annotations": "data/moments"},
    "s": {"format": "stair", "root": "data/stair/videos", "annotations": "data/stair/data"},
    "km": _merged("kinetics", "moments"),
    "kms": _merged("kinetics", "moments", "stair"),
    "ks": _merged("kinetics", "stair"),
    "ms": _merged("moments", "stair"),
}
#: training videos (clips per epoch) of each set, for the cost estimate: the published list sizes
TRAIN_VIDEOS: Dict[str, Tuple[int, str]] = {
    "k400": (246_535, "Kinetics-400 train CSV rows (2017)"),
    "k700": (545_317, "Kinetics-700 train CSV rows (2019)"),
    "ucf101": (9_537, "UCF-101 trainlist01"),
    "hmdb51": (3_570, "HMDB-51 split files, flag 1"),
    "activitynet": (15_410, "ActivityNet v1.3 training segments (10,024 videos)"),
    "m": (802_264, "Moments in Time v1 trainingSet.csv"),
    "s": (99_478, "STAIR Actions v1.1 videolist_train.txt"),
}
for _merge in ("km", "kms", "ks", "ms"):
    TRAIN_VIDEOS[_merge] = (sum(TRAIN_VIDEOS[{"kinetics": "k700", "moments": "m", "stair": "s"}[n]][0]
                                for n in DATASETS[_merge]["merge"]), "sum of the merged sets")


class Row(NamedTuple):
    """One recipe: ``name`` (``model.tag`` of the weights it trains), its base and data set, the
    manifest entry ``like`` it takes the model from, whether it reproduces that very release,
    config changes, paper groups, where the settings come from, and a reported figure for
    recipes that are no release (releases report the manifest's accuracy)."""

    name: str
    base: str
    data: str
    like: str
    release: bool = True
    changes: Optional[Dict[str, Any]] = None
    groups: Tuple[str, ...] = ()
    source: str = ""
    reported: Optional[Tuple[float, str, str]] = None  # (value, what, source)


_README_A = "CVPR2018 README (model options)"
_README_B = "master README (r3d*/r2p1d* 200-epoch models)"
_R18_250 = "; the author trained ResNet-18 for 250 epochs (#29, #62): --set train.epochs=250"


def _era_a() -> Tuple[Row, ...]:
    depth = tuple(Row(f"resnet3d_{d}.k400_16f", "2017", "k400", f"resnet3d_{d}.k400_16f", groups=("depth",),
                      source=_README_A + (" (shortcut A)" if d in (18, 34) else " (shortcut B)"))
                  for d in (34, 50, 101, 152, 200))
    arch = tuple(Row(f"{m}.{t}", "2017", "k400", f"{m}.{t}", groups=("arch",), source=_README_A + note)
                 for m, t, note in (("preact_resnet3d_200", "k400_16f", ""), ("wide_resnet3d_50", "k400_16f", " (k=2)"),
                                    ("resnext3d_101", "k400_16f", " (cardinality 32)"),
                                    ("resnext3d_101", "k400_64f", " + --sample_duration 64 (#194)"),
                                    ("densenet3d_121", "k400_16f", ""), ("densenet3d_201", "k400_16f", "")))
    r18 = Row("resnet3d_18.k400_16f", "2017", "k400", "resnet3d_18.k400_16f", groups=("scratch", "depth"),
              source=_README_A + " (shortcut A)" + _R18_250)
    return (r18,) + depth + arch


def _scratch() -> Tuple[Row, ...]:
    like = "resnet3d_18.k400_16f"
    paper = "paper: ResNet-18 trained from scratch (2017 defaults)"
    return (Row("resnet3d_18.ucf101s1_scratch", "2017", "ucf101", like, False, groups=("scratch",), source=paper,
                reported=(42.4, "UCF-101 split 1 top-1 (video)", "paper, quoted by the author in #130")),
            Row("resnet3d_18.hmdb51s1_scratch", "2017", "hmdb51", like, False, groups=("scratch",), source=paper),
            Row("resnet3d_18.activitynet_scratch", "2017", "activitynet", like, False, groups=("scratch",),
                source=paper + "; ActivityNet frames at short side 360 (video_jpg.py)",
                changes={"data": {"decode_short_side": 360}}))


_FT_REPORTED = {("ucf101", 64): (94.5, "UCF-101 top-1, mean of splits 1-3 (video)", "paper abstract"),
                ("hmdb51", 64): (70.2, "HMDB-51 top-1, mean of splits 1-3 (video)", "paper abstract")}


def _finetunes() -> Tuple[Row, ...]:
    rows = []
    for data in ("ucf101", "hmdb51"):
        for frames in (16, 64):
            for split in (1, 2, 3):
                tag = f"{data}s{split}_{frames}f"
                release = split == 1
                rows.append(Row(f"resnext3d_101.{tag}", "finetune", data, f"resnext3d_101.{data}s1_{frames}f", release,
                                changes={"model": {"pretrained": f"k400_{frames}f"}, "data": {"split": split}},
                                groups=("finetune",), source="README 612b2d9 (split 1 releases); #47, #170",
                                reported=None if release else _FT_REPORTED.get((data, frames))))
    return tuple(rows)


def _era_b() -> Tuple[Row, ...]:
    rows = []
    for depth in (18, 34, 50, 101, 152, 200):
        for sets in ("k700", "km") + (("kms", "ks", "m", "ms", "s") if depth == 50 else ()):
            tag = f"{sets}_16f"
            rows.append(Row(f"resnet3d_{depth}.{tag}", "2020", sets, f"resnet3d_{depth}.{tag}", groups=("2020",),
                            source=_README_B + ("; merged class order assumed (the merge script is not public)"
                                                if sets in ("km", "kms", "ks", "ms") else "")))
    for model in ("r2plus1d_18_kenshohara", "r2plus1d_34"):
        rows.append(Row(f"{model}.k700_16f", "2020", "k700", f"{model}.k700_16f", groups=("2020",),
                        source="uploaded 2020-05-08 (#191), --model resnet2p1d (#256)"))
    return tuple(rows)


ROWS: Tuple[Row, ...] = _era_a() + _scratch() + _finetunes() + _era_b()

#: group -> (what it is, what its figure shows); the numbers come from the recipes' reported figures
GROUPS: Dict[str, Tuple[str, str]] = {
    "scratch": ("ResNet-18 from scratch on UCF-101, HMDB-51, ActivityNet and Kinetics-400",
                "train vs validation loss per data set: the small sets overfit, Kinetics does not"),
    "depth": ("depth sweep ResNet-18 ... 200 on Kinetics-400",
              "accuracy against depth: it grows up to 152 layers, then saturates"),
    "arch": ("architecture comparison on Kinetics-400 (pre-activation, wide, ResNeXt, DenseNet)",
             "accuracy per architecture"),
    "finetune": ("fine-tuning conv5_x + fc of the Kinetics ResNeXt-101 on UCF-101 / HMDB-51 splits 1-3, "
                 "16 and 64 frames", "top-1 per split; the paper reports the 64-frame mean of the 3 splits"),
    "2020": ("the 2020 releases: Kinetics-700, Moments in Time, STAIR Actions and their merges, R(2+1)D",
             "no accuracies published (master README)"),
}
PAPER_GROUPS = ("scratch", "depth", "arch", "finetune")

#: names the configs had before the recipe table (kept so old commands keep working)
OLD_NAMES = {"k400_resnext101_16f": "resnext3d_101.k400_16f", "k400_resnext101_64f": "resnext3d_101.k400_64f",
             "k700_r3d50_2020": "resnet3d_50.k700_16f", "ucf101_resnext101_finetune": "resnext3d_101.ucf101s1_16f"}
