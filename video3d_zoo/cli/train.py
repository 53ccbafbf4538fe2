"""The training-side commands of ``video3d-zoo``: ``train``, ``eval`` and ``make-synthetic``.

Each command is a parser (``add_*``) and a handler (``run_*``) that calls one library function
with typed arguments: :func:`video3d_zoo.train.train`, :func:`video3d_zoo.train.evaluate.evaluate`
and :func:`video3d_zoo.jobs.synthetic.make_synthetic`.  :func:`video3d_zoo.cli.commands.main` registers them
and is their error boundary (``python -m video3d_zoo.train`` goes through it too).

    video3d-zoo train configs/synthetic_r3d.toml --set optim.lr=0.01
    video3d-zoo eval --model resnet3d_10.synthetic_motion runs/data/synthetic_s0 --split test --json
    video3d-zoo eval --weights ckpt/ UCF-101/ --format ucf101 --annotations ucfTrainTestlist --fold 1 \\
        --split test --out ev/
    video3d-zoo make-synthetic data/synthetic --videos-per-class 20
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, Optional, Tuple

from .argtypes import EVAL_FORMATS, MODEL_REF_HELP, add_shared, int_in, open_fraction, up_to_cores
from .. import limits
from ..errors import ConfigError
from ..wording import count

Handler = Callable[[argparse.Namespace], int]


# -- train --------------------------------------------------------------------------------------------
def add_train_parser(sub) -> None:
    from ..train.recipes import list_configs

    p = sub.add_parser("train", help="train a model from a config: train CONFIG [--set key=value ...] [--resume]",
                       description="train a model from a recipe or config shipped with the package (by name; "
                                   "train --list lists them) or a TOML / JSON file of your own (docs/training.md)")
    p.add_argument("config", nargs="?", help=f"a recipe name (train --list lists them), a shipped config "
                                             f"({', '.join(list_configs())}) or the path of a .toml / .json "
                                             "config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=0.01 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run from its checkpoints/last.pt")
    p.add_argument("--accept-config-changes", action="store_true",
                   help="with --resume: continue even though the config differs from the checkpoint's "
                        "(the differences are listed either way)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    g = p.add_argument_group("recipes")
    g.add_argument("--list", nargs="?", const="", metavar="GROUP", dest="list_recipes",
                   help="list the recipes (all, 'paper', a group or a name pattern) with the release each "
                        "reproduces and its reported accuracy")
    g.add_argument("--cost", action="store_true", help="with --list: GPU-hours and loader clips/s on paper")
    g.add_argument("--report", metavar="RUNS_DIR", help="compare the finished runs under RUNS_DIR with the "
                   "reported figures, as a markdown page (-o)")
    g.add_argument("-o", "--output", metavar="PAGE.md", help="with --report: the page to write")
    p.set_defaults(parser=p)


def run_train(args: argparse.Namespace) -> int:
    """Train (or print the resolved config); rank 0 prints the run folder."""
    from ..train.config import load_config
    from ..train.loop import train

    if args.list_recipes is not None or args.report:
        return _run_recipes(args)
    if args.cost or args.output:
        args.parser.error("--cost goes with --list, -o with --report")
    if not args.config:
        args.parser.error("give a config file or recipe name (video3d-zoo train --list lists the recipes)")
    if args.accept_config_changes and not args.resume:
        args.parser.error("--accept-config-changes only applies with --resume")
    if args.print_config:
        print(load_config(args.config, args.overrides).to_json())
        return 0
    run_dir = train(args.config, args.overrides, resume=args.resume, accept_config_changes=args.accept_config_changes)
    if int(os.environ.get("RANK", "0")) == 0:
        print(run_dir)
    return 0


def _run_recipes(args: argparse.Namespace) -> int:
    """``--list [GROUP] [--cost]`` and ``--report RUNS_DIR -o PAGE.md``."""
    if args.config or args.list_recipes is not None and args.report:
        args.parser.error("--list and --report take no config and go alone")
    if args.report:
        from ..train.recipe_report import write_report

        if not args.output:
            args.parser.error("--report needs -o PAGE.md")
        print(write_report(args.report, args.output))
        return 0
    from ..train.recipe_cost import groups_text, list_text
    from ..train.recipes import find_recipes

    recipes = find_recipes(args.list_recipes)
    groups = groups_text(args.list_recipes, recipes)
    print((groups + "\n" if groups else "") + list_text(recipes, cost=args.cost))
    return 0


# -- eval ---------------------------------------------------------------------------------------------
def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", one_line_errors=True,
                       help="clip and video accuracy: eval (--model NAME.TAG | --weights PATH) DATA [--json]",
                       description="clip and video accuracy on a data set's split")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help=MODEL_REF_HELP)
    who.add_argument("--weights", help="zoo checkpoint folder or file")
    p.add_argument("data", help="data set root (video folders), or the list file (--format list)")
    g = p.add_argument_group("data set and split")
    g.add_argument("--format", choices=EVAL_FORMATS, default="folder", help="how the data set lists its videos")
    g.add_argument("--annotations", help="split files: UCF-101 / HMDB-51 / folder lists folder, Kinetics CSV "
                   "folder or file, ActivityNet JSON, Moments in Time / STAIR Actions list folder, list: "
                   "classes.txt (default: DATA)")
    g.add_argument("--fold", type=int, choices=(1, 2, 3), help="UCF-101 / HMDB-51 split number (default 1)")
    g.add_argument("--split", help="train | val | test (default test; activitynet, moments, stair: val); "
                   "folder: a list name or 'all'")
    _add_eval_clip_args(p.add_argument_group("clips (default: every non-overlapping centre clip)"))
    _add_eval_run_args(p.add_argument_group("running"))
    g = p.add_argument_group("output")
    g.add_argument("--out", help="folder for metrics.json, predictions.csv and confusion.png")
    add_shared(g, "--topk", help="predictions per video in predictions.csv")
    g.add_argument("--json", action="store_true", help="print the report as one JSON object")
    g.add_argument("--fatal", action="store_true", help="stop at the first bad row or video")
    g.add_argument("--strict", action="store_true", help="skip partial decodes and still images as errors")


def _add_eval_clip_args(g) -> None:
    g.add_argument("--clips", type=int_in(0, limits.MAX_CLIPS_PER_VIDEO), default=0,
                   help=f"N evenly spaced clips per video, 0 to {limits.MAX_CLIPS_PER_VIDEO} (0 = every window)")
    g.add_argument("--crops", type=int, choices=(1, 3), default=1, help="spatial crops per clip")
    add_shared(g, "--clip-len", "--stride", "--last", "--fps")


def _add_eval_run_args(g) -> None:
    add_shared(g, "--batch-size", "--workers")
    g.add_argument("--threads", type=up_to_cores, default=0,
                   help=f"torch CPU threads, 0 to {limits.WORKERS_PER_CORE} per CPU core (0: torch's choice)")
    add_shared(g, "--device")
    g.add_argument("--amp", default="none", choices=("none", "bf16", "fp16", "auto"), help="autocast")
    add_shared(g, "--precision", "--fast", "--compile")


def eval_protocol(clips: int = 0, crops: int = 1, clip_len: Optional[int] = None, stride: Optional[int] = None,
                  last: str = "pad", fps: Optional[float] = None):
    """The :class:`~video3d_zoo.io.ClipProtocol` of the eval options; options that would be ignored are errors."""
    from ..io.protocol import ClipProtocol

    if clips and (stride is not None or last != "pad"):
        raise ConfigError(f"--stride / --last choose windows of the every-window protocol; with --clips {clips} "
                          "the clips are evenly spaced (leave them out, or use --clips 0)")
    return ClipProtocol(clip_len=clip_len, stride=stride, last=last, fps=fps, num_clips=clips,
                        spatial_crops=crops)


def _check_weights_arg(weights: Optional[str]) -> None:
    from ..weights.resolve import parse_model_ref

    if weights and parse_model_ref(weights).kind == "name":
        raise ConfigError(f"--weights {weights!r} names a registered model; --weights takes a checkpoint path "
                          "(use --model for names)")


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate; a run that scores no video exits with status 1 after printing / writing its report."""
    from ..errors import EvalFailed
    from ..train.evaluate import evaluate

    _check_weights_arg(args.weights)
    protocol = eval_protocol(args.clips, args.crops, args.clip_len, args.stride, args.last, args.fps)
    try:
        report = evaluate(args.model or args.weights, args.data, format=args.format, annotations=args.annotations,
                          fold=args.fold, split=args.split, protocol=protocol, batch_size=args.batch_size,
                          num_workers=args.workers, device=args.device, amp=args.amp, precision=args.precision,
                          fast=args.fast, compile=args.compile, threads=args.threads, out_dir=args.out,
                          json=args.json, on_error="fatal" if args.fatal else "skip", strict=args.strict,
                          topk=args.topk)
    except EvalFailed as exc:
        print(f"video3d-zoo eval: error: {exc}", file=sys.stderr)
        return 1
    if not args.json:
        print(eval_summary(report))
    return 0


