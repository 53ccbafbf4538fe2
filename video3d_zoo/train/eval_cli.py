"""``video3d-zoo eval``: the command line of :func:`~video3d_zoo.train.evaluate.evaluate`.

    video3d-zoo eval --model resnet3d_10.synthetic_motion runs/data/synthetic_s0 --split test --json
    video3d-zoo eval --weights ckpt/ UCF-101/ --format ucf101 --annotations ucfTrainTestlist --fold 1 \\
        --split test --out ev/
    video3d-zoo eval --model r2plus1d_18.k400 kinetics/val/ --format kinetics --annotations k400/ \\
        --split val --clip-len 16 --fps 15 --clips 5 --crops 3

Every numeric option is checked before any work starts (one error line, exit status 2); a split
that cannot be found is an error (exit 2); a run that scores no video exits with status 1 after
printing (``--json``) and writing (``--out``) its report.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..argtypes import MODEL_REF_HELP, int_at_least, positive_float, positive_int
from ..io.protocol import ClipProtocol
from .eval_splits import EVAL_FORMATS


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="video3d-zoo eval", description="clip and video accuracy on a data set's split")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help=MODEL_REF_HELP)
    who.add_argument("--weights", help="zoo checkpoint folder or file")
    p.add_argument("data", help="data set root (video folders), or the list file (--format list)")
    g = p.add_argument_group("data set and split")
    g.add_argument("--format", choices=EVAL_FORMATS, default="folder")
    g.add_argument("--annotations", help="split files: UCF-101 / HMDB-51 / folder lists folder, Kinetics CSV "
                   "folder or file, list: classes.txt (default: DATA)")
    g.add_argument("--fold", type=int, choices=(1, 2, 3), help="UCF-101 / HMDB-51 split number (default 1)")
    g.add_argument("--split", help="train | val | test (default test); folder: a list name or 'all'")
    g = p.add_argument_group("clips (default: every non-overlapping centre clip)")
    g.add_argument("--clips", type=int_at_least(0), default=0, help="N evenly spaced clips per video (0 = every window)")
    g.add_argument("--crops", type=int, choices=(1, 3), default=1, help="spatial crops per clip")
    g.add_argument("--clip-len", type=positive_int, help="frames per clip (default: the weights' frames)")
    g.add_argument("--stride", type=positive_int, help="frames between window starts (default: clip length)")
    g.add_argument("--last", choices=("pad", "drop", "shift"), default="pad", help="trailing partial window")
    g.add_argument("--fps", type=positive_float, help="resample videos to this frame rate first")
    g = p.add_argument_group("running")
    g.add_argument("--batch-size", type=positive_int, default=32, help="clips per forward pass")
    g.add_argument("--workers", type=int_at_least(0), default=0)
    g.add_argument("--threads", type=int_at_least(0), default=0)
    g.add_argument("--device", default="auto")
    g.add_argument("--amp", default="none", choices=("none", "bf16", "fp16", "auto"), help="autocast")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="reduced precision on the fast path (outputs stay float32)")
    g.add_argument("--fast", action="store_true", help="fold BatchNorm and use channels_last_3d (fp32, exact)")
    g.add_argument("--compile", action="store_true", help="also torch.compile with freezing")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="folder for metrics.json, predictions.csv and confusion.png")
    g.add_argument("--topk", type=positive_int, default=5, help="predictions per video in predictions.csv")
    g.add_argument("--json", action="store_true", help="print the report as one JSON object")
    g.add_argument("--fatal", action="store_true", help="stop at the first bad row or video")
    g.add_argument("--strict", action="store_true", help="skip partial decodes and still images as errors")
    return p


def make_protocol(clips: int = 0, crops: int = 1, clip_len: Optional[int] = None, stride: Optional[int] = None,
                  last: str = "pad", fps: Optional[float] = None) -> ClipProtocol:
    """The evaluation :class:`ClipProtocol`; options that would be ignored are errors."""
    from ..errors import ConfigError

    if clips and (stride is not None or last != "pad"):
        raise ConfigError(f"--stride / --last choose windows of the every-window protocol; with --clips {clips} "
                          "the clips are evenly spaced (leave them out, or use --clips 0)")
    return ClipProtocol(clip_len=clip_len, stride=stride, last=last, fps=fps, num_clips=clips,
                        spatial_crops=crops)


def _check_weights_arg(weights: Optional[str]) -> None:
    from ..errors import ConfigError
    from ..resolve import parse_model_ref

    if weights and parse_model_ref(weights).kind == "name":
        raise ConfigError(f"--weights {weights!r} names a registered model; --weights takes a checkpoint path "
                          "(use --model for names)")


def _summary(report: dict) -> str:
    counts, data = report["videos"], report["data"]
    lines = [f"{data.get('format')} {data.get('split')} ({', '.join(data.get('split_files') or [])}): "
             f"{counts['listed']} listed, {counts['used']} evaluated, {counts['skipped']} skipped",
             f"protocol: {report['protocol']['description']}",
             f"{report['num_clips']} clips: clip top-1 {report['clip_top1']:.4f}, top-5 {report['clip_top5']:.4f}; "
             f"video top-1 {report['video_top1']:.4f}, top-5 {report['video_top5']:.4f}; "
             f"mean class {report['mean_class_top1']:.4f}"]
    if counts["skipped_by_reason"]:
        lines.append(f"skipped: {counts['skipped_by_reason']}")
    for key in ("transcoded_matches", "partial_decodes", "still_images"):
        if counts[key]:
            lines.append(f"{key.replace('_', ' ')}: {counts[key]} (listed in the JSON report)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..errors import Video3DZooError
    from .evaluate import EvalFailed, evaluate

    args = build_parser().parse_args(argv)
    try:
        _check_weights_arg(args.weights)
        protocol = make_protocol(args.clips, args.crops, args.clip_len, args.stride, args.last, args.fps)
        report = evaluate(args.model or args.weights, args.data, format=args.format, annotations=args.annotations,
                          fold=args.fold, split=args.split, protocol=protocol, batch_size=args.batch_size,
                          num_workers=args.workers, device=args.device, amp=args.amp, precision=args.precision,
                          fast=args.fast, compile=args.compile, threads=args.threads, out_dir=args.out,
                          json=args.json, on_error="fatal" if args.fatal else "skip", strict=args.strict,
                          topk=args.topk)
    except EvalFailed as exc:
        print(f"video3d-zoo eval: error: {exc}", file=sys.stderr)
        return 1
    except Video3DZooError as exc:
        print(f"video3d-zoo eval: error: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        print(_summary(report))
    return 0