def eval_summary(report: dict) -> str:
    """The human-readable lines of an eval report."""
    counts, data = report["videos"], report["data"]
    lines = [f"{data.get('format')} {data.get('split')} ({', '.join(data.get('split_files') or [])}): "
             f"{counts['listed']} listed, {counts['used']} evaluated, {counts['skipped']} skipped",
             f"protocol: {report['protocol']['description']}",
             f"{count(report['num_clips'], 'clip')}: clip top-1 {report['clip_top1']:.4f}, "
             f"top-5 {report['clip_top5']:.4f}; "
             f"video top-1 {report['video_top1']:.4f}, top-5 {report['video_top5']:.4f}; "
             f"mean class {report['mean_class_top1']:.4f}"]
    if counts["skipped_by_reason"]:
        lines.append(f"skipped: {counts['skipped_by_reason']}")
    for key in ("transcoded_matches", "partial_decodes", "still_images"):
        if counts[key]:
            lines.append(f"{key.replace('_', ' ')}: {counts[key]} (listed in the JSON report)")
    return "\n".join(lines)


# -- make-synthetic -----------------------------------------------------------------------------------
def add_make_synthetic_parser(sub) -> None:
    p = sub.add_parser("make-synthetic", help="write the synthetic motion data set: make-synthetic OUT_DIR",
                       description="Synthetic motion data set: classes that differ only in how things move.")
    p.add_argument("out_dir", help="folder to write the data set to")
    # --size / --frames / --fps / --seed here describe the videos written, not the clips a model reads:
    # other facts than the shared options of the same names, with their own defaults.
    p.add_argument("--videos-per-class", type=int_in(1, 100_000), default=100,
                   help="videos per class, 1 to 100000 (default: 100)")
    p.add_argument("--seed", type=int_in(0, limits.MAX_SEED), default=0, help="random seed (default: 0)")
    p.add_argument("--size", type=int_in(16, limits.MAX_SIDE), default=64,
                   help=f"frame side in pixels, 16 to {limits.MAX_SIDE} (default: 64)")
    p.add_argument("--frames", type=int_in(2, limits.MAX_FRAMES), default=32,
                   help=f"frames per video, 2 to {limits.MAX_FRAMES} (default: 32)")
    p.add_argument("--fps", type=int_in(1, int(limits.MAX_FPS)), default=16,
                   help=f"frame rate, 1 to {limits.MAX_FPS:g} (default: 16)")
    p.add_argument("--test-fraction", type=open_fraction, default=0.25,
                   help="share of each class in the test split, between 0 and 1 (default: 0.25)")


def run_make_synthetic(args: argparse.Namespace) -> int:
    from ..jobs.synthetic import CLASSES, make_synthetic

    limits.check_memory(f"one {args.frames}x{args.size}x{args.size} video", args.frames * args.size ** 2 * 3 * 4,
                        "use a smaller --frames or --size")
    out = make_synthetic(args.out_dir, args.videos_per_class, args.seed, size=args.size, frames=args.frames,
                         fps=args.fps, test_fraction=args.test_fraction, progress=True)
    print(f"wrote {count(args.videos_per_class * len(CLASSES), 'video')} to {out}")
    return 0


TRAINING_COMMANDS: Dict[str, Tuple[Callable[..., None], Handler]] = {
    "train": (add_train_parser, run_train),
    "eval": (add_eval_parser, run_eval),
    "make-synthetic": (add_make_synthetic_parser, run_make_synthetic),
}
"""``name -> (add the parser to the subcommands, handler)``, in help order."""
